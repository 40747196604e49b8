"""scratchcnn: the PyTorch CIFAR-10 tutorial's CNN, rebuilt from scratch in NumPy + numba.

The pieces a learner uses from Python::

    from scratchcnn import Conv2d, ReLU, MaxPool2d, Dropout, Flatten, Linear
    from scratchcnn import SoftmaxCrossEntropy, SGD, CIFAR10Model
"""
from scratchcnn.layers import (Conv2d, Dropout, Flatten, Linear, MaxPool2d, Parameter, ReLU,
                               SoftmaxCrossEntropy)
from scratchcnn.model import CIFAR10Model
from scratchcnn.optim import SGD

__version__ = "0.1.0"

__all__ = ["CIFAR10Model", "Conv2d", "Dropout", "Flatten", "Linear", "MaxPool2d", "Parameter",
           "ReLU", "SGD", "SoftmaxCrossEntropy"]
