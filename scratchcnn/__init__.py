"""scratchcnn: the PyTorch CIFAR-10 tutorial's CNN, rebuilt from scratch in NumPy + numba,
and any other network of its layers.

The pieces a learner uses from Python::

    from scratchcnn import Conv2d, ReLU, MaxPool2d, Dropout, Flatten, Linear   # and the rest of the zoo
    from scratchcnn import SoftmaxCrossEntropy, SGD, Network                   # Network("tutorial"), Network("k5")

They are imported on first use, so ``import scratchcnn`` stays cheap.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {"Conv2d": "layers", "Dropout": "layers", "Flatten": "layers", "Linear": "layers",
            "MaxPool2d": "layers", "AvgPool2d": "layers", "BatchNorm2d": "layers", "LeakyReLU": "layers",
            "Tanh": "layers", "Sigmoid": "layers", "Parameter": "layers", "ReLU": "layers", "Layer": "layer_base",
            "SoftmaxCrossEntropy": "layers", "Network": "model", "CIFAR10Model": "model", "SGD": "optim"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"scratchcnn.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'scratchcnn' has no attribute {name!r}")
