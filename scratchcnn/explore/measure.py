"""``scratchcnn explore --measure``: how long each kind of request takes, server-side.

    measure(explorer, repeats=5)   time every request the page makes through
                                   ``http.dispatch`` (JSON included, no network);
                                   returns a printable table

Each view's interactions are timed as the page makes them: choosing an image (both
backends' forward and backward), opening a layer or switching mode (cached results),
clicking a number of any layer (``/api/pixel``: forward for one layer of each kind,
backward through each kind, with its finite difference, and a weight gradient) on an
image whose maps are already on screen, the Dreams tab (a dream, the first one of a layer
through a backend also ranking the test split for its top-9; a fooling image by steps and by FGSM; an
occlusion map), the time slider when the run has snapshots (an image at a snapshot not yet
loaded, and at one kept), the confusion matrix, the filters, the run.
"""
import io
import json
import time

import numpy as np

from scratchcnn.explore.analysis import short_kind
from scratchcnn.explore.http import dispatch


def measure(explorer, repeats=5):
    """Time every kind of request the page makes, server-side (``http.dispatch``, JSON
    included, no network), with warm caches of numba kernels but cold per-image results:
    each timed request uses an image not asked for before (a click on a number: an image
    whose maps are on screen, its finite differences not yet run). Returns a printable table."""
    explorer.warm()
    n = len(explorer.data)
    arch = explorer.arch
    rows = []
    fresh = iter(range(1, 10**9))                    # images not asked for yet

    def timed(label, fn, prepare=None):
        times = []
        for r in range(repeats):
            args = prepare(r) if prepare else r
            t = time.perf_counter()
            status, _, body = fn(args)
            times.append(1000 * (time.perf_counter() - t))
            if status != 200:
                raise RuntimeError(f"{label}: status {status}: {body[:200]!r}")
        rows.append((label, float(np.median(times)), max(times)))

    def post(path, **req):
        return dispatch(explorer, "POST", path, json.dumps(req).encode())

    def new_image(r=None):
        return f"test:{next(fresh) % n}"

    def on_screen(r=None):
        """An image analysed already (its maps are on screen), as when a number is clicked."""
        image = new_image()
        post("/api/analyze", image=image)
        return image

    timed("GET /api/images (48 thumbnails, new page)",
          lambda r: dispatch(explorer, "GET", f"/api/images?offset={48 * (r + 1)}&limit=48"))
    timed("GET /api/images (misclassified, by confidence)",
          lambda r: dispatch(explorer, "GET", f"/api/images?wrong=1&sort=-confidence&offset={r}"))
    timed("POST /api/analyze (new image: both backends' forward+backward)",
          lambda image: post("/api/analyze", image=image, backend="scratch"), new_image)
    timed("POST /api/analyze (another class for the same image)",
          lambda r: post("/api/analyze", image="test:0", backend="scratch", **{"class": r % len(explorer.outputs)}))
    first = arch.layers[0].name
    timed(f"POST /api/layer {first} forward (image on screen)",
          lambda image: post("/api/layer", image=image, layer=first, mode="forward"), on_screen)
    timed(f"POST /api/layer {explorer.logits} gradient, backend switched to torch",
          lambda image: post("/api/layer", image=image, backend="torch", layer=explorer.logits, mode="gradient"),
          on_screen)
    convs = arch.of_kind("Conv2d")
    if convs:
        last = convs[-1].name
        timed(f"POST /api/layer {last} weight gradient (torch's by autograd)",
              lambda image: post("/api/layer", image=image, layer=last, mode="weight"), on_screen)

    # A click on a number: forward, one layer of each kind.
    middle = lambda shape: [d // 2 for d in shape]          # noqa: E731
    by_kind = {}
    for s in arch.layers:
        by_kind.setdefault(short_kind(s.kind), s)
    for kind, s in by_kind.items():
        timed(f"POST /api/pixel forward {kind} ({s.name})",
              lambda image, s=s: post("/api/pixel", image=image, layer=s.name, mode="forward",
                                      index=middle(s.out_shape)), on_screen)
    timed("POST /api/pixel forward Softmax",
          lambda image: post("/api/pixel", image=image, layer="softmax", index=[0]), on_screen)
    # Backward: the gradient of a layer's output, sent back through each kind of layer above it,
    # with its three numbers (the finite difference runs the float64 network twice).
    above = {}
    for i, s in enumerate(arch.layers):
        above.setdefault(short_kind(s.kind), arch.layers[i - 1].name if i else "input")
    for kind, name in above.items():
        shape = arch.output_shape(name)
        timed(f"POST /api/pixel gradient through {kind} ({name}), with its finite difference",
              lambda image, name=name, shape=shape: post("/api/pixel", image=image, layer=name, mode="gradient",
                                                         index=middle(shape)), on_screen)
    timed(f"POST /api/pixel gradient of the logit ({explorer.logits})",
          lambda image: post("/api/pixel", image=image, layer=explorer.logits, mode="gradient", index=[0]), on_screen)
    for s in convs[:1] + convs[-1:] if len(convs) > 1 else convs:
        shape = explorer.state_dict[f"{s.name}.weight"].shape
        timed(f"POST /api/pixel weight gradient {s.name}, with its finite difference",
              lambda image, s=s, shape=shape: post("/api/pixel", image=image, layer=s.name, mode="weight",
                                                   index=middle(shape)), on_screen)

    _dreams(explorer, timed, post, new_image)
    _moments(explorer, timed, post, new_image)

    timed("GET /api/confusion", lambda r: dispatch(explorer, "GET", f"/api/confusion?backend={('scratch', 'torch')[r % 2]}"))
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


def _dreams(explorer, timed, post, new_image):
    """The Dreams tab: a dream (the first through a backend also ranks every test image, once),
    a fooling image by steps and by FGSM, an occlusion map; through both backends."""
    from scratchcnn.explore.dreaming import DREAM_STEPS, FOOL_STEPS

    k = len(explorer.outputs)
    maps = list(explorer.arch.map_layers)

    def forget(backend, layer, r):
        """The test split's ranking by ``layer`` is computed again by the next dream of it."""
        for key in [k for k in explorer.final.responses_cache if k[:2] == (backend, layer)]:
            del explorer.final.responses_cache[key]
        return r

    for backend in ("scratch", "torch"):
        timed(f"POST /api/dream class, {DREAM_STEPS} steps, {backend}",
              lambda r, b=backend: post("/api/dream", backend=b, seed=r, **{"class": r % k}))
        for layer in maps[:1] + maps[-1:] if len(maps) > 1 else maps:
            timed(f"POST /api/dream one channel of {layer}, {DREAM_STEPS} steps, {backend}, first (+ ranking "
                  f"the test split)", lambda r, b=backend, L=layer: post("/api/dream", backend=b, layer=L, channel=r),
                  lambda r, b=backend, L=layer: forget(b, L, r))
            timed(f"POST /api/dream one channel of {layer}, {DREAM_STEPS} steps, {backend}",
                  lambda r, b=backend, L=layer: post("/api/dream", backend=b, layer=L, channel=r, seed=r))

        def another_class(r, b=backend):
            """An image on screen, and a class it is not predicted as."""
            image = new_image()
            return image, (json.loads(post("/api/analyze", image=image, backend=b)[2])["pred"] + 1) % k
        timed(f"POST /api/fool steps (at most {FOOL_STEPS}), {backend}",
              lambda it, b=backend: post("/api/fool", image=it[0], target=it[1], backend=b), another_class)
        timed(f"POST /api/fool fgsm, {backend}",
              lambda it, b=backend: post("/api/fool", image=it[0], target=it[1], backend=b, method="fgsm"),
              another_class)
        timed(f"POST /api/occlusion patch 8 stride 4, {backend}",
              lambda image, b=backend: post("/api/occlusion", image=image, backend=b), new_image)


def _moments(explorer, timed, post, new_image):
    """The time slider: an image at a snapshot not loaded yet (its file read, both backends
    built), and at one kept in memory; the filters of a snapshot; a channel dream of the
    deepest maps at a snapshot not loaded yet (which also ranks the test split)."""
    entries = explorer.timeline.entries()
    if not entries:
        return
    last = len(entries) - 1

    def unloaded(r):
        explorer.timeline.kept.clear()
        return new_image()
    timed("POST /api/analyze at a snapshot not loaded yet", lambda image: post("/api/analyze", image=image,
                                                                               snapshot=last), unloaded)
    timed("POST /api/analyze at a snapshot kept in memory", lambda image: post("/api/analyze", image=image,
                                                                               snapshot=last), new_image)
    maps = list(explorer.arch.map_layers)
    if maps:
        # the slowest click of the Dreams tab: the snapshot read, both backends built, the test
        # split ranked by the deepest maps, and the dream itself
        timed(f"POST /api/dream one channel of {maps[-1]} at a snapshot not loaded yet, scratch",
              lambda r: post("/api/dream", backend="scratch", layer=maps[-1], channel=r, snapshot=last),
              lambda r: explorer.timeline.kept.clear() or r)
    timed("GET /api/filters?snapshot= (kept)", lambda r: dispatch(explorer, "GET", f"/api/filters?snapshot={last}"))
    timed("GET /api/snapshots", lambda r: dispatch(explorer, "GET", "/api/snapshots"))


def _example_png(size=256):
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
