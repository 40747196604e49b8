"""Gradients that reach the pixels: saliency maps, Grad-CAM, and every layer's gradient.

Pick a class c (the predicted one, or any other) and call its logit the score,
``s = z_c`` (before softmax, as in Simonyan et al. 2014 and Grad-CAM). One
backward pass from ``ds/dz = onehot(c)`` gives ds/d(output) of every layer, down
to ds/dx of the input pixels. Dropout is off (eval mode), as at test time.

    vanilla gradient saliency   S[h, w] = max_ch |ds/dx[ch, h, w]|                      (32, 32)
    Grad-CAM on layer L         A = L's output (K, h, w), G = ds/dA
                                alpha[k] = mean_{h,w} G[k, h, w]     (one weight per channel)
                                cam = ReLU(sum_k alpha[k] * A[k])                          (h, w)
                                upsampled bilinearly to 32x32 (the tutorial's conv2 maps are
                                32x32 already, thanks to padding 1: there this is the identity)

L is the network's LAST Conv2d layer, whatever its name (``gradcam_layer(arch)``): the
last place where the maps still have a position, and the most abstract one.

Two implementations, tested to agree to float rounding:

    scratch   the hand-written backward of ``scratchcnn.model.CIFAR10Model``, layer by layer;
              conv1 is asked for its input gradient (``Conv2d.backward(input_grad=True)``),
              which training skips
    torch     ``torch_reference.CIFAR10Model`` and ``torch.autograd.grad`` of the same score
              with respect to the input and every layer's output (forward hooks)

From Python::

    from scratchcnn.study.saliency import class_gradients, saliency_map, grad_cam
    r = class_gradients(backend, x)        # x float32 (N, 3, 32, 32); backend from make_backend
    r["classes"], r["logits"]              # (N,) the explained class, (N, 10)
    r["grads"]["conv2"]                    # ds/d(conv2 output) (N, 32, 32, 32); every layer + "input"
    saliency_map(r["grads"]["input"])      # (N, 32, 32)
    L = gradcam_layer(backend.model.arch)  # "conv2" in the tutorial's network
    grad_cam(r["acts"][L], r["grads"][L])  # (N, 32, 32)

``scratch_class_gradients(model, x, classes)`` and ``torch_class_gradients(model, x, classes)``
take the models themselves (any dtype; the tests use float64 too).
"""
import os

import numpy as np

from scratchcnn.architecture import INPUT_SHAPE

# The kinds whose gradients the figures leave out (the same map as their input's gradient).
SKIPPED_IN_FIGURES = ("Dropout", "Flatten")


def gradcam_layer(arch):
    """The name of the network's last Conv2d layer, where Grad-CAM looks."""
    convs = arch.of_kind("Conv2d")
    if not convs:
        raise ValueError(f"the network {arch.name} has no Conv2d layer for Grad-CAM")
    return convs[-1].name


def figure_layers(arch):
    """(grid layers, strip layers): whose gradients are drawn as channel grids (feature maps)
    and as strips (vectors), in forward order; the logits and dropout/flatten are left out."""
    grids = [s.name for s in arch.layers if len(s.out_shape) == 3 and s.kind not in SKIPPED_IN_FIGURES]
    strips = [s.name for s in arch.layers[:-1] if len(s.out_shape) == 1 and s.kind not in SKIPPED_IN_FIGURES
              and s.kind == "Linear"]
    return grids, strips


class ClassScore:
    """The "loss" of a saliency map: the sum over the batch of each image's chosen logit.

        forward(logits (N, K), classes (N,) or None) -> s = sum_n logits[n, classes[n]]
                 (classes None: each image's predicted class, argmax of its logits)
        backward() -> ds/dlogits = onehot(classes)  (N, K)

    Each image's gradient is that of its own logit: in eval mode the images of a
    batch do not interact. It has the interface ``study.trace.forward_backward``
    expects of a criterion, so the backward pass is the one training uses.
    """

    def forward(self, logits, classes=None):
        n, k = logits.shape
        self.classes = _check_classes(logits.argmax(1) if classes is None else classes, n, k)
        self.shape, self.dtype = logits.shape, logits.dtype
        return float(logits[np.arange(n), self.classes].sum())

    def backward(self):
        onehot = np.zeros(self.shape, self.dtype)
        onehot[np.arange(self.shape[0]), self.classes] = 1
        return onehot


def _check_classes(classes, n, k):
    """classes: an int (the same for every image) or (N,) ints in [0, k) -> int64 (N,)."""
    c = np.broadcast_to(np.asarray(classes), (n,)) if np.ndim(classes) == 0 else np.asarray(classes)
    if c.shape != (n,) or c.dtype.kind not in "iu" or np.any((c < 0) | (c >= k)):
        raise ValueError(f"classes must be an int or {n} ints in [0, {k}), got {classes!r}")
    return c.astype(np.int64)


def scratch_class_gradients(model, x, classes=None):
    """Forward and backward of a scratch ``CIFAR10Model`` (eval mode) for the class scores.

    x: (N, 3, 32, 32) of the model's dtype. Returns ``{"logits" (N, K), "classes" (N,),
    "acts": {layer: output}, "grads": {layer: ds/d(output), "input": ds/dx}}``.
    Overwrites the model's parameter gradients (ds/dW, not a loss gradient).
    """
    from scratchcnn.study.trace import forward_backward

    model.eval()
    score = ClassScore()
    _, acts, grads, dx = forward_backward(model, score, x, classes)
    grads["input"] = dx
    return {"logits": acts[model.arch.layer_names[-1]], "classes": score.classes, "acts": acts, "grads": grads}


def torch_class_gradients(model, x, classes=None):
    """The same as :func:`scratch_class_gradients` for a ``torch_reference.TorchNetwork``,
    by autograd: forward hooks keep every layer's output, then ``torch.autograd.grad`` of
    s = sum_n logits[n, classes[n]] with respect to the input and those outputs.
    x: a NumPy array of the model's dtype; results come back as NumPy on the CPU."""
    import torch

    param = next(model.parameters())
    names = model.arch.layer_names
    outputs = {}

    def recorder(name):
        def hook(module, inputs, output):
            outputs[name] = output
        return hook

    hooks = [getattr(model, name).register_forward_hook(recorder(name)) for name in names]
    try:
        model.eval()
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(param.device).requires_grad_(True)
        logits = model(xt)
    finally:
        for h in hooks:
            h.remove()
    n, k = logits.shape
    classes = _check_classes(logits.detach().argmax(1).cpu().numpy() if classes is None else classes, n, k)
    score = logits[torch.arange(n), torch.from_numpy(classes).to(param.device)].sum()
    # In eval mode Dropout returns its input itself, so drop1's output IS act1's: autograd.grad
    # accepts the same tensor twice and gives it the same gradient, which is the right answer.
    tensors = [xt] + [outputs[name] for name in names]
    got = torch.autograd.grad(score, tensors)

    def numpy(t):
        return t.detach().cpu().numpy()

    return {"logits": numpy(logits), "classes": classes,
            "acts": {name: numpy(outputs[name]) for name in names},
            "grads": {name: numpy(g) for name, g in zip(["input", *names], got)}}


def class_gradients(backend, x, classes=None):
    """:func:`scratch_class_gradients` or :func:`torch_class_gradients` on a backend made by
    ``scratchcnn.backends.make_backend`` (float32 x (N, 3, 32, 32))."""
    if backend.name == "scratch":
        return scratch_class_gradients(backend.model, x, classes)
    return torch_class_gradients(backend.model, x, classes)


def saliency_map(input_grad):
    """Vanilla gradient saliency: |ds/dx| maximised over the colour channels.
    input_grad (N, 3, H, W) -> (N, H, W), or (3, H, W) -> (H, W)."""
    return np.abs(input_grad).max(axis=-3)


def upsample_bilinear(maps, size):
    """(N, h, w) -> (N, size, size), bilinear with half-pixel centres (torch's
    ``interpolate(mode="bilinear", align_corners=False)``); the identity when h = w = size."""
    maps = np.asarray(maps)
    n, h, w = maps.shape
    if (h, w) == (size, size):
        return maps.copy()

    def axis(src):                       # source coordinate of each output pixel, and its two neighbours
        pos = np.clip((np.arange(size) + 0.5) * (src / size) - 0.5, 0, None)
        lo = np.minimum(np.floor(pos).astype(np.int64), src - 1)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, (pos - lo).astype(maps.dtype)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    rows = maps[:, y0] * (1 - fy)[:, None] + maps[:, y1] * fy[:, None]          # (N, size, w)
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def grad_cam(acts, grads, size=INPUT_SHAPE[1]):
    """Grad-CAM from one layer's output ``acts`` (N, K, h, w) and ds/d(that output) ``grads``:
    alpha (N, K) = grads averaged over (h, w); cam = ReLU(sum_k alpha[:, k] * acts[:, k]),
    upsampled to (N, size, size). Not normalised (divide by cam.max() to draw it)."""
    alpha = grads.mean(axis=(2, 3))
    cam = np.maximum(np.einsum("nk,nkhw->nhw", alpha, acts), 0)
    return upsample_bilinear(cam, size)


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------

def _overlay_figure(image_uint8, heat, path, title, heat_label, cmap):
    """Three panels: the image, the heat map (its own colour scale), and the map over the image."""
    from scratchcnn.plots import _save, plt

    img = image_uint8.transpose(1, 2, 0)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.9))
    axes[0].imshow(img, interpolation="nearest")
    axes[0].set_title("input", fontsize=10)
    im = axes[1].imshow(heat, cmap=cmap, interpolation="nearest", vmin=0)
    axes[1].set_title(heat_label, fontsize=10)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03)
    axes[2].imshow(img, interpolation="nearest")
    peak = float(heat.max())
    axes[2].imshow(heat / peak if peak > 0 else heat, cmap=cmap, alpha=0.55, vmin=0, vmax=1,
                   interpolation="bilinear")
    axes[2].set_title("overlay (map scaled to its maximum)", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def plot_strip(values, path, title):
    """A 1-D gradient (e.g. ds/d(fc3 output), 512 values) as one coloured strip, diverging
    colour scale centred at 0, with the values below it as a line."""
    from scratchcnn.plots import _save, plt

    v = np.asarray(values, np.float32).ravel()
    m = float(np.abs(v).max()) or 1.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 3.4), height_ratios=[1, 2], sharex=True)
    im = ax1.imshow(v[None], cmap="RdBu_r", vmin=-m, vmax=m, aspect="auto", interpolation="nearest")
    ax1.set_yticks([])
    fig.colorbar(im, ax=(ax1, ax2), fraction=0.02, pad=0.01)
    ax2.plot(np.arange(len(v)), v, lw=0.8)
    ax2.axhline(0, color="0.5", lw=0.5)
    ax2.set(xlabel="unit", xlim=(-0.5, len(v) - 0.5))
    fig.suptitle(f"{title}; {len(v)} units, colour scale -{m:.3g} .. {m:.3g}", fontsize=11)
    return _save(fig, path)


def write_saliency_figures(arch, result, image_uint8, out_dir, classes, n=0, source=""):
    """Draw image ``n`` of a :func:`class_gradients` result of the network ``arch``:
    saliency.png, gradcam.png (on the last Conv2d), and gradients_<layer>.png for every
    layer of ``figure_layers(arch)`` (channel grids, then strips). Returns the paths."""
    from scratchcnn.study.featuremaps import plot_feature_maps

    c = int(result["classes"][n])
    what = f"class '{classes[c]}' (logit {float(result['logits'][n, c]):.3g})" + (f", {source}" if source else "")
    sal = saliency_map(result["grads"]["input"][n])
    last = gradcam_layer(arch)
    cam = grad_cam(result["acts"][last][n:n + 1], result["grads"][last][n:n + 1])[0]
    paths = [
        _overlay_figure(image_uint8, sal, os.path.join(out_dir, "saliency.png"),
                        f"vanilla gradient saliency max_ch |ds/dx| for {what}", "|ds/dx| (max over RGB)", "hot"),
        _overlay_figure(image_uint8, cam, os.path.join(out_dir, "gradcam.png"),
                        f"Grad-CAM on {last}'s output for {what}", "ReLU(sum_k alpha_k A_k)", "jet"),
    ]
    grid_layers, strip_layers = figure_layers(arch)
    for layer in grid_layers:
        paths.append(plot_feature_maps(result["grads"][layer][n], os.path.join(out_dir, f"gradients_{layer}.png"),
                                       f"ds/d({layer} output), s = logit of {what}", signed=True))
    for layer in strip_layers:
        paths.append(plot_strip(result["grads"][layer][n], os.path.join(out_dir, f"gradients_{layer}.png"),
                                f"ds/d({layer} output), s = logit of {what}"))
    return paths
