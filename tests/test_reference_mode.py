"""One switch runs the whole layer path on the plain NumPy references (scratchcnn.ops)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from scratchcnn import ops, reference
from scratchcnn.layers import Conv2d, SoftmaxCrossEntropy
from scratchcnn.model import CIFAR10Model
from scratchcnn.optim import SGD


def test_the_switch_binds_every_op_and_restores_it():
    assert not ops.using_reference()
    with ops.reference_mode():
        assert ops.using_reference()
        for name, (_, ref) in ops.IMPLEMENTATIONS.items():
            assert getattr(ops, name) is ref, name
        assert ops.conv2d_forward is reference.conv2d_forward
    for name, (kernel, _) in ops.IMPLEMENTATIONS.items():
        assert getattr(ops, name) is kernel, name


def test_the_environment_variable_switches_a_whole_process():
    code = "from scratchcnn import ops; print(ops.using_reference(), ops.conv2d_forward.__module__)"
    env = {**os.environ, "SCRATCHCNN_REFERENCE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "scratchcnn.reference"]


def _train(dtype, steps=4, batch=6):
    rng = np.random.default_rng(3)
    model = CIFAR10Model(dtype=dtype, rng=11).train()
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    crit = SoftmaxCrossEntropy()
    losses = []
    for _ in range(steps):
        x = rng.standard_normal((batch, 3, 32, 32)).astype(dtype)
        y = rng.integers(0, 10, batch)
        losses.append(float(crit.forward(model.forward(x), y)))
        model.backward(crit.backward())
        opt.step()
    return model, np.array(losses)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_training_through_the_references_gives_the_kernels_results(dtype, rtol):
    """Four SGD steps on the layer path, dropout on, kernels vs references: same losses and weights."""
    kernels_model, kernel_losses = _train(dtype)
    assert kernels_model.conv2.saved.shape == (6, 32 * 9, 32 * 32)       # im2col patches
    with ops.reference_mode():
        ref_model, ref_losses = _train(dtype)
    assert ref_model.conv2.saved.shape == (6, 32, 32, 32)                 # the reference keeps x itself
    np.testing.assert_allclose(ref_losses, kernel_losses, rtol=rtol)
    for (name, a), (_, b) in zip(ref_model.parameters(), kernels_model.parameters()):
        scale = np.abs(b.data).max()
        assert np.abs(a.data - b.data).max() <= rtol * scale, name
    # the same dropout masks were drawn (keep_mask vs its NumPy twin)
    np.testing.assert_array_equal(ref_model.drop1.mask, kernels_model.drop1.mask)


def test_a_backward_after_switching_modes_pairs_with_its_forward():
    """forward in reference mode, backward after it (kernel mode): the reference's backward runs."""
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    dout = np.random.default_rng(1).standard_normal((2, 4, 8, 8))
    conv = Conv2d(3, 4, 3, padding=1, dtype=np.float64, rng=0)
    conv.forward(x)
    dx_kernels = conv.backward(dout)
    with ops.reference_mode():
        conv.forward(x)
    dx = conv.backward(dout)
    np.testing.assert_allclose(dx, dx_kernels, rtol=1e-12, atol=1e-12)
    assert conv.saved_for is reference.conv2d_backward
