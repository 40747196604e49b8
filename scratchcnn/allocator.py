"""Tell glibc's allocator to keep freed memory for reuse (training's many large temporaries).

The layer path allocates its temporaries anew every step: a convolution's
im2col patches are 36 MiB for the tutorial's conv2 at batch 32 (32 images x
288 rows x 1024 pixels x 4 bytes), vgg's are up to 72 MiB, and the gradients
and activations add more. By default glibc serves every block above 128 KiB
(its threshold grows up to 32 MiB as blocks are freed) with a fresh ``mmap``
and gives it back to the kernel when freed; the next step's block of the same
size is new memory again, and every 4 KiB page of it is a page fault that the
kernel must zero. With

    mallopt(M_MMAP_THRESHOLD, 1 GiB)    large blocks come from the heap, not from mmap
    mallopt(M_TRIM_THRESHOLD, 2 GiB)    freed heap memory is kept, not handed back

the next step reuses the same pages. Measured on 2 vCPUs of an AMD EPYC
(family 25 model 1, Zen 3; shared and busy, so ratios from one process,
alternating the two settings step by step, 8 pairs each): the layer path's
training step was 1.38x faster for the tutorial's network, 1.71x for k5 and
1.54x for vgg (medians of per-pair ratios); allocating and touching one 40 MB
array took 8.3 ms by default and 4.0 ms with the settings. PyTorch's CPU step
gains too (``benchmarks._common.MALLOC_ENV``: the same two settings through
glibc's environment variables, whose mmap threshold is capped at 32 MiB).

The cost: the process keeps its peak memory resident instead of returning it
between steps, which training reaches every step anyway. ``make_backend``
calls ``keep_freed_memory()`` for both backends, so the two are timed alike;
``SCRATCHCNN_MALLOC=default`` in the environment leaves glibc's defaults alone.
On a C library other than glibc it does nothing and returns False.
"""
import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's <malloc.h>
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2**31 - 1                       # mallopt takes a C int

_done = None


def keep_freed_memory():
    """Set the two thresholds once per process; True when they are set (glibc), else False."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("SCRATCHCNN_MALLOC", "").lower() == "default":
        return _done
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):              # not glibc: nothing to tune
        _done = False
    return _done
