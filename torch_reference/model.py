"""The tutorial's network in PyTorch: same layers, same names, same ``state_dict`` keys.

    conv1 Conv2d(3, 32, 3x3, padding 1) -> act1 ReLU -> drop1 Dropout(0.3)
    conv2 Conv2d(32, 32, 3x3, padding 1) -> act2 ReLU -> pool2 MaxPool2d(2)
    flat Flatten -> fc3 Linear(8192, 512) -> act3 ReLU -> drop3 Dropout(0.5)
    fc4 Linear(512, 10)                                   (logits; the loss is CrossEntropyLoss)

The layers come from ``scratchcnn.architecture.LAYERS``, the one declaration of
the network that the scratch model is built from too; the tutorial writes the
same thing out by hand::

    self.conv1 = nn.Conv2d(3, 32, kernel_size=(3, 3), stride=1, padding=1)
    self.act1 = nn.ReLU()
    self.drop1 = nn.Dropout(0.3)
    ...
    self.fc4 = nn.Linear(512, 10)

(``tests/test_torch_reference.py`` builds the tutorial's class exactly as it is
written and checks that the two are the same module for module.)

A checkpoint saved by the tutorial's own script,
``torch.save(model.state_dict(), "cifar10model.pth")``, loads into this class.
"""
import torch.nn as nn

from scratchcnn.architecture import LAYER_NAMES, LAYERS

__all__ = ["CIFAR10Model", "LAYER_NAMES"]


class CIFAR10Model(nn.Module):
    def __init__(self):
        super().__init__()
        for spec in LAYERS:               # conv1, act1, drop1, conv2, ... in forward order
            setattr(self, spec.name, getattr(nn, spec.kind)(**spec.args))

    def forward(self, x):
        # (N, 3, 32, 32) -> conv1/act1/drop1 (N, 32, 32, 32) -> conv2/act2 (N, 32, 32, 32)
        # -> pool2 (N, 32, 16, 16) -> flat (N, 8192) -> fc3/act3/drop3 (N, 512) -> fc4 (N, 10)
        for name in LAYER_NAMES:
            x = getattr(self, name)(x)
        return x
