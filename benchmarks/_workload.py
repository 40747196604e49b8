"""What one benchmarked training step computes: its input batch and its FLOPs.

Every count comes from ``scratchcnn.architecture`` (nothing typed in by hand):
2 FLOPs per multiply-add; a layer's backward costs its weight gradient (as much
as its forward) plus its input gradient (as much again), except conv1, whose
input is the image and needs no gradient. Per image that is forward 29.0 +
input gradients 27.3 + weight gradients 29.0 = 85.4 MFLOP.
"""
import numpy as np

from scratchcnn.architecture import LAYER_NAMES, macs_per_image


def batch(n, seed=0):
    """A seeded random batch: x float32 (n, 3, 32, 32) ~ N(0, 1), y int64 (n,) in [0, 10)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


def flops(name, n):
    """(forward, backward) FLOPs of a layer at batch n; None for the layers without weights."""
    if name not in LAYER_NAMES or macs_per_image(name) == 0:
        return None
    forward = 2 * macs_per_image(name) * n
    return forward, forward if name == "conv1" else 2 * forward


MFLOP_PER_IMAGE = sum(sum(flops(name, 1)) for name in LAYER_NAMES if flops(name, 1)) / 1e6
