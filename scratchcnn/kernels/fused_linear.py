"""fc3's three matrix products as numba kernels (instead of BLAS), for the fused path.

Shapes (float32, C-contiguous): x (N, K) the flattened features, w (J, K) the
weight in torch's layout, b (J,), g (N, J) = dL/dout.

    linear_forward:      out[n, j]  = b[j] + sum_k x[n, k] * w[j, k]
    linear_grad_input:   dx[n, k]   = sum_j g[n, j] * w[j, k]
    linear_grad_weight:  dw[j, k]   = sum_n g[n, j] * x[n, k]

Why not NumPy's BLAS: it runs its own thread pool next to numba's OpenMP
pool, and on a 2-core machine the two pools fight (threads spin waiting
while the other pool needs the core); with all the work in numba's pool the
step has one set of threads. The kernels are register-blocked like the
convolutions (16 vector accumulators):

* forward: 4 rows of w x 4 rows of x, dot products along k in 16-lane
  vectors, summed across lanes at the end (``vsum``);
* grad_input: 8 rows of w x 32 columns held in registers, added into every
  row of dx (w read front to back once);
* grad_weight: 8 rows of dw x 32 columns; per n, 2 vectors of x[n, :] times
  8 broadcast values of g.

The two gradient kernels take their (N, .) operands in PANELS (``to_panels``):
a (N, C) matrix cut into C/width column strips, each strip stored as its own
contiguous (N, width) block, i.e. an array (C/width, N, width) with

    panels[c // width, n, c % width] = a[n, c]

g in panels of 8 (the 8 rows of w a block uses), x and dx in panels of 32
(the 32 columns a block holds in registers). The kernels' inner loops run
over n; on plain (N, C) rows those reads are C*4 bytes apart (32 KB for x),
all in the same L1 set, so every one came from L2; in a panel they are one
contiguous 4 KB run. Same sums in the same order, so the same bits as the
row-major kernels, and fc3's backward stage of the step (batch 32, packing
included: ``to_panels``/``from_panels``, parallel copies of 1 MB, ~0.15 ms)
went from 8.5-8.8 to 6.9 ms at 2 threads, 19-19.5 to 12.7-14 ms at 1.
(Also computing dx inside the dw/SGD pass, to read w once instead of twice,
measured no faster: the stage is bound by L1/L2 traffic, not by DRAM.)

Rows of x beyond N are never read: a block at the end repeats the last row
(and writes the same value twice). Requires K % 1024 == 0 and J % 8 == 0.
The NumPy twins are the one-line formulas above (``*_reference``) and
``to_panels_reference``.
"""
import numba
import numpy as np
from numba import prange

from scratchcnn.kernels.fused_simd import vadd, vbcast, vbcast_at, vfma, vload, vstore, vsum, vzero
from scratchcnn.kernels.sgd import sgd_update

# numba caches this file's kernels by ITS text; they compile in code from fused_simd, sgd.
# That code's fingerprint (scratchcnn.kernels.fingerprint; tests/test_kernels.py checks it)
# makes an edit there an edit here, so the cached kernels recompile.
DEPENDS_SHA256 = "cb0a402cfcf00ae0"


@numba.njit(cache=True, parallel=True)
def linear_forward(x, w, b, out):
    """out (N, J) = x (N, K) @ w (J, K).T + b (J,)."""
    n_rows, k_len = x.shape
    j_len = w.shape[0]
    xf = x.reshape(-1)
    wf = w.reshape(-1)
    for jb in prange(j_len // 4):
        j0 = jb * 4
        for n0 in range(0, n_rows, 4):
            r0 = min(n0, n_rows - 1) * k_len
            r1 = min(n0 + 1, n_rows - 1) * k_len
            r2 = min(n0 + 2, n_rows - 1) * k_len
            r3 = min(n0 + 3, n_rows - 1) * k_len
            a00 = vzero(); a01 = vzero(); a02 = vzero(); a03 = vzero()
            a10 = vzero(); a11 = vzero(); a12 = vzero(); a13 = vzero()
            a20 = vzero(); a21 = vzero(); a22 = vzero(); a23 = vzero()
            a30 = vzero(); a31 = vzero(); a32 = vzero(); a33 = vzero()
            w0 = j0 * k_len
            for k in range(0, k_len, 16):
                v0 = vload(wf, w0 + k)
                v1 = vload(wf, w0 + k_len + k)
                v2 = vload(wf, w0 + 2 * k_len + k)
                v3 = vload(wf, w0 + 3 * k_len + k)
                u = vload(xf, r0 + k)
                a00 = vfma(u, v0, a00); a01 = vfma(u, v1, a01); a02 = vfma(u, v2, a02); a03 = vfma(u, v3, a03)
                u = vload(xf, r1 + k)
                a10 = vfma(u, v0, a10); a11 = vfma(u, v1, a11); a12 = vfma(u, v2, a12); a13 = vfma(u, v3, a13)
                u = vload(xf, r2 + k)
                a20 = vfma(u, v0, a20); a21 = vfma(u, v1, a21); a22 = vfma(u, v2, a22); a23 = vfma(u, v3, a23)
                u = vload(xf, r3 + k)
                a30 = vfma(u, v0, a30); a31 = vfma(u, v1, a31); a32 = vfma(u, v2, a32); a33 = vfma(u, v3, a33)
            n3 = min(n0 + 3, n_rows - 1)
            n2 = min(n0 + 2, n_rows - 1)
            n1 = min(n0 + 1, n_rows - 1)
            out[n0, j0] = b[j0] + vsum(a00); out[n0, j0 + 1] = b[j0 + 1] + vsum(a01)
            out[n0, j0 + 2] = b[j0 + 2] + vsum(a02); out[n0, j0 + 3] = b[j0 + 3] + vsum(a03)
            out[n1, j0] = b[j0] + vsum(a10); out[n1, j0 + 1] = b[j0 + 1] + vsum(a11)
            out[n1, j0 + 2] = b[j0 + 2] + vsum(a12); out[n1, j0 + 3] = b[j0 + 3] + vsum(a13)
            out[n2, j0] = b[j0] + vsum(a20); out[n2, j0 + 1] = b[j0 + 1] + vsum(a21)
            out[n2, j0 + 2] = b[j0 + 2] + vsum(a22); out[n2, j0 + 3] = b[j0 + 3] + vsum(a23)
            out[n3, j0] = b[j0] + vsum(a30); out[n3, j0 + 1] = b[j0 + 1] + vsum(a31)
            out[n3, j0 + 2] = b[j0 + 2] + vsum(a32); out[n3, j0 + 3] = b[j0 + 3] + vsum(a33)


@numba.njit(inline="always")
def _fma2(f, i, vl, vh, al, ah):
    """(al, ah) += f[i] * (vl, vh)."""
    s = vbcast_at(f, i)
    return vfma(s, vl, al), vfma(s, vh, ah)


@numba.njit(cache=True, parallel=True)
def to_panels(a, out):
    """out (C/width, N, width) = a (N, C) cut into column strips: out[c // width, n, c % width]
    = a[n, c], with width = out.shape[2] (C % width == 0)."""
    n_rows, c_len = a.shape
    width = out.shape[2]
    for cb in prange(c_len // width):
        for n in range(n_rows):
            out[cb, n, :] = a[n, cb * width:(cb + 1) * width]


@numba.njit(cache=True, parallel=True)
def from_panels(p, out):
    """The inverse of to_panels: out (N, C)[n, c] = p[c // width, n, c % width]."""
    n_rows, c_len = out.shape
    width = p.shape[2]
    for n in prange(n_rows):
        for cb in range(c_len // width):
            out[n, cb * width:(cb + 1) * width] = p[cb, n, :]


def to_panels_reference(a, width):
    n_rows, c_len = a.shape
    return np.ascontiguousarray(a.reshape(n_rows, c_len // width, width).transpose(1, 0, 2))


@numba.njit(cache=True, parallel=True)
def linear_grad_input(gp, w, dxp):
    """dx (N, K) = g (N, J) @ w (J, K), with g and dx in panels: gp = to_panels(g) (J/8, N, 8),
    dxp (K/32, N, 32) receives to_panels(dx).

    w is read row by row, front to back (memory's favourite order): each task
    owns 1024 columns of dx; for 8 rows of w at a time it holds 8 x 32 weights
    in 16 vector registers and adds their contribution to every row of dx
    (its 4 KB panel, contiguous), which stays in L2 (N x 4 KB) between passes.
    """
    n_rows = gp.shape[1]
    j_len, k_len = w.shape
    gf = gp.reshape(-1)
    wf = w.reshape(-1)
    dxf = dxp.reshape(-1)
    chunk = 1024
    for kc in prange(k_len // chunk):
        k_lo = kc * chunk
        for j0 in range(0, j_len, 8):
            for k in range(k_lo, k_lo + chunk, 32):
                q = j0 * k_len + k
                w0l = vload(wf, q); w0h = vload(wf, q + 16)
                w1l = vload(wf, q + k_len); w1h = vload(wf, q + k_len + 16)
                w2l = vload(wf, q + 2 * k_len); w2h = vload(wf, q + 2 * k_len + 16)
                w3l = vload(wf, q + 3 * k_len); w3h = vload(wf, q + 3 * k_len + 16)
                w4l = vload(wf, q + 4 * k_len); w4h = vload(wf, q + 4 * k_len + 16)
                w5l = vload(wf, q + 5 * k_len); w5h = vload(wf, q + 5 * k_len + 16)
                w6l = vload(wf, q + 6 * k_len); w6h = vload(wf, q + 6 * k_len + 16)
                w7l = vload(wf, q + 7 * k_len); w7h = vload(wf, q + 7 * k_len + 16)
                for n in range(n_rows):
                    d = (k // 32 * n_rows + n) * 32
                    if j0 == 0:
                        al = vzero()
                        ah = vzero()
                    else:
                        al = vload(dxf, d)
                        ah = vload(dxf, d + 16)
                    gi = (j0 // 8 * n_rows + n) * 8
                    al, ah = _fma2(gf, gi, w0l, w0h, al, ah)
                    al, ah = _fma2(gf, gi + 1, w1l, w1h, al, ah)
                    al, ah = _fma2(gf, gi + 2, w2l, w2h, al, ah)
                    al, ah = _fma2(gf, gi + 3, w3l, w3h, al, ah)
                    al, ah = _fma2(gf, gi + 4, w4l, w4h, al, ah)
                    al, ah = _fma2(gf, gi + 5, w5l, w5h, al, ah)
                    al, ah = _fma2(gf, gi + 6, w6l, w6h, al, ah)
                    al, ah = _fma2(gf, gi + 7, w7l, w7h, al, ah)
                    vstore(dxf, d, al)
                    vstore(dxf, d + 16, ah)


@numba.njit(inline="always")
def _store16(dwf, bf, wf, i, d, lr, momentum, weight_decay, mode):
    """Store the gradient vector d at dwf[i:i+16]; mode 1/2: then SGD's update of those 16
    parameters wf[i:i+16] and momentum buffers bf[i:i+16] (first step / later steps), by
    ``kernels.sgd.sgd_update``: the optimizer's own element update, on vectors."""
    vstore(dwf, i, d)
    if mode != 0:
        first_step = mode == 1
        b = d if first_step or momentum == 0 else vload(bf, i)
        p, b = sgd_update(vload(wf, i), d, b, lr, momentum, weight_decay, first_step)
        vstore(wf, i, p)
        if momentum != 0:
            vstore(bf, i, b)


@numba.njit(inline="always")
def _grad_weight(gp, xp, dw, buf, w, lr, momentum, weight_decay, mode):
    n_rows = gp.shape[1]
    j_len, k_len = dw.shape
    gf = gp.reshape(-1)
    xf = xp.reshape(-1)
    dwf = dw.reshape(-1)
    bf = buf.reshape(-1)
    wf = w.reshape(-1)
    for jb in prange(j_len // 8):          # each task owns 8 whole rows: sequential writes
        j0 = jb * 8
        for k0 in range(0, k_len, 32):
            a0l = vzero(); a0h = vzero(); a1l = vzero(); a1h = vzero()
            a2l = vzero(); a2h = vzero(); a3l = vzero(); a3h = vzero()
            a4l = vzero(); a4h = vzero(); a5l = vzero(); a5h = vzero()
            a6l = vzero(); a6h = vzero(); a7l = vzero(); a7h = vzero()
            for n in range(n_rows):
                vl = vload(xf, (k0 // 32 * n_rows + n) * 32)
                vh = vload(xf, (k0 // 32 * n_rows + n) * 32 + 16)
                g0 = (jb * n_rows + n) * 8
                a0l, a0h = _fma2(gf, g0, vl, vh, a0l, a0h)
                a1l, a1h = _fma2(gf, g0 + 1, vl, vh, a1l, a1h)
                a2l, a2h = _fma2(gf, g0 + 2, vl, vh, a2l, a2h)
                a3l, a3h = _fma2(gf, g0 + 3, vl, vh, a3l, a3h)
                a4l, a4h = _fma2(gf, g0 + 4, vl, vh, a4l, a4h)
                a5l, a5h = _fma2(gf, g0 + 5, vl, vh, a5l, a5h)
                a6l, a6h = _fma2(gf, g0 + 6, vl, vh, a6l, a6h)
                a7l, a7h = _fma2(gf, g0 + 7, vl, vh, a7l, a7h)
            q = j0 * k_len + k0
            _store16(dwf, bf, wf, q, a0l, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 16, a0h, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + k_len, a1l, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + k_len + 16, a1h, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 2 * k_len, a2l, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 2 * k_len + 16, a2h, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 3 * k_len, a3l, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 3 * k_len + 16, a3h, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 4 * k_len, a4l, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 4 * k_len + 16, a4h, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 5 * k_len, a5l, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 5 * k_len + 16, a5h, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 6 * k_len, a6l, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 6 * k_len + 16, a6h, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 7 * k_len, a7l, lr, momentum, weight_decay, mode)
            _store16(dwf, bf, wf, q + 7 * k_len + 16, a7h, lr, momentum, weight_decay, mode)


@numba.njit(cache=True, parallel=True)
def linear_grad_weight(gp, xp, dw):
    """dw (J, K) = g.T @ x for g (N, J), x (N, K), given in panels: gp = to_panels(g) (J/8, N, 8),
    xp = to_panels(x) (K/32, N, 32)."""
    _grad_weight(gp, xp, dw, dw, dw, np.float32(0), np.float32(0), np.float32(0), 0)


@numba.njit(cache=True, parallel=True)
def linear_grad_weight_sgd(gp, xp, dw, buf, w, lr, momentum, weight_decay, first_step):
    """dw = g.T @ x as linear_grad_weight (g, x in panels), then, while each block of dw is still in
    registers, optim.SGD's update of the matching block of w (J, K) and its momentum buffer
    buf (J, K), element by element ``kernels.sgd.sgd_update``:

        d = dw + weight_decay * w;  buf = d (first step) or momentum*buf + d;  w -= lr*buf

    (momentum 0: w -= lr*d, buf untouched.) Its NumPy twin: ``dw = g.T @ x`` and then
    ``scratchcnn.reference.sgd_momentum_step``. Saves reading dw back from memory (16 MB
    for fc3). Call it AFTER every use of the old w (linear_grad_input). No fastmath, so
    the update rounds like optim.SGD and NaN/inf propagate."""
    _grad_weight(gp, xp, dw, buf, w, lr, momentum, weight_decay, 1 if first_step else 2)


def linear_forward_reference(x, w, b):
    return x @ w.T + b


def linear_grad_input_reference(g, w):
    return g @ w


def linear_grad_weight_reference(g, x):
    return g.T @ x


@numba.njit(cache=True, parallel=True)
def linear_forward_t(xt, w, b, out_t):
    """out_t (J, M) = w (J, K) @ xt (K, M) + b[:, None]: the forward pass on TRANSPOSED
    activations (M = batch rounded up to a multiple of 32; extra columns of xt are zero).

    The same register block as the convolutions: 8 rows of w x 32 batch columns
    in 16 vector accumulators; per k, 2 vectors of xt[k, :] times 8 broadcast
    weights w[j0..j0+7, k]. Every row of w is read once, front to back.
    """
    j_len, k_len = w.shape
    m_cols = xt.shape[1]
    xf = xt.reshape(-1)
    wf = w.reshape(-1)
    of = out_t.reshape(-1)
    for jb in prange(j_len // 8):
        j0 = jb * 8
        for m0 in range(0, m_cols, 32):
            a0l = vzero(); a0h = vzero(); a1l = vzero(); a1h = vzero()
            a2l = vzero(); a2h = vzero(); a3l = vzero(); a3h = vzero()
            a4l = vzero(); a4h = vzero(); a5l = vzero(); a5h = vzero()
            a6l = vzero(); a6h = vzero(); a7l = vzero(); a7h = vzero()
            w0 = j0 * k_len
            for k in range(k_len):
                vl = vload(xf, k * m_cols + m0)
                vh = vload(xf, k * m_cols + m0 + 16)
                a0l, a0h = _fma2(wf, w0 + k, vl, vh, a0l, a0h)
                a1l, a1h = _fma2(wf, w0 + k_len + k, vl, vh, a1l, a1h)
                a2l, a2h = _fma2(wf, w0 + 2 * k_len + k, vl, vh, a2l, a2h)
                a3l, a3h = _fma2(wf, w0 + 3 * k_len + k, vl, vh, a3l, a3h)
                a4l, a4h = _fma2(wf, w0 + 4 * k_len + k, vl, vh, a4l, a4h)
                a5l, a5h = _fma2(wf, w0 + 5 * k_len + k, vl, vh, a5l, a5h)
                a6l, a6h = _fma2(wf, w0 + 6 * k_len + k, vl, vh, a6l, a6h)
                a7l, a7h = _fma2(wf, w0 + 7 * k_len + k, vl, vh, a7l, a7h)
            q = j0 * m_cols + m0
            s = vbcast(b[j0]); vstore(of, q, vadd(a0l, s)); vstore(of, q + 16, vadd(a0h, s))
            q += m_cols
            s = vbcast(b[j0 + 1]); vstore(of, q, vadd(a1l, s)); vstore(of, q + 16, vadd(a1h, s))
            q += m_cols
            s = vbcast(b[j0 + 2]); vstore(of, q, vadd(a2l, s)); vstore(of, q + 16, vadd(a2h, s))
            q += m_cols
            s = vbcast(b[j0 + 3]); vstore(of, q, vadd(a3l, s)); vstore(of, q + 16, vadd(a3h, s))
            q += m_cols
            s = vbcast(b[j0 + 4]); vstore(of, q, vadd(a4l, s)); vstore(of, q + 16, vadd(a4h, s))
            q += m_cols
            s = vbcast(b[j0 + 5]); vstore(of, q, vadd(a5l, s)); vstore(of, q + 16, vadd(a5h, s))
            q += m_cols
            s = vbcast(b[j0 + 6]); vstore(of, q, vadd(a6l, s)); vstore(of, q + 16, vadd(a6h, s))
            q += m_cols
            s = vbcast(b[j0 + 7]); vstore(of, q, vadd(a7l, s)); vstore(of, q + 16, vadd(a7h, s))
