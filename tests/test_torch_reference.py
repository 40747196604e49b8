import numpy as np
import pytest
import torch

from scratchcnn.checkpoint import EXPECTED_SHAPES, load_checkpoint
from torch_reference import CIFAR10Model
from torch_reference.model import LAYER_NAMES


def test_layer_names_keys_and_parameter_counts():
    m = CIFAR10Model()
    assert [n for n, _ in m.named_children()] == list(LAYER_NAMES)
    sd = m.state_dict()
    assert list(sd) == list(EXPECTED_SHAPES)
    assert {k: tuple(v.shape) for k, v in sd.items()} == dict(EXPECTED_SHAPES)
    counts = {name: sum(p.numel() for p in getattr(m, name).parameters()) for name in ("conv1", "conv2", "fc3", "fc4")}
    assert counts == {"conv1": 896, "conv2": 9248, "fc3": 4194816, "fc4": 5130}


def test_forward_shapes_and_eval_is_deterministic():
    torch.manual_seed(0)
    m = CIFAR10Model()
    x = torch.rand(5, 3, 32, 32)
    assert m(x).shape == (5, 10)
    m.eval()
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
    m.train()
    assert not torch.equal(m(x), m(x))     # dropout is active in training mode


def test_tutorial_checkpoint_loads(tmp_path):
    """What the tutorial's script writes: torch.save(model.state_dict(), "cifar10model.pth")."""
    torch.manual_seed(1)
    m = CIFAR10Model()
    path = tmp_path / "cifar10model.pth"
    torch.save(m.state_dict(), path)
    ckpt = load_checkpoint(str(path))
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] == {}
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(ckpt["model"][k], v.numpy())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_forward_matches_cpu():
    torch.manual_seed(0)
    m = CIFAR10Model().eval()
    x = torch.rand(8, 3, 32, 32)
    ref = m(x)
    out = m.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
