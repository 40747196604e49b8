"""Which implementation the layers run: the numba kernels (default) or the plain NumPy references.

The layers in ``scratchcnn.layers`` and ``scratchcnn.optim.SGD`` call their hot
loops through this module (``ops.conv2d_forward(...)``, ``ops.max_pool2d_forward(...)``,
``ops.sgd_momentum_step(...)``, ...). Each name
is bound to a numba kernel, or, after a switch, to its NumPy twin in
``scratchcnn.reference`` with the same arguments and results:

    SCRATCHCNN_REFERENCE=1 scratchcnn train --no-fused ...    # for a whole process
    scratchcnn.ops.use_reference()                             # from Python, from now on
    with scratchcnn.ops.reference_mode(): ...                  # from Python, for a block

In reference mode every line that runs in a layer's forward and backward, and
in the optimizer's step, is plain NumPy you can step through in a debugger (the fused fast path,
``scratchcnn.fused``, is a separate, kernel-only implementation: train with
``--no-fused`` to use the layers). Results equal the kernels' to float rounding
(``tests/test_reference_mode.py`` trains both ways and compares).
"""
import contextlib
import os

from scratchcnn import reference
from scratchcnn.kernels import conv, pool, rng, sgd

# name -> (numba kernel, NumPy reference)
IMPLEMENTATIONS = {
    "conv2d_forward": (conv.conv2d_forward, reference.conv2d_forward),
    "conv2d_backward": (conv.conv2d_backward, reference.conv2d_backward),
    "max_pool2d_forward": (pool.max_pool2d_forward, reference.max_pool2d_forward),
    "max_pool2d_backward": (pool.max_pool2d_backward, reference.max_pool2d_backward),
    "avg_pool2d_forward": (pool.avg_pool2d_forward, reference.avg_pool2d_forward),
    "avg_pool2d_backward": (pool.avg_pool2d_backward, reference.avg_pool2d_backward),
    "keep_mask": (rng.keep_mask, rng.keep_mask_reference),
    # scratchcnn.optim.SGD's update: one thread per parameter, or threaded over the flat buffer
    "sgd_momentum_step": (sgd.sgd_momentum_step, reference.sgd_momentum_step),
    "sgd_momentum_step_parallel": (sgd.sgd_momentum_step_parallel, reference.sgd_momentum_step),
}

conv2d_forward = conv2d_backward = max_pool2d_forward = max_pool2d_backward = keep_mask = None
avg_pool2d_forward = avg_pool2d_backward = None
sgd_momentum_step = sgd_momentum_step_parallel = None
_using_reference = False


def use_reference(on=True):
    """Bind every op to its NumPy reference (``on=True``) or to its numba kernel (``on=False``)."""
    global _using_reference
    _using_reference = bool(on)
    globals().update({name: impls[1 if on else 0] for name, impls in IMPLEMENTATIONS.items()})


def using_reference():
    """True when the layers run on the NumPy references."""
    return _using_reference


@contextlib.contextmanager
def reference_mode(on=True):
    """``with reference_mode(): ...`` runs the block on the references, then restores the previous mode."""
    before = _using_reference
    use_reference(on)
    try:
        yield
    finally:
        use_reference(before)


use_reference(os.environ.get("SCRATCHCNN_REFERENCE", "0") not in ("", "0"))
