"""Layers against torch beyond the generated tests (``tests/test_layer_zoo.py``, which checks
every registered layer's examples against its torch twin): the tutorial's sizes, the
decisions at ties, NaNs and kinks, torch's own dropout, the loss, and bad input.

``assert_parity`` (``scratchcnn.parity.layer_errors``) feeds the same NumPy numbers to a
layer and to a ``torch.nn.functional`` call, draws a random upstream gradient ``dout``,
and compares ``out``, ``dL/dx`` and every parameter gradient (torch side:
``torch.autograd.grad((out * dout).sum(), ...)``), as max abs error / max |torch value|.

Tolerances at the tutorial's sizes (on that relative error): float64 1e-14, float32 4e-6
(worst measured: 2.9e-15 and 1.5e-6, conv2's weight gradient, a sum of 2048 products);
the loss: 1e-15 / 1e-6 (measured 2e-16 / 1e-7). ReLU at its kink and MaxPool2d at ties
and NaNs are bitwise identical to torch (tolerance 0).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratchcnn.layer_base import Example
from scratchcnn.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, SoftmaxCrossEntropy
from scratchcnn.parity import layer_errors, twin_errors


pytestmark = pytest.mark.usefixtures("one_thread_per_pool")


DTYPES = [np.float32, np.float64]
REL_TOL = {np.float32: 4e-6, np.float64: 1e-14}


def assert_parity(layer, torch_fn, x, tol, seed=0, **forward_kwargs):
    """``layer.forward(x)`` and its backward == ``torch_fn(x, *layer params)`` and autograd.

    Returns {quantity: relative error} (``scratchcnn.parity.layer_errors``, the
    measurement behind the README's table); fails naming the worst quantity.
    """
    errors = layer_errors(layer, torch_fn, x, seed, **forward_kwargs)
    for what, rel_err in errors.items():
        assert rel_err <= tol, f"{layer.name} {what} ({x.dtype}): max rel error {rel_err:.3g} > {tol:g}"
    return errors


def randn(*shape, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---- the tutorial network's layers at their real sizes, against their torch twins
TUTORIAL_SIZES = {
    "conv1": (Conv2d, {"in_channels": 3, "out_channels": 32, "kernel_size": 3, "padding": 1}, (2, 3, 32, 32)),
    "conv2": (Conv2d, {"in_channels": 32, "out_channels": 32, "kernel_size": 3, "padding": 1}, (2, 32, 32, 32)),
    "pool2": (MaxPool2d, {"kernel_size": 2}, (2, 32, 32, 32)),
    "fc3": (Linear, {"in_features": 8192, "out_features": 512}, (2, 8192)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TUTORIAL_SIZES))
def test_tutorial_sized_layers_match_their_twins(name, dtype):
    cls, args, shape = TUTORIAL_SIZES[name]
    errors = twin_errors(cls, Example(args, randn(*shape, dtype=np.float64), {}), dtype)
    tol = 0 if cls is MaxPool2d else REL_TOL[dtype]
    assert max(errors.values()) <= tol, errors


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_at_its_kink(dtype):
    x = randn(2, 3, 4, 5, dtype=dtype)
    x[0, 0, 0, :2] = 0.0                    # the kink: gradient 0 at x = 0 on both sides
    assert_parity(ReLU(), F.relu, x, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_ties_and_nan_route_like_torch(dtype):
    g = np.random.default_rng(5)
    x = g.integers(0, 3, size=(2, 3, 8, 8)).astype(dtype)          # plenty of tied maxima
    x.flat[g.choice(x.size, 20, replace=False)] = np.nan           # some windows with 2 NaNs
    x[0, 0, :2, :2] = -np.inf
    layer = MaxPool2d(2)
    out = layer.forward(x)
    out_t, idx_t = F.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(out, out_t.numpy())
    np.testing.assert_array_equal(layer.indices, idx_t.numpy())
    dout = g.standard_normal(out.shape).astype(dtype)
    x_t = torch.tensor(x, requires_grad=True)
    (dx_t,) = torch.autograd.grad((F.max_pool2d(x_t, 2) * torch.tensor(dout)).sum(), [x_t])
    np.testing.assert_array_equal(layer.backward(dout), dx_t.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.3, 0.5])
def test_dropout_matches_torchs_own_dropout(dtype, p):
    """A real ``F.dropout(x, p, training=True)`` call; its mask is recovered from the output
    (x has no zeros, so out == 0 exactly where torch dropped), then our layer, given that
    mask, must reproduce torch's output and gradient bit for bit."""
    rng = np.random.default_rng(4)
    x = (rng.uniform(0.5, 2.0, (4, 32, 8, 8)) * rng.choice([-1, 1], (4, 32, 8, 8))).astype(dtype)

    def torch_dropout(x_t):
        torch.manual_seed(5)                 # the same torch mask at every call
        return F.dropout(x_t, p, training=True)

    mask = (torch_dropout(torch.from_numpy(x)) != 0).numpy()
    assert abs(mask.mean() - (1 - p)) < 0.03               # a real mask, not all ones
    assert_parity(Dropout(p), torch_dropout, x, 0, mask=mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 100.0])           # 100: exp() would overflow without the max shift
def test_softmax_cross_entropy(dtype, scale):
    logits = randn(8, 10, dtype=dtype) * dtype(scale)
    targets = np.random.default_rng(3).integers(0, 10, 8)
    assert_parity(SoftmaxCrossEntropy(), lambda z: F.cross_entropy(z, torch.tensor(targets)),
                  logits, {np.float32: 1e-6, np.float64: 1e-15}[dtype], targets=targets)


# ---- the helper catches real bugs (so a passing test means something)

def test_parity_helper_catches_flipped_kernel():
    layer = Conv2d(3, 4, 3, padding=1, dtype=np.float64, rng=0)
    flipped = lambda x, w, b: F.conv2d(x, torch.flip(w, [2, 3]), b, padding=1)   # true convolution
    with pytest.raises(AssertionError, match="out"):
        assert_parity(layer, flipped, randn(2, 3, 6, 6, dtype=np.float64), 1e-14)


def test_parity_helper_catches_missing_dropout_scale():
    x = randn(2, 3, 4, 5, dtype=np.float64)
    mask = np.random.default_rng(2).random(x.shape) >= 0.5
    with pytest.raises(AssertionError, match="out"):
        assert_parity(Dropout(0.5), lambda x: x * torch.tensor(mask, dtype=x.dtype), x, 0, mask=mask)


def test_parity_helper_catches_off_by_one_padding():
    layer = Conv2d(3, 4, 3, padding=1, dtype=np.float64, rng=0)
    shifted = lambda x, w, b: F.conv2d(F.pad(x, (2, 0, 2, 0)), w, b)             # pads 2 left/top, 0 right
    with pytest.raises(AssertionError, match="out"):
        assert_parity(layer, shifted, randn(2, 3, 6, 6, dtype=np.float64), 1e-14)


# ---- dropout's own mask, modes and edge cases

def test_dropout_draws_counter_based_masks():
    from scratchcnn.kernels.rng import keep_mask
    layer = Dropout(0.3, seed=7)
    x = np.ones((4, 8, 5, 5), np.float32)
    out0, out1 = layer.forward(x), layer.forward(x)
    assert layer.counter == 2
    np.testing.assert_array_equal(layer.mask, keep_mask(7, 1, x.size, 0.3).reshape(x.shape))
    assert not np.array_equal(out0, out1)
    kept = out1[layer.mask == 1]
    np.testing.assert_array_equal(kept, np.float32(1) / np.float32(0.7))       # 1/(1-p), in float32
    assert np.all(out1[layer.mask == 0] == 0)


def test_dropout_eval_is_identity_and_p1_drops_everything():
    x = randn(3, 4, dtype=np.float32)
    layer = Dropout(0.5).eval()
    assert layer.forward(x) is x and layer.backward(x) is x and layer.counter == 0
    everything = Dropout(1.0)
    np.testing.assert_array_equal(everything.forward(x), 0)
    np.testing.assert_array_equal(everything.backward(x), 0)


# ---- defaults and input validation

def test_default_init_matches_torch_bounds():
    layer = Conv2d(32, 32, 3, rng=0)                                    # fan_in 288
    bound = 1 / np.sqrt(288)
    assert layer.weight.data.dtype == np.float32
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.weight.data).max() > 0.95 * bound
    assert np.abs(layer.bias.data).max() <= bound
    fc = Linear(8192, 512, dtype=np.float64, rng=0)
    assert fc.weight.data.dtype == np.float64 and np.abs(fc.weight.data).max() <= 1 / np.sqrt(8192)
    assert abs(fc.weight.data.std() - 1 / np.sqrt(3 * 8192)) < 1e-4              # std of U(-b, b) = b/sqrt(3)


@pytest.mark.parametrize("layer,x,message", [
    (Conv2d(3, 32, 3, padding=1), np.zeros((4, 1, 32, 32), np.float32),
     "conv1 (Conv2d): expected float32 input of shape (N, 3, H, W), got float32 (4, 1, 32, 32)"),
    (Conv2d(3, 32, 3, padding=1), np.zeros((4, 3, 32, 32)),
     "conv1 (Conv2d): expected float32 input of shape (N, 3, H, W), got float64 (4, 3, 32, 32)"),
    (Conv2d(3, 32, 5), np.zeros((4, 3, 4, 4), np.float32),
     "conv1 (Conv2d): input 4x4 with padding (0, 0) is smaller than the 5x5 kernel"),
    (Linear(8192, 512), np.zeros((4, 8000), np.float32),
     "conv1 (Linear): expected float32 input of shape (N, 8192), got float32 (4, 8000)"),
    (MaxPool2d(2), np.zeros((4, 32, 32), np.float32),
     "conv1 (MaxPool2d): expected float32 or float64 input of shape (N, C, H, W), got float32 (4, 32, 32)"),
    (ReLU(), np.zeros(3, np.int64),
     "conv1 (ReLU): expected float32 or float64 input, got int64 (3,)"),
    (Flatten(), np.zeros(3, np.float32),
     "conv1 (Flatten): expected float32 or float64 input of shape (N, ...), got float32 (3,)"),
])
def test_bad_input_raises_one_line_value_error(layer, x, message):
    layer.name = "conv1"
    with pytest.raises(ValueError) as e:
        layer.forward(x)
    assert str(e.value) == message
