"""scratchcnn: the PyTorch CIFAR-10 tutorial's CNN, rebuilt from scratch in NumPy + numba."""
__version__ = "0.1.0"
