"""A network built from scratchcnn's layers, from a spec (``scratchcnn.architecture``).

    Network("tutorial")          the tutorial's network (the default):
        conv1 Conv2d(3, 32, 3x3, padding 1) -> act1 ReLU -> drop1 Dropout(0.3)
        conv2 Conv2d(32, 32, 3x3, padding 1) -> act2 ReLU -> pool2 MaxPool2d(2)
        flat Flatten (8192) -> fc3 Linear(8192, 512) -> act3 ReLU -> drop3 Dropout(0.5)
        fc4 Linear(512, 10) -> logits                (loss: layers.SoftmaxCrossEntropy)
    Network("k5"), Network("my_net.json"), Network(architecture)   any other spec

``torch_reference.model.TorchNetwork`` is built from the same spec: same layer
names, same ``state_dict`` keys. ``CIFAR10Model`` is ``Network`` (its first name,
when the tutorial's network was the only one).

Memory layout: all parameters live in ONE contiguous 1-D array ``flat_data``
(in state_dict order: conv1.weight, conv1.bias, ..., fc4.bias) and all gradients
in another, ``flat_grad``; each Parameter's ``.data`` / ``.grad`` is a reshaped
view into them. So ``zero_grad`` is one fill and ``optim.SGD`` updates the whole
model in one pass. Layers and loaders therefore write in place (``p.data[...] = ...``).
Buffers (BatchNorm2d's running statistics) are not parameters: they are in
``state_dict`` under torch's keys but not in the flat buffers, and no optimizer sees them.
"""
import numpy as np

from scratchcnn import architecture
from scratchcnn.layer_base import REGISTRY
from scratchcnn.layers import Dropout


class Network:
    """``Network(arch="tutorial", dtype=np.float32, rng=None, num_classes=None)``.

    arch: a preset name, a JSON file, a spec list or an ``Architecture``; num_classes: for a
    spec whose last Linear omits out_features (default 10). rng: None, an int seed or a
    ``numpy.random.Generator``; it draws the PyTorch-default initial weights, layer by layer
    in forward order, and the dropout seeds, so the same seed gives the same model."""

    def __init__(self, arch="tutorial", dtype=np.float32, rng=None, num_classes=None):
        self.arch = architecture.load(arch, num_classes or architecture.NUM_CLASSES)
        rng = np.random.default_rng(rng)
        self.dtype = np.dtype(dtype)
        self.layers = []                      # [(name, layer)] in forward order
        for spec in self.arch.layers:
            layer = _layer_class(spec.kind).build(spec.args, dtype=dtype, rng=rng)
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
            raise KeyError(f"the network has no parameter {name!r}; it has {', '.join(self._slices)}")
        return self._slices[name]

    def forward(self, x):
        """x (N, 3, 32, 32) NCHW of the model's dtype -> logits (N, num_classes)."""
        shape = self.arch.input_shape
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1:] != shape:
            raise ValueError(f"Network: expected input of shape (N, {', '.join(map(str, shape))}), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        for _, layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dlogits, input_grad=False):
        """dlogits (N, K): overwrites every parameter's .grad. Returns None, or with
        ``input_grad=True`` dL/dx (N, 3, 32, 32), the gradient reaching the pixels
        (saliency maps need it; training does not, so a first Conv2d skips it by default)."""
        g = dlogits
        for _, layer in reversed(self.layers[1:]):
            g = layer.backward(g)
        first = self.layers[0][1]
        if isinstance(first, REGISTRY["Conv2d"]):
            return first.backward(g, input_grad=input_grad)
        g = first.backward(g)
        return g if input_grad else None

    def forward_intermediates(self, x):
        """Run forward and return {layer name: its output}, e.g. ["conv1"] is (N, 32, 32, 32)."""
        self.forward(x)
        return {name: layer.out for name, layer in self.layers}

    def parameters(self):
        """[(name, Parameter)] in torch's state_dict order."""
        return [(f"{lname}.{pname}", p) for lname, layer in self.layers for pname, p in layer.parameters()]

    named_parameters = parameters

    def buffers(self):
        """[(name, array)]: BatchNorm2d's running statistics and the like, never trained."""
        return [(f"{lname}.{bname}", b) for lname, layer in self.layers for bname, b in layer.buffers()]

    def state_dict(self):
        """{name: copy of the array}, keys and order as torch's state_dict (per layer: its
        parameters, then its buffers)."""
        out = {}
        for lname, layer in self.layers:
            out.update({f"{lname}.{k}": p.data.copy() for k, p in layer.parameters()})
            out.update({f"{lname}.{k}": np.array(b, copy=True) for k, b in layer.buffers()})
        return out

    def load_state_dict(self, state_dict):
        """Copy arrays (anything np.asarray takes, e.g. a torch state_dict) into the
        parameters and buffers, cast to their dtype. Keys and shapes must match exactly."""
        targets = {name: p.data for name, p in self.parameters()}
        targets.update(self.buffers())
        arrays = {k: np.asarray(v) for k, v in state_dict.items()}
        problems = []
        missing = [k for k in targets if k not in arrays]
        unexpected = [k for k in arrays if k not in targets]
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        problems += [f"{k}: expected shape {targets[k].shape}, got {arrays[k].shape}"
                     for k in targets if k in arrays and arrays[k].shape != targets[k].shape]
        if problems:
            raise ValueError("Network.load_state_dict: " + "; ".join(problems))
        for name, target in targets.items():
            target[...] = arrays[name]

    def train(self):
        for _, layer in self.layers:
            layer.train()
        return self

    def eval(self):
        for _, layer in self.layers:
            layer.eval()
        return self

    @property
    def training(self):
        return self.layers[0][1].training

    def zero_grad(self):
        self.flat_grad.fill(0)

    def dropouts(self):
        """[(name, Dropout layer)] in forward order."""
        return [(name, layer) for name, layer in self.layers if isinstance(layer, Dropout)]

    def seed_dropout(self, seed):
        """Give every Dropout layer its own seed derived from ``seed`` (in forward order) and
        restart its counter."""
        drops = self.dropouts()
        seeds = np.random.SeedSequence(seed).generate_state(max(len(drops), 2))
        self.load_dropout_state({name: {"seed": int(s), "counter": 0} for (name, _), s in zip(drops, seeds)})

    def dropout_state(self):
        """{"drop1": {"seed": int, "counter": int}, ...}: enough to replay the masks."""
        return {name: {"seed": int(layer.seed), "counter": int(layer.counter)} for name, layer in self.dropouts()}

    def load_dropout_state(self, state):
        for name, layer in self.dropouts():
            layer.seed, layer.counter = int(state[name]["seed"]), int(state[name]["counter"])


CIFAR10Model = Network


def _layer_class(kind):
    if kind in REGISTRY:
        return REGISTRY[kind]
    from scratchcnn.custom import load_layer_class
    return load_layer_class(kind, None, kind)
