"""The network's layers with hand-written backward passes (NumPy + numba, NCHW).

Every layer works the same way (cs231n style):

* ``forward(x)`` computes the output and saves what the backward pass needs as
  attributes a learner can inspect (``self.x``, ``self.out``, ...).
* ``backward(dout)`` takes dL/dout, returns dL/dx, and OVERWRITES the ``.grad``
  of the layer's parameters (``grad[...] = ...``; it never accumulates, so a
  ``zero_grad`` before each step is not needed, though it exists).
* ``train()`` / ``eval()`` set ``self.training`` (only Dropout cares).
* ``name`` is set by the model (``"conv1"``...); it defaults to the class name
  and appears in error messages.

Names and default initialisation follow PyTorch (``Conv2d``, ``weight``, ...),
so ``torch_reference/model.py`` reads the same. Parameters are float32 by
default; float64 works everywhere (the gradient checks use it).

The hot loops (convolution, pooling, dropout masks) are numba kernels called
through ``scratchcnn.ops``; each has a plain NumPy twin in
``scratchcnn.reference`` with the same signature, and
``scratchcnn.ops.use_reference()`` (or ``SCRATCHCNN_REFERENCE=1``) makes every
layer run on those, so a debugger steps through NumPy you can read. The shared
plumbing (``Parameter``, the ``Layer`` base class, initialisation) is in
``scratchcnn.layer_base``.
"""
import numpy as np

from scratchcnn import ops
from scratchcnn.layer_base import Layer, Parameter, pair, uniform_init

__all__ = ["Conv2d", "MaxPool2d", "ReLU", "Dropout", "Flatten", "Linear", "SoftmaxCrossEntropy", "Parameter"]


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

    Computed as im2col + matrix multiply (``scratchcnn.kernels.conv``); the
    reference is ``scratchcnn.reference.conv2d_forward`` / ``conv2d_backward``,
    by direct summation of the formulas above. ``self.saved`` is what the
    backward pass reads: the (N, C*KH*KW, OH*OW) patches of x (kernels) or x
    itself (reference); ``self.saved_for`` is the backward that reads it, so a
    forward and its backward always pair up, even across a switch of ``ops``.
    kernel_size, stride, padding: an int or an (h, w) pair. rng: None, an int seed
    or a numpy Generator, for the PyTorch-default initial weight and bias.
    """

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
        self.out, self.saved = ops.conv2d_forward(x, self.weight.data, bias, self.stride, self.padding)
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


class MaxPool2d(Layer):
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

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride) if stride is not None else self.kernel_size

    def forward(self, x):
        self._check_input(x, ("N", "C", "H", "W"))
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if x.shape[2] < kh or x.shape[3] < kw:
            self._fail(f"input {x.shape[2]}x{x.shape[3]} is smaller than the {kh}x{kw} window")
        self.x = x
        self.out, self.indices = ops.max_pool2d_forward(np.ascontiguousarray(x), kh, kw, sh, sw)
        return self.out

    def backward(self, dout):
        return ops.max_pool2d_backward(np.ascontiguousarray(dout), self.indices, *self.x.shape[2:])


class ReLU(Layer):
    """out = max(x, 0);  dL/dx = dout where out > 0, else 0 (so 0 at x = 0, as in torch). Any shape."""

    def forward(self, x):
        self._check_input(x)
        self.x = x
        self.out = np.maximum(x, 0)
        return self.out

    def backward(self, dout):
        return np.where(self.out > 0, dout, 0)


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


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), like torch.nn.Flatten(); dL/dx = dout reshaped back."""

    def forward(self, x):
        self._check_input(x, min_ndim=2)
        self.x = x
        self.out = x.reshape(x.shape[0], -1)
        return self.out

    def backward(self, dout):
        return dout.reshape(self.x.shape)


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


class SoftmaxCrossEntropy(Layer):
    """Mean softmax cross-entropy over a batch, like torch.nn.CrossEntropyLoss().

    Shapes: logits (N, C), targets (N,) integer class indices in [0, C).

        log p[n, j] = z[n, j] - log sum_k exp(z[n, k]),  z = logits - max_k logits[n, k]
                      (subtracting the row max changes nothing but keeps exp() from overflowing)
        loss        = -(1/N) sum_n log p[n, targets[n]]
        dL/dlogits  = (p - onehot(targets)) / N          (times dloss, default 1)
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
