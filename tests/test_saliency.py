"""Gradients that reach the pixels: model.backward(input_grad=True), saliency maps,
Grad-CAM and per-layer gradients, scratch (hand-written backward) against torch (autograd)."""
import numpy as np
import pytest
import torch

from scratchcnn.model import CIFAR10Model
from torch_reference import CIFAR10Model as TorchModel


def _torch_twin(model):
    t = TorchModel().double() if model.dtype == np.float64 else TorchModel()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return t.eval()


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_model_backward_input_grad_matches_torch_and_is_skipped_by_default(dtype, tol):
    model = CIFAR10Model(dtype=dtype, rng=3).eval()
    x = np.random.default_rng(4).random((2, 3, 32, 32)).astype(dtype)
    dlogits = np.random.default_rng(5).standard_normal((2, 10)).astype(dtype)
    model.forward(x)
    assert model.backward(dlogits) is None                 # training's default: no col2im for conv1
    w_grad_skipped = model.conv1.weight.grad.copy()
    model.forward(x)
    dx = model.backward(dlogits, input_grad=True)
    np.testing.assert_array_equal(model.conv1.weight.grad, w_grad_skipped)

    xt = torch.from_numpy(x).requires_grad_(True)
    (_torch_twin(model)(xt) * torch.from_numpy(dlogits)).sum().backward()
    ref = xt.grad.numpy()
    assert dx.shape == (2, 3, 32, 32) and dx.dtype == dtype
    assert np.abs(dx - ref).max() <= tol * np.abs(ref).max()
