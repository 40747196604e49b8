"""A floating-point peak probe: independent fused multiply-add chains on 16-lane vectors."""
import numba
import numpy as np
from numba import prange

from scratchcnn.kernels.fused_simd import vadd, vbcast, vfma, vload, vstore


@numba.njit(cache=True, parallel=True)
def fma_peak(iters, n_threads):
    """12 independent accumulators x 16 lanes x iters FMAs on each of n_threads threads."""
    out = np.zeros((n_threads, 16), np.float32)
    for t in prange(n_threads):
        m = vbcast(np.float32(0.999999))
        c = vbcast(np.float32(1e-7))
        a0 = a1 = a2 = a3 = a4 = a5 = vbcast(np.float32(t))
        a6 = a7 = a8 = a9 = a10 = a11 = vbcast(np.float32(1.0))
        for _ in range(iters):
            a0 = vfma(a0, m, c); a1 = vfma(a1, m, c); a2 = vfma(a2, m, c); a3 = vfma(a3, m, c)
            a4 = vfma(a4, m, c); a5 = vfma(a5, m, c); a6 = vfma(a6, m, c); a7 = vfma(a7, m, c)
            a8 = vfma(a8, m, c); a9 = vfma(a9, m, c); a10 = vfma(a10, m, c); a11 = vfma(a11, m, c)
        s = vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(vadd(a4, a5), vadd(a6, a7)))
        s = vadd(s, vadd(vadd(a8, a9), vadd(a10, a11)))
        row = out[t]
        vstore(row, 0, vadd(s, vload(row, 0)))
    return out
