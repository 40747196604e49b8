"""The PyTorch tutorial's CIFAR-10 model, the reference the scratch backend is checked against."""
from torch_reference.model import CIFAR10Model

__all__ = ["CIFAR10Model"]
