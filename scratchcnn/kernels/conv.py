"""numba kernels for 2-D convolution by im2col + matrix multiply (NCHW).

Shape contract (every array C-contiguous NCHW, float32 or float64):

    x       (N, C, H, W)              input images
    weight  (F, C, KH, KW)            filters; W2 = weight.reshape(F, K), K = C*KH*KW
    cols    (N, K, OH*OW)             im2col patches of x
    out     (N, F, OH, OW)            OH = (H + 2*PH - KH) // SH + 1, OW likewise

    cols[n, (c*KH + i)*KW + j, y*OW + x] = xp[n, c, y*SH + i, x*SW + j]

where ``xp`` is ``x`` zero-padded by PH rows and PW columns on each side (the
kernels read the padding as zeros; no padded copy is made). With ``cols``:

    forward           out[n]   = W2 @ cols[n] + bias[:, None]
    backward, weight  dW2      = sum_n dout[n] @ cols[n].T        db = sum_{n,y,x} dout
    backward, input   dcols[n] = W2.T @ dout[n]                   dx = col2im(dcols)

numba does the gather (``im2col``) and the scatter-add (``col2im``); the matrix
multiplies go to NumPy's BLAS (numba's own ``np.dot`` would need SciPy). This is
the clear, general path (any kernel size, stride, padding). The plain NumPy twins
are in ``scratchcnn.reference``.

One shortcut, for inference: in eval mode (``direct=True``), when ``direct_forward_ok``
(float32, stride 1, an odd square kernel <= 7 with "same" padding, output channels a
multiple of 32), the forward runs the fast path's register-blocked direct kernel
(``fused_conv.conv_forward_nchw``, NHWC inside, no patches) and saves ``Input(x)``; a
backward (the explorer's gradients, in eval mode) then builds the patches itself.
Measured on 2 vCPUs of an AMD EPYC Zen 3, 250 images through vgg's layers up to its
last convolution: 1.32 s with im2col + BLAS, 0.47 s this way. Not in training: there
numba's OpenMP threads, spinning after each kernel, slowed the BLAS calls around it,
and the layer path's step took 4-16% longer (tutorial, deep, vgg, bn, avgpool).
"""
from typing import NamedTuple

import numba
import numpy as np

from scratchcnn.kernels import fused_conv as fc


class Input(NamedTuple):
    """What a direct forward saves for the backward: the input itself (not its patches)."""
    x: np.ndarray


def output_size(size, kernel, stride, padding):
    """Output length along one axis: (size + 2*padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


@numba.njit(cache=True)
def im2col(x, kh, kw, sh, sw, ph, pw):
    """(N, C, H, W) -> cols (N, C*KH*KW, OH*OW); padding reads as 0."""
    n_img, n_ch, height, width = x.shape
    oh = (height + 2 * ph - kh) // sh + 1
    ow = (width + 2 * pw - kw) // sw + 1
    cols = np.zeros((n_img, n_ch * kh * kw, oh * ow), dtype=x.dtype)
    for n in range(n_img):
        for c in range(n_ch):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    for y in range(oh):
                        h = y * sh + i - ph
                        if h < 0 or h >= height:
                            continue
                        for xo in range(ow):
                            w = xo * sw + j - pw
                            if 0 <= w < width:
                                cols[n, row, y * ow + xo] = x[n, c, h, w]
    return cols


@numba.njit(cache=True)
def col2im(dcols, height, width, kh, kw, sh, sw, ph, pw):
    """Adjoint of im2col: cols (N, C*KH*KW, OH*OW) -> dx (N, C, H, W).

    Every patch entry is added back to the input pixel it was copied from;
    entries that came from the padding are dropped.
    """
    n_img = dcols.shape[0]
    n_ch = dcols.shape[1] // (kh * kw)
    oh = (height + 2 * ph - kh) // sh + 1
    ow = (width + 2 * pw - kw) // sw + 1
    dx = np.zeros((n_img, n_ch, height, width), dtype=dcols.dtype)
    for n in range(n_img):
        for c in range(n_ch):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    for y in range(oh):
                        h = y * sh + i - ph
                        if h < 0 or h >= height:
                            continue
                        for xo in range(ow):
                            w = xo * sw + j - pw
                            if 0 <= w < width:
                                dx[n, c, h, w] += dcols[n, row, y * ow + xo]
    return dx


def conv2d_forward(x, weight, bias, stride, padding, direct=False):
    """(out, saved): out (N, F, OH, OW), and saved = cols (N, K, OH*OW), which the backward pass
    needs (or ``Input(x)`` when the direct kernel ran). ``direct=True`` lets it run where
    ``direct_forward_ok`` (see the module docstring); ``Conv2d`` asks for it in eval mode only.

    Same arguments and results as ``scratchcnn.reference.conv2d_forward`` (whose
    ``saved`` is x itself), so ``scratchcnn.ops`` can swap one for the other."""
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    n_img, _, height, width = x.shape
    oh, ow = output_size(height, kh, sh, ph), output_size(width, kw, sw, pw)
    if direct and direct_forward_ok(x, weight, stride, padding):
        return direct_forward(x, weight, bias), Input(x)
    cols = im2col(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw)
    w2 = weight.reshape(weight.shape[0], -1)                      # (F, K)
    out = np.matmul(w2, cols) + bias[:, None]                      # (N, F, OH*OW)
    return out.reshape(n_img, -1, oh, ow), cols


def conv2d_backward(dout, cols, x_shape, weight, stride, padding, input_grad=True):
    """dx (N, C, H, W), dweight (F, C, KH, KW), dbias (F,) from dout (N, F, OH, OW);
    ``cols``: what ``conv2d_forward`` saved. input_grad=False skips dx (returned as
    None): the first layer's input is the image, which training never needs a gradient for.
    """
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    n_img, n_filters = dout.shape[:2]
    if isinstance(cols, Input):                                    # a direct forward ran
        cols = im2col(np.ascontiguousarray(cols.x), kh, kw, sh, sw, ph, pw)
    dout2 = dout.reshape(n_img, n_filters, -1)                    # (N, F, OH*OW)
    w2 = weight.reshape(n_filters, -1)                             # (F, K)
    dweight = np.matmul(dout2, cols.transpose(0, 2, 1)).sum(axis=0)
    dbias = dout2.sum(axis=(0, 2))
    if not input_grad:
        return None, dweight.reshape(weight.shape), dbias
    dcols = np.matmul(w2.T, dout2)                                  # (N, K, OH*OW)
    dx = col2im(dcols, x_shape[2], x_shape[3], kh, kw, sh, sw, ph, pw)
    return dx, dweight.reshape(weight.shape), dbias


def direct_forward_ok(x, weight, stride, padding):
    """Whether ``direct_forward`` can compute this convolution (its kernel does not check:
    numba does not bounds-check, so every assumption is tested here first)."""
    f, _, kh, kw = weight.shape
    return (x.dtype == np.float32 and weight.dtype == np.float32 and x.ndim == 4
            and kh == kw and kh % 2 == 1 and kh <= 7 and tuple(stride) == (1, 1)
            and tuple(padding) == ((kh - 1) // 2,) * 2 and f % fc.COUT == 0
            and x.shape[3] % fc.ROW_BLOCK == 0 and x.shape[2] > 0)


def direct_forward(x, weight, bias):
    """The "same" convolution out (N, F, H, W) of x (N, C, H, W) by ``fused_conv``'s direct
    kernel: x padded into NHWC, the weights as (F/32, K, 32) with rows k = (kh, kw, c)."""
    n_img, c, h, w = x.shape
    f, _, k, _ = weight.shape
    p = (k - 1) // 2
    xp = np.zeros((n_img, h + 2 * p, w + 2 * p, c), np.float32)
    fc.pad_nhwc(np.ascontiguousarray(x), xp)
    groups = f // fc.COUT
    wk = np.ascontiguousarray(weight.reshape(groups, fc.COUT, c, k, k).transpose(0, 3, 4, 2, 1)
                              .reshape(groups, k * k * c, fc.COUT))
    bias = np.ascontiguousarray(bias, np.float32).reshape(groups, fc.COUT)
    out = np.empty((n_img, f, h, w), np.float32)
    fc.conv_forward_nchw(xp, wk, fc.tap_offsets(w, c, k_pad=1, ksize=k), bias, np.empty((n_img, h, w, fc.COUT), np.float32), out)
    return out
