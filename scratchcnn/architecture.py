"""The tutorial's network, declared once. Every other place reads it from here.

    conv1 Conv2d(3, 32, 3x3, padding 1) -> act1 ReLU -> drop1 Dropout(0.3)
    conv2 Conv2d(32, 32, 3x3, padding 1) -> act2 ReLU -> pool2 MaxPool2d(2)
    flat Flatten (8192) -> fc3 Linear(8192, 512) -> act3 ReLU -> drop3 Dropout(0.5)
    fc4 Linear(512, 10) -> logits                (loss: softmax cross-entropy)

Both models are built from ``LAYERS`` (``scratchcnn.model.CIFAR10Model`` with the
scratch layers, ``torch_reference.CIFAR10Model`` with ``torch.nn``), and the
checkpoint checks, the fast path, the benchmarks and the study tools read their
names and shapes here. The constructor arguments use PyTorch's keyword names,
which the scratch layers share, so ``Conv2d(**spec.args)`` builds either one.

This module imports nothing (no NumPy, no torch), so anything may import it.
"""
from typing import NamedTuple


class LayerSpec(NamedTuple):
    """One layer: its attribute name, its class name (the same in ``torch.nn`` and
    ``scratchcnn.layers``), the constructor's keyword arguments, and the shape of
    its output for ONE image: (C, H, W) or (features,)."""
    name: str
    kind: str
    args: dict
    out_shape: tuple


INPUT_SHAPE = (3, 32, 32)          # C, H, W of one image
NUM_CLASSES = 10

LAYERS = (
    LayerSpec("conv1", "Conv2d", {"in_channels": 3, "out_channels": 32, "kernel_size": 3, "padding": 1},
              (32, 32, 32)),
    LayerSpec("act1", "ReLU", {}, (32, 32, 32)),
    LayerSpec("drop1", "Dropout", {"p": 0.3}, (32, 32, 32)),
    LayerSpec("conv2", "Conv2d", {"in_channels": 32, "out_channels": 32, "kernel_size": 3, "padding": 1},
              (32, 32, 32)),
    LayerSpec("act2", "ReLU", {}, (32, 32, 32)),
    LayerSpec("pool2", "MaxPool2d", {"kernel_size": 2}, (32, 16, 16)),
    LayerSpec("flat", "Flatten", {}, (8192,)),
    LayerSpec("fc3", "Linear", {"in_features": 8192, "out_features": 512}, (512,)),
    LayerSpec("act3", "ReLU", {}, (512,)),
    LayerSpec("drop3", "Dropout", {"p": 0.5}, (512,)),
    LayerSpec("fc4", "Linear", {"in_features": 512, "out_features": NUM_CLASSES}, (NUM_CLASSES,)),
)

LAYER_NAMES = tuple(spec.name for spec in LAYERS)
SPECS = {spec.name: spec for spec in LAYERS}


def _param_shapes(spec):
    """[(key, shape)] of one layer's parameters, weight before bias as in torch's state_dict."""
    a = spec.args
    if spec.kind == "Conv2d":
        k = a["kernel_size"]
        return [("weight", (a["out_channels"], a["in_channels"], k, k)), ("bias", (a["out_channels"],))]
    if spec.kind == "Linear":
        return [("weight", (a["out_features"], a["in_features"])), ("bias", (a["out_features"],))]
    return []


# {"conv1.weight": (32, 3, 3, 3), "conv1.bias": (32,), ..., "fc4.bias": (10,)}, in state_dict order.
PARAM_SHAPES = {f"{spec.name}.{key}": shape for spec in LAYERS for key, shape in _param_shapes(spec)}


def output_shape(name):
    """The output shape of layer ``name`` for one image; ``"input"`` gives INPUT_SHAPE."""
    if name == "input":
        return INPUT_SHAPE
    try:
        return SPECS[name].out_shape
    except KeyError:
        raise KeyError(f"no layer {name!r}; the layers are {', '.join(LAYER_NAMES)}") from None


def macs_per_image(name):
    """Multiply-adds of one forward pass of layer ``name`` for one image (0 for layers without weights):

        conv:   output elements x (C_in x KH x KW)      conv2: 32*32*32 x 32*3*3 = 9,437,184
        linear: out_features x in_features              fc3:   512 x 8192        = 4,194,304
    """
    shapes = dict(_param_shapes(SPECS[name]))
    if "weight" not in shapes:
        return 0
    out = 1
    for d in output_shape(name):
        out *= d
    per_output = 1
    for d in shapes["weight"][1:]:
        per_output *= d
    return out * per_output
