"""The plumbing every layer shares: ``Parameter``, the ``Layer`` base class (with the
registry a network spec is checked against), PyTorch's default initialisation and
argument helpers.

The layers themselves, with their math, are in ``scratchcnn.layers``.

A layer class is one unit of change. Besides ``forward`` and ``backward`` it declares,
as class-level data and small class methods, everything the rest of scratchcnn needs
to build, check and test it without knowing its name:

    ARGS            {argument: type}: what a network spec may pass (torch's names)
    INFER           {argument: "channels" | "features"}: taken from the input shape when omitted
    output_shape    (in_shape, args) -> out_shape, for ONE image; ValueError when it cannot work
    param_shapes    args -> [(name, shape)], in torch's state_dict order
    buffer_shapes   args -> [(name, shape, dtype)], state that is saved but not trained
    torch_twin      args -> the torch.nn module that computes the same thing
    examples        rng -> [Example]: small cases the generated gradient and parity tests run
    GRADCHECK_INPUT the kind of input the default examples draw (``gradcheck_input``)
    PARITY_ULPS     how close to its torch twin it must be: relative error (max |ours - torch|
                    / max |torch|) at most this many units of the dtype's rounding (eps);
                    0: bit-identical

``scratchcnn.layers`` registers its classes with ``@register``: ``REGISTRY`` maps a
kind (the class name, as in ``torch.nn``) to its class. A learner's own layer, named
in a spec as ``"my_layers.py:MyLeakyReLU"``, is loaded and checked by
``scratchcnn.custom`` instead.
"""
import inspect
from typing import NamedTuple

import numpy as np

REGISTRY = {}          # kind (class name) -> Layer subclass; filled by @register in scratchcnn.layers


def register(cls):
    """Class decorator: make ``cls`` a kind a network spec may name (by its class name)."""
    REGISTRY[cls.__name__] = cls
    return cls


class Parameter:
    """A trainable array and its gradient, like torch's ``weight.data`` / ``weight.grad``.

    ``data`` and ``grad`` have the same shape and dtype. Layers write ``grad``
    and optimizers update ``data`` IN PLACE, so both may be views into one flat
    model-wide buffer (see ``scratchcnn.model.Network``): assign with ``p.data[...] = ...``.
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


class Example(NamedTuple):
    """One generated test case of a layer: constructor ``args``, the input ``x`` (float64),
    keyword arguments for ``forward`` (e.g. a fixed dropout mask), the mode ("train" or
    "eval"), the central-difference step ``h`` of the gradient check, and ``state``:
    values for parameters and buffers (by name) to load before the test, so that no
    term of the math is trivial (e.g. BatchNorm's weight 1 and running mean 0).

    A forward keyword ``mask`` is randomness the layer would draw itself (Dropout's): the
    gradient check uses the example's; the torch parity reads the twin's own mask back
    from its output and gives the scratch layer that one (``scratchcnn.parity.twin_errors``),
    so ``x`` must then hold no zeros."""
    args: dict
    x: np.ndarray
    forward_kwargs: dict
    mode: str = "train"
    h: float = 1e-2
    state: dict = {}


def gradcheck_input(kind, rng, shape):
    """A float64 input of ``shape`` for a gradient check, of one of three kinds (a layer's
    ``GRADCHECK_INPUT``), so that no step of +-h (h <= 1e-2) crosses a kink of its layer:

        "normal"           standard normal values (smooth layers)
        "away_from_zero"   standard normal values pushed to |x| >= 0.1 (ReLU-like kinks at 0)
        "distinct"         values 0.05 apart in random order (max-like layers: no near-ties)
    """
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "away_from_zero":
        x = rng.standard_normal(shape)
        return x + 0.1 * np.where(x < 0, -1.0, 1.0)
    if kind == "distinct":
        return 0.05 * rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float64)
    raise ValueError(f"GRADCHECK_INPUT must be 'normal', 'away_from_zero' or 'distinct', got {kind!r}")


# ---------------------------------------------------------------- argument types
# Each checker returns an error message, or None when the value is fine. JSON gives
# ints, floats, bools and lists, so a pair may arrive as a list.

def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and np.isfinite(v)


def _sizes(v, lo):
    values = v if isinstance(v, (list, tuple)) and len(v) == 2 else [v]
    if isinstance(v, (list, tuple)) and len(v) != 2 or not all(_is_int(u) for u in values):
        return f"must be a whole number or a [height, width] pair of them, got {v!r}"
    if min(values) < lo:
        return f"must be {'positive' if lo else '0 or more'}, got {v!r}"
    return None


ARG_TYPES = {
    "int>0": lambda v: None if _is_int(v) and v > 0 else f"must be a positive whole number, got {v!r}",
    "size>0": lambda v: _sizes(v, 1),
    "size>=0": lambda v: _sizes(v, 0),
    "bool": lambda v: None if isinstance(v, bool) else f"must be true or false, got {v!r}",
    "prob": lambda v: None if _is_number(v) and 0 <= v <= 1 else f"must be a number in [0, 1], got {v!r}",
    "prob<1": lambda v: None if _is_number(v) and 0 <= v < 1 else f"must be a number in [0, 1), got {v!r}",
    "fraction": lambda v: None if _is_number(v) and 0 < v <= 1 else f"must be a number in (0, 1], got {v!r}",
    "float>0": lambda v: None if _is_number(v) and v > 0 else f"must be a positive number, got {v!r}",
    "float": lambda v: None if _is_number(v) else f"must be a finite number, got {v!r}",
}


class Layer:
    """Shared plumbing: name, train/eval flag, parameters and buffers, input checks, and the
    class-level declarations a spec is checked with (see the module docstring)."""

    ARGS = {}                   # argument -> ARG_TYPES key
    INFER = {}                  # argument -> "channels" (in_shape[0] of a (C, H, W) input) or "features"
    torch_kind = None           # the torch.nn class name of the twin; None: the class's own name
    GRADCHECK_INPUT = "away_from_zero"  # the default examples' input: see gradcheck_input
    PARITY_ULPS = 16            # against the torch twin: relative error <= PARITY_ULPS * eps of the dtype

    def __init__(self):
        self.name = type(self).__name__
        self.training = True

    # ---------------------------------------------------------------- the registry's view
    @classmethod
    def defaults(cls):
        """{argument: default} from the constructor, for the arguments in ARGS."""
        sig = inspect.signature(cls.__init__)
        return {name: p.default for name, p in sig.parameters.items()
                if name in cls.ARGS and p.default is not inspect.Parameter.empty}

    @classmethod
    def output_shape(cls, in_shape, args):
        """The output shape for ONE image's input of ``in_shape``; default: the same shape
        (elementwise layers). Raise ValueError with a one-line reason when it cannot work."""
        return tuple(in_shape)

    @classmethod
    def param_shapes(cls, args):
        """[(name, shape)] of the trainable parameters, weight before bias as in torch.
        Default: read off an instance (so a learner's own layer need not declare them)."""
        return [(n, p.data.shape) for n, p in cls.build(args, np.float32, 0).parameters()]

    @classmethod
    def buffer_shapes(cls, args):
        """[(name, shape, dtype)] of saved, untrained state ("float": the model's dtype, or
        "int64"). Default: read off an instance."""
        return [(n, np.shape(b), "int64" if np.asarray(b).dtype.kind in "iu" else "float")
                for n, b in cls.build(args, np.float32, 0).buffers()]

    @classmethod
    def macs(cls, in_shape, out_shape, args):
        """Multiply-adds of one forward pass for one image (0: not counted)."""
        return 0

    @classmethod
    def window(cls, args):
        """((KH, KW), (SH, SW), (PH, PW)) for layers that look at a spatial window of their
        input (the receptive-field arithmetic); None: elementwise, or no spatial output."""
        return None

    @classmethod
    def torch_twin(cls, args):
        """The torch.nn module computing the same thing, built from the same arguments."""
        import torch.nn as nn
        return getattr(nn, cls.torch_kind or cls.__name__)(**args)

    @classmethod
    def build(cls, args, dtype=np.float32, rng=None):
        """An instance from a spec's (complete) arguments; dtype and rng go to the layers
        whose constructor takes them (those with parameters)."""
        sig = inspect.signature(cls.__init__).parameters
        extra = {k: v for k, v in (("dtype", dtype), ("rng", rng)) if k in sig}
        return cls(**args, **extra)

    @classmethod
    def examples(cls, rng):
        """Small cases for the generated gradient checks and torch parity tests
        (``tests/test_layer_zoo.py``); default: one (2, 3, 4, 5) input drawn as
        ``GRADCHECK_INPUT`` says, no arguments."""
        return [Example({}, gradcheck_input(cls.GRADCHECK_INPUT, rng, (2, 3, 4, 5)), {})]

    @classmethod
    def parity_tolerance(cls, dtype):
        """The largest relative error against the torch twin that counts as agreeing, in ``dtype``."""
        return cls.PARITY_ULPS * float(np.finfo(dtype).eps)

    @classmethod
    def build_example(cls, example, dtype=np.float64):
        """The instance an :class:`Example` describes: built from its arguments in ``dtype``
        (seed 0 for the initial weights), its ``state`` loaded (parameters and buffers, by
        name, cast to their dtype) and in its mode ("train" or "eval")."""
        layer = cls.build(example.args, dtype, 0)
        targets = {name: p.data for name, p in layer.parameters()}
        targets.update(layer.buffers())
        unknown = sorted(set(example.state) - set(targets))
        if unknown:
            raise ValueError(f"{cls.__name__} example: no parameter or buffer {', '.join(unknown)}; "
                             f"it has {', '.join(targets) or 'none'}")
        for name, value in example.state.items():
            targets[name][...] = value
        return layer.train() if example.mode == "train" else layer.eval()

    # ---------------------------------------------------------------- instances
    def parameters(self):
        """List of (name, Parameter), weight before bias as in torch's state_dict."""
        return [(n, getattr(self, n)) for n in ("weight", "bias") if getattr(self, n, None) is not None]

    def buffers(self):
        """List of (name, array): state saved with the weights but never trained."""
        return []

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


def spatial_output(size, kernel, stride, padding):
    """Output length along one axis: (size + 2*padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def check_window(in_shape, kernel, stride, padding, what="kernel"):
    """The (OH, OW) of a KHxKW window moved by (SH, SW) over a (C, H, W) input padded by
    (PH, PW); ValueError when the input is not (C, H, W) or smaller than the window."""
    if len(in_shape) != 3:
        raise ValueError(f"needs a (channels, height, width) input, got {_shape_text(in_shape)}")
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    _, h, w = in_shape
    if h + 2 * ph < kh or w + 2 * pw < kw:
        pad = f" with padding {ph}x{pw}" if ph or pw else ""
        raise ValueError(f"its {kh}x{kw} {what} is larger than its {h}x{w} input{pad}")
    return spatial_output(h, kh, sh, ph), spatial_output(w, kw, sw, pw)


def _shape_text(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")" + (" (flat features)" if len(shape) == 1 else "")
