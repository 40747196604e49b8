"""The fast path: the whole network's forward and backward in one function.

``fused_forward_backward(model, x, y)`` computes what the layer-by-layer path
computes,

    logits = model.forward(x); loss = SoftmaxCrossEntropy().forward(logits, y)
    model.backward(criterion.backward())

(same loss, logits, parameter gradients and dropout masks, to float32
rounding; ``tests/test_fused.py`` checks it) but much faster (see
``benchmarks/``), because it is organised for the CPU rather than for reading.
``fused_train_step(model, optimizer, x, y)`` adds the SGD update (equal, bit
for bit, to ``optimizer.step()`` after it, weight decay included);
``fused_predict`` is the eval-mode forward; ``warmup(model)`` loads (or, the first
time, compiles) the kernels that model runs.

How it is organised:

* Activations are NHWC (channels last) inside, so the 32 channels of a pixel
  are one cache line pair and two 16-lane vectors. Input and output are NCHW
  like everywhere else; flatten order is torch's (c, y, x).
* Both convolutions, and the gradient of conv2's input, run the same
  register-blocked direct 3x3 kernel (``kernels.fused_conv``); the weight
  gradients run its twin. No im2col buffers.
* ReLU, dropout and the pooling (max or average) are fused into the convolutions' parallel loops
  as epilogues (``kernels.fused_elementwise`` has them standalone too). Dropout masks are recomputed from the
  counter-based hash, never stored: the kept-and-positive units are exactly
  those whose output is > 0; max-pool keeps a 1-byte winner index, and average
  pooling's backward reads ReLU's mask from conv2's output, still in its buffer.
* fc3's three matrix products run as numba kernels too (``kernels.fused_linear``),
  so one thread pool does all the heavy work; fc4 is tiny and uses NumPy.
* Buffers are allocated once per model and batch size and reused
  (``_workspace``); two models in one process never share them.
* NaN and inf propagate as in the layer path and PyTorch: ReLU(NaN) = NaN,
  NaN * 0 (a dropped unit) = NaN, a NaN wins a max-pool window. No kernel is
  compiled with the fastmath flags that let LLVM assume there are none
  (``nnan``, ``ninf``); so a diverging run reports a NaN loss at the same step
  on both paths (``tests/test_fused.py``). One difference remains: conv1's 27
  taps are padded to 32 with zero weights, and 0 * inf = NaN, so an infinite
  input pixel can give NaN where the layer path gives inf (both not finite).

It runs the tutorial's network and the family it belongs to, at float32: a
stack of one or more convolutions, the first from the image's 3 channels and the
others 32 -> 32, each a square filter of odd size up to 7 with "same" padding and
followed by an optional BatchNorm2d, ReLU and, but for the last, an optional
Dropout; then a 2x2 max or average pool, Flatten, Linear 8192 -> 512, ReLU,
Dropout, Linear (the presets tutorial, k1, k5, k7, avgpool, deep and bn; any
batch size, any number of classes;
the pictures below show the tutorial's two 3x3 convolutions, where every padded
buffer has a 1-pixel border: a KxK convolution's input has (K-1)/2). The update
is ``scratchcnn.optim.SGD`` over the model's own parameters. ``SUPPORTED`` states
the family as data and ``unsupported_reason(model)`` checks the model's real
layers against it. Anything else raises ``NotImplementedError`` saying
why; nothing falls back in silence, so the caller (``backends.ScratchBackend``)
chooses the layer path knowingly and says so.

Data flow of one step (N images; shapes NHWC unless noted):

    x (N,3,32,32) NCHW --pad--> xp1 (N,34,34,3)
      conv1 -> a1 (N,32,32,32) --relu,drop1--> d1p (N,34,34,32) (padded for conv2)
      conv2 -> a2 (N,32,32,32) --relu,pool--> flat (N,8192) (c,y,x order), arg uint8 (max-pool)
      fc3 -> h3 (N,512) --relu,drop3--> d3 --fc4--> logits (N,10) --> loss
    backward:
      dlogits -> fc4 grads, dd3 -> dh3 -> fc3 grads, dflat
      dflat --unpool,relu'--> g2p (N,34,34,32) -> conv2 grads (weight-grad kernel)
            (max-pool: to each window's winner, by arg; average: a quarter to each input a2 > 0)
      g2p --conv with rotated conv2 weights--> dd1 (N,32,32,32) --drop1',relu'--> g1
      g1 -> conv1 grads (weight-grad kernel)

A longer stack repeats the middle: each further convolution's input is the
previous one's padded, activated output (like d1p), and its backward runs the
same two kernels, its input gradient landing padded for the convolution before.
A convolution with BatchNorm2d keeps its output y, BatchNorm (``kernels.fused_batchnorm``:
statistics summed in float64) writes z, and ReLU / dropout / pool run on z as
standalone kernels; in the backward, the gradient of z becomes that of y in place
(two passes: the per-channel sums, then the elementwise formula) before the
convolution's own backward. The running statistics are updated as the layer does.
"""
import time
import weakref
from typing import NamedTuple

import numba
import numpy as np

from scratchcnn.kernels import fused_batchnorm as fbn
from scratchcnn.kernels import fused_conv as fc
from scratchcnn.kernels import fused_elementwise as fe
from scratchcnn.kernels import fused_linear as fl
from scratchcnn.kernels import sgd as ksgd
from scratchcnn.optim import SGD

__all__ = ["fused_forward_backward", "fused_train_step", "fused_predict", "check_supported",
           "unsupported_reason", "check_optimizer", "warmup", "SUPPORTED"]

# What this path runs, as data: the roles its layers may play (each an exact layer class
# with arguments) and the order they come in (SHAPE). ``unsupported_reason`` checks the
# model's REAL layers against it (their exact class, every argument, the shapes of their
# weights) before any kernel runs: numba does not bounds-check, so an unchecked assumption
# would be a crash, not an exception. "any": any value; "[0,1)": a probability below 1.
# A tuple of kinds: any one of them.
_CIN, _H, _W = 3, 32, 32                    # the input image
_C = 32                                     # channels out of every convolution: two 16-lane vectors
_FLAT = _C * (_H // 2) * (_W // 2)          # 8192 after the 2x2 pool
_HIDDEN = 512                               # fc3's outputs
# a square kernel of odd size 1..7 with "same" padding (the output keeps the input's size)
_CONV = {"kernel_size": "odd square <= 7", "stride": (1, 1), "padding": "same", "bias": True}
SUPPORTED = {
    "first conv": ("Conv2d", {"in_channels": _CIN, "out_channels": _C, **_CONV}),
    "conv": ("Conv2d", {"in_channels": _C, "out_channels": _C, **_CONV}),
    "norm": ("BatchNorm2d", {"num_features": _C}),         # any eps and momentum, affine or not
    "act": ("ReLU", {}),
    "drop": ("Dropout", {"p": "[0,1)"}),
    "pool": (("MaxPool2d", "AvgPool2d"), {"kernel_size": (2, 2), "stride": (2, 2)}),
    "flat": ("Flatten", {}),
    "fc3": ("Linear", {"in_features": _FLAT, "out_features": _HIDDEN, "bias": True}),
    "fc4": ("Linear", {"in_features": _HIDDEN, "out_features": "any", "bias": True}),
}
SHAPE = ("first conv, [norm], act, [drop], then any number of (conv, [norm], act, [drop]), the last of them "
         "without drop; pool, flat, fc3, act, drop, fc4")


class _Net(NamedTuple):
    """The model's layers by their role in SHAPE (whatever the spec named them)."""
    convs: tuple            # the convolutions in order, conv1 (3 -> 32) first
    norms: tuple            # the BatchNorm2d after each, or None
    acts: tuple             # the ReLU after each
    drops: tuple            # the Dropout after each ReLU, or None (always None for the last)
    pool2: object
    fc3: object
    drop3: object
    fc4: object

    @property
    def ks(self):
        """Each convolution's kernel size."""
        return tuple(c.kernel_size[0] for c in self.convs)

    @property
    def bn_at(self):
        """The indices of the convolutions a BatchNorm2d follows."""
        return tuple(i for i, norm in enumerate(self.norms) if norm is not None)

    @property
    def avgpool(self):
        return type(self.pool2).__name__ == "AvgPool2d"


def _layer_value(layer, arg):
    if arg == "bias":
        return layer.bias is not None
    v = getattr(layer, arg)
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _role_mismatch(i, name, layer, role):
    """None when ``layer`` (the model's i-th, 0-based) can play ``role``; else why not, in one line."""
    from scratchcnn.layer_base import REGISTRY
    kinds, want = SUPPORTED[role]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if type(layer) not in [REGISTRY[k] for k in kinds]:
        return f"layer {i + 1} ({name}) is {type(layer).__name__}; the fast path needs {' or '.join(kinds)} there"
    kind = type(layer).__name__
    for arg, value in want.items():
        have = _layer_value(layer, arg)
        k = _layer_value(layer, "kernel_size")[0] if kind == "Conv2d" else None
        ok = (value == "any" or (value == "[0,1)" and 0 <= have < 1) or have == value
              or (value == "odd square <= 7" and have[0] == have[1] and have[0] in (1, 3, 5, 7))
              or (value == "same" and have == ((k - 1) // 2,) * 2))
        if not ok:
            return f"layer {i + 1} ({name}, {kind}) has {arg}={have}; the fast path needs {value}"
    return None


def _parse(layers):
    """(_Net, None) when the (name, layer) list has SHAPE, else (None, the first reason it has not)."""
    from scratchcnn.layer_base import REGISTRY
    convs, norms, acts, drops, i = [], [], [], [], 0

    def take(role):
        nonlocal i
        if i >= len(layers):
            return f"it ends after layer {i}; the fast path needs {' or '.join(np.atleast_1d(SUPPORTED[role][0]))} next"
        why = _role_mismatch(i, *layers[i], role)
        i += why is None
        return why

    def at(kind):
        return i < len(layers) and type(layers[i][1]) is REGISTRY[kind]

    while True:                                         # the convolution stack
        why = take("conv" if convs else "first conv")
        convs.append(layers[i - 1][1])
        norms.append(layers[i][1] if not why and at("BatchNorm2d") else None)
        why = why or (norms[-1] is not None and take("norm")) or take("act")
        if why:
            return None, why
        acts.append(layers[i - 1][1])
        drops.append(layers[i][1] if at("Dropout") else None)
        if drops[-1] is not None and (why := take("drop")):
            return None, why
        if not at("Conv2d"):
            break
    if drops[-1] is not None:
        return None, (f"layer {i} ({layers[i - 1][0]}) is a Dropout right before the pool; the fast path "
                      f"needs the last convolution's ReLU followed by the pool")
    first_tail = i
    for role in ("pool", "flat", "fc3", "act", "drop", "fc4"):
        if why := take(role):
            return None, why
    if i != len(layers):
        return None, (f"layer {i + 1} ({layers[i][0]}) follows the last Linear; the fast path's network "
                      f"ends there")
    tail = [layer for _, layer in layers[first_tail:]]
    return _Net(tuple(convs), tuple(norms), tuple(acts), tuple(drops), tail[0], tail[2], tail[4], tail[5]), None


def unsupported_reason(model):
    """None when the fast path can run ``model``; else one line saying what differs from
    the networks it runs (SHAPE, at float32)."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, list):
        return f"not a scratchcnn Network ({type(model).__name__})"
    if getattr(model, "dtype", None) != np.float32:
        return f"it runs float32 only, the model is {getattr(model, 'dtype', '?')}"
    return _parse(layers)[1]


def check_supported(model):
    """Raise NotImplementedError unless ``unsupported_reason(model)`` is None."""
    reason = unsupported_reason(model)
    if reason is not None:
        raise NotImplementedError(f"scratchcnn.fused supports only the tutorial's network and its family "
                                  f"(stacked 32-channel convolutions with 1x1 to 7x7 filters) at float32 "
                                  f"({reason}); use the layer-by-layer path instead")
    return _net(model)


def _net(model):
    return _parse(model.layers)[0]


class _Workspace:
    """Every intermediate buffer of one step for batch size n (reused across steps).

    ``ks``: each convolution's kernel size (the tutorial: (3, 3)); ``bn_at``: the
    convolutions a BatchNorm2d follows (their indices in ks). The forward
    buffers are allocated at once (about 2.5 MB per image for the tutorial's
    network); the backward ones (about 1.3x that) only when a training step first
    needs them, so evaluation does not pay for them. Padded buffers are zeroed
    once: the kernels write only their interiors, so the zero borders stay.
    """

    def __init__(self, n, n_chunks, n_classes, ks=(3, 3), bn_at=()):
        f32 = np.float32
        self.n, self.n_chunks, self.ks = n, n_chunks, ks
        pads = [(k - 1) // 2 for k in ks]                 # each convolution's "same" padding
        self.xp1 = np.zeros((n, _H + 2 * pads[0], _W + 2 * pads[0], _CIN), f32)
        self.a = np.empty((n, _H, _W, _C), f32)           # each conv's output in turn, then dd1
        # dp[i]: convolution i's activated output, padded as the input of convolution i + 1 (d1p)
        self.dp = [np.zeros((n, _H + 2 * p, _W + 2 * p, _C), f32) for p in pads[1:]]
        # y[i]: the output of convolution i when a BatchNorm2d follows (kept for its backward); the
        # BatchNorm's output goes to ws.a
        self.y = {i: np.empty((n, _H, _W, _C), f32) for i in bn_at}
        self.bn_partial = np.empty((n_chunks, _C), np.float64)
        self.flat = np.empty((n, _C * (_H // 2) * (_W // 2)), f32)
        self.arg = np.empty((n, _H // 2, _W // 2, _C), np.uint8)
        self.h3 = np.empty((n, _HIDDEN), f32)
        self.d3 = np.empty((n, _HIDDEN), f32)
        self.zero_bias = np.zeros(_C, f32)
        self.xt = np.zeros((self.flat.shape[1], 32), f32)      # flat.T, zero-padded to 32 columns
        self.h3t = np.empty((_HIDDEN, 32), f32)
        self.has_backward = False

    def allocate_backward(self):
        if self.has_backward:
            return
        f32, n, n_chunks = np.float32, self.n, self.n_chunks
        self.dflat = np.empty_like(self.flat)
        k = self.flat.shape[1]          # fc3's gradient kernels take (N, .) operands in panels
        self.flat_p = np.empty((k // 32, n, 32), f32)       # to_panels(flat)
        self.dflat_p = np.empty((k // 32, n, 32), f32)      # to_panels(dflat)
        self.dh3_p = np.empty((_HIDDEN // 8, n, 8), f32)        # to_panels(dh3)
        # g[i]: dL/d(convolution i's output); padded as the input of its backward convolution
        # (g2p), but for the first one, which has none (g1)
        pads = [0] + [(k - 1) // 2 for k in self.ks[1:]]
        self.g = [np.zeros((n, _H + 2 * p, _W + 2 * p, _C), f32) for p in pads]
        self.partial = [np.empty((n_chunks, len(_koff(_CIN if i == 0 else _C, k)), _C), f32)
                        for i, k in enumerate(self.ks)]
        self.partial_b = np.empty((n_chunks, _C), f32)
        self.has_backward = True


def _koff(channels, k):
    """The tap offsets of a k x k convolution over `channels` channels (3x3: 27 taps padded to
    32 for conv1, 288 for conv2); fc.tap_offsets computes each shape once."""
    return fc.tap_offsets(_W, channels, ksize=k)


_workspaces = weakref.WeakKeyDictionary()      # model -> {(n, threads, classes): _Workspace}


def _workspace(model, n, n_classes, net=None):
    """The model's own buffers for batch size n: two models never share any (their
    steps may interleave, or run in two threads), and they go when the model goes."""
    net = net or _net(model)
    per_model = _workspaces.setdefault(model, {})
    key = (n, numba.get_num_threads(), n_classes, net.ks, net.bn_at)
    ws = per_model.get(key)
    if ws is None:
        if len(per_model) > 4:                # keep memory bounded when batch sizes vary
            per_model.clear()
        ws = per_model[key] = _Workspace(n, key[1], n_classes, net.ks, net.bn_at)
    return ws


def _check_input(x):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != (_CIN, _H, _W):
        raise ValueError(f"scratchcnn.fused: expected float32 input of shape (N, {_CIN}, {_H}, {_W}), "
                         f"got {getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")


def _dropout_args(layer):
    """(seed, counter, p, scale) for the kernels; scale 0 means 'no dropout' (eval mode, or
    p = 0, whose mask would keep everything: the kernels then skip the hashing)."""
    if not layer.training or layer.p == 0:
        return 0, 0, 0.0, np.float32(0)
    return layer.seed, layer.counter, layer.p, fe.dropout_scale(layer.p)


def _features(net, x, ws, step, t=None):
    """The convolution stack: conv1 -> [bn1] -> relu -> drop1 -> ... -> the last conv -> [bn] -> relu
    -> pool into ws.flat (and ws.arg, for max-pool). The last convolution's output (its BatchNorm's,
    if it has one) before ReLU stays in ws.a.

    ``step``: a training step, where layers in training mode draw dropout masks and BatchNorm uses
    (and updates the running averages with) the batch's statistics; prediction passes False.
    Returns (each convolution's dropout scale (0: none), each one's BatchNorm (mean, rstd, batch
    statistics?) or None) for the backward.
    """
    t = t or _Timer(None)
    p1 = (net.ks[0] - 1) // 2
    ws.xp1[:, p1:p1 + _H, p1:p1 + _W, :] = x.transpose(0, 2, 3, 1)
    t.lap("input NCHW->NHWC")
    inputs, scales, stats, last = [ws.xp1] + ws.dp, [], [], len(net.convs) - 1
    for i, (conv, norm, act, dropout) in enumerate(zip(net.convs, net.norms, net.acts, net.drops)):
        koff = _koff(_CIN if i == 0 else _C, net.ks[i])
        weight, bias = conv.weight.data, conv.bias.data
        if norm is not None and not step:       # prediction: BatchNorm folded into the convolution
            (weight, bias), norm = _fold_batchnorm(weight, bias, norm), None
        wk = fc.pack_weights(weight, len(koff))
        seed, counter, p, scale = (_dropout_args(dropout) if step and dropout is not None
                                   else (0, 0, 0.0, np.float32(0)))
        scales.append(scale)
        stats.append(None)
        if norm is not None:        # conv, BatchNorm, then ReLU (and dropout or pool) on its output
            fc.conv3x3_forward(inputs[i], wk, koff, bias, ws.y[i])
            stats[i] = _batchnorm_forward(norm, ws.y[i], ws.a, ws.bn_partial, step and norm.training)
            if i < last:
                fe.relu_dropout_pad_nhwc(ws.a, ws.dp[i], seed, counter, p, scale)
            elif net.avgpool:
                fe.relu_avgpool2_nhwc(ws.a, ws.flat)
            else:
                fe.relu_maxpool2_nhwc(ws.a, ws.flat, ws.arg)
        elif i < last:
            fc.conv3x3_forward_relu_dropout_pad(inputs[i], wk, koff, bias, ws.a, ws.dp[i],
                                                seed, counter, p, scale)
        else:
            fc.conv3x3_forward_relu_pool2(inputs[i], wk, koff, bias, ws.a, ws.flat, ws.arg, net.avgpool)
        after = [act] + ([dropout] if dropout is not None else []) + ([net.pool2] if i == last else [])
        t.lap("+".join(layer.name for layer in [conv, net.norms[i], *after] if layer is not None) + " forward")
    return scales, stats


def _fold_batchnorm(weight, bias, norm):
    """(weight, bias) of one convolution that computes conv followed by ``norm`` in eval mode:
    with s = gamma / sqrt(running_var + eps), w' = w * s (per output channel) and
    b' = (b - running_mean) * s + beta. The same function, rounded differently: one float32
    rounding of the scaled weights instead of one of the normalised output."""
    f32 = np.float32
    gamma, beta = _affine(norm)
    s = gamma / np.sqrt(norm.running_var + f32(norm.eps))
    return weight * s[:, None, None, None], (bias - norm.running_mean) * s + beta


def _batchnorm_forward(norm, y, z, partial, batch_stats):
    """z = norm's output for its input y (both NHWC), as layers.BatchNorm2d.forward computes it:
    with the batch's statistics (and the running averages updated, as the layer does) when
    ``batch_stats``, else with the running ones. Returns (mean, rstd, batch_stats) for the backward."""
    f32 = np.float32
    if batch_stats:
        mean64, var64 = fbn.batch_stats(y, partial)
        mean, var = mean64.astype(f32), var64.astype(f32)
        norm.track(mean, var, y.shape[0] * y.shape[1] * y.shape[2])
    else:
        mean, var = norm.running_mean, norm.running_var
    rstd = 1 / np.sqrt(var + f32(norm.eps))
    gamma, beta = _affine(norm)
    fbn.bn_forward_nhwc(y, mean, rstd, gamma, beta, z)
    return mean, rstd, batch_stats


def _batchnorm_backward(norm, g, y, stats, partial):
    """g's interior (dL/dz) becomes dL/dy in place; norm's weight and bias gradients are written,
    as layers.BatchNorm2d.backward computes them."""
    mean, rstd, batch_stats = stats
    sum_dz, sum_dzx = fbn.bn_backward_sums(g, y, mean, rstd, partial)
    sum_dz, sum_dzx = sum_dz.astype(np.float32), sum_dzx.astype(np.float32)
    if norm.weight is not None:
        norm.weight.grad[...] = sum_dzx
        norm.bias.grad[...] = sum_dz
    fbn.bn_backward_apply(g, y, mean, rstd, _affine(norm)[0], sum_dz, sum_dzx, batch_stats)


def _affine(norm):
    """(gamma, beta) of a BatchNorm2d; 1 and 0 without affine parameters."""
    if norm.weight is None:
        return np.ones(_C, np.float32), np.zeros(_C, np.float32)
    return norm.weight.data, norm.bias.data


class _Timer:
    """``profile`` helper: t.lap("name") adds the seconds since the previous lap to profile[name]."""

    def __init__(self, profile):
        self.profile = profile
        self.t = time.perf_counter()

    def lap(self, name):
        if self.profile is not None:
            now = time.perf_counter()
            self.profile[name] = self.profile.get(name, 0.0) + now - self.t
            self.t = now


def _fc3_forward(net, ws):
    """ws.h3 = ws.flat @ fc3.weight.T + fc3.bias. For 9..32 images, on transposed activations
    (``linear_forward_t``: every weight row read once, ~1.5x faster at batch 32); otherwise
    ``linear_forward`` (no padding of the batch to 32, and no 8 MB transposes at large N)."""
    f3 = net.fc3
    n = ws.flat.shape[0]
    if 8 < n <= 32:
        ws.xt[:, :n] = ws.flat.T
        fl.linear_forward_t(ws.xt, f3.weight.data, f3.bias.data, ws.h3t)
        ws.h3[...] = ws.h3t[:, :n].T
    else:
        fl.linear_forward(ws.flat, f3.weight.data, f3.bias.data, ws.h3)


def fused_forward_backward(model, x, y, profile=None):
    """One training step's forward and backward (no parameter update).

    model: ``scratchcnn.model.Network`` of a network in SUPPORTED, float32; x: float32 (N, 3, 32, 32)
    NCHW; y: integer labels (N,). Returns ``(loss: float, logits: (N, K) float32)``.

    Side effects, exactly like the layer path: every parameter's ``.grad`` is
    OVERWRITTEN with dL/dparam, and each Dropout layer in training mode draws
    one mask (its ``counter`` goes up by one). Raises NotImplementedError for
    a model this path does not support, ValueError for bad x or y.

    ``profile``: optional dict; the seconds spent in each stage are added to it
    (keys like "conv2 forward"), for ``benchmarks.layers`` and curious readers.
    """
    return _forward_backward(model, x, y, profile, None)


def fused_train_step(model, optimizer, x, y, profile=None):
    """A whole training step: ``fused_forward_backward`` and then ``optimizer.step()``.

    Same results as those two calls (the gradients are still written to every
    ``.grad``, the momentum buffers stay in ``optimizer``), but fc3's backward
    weight gradient and its SGD update share one pass over the 16 MB weight
    matrix (``kernels.fused_linear.linear_grad_weight_sgd``), which saves
    reading the gradient back from memory; the other parameters get the
    same element update (``kernels.sgd``) in one more pass. ``optimizer.lr``,
    ``momentum`` and ``weight_decay`` are read at every call.

    ``optimizer`` must be ``scratchcnn.optim.SGD(model.parameters(), ...)``
    (``check_optimizer``); anything else raises NotImplementedError before the
    model is touched. Returns (loss, logits).
    """
    check_supported(model)
    check_optimizer(model, optimizer)
    return _forward_backward(model, x, y, profile, optimizer)


def check_optimizer(model, optimizer):
    """Raise NotImplementedError unless ``fused_train_step`` can run ``optimizer``'s update
    itself: a ``scratchcnn.optim.SGD`` whose flat parameter buffer is ``model.flat_data``
    (i.e. built from ``model.parameters()``), in the model's parameter order."""
    if not isinstance(optimizer, SGD):
        raise NotImplementedError(f"fused_train_step runs the update of scratchcnn.optim.SGD only, not "
                                  f"{type(optimizer).__name__}; call fused_forward_backward and then your "
                                  f"optimizer's step()")
    if not (optimizer.is_flat and optimizer.flat_state()[0] is model.flat_data
            and [n for n, _ in optimizer.params] == [n for n, _ in model.parameters()]):
        raise NotImplementedError("fused_train_step: the optimizer does not hold this model's parameters "
                                  "as one flat buffer; build it as SGD(model.parameters(), ...)")


def _forward_backward(model, x, y, profile, optimizer):
    net = check_supported(model)
    _check_input(x)
    x = np.ascontiguousarray(x)
    n = x.shape[0]
    n_classes = net.fc4.weight.data.shape[0]
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu" or np.any((y < 0) | (y >= n_classes)):
        raise ValueError(f"scratchcnn.fused: expected integer labels of shape ({n},) in [0, {n_classes}), "
                         f"got {y.dtype} {y.shape}")
    ws = _workspace(model, n, n_classes, net)
    ws.allocate_backward()
    f3, f4 = net.fc3, net.fc4
    t = _Timer(profile)
    t.lap("checks")

    # ---- forward
    scales, stats = _features(net, x, ws, step=True, t=t)
    _fc3_forward(net, ws)
    seed3, counter3, p3, scale3 = _dropout_args(net.drop3)
    t.lap("fc3 forward")
    fe.relu_dropout_rows(ws.h3, ws.d3, seed3, counter3, p3, scale3)
    logits = ws.d3 @ f4.weight.data.T
    logits += f4.bias.data

    # ---- loss (as layers.SoftmaxCrossEntropy)
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(n), y].mean())
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), y] -= 1
    dlogits *= 1.0 / n
    t.lap("act3+drop3+fc4+loss forward, fc4 backward")

    # ---- backward: fc4, drop3/act3, fc3
    if optimizer is not None:
        first_step = optimizer.begin_step()
        param, grad, buf = optimizer.flat_state()
        buf = grad if buf is None else buf                       # momentum 0: no buffer (never written)
        hyper = optimizer.hyperparameters(param.dtype)           # (lr, momentum, weight_decay), read now
        fc3_w = model.param_slice(f"{f3.name}.weight")
    np.matmul(dlogits.T, ws.d3, out=f4.weight.grad)
    f4.bias.grad[...] = dlogits.sum(axis=0)
    dh3 = dlogits @ f4.weight.data
    b3 = scale3 if scale3 != 0 else np.float32(1)
    dh3 = np.where(ws.d3 > 0, dh3 * b3, np.float32(0))
    t.lap("act3+drop3+fc4+loss forward, fc4 backward")
    f3.bias.grad[...] = dh3.sum(axis=0)
    fl.to_panels(dh3, ws.dh3_p)
    fl.to_panels(ws.flat, ws.flat_p)
    if optimizer is None:
        fl.linear_grad_weight(ws.dh3_p, ws.flat_p, f3.weight.grad)
        fl.linear_grad_input(ws.dh3_p, f3.weight.data, ws.dflat_p)
    else:                     # dx with the old weights first, then dw + fc3.weight's update in one pass
        fl.linear_grad_input(ws.dh3_p, f3.weight.data, ws.dflat_p)
        fl.linear_grad_weight_sgd(ws.dh3_p, ws.flat_p, f3.weight.grad, buf[fc3_w].reshape(f3.weight.data.shape),
                                  f3.weight.data, *hyper, first_step)
    fl.from_panels(ws.dflat_p, ws.dflat)
    t.lap("fc3 backward" if optimizer is None else "fc3 backward (with its SGD update)")

    # ---- backward: pool2/act2, then each convolution from the last: its weights, then its
    # input through the previous convolution's dropout and ReLU (conv2, drop1/act1, conv1)
    last = len(net.convs) - 1
    if net.avgpool:                                      # ws.a still holds the last conv's output
        fe.avgpool2_relu_backward_pad(ws.dflat, ws.a, ws.g[last])
    else:
        fe.maxpool2_relu_backward_pad(ws.dflat, ws.flat, ws.arg, ws.g[last])
    t.lap(f"{net.pool2.name}+{net.acts[-1].name} backward")
    inputs = [ws.xp1] + ws.dp
    for i in range(last, -1, -1):
        conv, k, c_in = net.convs[i], net.ks[i], _CIN if i == 0 else _C
        koff = _koff(c_in, k)
        if net.norms[i] is not None:        # ws.g[i]: dL/d(BatchNorm's output) -> dL/d(conv output)
            _batchnorm_backward(net.norms[i], ws.g[i], ws.y[i], stats[i], ws.bn_partial)
            t.lap(f"{net.norms[i].name} backward")
        fc.conv3x3_weight_grad(inputs[i], ws.g[i], koff, ws.partial[i], ws.partial_b, k)
        conv.weight.grad[...] = fc.unpack_weight_grad(ws.partial[i].sum(axis=0), c_in, k)
        conv.bias.grad[...] = ws.partial_b.sum(axis=0)
        t.lap(f"{conv.name} backward (weights)")
        if i == 0:
            break
        wr = fc.pack_weights(fc.rotated_weights(conv.weight.data), len(koff))
        b = scales[i - 1] if scales[i - 1] != 0 else np.float32(1)
        # ws.a = dL/d(input of conv i); ws.g[i - 1] = dL/d(conv i-1's output)
        fc.conv3x3_forward_dropout_relu_backward(ws.g[i], wr, koff, ws.zero_bias, ws.a, ws.dp[i - 1], b,
                                                 ws.g[i - 1])
        dropout = net.drops[i - 1]
        t.lap(f"{conv.name} backward (input)+" + (f"{dropout.name}+" if dropout is not None else "")
              + f"{net.acts[i - 1].name} backward")

    # ---- the masks used: advance the counters as the Dropout layers would
    for layer in [d for d in net.drops if d is not None] + [net.drop3]:
        if layer.training:
            layer.counter += 1
    t.lap("checks")
    if optimizer is not None:           # SGD for every parameter but fc3.weight (done above)
        for part in (slice(0, fc3_w.start), slice(fc3_w.stop, param.size)):   # small (15k params): one thread
            ksgd.sgd_momentum_step(param[part], grad[part], buf[part], *hyper, first_step)
        t.lap("SGD update (all but fc3.weight)")
    return loss, logits


def fused_predict(model, x, batch_size=64):
    """Eval-mode logits (N, K) float32 for x (N, 3, 32, 32): no dropout, no gradients,
    no change to the model; each BatchNorm2d folded into the convolution before it
    (``_fold_batchnorm``: within 5e-7 of the layer path's logits on the bn preset). Runs in chunks of ``batch_size`` images: 48-96 keep a chunk's
    activations in cache; 500 images on 2 vCPUs of an AMD EPYC Zen 3 took 172 ms in chunks
    of 64, 236 ms of 32, 291-309 ms of 128 or 256 (medians of 9, interleaved)."""
    net = check_supported(model)
    _check_input(x)
    n_classes = net.fc4.weight.data.shape[0]
    out = np.empty((x.shape[0], n_classes), np.float32)
    for s in range(0, x.shape[0], batch_size):
        xb = np.ascontiguousarray(x[s:s + batch_size])
        ws = _workspace(model, xb.shape[0], n_classes, net)
        _features(net, xb, ws, step=False)
        h = ws.h3
        _fc3_forward(net, ws)
        np.maximum(h, 0, out=h)
        out[s:s + xb.shape[0]] = h @ net.fc4.weight.data.T + net.fc4.bias.data
    return out


# ------------------------------------------------------------------ compile / cache load

_KERNELS = (fc.conv3x3_forward_relu_dropout_pad, fc.conv3x3_forward_relu_pool2,
            fc.conv3x3_forward_dropout_relu_backward,
            fc.conv3x3_weight_grad, fe.relu_dropout_rows, fe.maxpool2_relu_backward_pad,
            fe.avgpool2_relu_backward_pad, ksgd.sgd_momentum_step,
            fc.conv3x3_forward, fe.relu_dropout_pad_nhwc, fe.relu_maxpool2_nhwc, fe.relu_avgpool2_nhwc,
            fbn.channel_sums, fbn.bn_forward_nhwc, fbn.bn_backward_sums, fbn.bn_backward_apply,
            fl.linear_forward, fl.linear_forward_t, fl.linear_grad_input, fl.linear_grad_weight,
            fl.linear_grad_weight_sgd, fl.to_panels, fl.from_panels,
            ksgd.sgd_momentum_step_parallel)


def kernels_cached():
    """True when every fused kernel has an up-to-date entry in numba's on-disk cache
    (so loading them takes well under a second instead of compiling)."""
    for disp in _KERNELS:
        try:
            if not disp._cache._cache_file._load_index():     # {} when missing or stale
                return False
        except Exception:                                      # numba internals moved: assume cold
            return False
    return True


def _check_masks_match():
    """numba's cache does not notice when an inlined helper in another module changes
    (here: ``kernels.rng``); if the cached dropout kernels disagree with
    ``rng.keep_mask``, recompile them from the current source."""
    from scratchcnn.kernels.rng import keep_mask
    h = np.ones((2, 64), np.float32)
    out = np.empty_like(h)
    fe.relu_dropout_rows(h, out, 12345, 3, 0.5, np.float32(2))
    if not np.array_equal(out, keep_mask(12345, 3, h.size, 0.5).reshape(h.shape) * np.float32(2)):
        for disp in (fc.conv3x3_forward_relu_dropout_pad, fe.relu_dropout_pad_nhwc, fe.relu_dropout_rows):
            disp.recompile()


_warmed = set()     # the kernel groups (_WARM) loaded in this process


def _groups(net):
    """The kernel groups of _WARM that a parsed network runs."""
    return {"core"} | ({"avgpool"} if net.avgpool else set()) | ({"batchnorm"} if net.bn_at else set())


# Each group of kernels, warmed by a tiny step of a throwaway network that runs them.
_WARM = {"core": "tutorial", "avgpool": "avgpool", "batchnorm": "bn"}


def warmup(model=None, verbose=True):
    """Compile (first run) or load from numba's cache (later runs) the fused kernels
    ``model`` runs (every fused kernel when model is None), once per process.

    Runs tiny fused steps on throwaway networks, so the exact signatures used in
    training are ready: the core kernels (convolution, max pool, dropout, the
    classifier, SGD) always, the average-pool and BatchNorm ones only when the model
    has them (loading each group takes about half a second). Prints "compiling kernels,
    first run only ..." first when the on-disk cache is cold (that takes some 10-30 s
    once). Returns the seconds it took.
    """
    from scratchcnn.model import Network
    wanted = set(_WARM) if model is None else _groups(check_supported(model))
    if wanted <= _warmed:
        return 0.0
    t0 = time.perf_counter()
    cold = not kernels_cached()
    if cold and verbose:
        print("compiling kernels, first run only (30-60 s) ...", flush=True)
    x1, y1 = np.zeros((1, _CIN, _H, _W), np.float32), np.zeros(1, np.int64)
    if "core" not in _warmed:
        _check_masks_match()
        net = Network(_WARM["core"], rng=0)
        x9 = np.zeros((9, _CIN, _H, _W), np.float32)
        fused_forward_backward(net, x1, y1)           # batch 1 and 9: both fc3 forward kernels
        opt = SGD(net.parameters(), lr=0.001, momentum=0.9)
        opt.step()                                    # first and later steps of the parallel SGD kernel
        opt.step()
        fused_train_step(net, opt, x9, np.zeros(9, np.int64))
        fused_predict(net.eval(), x1)
    for group in sorted(wanted - _warmed - {"core"}):
        net = Network(_WARM[group], rng=0)
        fused_forward_backward(net, x1, y1)
        fused_forward_backward(net.eval(), x1, y1)
    _warmed.update(wanted | {"core"})
    dt = time.perf_counter() - t0
    if cold and verbose:
        print(f"compiled in {dt:.0f} s; later runs load them from the cache", flush=True)
    return dt

