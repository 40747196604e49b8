"""The same networks in PyTorch, the reference the scratch backend is checked against."""
from torch_reference.model import CIFAR10Model, TorchNetwork

__all__ = ["CIFAR10Model", "TorchNetwork"]
