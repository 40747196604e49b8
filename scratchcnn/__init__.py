"""scratchcnn: the PyTorch CIFAR-10 tutorial's CNN, rebuilt from scratch in NumPy + numba.

The pieces a learner uses from Python::

    from scratchcnn import Conv2d, ReLU, MaxPool2d, Dropout, Flatten, Linear
    from scratchcnn import SoftmaxCrossEntropy, SGD, CIFAR10Model

They are imported on first use, so ``import scratchcnn.architecture`` (which the
torch reference and the benchmarks read) does not load numba.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {"Conv2d": "layers", "Dropout": "layers", "Flatten": "layers", "Linear": "layers",
            "MaxPool2d": "layers", "Parameter": "layers", "ReLU": "layers",
            "SoftmaxCrossEntropy": "layers", "CIFAR10Model": "model", "SGD": "optim"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"scratchcnn.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'scratchcnn' has no attribute {name!r}")
