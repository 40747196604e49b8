"""The tutorial's CIFAR-10 network built from scratchcnn's layers.

    conv1 Conv2d(3, 32, 3x3, padding 1) -> act1 ReLU -> drop1 Dropout(0.3)
    conv2 Conv2d(32, 32, 3x3, padding 1) -> act2 ReLU -> pool2 MaxPool2d(2)
    flat Flatten (8192) -> fc3 Linear(8192, 512) -> act3 ReLU -> drop3 Dropout(0.5)
    fc4 Linear(512, 10) -> logits                (loss: layers.SoftmaxCrossEntropy)

The layers are built from ``scratchcnn.architecture.LAYERS``, the one declaration of
the network that ``torch_reference.model.CIFAR10Model`` is built from too: same layer
names, same ``state_dict`` keys.

Memory layout: all parameters live in ONE contiguous 1-D array ``flat_data``
(in state_dict order: conv1.weight, conv1.bias, ..., fc4.bias) and all gradients
in another, ``flat_grad``; each Parameter's ``.data`` / ``.grad`` is a reshaped
view into them. So ``zero_grad`` is one fill and ``optim.SGD`` updates the whole
model in one pass. Layers and loaders therefore write in place (``p.data[...] = ...``).
"""
import numpy as np

from scratchcnn import layers as _layers
from scratchcnn.architecture import INPUT_SHAPE, LAYERS
from scratchcnn.layers import Dropout


class CIFAR10Model:
    """``CIFAR10Model(dtype=np.float32, rng=None)``; rng: None, an int seed or a
    ``numpy.random.Generator``. It draws the PyTorch-default initial weights and
    the dropout seeds, so the same seed gives the same model."""

    def __init__(self, dtype=np.float32, rng=None):
        rng = np.random.default_rng(rng)
        self.dtype = np.dtype(dtype)
        self.layers = []                      # [(name, layer)] in forward order
        for spec in LAYERS:                   # conv1, act1, ... as declared in scratchcnn.architecture
            cls = getattr(_layers, spec.kind)
            extra = {"dtype": dtype, "rng": rng} if spec.kind in ("Conv2d", "Linear") else {}
            layer = cls(**spec.args, **extra)
            layer.name = spec.name
            setattr(self, spec.name, layer)
            self.layers.append((spec.name, layer))
        self._pack_parameters()
        self.seed_dropout(int(rng.integers(2**31)))

    def _pack_parameters(self):
        """Move every parameter and gradient into the flat buffers (see module docstring)."""
        params = self.parameters()
        total = sum(p.data.size for _, p in params)
        self.flat_data = np.empty(total, self.dtype)
        self.flat_grad = np.zeros(total, self.dtype)
        self._slices = {}
        offset = 0
        for name, p in params:
            shape, size = p.data.shape, p.data.size
            self.flat_data[offset:offset + size] = p.data.reshape(-1)
            p.data = self.flat_data[offset:offset + size].reshape(shape)
            p.grad = self.flat_grad[offset:offset + size].reshape(shape)
            p.name = name
            self._slices[name] = slice(offset, offset + size)
            offset += size

    def param_slice(self, name):
        """Where parameter ``name`` lives in the flat buffers: ``flat_data[s]`` is its
        ``.data`` raveled, ``flat_grad[s]`` its ``.grad`` (and an optimizer's flat momentum
        buffer ``buf[s]`` its buffer). E.g. ``param_slice("conv1.bias") == slice(864, 896)``."""
        if name not in self._slices:
            raise KeyError(f"CIFAR10Model has no parameter {name!r}; it has {', '.join(self._slices)}")
        return self._slices[name]

    def forward(self, x):
        """x (N, 3, 32, 32) NCHW of the model's dtype -> logits (N, 10)."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"CIFAR10Model: expected input of shape (N, {', '.join(map(str, INPUT_SHAPE))}), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        for _, layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dlogits, input_grad=False):
        """dlogits (N, 10): overwrites every parameter's .grad. Returns None, or with
        ``input_grad=True`` dL/dx (N, 3, 32, 32), the gradient reaching the pixels
        (saliency maps need it; training does not, so conv1 skips it by default)."""
        g = dlogits
        for _, layer in reversed(self.layers[1:]):
            g = layer.backward(g)
        return self.layers[0][1].backward(g, input_grad=input_grad)

    def forward_intermediates(self, x):
        """Run forward and return {layer name: its output}, e.g. ["conv1"] is (N, 32, 32, 32)."""
        self.forward(x)
        return {name: layer.out for name, layer in self.layers}

    def parameters(self):
        """[(name, Parameter)] in torch's state_dict order."""
        return [(f"{lname}.{pname}", p) for lname, layer in self.layers for pname, p in layer.parameters()]

    named_parameters = parameters

    def state_dict(self):
        """{name: copy of the parameter array}, keys as torch's state_dict."""
        return {name: p.data.copy() for name, p in self.parameters()}

    def load_state_dict(self, state_dict):
        """Copy arrays (anything np.asarray takes, e.g. a torch state_dict) into the
        parameters, cast to the model's dtype. Keys and shapes must match exactly."""
        params = dict(self.parameters())
        arrays = {k: np.asarray(v) for k, v in state_dict.items()}
        problems = []
        missing = [k for k in params if k not in arrays]
        unexpected = [k for k in arrays if k not in params]
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        problems += [f"{k}: expected shape {params[k].data.shape}, got {arrays[k].shape}"
                     for k in params if k in arrays and arrays[k].shape != params[k].data.shape]
        if problems:
            raise ValueError("CIFAR10Model.load_state_dict: " + "; ".join(problems))
        for name, p in params.items():
            p.data[...] = arrays[name]

    def train(self):
        for _, layer in self.layers:
            layer.train()
        return self

    def eval(self):
        for _, layer in self.layers:
            layer.eval()
        return self

    def zero_grad(self):
        self.flat_grad.fill(0)

    def seed_dropout(self, seed):
        """Give drop1 and drop3 distinct seeds derived from ``seed`` and restart their counters."""
        seed1, seed3 = np.random.SeedSequence(seed).generate_state(2)
        self.load_dropout_state({"drop1": {"seed": int(seed1), "counter": 0},
                                 "drop3": {"seed": int(seed3), "counter": 0}})

    def dropout_state(self):
        """{"drop1": {"seed": int, "counter": int}, "drop3": {...}}: enough to replay the masks."""
        return {name: {"seed": int(layer.seed), "counter": int(layer.counter)}
                for name, layer in self.layers if isinstance(layer, Dropout)}

    def load_dropout_state(self, state):
        for name, layer in self.layers:
            if isinstance(layer, Dropout):
                layer.seed, layer.counter = int(state[name]["seed"]), int(state[name]["counter"])
