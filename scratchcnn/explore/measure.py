"""``scratchcnn explore --measure``: how long each kind of request takes, server-side.

    measure(explorer, repeats=5)   time every request the page makes through
                                   ``http.dispatch`` (JSON included, no network);
                                   returns a printable table
"""
import io
import json
import time

import numpy as np

from scratchcnn.explore.http import dispatch


def measure(explorer, repeats=5):
    """Time every kind of request the page makes, server-side (``http.dispatch``, JSON
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
        return dispatch(explorer, "POST", path, json.dumps(req).encode())

    timed("GET /api/images (48 thumbnails, new page)",
          lambda r: dispatch(explorer, "GET", f"/api/images?offset={48 * (r + 1)}&limit=48"))
    timed("GET /api/images (misclassified, by confidence)",
          lambda r: dispatch(explorer, "GET", f"/api/images?wrong=1&sort=-confidence&offset={r}"))
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
    timed("GET /api/filters", lambda r: dispatch(explorer, "GET", "/api/filters"))
    timed("GET /api/run", lambda r: dispatch(explorer, "GET", "/api/run"))
    timed("GET / (the page)", lambda r: dispatch(explorer, "GET", "/"))
    png = _example_png()
    timed("POST /api/upload (a 256x256 PNG) + analyze",
          lambda r: post("/api/analyze", image=json.loads(dispatch(explorer, "POST", "/api/upload", png)[2])["image"]))
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
