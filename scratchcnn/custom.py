"""Your own layer: a class in your own file, used in a spec and checked like ours.

A spec names it by file and class, ``{"kind": "my_layers.py:MyLeakyReLU", ...}``; the
file path is relative to the spec file (or to the current folder). The class must be a
subclass of ``scratchcnn.layer_base.Layer`` with ``forward(x)`` and ``backward(dout)``, and
declare ``torch_kind``, the ``torch.nn`` class it computes the same thing as (so the torch
backend, the parity checks and ``scratchcnn checklayer`` have a twin to compare with).
A layer that changes the shape of its input also overrides ``output_shape``; arguments
are those of its constructor. See ``examples/my_layers.py`` and the guide
docs/write-your-own-layer.md.

Loading a file runs its code, so only files the user names are loaded: a spec given to
``train --arch`` or ``checklayer``, never one only named inside a checkpoint someone sent
(``architecture.resolve(allow_custom=False)``).
"""
import importlib.util
import inspect
import os
import sys

from scratchcnn.errors import UserError
from scratchcnn.layer_base import Layer

_loaded = {}          # (absolute path, mtime) -> module


class CustomLayerError(UserError):
    """A learner's layer file or class that cannot be used: one line saying why."""


def split_kind(kind):
    """"path/to/file.py:ClassName" -> ("path/to/file.py", "ClassName")."""
    path, sep, name = kind.rpartition(":")
    if not sep or not path or not name:
        raise CustomLayerError(f"{kind!r}: name your own layer as FILE.py:ClassName")
    return path, name


def load_module(path, what):
    """Import the Python file ``path`` (once per modification) and return the module."""
    if not path.endswith(".py"):
        raise CustomLayerError(f"{what}: {path!r} is not a .py file")
    if not os.path.isfile(path):
        raise CustomLayerError(f"{what}: {path!r} does not exist")
    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _loaded:
        name = "scratchcnn_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
        spec = importlib.util.spec_from_file_location(name, key[0])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:              # the learner's code: any error is theirs to see, in one line
            del sys.modules[name]
            raise CustomLayerError(f"{what}: importing {path} failed: {type(e).__name__}: {e}") from e
        _loaded[key] = module
    return _loaded[key]


def check_layer_class(cls, where):
    """Raise CustomLayerError unless ``cls`` can be used as a layer."""
    if not (inspect.isclass(cls) and issubclass(cls, Layer)):
        raise CustomLayerError(f"{where}: {getattr(cls, '__name__', cls)!r} is not a subclass of "
                               f"scratchcnn.layer_base.Layer")
    for method in ("forward", "backward"):
        if getattr(cls, method, None) is getattr(Layer, method, None):
            raise CustomLayerError(f"{where}: {cls.__name__} has no {method}() method")
        params = list(inspect.signature(getattr(cls, method)).parameters)
        if len(params) < 2:
            raise CustomLayerError(f"{where}: {cls.__name__}.{method} must take one argument "
                                   f"({'x' if method == 'forward' else 'dout'}) besides self")


def load_layer_class(kind, base_dir, where):
    """The class named by ``kind`` ("file.py:ClassName"), checked; its ``source_file`` is set
    to the file's absolute path (what a resolved spec records)."""
    path, name = split_kind(kind)
    if base_dir and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    module = load_module(path, where)
    cls = getattr(module, name, None)
    if cls is None:
        found = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, Layer) and v is not Layer
                 and v.__module__ == module.__name__]
        raise CustomLayerError(f"{where}: {path} has no class {name!r}"
                               + (f"; it has {', '.join(found)}" if found else ""))
    check_layer_class(cls, where)
    cls.source_file = os.path.abspath(path)
    return cls
