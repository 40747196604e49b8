"""What the explorer's page shows, computed without any HTTP: :class:`Explorer`.

``Explorer(checkpoint, data)`` loads one checkpoint into both backends, with the network
the checkpoint holds (``checkpoint.load_checkpoint(...)["arch"]``: any preset or spec),
and answers each request kind with a JSON-ready dict (``scratchcnn.explore.http`` routes
the requests to these methods and turns :class:`ApiError` into a 4xx answer):

    info()                  classes, every layer (name, kind, shapes, arguments), the dataset, the run
    images(query)           a page of the test set: thumbnails, label, prediction
                            (query: cls, pred, wrong, sort, offset, limit, backend)
    confusion(query)        the test split's confusion matrix through one backend
    upload(body)            an uploaded image's bytes -> {"image": "upload:N", "png"}
                            (decoded by ``scratchcnn.explore.uploads``)
    analyze(req)            {image, backend, class} -> logits, probabilities, saliency, Grad-CAM
    layer(req)              {image, backend, class, layer, mode: "forward" | "gradient" | "weight"}
                            -> one layer's output, ds/d(output), or ds/d(its Conv2d weight)
    pixel(req)              {image, backend, class, layer, mode, index: [c, y, x] or [i]}
                            -> one number of that view written out (``scratchcnn.explore.formulas``):
                            forward, how the layer computed it from its input; gradient, how
                            the layer above sent it back, beside the scratch and torch values
                            and a float64 finite difference (``scratchcnn.explore.finite``)
    filters(query)          every Conv2d layer's weights (query snapshot: that snapshot's)
    run()                   metrics.json of the run folder (curves, layer statistics)
    snapshots()             the snapshots train --snapshots K kept in the run folder
    dream(req), fool(req), occlusion(req)
                            the Dreams tab (``scratchcnn.explore.dreaming``)

analyze, layer, pixel, filters, dream, fool and occlusion take ``snapshot`` (an index into
snapshots(); absent or null: the checkpoint's weights): the time slider. A snapshot's
weights are loaded when first asked for and a few are kept (``scratchcnn.explore.weights``).

The layers are those of the checkpoint's network; the page dispatches on each layer's
KIND (``info()["layers"]``), never on its name. ``image`` is ``"test:INDEX"`` or
``"upload:N"``; ``class`` is the class whose logit the gradients explain (null: the
predicted class). Arrays travel as base64 of little-endian float32 with their shape.
Every answer that shows numbers also gives ``diff``: the largest |scratch - torch| over
exactly what it returned, the other backend run on the same image and class.
"""
import json
import math
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from scratchcnn.explore import formulas
from scratchcnn.explore.arrays import encode
from scratchcnn.explore.dreaming import DreamRequests
from scratchcnn.explore.errors import ApiError
from scratchcnn.explore.uploads import decode_upload, png_data_uri
from scratchcnn.explore.weights import Timeline, Weights

MAX_UPLOADS_KEPT = 32                    # in memory; the oldest is forgotten first
CACHE_SIZE = 48                          # (image, backend, class, weights) keys kept (a result is ~1.5 MB)
BACKEND_NAMES = ("scratch", "torch")
MODES = ("forward", "gradient", "weight")
# Kinds whose output is never negative (given an input that is not): how each map is coloured.
NONNEGATIVE = ("ReLU", "Sigmoid")
SAME_SIGN = ("MaxPool2d", "AvgPool2d", "Dropout", "Flatten")


def short_kind(kind):
    """A learner's own layer "path/to/file.py:MyLayer" -> "MyLayer"; built-in kinds unchanged."""
    return kind.rsplit(":", 1)[-1]


class Explorer(DreamRequests):
    """Everything the page asks for, computed from one checkpoint and its test split.

    ``Explorer(checkpoint, data, classes=None, arch=None, allow_custom=False)``: loads the
    checkpoint (``scratchcnn.checkpoint``: ours, with its network, or a bare state_dict, read
    as ``arch``, default the tutorial's) into both backends; ``data`` is the
    ``scratchcnn.data.Dataset`` to browse (the test split of the checkpoint's dataset, chosen
    by the command); ``classes`` defaults to the checkpoint's class names, then the dataset's;
    ``allow_custom`` loads a learner's own layer files the network names (runs their code).
    Thread-safe: one lock serialises the model work, which is what two cores can do anyway.
    """

    def __init__(self, checkpoint, data, classes=None, arch=None, allow_custom=False):
        from scratchcnn.evaluate import load_backend

        self.checkpoint = checkpoint
        scratch, ckpt = load_backend(checkpoint, "scratch", arch=arch, allow_custom=allow_custom)
        self.arch = ckpt["arch"]
        self.final = Weights(self.arch, ckpt["model"], "final", {"scratch": scratch})
        self.timeline = Timeline(os.path.dirname(os.path.abspath(checkpoint)), self.arch, allow_custom)
        self.specs = {s.name: s for s in self.arch.layers}
        self.names = self.arch.layer_names
        self.logits = self.names[-1]
        self.view_layers = ("input", *self.names, "softmax")
        self.state_dict = ckpt["model"]
        self.config, self.epoch = ckpt["config"], ckpt["epoch"]
        self.ckpt_metrics = ckpt["metrics"]
        self.normalize = self.config.get("normalize_stats")
        self.data = data
        self.classes = list(classes or self.config.get("classes") or data.classes)
        n_out = self.arch.layers[-1].out_shape[0]
        self.outputs = self.classes[:n_out] + [f"output {k}" for k in range(len(self.classes), n_out)]
        convs = self.arch.of_kind("Conv2d")
        self.gradcam_layer = convs[-1].name if convs else None
        self.lock = threading.RLock()
        self.uploads = OrderedDict()
        self.upload_count = 0
        self.cache = OrderedDict()
        self.predictions = {}
        self.thumbs = {}

    # ------------------------------------------------------------ the models
    def at(self, snapshot):
        """The Weights of a moment of training: None, the checkpoint's; i, snapshot i of the run."""
        return self.final if snapshot is None else self.timeline.weights(snapshot)

    def backend(self, name, snapshot=None):
        return self.at(snapshot).backend(name)

    def float64(self, snapshot=None):
        """The float64 copy of the network the finite differences run on (built once)."""
        with self.lock:
            return self.at(snapshot).float64()

    @staticmethod
    @contextmanager
    def _one_thread():
        """One image at a time gains nothing from threads, and torch's OpenMP pool and
        OpenBLAS's spin-waiting against each other on 2 cores made one request 3-20x
        slower (measured: torch.conv2d of one image 56 ms instead of 1 ms). So inside
        each computation torch and BLAS use one thread; the settings come back after."""
        import torch
        from threadpoolctl import threadpool_limits

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(1):
                yield
        finally:
            torch.set_num_threads(threads)

    def warm(self):
        """Everything the first clicks would otherwise wait for: both backends' predictions
        (the grid) and rankings of the test images by each channel (the dreams' top-9), one
        image through both (the numba kernels), and one finite difference (the float64 network
        and its kernels)."""
        from scratchcnn.explore.dreaming import RANKED
        for name in BACKEND_NAMES:
            self.predict_all(name)
            self.final.rank_all(name, self.data.x[:RANKED], self.normalize)   # the dreams' top-9
        if len(self.data):
            mine, other = self.both("test:0", "scratch", None)
            self._three_numbers("test:0", self.logits, (mine["target"],), mine, other)

    def predict_all(self, backend):
        """(pred (N,), confidence (N,), logits (N, K)) over the test split, computed once per backend."""
        from scratchcnn.backends import evaluate_logits, predicted_class
        from scratchcnn.study.featuremaps import softmax

        with self.lock:
            if backend not in self.predictions:
                logits = evaluate_logits(self.backend(backend), self.data, 250, self.normalize)
                p = softmax(logits)
                pred = predicted_class(p, len(self.classes))
                self.predictions[backend] = (pred, p[np.arange(len(pred)), pred], logits)
            return self.predictions[backend]

    def image(self, key):
        """"test:INDEX" or "upload:N" -> uint8 (3, 32, 32)."""
        kind, _, rest = str(key).partition(":")
        if kind == "test":
            try:
                index = int(rest)
            except ValueError:
                raise ApiError(400, f"image {key!r}: the index must be a whole number") from None
            if not 0 <= index < len(self.data):
                raise ApiError(404, f"image {key!r} is out of range: the test split has "
                                    f"{len(self.data)} images (0..{len(self.data) - 1})")
            return self.data.x[index]
        if kind == "upload" and rest in self.uploads:
            return self.uploads[rest]
        raise ApiError(404, f"no image {key!r}; use 'test:INDEX' or the 'upload:N' an upload returned")

    def float_image(self, key):
        from scratchcnn.data import to_float
        return to_float(self.image(key)[None], self.normalize)

    def compute(self, key, backend, target, snapshot=None):
        """class_gradients of one image through one backend (cached): logits, every layer's
        output and ds/d(output), with the softmax probabilities, saliency map and Grad-CAM
        (on the last Conv2d), and the scratch backend's ds/dW of every Conv2d; with the
        checkpoint's weights, or those of snapshot ``snapshot`` of the run."""
        from scratchcnn.study.featuremaps import softmax
        from scratchcnn.study.saliency import class_gradients, grad_cam, saliency_map

        with self.lock:
            weights = self.at(snapshot)
            cache_key = (key, backend, target, weights.ident)
            if cache_key in self.cache:
                self.cache.move_to_end(cache_key)
                return self.cache[cache_key]
            x = self.float_image(key)
            b = weights.backend(backend)
            with self._one_thread():
                r = class_gradients(b, x, target)
                if target is None and r["classes"][0] >= len(self.classes):
                    # more outputs than classes (an old checkpoint on a small folder): predict among the classes
                    r = class_gradients(b, x, int(r["logits"][0, :len(self.classes)].argmax()))
            out = {"target": int(r["classes"][0]), "backend": backend, "key": key, "snapshot": snapshot,
                   "acts": {"input": x[0], **{k: v[0] for k, v in r["acts"].items()}},
                   "grads": {k: v[0] for k, v in r["grads"].items()}}
            out["acts"]["softmax"] = softmax(out["acts"][self.logits]).astype(np.float32)
            out["saliency"] = saliency_map(r["grads"]["input"])[0]
            out["gradcam"] = None
            if self.gradcam_layer:
                L = self.gradcam_layer
                out["gradcam"] = grad_cam(r["acts"][L], r["grads"][L])[0]
            out["wgrads"] = None
            if backend == "scratch":                    # its backward pass just filled every .grad
                out["wgrads"] = {s.name: getattr(b.model, s.name).weight.grad.copy()
                                 for s in self.arch.of_kind("Conv2d")}
            self.cache[cache_key] = self.cache[(key, backend, out["target"], weights.ident)] = out
            while len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
            return out

    def weight_grads(self, result):
        """ds/dW of every Conv2d for one compute() result: the scratch backend's own .grad, or
        torch.autograd.grad of the class score with respect to those weights (computed here)."""
        import torch

        with self.lock:
            if result["wgrads"] is None:
                model = self.backend("torch", result["snapshot"]).model
                weights = [getattr(model, s.name).weight for s in self.arch.of_kind("Conv2d")]
                param = next(model.parameters())
                with self._one_thread():
                    model.eval()
                    x = torch.from_numpy(self.float_image(result["key"])).to(param.device)
                    s = model(x)[0, result["target"]]
                    got = torch.autograd.grad(s, weights)
                result["wgrads"] = {spec.name: g.detach().cpu().numpy()
                                    for spec, g in zip(self.arch.of_kind("Conv2d"), got)}
            return result["wgrads"]

    def both(self, key, backend, target, snapshot=None):
        """(this backend's result, the other backend's result for the same class)."""
        mine = self.compute(key, backend, target, snapshot)
        other = "torch" if backend == "scratch" else "scratch"
        return mine, self.compute(key, other, mine["target"], snapshot)

    # ------------------------------------------------------------ requests
    def info(self):
        signed = self._signed()
        layers = [{"name": "input", "kind": "Input", "shape": list(self.arch.input_shape), "args": {},
                   "signed": signed["input"], "channels": ["R", "G", "B"][:self.arch.input_shape[0]]}]
        for s in self.arch.layers:
            entry = {"name": s.name, "kind": short_kind(s.kind), "shape": list(s.out_shape),
                     "in_shape": list(s.in_shape), "args": s.args, "signed": signed[s.name],
                     "params": [[k, list(shape)] for k, shape in s.params],
                     "explained": short_kind(s.kind) in formulas.FORWARD_KINDS}
            if len(s.out_shape) == 3:
                rf = self.arch.receptive_field(s.name)
                entry["receptive_field"] = list(rf.size)
            layers.append(entry)
        layers.append({"name": "softmax", "kind": "Softmax", "shape": [len(self.outputs)], "args": {},
                       "signed": False, "explained": True})
        run = self._run_metrics()
        return {"classes": self.classes, "outputs": self.outputs, "layers": layers, "arch": self.arch.name,
                "logits": self.logits, "gradcam_layer": self.gradcam_layer, "dataset": self.data.name,
                "n_test": len(self.data), "checkpoint": self.checkpoint, "epoch": self.epoch,
                "backends": list(BACKEND_NAMES), "has_run": bool(run["epochs"]),
                "normalize": self.normalize is not None}

    def _signed(self):
        """{layer: can its output be negative?}: the image is not (unless normalised); ReLU and
        Sigmoid never are; pooling, dropout and flatten keep their input's sign; all else can."""
        prev = self.normalize is not None
        out = {"input": prev}
        for s in self.arch.layers:
            kind = short_kind(s.kind)
            prev = False if kind in NONNEGATIVE else prev if kind in SAME_SIGN else True
            out[s.name] = prev
        return out

    def images(self, query):
        backend = _choice(query.get("backend", "scratch"), BACKEND_NAMES, "backend")
        offset = _int(query.get("offset", 0), "offset", 0, 10**9)
        limit = _int(query.get("limit", 48), "limit", 1, 500)
        sort = _choice(query.get("sort", "index"), ("index", "confidence", "-confidence"), "sort")
        pred, conf, _ = self.predict_all(backend)
        keep = np.ones(len(self.data), bool)
        if query.get("cls", "") not in ("", None):
            keep &= self.data.y == _int(query["cls"], "cls", 0, len(self.classes) - 1)
        if query.get("pred", "") not in ("", None):
            keep &= pred == _int(query["pred"], "pred", 0, len(self.outputs) - 1)
        if str(query.get("wrong", "")).lower() in ("1", "true", "yes"):
            keep &= pred != self.data.y
        idx = np.flatnonzero(keep)
        if sort != "index":
            order = np.argsort(conf[idx], kind="stable")
            idx = idx[order if sort == "confidence" else order[::-1]]
        items = []
        for i in idx[offset:offset + limit]:
            i = int(i)
            if i not in self.thumbs:
                self.thumbs[i] = png_data_uri(self.data.x[i])
            items.append({"image": f"test:{i}", "index": i, "label": int(self.data.y[i]),
                          "pred": int(pred[i]), "conf": float(conf[i]), "png": self.thumbs[i]})
        wrong = int((pred != self.data.y).sum())
        return {"total": int(idx.size), "offset": offset, "items": items,
                "accuracy": 1 - wrong / max(len(self.data), 1), "wrong": wrong}

    def confusion(self, query):
        """{"matrix": K x K counts (rows: true class, columns: predicted), "classes", "accuracy"}."""
        backend = _choice(query.get("backend", "scratch"), BACKEND_NAMES, "backend")
        pred, _, _ = self.predict_all(backend)
        k = len(self.outputs)
        cm = np.zeros((len(self.classes), k), np.int64)
        np.add.at(cm, (self.data.y, pred), 1)
        return {"backend": backend, "matrix": cm.tolist(), "classes": self.classes, "outputs": self.outputs,
                "n": len(self.data), "accuracy": float((pred == self.data.y).mean()) if len(self.data) else 0.0}

    def upload(self, body):
        image = decode_upload(body)
        with self.lock:
            self.upload_count += 1
            name = str(self.upload_count)
            self.uploads[name] = image
            while len(self.uploads) > MAX_UPLOADS_KEPT:
                self.uploads.popitem(last=False)
        return {"image": f"upload:{name}", "png": png_data_uri(image)}

    def analyze(self, req):
        key, backend, target = self._image_args(req)
        snapshot = self._snapshot(req)
        mine, other = self.both(key, backend, target, snapshot)
        label = None
        if key.startswith("test:"):
            label = int(self.data.y[int(key.split(":")[1])])
        probs, logits = mine["acts"]["softmax"], mine["acts"][self.logits]
        gradcam = mine["gradcam"]
        return {"image": key, "png": png_data_uri(self.image(key)), "label": label, "backend": backend,
                "snapshot": snapshot,
                "target": mine["target"], "pred": int(probs[:len(self.classes)].argmax()),
                "logits": logits.tolist(), "probs": probs.tolist(),
                "saliency": encode(mine["saliency"]),
                "gradcam": None if gradcam is None else encode(gradcam), "gradcam_layer": self.gradcam_layer,
                "diff": {"logits": _maxdiff(logits, other["acts"][self.logits]),
                         "probs": _maxdiff(probs, other["acts"]["softmax"]),
                         "saliency": _maxdiff(mine["saliency"], other["saliency"]),
                         "gradcam": None if gradcam is None else _maxdiff(gradcam, other["gradcam"])}}

    def layer(self, req):
        key, backend, target = self._image_args(req)
        layer, mode = self._layer_mode(req)
        snapshot = self._snapshot(req)
        mine, other = self.both(key, backend, target, snapshot)
        if mode == "weight":
            a, b = self.weight_grads(mine)[layer], self.weight_grads(other)[layer]
        else:
            part = "acts" if mode == "forward" else "grads"
            a, b = mine[part][layer], other[part][layer]
        return {"layer": layer, "mode": mode, "backend": backend, "target": mine["target"], "snapshot": snapshot,
                **encode(a), "diff": _maxdiff(a, b)}

    def _layer_mode(self, req):
        layer = _choice(req.get("layer"), self.view_layers, "layer")
        mode = _choice(req.get("mode", "forward"), MODES, "mode")
        if mode == "gradient" and layer == "softmax":
            raise ApiError(400, f"the gradients start at the chosen class's logit ({self.logits}), before "
                                f"the softmax; pick {self.logits} or an earlier layer")
        if mode == "weight" and (layer not in self.specs or short_kind(self.specs[layer].kind) != "Conv2d"):
            convs = ", ".join(s.name for s in self.arch.of_kind("Conv2d")) or "none in this network"
            raise ApiError(400, f"mode 'weight' shows the weight gradient of a Conv2d layer ({convs}), "
                                f"not of {layer}")
        return layer, mode

    def pixel(self, req):
        """One number of a layer view written out (see the module docstring)."""
        key, backend, target = self._image_args(req)
        layer, mode = self._layer_mode(req)
        snapshot = self._snapshot(req)
        mine, other = self.both(key, backend, target, snapshot)
        if mode == "weight":
            return self._weight_pixel(req, key, layer, mine, other)
        part = "acts" if mode == "forward" else "grads"
        shape = mine[part][layer].shape
        index = _index(req.get("index"), shape, layer)
        value, other_value = float(mine[part][layer][index]), float(other[part][layer][index])
        out = {"layer": layer, "mode": mode, "backend": backend, "target": mine["target"], "snapshot": snapshot,
               "index": list(index),
               "value": _finite(value), "other": _finite(other_value), "diff": _finite(abs(value - other_value)),
               "region": self._region(layer, index)}
        if mode == "forward":
            out.update(self._forward_formula(layer, index, mine))
        else:
            out.update(self._backward_formula(layer, index, mine))
            out.update(self._three_numbers(key, layer, index, mine, other))
        return out

    def _region(self, layer, index):
        """The input pixels an output pixel depends on, (y0, y1, x0, x1) inclusive; None for a vector."""
        if len(index) != 3:
            return None
        if layer == "input":
            return [index[1], index[1], index[2], index[2]]
        return list(self.arch.input_region(layer, index[1], index[2]))

    def _params(self, name, snapshot=None):
        prefix = name + "."
        return {k[len(prefix):]: v for k, v in self.at(snapshot).state_dict.items() if k.startswith(prefix)}

    def _input_of(self, name):
        i = self.names.index(name)
        return "input" if i == 0 else self.names[i - 1]

    def _unflat(self, name):
        """For a Linear: the (C, H, W) its input was flattened from (through elementwise layers), or None."""
        i = self.names.index(name) - 1
        while i >= 0 and short_kind(self.arch.layers[i].kind) in ("Dropout", "ReLU", "LeakyReLU", "Tanh", "Sigmoid"):
            i -= 1
        s = self.arch.layers[i] if i >= 0 else None
        return list(s.in_shape) if s is not None and s.kind == "Flatten" and len(s.in_shape) == 3 else None

    def _forward_formula(self, layer, index, r):
        if layer == "input":
            c, y, x = index
            raw = int(self.image(r["key"])[c, y, x])
            mean, std = (None, None) if self.normalize is None else (float(self.normalize[0][c]),
                                                                      float(self.normalize[1][c]))
            scaled = raw / 255
            return {"formula": "input", "kind": "Input", "raw": raw, "scaled": scaled, "mean": mean, "std": std,
                    "computed": scaled if mean is None else (scaled - mean) / std}
        if layer == "softmax":
            return {"kind": "Softmax", "input": self.logits,
                    **formulas.softmax_forward(r["acts"][self.logits], index, r["acts"]["softmax"])}
        s, source = self.specs[layer], self._input_of(layer)
        res = formulas.forward(short_kind(s.kind), s.args, self._params(layer, r["snapshot"]), r["acts"][source],
                               r["acts"][layer], index, self._unflat(layer) if s.kind == "Linear" else None)
        res.pop("value", None)
        return {"kind": short_kind(s.kind), "input": source, **res}

    def _backward_formula(self, layer, index, r):
        if layer == self.logits:
            return {"next": None, **formulas.score(r["target"], index, len(self.outputs))}
        i = 0 if layer == "input" else self.names.index(layer) + 1
        s = self.arch.layers[i]
        res = formulas.backward(short_kind(s.kind), s.args, self._params(s.name, r["snapshot"]), r["acts"][layer],
                                r["acts"][s.name], r["grads"][s.name], index,
                                self._unflat(s.name) if s.kind == "Linear" else None)
        return {"next": {"name": s.name, "kind": short_kind(s.kind)}, **res}

    def _three_numbers(self, key, layer, index, mine, other, weight=False):
        """The scratch backend's value, torch's, and a float64 central difference, with their differences."""
        by = {mine["backend"]: mine, other["backend"]: other}
        if weight:
            values = {b: float(self.weight_grads(by[b])[layer][index]) for b in BACKEND_NAMES}
        else:
            values = {b: float(by[b]["grads"][layer][index]) for b in BACKEND_NAMES}
        x = self.float_image(key)[0]
        with self.lock, self._one_thread():
            net = self.float64(mine["snapshot"])
            fd = (net.weight_gradient(x, layer, "weight", index, mine["target"]) if weight
                  else net.activation_gradient(x, layer, index, mine["target"]))
        s, t, f = values["scratch"], values["torch"], fd["value"]
        return {"scratch": _finite(s), "torch": _finite(t), "finite_difference": _finite(f), "step": fd["step"],
                "kink": fd["kink"], "slopes": [_finite(fd["left"]), _finite(fd["right"])],
                "differences": {"scratch_torch": _finite(abs(s - t)), "scratch_fd": _finite(abs(s - f)),
                                "torch_fd": _finite(abs(t - f))}}

    def _weight_pixel(self, req, key, layer, mine, other):
        s = self.specs[layer]
        shape = self.weight_grads(mine)[layer].shape
        index = _index(req.get("index"), shape, f"{layer}.weight")
        value = float(self.weight_grads(mine)[layer][index])
        other_value = float(self.weight_grads(other)[layer][index])
        res = formulas.weight_gradient(s.args, mine["acts"][self._input_of(layer)], mine["grads"][layer], index)
        for k in ("upstream", "input", "products"):
            res[k] = encode(res[k])
        return {"layer": layer, "mode": "weight", "backend": mine["backend"], "target": mine["target"],
                "snapshot": mine["snapshot"], "index": list(index), "kind": "Conv2d", "input_layer": self._input_of(layer),
                "value": _finite(value), "other": _finite(other_value), "diff": _finite(abs(value - other_value)),
                "region": None, **res, **self._three_numbers(key, layer, index, mine, other, weight=True)}

    def filters(self, query=None):
        """Every Conv2d's weights, in forward order (query ``snapshot``: that snapshot's);
        ``reads_image``: it is the first layer (its input channels are the image's R, G, B)."""
        snapshot = self._snapshot(query or {}, text=True)
        state = self.at(snapshot).state_dict
        return {"snapshot": snapshot,
                "layers": [{"name": s.name, "in_shape": list(s.in_shape), "reads_image": i == 0,
                            "weight": encode(state[f"{s.name}.weight"])}
                           for i, s in enumerate(self.arch.layers) if s.kind == "Conv2d"]}

    def snapshots(self):
        """The run's snapshots (``train --snapshots K``), in training order: index, epoch, step
        (within the epoch), global_step, images_seen, and "at", the position on the curves'
        epoch axis (epoch - 1 + step / steps per epoch). [] when the run kept none."""
        keep = ("index", "epoch", "step", "global_step", "images_seen", "at", "file")
        return {"snapshots": [{k: e[k] for k in keep} for e in self.timeline.entries()]}

    def _snapshot(self, req, text=False):
        """The request's "snapshot": None (the checkpoint's weights) or a snapshot index in range.
        In a query string (``text``) it is text, and "" is None."""
        value = req.get("snapshot")
        if value is None or (text and value == ""):
            return None
        if text:
            value = _int(value, "snapshot", -10**9, 10**9)
        elif isinstance(value, str):
            raise ApiError(400, f"snapshot must be a whole number (an index into /api/snapshots), got {value!r}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        self.timeline.check(value)
        return value

    def run(self):
        return self._run_metrics()

    def _run_metrics(self):
        """The run's per-epoch records: metrics.json beside the checkpoint, else the checkpoint's own."""
        path = os.path.join(os.path.dirname(os.path.abspath(self.checkpoint)), "metrics.json")
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    d = json.load(f)
                return {"source": path, "epochs": list(d.get("epochs", [])), "config": d.get("config", {})}
            except (OSError, ValueError, AttributeError):
                pass
        return {"source": "checkpoint" if self.ckpt_metrics else None, "epochs": list(self.ckpt_metrics),
                "config": self.config}

    def _image_args(self, req):
        if not isinstance(req, dict):
            raise ApiError(400, "the request body must be a JSON object")
        key = req.get("image")
        if not isinstance(key, str):
            raise ApiError(400, "'image' must be a string such as 'test:7' or 'upload:1'")
        self.image(key)                                        # 404 early for an unknown image
        backend = _choice(req.get("backend", "scratch"), BACKEND_NAMES, "backend")
        target = req.get("class")
        if target is not None:
            target = _int(target, "class", 0, len(self.outputs) - 1)
        return key, backend, target


def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _maxdiff(a, b):
    d = float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
    return d if math.isfinite(d) else None


def _index(value, shape, what):
    """A list of whole numbers, one per axis of ``shape``, each in range -> a tuple."""
    dims = "(channel, y, x)" if len(shape) == 3 else "(unit)" if len(shape) == 1 else f"of {len(shape)} numbers"
    if not isinstance(value, list) or len(value) != len(shape):
        raise ApiError(400, f"index must be a list {dims} for {what}, whose shape is "
                            f"{'x'.join(map(str, shape))}; got {json.dumps(value)[:40]}")
    return tuple(_int(v, f"index[{k}]", 0, n - 1) for k, (v, n) in enumerate(zip(value, shape)))


def _choice(value, allowed, what):
    if value not in allowed:
        raise ApiError(400, f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


def _int(value, what, lo, hi):
    """A whole number lo..hi from JSON or a query string (bools and fractions refused)."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ApiError(400, f"{what} must be a whole number, got {value!r}")
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{what} must be a whole number, got {value!r}") from None
    if not lo <= v <= hi:
        raise ApiError(400, f"{what} {v} is out of range {lo}..{hi}")
    return v
