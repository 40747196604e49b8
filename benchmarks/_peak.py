"""The machine's two ceilings, measured the way the kernels could reach them.

FP32 compute: ``fma_peak`` runs, on each thread, CHAINS independent chains of
512-bit fused multiply-adds (``vfma`` on 16-lane float32 vectors from
``scratchcnn.kernels.fused_simd``, one zmm register each):

    acc_j = acc_j * m + c      for j = 0..CHAINS-1, iters times

An FMA's result is ready only after its latency (4 cycles on Zen 4/5 and on
Ice Lake), and a core has up to 2 FMA pipes, so at least 4 x 2 = 8 chains must
be in flight to keep both pipes busy every cycle; 16 chains leave a margin and
still fit the 32 zmm registers with m and c. The generated loop body is 16
``vfmadd...ps %zmm`` instructions and a counter (``fma_instructions`` checks
it). Flops per call: threads x iters x chains x 16 lanes x 2.

Without AVX-512 a 16-lane vector is two 8-lane ymm registers and only 16 of
those exist: 16 chains would be 32 registers, and the spills to memory made
the probe report half the peak (82 GFLOP/s at 2 threads on a Zen 3, where
OpenBLAS's sgemm ran at 149 and PyTorch's step beat "100%"). There
``fma_peak_avx2`` runs NARROW_CHAINS = 6 chains: 12 ymm chains in flight, plus
m and c, in 14 registers. ``peak_kernel()`` picks the one for this CPU.

Memory bandwidth: ``stream_copy`` (a = b) and ``stream_triad`` (a = b + s*c),
as John McCalpin's STREAM counts them (copy moves 2 x 4 bytes per element,
triad 3 x 4; the cache line a write allocates is not counted), on arrays far
larger than the last-level cache; numba's ``prange`` gives each thread one
contiguous slice. (A first version looped over explicit per-thread slices
inside ``prange``; LLVM did not vectorise that loop, and it reported 3.5 GB/s
where NumPy's own copy moved 18: the probe must be at least as fast as the
simplest code that does the same thing.)

Both are called from ``benchmarks._worker`` (the ``machine`` worker, its
threads bound to cores with OMP_PROC_BIND), several times, keeping the best
call: the ceiling is what the machine CAN do, so the fastest repetition is the
right estimate. Each FMA call runs about 5 ms: starting the parallel region
is under 1% of that, and on a machine where something else runs now and then,
many calls still run uninterrupted (with 50 ms calls, one thread measured 101
GFLOP/s on a shared machine where 5 ms calls reached 262).
"""
import numba
import numpy as np
from numba import prange

from scratchcnn.kernels.fused_simd import AVX512, LANES, vadd, vbcast, vfma, vload, vstore

CHAINS = 16
NARROW_CHAINS = 6


@numba.njit(cache=True, parallel=True)
def fma_peak(iters, n_threads):
    """CHAINS independent 16-lane FMA chains x iters on each of n_threads threads; (n_threads, 16) sums.

    The chains start from different values, so the compiler cannot merge them.
    """
    out = np.zeros((n_threads, LANES), np.float32)
    for t in prange(n_threads):
        m = vbcast(np.float32(0.999999))
        c = vbcast(np.float32(1e-7))
        a0 = vbcast(np.float32(t + 0.0)); a1 = vbcast(np.float32(t + 0.1)); a2 = vbcast(np.float32(t + 0.2))
        a3 = vbcast(np.float32(t + 0.3)); a4 = vbcast(np.float32(t + 0.4)); a5 = vbcast(np.float32(t + 0.5))
        a6 = vbcast(np.float32(t + 0.6)); a7 = vbcast(np.float32(t + 0.7)); a8 = vbcast(np.float32(t + 0.8))
        a9 = vbcast(np.float32(t + 0.9)); a10 = vbcast(np.float32(t + 1.0)); a11 = vbcast(np.float32(t + 1.1))
        a12 = vbcast(np.float32(t + 1.2)); a13 = vbcast(np.float32(t + 1.3)); a14 = vbcast(np.float32(t + 1.4))
        a15 = vbcast(np.float32(t + 1.5))
        for _ in range(iters):
            a0 = vfma(a0, m, c); a1 = vfma(a1, m, c); a2 = vfma(a2, m, c); a3 = vfma(a3, m, c)
            a4 = vfma(a4, m, c); a5 = vfma(a5, m, c); a6 = vfma(a6, m, c); a7 = vfma(a7, m, c)
            a8 = vfma(a8, m, c); a9 = vfma(a9, m, c); a10 = vfma(a10, m, c); a11 = vfma(a11, m, c)
            a12 = vfma(a12, m, c); a13 = vfma(a13, m, c); a14 = vfma(a14, m, c); a15 = vfma(a15, m, c)
        s = vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(vadd(a4, a5), vadd(a6, a7)))
        s = vadd(s, vadd(vadd(vadd(a8, a9), vadd(a10, a11)), vadd(vadd(a12, a13), vadd(a14, a15))))
        row = out[t]
        vstore(row, 0, vadd(s, vload(row, 0)))
    return out


@numba.njit(cache=True, parallel=True)
def fma_peak_avx2(iters, n_threads):
    """``fma_peak`` with NARROW_CHAINS chains: what fits 16 ymm registers."""
    out = np.zeros((n_threads, LANES), np.float32)
    for t in prange(n_threads):
        m = vbcast(np.float32(0.999999))
        c = vbcast(np.float32(1e-7))
        a0 = vbcast(np.float32(t + 0.0)); a1 = vbcast(np.float32(t + 0.1)); a2 = vbcast(np.float32(t + 0.2))
        a3 = vbcast(np.float32(t + 0.3)); a4 = vbcast(np.float32(t + 0.4)); a5 = vbcast(np.float32(t + 0.5))
        for _ in range(iters):
            a0 = vfma(a0, m, c); a1 = vfma(a1, m, c); a2 = vfma(a2, m, c)
            a3 = vfma(a3, m, c); a4 = vfma(a4, m, c); a5 = vfma(a5, m, c)
        s = vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(a4, a5))
        row = out[t]
        vstore(row, 0, vadd(s, vload(row, 0)))
    return out


def peak_kernel():
    """(kernel, chains) for this CPU: 16 zmm chains with AVX-512, 6 (12 ymm) without."""
    return (fma_peak, CHAINS) if AVX512 else (fma_peak_avx2, NARROW_CHAINS)


def fma_flops(iters, n_threads, chains=CHAINS):
    """Floating-point operations of one call with ``chains`` chains (``fma_peak``: CHAINS)."""
    return n_threads * iters * chains * LANES * 2


def fma_instructions(kernel=None):
    """{'zmm': n, 'ymm': n, 'xmm': n}: the FMA instructions in the peak kernel's compiled code (this
    CPU's, or ``kernel``), by register width.

    The check that the probe measures what it claims: a healthy AVX-512 build has
    CHAINS (or a multiple, if LLVM unrolled) zmm FMAs and no narrower ones.
    """
    import re
    kernel = kernel or peak_kernel()[0]
    twin = numba.njit(parallel=True)(kernel.py_func)         # numba cannot show code loaded from its cache
    twin(1, 1)
    asm = twin.inspect_asm(twin.signatures[0])
    return {w: len(re.findall(rf"vfmadd\w*\s+%{w}", asm)) for w in ("zmm", "ymm", "xmm")}


@numba.njit(cache=True, parallel=True)
def stream_copy(a, b):
    """a[i] = b[i]; numba splits the range into one contiguous slice per thread. 8 bytes per element."""
    for i in prange(a.size):
        a[i] = b[i]


@numba.njit(cache=True, parallel=True)
def stream_triad(a, b, c, s):
    """a[i] = b[i] + s * c[i]; one contiguous slice per thread. 12 bytes per element."""
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


def measure_peak(threads, seconds=1.0, target_call_s=0.005):
    """Best GFLOP/s of fma_peak calls over about ``seconds`` (each call sized to ~target_call_s)."""
    import time
    kernel, chains = peak_kernel()
    kernel(1000, threads)                                       # load from the cache
    t = time.perf_counter()
    kernel(100000, threads)
    iters = max(100000, int(100000 * target_call_s / max(time.perf_counter() - t, 1e-6)))
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        kernel(iters, threads)
        best = max(best, fma_flops(iters, threads, chains) / (time.perf_counter() - t) / 1e9)
    return best


def measure_bandwidth(threads, mib=128, repeats=8):
    """Best GB/s (10^9 bytes/s) of stream_copy and stream_triad on arrays of ``mib`` MiB each."""
    import time
    n = mib * 2**20 // 4
    a, b, c = np.zeros(n, np.float32), np.ones(n, np.float32), np.full(n, 2.0, np.float32)
    out = {"array_mib": mib}
    for name, fn, args, nbytes in (("copy", stream_copy, (a, b), 8 * n),
                                   ("triad", stream_triad, (a, b, c, np.float32(3.0)), 12 * n)):
        fn(*args)                                                # first touch + cache load
        best = 0.0
        for _ in range(repeats):
            t = time.perf_counter()
            fn(*args)
            best = max(best, nbytes / (time.perf_counter() - t) / 1e9)
        out[f"{name}_gbs"] = best
    return out
