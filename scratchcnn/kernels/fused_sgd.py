"""SGD with momentum over one flat buffer, split across threads.

The same update as ``scratchcnn.kernels.sgd.sgd_momentum_step`` (and
``torch.optim.SGD``), for every element i of the 1-D float32 arrays
``param``, ``grad``, ``buf``:

    buf[i]    = grad[i]                        on the first step
    buf[i]    = momentum * buf[i] + grad[i]    afterwards
    param[i] -= lr * buf[i]

It is memory-bound (5 x 4 bytes moved per parameter, about 84 MB per step for
this network's 4.2 M parameters), so the only trick is to use every core's
share of memory bandwidth: the buffer is cut into one contiguous block per
chunk and the chunks run in parallel. The NumPy twin is
``sgd_momentum_reference``, i.e. ``scratchcnn.reference.sgd_momentum_step``.
"""
import numba
from numba import prange

from scratchcnn.reference import sgd_momentum_step as sgd_momentum_reference  # noqa: F401


@numba.njit(cache=True)
def sgd_momentum_serial(param, grad, buf, lr, momentum, first_step):
    """The same update on one thread (for small arrays; also the per-block worker below,
    a separate function so LLVM vectorises it)."""
    if first_step:
        for i in range(param.size):
            b = grad[i]
            buf[i] = b
            param[i] -= lr * b
    else:
        for i in range(param.size):
            b = momentum * buf[i] + grad[i]
            buf[i] = b
            param[i] -= lr * b


@numba.njit(cache=True, parallel=True)
def sgd_momentum_parallel(param, grad, buf, lr, momentum, first_step):
    """In-place update of ``param`` and ``buf`` (see the module docstring); no fastmath,
    so ``momentum * buf + grad`` is rounded twice, as in torch and ``optim.SGD``."""
    size = param.size
    n_chunks = 64
    for t in prange(n_chunks):
        lo = t * size // n_chunks
        hi = (t + 1) * size // n_chunks
        sgd_momentum_serial(param[lo:hi], grad[lo:hi], buf[lo:hi], lr, momentum, first_step)
