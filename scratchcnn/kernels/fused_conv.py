"""Direct convolution kernels in NHWC, register-blocked (the fused path's hot loops).

Written for 3x3 (hence the names and the pictures below), they run any square
kernel of odd size K with "same" padding P = (K-1)/2: the tap offsets ``koff``
(``tap_offsets(..., ksize=K)``) carry the kernel's shape, the input is padded
by P, and every kernel reads the output size from ``out`` (the weight gradient
takes ``ksize``). ``fused.SUPPORTED`` lets K be 1, 3, 5 or 7.

Layout (all float32, C-contiguous):

    xp   (N, H+2, W+2, C)   input, zero-padded by 1 pixel on each side, channels last
    wk   (K, 32)            weights as rows k = (kh, kw, c) -> 32 output channels,
                            i.e. torch's weight (32, C, 3, 3) transposed to (3, 3, C, 32)
    koff (K,) int64         koff[k] = kh*(W+2)*C + kw*C + c: where tap k sits in xp,
                            relative to the top-left corner of a pixel's 3x3 window
    out  (N, H, W, 32)      output, channels last

With these, one output pixel is a K-long dot product per output channel:

    out[n,h,w,:] = bias + sum_k xp_flat[corner(n,h,w) + koff[k]] * wk[k, :]
    corner(n,h,w) = ((n*(H+2) + h)*(W+2) + w)*C

``conv3x3_forward`` computes 8 neighbouring pixels x 32 output channels at a
time: 16 vector accumulators (8 pixels x 2 vectors of 16 channels) stay in
registers for the whole K loop; each step loads 2 weight vectors and
broadcasts 8 input values, then does 16 fused multiply-adds: a register-blocked
direct convolution, with no im2col buffer. (Measured on the AMD EPYC Zen 5,
conv2 forward ran at about 345 GFLOP/s this way, against 215-250 for im2col +
OpenBLAS with its AVX-512 kernels; blocking 16 pixels spilled registers and was
20x slower.)

Without AVX-512 (AVX2: 16 ymm registers of 8 floats) those 16 accumulators are
32 ymm registers and spill, so there the kernels take 2 pixels (forward) or 2
taps (weight gradient) per block instead: ``conv3x3_row`` and ``wgrad_block``
are chosen once per CPU (``fused_simd.AVX512``). Same sums in the same order,
so the same bits (``tests/test_fused.py`` runs both blocks on every CPU).
Measured on 2 vCPUs of an AMD EPYC Zen 3 (AVX2), conv2's forward at batch 32:
8.4 ms (72 GFLOP/s) with 8-pixel blocks, 4.8 ms (127 GFLOP/s) with 2-pixel
blocks (OpenBLAS's sgemm reaches 149 GFLOP/s there); the fused training step
went from 51.8 to 32.7 ms.

The same kernel computes dL/dinput of a stride-1, pad-1 3x3 conv ("backward
data"): feed it dL/dout zero-padded, and the weights rotated by 180 degrees
with input/output channels swapped (``rotated_weights``):

    dL/dx[n,h,w,c] = sum_{kh,kw,f} dout_p[n,h+kh,w+kw,f] * weight[f,c,2-kh,2-kw]

``conv3x3_weight_grad`` computes dL/dweight and dL/dbias:

    dW[k, f] = sum_{n,h,w} xp_flat[corner(n,h,w) + koff[k]] * g[n,h,w,f]
    db[f]    = sum_{n,h,w} g[n,h,w,f]

blocked as 8 taps x 32 channels of accumulators, swept along an image row.
Each thread sums its share of the rows into its own slice of ``partial``;
the caller adds the slices (a deterministic order, so results do not depend
on timing).

The NumPy twins (``*_reference``) say the same thing in a few lines each.

No fastmath: with explicit vectors and ``vfma`` the kernels need none to
vectorise, and the epilogues inlined here compare values (ReLU, max-pool),
which LLVM's ``nnan``/``ninf`` flags would let it do as if NaN did not exist.
Measured on 2 vCPUs of an AMD EPYC (training step at batch 32, 2 threads,
each stage's minimum over 60 steps, old and new code interleaved): 9.7-10.0 ms
with fastmath, 9.2-9.8 ms without; conv2's forward stage 1.42 vs 1.46 ms.

Caching: numba's on-disk cache is keyed on THIS file's text only, and the
kernels with epilogues inline helpers from ``fused_elementwise``, ``fused_simd``
and ``rng``. ``DEPENDS_SHA256`` below is those files' fingerprint: a test fails
when it is out of date, so an edit of a helper is an edit of this file too, and
the cached kernels recompile.
"""
import functools

import numba
import numpy as np
from numba import prange, uint64

from scratchcnn.kernels.fused_elementwise import (dropout_relu_backward_row, relu_avgpool2_row,
                                                  relu_dropout_pad_row, relu_maxpool2_row)
from scratchcnn.kernels.fused_simd import AVX512, vadd, vbcast_at, vfma, vload, vstore, vzero
from scratchcnn.kernels.rng import stream_key

# numba caches this file's kernels by ITS text; they compile in code from fused_elementwise, fused_simd, rng.
# That code's fingerprint (scratchcnn.kernels.fingerprint; tests/test_kernels.py checks it)
# makes an edit there an edit here, so the cached kernels recompile.
DEPENDS_SHA256 = "571f43754af20728"

COUT = 32       # output channels per kernel call (two 16-lane vectors)
PIX = 8         # output pixels per register block


@functools.lru_cache(maxsize=64)
def tap_offsets(width, channels, k_pad=8, ksize=3):
    """koff for a ksize x ksize window over an NHWC image of the given width padded by
    (ksize - 1) / 2 ("same" padding); padded with zeros to a multiple of ``k_pad`` (the
    extra taps get zero weights). Computed once per shape: callers share the array and
    only read it."""
    wp = width + ksize - 1
    offs = [kh * wp * channels + kw * channels + c
            for kh in range(ksize) for kw in range(ksize) for c in range(channels)]
    offs += [0] * (-len(offs) % k_pad)
    return np.array(offs, dtype=np.int64)


def pack_weights(weight, k_total):
    """torch layout (32, C, K, K) -> wk (k_total, 32): rows (kh, kw, c), zero rows after K*K*C."""
    f, c, kh, kw = weight.shape
    wk = np.zeros((k_total, f), np.float32)
    wk[:kh * kw * c] = weight.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)
    return wk


def rotated_weights(weight):
    """Weights of the backward-data conv: rot[c, f, i, j] = weight[f, c, 2-i, 2-j] (torch layout)."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def unpack_weight_grad(dwk, channels, ksize=3):
    """dwk (K, 32) rows (kh, kw, c) -> torch layout (32, C, ksize, ksize)."""
    return dwk[:ksize * ksize * channels].reshape(ksize, ksize, channels, -1).transpose(3, 2, 0, 1)


@numba.njit(inline="always")
def _fma2(xf, i, wl, wh, al, ah):
    """(al, ah) += xf[i] * (wl, wh): one input value times 32 weights."""
    xb = vbcast_at(xf, i)
    return vfma(xb, wl, al), vfma(xb, wh, ah)


@numba.njit(inline="always")
def conv3x3_row_8px(xp, wk, koff, bias, out, r):
    """Output row r = n*H + h of conv3x3_forward (all W pixels, 32 channels), 8 pixels at a time
    (16 accumulators: AVX-512's zmm registers)."""
    n_img, hp, wp, c = xp.shape
    h_out, w_out = out.shape[1], out.shape[2]       # the input is padded by (hp - h_out) / 2
    k_taps = koff.shape[0]
    xf = xp.reshape(-1)
    wf = wk.reshape(-1)
    of = out.reshape(-1)
    b_lo = vload(bias, 0)
    b_hi = vload(bias, 16)
    n = r // h_out
    h = r - n * h_out
    x_row = (n * hp + h) * wp * c
    o_row = r * w_out * COUT
    for w0 in range(0, w_out, PIX):
        a0l = b_lo; a0h = b_hi; a1l = b_lo; a1h = b_hi
        a2l = b_lo; a2h = b_hi; a3l = b_lo; a3h = b_hi
        a4l = b_lo; a4h = b_hi; a5l = b_lo; a5h = b_hi
        a6l = b_lo; a6h = b_hi; a7l = b_lo; a7h = b_hi
        base = x_row + w0 * c
        for k in range(k_taps):
            o = base + koff[k]
            wl = vload(wf, k * COUT)
            wh = vload(wf, k * COUT + 16)
            a0l, a0h = _fma2(xf, o, wl, wh, a0l, a0h)
            a1l, a1h = _fma2(xf, o + c, wl, wh, a1l, a1h)
            a2l, a2h = _fma2(xf, o + 2 * c, wl, wh, a2l, a2h)
            a3l, a3h = _fma2(xf, o + 3 * c, wl, wh, a3l, a3h)
            a4l, a4h = _fma2(xf, o + 4 * c, wl, wh, a4l, a4h)
            a5l, a5h = _fma2(xf, o + 5 * c, wl, wh, a5l, a5h)
            a6l, a6h = _fma2(xf, o + 6 * c, wl, wh, a6l, a6h)
            a7l, a7h = _fma2(xf, o + 7 * c, wl, wh, a7l, a7h)
        q = o_row + w0 * COUT
        vstore(of, q, a0l); vstore(of, q + 16, a0h)
        vstore(of, q + 32, a1l); vstore(of, q + 48, a1h)
        vstore(of, q + 64, a2l); vstore(of, q + 80, a2h)
        vstore(of, q + 96, a3l); vstore(of, q + 112, a3h)
        vstore(of, q + 128, a4l); vstore(of, q + 144, a4h)
        vstore(of, q + 160, a5l); vstore(of, q + 176, a5h)
        vstore(of, q + 192, a6l); vstore(of, q + 208, a6h)
        vstore(of, q + 224, a7l); vstore(of, q + 240, a7h)


@numba.njit(inline="always")
def conv3x3_row_2px(xp, wk, koff, bias, out, r):
    """``conv3x3_row_8px`` 2 pixels at a time, for CPUs without AVX-512: 4 accumulators of 16
    floats are 8 ymm registers, plus 4 for the weights and 1 for the broadcast input (of 16)."""
    n_img, hp, wp, c = xp.shape
    h_out, w_out = out.shape[1], out.shape[2]
    k_taps = koff.shape[0]
    xf = xp.reshape(-1)
    wf = wk.reshape(-1)
    of = out.reshape(-1)
    b_lo = vload(bias, 0)
    b_hi = vload(bias, 16)
    n = r // h_out
    h = r - n * h_out
    x_row = (n * hp + h) * wp * c
    o_row = r * w_out * COUT
    for w0 in range(0, w_out, 2):
        a0l = b_lo; a0h = b_hi; a1l = b_lo; a1h = b_hi
        base = x_row + w0 * c
        for k in range(k_taps):
            o = base + koff[k]
            wl = vload(wf, k * COUT)
            wh = vload(wf, k * COUT + 16)
            a0l, a0h = _fma2(xf, o, wl, wh, a0l, a0h)
            a1l, a1h = _fma2(xf, o + c, wl, wh, a1l, a1h)
        q = o_row + w0 * COUT
        vstore(of, q, a0l); vstore(of, q + 16, a0h)
        vstore(of, q + 32, a1l); vstore(of, q + 48, a1h)


# The block that fits the CPU's registers (the same sums in the same order either way, so the
# same bits): 8 pixels with AVX-512, 2 without. Measured on an AMD EPYC Zen 3 (AVX2, no AVX-512),
# see the module docstring.
conv3x3_row = conv3x3_row_8px if AVX512 else conv3x3_row_2px


@numba.njit(cache=True, parallel=True)
def conv3x3_forward(xp, wk, koff, bias, out):
    """out (N,H,W,32) = 3x3 conv of padded NHWC xp (N,H+2,W+2,C) with wk (K,32) + bias (32,).

    Requires W % 8 == 0 and K == koff.size == wk.shape[0].
    """
    rows = out.shape[0] * out.shape[1]
    for r in prange(rows):
        conv3x3_row(xp, wk, koff, bias, out, r)


# Convolutions with their elementwise epilogue in the same parallel loop: each
# task finishes its rows while they are still in cache, and the step has fewer
# parallel regions (each one is a fork/join of the thread pool).

@numba.njit(cache=True, parallel=True)
def conv3x3_forward_relu_dropout_pad(xp, wk, koff, bias, out, outp, seed, counter, p, scale):
    """conv3x3_forward into out, then fused_elementwise.relu_dropout_pad_nhwc(out, outp, ...)."""
    n_img, h_out = xp.shape[0], out.shape[1]
    key = stream_key(seed, counter)
    pf = np.float32(p)
    for r in prange(n_img * h_out):
        conv3x3_row(xp, wk, koff, bias, out, r)
        n = r // h_out
        relu_dropout_pad_row(out, outp, n, r - n * h_out, key, pf, scale)


@numba.njit(cache=True, parallel=True)
def conv3x3_forward_relu_pool2(xp, wk, koff, bias, out, flat, arg, average):
    """conv3x3_forward into out, then fused_elementwise.relu_avgpool2_nhwc(out, flat) when
    ``average``, else relu_maxpool2_nhwc(out, flat, arg). A task computes the two conv rows
    a pooled row needs and pools them while they are in cache."""
    n_img, h_out = xp.shape[0], out.shape[1]
    ho = h_out // 2
    for r in prange(n_img * ho):
        n = r // ho
        y = r - n * ho
        conv3x3_row(xp, wk, koff, bias, out, n * h_out + 2 * y)
        conv3x3_row(xp, wk, koff, bias, out, n * h_out + 2 * y + 1)
        if average:
            relu_avgpool2_row(out, flat, n, y)
        else:
            relu_maxpool2_row(out, flat, arg, n, y)


@numba.njit(cache=True, parallel=True)
def conv3x3_forward_dropout_relu_backward(gp, wk, koff, bias, out, outp, scale, da):
    """conv3x3_forward into out (the backward-data conv), then
    fused_elementwise.dropout_relu_backward_nhwc(out, outp, scale, da)."""
    n_img, h_out = gp.shape[0], out.shape[1]
    for r in prange(n_img * h_out):
        conv3x3_row(gp, wk, koff, bias, out, r)
        n = r // h_out
        dropout_relu_backward_row(out, outp, scale, da, n, r - n * h_out)


@numba.njit(inline="always")
def _wgrad_block_8taps(pf, xf, gf, koff, k0, x_row, g_row, c, w_out):
    """dW rows k0..k0+7 (x 32 channels) += this image row's products: 16 accumulators (AVX-512)."""
    q = k0 * COUT
    a0l = vload(pf, q); a0h = vload(pf, q + 16)
    a1l = vload(pf, q + 32); a1h = vload(pf, q + 48)
    a2l = vload(pf, q + 64); a2h = vload(pf, q + 80)
    a3l = vload(pf, q + 96); a3h = vload(pf, q + 112)
    a4l = vload(pf, q + 128); a4h = vload(pf, q + 144)
    a5l = vload(pf, q + 160); a5h = vload(pf, q + 176)
    a6l = vload(pf, q + 192); a6h = vload(pf, q + 208)
    a7l = vload(pf, q + 224); a7h = vload(pf, q + 240)
    o0 = koff[k0]; o1 = koff[k0 + 1]; o2 = koff[k0 + 2]; o3 = koff[k0 + 3]
    o4 = koff[k0 + 4]; o5 = koff[k0 + 5]; o6 = koff[k0 + 6]; o7 = koff[k0 + 7]
    for w in range(w_out):
        gl = vload(gf, g_row + w * COUT)
        gh = vload(gf, g_row + w * COUT + 16)
        xb = x_row + w * c
        a0l, a0h = _fma2(xf, xb + o0, gl, gh, a0l, a0h)
        a1l, a1h = _fma2(xf, xb + o1, gl, gh, a1l, a1h)
        a2l, a2h = _fma2(xf, xb + o2, gl, gh, a2l, a2h)
        a3l, a3h = _fma2(xf, xb + o3, gl, gh, a3l, a3h)
        a4l, a4h = _fma2(xf, xb + o4, gl, gh, a4l, a4h)
        a5l, a5h = _fma2(xf, xb + o5, gl, gh, a5l, a5h)
        a6l, a6h = _fma2(xf, xb + o6, gl, gh, a6l, a6h)
        a7l, a7h = _fma2(xf, xb + o7, gl, gh, a7l, a7h)
    vstore(pf, q, a0l); vstore(pf, q + 16, a0h)
    vstore(pf, q + 32, a1l); vstore(pf, q + 48, a1h)
    vstore(pf, q + 64, a2l); vstore(pf, q + 80, a2h)
    vstore(pf, q + 96, a3l); vstore(pf, q + 112, a3h)
    vstore(pf, q + 128, a4l); vstore(pf, q + 144, a4h)
    vstore(pf, q + 160, a5l); vstore(pf, q + 176, a5h)
    vstore(pf, q + 192, a6l); vstore(pf, q + 208, a6h)
    vstore(pf, q + 224, a7l); vstore(pf, q + 240, a7h)


@numba.njit(inline="always")
def _wgrad_block_2taps(pf, xf, gf, koff, k0, x_row, g_row, c, w_out):
    """``_wgrad_block_8taps`` for 2 taps, for CPUs without AVX-512 (8 ymm accumulators)."""
    q = k0 * COUT
    a0l = vload(pf, q); a0h = vload(pf, q + 16)
    a1l = vload(pf, q + 32); a1h = vload(pf, q + 48)
    o0 = koff[k0]; o1 = koff[k0 + 1]
    for w in range(w_out):
        gl = vload(gf, g_row + w * COUT)
        gh = vload(gf, g_row + w * COUT + 16)
        xb = x_row + w * c
        a0l, a0h = _fma2(xf, xb + o0, gl, gh, a0l, a0h)
        a1l, a1h = _fma2(xf, xb + o1, gl, gh, a1l, a1h)
    vstore(pf, q, a0l); vstore(pf, q + 16, a0h)
    vstore(pf, q + 32, a1l); vstore(pf, q + 48, a1h)


# taps per block of the weight gradient, as for conv3x3_row: the block that fits the registers
WGRAD_TAPS = 8 if AVX512 else 2
wgrad_block = _wgrad_block_8taps if AVX512 else _wgrad_block_2taps


@numba.njit(cache=True, parallel=True)
def conv3x3_weight_grad(xp, g, koff, partial, partial_b, ksize=3):
    """Per-thread sums of dW (K,32) and db (32,) into partial (T,K,32), partial_b (T,32).

    xp (N,H+2P,W+2P,C) input padded by P = (ksize-1)/2; g (N,H+2p,W+2p,32) dL/dout, padded
    by p = 0 or P (only its interior is read). K = koff.size must be a multiple of 8.
    ``partial`` and ``partial_b`` are overwritten; the answer is their sum over axis 0.
    """
    n_img, hp, wp, c = xp.shape
    h_out, w_out = hp - ksize + 1, wp - ksize + 1
    gpad = (g.shape[1] - h_out) // 2
    ghp, gwp = g.shape[1], g.shape[2]
    k_taps = koff.shape[0]
    n_chunks = partial.shape[0]
    rows = n_img * h_out
    xf = xp.reshape(-1)
    gf = g.reshape(-1)
    for t in prange(n_chunks):
        pf = partial[t].reshape(-1)
        pb = partial_b[t]
        pf[:] = 0
        b_lo = vzero()
        b_hi = vzero()
        for r in range(t * rows // n_chunks, (t + 1) * rows // n_chunks):
            n = r // h_out
            h = r - n * h_out
            x_row = (n * hp + h) * wp * c
            g_row = ((n * ghp + h + gpad) * gwp + gpad) * COUT
            for w in range(w_out):
                b_lo = vadd(b_lo, vload(gf, g_row + w * COUT))
                b_hi = vadd(b_hi, vload(gf, g_row + w * COUT + 16))
            for k0 in range(0, k_taps, WGRAD_TAPS):
                wgrad_block(pf, xf, gf, koff, k0, x_row, g_row, c, w_out)
        vstore(pb, 0, b_lo)
        vstore(pb, 16, b_hi)


# ------------------------------------------- the layer path's forward, any "same" conv
# ``kernels.conv.conv2d_forward`` runs a Conv2d layer through the kernel above whenever its
# shapes allow (float32, stride 1, an odd square kernel <= 7 with "same" padding, output
# channels a multiple of 32): NCHW in and out like every layer, NHWC inside. Measured on 2 vCPUs
# of an AMD EPYC Zen 3, 250 images through vgg's second convolution (32 -> 32 channels, 32x32):
# im2col + BLAS 248-562 ms, this 50-60 ms with both copies (``benchmarks.inference``).

@numba.njit(cache=True, parallel=True)
def pad_nhwc(x, xp):
    """xp (N, H+2P, W+2P, C) = x (N, C, H, W) moved to channels last inside a border of P
    pixels, which this leaves as it is (zeros: the caller allocates xp with np.zeros)."""
    n_img, c, h, w = x.shape
    p = (xp.shape[1] - h) // 2
    wp = xp.shape[2]
    xf = x.reshape(-1)
    pf = xp.reshape(-1)
    for r in prange(n_img * h):
        n = r // h
        y = r - n * h
        src = (n * c * h + y) * w                       # x[n, 0, y, 0]
        dst = ((n * xp.shape[1] + y + p) * wp + p) * c  # xp[n, y + p, p, 0]
        for ch in range(c):
            for i in range(w):
                pf[uint64(dst + i * c + ch)] = xf[uint64(src + ch * h * w + i)]   # uint64: no wraparound test


@numba.njit(cache=True, parallel=True)
def conv_forward_nchw(xp, wk, koff, bias, tmp, out):
    """out (N, 32 G, H, W) NCHW = the convolution of padded NHWC xp (N, H+2P, W+2P, C) with
    wk (G, K, 32) and bias (G, 32), 32 output channels (one group g) at a time: each row of the
    group goes through ``conv3x3_row`` into tmp (N, H, W, 32), then to out's channels 32g..32g+31
    while it is still in cache. Requires W % (8 with AVX-512, else 2) == 0 (``ROW_BLOCK``)."""
    n_img, h_out, w_out = tmp.shape[0], tmp.shape[1], tmp.shape[2]
    f_out = out.shape[1]
    tf = tmp.reshape(-1)
    of = out.reshape(-1)
    for g in range(wk.shape[0]):
        for r in prange(n_img * h_out):
            conv3x3_row(xp, wk[g], koff, bias[g], tmp, r)
            n = r // h_out
            h = r - n * h_out
            src = r * w_out * COUT                                  # tmp[n, h, 0, 0]
            dst = ((n * f_out + g * COUT) * h_out + h) * w_out      # out[n, 32 g, h, 0]
            for f in range(COUT):
                for i in range(w_out):
                    of[uint64(dst + f * h_out * w_out + i)] = tf[uint64(src + i * COUT + f)]


ROW_BLOCK = 8 if AVX512 else 2          # conv3x3_row's pixels per block: the width must be a multiple


# ---------------------------------------------------------------- NumPy twins

def conv3x3_forward_reference(xp, wk, koff, bias, ksize=3):
    """out[n,h,w,:] = bias + sum_k xp_flat[corner(n,h,w) + koff[k]] * wk[k,:] (see module doc)."""
    n_img, hp, wp, c = xp.shape
    h_out, w_out = hp - ksize + 1, wp - ksize + 1
    out = np.empty((n_img, h_out, w_out, wk.shape[1]), np.float32)
    xf = xp.reshape(-1)
    corners = (((np.arange(n_img)[:, None, None] * hp + np.arange(h_out)[None, :, None]) * wp
                + np.arange(w_out)[None, None, :]) * c)                      # (N, H, W)
    cols = xf[corners[..., None] + koff]                                      # (N, H, W, K)
    out[...] = cols @ wk + bias
    return out


def conv3x3_weight_grad_reference(xp, g, koff, ksize=3):
    """(dW (K,32), db (32,)): dW[k,f] = sum_{n,h,w} xp_flat[corner + koff[k]] * g[n,h,w,f]."""
    n_img, hp, wp, c = xp.shape
    h_out, w_out = hp - ksize + 1, wp - ksize + 1
    p = (g.shape[1] - h_out) // 2
    g = g[:, p:p + h_out, p:p + w_out, :].reshape(-1, g.shape[3]).astype(np.float64)
    xf = xp.reshape(-1)
    corners = (((np.arange(n_img)[:, None, None] * hp + np.arange(h_out)[None, :, None]) * wp
                + np.arange(w_out)[None, None, :]) * c).reshape(-1)
    cols = xf[corners[:, None] + koff].astype(np.float64)                     # (NHW, K)
    return (cols.T @ g).astype(np.float32), g.sum(0).astype(np.float32)
