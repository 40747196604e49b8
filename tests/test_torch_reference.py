import numpy as np
import pytest
import torch

import torch.nn as nn

from scratchcnn.architecture import tutorial
from scratchcnn.checkpoint import load_checkpoint
from scratchcnn.model import CIFAR10Model as ScratchModel
from torch_reference import CIFAR10Model

TUTORIAL = tutorial()
LAYERS, PARAM_SHAPES, LAYER_NAMES = TUTORIAL.layers, TUTORIAL.param_shapes(), TUTORIAL.layer_names
macs_per_image, output_shape = TUTORIAL.macs, TUTORIAL.output_shape


class TutorialModel(nn.Module):
    """The tutorial's class, written out exactly as the tutorial writes it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=(3, 3), stride=1, padding=1)
        self.act1 = nn.ReLU()
        self.drop1 = nn.Dropout(0.3)
        self.conv2 = nn.Conv2d(32, 32, kernel_size=(3, 3), stride=1, padding=1)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=(2, 2))
        self.flat = nn.Flatten()
        self.fc3 = nn.Linear(8192, 512)
        self.act3 = nn.ReLU()
        self.drop3 = nn.Dropout(0.5)
        self.fc4 = nn.Linear(512, 10)


def _hyperparameters(m):
    """Class and every setting that changes what a module computes (2 and (2, 2) count as equal)."""
    keys = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
            "in_features", "out_features", "p", "ceil_mode", "start_dim", "end_dim")
    pair = nn.modules.utils._pair
    return type(m).__name__, {k: pair(getattr(m, k)) if k in ("kernel_size", "stride", "padding", "dilation")
                              else getattr(m, k) for k in keys if hasattr(m, k)}


def test_built_from_the_spec_equals_the_tutorials_class():
    ours, tutorial = CIFAR10Model(), TutorialModel()
    assert [n for n, _ in ours.named_children()] == [n for n, _ in tutorial.named_children()]
    for (name, a), (_, b) in zip(ours.named_children(), tutorial.named_children()):
        assert _hyperparameters(a) == _hyperparameters(b), name
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in tutorial.state_dict().items()}


def test_each_layer_output_shape_is_the_declared_one():
    """Both implementations' real outputs against architecture.output_shape, layer by layer."""
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    scratch = ScratchModel(rng=0).eval()
    outs = scratch.forward_intermediates(x)
    act = torch.from_numpy(x)
    ref = CIFAR10Model().eval()
    for spec in LAYERS:
        act = getattr(ref, spec.name)(act)
        assert tuple(act.shape[1:]) == output_shape(spec.name) == outs[spec.name].shape[1:], spec.name
    assert macs_per_image("conv2") == 9_437_184 and macs_per_image("fc3") == 4_194_304
    assert macs_per_image("pool2") == 0


def test_layer_names_keys_and_parameter_counts():
    m = CIFAR10Model()
    assert [n for n, _ in m.named_children()] == list(LAYER_NAMES)
    sd = m.state_dict()
    assert list(sd) == list(PARAM_SHAPES)
    assert {k: tuple(v.shape) for k, v in sd.items()} == PARAM_SHAPES
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
