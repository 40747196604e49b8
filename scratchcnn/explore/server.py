"""``scratchcnn explore``: the network on your checkpoint, in a local web page.

The server is the standard library's ``http.server.ThreadingHTTPServer``: no
dependency, nothing to configure, and enough for one learner on localhost. The
page (``static/``: index.html, app.js, style.css) is plain HTML, CSS and
JavaScript, with no CDN and no build step; it draws every map on a <canvas>.

All the work is in :class:`Explorer`, which answers requests without any HTTP
(the tests and ``--measure`` call :meth:`Explorer.handle` directly):

    GET  /api/info                       classes, layers and their shapes, the dataset, the run
    GET  /api/images?cls=&wrong=&sort=&offset=&limit=&backend=
                                         a page of the test set: thumbnails, label, prediction
    POST /api/upload   (the image file as the body)  -> {"image": "upload:N"}
    POST /api/analyze  {image, backend, class}       logits, probabilities, saliency, Grad-CAM
    POST /api/layer    {image, backend, class, layer, mode: "forward" | "gradient"}
                                         every channel of one layer's output or ds/d(output)
    POST /api/pixel    {image, backend, layer: conv1 | conv2, channel, y, x}
                                         one output pixel of a convolution, written out
    GET  /api/filters                    conv1's and conv2's weights
    GET  /api/run                        metrics.json of the run folder (curves, layer statistics)

``image`` is ``"test:INDEX"`` or ``"upload:N"``; ``class`` is the class whose logit
the gradients explain (null: the predicted class). Arrays travel as base64 of
little-endian float32 with their shape. Every answer that shows numbers also
gives ``diff``: the largest |scratch - torch| over exactly what it returned, the
other backend run on the same image and class.

Safety: binds 127.0.0.1 unless ``--host`` says otherwise (with a warning); on
loopback it answers only requests whose Host header names loopback (no DNS
rebinding). Request bodies are limited (JSON 64 KiB, uploads 8 MiB), an upload
is decoded from memory (never written to disk) with a pixel limit checked from
the header before decoding, and Pillow's decompression-bomb warning is an error.
Bad requests get a 4xx and ``{"error": "..."}``; an unexpected failure gets a
500 with a one-line message, and the server keeps serving.
"""
import base64
import io
import json
import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from scratchcnn.architecture import INPUT_SHAPE, NUM_CLASSES, tutorial
from scratchcnn.errors import UserError

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/index.html": ("index.html", "text/html; charset=utf-8"),
                "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/static/style.css": ("style.css", "text/css; charset=utf-8")}
MAX_JSON_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000           # checked from the image header, before decoding
MAX_UPLOADS_KEPT = 32                    # in memory; the oldest is forgotten first
CACHE_SIZE = 48                          # (image, backend, class) keys kept (a result is ~1.5 MB)
BACKEND_NAMES = ("scratch", "torch")
CONV_LAYERS = ("conv1", "conv2")
# What each conv layer reads: conv1 the image, conv2 drop1's output (= act1's in eval mode).
CONV_INPUT = {"conv1": "input", "conv2": "drop1"}
LAYERS = tutorial().layers                # the explorer follows the spec in the next change
LAYER_NAMES = tutorial().layer_names
VIEW_LAYERS = ("input", *LAYER_NAMES, "softmax")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class ApiError(Exception):
    """A bad request: HTTP ``status`` and a one-line message for the page."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def encode(a):
    """float array -> {"shape", "data": base64 of little-endian float32, "min", "max"}."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii"),
            "min": float(a.min()) if a.size else 0.0, "max": float(a.max()) if a.size else 0.0}


def png_data_uri(image_uint8):
    """(3, H, W) uint8 -> "data:image/png;base64,..." (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_uint8.transpose(1, 2, 0))).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_upload(data):
    """The bytes of an uploaded image -> uint8 (3, 32, 32), resized like ``data.load_image``.

    Refuses (ApiError 400/413) anything Pillow cannot identify, formats other than
    PNG/JPEG/GIF/BMP/WEBP, images over MAX_UPLOAD_PIXELS (read from the header, before
    any pixel is decoded) and anything Pillow flags as a decompression bomb.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError(400, "the upload is empty; choose a PNG or JPEG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.format not in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
                    raise ApiError(400, f"{im.format} images are not accepted; upload a PNG or JPEG")
                if im.width * im.height > MAX_UPLOAD_PIXELS:
                    raise ApiError(413, f"the image is {im.width}x{im.height} pixels, more than "
                                        f"{MAX_UPLOAD_PIXELS:,}; upload a smaller picture")
                arr = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.uint8)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "Pillow's decompression-bomb guard refused the image (too many pixels); "
                            "upload a smaller picture") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise ApiError(400, f"the upload is not an image Pillow can read ({type(e).__name__}); "
                            f"upload a PNG or JPEG") from None
    return arr.transpose(2, 0, 1).copy()


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

    # ------------------------------------------------------------ dispatch
    def handle(self, method, path, body=b"", headers=None):
        """One request -> (status, content type, body bytes). Never raises."""
        url = urlsplit(path)
        try:
            if method == "GET" and url.path in STATIC_FILES:
                name, ctype = STATIC_FILES[url.path]
                with open(os.path.join(STATIC_DIR, name), "rb") as f:
                    return 200, ctype, f.read()
            routes_get = {"/api/info": self.info, "/api/filters": self.filters, "/api/run": self.run}
            routes_post = {"/api/analyze": self.analyze, "/api/layer": self.layer, "/api/pixel": self.pixel}
            if method == "GET" and url.path in routes_get:
                return _json(200, routes_get[url.path]())
            if method == "GET" and url.path == "/api/images":
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                return _json(200, self.images(query))
            if method == "POST" and url.path == "/api/upload":
                return _json(200, self.upload(body))
            if method == "POST" and url.path in routes_post:
                try:
                    req = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as e:
                    raise ApiError(400, f"the request body is not valid JSON ({e})") from None
                return _json(200, routes_post[url.path](req))
            if url.path in STATIC_FILES or url.path in routes_get or url.path in routes_post or \
                    url.path in ("/api/images", "/api/upload"):
                raise ApiError(405, f"{method} is not allowed on {url.path}")
            raise ApiError(404, f"nothing at {url.path}")
        except ApiError as e:
            return _json(e.status, {"error": str(e)})
        except Exception as e:                      # a bug: say so in one line, keep serving
            first = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"explore: internal error on {method} {url.path}: {type(e).__name__}: {first}", flush=True)
            return _json(500, {"error": f"internal error ({type(e).__name__}: {first})"})


def _json(status, obj):
    return status, "application/json", json.dumps(obj, allow_nan=False, default=_json_default).encode()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


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


# ---------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    """Thin HTTP layer over ``server.explorer.handle``: limits, headers, logging."""
    server_version = "scratchcnn-explore"
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method):
        if self.server.loopback_only and not _loopback_host(self.headers.get("Host", "")):
            return self._send(*_json(403, {"error": "this server answers requests to 127.0.0.1 or "
                                                    "localhost only"}), close=True)
        body = b""
        if method == "POST":
            limit = MAX_UPLOAD_BYTES if self.path.startswith("/api/upload") else MAX_JSON_BYTES
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding"):
                return self._send(*_json(411, {"error": "send the body with a Content-Length"}), close=True)
            try:
                n = int(length)
            except (TypeError, ValueError):
                return self._send(*_json(411, {"error": "a POST needs a Content-Length header"}), close=True)
            if n < 0 or n > limit:
                return self._send(*_json(413, {"error": f"the request body is {n:,} bytes; the limit "
                                                        f"here is {limit:,} bytes"}), close=True)
            body = self.rfile.read(n)
        t = time.perf_counter()
        status, ctype, data = self.server.explorer.handle(method, self.path, body)
        self._send(status, ctype, data, ms=1000 * (time.perf_counter() - t))

    def _send(self, status, ctype, data, close=False, ms=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                         "script-src 'self'; connect-src 'self'")
        if ms is not None:
            self.send_header("Server-Timing", f"compute;dur={ms:.1f}")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)


def _loopback_host(host):
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOOPBACK


def make_server(explorer, host="127.0.0.1", port=8000, verbose=False):
    """A ThreadingHTTPServer answering with ``explorer`` (port 0: any free port)."""
    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port "
                        f"(or 0 for any free one)") from None
    server.daemon_threads = True
    server.explorer, server.verbose = explorer, verbose
    server.loopback_only = host in LOOPBACK
    return server


def serve(explorer, host="127.0.0.1", port=8000):
    """Warm up, print the URL and serve ``explorer`` until Ctrl-C. Returns the exit code."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is out of range 0..65535")
    server = make_server(explorer, host, port, verbose=True)
    if host not in LOOPBACK:
        print(f"WARNING: listening on {host}: anyone who can reach this machine on port "
              f"{server.server_address[1]} can use the page and upload images to it.", flush=True)
    print(f"loading: both backends' predictions for the {len(explorer.data)} {explorer.data.name} "
          f"test images ...", flush=True)
    for name in BACKEND_NAMES:                                 # so the grid never waits for them
        explorer.predict_all(name)
    explorer.compute("test:0", "scratch", None)               # loads the numba kernels
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"scratchcnn explore: http://{shown}:{server.server_address[1]}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
    return 0


# ---------------------------------------------------------------- --measure
def measure(explorer, repeats=5):
    """Time every kind of request the page makes, server-side (``Explorer.handle``, JSON
    included, no network), with warm caches of numba kernels but cold per-image results:
    each timed request uses an image not asked for before. Returns a printable table."""
    explorer.predict_all("scratch")
    explorer.predict_all("torch")
    explorer.compute("test:0", "scratch", None)
    explorer.compute("test:0", "torch", None)
    n = len(explorer.data)
    rows = []

    def timed(label, fn):
        times = []
        for r in range(repeats):
            t = time.perf_counter()
            status, _, body = fn(r)
            times.append(1000 * (time.perf_counter() - t))
            if status != 200:
                raise RuntimeError(f"{label}: status {status}: {body[:200]!r}")
        rows.append((label, float(np.median(times)), max(times)))

    def post(path, **req):
        return explorer.handle("POST", path, json.dumps(req).encode())

    timed("GET /api/images (48 thumbnails, new page)",
          lambda r: explorer.handle("GET", f"/api/images?offset={48 * (r + 1)}&limit=48"))
    timed("GET /api/images (misclassified, by confidence)",
          lambda r: explorer.handle("GET", f"/api/images?wrong=1&sort=-confidence&offset={r}"))
    timed("POST /api/analyze (new image: both backends' forward+backward)",
          lambda r: post("/api/analyze", image=f"test:{(r + 1) % n}", backend="scratch"))
    timed("POST /api/analyze (new class for the same image)",
          lambda r: post("/api/analyze", image=f"test:{(r + 1) % n}", backend="scratch", **{"class": r}))
    timed("POST /api/layer conv1 forward",
          lambda r: post("/api/layer", image=f"test:{(r + 1) % n}", layer="conv1", mode="forward"))
    timed("POST /api/layer conv2 gradient",
          lambda r: post("/api/layer", image=f"test:{(r + 1) % n}", layer="conv2", mode="gradient"))
    timed("POST /api/pixel conv2 (288 products)",
          lambda r: post("/api/pixel", image=f"test:{(r + 1) % n}", layer="conv2", channel=r, y=5, x=r))
    timed("POST /api/layer, backend switched to torch",
          lambda r: post("/api/layer", image=f"test:{(r + 1) % n}", backend="torch", layer="act2"))
    timed("GET /api/filters", lambda r: explorer.handle("GET", "/api/filters"))
    timed("GET /api/run", lambda r: explorer.handle("GET", "/api/run"))
    timed("GET / (the page)", lambda r: explorer.handle("GET", "/"))
    png = _example_png()
    timed("POST /api/upload (a 256x256 PNG) + analyze",
          lambda r: post("/api/analyze", image=json.loads(explorer.handle("POST", "/api/upload", png)[2])["image"]))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'request':<{width}}  median ms    max ms", "-" * (width + 22)]
    lines += [f"{label:<{width}}  {med:9.1f}  {mx:8.1f}" for label, med, mx in rows]
    slowest = max(rows, key=lambda r: r[2])
    lines.append(f"slowest: {slowest[0]}, {slowest[2]:.1f} ms ({repeats} repeats each)")
    return "\n".join(lines)


def _example_png(size=256):
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
