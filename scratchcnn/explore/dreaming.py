"""The explorer's Dreams tab: ``scratchcnn.study.dreams`` answered through HTTP.

:class:`DreamRequests` is a part of ``analysis.Explorer`` (it inherits it); each method takes
the JSON body of one POST and returns a JSON-ready dict:

    dream(req)       {backend, seed, steps, snapshot, and either class: K or layer + channel}
                     -> the image gradient ascent makes from noise for that class's logit (or
                     that channel's mean activation), its score per step, its probabilities,
                     and the 9 test images that score highest (the logit, or the channel's mean)
    fool(req)        {image, backend, target, method: "steps" | "fgsm", epsilon, max_steps,
                     step_size, snapshot} -> the fooling image, the change magnified, the
                     probabilities before and after, and whether the network now answers target
    occlusion(req)   {image, backend, class, patch, stride, fill, snapshot} -> the drop of the
                     class's probability when a grey patch covers each part of the image

The work is ``dreams.py``'s, unchanged: the same seed gives the same image through either
backend (to float32 rounding). Only the step counts are smaller than the command line's, so
a click answers within about a second on two cores: DREAM_STEPS ascent steps of one image
take ~0.5 s through the scratch backend (~0.2 s through torch) for the tutorial's network
(``explore --measure`` times them). The 9 test images beside a dream are ranked among the
first RANKED of the test split (500 images took 0.6-1.8 s through the scratch backend for a
deep layer on 2 cores, so RANKED is 250). For the checkpoint's weights, ``Explorer.warm`` ranks
them by every channel at start-up (``Weights.rank_all``, one pass per backend); at a snapshot,
the first dream of a layer runs them through the network up to that layer, on both cores
(the dream's one image runs on one): for vgg's deepest maps through the scratch backend
that took 1.05-1.13 s in all on one core, 0.6-0.7 s on two with the direct convolution
kernel of eval mode (``kernels.conv``). Every field is checked here (ApiError 400 with one
line); what dreams.py refuses (a UserError) is a 400 too.

The layer of a channel dream is any layer whose output has channels (C, h, w): the page
offers those from ``/api/info``'s shapes, never by name.
"""
import math

import numpy as np

from scratchcnn.errors import UserError
from scratchcnn.explore.arrays import encode
from scratchcnn.explore.errors import ApiError
from scratchcnn.explore.uploads import png_data_uri

DREAM_STEPS, MAX_DREAM_STEPS = 25, 200
FOOL_STEPS, MAX_FOOL_STEPS = 60, 300
FOOL_STEP_SIZE = 0.25                   # pixel units, L2 over the image (the CLI's 0.1 needs ~2.5x the steps)
FGSM_EPSILON = 4 / 255
TOP = 9
RANKED = 250                            # the top-9 are those of the first RANKED test images (see dream)


class DreamRequests:
    """The dream, fool and occlusion requests (mixed into ``analysis.Explorer``)."""

    def dream(self, req):
        from scratchcnn.study.dreams import channel_visualisation, class_visualisation

        req = _object(req)
        backend = _pick(req.get("backend", "scratch"), ("scratch", "torch"), "backend")
        snapshot = self._snapshot(req)
        seed = _whole(req.get("seed", 0), "seed", 0, 2**32 - 1)
        steps = _whole(req.get("steps", DREAM_STEPS), "steps", 1, MAX_DREAM_STEPS)
        layer = req.get("layer")
        if (req.get("class") is None) == (layer is None):
            raise ApiError(400, "give either 'class' (a class number) or 'layer' and 'channel'")
        if layer is None:
            column = self.logits
            what = _whole(req["class"], "class", 0, len(self.outputs) - 1)
        else:
            maps = list(self.arch.map_layers)
            if layer not in maps:
                raise ApiError(400, f"layer {layer!r} has no channels of feature maps; choose one of "
                                    f"{', '.join(maps) or '(none in this network)'}")
            column = layer
            what = _whole(req.get("channel"), "channel", 0, self.arch.output_shape(layer)[0] - 1)
        weights = self.at(snapshot)
        with self.lock:
            b = weights.backend(backend)
            with self._one_thread():            # one image: threads would only wait for each other
                if layer is None:
                    r = _user(class_visualisation, b, what, steps=steps, seed=seed, normalize=self.normalize)
                else:
                    r = _user(channel_visualisation, b, layer, what, steps=steps, seed=seed, normalize=self.normalize)
            if snapshot is None and column == self.logits:
                responses = self.predict_all(backend)[2][:RANKED, what]      # known since warm()
            else:                               # RANKED images at once: both cores help
                responses = weights.responses(backend, column, self.data.x[:RANKED], self.normalize)[:, what]
        probs = r["probs"]
        return {"backend": backend, "snapshot": snapshot, "seed": seed, "steps": steps,
                "class": None if layer is not None else what, "layer": layer,
                "channel": what if layer is not None else None,
                "png": png_data_uri(r["uint8"]), "scores": [float(s) for s in r["scores"]],
                "start_score": float(r["scores"][0]), "score": float(r["scores"][-1]),
                "probs": probs.tolist(), "pred": int(np.argmax(probs[:len(self.classes)])),
                "top": self._top(responses), "ranked": len(responses)}

    def _top(self, values):
        """The TOP test images with the largest ``values`` (N,), largest first, ties by index."""
        order = np.argsort(-values, kind="stable")[:TOP]
        out = []
        for i in order:
            i = int(i)
            if i not in self.thumbs:
                self.thumbs[i] = png_data_uri(self.data.x[i])
            out.append({"image": f"test:{i}", "index": i, "label": int(self.data.y[i]),
                        "value": float(values[i]), "png": self.thumbs[i]})
        return out

    def fool(self, req):
        from scratchcnn.study.dreams import fooling_image

        key, backend, _ = self._image_args(_object(req))
        snapshot = self._snapshot(req)
        target = _whole(req.get("target"), "target", 0, len(self.outputs) - 1)
        method = _pick(req.get("method", "steps"), ("steps", "fgsm"), "method")
        epsilon = _number(req.get("epsilon", FGSM_EPSILON), "epsilon", 0, 1)
        max_steps = _whole(req.get("max_steps", FOOL_STEPS), "max_steps", 1, MAX_FOOL_STEPS)
        step_size = _number(req.get("step_size", FOOL_STEP_SIZE), "step_size", 0, 1)
        image = self.image(key)
        with self.lock, self._one_thread():
            b = self.backend(backend, snapshot)
            r = _user(fooling_image, b, image, target, method=method, epsilon=epsilon, max_steps=max_steps,
                      step_size=step_size, normalize=self.normalize)
        k = len(self.classes)
        before, after = int(np.argmax(r["before"][:k])), int(np.argmax(r["after"][:k]))
        name = self.outputs[target]
        if r["steps"] == 0:
            message = f"the network already answers {name}: nothing to change"
        elif r["success"]:
            message = (f"the network now answers {name} ({100 * r['after'][target]:.1f}%) after "
                       f"{r['steps']} step{'s' if r['steps'] != 1 else ''}")
        else:
            message = (f"could not make the network answer {name}: after {r['steps']} step"
                       f"{'s' if r['steps'] != 1 else ''} it answers {self.outputs[after]}")
            if method == "fgsm":
                message += "; try a larger epsilon, or the steps method"
        changed = np.abs(r["uint8"].astype(np.int64) - image.astype(np.int64))
        return {"image": key, "backend": backend, "snapshot": snapshot, "target": target, "method": method,
                "epsilon": epsilon, "steps": r["steps"], "success": r["success"], "message": message,
                "png_before": png_data_uri(image), "png": png_data_uri(r["uint8"]),
                "difference": png_data_uri(r["difference"]), "magnification": r["magnification"],
                "max_change": int(changed.max()), "before": r["before"].tolist(), "after": r["after"].tolist(),
                "pred_before": before, "pred_after": after}

    def occlusion(self, req):
        from scratchcnn.study.dreams import FILLS, occlusion_map

        key, backend, target = self._image_args(_object(req))
        snapshot = self._snapshot(req)
        _, h, w = self.arch.input_shape
        patch = _whole(req.get("patch", 8), "patch", 1, min(h, w))
        stride = _whole(req.get("stride", 4), "stride", 1, min(h, w))
        fill = _pick(req.get("fill", "grey"), FILLS, "fill")
        if target is None:
            target = int(self.compute(key, backend, None, snapshot)["target"])
        with self.lock, self._one_thread():
            b = self.backend(backend, snapshot)
            heat = _user(occlusion_map, b, self.image(key), target, patch=patch, stride=stride, fill=fill,
                         normalize=self.normalize)
        return {"image": key, "backend": backend, "snapshot": snapshot, "target": target, "patch": patch,
                "stride": stride, "fill": fill, "map": encode(heat)}


def _user(fn, *args, **kwargs):
    """dreams.py's own refusals (a UserError) are the request's fault: a 400."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        raise ApiError(400, str(e)) from None


def _object(req):
    if not isinstance(req, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return req


def _pick(value, allowed, what):
    if not isinstance(value, str) or value not in allowed:
        raise ApiError(400, f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


def _whole(value, what, lo, hi):
    """A JSON whole number lo..hi (bools, text and fractions refused)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{what} must be a whole number {lo}..{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise ApiError(400, f"{what} {value} is out of range {lo}..{hi}")
    return value


def _number(value, what, lo, hi):
    """A finite JSON number with lo < value <= hi."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{what} must be a number, got {value!r}")
    if not lo < value <= hi:
        raise ApiError(400, f"{what} {value} is out of range: more than {lo}, at most {hi}")
    return float(value)
