"""The fused path's cheap per-element kernels: ReLU, dropout, 2x2 max- and average pooling (NHWC).

They sit between the convolution kernels of ``fused_conv`` and touch each
activation once. Dropout masks are recomputed from the counter-based hash of
``scratchcnn.kernels.rng`` instead of being stored: element i of a layer's
mask (i = its flat NCHW index, whatever layout the data is in here) is

    keep[i] = uniform01(stream_key(seed, counter), i) >= p

exactly as ``rng.keep_mask(seed, counter, size, p)``, so these kernels drop
the same units as the layer-by-layer path. ``scale = float32(1) / float32(1 - p)``
is the same float32 number ``layers.Dropout`` multiplies by.

After ReLU and dropout, the kept-and-positive units are exactly those with
out > 0, so the backward passes need no mask at all:

    dL/dx = dL/dout * scale   where out > 0,   else 0

NaN and inf behave as in the layer path (``layers.ReLU``, ``layers.Dropout``,
``layers.MaxPool2d``) and PyTorch: relu(NaN) = NaN, a dropped unit is
relu(x) * 0 (so a dropped NaN or inf gives NaN), a NaN wins a max-pool window
(the last NaN in window order), and NaN > 0 is false in the backward masks,
as in the layer path. None of these kernels is compiled with ``fastmath``:
LLVM's fast-math flags ``nnan``/``ninf`` let it assume there is no NaN, and
``v > m`` or ``max(v, 0)`` then turned NaN into a number. The loops vectorise
without them; the max-pool keeps its fast ``v > m`` chain and takes a second,
NaN-aware pass only over rows that hold a NaN (``relu_maxpool2_row``).

Shapes (float32, C-contiguous unless said otherwise):
    a     (N, H, W, C)        conv output before ReLU, NHWC
    outp  (N, H+2P, W+2P, C)  next conv's zero-padded input (only the interior is written;
                              P, its padding, is read from the shapes)
    flat  (N, C*(H/2)*(W/2))  pooled output in torch's Flatten order (c, y, x)
    arg   (N, H/2, W/2, C)    uint8 in 0..3: which of the window's 4 inputs won, 2*dy + dx

Average pooling needs no ``arg``: its backward gives every input of a window a quarter
of the window's gradient, masked by ReLU's ``a > 0`` (``a``, the conv output, is still
in its buffer then). Its sums run in the layer path's order, ((a0 + a1) + a2) + a3,
and / 4 is exact, so both paths give the same bits.
"""
import numba
import numpy as np
from numba import prange

from scratchcnn.kernels.rng import keep_mask_reference, stream_key, uniform01

# numba caches this file's kernels by ITS text; they compile in code from rng.
# That code's fingerprint (scratchcnn.kernels.fingerprint; tests/test_kernels.py checks it)
# makes an edit there an edit here, so the cached kernels recompile.
DEPENDS_SHA256 = "856b5aad8da7a9df"


def dropout_scale(p):
    """The float32 factor layers.Dropout uses: mask.astype(float32) / (1 - p)."""
    return np.float32(1.0) / np.float32(1 - p)


@numba.njit(inline="always")
def relu(v):
    """max(v, 0) that keeps NaN (NaN <= 0 is false), like np.maximum and torch.relu."""
    return np.float32(0) if v <= 0 else v


# ------------------------------------------------------------------ forward

@numba.njit(inline="always")
def relu_dropout_pad_row(a, outp, n, h, key, pf, scale):
    """One image row of relu_dropout_pad_nhwc (a building block for fused kernels)."""
    _, h_in, w_in, c_in = a.shape
    hw = h_in * w_in
    pad = (outp.shape[1] - h_in) // 2         # the next convolution's padding
    for w in range(w_in):
        i0 = n * c_in * hw + h * w_in + w
        for c in range(c_in):
            r = relu(a[n, h, w, c])
            if scale == 0:
                outp[n, h + pad, w + pad, c] = r
            else:                               # r * (mask / (1 - p)), as layers.Dropout
                keep = uniform01(key, i0 + c * hw) >= pf
                outp[n, h + pad, w + pad, c] = r * (scale if keep else np.float32(0))


@numba.njit(cache=True, parallel=True)
def relu_dropout_pad_nhwc(a, outp, seed, counter, p, scale):
    """outp[n, h+P, w+P, c] = relu(a[n,h,w,c]) * keep[i] * scale, i = ((n*C + c)*H + h)*W + w,
    with P = outp's padding ((outp height - H) / 2).

    With ``scale == 0`` dropout is off (eval mode): outp = relu(a). A dropped
    unit is relu(a) * 0: 0, or NaN where a is NaN or +inf (as in the layer path).
    """
    n_img, h_in = a.shape[0], a.shape[1]
    key = stream_key(seed, counter)
    pf = np.float32(p)
    for r in prange(n_img * h_in):
        n = r // h_in
        relu_dropout_pad_row(a, outp, n, r - n * h_in, key, pf, scale)


@numba.njit(cache=True)
def relu_dropout_rows(a, out, seed, counter, p, scale):
    """out[n, j] = relu(a[n, j]) * keep[n*J + j] * scale (a, out: (N, J)); scale 0: plain ReLU."""
    n_img, j_len = a.shape
    key = stream_key(seed, counter)
    pf = np.float32(p)
    for n in range(n_img):
        for j in range(j_len):
            r = relu(a[n, j])
            if scale == 0:
                out[n, j] = r
            else:
                keep = uniform01(key, n * j_len + j) >= pf
                out[n, j] = r * (scale if keep else np.float32(0))


@numba.njit(inline="always")
def relu_maxpool2_row(a, flat, arg, n, y):
    """Pooled row y of image n (input rows 2y, 2y+1) of relu_maxpool2_nhwc.

    The common case runs the plain `v > m` chain, which vectorises; a NaN never
    wins there. So the row also notes whether any window held a NaN (a0+a1+a2+a3
    is NaN then; inf - inf raises a harmless false alarm) and, if so, pools the
    row again with the NaN rule. Testing `v != v` at every step instead cost
    conv2's fused forward 1.3 ms of its 1.4 ms (2 threads, batch 32).
    """
    _, h_in, w_in, c_in = a.shape
    ho, wo = h_in // 2, w_in // 2
    has_nan = False
    for x in range(wo):
        for c in range(c_in):
            a0 = a[n, 2 * y, 2 * x, c]
            a1 = a[n, 2 * y, 2 * x + 1, c]
            a2 = a[n, 2 * y + 1, 2 * x, c]
            a3 = a[n, 2 * y + 1, 2 * x + 1, c]
            m = a0
            k = 0
            if a1 > m:
                m = a1
                k = 1
            if a2 > m:
                m = a2
                k = 2
            if a3 > m:
                m = a3
                k = 3
            s = a0 + a1 + a2 + a3
            has_nan |= s != s
            arg[n, y, x, c] = k
            flat[n, (c * ho + y) * wo + x] = relu(m)
    if has_nan:
        relu_maxpool2_row_nan(a, flat, arg, n, y)


@numba.njit(inline="always")
def relu_maxpool2_row_nan(a, flat, arg, n, y):
    """relu_maxpool2_row with PyTorch's NaN rule: a NaN beats every number, the last NaN wins."""
    _, h_in, w_in, c_in = a.shape
    ho, wo = h_in // 2, w_in // 2
    for x in range(wo):
        for c in range(c_in):
            m = a[n, 2 * y, 2 * x, c]
            k = 0
            v = a[n, 2 * y, 2 * x + 1, c]
            if v > m or v != v:            # a larger value, or a NaN (v != v)
                m = v
                k = 1
            v = a[n, 2 * y + 1, 2 * x, c]
            if v > m or v != v:
                m = v
                k = 2
            v = a[n, 2 * y + 1, 2 * x + 1, c]
            if v > m or v != v:
                m = v
                k = 3
            arg[n, y, x, c] = k
            flat[n, (c * ho + y) * wo + x] = relu(m)


@numba.njit(cache=True, parallel=True)
def relu_maxpool2_nhwc(a, flat, arg):
    """2x2/2 max-pool of relu(a), written in torch's flatten order; arg = winner in its window.

    flat[n, (c*Ho + y)*Wo + x] = relu(max_{dy,dx} a[n, 2y+dy, 2x+dx, c]),
    arg[n, y, x, c] = 2*dy + dx of the FIRST maximum in window order (like torch),
    or of the LAST NaN when the window holds one (then flat is NaN, like torch).
    (ReLU and max commute, so pooling first and clamping once is the same.)
    """
    n_img, ho = a.shape[0], a.shape[1] // 2
    for r in prange(n_img * ho):
        n = r // ho
        relu_maxpool2_row(a, flat, arg, n, r - n * ho)


@numba.njit(inline="always")
def relu_avgpool2_row(a, flat, n, y):
    """Pooled row y of image n (input rows 2y, 2y+1) of relu_avgpool2_nhwc."""
    _, h_in, w_in, c_in = a.shape
    ho, wo = h_in // 2, w_in // 2
    four = np.float32(4)
    for x in range(wo):
        for c in range(c_in):
            s = relu(a[n, 2 * y, 2 * x, c]) + relu(a[n, 2 * y, 2 * x + 1, c])
            s = s + relu(a[n, 2 * y + 1, 2 * x, c])
            s = s + relu(a[n, 2 * y + 1, 2 * x + 1, c])
            flat[n, (c * ho + y) * wo + x] = s / four


@numba.njit(cache=True, parallel=True)
def relu_avgpool2_nhwc(a, flat):
    """2x2/2 average pool of relu(a), written in torch's flatten order:

    flat[n, (c*Ho + y)*Wo + x] = (sum_{dy,dx} relu(a[n, 2y+dy, 2x+dx, c])) / 4

    (ReLU first, as the layers run: the mean does not commute with it). A NaN
    anywhere in a window makes its mean NaN, as in the layer path and torch.
    """
    n_img, ho = a.shape[0], a.shape[1] // 2
    for r in prange(n_img * ho):
        n = r // ho
        relu_avgpool2_row(a, flat, n, r - n * ho)


# ------------------------------------------------------------------ backward

@numba.njit(cache=True, parallel=True)
def maxpool2_relu_backward_pad(dflat, flat, arg, gp):
    """dL/da into the zero-padded gp (N, H+2P, W+2P, C) (interior written, border untouched).

    gp[n, 2y+dy+P, 2x+dx+P, c] = dflat[n, j] if 2*dy+dx == arg[n,y,x,c] and flat[n, j] > 0 else 0,
    with j = (c*Ho + y)*Wo + x and P = gp's padding.
    """
    n_img, hp, wp, c_in = gp.shape
    ho, wo = arg.shape[1], arg.shape[2]
    pad = (hp - 2 * ho) // 2
    for r in prange(n_img * ho):
        n = r // ho
        y = r - n * ho
        for x in range(wo):
            for c in range(c_in):
                j = (c * ho + y) * wo + x
                g = dflat[n, j] if flat[n, j] > 0 else np.float32(0)
                k = arg[n, y, x, c]
                gp[n, 2 * y + pad, 2 * x + pad, c] = g if k == 0 else np.float32(0)
                gp[n, 2 * y + pad, 2 * x + pad + 1, c] = g if k == 1 else np.float32(0)
                gp[n, 2 * y + pad + 1, 2 * x + pad, c] = g if k == 2 else np.float32(0)
                gp[n, 2 * y + pad + 1, 2 * x + pad + 1, c] = g if k == 3 else np.float32(0)


@numba.njit(cache=True, parallel=True)
def avgpool2_relu_backward_pad(dflat, a, gp):
    """dL/da into the zero-padded gp (N, H+2P, W+2P, C) (interior written, border untouched).

    gp[n, 2y+dy+P, 2x+dx+P, c] = dflat[n, j] / 4 if a[n, 2y+dy, 2x+dx, c] > 0 else 0,
    with j = (c*Ho + y)*Wo + x, a the conv output (N, H, W, C) before ReLU and P = gp's padding.
    """
    n_img, hp, wp, c_in = gp.shape
    ho, wo = a.shape[1] // 2, a.shape[2] // 2
    pad = (hp - 2 * ho) // 2
    four, zero = np.float32(4), np.float32(0)
    for r in prange(n_img * ho):
        n = r // ho
        y = r - n * ho
        for x in range(wo):
            for c in range(c_in):
                g = dflat[n, (c * ho + y) * wo + x] / four
                for dy in range(2):
                    for dx in range(2):
                        v = a[n, 2 * y + dy, 2 * x + dx, c]
                        gp[n, 2 * y + dy + pad, 2 * x + dx + pad, c] = g if v > 0 else zero


@numba.njit(inline="always")
def dropout_relu_backward_row(dout, outp, scale, da, n, h):
    """One image row of dropout_relu_backward_nhwc."""
    _, h_in, w_in, c_in = dout.shape
    pad = (outp.shape[1] - h_in) // 2            # outp's padding
    pd = (da.shape[1] - h_in) // 2               # da's (0: unpadded)
    for w in range(w_in):
        for c in range(c_in):
            g = dout[n, h, w, c] * scale if outp[n, h + pad, w + pad, c] > 0 else np.float32(0)
            da[n, h + pd, w + pd, c] = g


@numba.njit(cache=True, parallel=True)
def dropout_relu_backward_nhwc(dout, outp, scale, da):
    """da[n,h+Q,w+Q,c] = dout[n,h,w,c] * scale where outp[n,h+P,w+P,c] > 0, else 0 (all NHWC;
    P = outp's padding, Q = da's: 0 for an unpadded da, the previous convolution's padding
    when da is its output gradient, the input of its own backward convolution)."""
    n_img, h_in = dout.shape[0], dout.shape[1]
    for r in prange(n_img * h_in):
        n = r // h_in
        dropout_relu_backward_row(dout, outp, scale, da, n, r - n * h_in)


# ------------------------------------------------------------------ NumPy twins

def relu_dropout_reference(a_nchw, seed, counter, p):
    """relu(a) * keep_mask * scale for an NCHW (or (N, J)) array, like act + Dropout layers."""
    mask = keep_mask_reference(seed, counter, a_nchw.size, p).reshape(a_nchw.shape)
    return np.maximum(a_nchw, 0) * (mask.astype(np.float32) / np.float32(1 - p))


def relu_maxpool2_reference(a_nhwc):
    """(flat (N, C*Ho*Wo) in (c, y, x) order, arg (N, Ho, Wo, C)) of relu then 2x2 max-pool."""
    n, h, w, c = a_nhwc.shape
    win = a_nhwc.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
    arg = win.argmax(-1)                                  # argmax returns the first maximum
    has_nan = np.isnan(win)
    last_nan = 3 - np.argmax(has_nan[..., ::-1], axis=-1)
    arg = np.where(has_nan.any(-1), last_nan, arg).astype(np.uint8)     # a NaN wins: the last one
    pooled = np.maximum(win.max(-1), 0)                   # (N, Ho, Wo, C); max and maximum keep NaN
    return pooled.transpose(0, 3, 1, 2).reshape(n, -1), arg


def maxpool2_relu_backward_reference(dflat, flat, arg):
    """dL/da (N, H, W, C), unpadded: the pooled gradient routed to each window's winner."""
    n, ho, wo, c = arg.shape
    g = np.where(flat > 0, dflat, 0).reshape(n, c, ho, wo).transpose(0, 2, 3, 1)   # (N, Ho, Wo, C)
    win = (arg[..., None] == np.arange(4)) * g[..., None]                          # (N, Ho, Wo, C, 4)
    return win.reshape(n, ho, wo, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, 2 * ho, 2 * wo, c)


def relu_avgpool2_reference(a_nhwc):
    """flat (N, C*Ho*Wo) in (c, y, x) order: relu then 2x2 average pool."""
    n, h, w, c = a_nhwc.shape
    win = np.maximum(a_nhwc, 0).reshape(n, h // 2, 2, w // 2, 2, c)
    pooled = (((win[:, :, 0, :, 0] + win[:, :, 0, :, 1]) + win[:, :, 1, :, 0]) + win[:, :, 1, :, 1]) / np.float32(4)
    return pooled.transpose(0, 3, 1, 2).reshape(n, -1)


def avgpool2_relu_backward_reference(dflat, a_nhwc):
    """dL/da (N, H, W, C), unpadded: a quarter of each window's gradient where a > 0."""
    n, h, w, c = a_nhwc.shape
    g = (dflat / np.float32(4)).reshape(n, c, h // 2, w // 2).transpose(0, 2, 3, 1)   # (N, Ho, Wo, C)
    return np.where(a_nhwc > 0, g.repeat(2, axis=1).repeat(2, axis=2), np.float32(0))
