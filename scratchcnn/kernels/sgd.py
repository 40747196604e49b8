"""SGD's update (``torch.optim.SGD``: momentum, weight decay) as numba kernels.

ONE element update, ``sgd_update``, and the loops that apply it:
``sgd_momentum_step`` (one thread) and ``sgd_momentum_step_parallel`` (one
contiguous block per task). fc3's fused weight-gradient pass
(``kernels.fused_linear.linear_grad_weight_sgd``) calls the same ``sgd_update``
on 16-lane vectors. The NumPy twin is ``scratchcnn.reference.sgd_momentum_step``.

Shape contract: ``param``, ``grad`` and ``buf`` are 1-D C-contiguous arrays of
one dtype and length (a whole model's flat parameter buffer, or one parameter
raveled); ``lr``, ``momentum`` and ``weight_decay`` are scalars of that same
dtype, so float32 arithmetic stays float32 as in torch. For every element i,
exactly as ``torch.optim.SGD(lr, momentum, weight_decay)`` (no dampening, no
Nesterov):

    d        = grad[i] + weight_decay * param[i]     (weight_decay == 0: d = grad[i])
    buf[i]   = d                                     on the first step (torch copies d)
    buf[i]   = momentum * buf[i] + d                 on later steps
    param[i] = param[i] - lr * buf[i]

With ``momentum == 0`` torch keeps no buffer: ``param[i] -= lr * d`` and ``buf``
is neither read nor written (pass any array of the right length, e.g. ``grad``).

Every operation rounds once: the kernels are compiled without fastmath, so
LLVM neither fuses ``momentum * buf + d`` into one multiply-add nor assumes
there is no NaN; a NaN or inf in a gradient, weight or buffer stays NaN or inf.
(torch's CPU kernels use a multiply-add for ``param - lr * buf``, so torch and
these kernels can differ in the last bit of a weight; tests/test_optim.py
measures that.)

Caching caveat: numba's on-disk cache is keyed on the file that holds the
compiled function. After editing ``sgd_update``, delete
``scratchcnn/kernels/__pycache__`` so that ``fused_linear`` (which inlines it)
is recompiled too.
"""
import numba
from numba import prange


@numba.njit(inline="always")
def sgd_update(p, g, b, lr, momentum, weight_decay, first_step):
    """One element (or one 16-lane vector) of the update above: returns (new p, new b).

    Written with + - * only, so it runs on numbers and on ``fused_simd``'s
    vectors alike; the branches test scalars and are the same for a whole loop.
    """
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum != 0:
        b = g if first_step else momentum * b + g
        g = b
    return p - lr * g, b


@numba.njit(cache=True)
def sgd_momentum_step(param, grad, buf, lr, momentum, weight_decay, first_step):
    """In-place update of ``param`` and ``buf`` (see the module docstring), one thread."""
    for i in range(param.size):
        p, b = sgd_update(param[i], grad[i], buf[i], lr, momentum, weight_decay, first_step)
        param[i] = p
        if momentum != 0:
            buf[i] = b


@numba.njit(cache=True, parallel=True)
def sgd_momentum_step_parallel(param, grad, buf, lr, momentum, weight_decay, first_step):
    """The same update, the arrays cut into 64 contiguous blocks that run in parallel.

    It is memory-bound (5 x 4 bytes moved per float32 parameter, about 84 MB per
    step for this network's 4.2 M parameters): the point is to use every core's
    share of memory bandwidth. Same arithmetic per element, so the same bits as
    ``sgd_momentum_step``.
    """
    size = param.size
    n_chunks = 64
    for t in prange(n_chunks):
        lo = t * size // n_chunks
        hi = (t + 1) * size // n_chunks
        sgd_momentum_step(param[lo:hi], grad[lo:hi], buf[lo:hi], lr, momentum, weight_decay, first_step)
