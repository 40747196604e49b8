"""What the explorer's page shows, computed without any HTTP: :class:`Explorer`.

``Explorer(checkpoint, data)`` loads one checkpoint into both backends and answers
each request kind with a JSON-ready dict (``scratchcnn.explore.http`` routes the
requests to these methods and turns :class:`ApiError` into a 4xx answer):

    info()                  classes, layers and their shapes, the dataset, the run
    images(query)           a page of the test set: thumbnails, label, prediction
                            (query: cls, wrong, sort, offset, limit, backend)
    upload(body)            an uploaded image's bytes -> {"image": "upload:N", "png"}
                            (decoded by ``scratchcnn.explore.uploads``)
    analyze(req)            {image, backend, class} -> logits, probabilities, saliency, Grad-CAM
    layer(req)              {image, backend, class, layer, mode: "forward" | "gradient"}
                            -> every channel of one layer's output or ds/d(output)
    pixel(req)              {image, backend, layer: conv1 | conv2, channel, y, x}
                            -> one output pixel of a convolution, written out
    filters()               conv1's and conv2's weights
    run()                   metrics.json of the run folder (curves, layer statistics)

``image`` is ``"test:INDEX"`` or ``"upload:N"``; ``class`` is the class whose logit
the gradients explain (null: the predicted class). Arrays travel as base64 of
little-endian float32 with their shape. Every answer that shows numbers also
gives ``diff``: the largest |scratch - torch| over exactly what it returned, the
other backend run on the same image and class.
"""
import base64
import json
import math
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from scratchcnn.architecture import INPUT_SHAPE, NUM_CLASSES, tutorial
from scratchcnn.explore.errors import ApiError
from scratchcnn.explore.uploads import decode_upload, png_data_uri

MAX_UPLOADS_KEPT = 32                    # in memory; the oldest is forgotten first
CACHE_SIZE = 48                          # (image, backend, class) keys kept (a result is ~1.5 MB)
BACKEND_NAMES = ("scratch", "torch")
CONV_LAYERS = ("conv1", "conv2")
# What each conv layer reads: conv1 the image, conv2 drop1's output (= act1's in eval mode).
CONV_INPUT = {"conv1": "input", "conv2": "drop1"}
LAYERS = tutorial().layers                # the explorer follows the spec in the next change
LAYER_NAMES = tutorial().layer_names
VIEW_LAYERS = ("input", *LAYER_NAMES, "softmax")


def encode(a):
    """float array -> {"shape", "data": base64 of little-endian float32, "min", "max"}."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii"),
            "min": float(a.min()) if a.size else 0.0, "max": float(a.max()) if a.size else 0.0}


class Explorer:
    """Everything the page asks for, computed from one checkpoint and its test split.

    ``Explorer(checkpoint, data, classes=None)``: loads the checkpoint
    (``scratchcnn.checkpoint``: ours or the tutorial's bare state_dict) into both
    backends; ``data`` is the ``scratchcnn.data.Dataset`` to browse (the test split of
    the checkpoint's dataset, chosen by the command); ``classes`` defaults to the
    checkpoint's class names, then the dataset's. Thread-safe:
    one lock serialises the model work, which is what two cores can do anyway.
    """

    def __init__(self, checkpoint, data, classes=None):
        from scratchcnn.evaluate import load_backend

        self.checkpoint = checkpoint
        self.backends = {}
        self.backends["scratch"], ckpt = load_backend(checkpoint, "scratch")
        self.state_dict = ckpt["model"]
        self.config, self.epoch = ckpt["config"], ckpt["epoch"]
        self.ckpt_metrics = ckpt["metrics"]
        self.normalize = self.config.get("normalize_stats")
        self.data = data
        self.classes = list(classes or self.config.get("classes") or data.classes)
        self.lock = threading.RLock()
        self.uploads = OrderedDict()
        self.upload_count = 0
        self.cache = OrderedDict()
        self.predictions = {}
        self.thumbs = {}

    # ------------------------------------------------------------ the models
    def backend(self, name):
        if name not in self.backends:
            from scratchcnn.backends import make_backend
            b = make_backend(name)
            b.load_state_dict(self.state_dict)
            self.backends[name] = b
        return self.backends[name]

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

    def predict_all(self, backend):
        """(pred (N,), confidence (N,)) over the test split, computed once per backend."""
        from scratchcnn.backends import evaluate_logits
        from scratchcnn.study.featuremaps import softmax

        with self.lock:
            if backend not in self.predictions:
                p = softmax(evaluate_logits(self.backend(backend), self.data, 250, self.normalize))
                self.predictions[backend] = (p.argmax(1), p.max(1))
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

    def compute(self, key, backend, target):
        """class_gradients of one image through one backend (cached): logits, every layer's
        output and ds/d(output), with the softmax probabilities, saliency map and Grad-CAM."""
        from scratchcnn.data import to_float
        from scratchcnn.study.featuremaps import softmax
        from scratchcnn.study.saliency import class_gradients, grad_cam, saliency_map

        cache_key = (key, backend, target)
        with self.lock:
            if cache_key in self.cache:
                self.cache.move_to_end(cache_key)
                return self.cache[cache_key]
            x = to_float(self.image(key)[None], self.normalize)
            with self._one_thread():
                r = class_gradients(self.backend(backend), x, target)
            out = {"target": int(r["classes"][0]),
                   "acts": {"input": x[0], **{k: v[0] for k, v in r["acts"].items()}},
                   "grads": {k: v[0] for k, v in r["grads"].items()}}
            out["acts"]["softmax"] = softmax(out["acts"]["fc4"]).astype(np.float32)
            out["saliency"] = saliency_map(r["grads"]["input"])[0]
            out["gradcam"] = grad_cam(r["acts"]["conv2"], r["grads"]["conv2"])[0]
            self.cache[cache_key] = self.cache[(key, backend, out["target"])] = out
            while len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
            return out

    def both(self, key, backend, target):
        """(this backend's result, the other backend's result for the same class)."""
        mine = self.compute(key, backend, target)
        other = "torch" if backend == "scratch" else "scratch"
        return mine, self.compute(key, other, mine["target"])

    # ------------------------------------------------------------ requests
    def info(self):
        layers = [{"name": "input", "kind": "image", "shape": list(INPUT_SHAPE)}]
        layers += [{"name": s.name, "kind": s.kind, "shape": list(s.out_shape), "args": s.args} for s in LAYERS]
        layers.append({"name": "softmax", "kind": "Softmax", "shape": [NUM_CLASSES]})
        run = self._run_metrics()
        return {"classes": self.classes, "layers": layers, "dataset": self.data.name, "n_test": len(self.data),
                "checkpoint": self.checkpoint, "epoch": self.epoch, "backends": list(BACKEND_NAMES),
                "has_run": bool(run["epochs"]), "normalize": self.normalize is not None}

    def images(self, query):
        backend = _choice(query.get("backend", "scratch"), BACKEND_NAMES, "backend")
        cls = query.get("cls", "")
        offset = _int(query.get("offset", 0), "offset", 0, 10**9)
        limit = _int(query.get("limit", 48), "limit", 1, 500)
        sort = _choice(query.get("sort", "index"), ("index", "confidence", "-confidence"), "sort")
        pred, conf = self.predict_all(backend)
        keep = np.ones(len(self.data), bool)
        if cls not in ("", None):
            keep &= self.data.y == _int(cls, "cls", 0, len(self.classes) - 1)
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
        mine, other = self.both(key, backend, target)
        label = None
        if key.startswith("test:"):
            label = int(self.data.y[int(key.split(":")[1])])
        probs = mine["acts"]["softmax"]
        return {"image": key, "png": png_data_uri(self.image(key)), "label": label, "backend": backend,
                "target": mine["target"], "pred": int(probs.argmax()),
                "logits": mine["acts"]["fc4"].tolist(), "probs": probs.tolist(),
                "saliency": encode(mine["saliency"]), "gradcam": encode(mine["gradcam"]),
                "diff": {"logits": _maxdiff(mine["acts"]["fc4"], other["acts"]["fc4"]),
                         "probs": _maxdiff(probs, other["acts"]["softmax"]),
                         "saliency": _maxdiff(mine["saliency"], other["saliency"]),
                         "gradcam": _maxdiff(mine["gradcam"], other["gradcam"])}}

    def layer(self, req):
        key, backend, target = self._image_args(req)
        layer = _choice(req.get("layer"), VIEW_LAYERS, "layer")
        mode = _choice(req.get("mode", "forward"), ("forward", "gradient"), "mode")
        if mode == "gradient" and layer == "softmax":
            raise ApiError(400, "the gradients start at the chosen class's logit (fc4), before the "
                                "softmax; pick fc4 or an earlier layer")
        mine, other = self.both(key, backend, target)
        part = "acts" if mode == "forward" else "grads"
        a, b = mine[part][layer], other[part][layer]
        return {"layer": layer, "mode": mode, "backend": backend, "target": mine["target"],
                **encode(a), "diff": _maxdiff(a, b)}

    def pixel(self, req):
        """One output pixel of conv1 or conv2 written out: out = bias + sum(patch * kernel)."""
        key, backend, target = self._image_args(req)
        layer = _choice(req.get("layer"), CONV_LAYERS, "layer")
        weight = self.state_dict[f"{layer}.weight"]
        n_out, n_in, kh, kw = weight.shape
        c = _int(req.get("channel"), "channel", 0, n_out - 1)
        y = _int(req.get("y"), "y", 0, INPUT_SHAPE[1] - 1)
        x = _int(req.get("x"), "x", 0, INPUT_SHAPE[2] - 1)
        mine, other = self.both(key, backend, target)
        inp = mine["acts"][CONV_INPUT[layer]]                      # (C, 32, 32), padding 1
        padded = np.pad(inp, ((0, 0), (1, 1), (1, 1)))
        inside = np.pad(np.ones(inp.shape[1:], bool), 1)[y:y + kh, x:x + kw]
        patch = padded[:, y:y + kh, x:x + kw]
        kernel = weight[c]
        products = patch.astype(np.float64) * kernel
        total = float(products.sum())
        bias = float(self.state_dict[f"{layer}.bias"][c])
        value = float(mine["acts"][layer][c, y, x])
        return {"layer": layer, "input": CONV_INPUT[layer], "channel": c, "y": y, "x": x, "backend": backend,
                "patch": patch.tolist(), "kernel": kernel.tolist(), "products": products.tolist(),
                "inside": inside.tolist(), "sum": total, "bias": bias, "computed": total + bias,
                "value": value, "diff": abs(value - float(other["acts"][layer][c, y, x]))}

    def filters(self):
        return {"conv1": encode(self.state_dict["conv1.weight"]), "conv2": encode(self.state_dict["conv2.weight"])}

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
            target = _int(target, "class", 0, len(self.classes) - 1)
        return key, backend, target


def _maxdiff(a, b):
    d = float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
    return d if math.isfinite(d) else None


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

