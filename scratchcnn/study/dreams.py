"""Images the network dreams up: the input gradient put to work.

``study.saliency`` reads ds/dx to explain one image. Here the gradient changes the image:

    class_visualisation     an image that maximises one class's logit (activation maximisation,
                            Simonyan et al. 2014; the regularisers of Yosinski et al. 2015, as in
                            cs231n's assignment 3)
    channel_visualisation   the same ascent on the mean activation of one channel of any layer
                            with (C, H, W) outputs; top_activating finds the dataset images that
                            excite that channel most
    fooling_image           the smallest gradient steps that make the network answer another
                            class (cs231n's fooling images), or one FGSM step (Goodfellow et al. 2015)
    occlusion_map           the drop in a class's probability when a grey patch covers each part
                            of the image (Zeiler & Fergus 2014): an explanation that needs no gradient

Every gradient comes from :func:`score_gradient`: one forward pass, then ds/d(output) of ONE
layer handed to the backward pass, down to ds/dx. The scratch backend runs its hand-written
backward layer by layer (as ``saliency.class_gradients`` does; the first convolution is asked for
its input gradient), the torch backend ``torch.autograd.grad`` with that ds/d(output) as
``grad_outputs``. Dropout is off (eval mode). Everything else (jitter, blur, clipping, the
random start) is NumPy drawn from ``seed``, so both backends make the same image from the same
seed, to float32 rounding.

Units. Images live in the network's input units: ``x = (pixel - mean) / std`` per channel with
pixel in [0, 1] (``data.to_float``; ``normalize`` is the checkpoint's ``config["normalize_stats"]``,
None for pixels in [0, 1]). The valid range of channel c is therefore [(0 - mean_c) / std_c,
(1 - mean_c) / std_c], and "grey" is pixel 0.5. Step sizes and epsilon are given in pixel units
(a fraction of 0..255) and divided by std where they enter input units. Results come back
both as float32 input units ("image") and as uint8 pixels ("uint8", what a PNG holds).

From Python::

    from scratchcnn.evaluate import load_backend
    from scratchcnn.study.dreams import class_visualisation, fooling_image, occlusion_map
    backend, ckpt = load_backend("runs/study/checkpoint.pth", "scratch")
    stats = ckpt["config"].get("normalize_stats")
    r = class_visualisation(backend, 3, steps=200, seed=0, normalize=stats)
    r["uint8"]                     # (3, 32, 32), r["scores"]: the class-3 logit, step by step
"""
import math

import numpy as np

from scratchcnn.errors import UserError

# The defaults of the ascent, chosen on the tutorial's network trained 2 epochs on the synthetic
# dataset (98% test accuracy): l2 0.02 gave fainter images and lower scores, lr 0.5 or jitter 4
# left some classes grey after 200 steps, no blur gave noisier images.
ASCENT_DEFAULTS = {"steps": 200, "lr": 1.0, "l2": 0.005, "jitter": 2, "blur_every": 10,
                   "blur_sigma": 0.5, "seed": 0, "start": "noise"}
STARTS = ("noise", "grey")
FOOL_METHODS = ("steps", "fgsm")
FILLS = ("grey", "mean")


# ----------------------------------------------------------------------------
# The one forward + backward every function here uses
# ----------------------------------------------------------------------------

def score_gradient(backend, x, layer, seed_gradient):
    """Forward ``x`` (float32 (N, C, H, W), input units) through ``backend`` in eval mode, then
    backward from layer ``layer``'s output to the pixels.

    ``seed_gradient(out)`` (or None: forward only, ds/dx None) receives that layer's output A
    (float32 (N, *out_shape)) and returns ds/dA of the same shape: the score s is whatever that
    gradient says (a one-hot on the logits for a class score, 1/(H*W) on one channel for a
    channel mean, softmax - onehot for a cross-entropy). The backward pass is the network's own:
    for the scratch backend each layer's hand-written ``backward`` from ``layer`` down to the
    first, for torch ``torch.autograd.grad(A, x, grad_outputs=ds/dA)``.

    Returns ``(A, logits (N, K), ds/dx (N, C, H, W))`` as float32 NumPy arrays. The scratch
    model's parameter gradients are overwritten (ds/dW, not a loss gradient), as in saliency.
    """
    names = backend.model.arch.layer_names
    if layer not in names:
        raise UserError(f"the network {backend.model.arch.name} has no layer {layer!r}; "
                        f"its layers are {', '.join(names)}")
    if backend.name == "scratch":
        model = backend.model.eval()
        acts = model.forward_intermediates(np.ascontiguousarray(x, model.dtype))
        out = acts[layer]
        if seed_gradient is None:
            return out, acts[names[-1]], None
        g = np.ascontiguousarray(seed_gradient(out), model.dtype)
        for _, lyr in reversed(model.layers[:names.index(layer) + 1]):
            g = lyr.backward(g)                # a Conv2d returns its input gradient by default
        return out, acts[names[-1]], g
    import torch

    model, device = backend.model, next(backend.model.parameters()).device
    found = {}
    hook = getattr(model, layer).register_forward_hook(lambda m, i, o: found.__setitem__("out", o))
    try:
        model.eval()
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)
        with torch.set_grad_enabled(seed_gradient is not None):
            logits = model(xt.requires_grad_(seed_gradient is not None))
    finally:
        hook.remove()
    out = found["out"].detach().float().cpu().numpy()
    if seed_gradient is None:
        return out, logits.detach().float().cpu().numpy(), None
    seed = torch.from_numpy(np.ascontiguousarray(seed_gradient(out), np.float32)).to(device)
    (dx,) = torch.autograd.grad(found["out"], xt, grad_outputs=seed.to(found["out"].dtype))
    return out, logits.detach().float().cpu().numpy(), dx.detach().float().cpu().numpy()


def layer_output(backend, x, layer, batch_size=250):
    """Layer ``layer``'s output for every image of ``x`` (float32 (N, C, H, W)), eval mode, in
    batches: float32 (N, *out_shape). The torch backend records only that layer (a forward hook)."""
    chunks = []
    for i in range(0, len(x), batch_size):
        xb = np.ascontiguousarray(x[i:i + batch_size], np.float32)
        if backend.name == "scratch":
            chunks.append(backend.model.eval().forward_intermediates(xb)[layer].copy())
            continue
        torch, model = backend.torch, backend.model
        found = {}
        hook = getattr(model, layer).register_forward_hook(lambda m, i_, o: found.__setitem__("out", o))
        try:
            model.eval()
            with torch.no_grad():
                model(torch.from_numpy(xb).to(backend.device))
        finally:
            hook.remove()
        chunks.append(found["out"].float().cpu().numpy())
    shape = backend.model.arch.output_shape(layer)
    return np.concatenate(chunks) if chunks else np.zeros((0, *shape), np.float32)


def softmax(logits):
    """Probabilities along the last axis (float64, the largest logit subtracted first)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------
# Pixels and input units
# ----------------------------------------------------------------------------

def _stats(normalize, channels):
    """(mean, std), float32 (C, 1, 1) each: the checkpoint's normalisation, or 0 and 1."""
    if normalize is None:
        return np.zeros((channels, 1, 1), np.float32), np.ones((channels, 1, 1), np.float32)
    mean, std = (np.asarray(v, np.float32).reshape(-1, 1, 1) for v in normalize)
    if mean.shape[0] != channels or std.shape[0] != channels or not (std > 0).all():
        raise UserError(f"normalize must be ({channels} means, {channels} positive stds), got {normalize!r}")
    return mean, std


def pixel_range(normalize, channels=3):
    """(lo, hi), float32 (C, 1, 1): the input values of pixels 0 and 1 in each channel."""
    mean, std = _stats(normalize, channels)
    return (0 - mean) / std, (1 - mean) / std


def to_input(pixels, normalize):
    """Pixels in [0, 1] (C, H, W) -> the network's input units: (p - mean) / std, float32."""
    mean, std = _stats(normalize, pixels.shape[-3])
    return ((np.asarray(pixels, np.float32) - mean) / std).astype(np.float32)


def to_uint8(x, normalize):
    """Input units (C, H, W) -> uint8 pixels: round(255 * (x * std + mean)), clipped to 0..255."""
    mean, std = _stats(normalize, x.shape[-3])
    return np.clip(np.rint((x * std + mean) * 255), 0, 255).astype(np.uint8)


def from_uint8(image, normalize):
    """uint8 (C, H, W) -> float32 input units, exactly as training scales its images."""
    from scratchcnn.data import to_float
    return to_float(np.asarray(image, np.uint8)[None], normalize)[0]


def gaussian_blur(x, sigma):
    """Blur each channel of ``x`` (C, H, W) with a Gaussian of ``sigma`` pixels: two 1-D passes
    with the kernel k[i] = exp(-i^2 / (2 sigma^2)) / sum, i = -r..r, r = ceil(3 sigma) (at most
    the image size - 1), edges reflected. The kernel sums to 1, so a blur of (p - mean) / std is
    (blur(p) - mean) / std: it can be applied in input units, and keeps every value in range."""
    c, h, w = x.shape
    r = int(min(math.ceil(3 * sigma), h - 1, w - 1))
    if r < 1:
        return x.copy()
    i = np.arange(-r, r + 1)
    k = np.exp(-i ** 2 / (2.0 * sigma ** 2))
    k = (k / k.sum()).astype(np.float32)
    p = np.pad(x, ((0, 0), (r, r), (0, 0)), mode="reflect")
    x = sum(k[j] * p[:, j:j + h] for j in range(2 * r + 1))
    p = np.pad(x, ((0, 0), (0, 0), (r, r)), mode="reflect")
    return sum(k[j] * p[:, :, j:j + w] for j in range(2 * r + 1)).astype(np.float32)


def _image(x_uint8, arch):
    """A user's uint8 image as (C, H, W), checked against the network's input shape."""
    x = np.asarray(x_uint8)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dtype != np.uint8 or x.shape != tuple(arch.input_shape):
        raise UserError(f"expected a uint8 image of shape {tuple(arch.input_shape)}, "
                        f"got {x.dtype} {x.shape}")
    return x


def _check_class(backend, target, what="target"):
    k = backend.model.arch.num_classes
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < k:
        raise UserError(f"{what} must be a class number in 0..{k - 1}, got {target!r}")
    return int(target)


def _check_number(name, v, positive=True, integer=False):
    ok = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.number))
    ok = ok and not isinstance(v, bool) and math.isfinite(v) and (v > 0 if positive else v >= 0)
    if not ok:
        raise UserError(f"{name} must be a {'whole number' if integer else 'number'} "
                        f"{'> 0' if positive else '>= 0'}, got {v!r}")
    return v


# ----------------------------------------------------------------------------
# Activation maximisation
# ----------------------------------------------------------------------------

def _ascent(backend, layer, seed_gradient, score_of, *, steps, lr, l2, jitter, blur_every,
            blur_sigma, seed, start, normalize):
    """The gradient ascent shared by class and channel visualisation (see class_visualisation)."""
    _check_number("steps", steps, integer=True)
    _check_number("lr", lr)
    _check_number("l2", l2, positive=False)
    _check_number("jitter", jitter, positive=False, integer=True)
    _check_number("blur_every", blur_every, positive=False, integer=True)
    _check_number("blur_sigma", blur_sigma)
    if start not in STARTS:
        raise UserError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    shape = tuple(backend.model.arch.input_shape)
    c = shape[0]
    lo, hi = pixel_range(normalize, c)
    mean, std = _stats(normalize, c)
    grey = to_input(np.full(shape, 0.5, np.float32), normalize)
    step = np.float32(lr * float(np.mean(1 / std)))      # lr in pixel units -> input units
    rng = np.random.default_rng(seed)
    if start == "noise":
        x = to_input(np.clip(0.5 + 0.2 * rng.standard_normal(shape), 0, 1).astype(np.float32), normalize)
    else:
        x = grey.copy()
    scores = []
    for t in range(steps):
        dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, 2))
        xj = np.roll(x, (dy, dx), axis=(1, 2))
        out, _, g = score_gradient(backend, xj[None], layer, seed_gradient)
        scores.append(score_of(out[0]))
        g = np.roll(g[0], (-dy, -dx), axis=(1, 2))
        norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
        unit = g / np.float32(norm) if norm > 0 else np.zeros_like(g)
        x = np.clip(x + step * (unit - np.float32(2 * l2) * (x - grey)), lo, hi)
        if blur_every and (t + 1) % blur_every == 0:
            x = np.clip(gaussian_blur(x, blur_sigma), lo, hi)
    x = x.astype(np.float32)
    out, logits, _ = score_gradient(backend, x[None], layer, None)
    scores.append(score_of(out[0]))
    return {"image": x, "uint8": to_uint8(x, normalize), "scores": scores, "probs": softmax(logits[0])}


def class_visualisation(backend, target, *, steps=200, lr=1.0, l2=0.005, jitter=2, blur_every=10,
                        blur_sigma=0.5, seed=0, start="noise", normalize=None):
    """An image that the network scores highly as class ``target``: gradient ascent on its logit.

    Ascent on s_target(x), the logit (before softmax, as in saliency), with an L2 penalty
    l2 * ||x - g||^2 pulling the image towards grey g. x (C, H, W) is in input units. Step
    t = 0 .. steps-1, with (dy, dx) drawn uniformly from -jitter..jitter::

        x~    = roll(x_t, (dy, dx))                       jitter: the image moves a little every step
        u     = roll(ds/dx(x~), (-dy, -dx)) / ||ds/dx(x~)||_2            (C, H, W), unit length
        x_t+1 = clip(x_t + lr' * (u - 2 * l2 * (x_t - g)), lo, hi)
        every blur_every steps: x_t+1 = Gaussian blur of x_t+1 (sigma blur_sigma pixels)

    The score's gradient is made unit length BEFORE the L2 term is added (rather than the sum
    being normalised): a logit's gradient is many times a channel mean's, and this way ``l2`` means the same
    for both. Each step moves lr' along the score's gradient and shrinks x - g by the fraction
    2 * lr' * l2 (1% with the defaults), which fades what the score does not need.

    ``lr`` is the step's L2 length in pixel units (0..1 per value); lr' = lr * mean_c(1 / std_c)
    in input units. lo, hi: the input values of pixels 0 and 1 per channel (``normalize``). The
    L2 pull towards grey, the jitter and the blur keep the image from filling with the
    high-frequency patterns that also raise the score. The start x_0 is grey plus Gaussian noise
    of std 0.2 pixel units (``start="noise"``) or plain grey (``start="grey"``); the noise, the
    jitter and nothing else are drawn from ``seed``.

    Returns ``{"image": float32 (C, H, W) input units, "uint8": (C, H, W), "scores": [s at step 0,
    ..., s at step steps-1, s of the final image] (steps + 1 floats: the score of the jittered
    image each gradient was taken at, then of the final image unjittered), "probs": float64 (K,)
    softmax of the final image's logits}``.
    """
    target = _check_class(backend, target)
    last = backend.model.arch.layer_names[-1]

    def seed_gradient(logits):
        g = np.zeros_like(logits)
        g[:, target] = 1
        return g

    return _ascent(backend, last, seed_gradient, lambda out: float(out[target]), steps=steps, lr=lr,
                   l2=l2, jitter=jitter, blur_every=blur_every, blur_sigma=blur_sigma, seed=seed,
                   start=start, normalize=normalize)


def check_channel(arch, layer, channel):
    """The layer must exist and have (C, H, W) outputs, and 0 <= channel < C; returns C."""
    if layer not in arch.layer_names:
        raise UserError(f"the network {arch.name} has no layer {layer!r}; its layers are "
                        f"{', '.join(arch.layer_names)}")
    shape = arch.output_shape(layer)
    if len(shape) != 3:
        maps = list(arch.map_layers)
        raise UserError(f"layer {layer!r} ({arch.spec(layer).kind}) outputs a vector of {shape[0]}, not "
                        f"channels of feature maps; choose one of {', '.join(maps) or '(none)'}")
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < shape[0]:
        raise UserError(f"channel {channel!r} is out of range: {layer} has {shape[0]} channels "
                        f"(0..{shape[0] - 1})")
    return shape[0]


def channel_visualisation(backend, layer, channel, *, steps=200, lr=1.0, l2=0.005, jitter=2,
                          blur_every=10, blur_sigma=0.5, seed=0, start="noise", normalize=None):
    """An image that excites channel ``channel`` of layer ``layer`` (any layer whose output is
    (C, h, w): a convolution, its activation, a pooling or normalisation layer).

    The score is that channel's mean activation, A = the layer's output (C, h, w)::

        s(x) = 1/(h*w) * sum_{i,j} A[channel, i, j]         ds/dA = 1/(h*w) on that channel, 0 elsewhere

    and the ascent is :func:`class_visualisation`'s, step for step (same jitter, L2 pull towards
    grey, blur, clipping, same arguments). Returns the same dict; "scores" are channel means.
    """
    check_channel(backend.model.arch, layer, channel)

    def seed_gradient(out):
        g = np.zeros_like(out)
        g[:, channel] = 1.0 / (out.shape[2] * out.shape[3])
        return g

    return _ascent(backend, layer, seed_gradient, lambda out: float(out[channel].mean(dtype=np.float64)),
                   steps=steps, lr=lr, l2=l2, jitter=jitter, blur_every=blur_every,
                   blur_sigma=blur_sigma, seed=seed, start=start, normalize=normalize)


def top_activating(backend, data, layer, channel, k=9, normalize=None):
    """The ``k`` images of ``data`` (a ``data.Dataset`` or uint8 (N, C, H, W)) on which channel
    ``channel`` of ``layer`` has the highest mean activation 1/(h*w) * sum_{i,j} A[channel, i, j]
    (eval mode): ``[(index into data, mean activation)]``, highest first, ties by lower index;
    fewer when ``data`` has fewer than k images."""
    check_channel(backend.model.arch, layer, channel)
    _check_number("k", k, integer=True)
    from scratchcnn.data import to_float

    images = getattr(data, "x", data)
    means = np.concatenate([
        layer_output(backend, to_float(images[i:i + 500], normalize), layer)[:, channel]
        .mean(axis=(1, 2), dtype=np.float64) for i in range(0, len(images), 500)]) if len(images) else np.zeros(0)
    order = np.argsort(-means, kind="stable")[:k]
    return [(int(i), float(means[i])) for i in order]


# ----------------------------------------------------------------------------
# Fooling images
# ----------------------------------------------------------------------------

def _difference(before, after):
    """uint8 (C, H, W) images -> (the change drawn around grey 128, magnified so the largest
    change reaches 127 levels, uint8 (C, H, W); the magnification)."""
    d = after.astype(np.int64) - before.astype(np.int64)
    peak = int(np.abs(d).max())
    mag = 127.0 / peak if peak else 1.0
    return np.clip(np.rint(128 + d * mag), 0, 255).astype(np.uint8), mag


def fooling_image(backend, x_uint8, target, *, method="steps", epsilon=8 / 255, max_steps=500,
                  step_size=0.1, normalize=None):
    """Change an image as little as a gradient needs to make the network answer ``target``.

    x_uint8: uint8 (C, H, W) (or (1, C, H, W)); x_0 its input units; q(x) = x rounded to uint8
    pixels (what the PNG will hold, in input units). The prediction is the argmax of the logits.

    ``method="steps"`` (cs231n's fooling images): normalised gradient steps on the target's
    score until the network answers it. The score is the target's log-probability
    s_t = z_t - log sum_j exp(z_j), whose gradient at the logits is onehot(target) - softmax(z)::

        check q(x_n): stop when the network answers target for it (success) or n = max_steps
        x_n+1 = clip(x_n + step' * g / ||g||_2, lo, hi)      g = ds_t/dx at q(x_n)  (C, H, W)

    cs231n climbs the logit z_t alone. Among ten similar textures that often raises a rival
    class's logit as fast: on the tutorial's network trained 2 epochs on the synthetic dataset
    (98%), test image 0 reached 5 of its 9 other classes within 400 steps by the logit and all 9
    by the log-probability (101..240 steps), which also pushes the other classes down.
    step' = step_size * mean_c(1 / std_c): ``step_size`` is each step's L2 length in pixel units.
    "steps" is n, the number of gradient steps taken.

    ``method="fgsm"`` (targeted fast gradient sign method): one step on the cross-entropy
    L = -log p_target(x_0), whose gradient at the logits is softmax(z) - onehot(target)::

        x' = clip(x_0 - epsilon / std_c * sign(dL/dx), lo, hi)    every pixel moves by epsilon

    ``epsilon`` in pixel units (8/255: 8 levels of 0..255). The uint8 image rounds each change
    towards the original, so no pixel moves by more than epsilon; "steps" is 1.

    If the network already answers ``target`` for x_0, nothing changes: "steps" 0, "success" True.

    Returns ``{"image": float32 (C, H, W) input units of the uint8 image, "uint8", "difference":
    uint8 (C, H, W), the change drawn around grey 128 and magnified by "magnification" so the
    largest reaches 127 levels, "magnification", "before": probabilities of x_0 (K,), "after":
    probabilities of "image" (K,), "steps": n, "success": whether the network answers target for
    "image"}``.
    """
    arch = backend.model.arch
    x_uint8 = _image(x_uint8, arch)
    target = _check_class(backend, target)
    if method not in FOOL_METHODS:
        raise UserError(f"method must be one of {', '.join(FOOL_METHODS)}, got {method!r}")
    c = arch.input_shape[0]
    lo, hi = pixel_range(normalize, c)
    mean, std = _stats(normalize, c)
    last = arch.layer_names[-1]
    x0 = from_uint8(x_uint8, normalize)

    def onehot(logits):
        g = np.zeros_like(logits)
        g[:, target] = 1
        return g

    def result(q_uint8, before, after_logits, steps):
        diff, mag = _difference(x_uint8, q_uint8)
        after = softmax(after_logits)
        return {"image": from_uint8(q_uint8, normalize), "uint8": q_uint8, "difference": diff,
                "magnification": mag, "before": before, "after": after, "steps": steps,
                "success": bool(int(np.argmax(after_logits)) == target)}

    def log_prob_gradient(logits):               # d log p_target / dz = onehot(target) - softmax(z)
        return (onehot(logits) - softmax(logits)).astype(np.float32)

    if method == "fgsm":
        _check_number("epsilon", epsilon)

        def ce_gradient(logits):                 # dL/dz of L = -log softmax(z)[target]
            return -log_prob_gradient(logits)

        _, logits0, g = score_gradient(backend, x0[None], last, ce_gradient)
        before = softmax(logits0[0])
        if int(np.argmax(logits0[0])) == target:
            return result(x_uint8, before, logits0[0], 0)
        moved = np.clip(x0 - np.float32(epsilon) / std * np.sign(g[0]), lo, hi)
        # uint8 levels, each change rounded towards the original (|change| <= epsilon * 255)
        d = ((moved * std + mean) - (x0 * std + mean)) * 255
        d = np.sign(d) * np.floor(np.abs(d) + 1e-3)
        q = np.clip(x_uint8.astype(np.int64) + d.astype(np.int64), 0, 255).astype(np.uint8)
        _, logits1, _ = score_gradient(backend, from_uint8(q, normalize)[None], last, None)
        return result(q, before, logits1[0], 1)

    _check_number("max_steps", max_steps, integer=True)
    _check_number("step_size", step_size)
    step = np.float32(step_size * float(np.mean(1 / std)))
    x, q, before, n = x0, x_uint8, None, 0
    while True:
        _, logits, g = score_gradient(backend, from_uint8(q, normalize)[None], last, log_prob_gradient)
        before = softmax(logits[0]) if before is None else before
        if int(np.argmax(logits[0])) == target or n == max_steps:
            return result(q, before, logits[0], n)
        norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
        if norm > 0:
            x = np.clip(x + step * (g[0] / np.float32(norm)), lo, hi)
        q = to_uint8(x, normalize)
        n += 1


# ----------------------------------------------------------------------------
# Occlusion
# ----------------------------------------------------------------------------

def patch_positions(size, patch, stride):
    """Top-left corners along one axis: 0, stride, 2*stride, ... while the patch fits, plus
    size - patch when the last one stops short of the edge (so every pixel is covered)."""
    pos = list(range(0, size - patch + 1, stride))
    if pos[-1] != size - patch:
        pos.append(size - patch)
    return pos


def occlusion_map(backend, x_uint8, target, *, patch=8, stride=4, fill="grey", normalize=None):
    """Where the image holds what the network needs for class ``target`` (Zeiler & Fergus 2014).

    For every position (i, j) of a patch x patch square (corners every ``stride`` pixels, see
    :func:`patch_positions`), cover that square with ``fill`` (grey: pixel 0.5; mean: the
    image's own mean colour) and measure the target's probability p_t. Each pixel gets the mean
    drop over the squares that cover it::

        drop(i, j)  = p_t(x) - p_t(x with the square at (i, j) covered)
        map[h, w]   = mean of drop(i, j) over the squares with i <= h < i + patch, j <= w < j + patch

    Positive: covering that part lowers the class's probability (the network looks there);
    negative: covering it helps. No gradient: only forward passes, all positions in one batch.
    With patch = the image size there is one square, the whole image, and the map is
    p_t(x) - p_t(fill image) everywhere. Returns float64 (H, W).
    """
    arch = backend.model.arch
    x_uint8 = _image(x_uint8, arch)
    target = _check_class(backend, target)
    c, h, w = arch.input_shape
    _check_number("patch", patch, integer=True)
    _check_number("stride", stride, integer=True)
    if patch > min(h, w):
        raise UserError(f"patch {patch} is larger than the {h}x{w} image")
    if fill not in FILLS:
        raise UserError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    x = from_uint8(x_uint8, normalize)
    colour = (to_input(np.full((c, 1, 1), 0.5, np.float32), normalize) if fill == "grey"
              else x.mean(axis=(1, 2), keepdims=True))
    corners = [(i, j) for i in patch_positions(h, patch, stride) for j in patch_positions(w, patch, stride)]
    batch = np.repeat(x[None], len(corners) + 1, axis=0)
    for n, (i, j) in enumerate(corners, start=1):
        batch[n, :, i:i + patch, j:j + patch] = colour
    p = np.concatenate([softmax(backend.predict(batch[k:k + 256]))[:, target]
                        for k in range(0, len(batch), 256)])
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for n, (i, j) in enumerate(corners, start=1):
        total[i:i + patch, j:j + patch] += p[0] - p[n]
        count[i:i + patch, j:j + patch] += 1
    return total / count


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------

def _rgb(image_uint8):
    """uint8 (C, H, W) -> what imshow draws: (H, W, 3), or (H, W) for one channel."""
    img = np.asarray(image_uint8).transpose(1, 2, 0)
    return img[:, :, 0] if img.shape[2] == 1 else img


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def plot_dream(image_uint8, path, title, top=None):
    """The dreamt image (C, H, W), upscaled with nearest-neighbour pixels; with ``top``
    (``(pairs, images, captions)``, e.g. the 9 most exciting test images) a 3-wide grid of
    those images beside it."""
    from scratchcnn.plots import _save, plt

    if top is None:
        fig, ax = plt.subplots(figsize=(4.6, 5))
        axes = [ax]
    else:
        n = len(top[1])
        rows = max(1, math.ceil(n / 3))
        fig = plt.figure(figsize=(9.5, 5))
        grid = fig.add_gridspec(rows, 4, width_ratios=[3, 1, 1, 1], wspace=0.15, hspace=0.45)
        axes = [fig.add_subplot(grid[:, 0])]
        for k, (img, caption) in enumerate(zip(top[1], top[2])):
            ax = fig.add_subplot(grid[k // 3, 1 + k % 3])
            ax.imshow(_rgb(img), interpolation="nearest", cmap="gray")
            ax.set_title(caption, fontsize=7)
            _bare(ax)
        if n:
            title += f"\nright: the {n} test images it responds to most (index, label, mean activation)"
    axes[0].imshow(_rgb(image_uint8), interpolation="nearest", cmap="gray")
    _bare(axes[0])
    fig.suptitle(title, fontsize=9, wrap=True)
    return _save(fig, path)


def plot_scores(scores, path, title, what="score"):
    """The score after each step of the ascent (``scores`` of class/channel_visualisation)."""
    from scratchcnn.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(np.arange(len(scores)), scores, lw=1.2)
    ax.set(xlabel="step", ylabel=what, title=f"{title}: {what} per step")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_fooling(original_uint8, result, classes, target, path, title):
    """Original, fooling image, the change magnified, and the probabilities before and after
    (of :func:`fooling_image`'s ``result``), in one figure."""
    from scratchcnn.plots import _save, plt

    fig = plt.figure(figsize=(11, 6.2))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.3, 1], hspace=0.45)
    panels = [(original_uint8, "original"), (result["uint8"], "fooling image"),
              (result["difference"], f"change x{result['magnification']:.3g} (grey = none)")]
    for k, (img, caption) in enumerate(panels):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(_rgb(img), interpolation="nearest", cmap="gray")
        ax.set_title(caption, fontsize=10)
        _bare(ax)
    ax = fig.add_subplot(grid[1, :])
    k = len(classes)
    pos = np.arange(k)
    ax.bar(pos - 0.2, 100 * result["before"][:k], 0.4, label="before")
    ax.bar(pos + 0.2, 100 * result["after"][:k], 0.4, label="after")
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{c}\n(target)" if i == target else c for i, c in enumerate(classes)], fontsize=8)
    ax.set(ylabel="probability (%)", ylim=(0, 100))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10, wrap=True)
    return _save(fig, path)


def plot_occlusion(image_uint8, heat, path, title):
    """The image, the occlusion map (diverging scale centred at 0: red where covering lowers the
    probability) and the map over the image."""
    from scratchcnn.plots import _save, plt

    m = float(np.abs(heat).max()) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.9))
    axes[0].imshow(_rgb(image_uint8), interpolation="nearest", cmap="gray")
    axes[0].set_title("input", fontsize=10)
    im = axes[1].imshow(heat, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
    axes[1].set_title("probability drop when covered", fontsize=10)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03)
    axes[2].imshow(_rgb(image_uint8), interpolation="nearest", cmap="gray")
    axes[2].imshow(heat, cmap="RdBu_r", vmin=-m, vmax=m, alpha=0.55, interpolation="bilinear")
    axes[2].set_title("over the image", fontsize=10)
    for ax in axes:
        _bare(ax)
    fig.suptitle(title, fontsize=10, wrap=True)
    return _save(fig, path)
