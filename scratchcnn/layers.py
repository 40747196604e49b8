"""The layers a network can be built from, each with a hand-written backward pass (NumPy + numba, NCHW).

Every layer works the same way (cs231n style):

* ``forward(x)`` computes the output and saves what the backward pass needs as
  attributes a learner can inspect (``self.x``, ``self.out``, ...).
* ``backward(dout)`` takes dL/dout, returns dL/dx, and OVERWRITES the ``.grad``
  of the layer's parameters (``grad[...] = ...``; it never accumulates, so a
  ``zero_grad`` before each step is not needed, though it exists).
* ``train()`` / ``eval()`` set ``self.training`` (Dropout and BatchNorm2d care).
* ``name`` is set by the model (``"conv1"``...); it defaults to the class name
  and appears in error messages.

Names, arguments and default initialisation follow PyTorch (``Conv2d``,
``kernel_size``, ``weight``, ``running_mean`` ...), so ``torch_reference/model.py``
reads the same. Parameters are float32 by default; float64 works everywhere (the
gradient checks use it).

Each class also declares what a network spec needs to know about it (its
arguments, output-shape rule, parameter and buffer shapes, torch twin and test
examples; see ``scratchcnn.layer_base``), and ``@register`` makes it a kind a spec
may name. The generated tests (``tests/test_layer_zoo.py``) check every registered
layer against central differences and against its torch twin.

The hot loops (convolution, pooling, dropout masks) are numba kernels called
through ``scratchcnn.ops``; each has a plain NumPy twin in ``scratchcnn.reference``
with the same signature, and ``scratchcnn.ops.use_reference()`` (or
``SCRATCHCNN_REFERENCE=1``) makes every layer run on those, so a debugger steps
through NumPy you can read. Elementwise layers and BatchNorm2d are NumPy only.
"""
import numpy as np

from scratchcnn import ops
from scratchcnn.layer_base import (Example, Layer, Parameter, check_window, gradcheck_input, pair, register,
                                   uniform_init)

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Dropout",
           "BatchNorm2d", "Flatten", "Linear", "SoftmaxCrossEntropy", "Parameter"]


@register
class Conv2d(Layer):
    """2-D convolution over NCHW images (a cross-correlation, like ``torch.nn.Conv2d``).

    Shapes: x (N, C, H, W), weight (F, C, KH, KW), bias (F,), out (N, F, OH, OW) with
    OH = (H + 2*PH - KH) // SH + 1 and OW = (W + 2*PW - KW) // SW + 1.
    With xp = x zero-padded by (PH, PW):

        out[n,f,y,x]        = bias[f] + sum_{c,i,j} weight[f,c,i,j] * xp[n,c,y*SH+i,x*SW+j]
        dL/dbias[f]         = sum_{n,y,x} dout[n,f,y,x]
        dL/dweight[f,c,i,j] = sum_{n,y,x} dout[n,f,y,x] * xp[n,c,y*SH+i,x*SW+j]
        dL/dxp[n,c,h,w]     = sum over (f,i,j,y,x) with y*SH+i = h, x*SW+j = w of
                              dout[n,f,y,x] * weight[f,c,i,j];   dL/dx = dL/dxp without the padding

    Computed as im2col + matrix multiply (``scratchcnn.kernels.conv``; in eval mode a
    "same" float32 convolution runs a direct NHWC kernel instead); the
    reference is ``scratchcnn.reference.conv2d_forward`` / ``conv2d_backward``,
    by direct summation of the formulas above. ``self.saved`` is what the
    backward pass reads: the (N, C*KH*KW, OH*OW) patches of x (kernels), or x
    itself (the reference; ``kernels.conv.Input(x)`` after a direct forward); ``self.saved_for`` is the backward that reads it, so a
    forward and its backward always pair up, even across a switch of ``ops``.
    kernel_size, stride, padding: an int or an (h, w) pair. rng: None, an int seed
    or a numpy Generator, for the PyTorch-default initial weight and bias.
    """
    ARGS = {"in_channels": "int>0", "out_channels": "int>0", "kernel_size": "size>0",
            "stride": "size>0", "padding": "size>=0", "bias": "bool"}
    INFER = {"in_channels": "channels"}
    PARITY_ULPS = 16  # sums of up to C*KH*KW products in another order than torch's

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=True, dtype=np.float32, rng=None):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = pair(kernel_size), pair(stride), pair(padding)
        self.dtype = np.dtype(dtype)
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        shape = (out_channels, in_channels, *self.kernel_size)
        self.weight = Parameter(uniform_init(rng, shape, fan_in, dtype), "weight")
        self.bias = Parameter(uniform_init(rng, (out_channels,), fan_in, dtype), "bias") if bias else None

    def forward(self, x):
        self._check_input(x, ("N", self.in_channels, "H", "W"), self.dtype)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
            self._fail(f"input {x.shape[2]}x{x.shape[3]} with padding {self.padding} "
                       f"is smaller than the {kh}x{kw} kernel")
        bias = self.bias.data if self.bias is not None else np.zeros(self.out_channels, self.dtype)
        self.x = x
        self.out, self.saved = ops.conv2d_forward(x, self.weight.data, bias, self.stride, self.padding,
                                                  direct=not self.training)
        self.saved_for = ops.conv2d_backward      # the twin that reads this kind of ``saved``
        return self.out

    def backward(self, dout, input_grad=True):
        """Fill weight.grad and bias.grad; return dL/dx, or None with ``input_grad=False``
        (which skips the col2im, as torch skips it for an input that does not require grad)."""
        dx, dweight, dbias = self.saved_for(dout, self.saved, self.x.shape, self.weight.data,
                                            self.stride, self.padding, input_grad)
        self.weight.grad[...] = dweight
        if self.bias is not None:
            self.bias.grad[...] = dbias
        return dx

    # ---- what a spec needs to know
    @classmethod
    def output_shape(cls, in_shape, a):
        oh, ow = check_window(in_shape, a["kernel_size"], a.get("stride", 1), a.get("padding", 0))
        return (a["out_channels"], oh, ow)

    @classmethod
    def param_shapes(cls, a):
        shapes = [("weight", (a["out_channels"], a["in_channels"], *pair(a["kernel_size"])))]
        return shapes + ([("bias", (a["out_channels"],))] if a.get("bias", True) else [])

    @classmethod
    def macs(cls, in_shape, out_shape, a):
        kh, kw = pair(a["kernel_size"])
        return int(np.prod(out_shape)) * a["in_channels"] * kh * kw

    @classmethod
    def window(cls, a):
        return pair(a["kernel_size"]), pair(a.get("stride", 1)), pair(a.get("padding", 0))

    @classmethod
    def torch_twin(cls, a):
        import torch.nn as nn
        return nn.Conv2d(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()})

    @classmethod
    def examples(cls, rng):
        cases = [(3, 4, 3, 1, 1, True, (2, 3, 6, 6)), (3, 4, 3, 2, 0, True, (2, 3, 7, 5)),
                 (2, 3, 5, 2, 2, True, (2, 2, 9, 7)), (4, 3, 1, 1, 0, True, (2, 4, 5, 6)),
                 (3, 2, [3, 2], [2, 1], [1, 0], True, (1, 3, 6, 5)), (3, 2, 3, 1, 1, False, (2, 3, 5, 5)),
                 (2, 3, 7, 1, 3, True, (1, 2, 8, 8))]
        return [Example({"in_channels": c, "out_channels": f, "kernel_size": k, "stride": s,
                         "padding": p, "bias": b}, rng.standard_normal(shape), {})
                for c, f, k, s, p, b, shape in cases]


class _Pool2d(Layer):
    """What MaxPool2d and AvgPool2d share: arguments, shape rule, receptive-field window."""
    ARGS = {"kernel_size": "size>0", "stride": "size>0"}
    GRADCHECK_INPUT = "distinct"

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride) if stride is not None else self.kernel_size

    def _check_window(self, x):
        self._check_input(x, ("N", "C", "H", "W"))
        (kh, kw) = self.kernel_size
        if x.shape[2] < kh or x.shape[3] < kw:
            self._fail(f"input {x.shape[2]}x{x.shape[3]} is smaller than the {kh}x{kw} window")
        self.x = x
        return np.ascontiguousarray(x)

    @classmethod
    def output_shape(cls, in_shape, a):
        stride = a.get("stride") if a.get("stride") is not None else a["kernel_size"]
        oh, ow = check_window(in_shape, a["kernel_size"], stride, 0, what="window")
        return (in_shape[0], oh, ow)

    @classmethod
    def window(cls, a):
        stride = a.get("stride") if a.get("stride") is not None else a["kernel_size"]
        return pair(a["kernel_size"]), pair(stride), (0, 0)

    @classmethod
    def torch_twin(cls, a):
        import torch.nn as nn
        return getattr(nn, cls.__name__)(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()})

    @classmethod
    def examples(cls, rng):           # MaxPool2d: values 0.05 apart, no window has a tie within +-h
        return [Example({"kernel_size": k, "stride": s}, gradcheck_input(cls.GRADCHECK_INPUT, rng, shape), {})
                for k, s, shape in [(2, None, (2, 3, 6, 6)), (3, 2, (2, 2, 7, 9)), ([2, 3], [1, 2], (1, 2, 5, 7))]]


@register
class MaxPool2d(_Pool2d):
    """Max over KHxKW windows moved by (SH, SW) (default stride = kernel), no padding, NCHW.

    Shapes: x (N, C, H, W) -> out (N, C, OH, OW), OH = (H - KH) // SH + 1, OW likewise.

        out[n,c,y,x] = x[n,c,h*,w*],  (h*, w*) = the chosen maximum of window (y, x)
        dL/dx[n,c,h,w] = sum of dout[n,c,y,x] over the windows (y, x) that chose (h, w)

    One element per window gets the gradient, chosen like PyTorch's CPU kernel:
    the FIRST maximum in row-major window order; a NaN beats every number (the
    last NaN of the window wins). ``self.indices`` holds the chosen h*W + w per
    output, the same numbers as ``torch.nn.functional.max_pool2d(..., return_indices=True)``.
    Kernel: ``scratchcnn.kernels.pool``; reference: ``scratchcnn.reference.max_pool2d_forward``
    / ``max_pool2d_backward``.
    """
    PARITY_ULPS = 0  # bit-identical to torch

    def forward(self, x):
        x = self._check_window(x)
        self.out, self.indices = ops.max_pool2d_forward(x, *self.kernel_size, *self.stride)
        return self.out

    def backward(self, dout):
        return ops.max_pool2d_backward(np.ascontiguousarray(dout), self.indices, *self.x.shape[2:])


@register
class AvgPool2d(_Pool2d):
    """Mean over KHxKW windows moved by (SH, SW) (default stride = kernel), no padding, NCHW.

    Shapes: x (N, C, H, W) -> out (N, C, OH, OW), OH = (H - KH) // SH + 1, OW likewise.

        out[n,c,y,x]   = 1/(KH*KW) * sum_{i,j} x[n,c,y*SH+i,x*SW+j]
        dL/dx[n,c,h,w] = 1/(KH*KW) * sum of dout[n,c,y,x] over the windows (y, x) that contain (h, w)

    Every element of a window gets an equal share of its gradient (compare MaxPool2d,
    where the winner takes all). Kernel: ``scratchcnn.kernels.pool``; reference:
    ``scratchcnn.reference.avg_pool2d_forward`` / ``avg_pool2d_backward``.
    """
    GRADCHECK_INPUT = "normal"
    PARITY_ULPS = 0  # bit-identical to torch

    def forward(self, x):
        x = self._check_window(x)
        self.out = ops.avg_pool2d_forward(x, *self.kernel_size, *self.stride)
        return self.out

    def backward(self, dout):
        return ops.avg_pool2d_backward(np.ascontiguousarray(dout), *self.x.shape[2:],
                                       *self.kernel_size, *self.stride)


@register
class ReLU(Layer):
    """out = max(x, 0);  dL/dx = dout where out > 0, else 0 (so 0 at x = 0, as in torch). Any shape."""
    GRADCHECK_INPUT = "away_from_zero"
    PARITY_ULPS = 0  # bit-identical to torch

    def forward(self, x):
        self._check_input(x)
        self.x = x
        self.out = np.maximum(x, 0)
        return self.out

    def backward(self, dout):
        return np.where(self.out > 0, dout, 0)


@register
class LeakyReLU(Layer):
    """out = x where x > 0, else negative_slope * x;  dL/dx = dout where x > 0, else
    negative_slope * dout (at x = 0 the slope, as in torch). Any shape."""
    ARGS = {"negative_slope": "float"}
    GRADCHECK_INPUT = "away_from_zero"
    PARITY_ULPS = 0  # bit-identical to torch

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        self._check_input(x)
        self.x = x
        self.out = np.where(x > 0, x, x * x.dtype.type(self.negative_slope))
        return self.out

    def backward(self, dout):
        return np.where(self.x > 0, dout, dout * dout.dtype.type(self.negative_slope))

    @classmethod
    def examples(cls, rng):
        x = gradcheck_input(cls.GRADCHECK_INPUT, rng, (2, 3, 4, 5))
        return [Example({"negative_slope": s}, x, {}) for s in (0.01, 0.2)]


@register
class Tanh(Layer):
    """out = tanh(x);  dL/dx = dout * (1 - out^2). Any shape."""
    GRADCHECK_INPUT = "normal"
    PARITY_ULPS = 4

    def forward(self, x):
        self._check_input(x)
        self.x = x
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout):
        return dout * (1 - self.out * self.out)

    @classmethod
    def examples(cls, rng):
        return [Example({}, gradcheck_input(cls.GRADCHECK_INPUT, rng, (2, 3, 4, 5)), {}, h=1e-5)]


@register
class Sigmoid(Layer):
    """out = 1 / (1 + exp(-x));  dL/dx = dout * out * (1 - out). Any shape.

    Computed as exp(-log(1 + exp(-x))) (``np.logaddexp``), which never overflows.
    """
    GRADCHECK_INPUT = "normal"
    PARITY_ULPS = 4

    def forward(self, x):
        self._check_input(x)
        self.x = x
        self.out = np.exp(-np.logaddexp(0, -x)).astype(x.dtype)
        return self.out

    def backward(self, dout):
        return dout * self.out * (1 - self.out)

    @classmethod
    def examples(cls, rng):
        return [Example({}, 3 * gradcheck_input(cls.GRADCHECK_INPUT, rng, (2, 3, 4, 5)), {}, h=1e-5)]


@register
class Dropout(Layer):
    """Inverted dropout: in training, out = x * mask / (1 - p); in eval, out = x. Any shape.

        mask[i] = 1 with probability 1 - p, else 0     (so E[out] = x)
        dL/dx   = dout * mask / (1 - p)                 (eval: dL/dx = dout)

    The mask is ``keep_mask(self.seed, self.counter, x.size, p)`` over the flat
    NCHW index (kernel: ``scratchcnn.kernels.rng.keep_mask``; reference: its
    NumPy twin ``keep_mask_reference`` beside it), after which ``self.counter``
    goes up by one: the masks are a pure function of (seed, counter), so a run
    can be replayed. ``forward(x, mask)`` uses a given 0/1 mask of x's shape
    instead (tests, parity runs). The last mask is kept in ``self.mask`` (uint8, x's shape). p = 1 drops
    everything (out = 0), as torch does.
    """
    ARGS = {"p": "prob"}
    PARITY_ULPS = 0  # bit-identical to torch

    def __init__(self, p=0.5, seed=0):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.seed, self.counter = p, seed, 0
        self.mask = None

    def forward(self, x, mask=None):
        self._check_input(x)
        self.x = x
        if not self.training:
            self.mask, self.out = None, x
            return x
        if mask is None:
            mask = ops.keep_mask(self.seed, self.counter, x.size, self.p).reshape(x.shape)
            self.counter += 1
        elif np.shape(mask) != x.shape:
            self._fail(f"expected a mask of shape {tuple(x.shape)}, got {np.shape(mask)}")
        self.mask = (np.asarray(mask) != 0).astype(np.uint8)
        self.out = x * self._keep_scale(x.dtype)
        return self.out

    def backward(self, dout):
        return dout if self.mask is None else dout * self._keep_scale(dout.dtype)

    def _keep_scale(self, dtype):
        """mask / (1 - p) in ``dtype`` (computed like torch: the mask divided by 1 - p)."""
        if self.p == 1:
            return np.zeros(self.mask.shape, dtype)
        return self.mask.astype(dtype) / (1 - self.p)

    @classmethod
    def examples(cls, rng):
        shape = (2, 3, 4, 5)
        return [Example({"p": p}, rng.standard_normal(shape), {"mask": rng.random(shape) >= p}) for p in (0.3, 0.5)]


@register
class BatchNorm2d(Layer):
    """Batch normalisation of each channel of NCHW images, like ``torch.nn.BatchNorm2d``.

    Shapes: x (N, C, H, W) -> out (N, C, H, W); weight, bias, running_mean, running_var (C,).
    Sums run over the M = N*H*W values of a channel. In training (batch statistics):

        mean[c] = 1/M sum x[:,c]         var[c] = 1/M sum (x[:,c] - mean[c])^2   (biased)
        rstd    = 1 / sqrt(var + eps)    xhat   = (x - mean) * rstd
        out     = weight[c] * xhat + bias[c]
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var + momentum * var * M / (M - 1)   (unbiased)
        num_batches_tracked += 1

        dL/dbias[c]   = sum dout[:,c]              dL/dweight[c] = sum dout[:,c] * xhat[:,c]
        dL/dx         = weight * rstd / M * (M * dout - sum dout - xhat * sum(dout * xhat))

    In eval mode the running statistics stand in for the batch's: xhat = (x - running_mean)
    * rstd with rstd = 1 / sqrt(running_var + eps), and dL/dx = dout * weight * rstd.
    affine=False: no weight and bias (weight 1, bias 0). The running statistics are buffers:
    saved in ``state_dict`` under torch's keys, never touched by the optimizer. NumPy only.
    """
    ARGS = {"num_features": "int>0", "eps": "float>0", "momentum": "fraction", "affine": "bool"}
    INFER = {"num_features": "channels"}
    PARITY_ULPS = 8  # sums in another order than torch's

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=np.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.dtype = num_features, eps, momentum, np.dtype(dtype)
        self.weight = Parameter(np.ones(num_features, dtype), "weight") if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype), "bias") if affine else None
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self.num_batches_tracked = np.zeros((), np.int64)

    def forward(self, x):
        self._check_input(x, ("N", self.num_features, "H", "W"), self.dtype)
        t = x.dtype.type
        m = x.shape[0] * x.shape[2] * x.shape[3]
        if self.training:
            if m < 2:
                self._fail(f"needs more than 1 value per channel in training, got input {tuple(x.shape)}")
            mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
            self.track(mean, var, m)
        else:
            mean, var = self.running_mean, self.running_var
        self.rstd = 1 / np.sqrt(var + t(self.eps))
        self.xhat = (x - mean[:, None, None]) * self.rstd[:, None, None]
        self.x = x
        self.out = self.xhat * self._gamma()[:, None, None]
        if self.bias is not None:
            self.out += self.bias.data[:, None, None]
        return self.out

    def track(self, mean, var, m):
        """Fold one batch's statistics (mean and biased var over m values per channel) into the
        running ones, as torch does: the variance enters unbiased. The fast path calls it too."""
        t, mom = self.running_mean.dtype.type, self.running_mean.dtype.type(self.momentum)
        self.running_mean[...] = (1 - mom) * self.running_mean + mom * mean
        self.running_var[...] = (1 - mom) * self.running_var + mom * var * t(m / (m - 1))
        self.num_batches_tracked += 1

    def backward(self, dout):
        sum_dout, sum_dout_xhat = dout.sum(axis=(0, 2, 3)), (dout * self.xhat).sum(axis=(0, 2, 3))
        if self.weight is not None:
            self.weight.grad[...] = sum_dout_xhat
            self.bias.grad[...] = sum_dout
        scale = (self._gamma() * self.rstd)[:, None, None]
        if not self.training:
            return dout * scale
        m = dout.dtype.type(dout.shape[0] * dout.shape[2] * dout.shape[3])
        return scale / m * (m * dout - sum_dout[:, None, None] - self.xhat * sum_dout_xhat[:, None, None])

    def _gamma(self):
        return self.weight.data if self.weight is not None else np.ones(self.num_features, self.dtype)

    def buffers(self):
        return [("running_mean", self.running_mean), ("running_var", self.running_var),
                ("num_batches_tracked", self.num_batches_tracked)]

    @classmethod
    def output_shape(cls, in_shape, a):
        if len(in_shape) != 3:
            raise ValueError(f"needs a (channels, height, width) input, got {tuple(in_shape)}")
        return tuple(in_shape)

    @classmethod
    def param_shapes(cls, a):
        c = a["num_features"]
        return [("weight", (c,)), ("bias", (c,))] if a.get("affine", True) else []

    @classmethod
    def buffer_shapes(cls, a):
        c = a["num_features"]
        return [("running_mean", (c,), "float"), ("running_var", (c,), "float"),
                ("num_batches_tracked", (), "int64")]

    @classmethod
    def examples(cls, rng):
        def affine(shape, shift):     # random gamma/beta and running statistics, so no term is trivial
            c = shape[1]
            return {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.standard_normal(c),
                    "running_mean": rng.standard_normal(c) * shift, "running_var": rng.uniform(0.5, 2, c)}
        return [Example({"num_features": 3}, 2 + 3 * rng.standard_normal((4, 3, 3, 5)), {}, h=1e-4,
                        state=affine((4, 3), 1)),
                Example({"num_features": 2, "affine": False, "momentum": 0.3}, rng.standard_normal((3, 2, 4, 4)),
                        {}, h=1e-4),
                Example({"num_features": 3, "eps": 1e-3}, rng.standard_normal((2, 3, 4, 5)), {}, mode="eval",
                        state=affine((2, 3), 1))]


@register
class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), like torch.nn.Flatten(); dL/dx = dout reshaped back.
    Order: torch's, the last axis fastest (for (C, H, W): index c*H*W + y*W + x)."""
    PARITY_ULPS = 0  # bit-identical to torch

    def forward(self, x):
        self._check_input(x, min_ndim=2)
        self.x = x
        self.out = x.reshape(x.shape[0], -1)
        return self.out

    def backward(self, dout):
        return dout.reshape(self.x.shape)

    @classmethod
    def output_shape(cls, in_shape, a):
        return (int(np.prod(in_shape)),)


@register
class Linear(Layer):
    """Fully connected layer, like torch.nn.Linear.

    Shapes: x (N, in_features), weight (out_features, in_features), bias (out_features,),
    out (N, out_features).

        out        = x @ weight.T + bias
        dL/dx      = dout @ weight
        dL/dweight = dout.T @ x
        dL/dbias   = sum_n dout[n]

    rng: None, an int seed or a numpy Generator, for the PyTorch-default initial weight and bias.
    """
    ARGS = {"in_features": "int>0", "out_features": "int>0", "bias": "bool"}
    INFER = {"in_features": "features"}
    PARITY_ULPS = 4

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.in_features, self.out_features = in_features, out_features
        self.dtype = np.dtype(dtype)
        self.weight = Parameter(uniform_init(rng, (out_features, in_features), in_features, dtype), "weight")
        self.bias = Parameter(uniform_init(rng, (out_features,), in_features, dtype), "bias") if bias else None

    def forward(self, x):
        self._check_input(x, ("N", self.in_features), self.dtype)
        self.x = x
        self.out = x @ self.weight.data.T
        if self.bias is not None:
            self.out += self.bias.data
        return self.out

    def backward(self, dout):
        self.weight.grad[...] = dout.T @ self.x
        if self.bias is not None:
            self.bias.grad[...] = dout.sum(axis=0)
        return dout @ self.weight.data

    @classmethod
    def output_shape(cls, in_shape, a):
        if len(in_shape) != 1:
            raise ValueError(f"needs flat features, but its input is {tuple(in_shape)}: put a Flatten before it")
        return (a["out_features"],)

    @classmethod
    def param_shapes(cls, a):
        shapes = [("weight", (a["out_features"], a["in_features"]))]
        return shapes + ([("bias", (a["out_features"],))] if a.get("bias", True) else [])

    @classmethod
    def macs(cls, in_shape, out_shape, a):
        return a["in_features"] * a["out_features"]

    @classmethod
    def examples(cls, rng):
        return [Example({"in_features": 7, "out_features": 5}, rng.standard_normal((3, 7)), {}),
                Example({"in_features": 4, "out_features": 3, "bias": False}, rng.standard_normal((2, 4)), {})]


class SoftmaxCrossEntropy(Layer):
    """Mean softmax cross-entropy over a batch, like torch.nn.CrossEntropyLoss().

    Shapes: logits (N, C), targets (N,) integer class indices in [0, C).

        log p[n, j] = z[n, j] - log sum_k exp(z[n, k]),  z = logits - max_k logits[n, k]
                      (subtracting the row max changes nothing but keeps exp() from overflowing)
        loss        = -(1/N) sum_n log p[n, targets[n]]
        dL/dlogits  = (p - onehot(targets)) / N          (times dloss, default 1)

    The loss, not a layer of the network: a spec cannot name it.
    """

    def forward(self, logits, targets):
        self._check_input(logits, ("N", "C"))
        targets = np.asarray(targets)
        n, c = logits.shape
        if targets.shape != (n,) or targets.dtype.kind not in "iu" or np.any((targets < 0) | (targets >= c)):
            self._fail(f"expected integer targets of shape ({n},) with values in [0, {c}), "
                       f"got {targets.dtype} {targets.shape}")
        z = logits - logits.max(axis=1, keepdims=True)
        self.log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        self.targets = targets
        self.out = -self.log_probs[np.arange(n), targets].mean()
        return self.out

    def backward(self, dloss=1.0):
        n = self.log_probs.shape[0]
        dlogits = np.exp(self.log_probs)
        dlogits[np.arange(n), self.targets] -= 1
        return dlogits * (dloss / n)
