"""The plumbing every layer shares: ``Parameter``, the ``Layer`` base class,
PyTorch's default initialisation and argument helpers.

The layers themselves, with their math, are in ``scratchcnn.layers``.
"""
import numpy as np


class Parameter:
    """A trainable array and its gradient, like torch's ``weight.data`` / ``weight.grad``.

    ``data`` and ``grad`` have the same shape and dtype. Layers write ``grad``
    and optimizers update ``data`` IN PLACE, so both may be views into one flat
    model-wide buffer (see ``CIFAR10Model``): assign with ``p.data[...] = ...``.
    """

    def __init__(self, data, name=None):
        self.data = data
        self.grad = np.zeros_like(data)
        self.name = name

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"


def pair(v):
    """3 -> (3, 3); (3, 5) -> (3, 5), like torch's kernel_size/stride/padding arguments."""
    return (v, v) if np.isscalar(v) else tuple(v)


def uniform_init(rng, shape, fan_in, dtype):
    """PyTorch's default for Conv2d/Linear weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (kaiming_uniform_ with a=sqrt(5) gives bound = sqrt(6 / ((1 + 5) * fan_in)) = 1/sqrt(fan_in).)
    """
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Layer:
    """Shared plumbing: name, train/eval flag, parameters, input checks."""

    def __init__(self):
        self.name = type(self).__name__
        self.training = True

    def parameters(self):
        """List of (name, Parameter), weight before bias as in torch's state_dict."""
        return [(n, getattr(self, n)) for n in ("weight", "bias") if getattr(self, n, None) is not None]

    def zero_grad(self):
        for _, p in self.parameters():
            p.grad[...] = 0

    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def _fail(self, what):
        who = self.name if self.name == type(self).__name__ else f"{self.name} ({type(self).__name__})"
        raise ValueError(f"{who}: {what}")

    def _check_input(self, x, shape=None, dtype=None, min_ndim=0):
        """Raise ValueError unless x is an array of ``shape`` (ints must match, strings
        are free; None: any shape with at least ``min_ndim`` axes) and of ``dtype``
        (None: float32 or float64)."""
        if shape is not None:
            expected = " of shape (" + ", ".join(str(s) for s in shape) + ")"
        else:
            expected = " of shape (N, ...)" if min_ndim >= 2 else ""
        kind = np.dtype(dtype).name if dtype is not None else "float32 or float64"
        if not isinstance(x, np.ndarray):
            self._fail(f"expected {kind} input{expected}, got {type(x).__name__}")
        ok_dtype = x.dtype == dtype if dtype is not None else x.dtype in (np.float32, np.float64)
        if shape is None:
            ok_shape = x.ndim >= min_ndim
        else:
            ok_shape = x.ndim == len(shape) and all(isinstance(s, str) or s == d for s, d in zip(shape, x.shape))
        if not (ok_dtype and ok_shape):
            self._fail(f"expected {kind} input{expected}, got {x.dtype} {tuple(x.shape)}")
