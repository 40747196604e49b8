"""Feature maps and filters: what conv1 and conv2 compute, drawn as images.

The tutorial shows conv1's and conv2's 32 output channels for one training
image as 4x8 grids. Here the same grids come from either backend:

    acts = intermediates(backend, x)       # {"conv1": (N, 32, 32, 32), ..., "fc4": (N, 10)}
    for stem, what, maps in feature_maps(acts, stages=("conv", "relu", "pool")):
        plot_feature_maps(maps, f"{stem}.png", what)

One difference from the tutorial: it feeds raw 0..255 pixels to the network,
while here the image is scaled exactly as in training (``data.to_float`` with
the checkpoint's normalisation), so the maps are what the trained model sees.
"""
import os

import numpy as np

from scratchcnn.architecture import LAYER_NAMES
from scratchcnn.plots import _save, plt

# Each figure: (file stem, stage, the layer whose output it shows, what that output is).
FIGURES = (
    ("featuremaps_conv1", "conv", "conv1", "conv1 output (before ReLU)"),
    ("featuremaps_conv1_relu", "relu", "act1", "act1 = ReLU(conv1)"),
    ("featuremaps_conv2", "conv", "conv2", "conv2 output (before ReLU)"),
    ("featuremaps_conv2_relu", "relu", "act2", "act2 = ReLU(conv2)"),
    ("featuremaps_conv2_pool", "pool", "pool2", "pool2 = 2x2 max-pool of act2 (16x16)"),
)
STAGES = ("conv", "relu", "pool")


def intermediates(backend, x):
    """Every layer's output for the batch ``x`` (float32 (N, 3, 32, 32)), in eval mode
    (dropout off, as at test time): ``{layer name: float32 ndarray}``, names as in
    ``torch_reference.model.LAYER_NAMES``; ``["fc4"]`` holds the logits.

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

    hooks = [getattr(model, name).register_forward_hook(recorder(name)) for name in LAYER_NAMES]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(x)).to(backend.device))
    finally:
        for h in hooks:
            h.remove()
    return acts


def feature_maps(acts, stages=("conv",), n=0):
    """The figures to draw for image ``n`` of a batch: ``[(file stem, description, maps)]``,
    maps (32, H, W), in network order, for the chosen stages (``conv``: before ReLU,
    ``relu``: after it, ``pool``: after max-pooling; conv1 has no pooling)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {STAGES}")
    return [(stem, what, acts[layer][n]) for stem, stage, layer, what in FIGURES if stage in stages]


def softmax(logits):
    """Probabilities from logits along the last axis (float64, max subtracted first)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(logits, classes, k=3):
    """The ``k`` most probable classes for ONE image's logits (10,): ``[(class name, probability)]``.

    With fewer than 10 classes (a folder dataset), only the first ``len(classes)``
    outputs are classes: the softmax is taken over those.
    """
    p = softmax(logits[:len(classes)])
    order = np.argsort(-p, kind="stable")[:k]
    return [(classes[i], float(p[i])) for i in order]


def format_top_k(top):
    return ", ".join(f"{name} {100 * p:.1f}%" for name, p in top)


def plot_feature_maps(maps, path, title, scale="shared", signed=False):
    """A 4x8 grid of the 32 channels in ``maps`` (32, H, W), each panel titled with its channel.

    scale="shared": one colour scale (min..max over all 32 panels) and one colorbar,
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
    fig, axes = plt.subplots(4, 8, figsize=(16, 8.8))
    lo, hi = float(maps.min()), float(maps.max())
    if signed:
        hi = max(abs(lo), abs(hi))
        lo = -hi
    cmap = "RdBu_r" if signed else "viridis"
    limits = {"vmin": lo, "vmax": hi if hi > lo else lo + 1e-6} if scale == "shared" else {}
    for c, ax in enumerate(axes.flat):
        if signed and scale != "shared":
            m = float(np.abs(maps[c]).max()) or 1e-6
            limits = {"vmin": -m, "vmax": m}
        im = ax.imshow(maps[c], cmap=cmap, interpolation="nearest", **limits)
        ax.set_title(f"ch {c}" + (" (all 0)" if not maps[c].any() else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if scale == "shared":
        note = f"colour scale shared by all 32 panels: {lo:.3g} .. {hi:.3g} (colorbar)"
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


def plot_filters(state_dict, out_dir):
    """Draw conv1's and conv2's kernels; return the two PNG paths.

    conv1.weight (32, 3, 3, 3): each kernel is a tiny 3x3 RGB image, min-max normalised
    on its own (its smallest weight black, its largest white), as a 4x8 grid.
    conv2.weight (32, 32, 3, 3): one 3x3 block per (output, input) channel pair, on a
    diverging colour scale centred at 0 (blue negative, red positive, shared by all).
    """
    w1 = np.asarray(state_dict["conv1.weight"], np.float32)
    fig, axes = plt.subplots(4, 8, figsize=(10, 5.6))
    for f, ax in enumerate(axes.flat):
        k = w1[f].transpose(1, 2, 0)                          # (3, 3, RGB)
        span = k.max() - k.min()
        ax.imshow((k - k.min()) / span if span > 0 else np.full_like(k, 0.5), interpolation="nearest")
        ax.set_title(f"ch {f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("conv1 filters: 32 kernels of 3x3 over (R, G, B), drawn as colour images\n"
                 "each kernel min-max normalised on its own (brightness is not comparable "
                 f"between panels); weights range {w1.min():.3g} .. {w1.max():.3g}", fontsize=10)
    path1 = _save(fig, os.path.join(out_dir, "filters_conv1.png"))

    w2 = np.asarray(state_dict["conv2.weight"], np.float32)
    n_out, n_in, kh, kw = w2.shape
    mosaic = np.full((n_out * (kh + 1) - 1, n_in * (kw + 1) - 1), np.nan, np.float32)
    for o in range(n_out):
        for i in range(n_in):
            mosaic[o * (kh + 1):o * (kh + 1) + kh, i * (kw + 1):i * (kw + 1) + kw] = w2[o, i]
    m = float(np.abs(w2).max()) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.75")  # the gaps between kernels: grey
    fig, ax = plt.subplots(figsize=(10, 9.2))
    im = ax.imshow(mosaic, cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
    ticks = np.arange(0, n_in, 4)
    ax.set_xticks(ticks * (kw + 1) + kw // 2, [str(t) for t in ticks])
    ax.set_yticks(np.arange(0, n_out, 4) * (kh + 1) + kh // 2, [str(t) for t in np.arange(0, n_out, 4)])
    ax.set(xlabel="input channel (= conv1 output channel)", ylabel="output channel",
           title=f"conv2 filters: {n_out} out x {n_in} in, one 3x3 kernel per pair\n"
                 f"diverging colour scale centred at 0, shared: -{m:.3g} .. {m:.3g}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="weight (white = 0)")
    path2 = _save(fig, os.path.join(out_dir, "filters_conv2.png"))
    return [path1, path2]
