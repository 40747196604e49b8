"""``scratchcnn checklayer FILE.py:ClassName --torch KIND``: check your own layer the way ours are checked.

Your class (a subclass of ``scratchcnn.layer_base.Layer`` with ``forward(x)`` and
``backward(dout)``, see ``scratchcnn.custom`` and ``docs/write-your-own-layer.md``) is
built with ``--args`` and given one input of ``--shape``, and checked three ways:

* central differences in float64 (``scratchcnn.gradcheck.check_layer``): the input
  gradient and every parameter gradient your backward returns, against
  (L(v + h) - L(v - h)) / 2h for every element v, L = sum(out * dout); passes below 1e-7;
* against ``torch.nn.KIND(**args)`` in float64 and in float32 (``scratchcnn.parity.
  compare_with_twin``), holding your layer's parameters and buffers (copied by name:
  weight, bias, running_mean ...): the forward output, the input gradient, every
  parameter gradient (torch's from autograd) and every buffer after the forward pass;
  passes within ``PARITY_ULPS`` units of rounding of the dtype (16 unless your class
  says otherwise) relative to the largest torch value.

The input is drawn as your class's ``GRADCHECK_INPUT`` says (default: normal values kept at
least 0.1 from zero, where ReLU-like layers have their kink). Default shape: (2, in_features)
when ``--args`` has in_features, else (2, C, 8, 8) with C = in_channels or num_features
(default 3). Prints a table; exit status 0 when every check passes, 1 when one fails (the
summary names them), 2 when the layer cannot be checked at all (one ``error:`` line).
"""
import argparse
import difflib
import json
import os
import traceback

import numpy as np

from scratchcnn.errors import UserError
from scratchcnn.layer_base import Example, gradcheck_input

H = 1e-5             # central-difference step: exact enough for smooth layers, far inside 0.1 of a kink


def parse_shape(text):
    """"2,3,8,8" -> (2, 3, 8, 8); UserError unless 1 to 5 positive whole numbers."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not 1 <= len(shape) <= 5 or min(shape, default=0) < 1:
        raise UserError(f"--shape {text!r}: expected positive whole numbers separated by commas, "
                        f"such as 2,3,8,8 (batch, channels, height, width)")
    return shape


def parse_args_json(text):
    """--args: a JSON object of constructor arguments."""
    if text is None:
        return {}
    try:
        args = json.loads(text)
    except ValueError as e:
        raise UserError(f"--args is not valid JSON ({e}); write it like '{{\"negative_slope\": 0.1}}'") from None
    if not isinstance(args, dict):
        raise UserError(f"--args must be a JSON object of constructor arguments, such as "
                        f"'{{\"negative_slope\": 0.1}}', got {json.dumps(args)[:60]}")
    return args


def torch_class(kind):
    """``torch.nn.<kind>``, a module class; UserError otherwise (with the nearest name)."""
    import torch.nn as nn
    cls = getattr(nn, str(kind), None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or str(kind).startswith("_"):
        names = [n for n, v in vars(nn).items() if isinstance(v, type) and issubclass(v, nn.Module)]
        close = difflib.get_close_matches(str(kind), names, n=1)
        raise UserError(f"--torch {kind!r} is not a torch.nn class"
                        + (f" (did you mean {close[0]}?)" if close else " (e.g. LeakyReLU, Conv2d, BatchNorm2d)"))
    return cls


def default_shape(args):
    """(2, in_features) for a layer of flat features, else (2, C, 8, 8)."""
    if "in_features" in args:
        return (2, int(args["in_features"]))
    return (2, int(args.get("in_channels", args.get("num_features", 3))), 8, 8)


def _construct(what, make):
    try:
        return make()
    except Exception as e:                 # the learner's constructor, or torch's, refused the arguments
        raise UserError(f"{what} failed: {type(e).__name__}: {e}") from e


def _guarded(cls, call):
    """Run ``call()``; any error but a dtype or shape that differs from torch's (``TwinMismatch``,
    a failed check) becomes one line, naming your method and line when it came from your file."""
    from scratchcnn.parity import TwinMismatch
    try:
        return call()
    except (UserError, TwinMismatch):
        raise
    except Exception as e:
        source = getattr(cls, "source_file", None)
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if source and os.path.abspath(f.filename) == source]
        if frames:
            f = frames[-1]
            raise UserError(f"{cls.__name__}.{f.name} raised {type(e).__name__}: {e} "
                            f"({os.path.basename(f.filename)} line {f.lineno})") from e
        raise UserError(f"checking {cls.__name__} failed: {type(e).__name__}: {e}") from e


def _quantity(what, gradient=False, params=()):
    """What a row compares, in words. ``gradient``: ``what`` is a gradient check's name (x,
    weight, ...); else one of ``compare_with_twin``'s (``parity.quantity_name``)."""
    from scratchcnn.parity import quantity_name
    if gradient:
        return "input gradient" if what == "x" else f"{what} gradient"
    return quantity_name(what, params)


def check(cls, torch_cls, args, shape, mode="train", seed=0):
    """[(check, dtype, quantity, error, tolerance, passed, note)] for the class ``cls`` against
    ``torch_cls(**args)``; UserError when it cannot be checked (constructors, names, crashes)."""
    import torch

    from scratchcnn.gradcheck import THRESHOLD, check_layer
    from scratchcnn.parity import TwinMismatch, compare_with_twin, load_into_twin
    x = gradcheck_input(cls.GRADCHECK_INPUT, np.random.default_rng(seed), shape)
    example = Example(args, x, {}, mode=mode, h=H)
    layer = _construct(f"{cls.__name__}(**{json.dumps(args)})", lambda: cls.build_example(example, np.float64))
    twin = _construct(f"torch.nn.{torch_cls.__name__}(**{json.dumps(args)})", lambda: torch_cls(**args))
    try:
        load_into_twin(layer, twin.to(torch.float64))
    except ValueError as e:
        raise UserError(str(e)) from None
    rows = []

    def gradients():
        out = layer.forward(np.array(x))
        if not isinstance(out, np.ndarray):
            raise UserError(f"{cls.__name__}.forward returned {type(out).__name__}, not a NumPy array")
        dx = layer.backward(np.zeros_like(out))
        if np.shape(dx) != x.shape:
            raise UserError(f"{cls.__name__}.backward returned {type(dx).__name__} of shape {np.shape(dx)} "
                            f"for an input of shape {x.shape}; it must return dL/dx, shaped like x")
        return check_layer(layer, np.array(x), H)
    for what, err in _guarded(cls, gradients):
        rows.append(("central differences", "float64", _quantity(what, gradient=True), err, THRESHOLD, err < THRESHOLD, ""))
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        tol = cls.parity_tolerance(dtype)
        against = f"vs torch.nn.{torch_cls.__name__}"
        try:
            r = _guarded(cls, lambda: compare_with_twin(cls, example, dtype, seed, torch_cls(**args)))
        except TwinMismatch as e:
            what, _, note = str(e).partition(": ")
            rows.append((against, name, _quantity(what), float("inf"), tol, False, note))
            continue
        params = [n for n, _ in r.layer.parameters()]
        for what, err in r.errors.items():
            rows.append((against, name, _quantity(what, params=params), err, tol, err <= tol, ""))
    return rows


def format_rows(rows):
    head = ("check", "dtype", "quantity", "error", "tolerance", "result")
    table = [head] + [(c, d, q, "0" if e == 0 else f"{e:.1e}" if np.isfinite(e) else "-", f"{t:.1e}",
                       "ok" if ok else f"FAIL{' (' + note + ')' if note else ''}")
                      for c, d, q, e, t, ok, note in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table)


def run(spec, torch_kind=None, args_json=None, shape_text=None, mode="train"):
    """Load, check and print; return the exit status (0 all pass, 1 a check fails)."""
    from scratchcnn.custom import load_layer_class
    cls = load_layer_class(spec, None, spec)
    args = parse_args_json(args_json)
    kind = torch_kind or getattr(cls, "torch_kind", None)
    if not kind:
        raise UserError(f"{cls.__name__} declares no torch_kind; name the torch.nn class it should match "
                        f"with --torch (e.g. --torch LeakyReLU)")
    torch_cls = torch_class(kind)
    shape = parse_shape(shape_text) if shape_text is not None else default_shape(args)
    rows = check(cls, torch_cls, args, shape, mode)
    arg_text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    print(f"{cls.__name__} ({os.path.relpath(cls.source_file)}) against torch.nn.{torch_cls.__name__}({arg_text}), "
          f"input {shape}, {mode} mode\n")
    print(format_rows(rows))
    failed = [r for r in rows if not r[5]]
    if not failed:
        print(f"\nall {len(rows)} checks pass: {cls.__name__} computes what torch.nn.{torch_cls.__name__} "
              f"computes, forward and backward")
        return 0
    names = []
    for c, d, q, *_ in failed:
        names.append(f"{q} ({c}, {d})")
    print(f"\n{len(failed)} of {len(rows)} checks FAIL: {'; '.join(names)}")
    return 1


def add_parser(sub):
    from scratchcnn.arguments import HelpFormatter
    p = sub.add_parser("checklayer", help="check your own layer: gradient check and parity with a torch.nn class",
                       formatter_class=HelpFormatter,
                       description="Load FILE.py:ClassName (a subclass of scratchcnn.layer_base.Layer with forward "
                                   "and backward), check its backward against central differences (float64) and "
                                   "its forward and backward against torch.nn.KIND (float64 and float32). Exit "
                                   "status 0 when all pass, 1 when one fails. Guide: docs/write-your-own-layer.md")
    p.add_argument("layer", metavar="FILE.py:ClassName", help="your layer class")
    p.add_argument("--torch", dest="torch_kind", metavar="KIND", default=None,
                   help="the torch.nn class it must match, e.g. LeakyReLU (default: the class's torch_kind)")
    p.add_argument("--args", dest="args_json", metavar="JSON", default=None,
                   help="constructor arguments for both, as a JSON object, e.g. '{\"negative_slope\": 0.1}'")
    p.add_argument("--shape", metavar="N,C,H,W", default=None,
                   help="the input's shape (default: 2,C,8,8 with C from in_channels or num_features, else 3; "
                        "2,F for a layer with in_features F)")
    p.add_argument("--eval", dest="mode", action="store_const", const="eval", default="train",
                   help="check in eval mode (for layers that behave differently there, like BatchNorm2d)")
    p.set_defaults(func=lambda a: run(a.layer, a.torch_kind, a.args_json, a.shape, a.mode))
    return p
