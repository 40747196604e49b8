"""Plain NumPy reference versions of the numba kernels: read these first.

Each function computes exactly what its twin in ``scratchcnn.kernels`` computes,
written for clarity rather than speed; ``tests/test_kernels.py`` checks one
against the other. Arrays are NCHW; see the kernel modules for shape contracts.

The layer-level functions take the same arguments and return the same things
as their kernels, so ``scratchcnn.ops.use_reference()`` (or the environment
variable ``SCRATCHCNN_REFERENCE=1``) runs the whole layer path on them: set a
breakpoint here and step through the real forward and backward.

    im2col / col2im                        scratchcnn.kernels.conv
    conv2d_forward / conv2d_backward       scratchcnn.kernels.conv (by direct summation here)
    max_pool2d_forward / _backward         scratchcnn.kernels.pool
    avg_pool2d_forward / _backward         scratchcnn.kernels.pool
    keep_mask                              scratchcnn.kernels.rng (its NumPy twin lives there)
    sgd_momentum_step                      scratchcnn.kernels.sgd (and fc3's fused pass)
"""
import numpy as np


def _windows(kh, kw, sh, sw, oh, ow):
    """Yield (i, j, rows, cols): kernel offset (i, j) and the slices of the padded
    input it touches, xp[..., i + SH*y, j + SW*x] for all output pixels (y, x)."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i, i + sh * oh, sh), slice(j, j + sw * ow, sw)


def im2col(x, kh, kw, sh, sw, ph, pw):
    """(N, C, H, W) -> cols (N, C*KH*KW, OH*OW), cols[n, (c*KH+i)*KW+j, y*OW+x] = xp[n, c, y*SH+i, x*SW+j]."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i, j, rows, columns in _windows(kh, kw, sh, sw, oh, ow):
        cols[:, :, i, j] = xp[:, :, rows, columns]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(dcols, h, w, kh, kw, sh, sw, ph, pw):
    """Adjoint of im2col: (N, C*KH*KW, OH*OW) -> (N, C, H, W), summing overlapping patches."""
    n = dcols.shape[0]
    c = dcols.shape[1] // (kh * kw)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    dcols = dcols.reshape(n, c, kh, kw, oh, ow)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dcols.dtype)
    for i, j, rows, columns in _windows(kh, kw, sh, sw, oh, ow):
        dxp[:, :, rows, columns] += dcols[:, :, i, j]
    return dxp[:, :, ph:ph + h, pw:pw + w]


def conv2d_forward(x, weight, bias, stride, padding, direct=False):
    """(out, saved): out[n,f,y,x] = bias[f] + sum_{c,i,j} weight[f,c,i,j] * xp[n,c,y*SH+i,x*SW+j],
    by direct summation. ``saved`` is what ``conv2d_backward`` needs: here x itself
    (the kernel saves its im2col patches instead). ``direct`` is the kernel's (ignored here)."""
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    n, _, h, w = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((n, weight.shape[0], oh, ow), dtype=x.dtype)
    for i, j, rows, columns in _windows(kh, kw, sh, sw, oh, ow):
        out += np.einsum("nchw,fc->nfhw", xp[:, :, rows, columns], weight[:, :, i, j])
    return out + bias[None, :, None, None], x


def conv2d_backward(dout, x, x_shape, weight, stride, padding, input_grad=True):
    """dx, dweight, dbias of conv2d_forward (``x``: its ``saved``), each kernel offset (i, j) at a time:

        dweight[f,c,i,j] = sum_{n,y,x} dout[n,f,y,x] * xp[n,c,y*SH+i,x*SW+j]
        dxp[n,c,y*SH+i,x*SW+j] += sum_f dout[n,f,y,x] * weight[f,c,i,j]
        dbias[f] = sum_{n,y,x} dout[n,f,y,x]

    input_grad=False skips dx (returned as None), as the kernel does.
    """
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    h, w = x.shape[2:]
    oh, ow = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)
    dweight = np.zeros_like(weight)
    for i, j, rows, columns in _windows(kh, kw, sh, sw, oh, ow):
        dweight[:, :, i, j] = np.einsum("nfhw,nchw->fc", dout, xp[:, :, rows, columns])
        if input_grad:
            dxp[:, :, rows, columns] += np.einsum("nfhw,fc->nchw", dout, weight[:, :, i, j])
    dx = dxp[:, :, ph:ph + h, pw:pw + w] if input_grad else None
    return dx, dweight, dout.sum(axis=(0, 2, 3))


def max_pool2d_forward(x, kh, kw, sh, sw):
    """out, indices (N, C, OH, OW): the max of each window and where it is (h*W + w).

    Tie rule as PyTorch's CPU kernel: the first maximum in row-major window
    order; a NaN beats any number, and the last NaN in the window wins.
    """
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    # windows[n, c, y, x, k] = k-th element (row-major) of window (y, x)
    windows = np.stack([x[:, :, rows, columns]
                        for _, _, rows, columns in _windows(kh, kw, sh, sw, oh, ow)], axis=-1)
    k = np.argmax(windows, axis=-1)              # first maximum (argmax also stops at the first NaN)
    has_nan = np.isnan(windows)
    last_nan = windows.shape[-1] - 1 - np.argmax(has_nan[..., ::-1], axis=-1)
    k = np.where(has_nan.any(axis=-1), last_nan, k)
    out = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    i, j = k // kw, k % kw
    rows = np.arange(oh)[:, None] * sh + i
    columns = np.arange(ow)[None, :] * sw + j
    return out, (rows * w + columns).astype(np.int64)


def max_pool2d_backward(dout, indices, h, w):
    """dx (N, C, H, W): each dout[n, c, y, x] added to the input pixel indices[n, c, y, x] chose."""
    n, c = dout.shape[:2]
    dx = np.zeros((n, c, h * w), dtype=dout.dtype)
    for plane_dx, plane_idx, plane_dout in zip(dx.reshape(n * c, -1), indices.reshape(n * c, -1),
                                               dout.reshape(n * c, -1)):
        np.add.at(plane_dx, plane_idx, plane_dout)
    return dx.reshape(n, c, h, w)


def avg_pool2d_forward(x, kh, kw, sh, sw):
    """out (N, C, OH, OW): the sum of each KHxKW window (added one kernel offset at a time,
    row-major, as the kernel adds them) divided by KH*KW."""
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = np.zeros((*x.shape[:2], oh, ow), dtype=x.dtype)
    for _, _, rows, columns in _windows(kh, kw, sh, sw, oh, ow):
        out += x[:, :, rows, columns]
    return out / x.dtype.type(kh * kw)


def avg_pool2d_backward(dout, h, w, kh, kw, sh, sw):
    """dx (N, C, H, W): dout / (KH*KW) added to every pixel of its window."""
    oh, ow = dout.shape[2:]
    dx = np.zeros((*dout.shape[:2], h, w), dtype=dout.dtype)
    share = dout / dout.dtype.type(kh * kw)
    for _, _, rows, columns in _windows(kh, kw, sh, sw, oh, ow):
        dx[:, :, rows, columns] += share
    return dx


def sgd_momentum_step(param, grad, buf, lr, momentum, weight_decay, first_step):
    """In place, ``torch.optim.SGD``'s update (no dampening, no Nesterov) of 1-D arrays:

        d      = grad + weight_decay * param          (skipped when weight_decay == 0)
        buf    = d  (first step)  or  momentum * buf + d  (later steps)
        param -= lr * buf                             (momentum == 0: param -= lr * d; buf unused)

    lr, momentum and weight_decay are scalars of the arrays' dtype; each operation rounds once.
    """
    d = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        if first_step:
            buf[...] = d
        else:
            buf *= momentum
            buf += d
        d = buf
    param -= lr * d
