"""numba kernel for one SGD-with-momentum update, fused into a single pass.

Shape contract: ``param``, ``grad`` and ``buf`` are 1-D C-contiguous arrays of
one dtype and length (a whole model's flat parameter buffer, or one parameter
raveled); ``lr`` and ``momentum`` are scalars of that same dtype, so float32
arithmetic stays float32 as in torch. For every element i:

    buf[i]    = grad[i]                         on the first step
    buf[i]    = momentum * buf[i] + grad[i]     afterwards
    param[i] -= lr * buf[i]

The NumPy twin is ``scratchcnn.reference.sgd_momentum_step``.
"""
import numba


@numba.njit(cache=True)
def sgd_momentum_step(param, grad, buf, lr, momentum, first_step):
    """In-place update of ``param`` and ``buf`` (see the module docstring)."""
    for i in range(param.size):
        if first_step:
            b = grad[i]
        else:
            b = momentum * buf[i] + grad[i]
        buf[i] = b
        param[i] -= lr * b
