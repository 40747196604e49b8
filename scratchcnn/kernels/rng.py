"""Counter-based random numbers for dropout masks.

A dropout mask is a pure function of ``(seed, counter, element index)``: no
generator state to store, identical in every memory layout (the element index
is always the flat NCHW index), and cheap to recompute in a fused kernel.

    key    = splitmix64(seed * 0x9E3779B97F4A7C15) ^ splitmix64(counter)
    bits   = splitmix64(key + index)
    u      = (bits >> 40) * 2**-24          # uniform on [0, 1), 24-bit resolution
    keep   = u >= p                         # P(keep) = 1 - p

``keep_mask`` is the numba kernel; ``keep_mask_reference`` is the same in NumPy.
"""
import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, inline="always")
def splitmix64(z):
    """One round of splitmix64 (Steele, Lea & Flood 2014) on a uint64."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def stream_key(seed, counter):
    """The per-call key: mixes the layer's seed with how many masks it has drawn."""
    return splitmix64(np.uint64(seed) * _GOLDEN) ^ splitmix64(np.uint64(counter))


@numba.njit(cache=True, inline="always")
def uniform01(key, index):
    """Uniform float on [0, 1) for element ``index`` of the stream ``key``."""
    bits = splitmix64(key + np.uint64(index))
    return np.float32((bits >> np.uint64(40)) * (1.0 / 16777216.0))


@numba.njit(cache=True, parallel=False)
def keep_mask(seed, counter, size, p):
    """uint8 mask of length ``size``: 1 where the element is kept (u >= p)."""
    key = stream_key(seed, counter)
    out = np.empty(size, dtype=np.uint8)
    pf = np.float32(p)
    for i in range(size):
        out[i] = 1 if uniform01(key, i) >= pf else 0
    return out


def keep_mask_reference(seed, counter, size, p):
    """NumPy twin of :func:`keep_mask` (same bits, vectorised, no numba)."""
    def mix(z):
        with np.errstate(over="ignore"):
            z = z + _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
            return z ^ (z >> np.uint64(31))
    with np.errstate(over="ignore"):
        key = mix(np.uint64(seed) * _GOLDEN) ^ mix(np.uint64(counter))
        bits = mix(key + np.arange(size, dtype=np.uint64))
    u = ((bits >> np.uint64(40)).astype(np.float64) * (1.0 / 16777216.0)).astype(np.float32)
    return (u >= np.float32(p)).astype(np.uint8)
