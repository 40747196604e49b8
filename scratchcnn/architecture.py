"""The network as data: a spec is checked, completed and measured here, before anything is built.

A spec is what ``scratchcnn train --arch`` takes: the name of a preset (``PRESETS``,
``scratchcnn arch list``) or a JSON file holding a list of layers, each a
``torch.nn`` class name and that class's keyword arguments, with an optional name::

    [{"kind": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1},
     {"kind": "ReLU"},
     {"kind": "MaxPool2d", "kernel_size": 2},
     {"kind": "Flatten"},
     {"kind": "Linear"}]

* ``in_channels``, ``in_features`` and ``num_features`` may be omitted: they are taken
  from the previous layer's output. The LAST Linear's ``out_features`` may be omitted:
  it is then the dataset's number of classes.
* Default names follow the tutorial's scheme: a prefix per kind (conv, fc, act, drop,
  pool, bn, flat; a learner's own layer: its class name in lower case) and the number
  of Conv2d and Linear layers so far (Flatten has none), so that the
  tutorial's spec gives conv1, act1, drop1, conv2, act2, pool2, flat, fc3, act3, drop3,
  fc4, exactly the tutorial's ``state_dict`` keys.
* A learner's own layer is named by file and class, ``"kind": "my_layers.py:MyLeakyReLU"``
  (relative to the spec file), see ``scratchcnn.custom``.

``resolve(spec, num_classes)`` checks every layer in order (kind, name, arguments,
shape) and returns an :class:`Architecture`: each layer's name, complete arguments,
input and output shapes, parameter and buffer shapes. Everything else reads it: both
models are built from it, checkpoints record it (``to_json()``) and are checked against
it, and ``summary``, the study tools and the explorer take its shapes, multiply-adds
and receptive fields. A spec that cannot work is refused here with one line naming
the layer (its position and name) and what is wrong, before any array is allocated.
The per-kind rules (arguments, shapes) are declared by the layer classes themselves
(``scratchcnn.layers``).
"""
import json
import keyword
import math
import os
import re
from typing import NamedTuple

from scratchcnn.errors import UserError
from scratchcnn.layer_base import ARG_TYPES, REGISTRY
from scratchcnn.layers import Conv2d, Flatten, Linear  # noqa: F401  (fills REGISTRY)

INPUT_SHAPE = (3, 32, 32)          # C, H, W of one image: every dataset here is 32x32 RGB
NUM_CLASSES = 10                   # CIFAR-10's and the built-in dataset's
MAX_PARAMS = 50_000_000            # a spec beyond this is refused (200 MB of float32 weights)
MAX_ACTIVATIONS = 4_000_000        # floats of layer outputs per image (16 MB; x32 images x2 for gradients)
MAX_LAYERS = 200
MAX_CLASSES = 1000                 # as scratchcnn.folder.MAX_CLASSES

# The tutorial's network. Every other preset changes one thing, so the difference in
# their results is that one thing's lesson (the lessons table in docs/networks-and-presets.md).
_TUTORIAL = [
    {"kind": "Conv2d", "in_channels": 3, "out_channels": 32, "kernel_size": 3, "padding": 1},
    {"kind": "ReLU"},
    {"kind": "Dropout", "p": 0.3},
    {"kind": "Conv2d", "in_channels": 32, "out_channels": 32, "kernel_size": 3, "padding": 1},
    {"kind": "ReLU"},
    {"kind": "MaxPool2d", "kernel_size": 2},
    {"kind": "Flatten"},
    {"kind": "Linear", "in_features": 8192, "out_features": 512},
    {"kind": "ReLU"},
    {"kind": "Dropout", "p": 0.5},
    {"kind": "Linear"},                      # out_features: the dataset's classes (10 for CIFAR-10)
]


def _tutorial_with(kernel=3, pool="MaxPool2d", bn=False):
    """The tutorial's network with another filter size (padding keeping 32x32), pooling or BatchNorm."""
    conv = {"kind": "Conv2d", "out_channels": 32, "kernel_size": kernel, "padding": kernel // 2}
    norm = [{"kind": "BatchNorm2d"}] if bn else []
    return ([conv] + norm + [{"kind": "ReLU"}, {"kind": "Dropout", "p": 0.3}, dict(conv)] + norm
            + [{"kind": "ReLU"}, {"kind": pool, "kernel_size": 2}, {"kind": "Flatten"},
               {"kind": "Linear", "out_features": 512}, {"kind": "ReLU"}, {"kind": "Dropout", "p": 0.5},
               {"kind": "Linear"}])


def _vgg():
    """Three blocks of two 3x3 convolutions with BatchNorm (32, 64, 128 channels), each block
    ending in a 2x2 max-pool and dropout; then a small classifier."""
    layers = []
    for block, (channels, p) in enumerate(((32, 0.2), (64, 0.3), (128, 0.4))):
        for _ in range(2):
            layers += [{"kind": "Conv2d", "out_channels": channels, "kernel_size": 3, "padding": 1},
                       {"kind": "BatchNorm2d"}, {"kind": "ReLU"}]
        layers += [{"kind": "MaxPool2d", "kernel_size": 2}, {"kind": "Dropout", "p": p}]
    return layers + [{"kind": "Flatten"}, {"kind": "Linear", "out_features": 128}, {"kind": "ReLU"},
                     {"kind": "Dropout", "p": 0.5}, {"kind": "Linear"}]


def _deep():
    """Four stacked 3x3 convolutions before the pool: the receptive field of two 5x5 ones."""
    conv = {"kind": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1}
    return ([dict(conv), {"kind": "ReLU"}, {"kind": "Dropout", "p": 0.3}]
            + [dict(conv), {"kind": "ReLU"}] * 3
            + [{"kind": "MaxPool2d", "kernel_size": 2}, {"kind": "Flatten"},
               {"kind": "Linear", "out_features": 512}, {"kind": "ReLU"}, {"kind": "Dropout", "p": 0.5},
               {"kind": "Linear"}])


# name -> (what it teaches, spec)
PRESETS = {
    "tutorial": ("the tutorial's network: two 3x3 convolutions, one max-pool, two linear layers", _TUTORIAL),
    "k1": ("1x1 filters: every pixel on its own, no spatial context at all", _tutorial_with(kernel=1)),
    "k5": ("5x5 filters (padding 2 keeps 32x32): each convolution sees more of the image", _tutorial_with(kernel=5)),
    "k7": ("7x7 filters (padding 3 keeps 32x32): larger still, many more weights", _tutorial_with(kernel=7)),
    "deep": ("four stacked 3x3 convolutions: the receptive field of two 5x5 ones with fewer weights",
             _deep()),
    "avgpool": ("the tutorial's network with average pooling instead of max pooling",
                _tutorial_with(pool="AvgPool2d")),
    "bn": ("the tutorial's network with BatchNorm2d after each convolution", _tutorial_with(bn=True)),
    "vgg": ("a stronger, VGG-like network: three blocks of two 3x3 convolutions with BatchNorm, "
            "32-64-128 channels; for accuracy (use --recipe improved)", _vgg()),
}

# Default name prefixes; the number is how many Conv2d / Linear layers came before (inclusive).
PREFIX = {"Conv2d": "conv", "Linear": "fc", "ReLU": "act", "LeakyReLU": "act", "Tanh": "act",
          "Sigmoid": "act", "Dropout": "drop", "MaxPool2d": "pool", "AvgPool2d": "pool",
          "BatchNorm2d": "bn", "Flatten": "flat"}
NUMBERED = ("Conv2d", "Linear")

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}$")
# Names a layer may not take: attributes of the scratch Network or of torch.nn.Module
# (tests/test_architecture.py checks this list against both), and the explorer's views.
RESERVED = frozenset("""input softmax logits loss layers arch dtype training forward backward parameters
named_parameters state_dict load_state_dict train eval zero_grad seed_dropout dropout_state
load_dropout_state dropouts forward_intermediates param_slice flat_data flat_grad buffers named_buffers
modules named_modules children named_children apply cuda cpu to type float double half bfloat16
register_buffer register_parameter register_module add_module get_submodule get_parameter
get_buffer extra_repr requires_grad_ share_memory compile ipu xpu mtia call_super_init dump_patches
get_extra_state set_extra_state set_submodule register_forward_hook register_forward_pre_hook
register_backward_hook register_full_backward_hook register_full_backward_pre_hook
register_state_dict_pre_hook register_state_dict_post_hook register_load_state_dict_post_hook
register_load_state_dict_pre_hook to_empty num_batches_tracked""".split())


class SpecError(UserError):
    """A network spec that cannot work: one line naming the layer and what is wrong."""


class LayerSpec(NamedTuple):
    """One resolved layer: its name, kind (class name), COMPLETE constructor arguments,
    the shape of its input and output for ONE image ((C, H, W) or (features,)),
    and [(key, shape)] of its parameters and [(key, shape, dtype)] of its buffers."""
    name: str
    kind: str
    args: dict
    in_shape: tuple
    out_shape: tuple
    params: tuple
    buffers: tuple


class ReceptiveField(NamedTuple):
    """Of one layer's output pixel on the input image (the arithmetic of Dumoulin & Visin
    and of Araujo et al., "Computing receptive fields of CNNs"): ``size`` (h, w) of the
    input region one output pixel depends on, ``jump`` (h, w) between neighbouring output
    pixels, in input pixels. ``whole`` is True after a Flatten: every input pixel counts."""
    size: tuple
    jump: tuple
    whole: bool = False


class Architecture:
    """A resolved network spec. Build it with :func:`resolve` or :func:`load`.

    ``layers``: the :class:`LayerSpec` of every layer in forward order; ``name``: the preset
    or file it came from; ``input_shape`` (3, 32, 32); ``num_classes``: the outputs that are
    classes (the last layer's outputs)."""

    def __init__(self, layers, name="custom", input_shape=INPUT_SHAPE, num_classes=None, base_dir=None):
        self.layers = tuple(layers)
        self.name = name
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes if num_classes is not None else self.layers[-1].out_shape[0]
        self.base_dir = base_dir
        self._by_name = {s.name: s for s in self.layers}

    # ---------------------------------------------------------------- lookups
    @property
    def layer_names(self):
        return tuple(s.name for s in self.layers)

    @property
    def map_layers(self):
        """The names of the layers whose output is a stack of feature maps (C, H, W), in order:
        what the study tools and the explorer can show as images."""
        return tuple(s.name for s in self.layers if len(s.out_shape) == 3)

    def spec(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no layer {name!r}; the layers are {', '.join(self.layer_names)}") from None

    def output_shape(self, name):
        """The output shape of layer ``name`` for one image; ``"input"`` gives the input's."""
        return self.input_shape if name == "input" else self.spec(name).out_shape

    def of_kind(self, *kinds):
        """The layers of these kinds, in forward order."""
        return [s for s in self.layers if s.kind in kinds]

    def param_shapes(self):
        """{"conv1.weight": (32, 3, 3, 3), ...}: trainable parameters in state_dict order."""
        return {f"{s.name}.{k}": shape for s in self.layers for k, shape in s.params}

    def state_shapes(self):
        """{key: (shape, dtype)} of the whole state_dict in torch's order (per layer: its
        parameters, then its buffers); dtype "float" (the model's) or "int64"."""
        out = {}
        for s in self.layers:
            out.update({f"{s.name}.{k}": (shape, "float") for k, shape in s.params})
            out.update({f"{s.name}.{k}": (shape, dtype) for k, shape, dtype in s.buffers})
        return out

    @property
    def n_params(self):
        return sum(math.prod(shape) for shape in self.param_shapes().values())

    def macs(self, name):
        """Multiply-adds of one forward pass of layer ``name`` for one image (0 for layers
        without weights): conv: output elements x (C_in x KH x KW); linear: in x out."""
        s = self.spec(name)
        return REGISTRY[s.kind].macs(s.in_shape, s.out_shape, s.args) if s.kind in REGISTRY else 0

    @property
    def total_macs(self):
        return sum(self.macs(n) for n in self.layer_names)

    def receptive_field(self, name):
        """:class:`ReceptiveField` of one output pixel of layer ``name`` on the input image."""
        size, jump = (1, 1), (1, 1)
        for s in self.layers:
            if s.kind == "Flatten" or len(s.out_shape) == 1:
                return ReceptiveField(self.input_shape[1:], jump, whole=True)
            w = _window(s)
            if w is not None:
                (kh, kw), (sh, sw), _ = w
                size = (size[0] + (kh - 1) * jump[0], size[1] + (kw - 1) * jump[1])
                jump = (jump[0] * sh, jump[1] * sw)
            if s.name == name:
                return ReceptiveField(size, jump)
        raise KeyError(f"no layer {name!r}")

    def input_region(self, name, y, x):
        """The input pixels output pixel (y, x) of layer ``name`` depends on:
        ``(y0, y1, x0, x1)``, inclusive, clipped to the image (padding is not input).
        Walks the windows back from that layer: rows lo..hi of a layer's output read
        rows lo*S - P .. hi*S - P + K - 1 of its input."""
        index = self.layer_names.index(self.spec(name).name)
        if len(self.layers[index].out_shape) != 3:
            raise ValueError(f"{name}'s output has no pixels; every input pixel counts")
        y0, y1, x0, x1 = y, y, x, x
        for s in reversed(self.layers[:index + 1]):
            w = _window(s)
            if w is not None:
                (kh, kw), (sh, sw), (ph, pw) = w
                y0, y1 = y0 * sh - ph, y1 * sh - ph + kh - 1
                x0, x1 = x0 * sw - pw, x1 * sw - pw + kw - 1
                y0, y1 = max(y0, 0), min(y1, s.in_shape[1] - 1)
                x0, x1 = max(x0, 0), min(x1, s.in_shape[2] - 1)
        return y0, y1, x0, x1

    # ---------------------------------------------------------------- as data
    def to_json(self):
        """The spec with every name and argument written out (what checkpoints record)."""
        return [{"name": s.name, "kind": s.kind, **s.args} for s in self.layers]

    def __eq__(self, other):
        return isinstance(other, Architecture) and self.to_json() == other.to_json()

    def __hash__(self):
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def __repr__(self):
        return f"Architecture({self.name!r}, {len(self.layers)} layers, {self.n_params:,} parameters)"


def _window(s):
    cls = REGISTRY.get(s.kind)
    return cls.window(s.args) if cls is not None and len(s.in_shape) == 3 else None


# ---------------------------------------------------------------- building one

def resolve(spec, num_classes=None, name="custom", input_shape=INPUT_SHAPE, base_dir=None,
            allow_custom=True):
    """Check and complete ``spec`` (a list of layer dicts); return an :class:`Architecture`.

    num_classes: the dataset's classes: the last Linear's omitted ``out_features``, and the
    least number of outputs the network must have (None: the spec must give them).
    base_dir: where a custom layer's file path is relative to (the spec file's folder).
    allow_custom: False refuses "file.py:Class" kinds (loading one runs that file's code).
    Raises :class:`SpecError` (one line) for anything that cannot work.
    """
    if not isinstance(spec, list) or not spec:
        raise SpecError(f"network spec {name!r}: expected a non-empty JSON list of layers, "
                        f"got {type(spec).__name__}")
    if len(spec) > MAX_LAYERS:
        raise SpecError(f"network spec {name!r} has {len(spec)} layers; at most {MAX_LAYERS} are allowed")
    if num_classes is not None and not 1 <= num_classes <= MAX_CLASSES:
        raise SpecError(f"{num_classes} classes: at most {MAX_CLASSES} are supported")
    last_linear = max((i for i, e in enumerate(spec) if isinstance(e, dict) and e.get("kind") == "Linear"),
                      default=None)
    layers, names, shape, number, activations = [], set(), tuple(input_shape), 0, 0
    for i, entry in enumerate(spec):
        where = f"layer {i + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            raise SpecError(f"{where}: expected an object with a \"kind\" (a torch.nn class name such as "
                            f"\"Conv2d\"), got {json.dumps(entry)[:60]}")
        kind = entry["kind"]
        cls = _layer_class(kind, where, base_dir, allow_custom)
        if ":" in kind:                       # recorded with the file's absolute path
            kind = f"{cls.source_file}:{cls.__name__}"
        if kind in NUMBERED:
            number += 1
        layer_name = _layer_name(entry, kind, number, names, where)
        where = f"layer {i + 1} ({layer_name}, {kind.rsplit(':', 1)[-1]})"
        names.add(layer_name)
        args = _check_args(cls, {k: v for k, v in entry.items() if k not in ("kind", "name")}, where)
        args = _infer(cls, args, shape, where)
        if kind == "Linear" and "out_features" not in args:
            if i != last_linear:
                raise SpecError(f"{where}: out_features is missing (only the last Linear may omit it: "
                                f"it then gets the dataset's number of classes)")
            if num_classes is None:
                raise SpecError(f"{where}: out_features is missing and no dataset says how many classes "
                                f"there are; give out_features")
            args["out_features"] = num_classes
        args = {k: args[k] for k in _allowed_args(cls) if k in args}        # constructor order
        missing = [a for a in _required(cls) if a not in args]
        if missing:
            raise SpecError(f"{where}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
        try:
            out = tuple(int(d) for d in cls.output_shape(shape, args))
            params = tuple((k, tuple(s)) for k, s in cls.param_shapes(args))
            buffers = tuple((k, tuple(s), d) for k, s, d in cls.buffer_shapes(args))
        except (ValueError, TypeError, KeyError) as e:
            raise SpecError(f"{where}: {e}") from None
        if not out or min(out) < 1:
            raise SpecError(f"{where}: its output would be {out}, which is empty")
        activations += math.prod(out)
        layers.append(LayerSpec(layer_name, kind, args, shape, out, params, buffers))
        shape = out
    if len(shape) != 1:
        raise SpecError(f"network spec {name!r} ends with {layers[-1].name} whose output is {shape}, not a "
                        f"vector of class scores; end with Flatten and Linear")
    if num_classes is not None and shape[0] < num_classes:
        raise SpecError(f"network spec {name!r} ends with {shape[0]} outputs, but the data has {num_classes} "
                        f"classes; omit the last Linear's out_features (it then takes the number of classes)")
    arch = Architecture(layers, name, input_shape, num_classes, base_dir)
    if arch.n_params > MAX_PARAMS:
        worst = max(layers, key=lambda s: sum(math.prod(p) for _, p in s.params))
        raise SpecError(f"network spec {name!r} has {arch.n_params:,} parameters, more than {MAX_PARAMS:,}; "
                        f"the largest layer is {worst.name} {worst.kind} ({_param_count(worst):,}): make it smaller")
    if activations > MAX_ACTIVATIONS:
        raise SpecError(f"network spec {name!r}: its layer outputs hold {activations:,} values per image, more "
                        f"than {MAX_ACTIVATIONS:,} (a batch of 32 would need {activations * 32 * 8 / 2**30:.1f} GiB "
                        f"with gradients); use fewer channels or pool earlier")
    return arch


def _param_count(s):
    return sum(math.prod(p) for _, p in s.params)


def _layer_class(kind, where, base_dir, allow_custom):
    if kind in REGISTRY:
        return REGISTRY[kind]
    if ":" in kind:
        if not allow_custom:
            raise SpecError(f"{where}: {kind!r} is your own layer, and loading it would run the code in "
                            f"that file; this command does not load code named by a checkpoint "
                            f"(pass --allow-custom-layers if you trust it)")
        from scratchcnn.custom import load_layer_class
        try:
            return load_layer_class(kind, base_dir, where)
        except UserError as e:
            raise SpecError(str(e)) from None
    known = ", ".join(sorted(REGISTRY))
    raise SpecError(f"{where}: unknown kind {kind!r}; scratchcnn has {known} "
                    f"(or \"file.py:ClassName\" for your own layer)")


def _layer_name(entry, kind, number, taken, where):
    if "name" in entry:
        name = entry["name"]
        if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
            raise SpecError(f"{where}: name {name!r} must start with a lower-case letter and hold only "
                            f"a-z, 0-9 and _ (at most 32 characters), like conv1")
        if name in RESERVED:
            raise SpecError(f"{where}: name {name!r} is reserved (an attribute of the model); choose another")
        if name in taken:
            raise SpecError(f"{where}: name {name!r} is used twice; layer names must be unique")
        return name
    prefix = PREFIX.get(kind, re.sub(r"[^a-z0-9]", "", kind.rsplit(":", 1)[-1].lower())[:20] or "layer")
    base = prefix if kind == "Flatten" else f"{prefix}{number}"
    name, k = base, 2
    while name in taken or name in RESERVED:
        name, k = f"{base}_{k}", k + 1
    return name


def _allowed_args(cls):
    import inspect
    if cls.ARGS:
        return list(cls.ARGS)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "dtype", "rng", "seed")]


def _required(cls):
    import inspect
    sig = inspect.signature(cls.__init__).parameters
    return [a for a in _allowed_args(cls) if a in sig and sig[a].default is inspect.Parameter.empty]


def _check_args(cls, args, where):
    allowed = _allowed_args(cls)
    defaults = cls.defaults()
    for key, value in args.items():
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no arguments"
            raise SpecError(f"{where}: unknown argument {key!r}; it takes {takes}")
        check = ARG_TYPES.get(cls.ARGS.get(key))
        if value is None and defaults.get(key, "no default") is None:
            continue
        problem = check(value) if check else None
        if problem:
            raise SpecError(f"{where}: {key} {problem}")
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()}


def _infer(cls, args, in_shape, where):
    """Fill in_channels / in_features / num_features from the input shape, or check them."""
    args = dict(args)
    for arg, what in cls.INFER.items():
        if what == "channels":
            if len(in_shape) != 3:
                raise SpecError(f"{where}: needs a (channels, height, width) input, but its input is "
                                f"{in_shape} (flat features); it cannot follow Flatten or Linear")
            have = in_shape[0]
        else:
            if len(in_shape) != 1:
                raise SpecError(f"{where}: needs flat features, but its input is {in_shape}: "
                                f"put a Flatten before it")
            have = in_shape[0]
        if arg not in args:
            args[arg] = have
        elif args[arg] != have:
            raise SpecError(f"{where}: {arg} is {args[arg]}, but its input has {have} "
                            f"{'channels' if what == 'channels' else 'features'}; "
                            f"omit {arg} to take it from the previous layer")
    return args


# ---------------------------------------------------------------- names and files

def load(arch, num_classes=None, allow_custom=True):
    """An :class:`Architecture` from a preset name, a JSON file path, a list spec, or one already
    resolved (returned as it is). num_classes: as in :func:`resolve`."""
    if isinstance(arch, Architecture):
        return arch
    if isinstance(arch, list):
        return resolve(arch, num_classes, allow_custom=allow_custom)
    if not isinstance(arch, str) or not arch:
        raise SpecError(f"--arch must be a preset name or a JSON file, got {arch!r}")
    if arch in PRESETS:
        return resolve(PRESETS[arch][1], num_classes, name=arch)
    if not os.path.exists(arch):
        import difflib
        close = difflib.get_close_matches(arch, PRESETS, n=1)
        raise SpecError(f"--arch {arch!r}: no preset of that name and no such file; the presets are "
                        f"{', '.join(PRESETS)}{f' (did you mean {close[0]}?)' if close else ''}, "
                        f"or give a .json file")
    if os.path.isdir(arch):
        raise SpecError(f"--arch {arch!r} is a folder; give a .json file holding a list of layers")
    try:
        with open(arch, encoding="utf-8") as f:
            spec = json.load(f)
    except ValueError as e:
        raise SpecError(f"--arch {arch!r} is not valid JSON ({e})") from None
    except OSError as e:
        raise SpecError(f"cannot read --arch {arch!r} ({e.strerror})") from None
    return resolve(spec, num_classes, name=arch, base_dir=os.path.dirname(os.path.abspath(arch)),
                   allow_custom=allow_custom)


def tutorial(num_classes=NUM_CLASSES):
    """The tutorial's network (10 classes unless told otherwise)."""
    return resolve(_TUTORIAL, num_classes, name="tutorial")


def matching_presets(state_shapes):
    """Preset names whose state_dict keys and shapes equal ``state_shapes`` ({key: shape})."""
    out = []
    for name, (_, spec) in PRESETS.items():
        last = [k for k in state_shapes if k.endswith(".weight")]
        classes = state_shapes[last[-1]][0] if last and len(state_shapes[last[-1]]) == 2 else NUM_CLASSES
        try:
            arch = resolve(spec, classes, name=name)
        except SpecError:
            continue
        if {k: s for k, (s, _) in arch.state_shapes().items()} == state_shapes:
            out.append(name)
    return out


def describe(arch):
    """The text ``scratchcnn arch show`` prints: one line per layer, then the totals."""
    rows = []
    for i, s in enumerate(arch.layers, 1):
        rf = arch.receptive_field(s.name)
        rows.append((str(i), s.name, s.kind.rsplit(":", 1)[-1], ", ".join(f"{k}={_short(v)}" for k, v in s.args.items()),
                     _shape(s.out_shape), f"{_param_count(s):,}", f"{arch.macs(s.name):,}",
                     "all" if rf.whole else "x".join(map(str, rf.size)) if rf.size[0] != rf.size[1] else str(rf.size[0])))
    head = ("#", "name", "kind", "arguments", "output", "params", "mult-adds", "RF")
    widths = [max(len(r[c]) for r in rows + [head]) for c in range(len(head))]
    right = (0, 5, 6, 7)

    def line(r):
        return "  ".join(v.rjust(w) if c in right else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip()
    rule = "-" * len(line(head))
    return "\n".join([f"{arch.name}: {len(arch.layers)} layers, input {'x'.join(map(str, arch.input_shape))}, "
                      f"{arch.num_classes} outputs", line(head), rule, *map(line, rows), rule,
                      f"parameters {arch.n_params:,}; multiply-adds per image {arch.total_macs:,}",
                      "RF: the receptive field, the input pixels (height x width) one output pixel depends on"])


def _short(v):
    return "x".join(map(str, v)) if isinstance(v, list) else str(v)


def _shape(shape):
    return "x".join(map(str, shape))
