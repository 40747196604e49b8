"""Feature maps and filters: what the convolutions compute, drawn as images.

The tutorial shows conv1's and conv2's 32 output channels for one training
image as 4x8 grids. Here the same grids come from either backend, for every
convolution of whatever network the checkpoint holds (a grid is 8 channels wide):

    acts = intermediates(backend, x)       # {"conv1": (N, 32, 32, 32), ..., "fc4": (N, 10)}
    for stem, what, maps in feature_maps(backend.model.arch, acts, stages=("conv", "relu", "pool")):
        plot_feature_maps(maps, f"{stem}.png", what)

One difference from the tutorial: it feeds raw 0..255 pixels to the network,
while here the image is scaled exactly as in training (``data.to_float`` with
the checkpoint's normalisation), so the maps are what the trained model sees.
"""
import math
import os

import numpy as np

from scratchcnn.plots import _save, plt

# Which layers each --stage draws, by kind. "relu" draws every activation function.
STAGE_KINDS = {"conv": ("Conv2d",), "norm": ("BatchNorm2d",), "relu": ("ReLU", "LeakyReLU", "Tanh", "Sigmoid"),
               "pool": ("MaxPool2d", "AvgPool2d")}
STAGES = tuple(STAGE_KINDS)


def intermediates(backend, x):
    """Every layer's output for the batch ``x`` (float32 (N, 3, 32, 32)), in eval mode
    (dropout off, as at test time): ``{layer name: float32 ndarray}`` in forward order;
    the last holds the logits.

    scratch: ``model.forward_intermediates`` (the layer-by-layer path; each layer keeps ``.out``).
    torch: a forward hook on each named module records what it returned.
    """
    if backend.name == "scratch":
        return dict(backend.model.eval().forward_intermediates(x))
    torch, model = backend.torch, backend.model
    acts = {}

    def recorder(name):
        def hook(module, inputs, output):
            acts[name] = output.detach().float().cpu().numpy()
        return hook

    hooks = [getattr(model, name).register_forward_hook(recorder(name)) for name in model.arch.layer_names]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(x)).to(backend.device))
    finally:
        for h in hooks:
            h.remove()
    return acts


def feature_maps(arch, acts, stages=("conv",), n=0):
    """The figures to draw for image ``n`` of a batch: ``[(file stem, description, maps)]``,
    maps (C, H, W), in network order, for the chosen stages: ``conv`` every Conv2d's output
    (before its activation), ``norm`` every BatchNorm2d's, ``relu`` every activation
    function's (ReLU, LeakyReLU, Tanh, Sigmoid) on a feature map, ``pool`` every pooling
    layer's. The stem is ``featuremaps_<layer name>``."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {STAGES}")
    kinds = {k for s in stages for k in STAGE_KINDS[s]}
    out, previous = [], "the image"
    for spec in arch.layers:
        if spec.kind in kinds and len(spec.out_shape) == 3:
            out.append((f"featuremaps_{spec.name}", describe_layer(spec, previous), acts[spec.name][n]))
        previous = spec.name
    return out


def describe_layer(spec, previous):
    """A caption for a layer's output, e.g. "conv1 output (Conv2d 3x3, before its activation)"."""
    a, kind = spec.args, spec.kind
    if kind == "Conv2d":
        k = a["kernel_size"]
        k = f"{k[0]}x{k[1]}" if isinstance(k, list) else f"{k}x{k}"
        return f"{spec.name} output (Conv2d {k} of {previous}, before its activation)"
    if kind in STAGE_KINDS["pool"]:
        k = a["kernel_size"]
        k = f"{k[0]}x{k[1]}" if isinstance(k, list) else f"{k}x{k}"
        what = "max" if kind == "MaxPool2d" else "average"
        return f"{spec.name} = {k} {what}-pool of {previous} ({spec.out_shape[1]}x{spec.out_shape[2]})"
    return f"{spec.name} = {kind}({previous})"


def grid_shape(channels):
    """(rows, columns) of the panel grid for ``channels`` maps: 8 wide (32 -> 4x8, the
    tutorial's), 16 wide beyond 64 channels, and one row for 8 or fewer."""
    cols = min(channels, 8 if channels <= 64 else 16)
    return math.ceil(channels / cols), cols


def softmax(logits):
    """Probabilities from logits along the last axis (float64, max subtracted first)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(logits, classes, k=3):
    """The ``k`` most probable classes for ONE image's logits (K,): ``[(class name, probability)]``.

    With fewer classes than outputs (a 10-output checkpoint on a smaller folder), only the
    first ``len(classes)`` outputs are classes: the softmax is taken over those.
    """
    p = softmax(logits[:len(classes)])
    order = np.argsort(-p, kind="stable")[:k]
    return [(classes[i], float(p[i])) for i in order]


def format_top_k(top):
    return ", ".join(f"{name} {100 * p:.1f}%" for name, p in top)


def plot_feature_maps(maps, path, title, scale="shared", signed=False):
    """A grid of the channels in ``maps`` (C, H, W) (4x8 for 32, see ``grid_shape``), each
    panel titled with its channel.

    scale="shared": one colour scale (min..max over all panels) and one colorbar,
    so brightness can be compared between channels. scale="per-panel": each panel is
    stretched to its own min..max, which shows the shape of weak maps but hides
    how strong they are. The figure's title says which. A channel that is zero
    everywhere (a ReLU that never fired on this image) is marked "all 0".
    signed=True (gradients): a diverging colour scale centred at 0 (blue < 0 < red),
    symmetric, -max|maps| .. max|maps| when shared.
    """
    if scale not in ("shared", "per-panel"):
        raise ValueError(f"scale must be 'shared' or 'per-panel', got {scale!r}")
    maps = np.asarray(maps, np.float32)
    rows, cols = grid_shape(len(maps))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows + 0.8), squeeze=False)
    lo, hi = float(maps.min()), float(maps.max())
    if signed:
        hi = max(abs(lo), abs(hi))
        lo = -hi
    cmap = "RdBu_r" if signed else "viridis"
    limits = {"vmin": lo, "vmax": hi if hi > lo else lo + 1e-6} if scale == "shared" else {}
    for ax in axes.flat[len(maps):]:
        ax.axis("off")
    for c, ax in zip(range(len(maps)), axes.flat):
        if signed and scale != "shared":
            m = float(np.abs(maps[c]).max()) or 1e-6
            limits = {"vmin": -m, "vmax": m}
        im = ax.imshow(maps[c], cmap=cmap, interpolation="nearest", **limits)
        ax.set_title(f"ch {c}" + (" (all 0)" if not maps[c].any() else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if scale == "shared":
        note = f"colour scale shared by all {len(maps)} panels: {lo:.3g} .. {hi:.3g} (colorbar)"
        fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01, label="gradient" if signed else "activation")
    else:
        note = ("colour scale per panel: each panel stretched to its own min..max "
                "(compare shapes, not brightness)")
    fig.suptitle(f"{title}, {maps.shape[1]}x{maps.shape[2]} per channel\n{note}", fontsize=12)
    return _save(fig, path)


def plot_input(image_uint8, path, title, top=None):
    """The input image (3, 32, 32) uint8, drawn pixel by pixel, with the model's top-k below it."""
    fig, ax = plt.subplots(figsize=(3.6, 4.2))
    ax.imshow(image_uint8.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if top:
        ax.set_xlabel("model's top guesses:\n" + "\n".join(f"{name} {100 * p:.1f}%" for name, p in top),
                      fontsize=9)
    return _save(fig, path)


def plot_filters(arch, state_dict, out_dir):
    """Draw every Conv2d's kernels; return the PNG paths (``filters_<layer>.png``).

    A convolution that reads the image (3 input channels, like conv1): each kernel is a
    tiny KHxKW RGB image, min-max normalised on its own (its smallest weight black, its
    largest white), in a grid of its output channels. Any other: one KHxKW block per
    (output, input) channel pair, on a diverging colour scale centred at 0 (blue
    negative, red positive, shared by all).
    """
    paths = []
    for spec in arch.of_kind("Conv2d"):
        w = np.asarray(state_dict[f"{spec.name}.weight"], np.float32)
        path = os.path.join(out_dir, f"filters_{spec.name}.png")
        paths.append(_plot_rgb_filters(w, path, spec.name) if w.shape[1] == 3 else _plot_filter_mosaic(w, path, spec.name))
    return paths


def _plot_rgb_filters(w, path, name):
    n_out, _, kh, kw = w.shape
    rows, cols = grid_shape(n_out)
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.4 * rows + 1.2), squeeze=False)
    for ax in axes.flat[n_out:]:
        ax.axis("off")
    for f, ax in zip(range(n_out), axes.flat):
        k = w[f].transpose(1, 2, 0)                          # (KH, KW, RGB)
        span = k.max() - k.min()
        ax.imshow((k - k.min()) / span if span > 0 else np.full_like(k, 0.5), interpolation="nearest")
        ax.set_title(f"ch {f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{name} filters: {n_out} kernels of {kh}x{kw} over (R, G, B), drawn as colour images\n"
                 "each kernel min-max normalised on its own (brightness is not comparable "
                 f"between panels); weights range {w.min():.3g} .. {w.max():.3g}", fontsize=10)
    return _save(fig, path)


def _plot_filter_mosaic(w, path, name):
    n_out, n_in, kh, kw = w.shape
    mosaic = np.full((n_out * (kh + 1) - 1, n_in * (kw + 1) - 1), np.nan, np.float32)
    for o in range(n_out):
        for i in range(n_in):
            mosaic[o * (kh + 1):o * (kh + 1) + kh, i * (kw + 1):i * (kw + 1) + kw] = w[o, i]
    m = float(np.abs(w).max()) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.75")  # the gaps between kernels: grey
    side = min(10 + 0.04 * max(n_in, n_out) * max(kh, kw), 30)
    fig, ax = plt.subplots(figsize=(side, side * 0.92 * n_out / max(n_in, 1) + 1))
    im = ax.imshow(mosaic, cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
    step = max(1, n_in // 8)
    ticks = np.arange(0, n_in, step)
    ax.set_xticks(ticks * (kw + 1) + kw // 2, [str(t) for t in ticks])
    rows = np.arange(0, n_out, max(1, n_out // 8))
    ax.set_yticks(rows * (kh + 1) + kh // 2, [str(t) for t in rows])
    ax.set(xlabel="input channel", ylabel="output channel",
           title=f"{name} filters: {n_out} out x {n_in} in, one {kh}x{kw} kernel per pair\n"
                 f"diverging colour scale centred at 0, shared: -{m:.3g} .. {m:.3g}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="weight (white = 0)")
    return _save(fig, path)
