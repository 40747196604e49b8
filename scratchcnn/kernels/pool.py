"""numba kernels for 2-D max and average pooling (NCHW, no padding, floor output size).

Shape contract (C-contiguous, float32 or float64 values):

    x        (N, C, H, W)
    out      (N, C, OH, OW)     OH = (H - KH) // SH + 1, OW = (W - KW) // SW + 1
    indices  (N, C, OH, OW)     int64: h*W + w of the chosen input pixel in its
                                (H, W) plane, exactly like torch's return_indices

Which element a window picks (PyTorch's CPU kernel, NCHW path): scan the window
in row-major order and take element v when ``v > best or isnan(v)``, starting
from best = -inf and the window's first element. So among tied maxima the FIRST
wins, a NaN beats every number (and a later NaN beats an earlier one), and an
all -inf window picks its first element. The backward pass routes each output
gradient to that one input element; overlapping windows (stride < kernel) add up.
"""
import numba
import numpy as np


@numba.njit(cache=True)
def max_pool2d_forward(x, kh, kw, sh, sw):
    """x (N, C, H, W) -> out, indices (N, C, OH, OW); tie rule in the module docstring."""
    n_img, n_ch, height, width = x.shape
    oh = (height - kh) // sh + 1
    ow = (width - kw) // sw + 1
    out = np.empty((n_img, n_ch, oh, ow), dtype=x.dtype)
    indices = np.empty((n_img, n_ch, oh, ow), dtype=np.int64)
    for n in range(n_img):
        for c in range(n_ch):
            for y in range(oh):
                for xo in range(ow):
                    h0, w0 = y * sh, xo * sw
                    best = -np.inf
                    best_index = h0 * width + w0
                    for h in range(h0, h0 + kh):
                        for w in range(w0, w0 + kw):
                            v = x[n, c, h, w]
                            if v > best or np.isnan(v):
                                best = v
                                best_index = h * width + w
                    out[n, c, y, xo] = best
                    indices[n, c, y, xo] = best_index
    return out, indices


@numba.njit(cache=True)
def max_pool2d_backward(dout, indices, height, width):
    """dx (N, C, H, W): dx[n, c].flat[indices[n, c, y, x]] += dout[n, c, y, x]."""
    n_img, n_ch, oh, ow = dout.shape
    dx = np.zeros((n_img, n_ch, height * width), dtype=dout.dtype)
    for n in range(n_img):
        for c in range(n_ch):
            for y in range(oh):
                for xo in range(ow):
                    dx[n, c, indices[n, c, y, xo]] += dout[n, c, y, xo]
    return dx.reshape(n_img, n_ch, height, width)


# ---------------------------------------------------------------- average pooling
# Same shapes as max pooling, no indices: every element of a window gets 1/(KH*KW) of it.
# As in PyTorch's CPU kernel: a window's sum in row-major order, DIVIDED by KH*KW (not
# multiplied by its reciprocal), in the array's dtype; the backward pass divides too.

@numba.njit(cache=True, inline="always")
def _window_size(x, kh, kw):
    """KH*KW as a scalar of x's dtype."""
    count = np.empty(1, x.dtype)
    count[0] = kh * kw
    return count[0]


@numba.njit(cache=True)
def avg_pool2d_forward(x, kh, kw, sh, sw):
    """x (N, C, H, W) -> out (N, C, OH, OW): the mean of each KHxKW window."""
    n_img, n_ch, height, width = x.shape
    oh = (height - kh) // sh + 1
    ow = (width - kw) // sw + 1
    out = np.empty((n_img, n_ch, oh, ow), dtype=x.dtype)
    count = _window_size(x, kh, kw)
    for n in range(n_img):
        for c in range(n_ch):
            for y in range(oh):
                for xo in range(ow):
                    total = count - count                  # 0 in x's dtype
                    for h in range(y * sh, y * sh + kh):
                        for w in range(xo * sw, xo * sw + kw):
                            total += x[n, c, h, w]
                    out[n, c, y, xo] = total / count
    return out


@numba.njit(cache=True)
def avg_pool2d_backward(dout, height, width, kh, kw, sh, sw):
    """dx (N, C, H, W): each dout[n, c, y, x] / (KH*KW) added to every pixel of window (y, x)."""
    n_img, n_ch, oh, ow = dout.shape
    dx = np.zeros((n_img, n_ch, height, width), dtype=dout.dtype)
    count = _window_size(dout, kh, kw)
    for n in range(n_img):
        for c in range(n_ch):
            for y in range(oh):
                for xo in range(ow):
                    g = dout[n, c, y, xo] / count
                    for h in range(y * sh, y * sh + kh):
                        for w in range(xo * sw, xo * sw + kw):
                            dx[n, c, h, w] += g
    return dx
