"""The same networks in PyTorch: same layers, same names, same ``state_dict`` keys.

``TorchNetwork(arch)`` builds each layer of a spec (``scratchcnn.architecture``) as its
``torch.nn`` twin, ``getattr(nn, kind)(**args)``, the twin the layer class declares
(``scratchcnn.layers``). For the default, the tutorial's network, that is what the
tutorial writes out by hand::

    self.conv1 = nn.Conv2d(3, 32, kernel_size=(3, 3), stride=1, padding=1)
    self.act1 = nn.ReLU()
    self.drop1 = nn.Dropout(0.3)
    ...
    self.fc4 = nn.Linear(512, 10)

(``tests/test_torch_reference.py`` builds the tutorial's class exactly as it is
written and checks that the two are the same module for module.)

A checkpoint saved by the tutorial's own script,
``torch.save(model.state_dict(), "cifar10model.pth")``, loads into ``TorchNetwork()``.
``CIFAR10Model`` is ``TorchNetwork`` (its first name).
"""
import torch.nn as nn

from scratchcnn import architecture
from scratchcnn.layer_base import REGISTRY

__all__ = ["TorchNetwork", "CIFAR10Model"]


class TorchNetwork(nn.Module):
    """``TorchNetwork(arch="tutorial", num_classes=None)``: arch as for ``scratchcnn.model.Network``."""

    def __init__(self, arch="tutorial", num_classes=None):
        super().__init__()
        self.arch = architecture.load(arch, num_classes or architecture.NUM_CLASSES)
        for spec in self.arch.layers:           # conv1, act1, drop1, conv2, ... in forward order
            setattr(self, spec.name, _layer_class(spec.kind).torch_twin(spec.args))

    @property
    def layer_names(self):
        return self.arch.layer_names

    def forward(self, x):
        # tutorial: (N, 3, 32, 32) -> conv1/act1/drop1 (N, 32, 32, 32) -> conv2/act2 (N, 32, 32, 32)
        # -> pool2 (N, 32, 16, 16) -> flat (N, 8192) -> fc3/act3/drop3 (N, 512) -> fc4 (N, 10)
        for name in self.arch.layer_names:
            x = getattr(self, name)(x)
        return x


CIFAR10Model = TorchNetwork


def _layer_class(kind):
    if kind in REGISTRY:
        return REGISTRY[kind]
    from scratchcnn.custom import load_layer_class
    return load_layer_class(kind, None, kind)
