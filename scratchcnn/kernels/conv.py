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
the clear, general path (any kernel size, stride, padding); a fused NHWC fast
path lives elsewhere. The plain NumPy twins are in ``scratchcnn.reference``.
"""
import numba
import numpy as np


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


def conv2d_forward(x, weight, bias, stride, padding):
    """(out, saved): out (N, F, OH, OW), and saved = cols (N, K, OH*OW), which the backward pass needs.

    Same arguments and results as ``scratchcnn.reference.conv2d_forward`` (whose
    ``saved`` is x itself), so ``scratchcnn.ops`` can swap one for the other."""
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    n_img, _, height, width = x.shape
    oh, ow = output_size(height, kh, sh, ph), output_size(width, kw, sw, pw)
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
    dout2 = dout.reshape(n_img, n_filters, -1)                    # (N, F, OH*OW)
    w2 = weight.reshape(n_filters, -1)                             # (F, K)
    dweight = np.matmul(dout2, cols.transpose(0, 2, 1)).sum(axis=0)
    dbias = dout2.sum(axis=(0, 2))
    if not input_grad:
        return None, dweight.reshape(weight.shape), dbias
    dcols = np.matmul(w2.T, dout2)                                  # (N, K, OH*OW)
    dx = col2im(dcols, x_shape[2], x_shape[3], kh, kw, sh, sw, ph, pw)
    return dx, dweight.reshape(weight.shape), dbias
