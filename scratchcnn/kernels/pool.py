"""numba kernels for 2-D max pooling (NCHW, no padding, floor output size).

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
