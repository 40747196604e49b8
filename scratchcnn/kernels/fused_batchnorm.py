"""The fast path's BatchNorm2d over channels-last activations (what ``layers.BatchNorm2d`` computes).

With y the convolution's output (N, H, W, C), NHWC, and M = N*H*W values per channel:

    mean[c] = 1/M sum y[..., c]       var[c] = 1/M sum (y[..., c] - mean[c])^2   (biased)
    rstd    = 1 / sqrt(var + eps)     xhat   = (y - mean) * rstd
    z       = gamma * xhat + beta                                   (bn_forward_nhwc)

    backward, from dz = dL/dz:
    dL/dbeta = sum dz                 dL/dgamma = sum dz * xhat        (bn_backward_sums)
    dL/dy    = gamma * rstd / M * (M * dz - sum dz - xhat * sum(dz * xhat))   (bn_backward_apply)
    eval mode (running statistics stand in for mean and var): dL/dy = dz * gamma * rstd

The per-channel sums accumulate in float64, in one slice of rows per thread
(``partial``, then added in a fixed order): a float32 running sum over the 32,768
values of a channel at batch 32 would lose about 3 digits. Elementwise formulas
are the layer's, in its order, in float32; ``xhat`` is recomputed from y in the
backward, never stored. The ReLU, dropout and pooling after a BatchNorm are the
kernels of ``fused_elementwise``, run on z. The NumPy twins (``*_reference``) state
the same in a few lines each.

Shapes: y, z (N, H, W, C) float32; g (N, H+2P, W+2P, C), a gradient padded by P for
the convolution's backward (P = 0: unpadded; only the interior is read and written);
mean, rstd, gamma, beta (C,) float32; partial (T, C) float64 with T >= 1 slices.
"""
import numba
import numpy as np
from numba import prange


@numba.njit(cache=True, parallel=True)
def channel_sums(y, shift, partial, square):
    """partial[t, c] = sum over slice t of the rows of (y[..., c] - shift[c]), squared if ``square``.
    Returns partial.sum(0) (float64, a fixed order). shift = 0: plain sums; shift = mean: the
    variance's numerator."""
    n_img, h, w_in, c_in = y.shape
    rows, slices = n_img * h, partial.shape[0]
    for t in prange(slices):
        acc = np.zeros(c_in, np.float64)
        for r in range(t * rows // slices, (t + 1) * rows // slices):
            n = r // h
            yy = r - n * h
            for w in range(w_in):
                for c in range(c_in):
                    d = np.float64(y[n, yy, w, c]) - shift[c]
                    acc[c] += d * d if square else d
        partial[t, :] = acc
    return partial.sum(axis=0)


def batch_stats(y, partial):
    """(mean, var) of each channel of y in float64 (two passes: the mean, then squared deviations)."""
    m = y.shape[0] * y.shape[1] * y.shape[2]
    mean = channel_sums(y, np.zeros(y.shape[3]), partial, False) / m
    return mean, channel_sums(y, mean, partial, True) / m


@numba.njit(cache=True, parallel=True)
def bn_forward_nhwc(y, mean, rstd, gamma, beta, z):
    """z = (y - mean) * rstd * gamma + beta, per channel (the layer's float32 operations in its order)."""
    n_img, h, w_in, c_in = y.shape
    for r in prange(n_img * h):
        n = r // h
        yy = r - n * h
        for w in range(w_in):
            for c in range(c_in):
                z[n, yy, w, c] = (y[n, yy, w, c] - mean[c]) * rstd[c] * gamma[c] + beta[c]


@numba.njit(cache=True, parallel=True)
def bn_backward_sums(g, y, mean, rstd, partial):
    """(sum dz, sum dz * xhat) per channel, float64, with dz = g's interior and xhat recomputed from y."""
    n_img, h, w_in, c_in = y.shape
    pad = (g.shape[1] - h) // 2
    rows, slices = n_img * h, partial.shape[0]
    sum_dz = np.zeros((slices, c_in), np.float64)
    for t in prange(slices):
        acc_dz = np.zeros(c_in, np.float64)
        acc_dzx = np.zeros(c_in, np.float64)
        for r in range(t * rows // slices, (t + 1) * rows // slices):
            n = r // h
            yy = r - n * h
            for w in range(w_in):
                for c in range(c_in):
                    dz = g[n, yy + pad, w + pad, c]
                    xhat = (y[n, yy, w, c] - mean[c]) * rstd[c]
                    acc_dz[c] += dz
                    acc_dzx[c] += np.float64(dz) * np.float64(xhat)
        sum_dz[t, :] = acc_dz
        partial[t, :] = acc_dzx
    return sum_dz.sum(axis=0), partial.sum(axis=0)


@numba.njit(cache=True, parallel=True)
def bn_backward_apply(g, y, mean, rstd, gamma, sum_dz, sum_dzx, training):
    """g's interior, dz, becomes dL/dy in place: in training
    gamma * rstd / M * (M * dz - sum_dz - xhat * sum_dzx), in eval dz * (gamma * rstd)."""
    n_img, h, w_in, c_in = y.shape
    pad = (g.shape[1] - h) // 2
    m = np.float32(n_img * h * w_in)
    for r in prange(n_img * h):
        n = r // h
        yy = r - n * h
        for w in range(w_in):
            for c in range(c_in):
                scale = gamma[c] * rstd[c]
                dz = g[n, yy + pad, w + pad, c]
                if training:
                    xhat = (y[n, yy, w, c] - mean[c]) * rstd[c]
                    g[n, yy + pad, w + pad, c] = scale / m * (m * dz - sum_dz[c] - xhat * sum_dzx[c])
                else:
                    g[n, yy + pad, w + pad, c] = dz * scale


# ------------------------------------------------------------------ NumPy twins

def bn_forward_reference(y, mean, rstd, gamma, beta):
    return (y - mean) * rstd * gamma + beta


def bn_backward_reference(dz, y, mean, rstd, gamma, training=True):
    """(dL/dy, dL/dgamma, dL/dbeta) for unpadded dz, in float64 sums."""
    xhat = (y - mean) * rstd
    sum_dz = dz.sum(axis=(0, 1, 2), dtype=np.float64)
    sum_dzx = (dz.astype(np.float64) * xhat).sum(axis=(0, 1, 2))
    scale = gamma * rstd
    if not training:
        return dz * scale, sum_dzx, sum_dz
    m = np.float32(dz.shape[0] * dz.shape[1] * dz.shape[2])
    dy = scale / m * (m * dz - sum_dz.astype(np.float32) - xhat * sum_dzx.astype(np.float32))
    return dy, sum_dzx, sum_dz
