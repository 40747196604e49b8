"""The tutorial's network, exactly: same layers, same names, same ``state_dict`` keys.

    conv1 Conv2d(3, 32, 3x3, padding 1) -> act1 ReLU -> drop1 Dropout(0.3)
    conv2 Conv2d(32, 32, 3x3, padding 1) -> act2 ReLU -> pool2 MaxPool2d(2)
    flat Flatten -> fc3 Linear(8192, 512) -> act3 ReLU -> drop3 Dropout(0.5)
    fc4 Linear(512, 10)                                   (logits; the loss is CrossEntropyLoss)

A checkpoint saved by the tutorial's own script,
``torch.save(model.state_dict(), "cifar10model.pth")``, loads into this class.
"""
import torch.nn as nn


class CIFAR10Model(nn.Module):
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

    def forward(self, x):
        # input 3x32x32, output 32x32x32
        x = self.act1(self.conv1(x))
        x = self.drop1(x)
        # input 32x32x32, output 32x32x32
        x = self.act2(self.conv2(x))
        # input 32x32x32, output 32x16x16
        x = self.pool2(x)
        # input 32x16x16, output 8192
        x = self.flat(x)
        # input 8192, output 512
        x = self.act3(self.fc3(x))
        x = self.drop3(x)
        # input 512, output 10
        x = self.fc4(x)
        return x


# The layer order, shared by both backends and the study tools.
LAYER_NAMES = ("conv1", "act1", "drop1", "conv2", "act2", "pool2",
               "flat", "fc3", "act3", "drop3", "fc4")
