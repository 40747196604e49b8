"""What one benchmarked training step computes: its input batch and its FLOPs.

Every count comes from the tutorial preset's ``scratchcnn.architecture.Architecture``
(nothing typed in by hand):
2 FLOPs per multiply-add; a layer's backward costs its weight gradient (as much
as its forward) plus its input gradient (as much again), except conv1, whose
input is the image and needs no gradient. Per image that is forward 29.0 +
input gradients 27.3 + weight gradients 29.0 = 85.4 MFLOP.

Some stages of the fused step do little arithmetic per byte and are limited by
memory instead: fc3's 8192 x 512 weight is 16 MiB, and so are its gradient and
its momentum buffer. ``STREAM_BYTES`` gives, for those stages of
``fused_train_step``'s profile, the bytes they must move at the least (each
16 MiB array counted once per read and once per write it needs; the small
activations are left out):

    fc3 forward                          read W                                   1 x 16 MiB
    fc3 backward                         read W (dx = g W), write dW               2 x 16 MiB
    fc3 backward (with its SGD update)   read W (dx), write dW, read+write the
                                         momentum buffer, read+write W             6 x 16 MiB
"""
import numpy as np

from scratchcnn import architecture

TUTORIAL = architecture.tutorial()          # the network these benchmarks time
LAYER_NAMES = TUTORIAL.layer_names
macs_per_image = TUTORIAL.macs


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


FC3_WEIGHT_BYTES = 4 * macs_per_image("fc3")            # float32 weight: in_features x out_features
STREAM_BYTES = {"fc3 forward": FC3_WEIGHT_BYTES, "fc3 backward": 2 * FC3_WEIGHT_BYTES,
                "fc3 backward (with its SGD update)": 6 * FC3_WEIGHT_BYTES}


def stage_flops(n):
    """FLOPs of the fused step's profiled stages at batch n (the stages that do a layer's arithmetic)."""
    conv1, conv2, fc3 = flops("conv1", n), flops("conv2", n), flops("fc3", n)
    return {"conv1+act1+drop1 forward": conv1[0], "conv2+act2+pool2 forward": conv2[0],
            "conv2 backward (weights)": conv2[0], "conv2 backward (input)+drop1+act1 backward": conv2[0],
            "conv1 backward (weights)": conv1[1], "fc3 forward": fc3[0], "fc3 backward": fc3[1],
            "fc3 backward (with its SGD update)": fc3[1]}
