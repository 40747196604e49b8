"""Central-difference gradient checks of every layer and every parameter, in float64.

For a layer with output ``out`` and a fixed random ``dout`` the scalar checked is
L = sum(out * dout), whose gradient the layer's backward(dout) returns. Each
element v of the input and of every parameter is nudged both ways:

    numeric dL/dv = sum((out(v + h) - out(v - h)) * dout) / (2h)
    rel error     = |analytic - numeric| / max(|analytic| + |numeric|, 1e-8)

and the check passes when the largest rel error is below 1e-7 (cs231n: below
1e-7 is good, above 1e-2 is wrong). The two outputs are subtracted before the
sum, which is the same central difference of L without the rounding of two
large sums that nearly cancel (it matters where a gradient is tiny, as in a
saturated sigmoid).

The cases are generated: every layer in the registry (``scratchcnn.layer_base.REGISTRY``)
with each of its ``examples`` (``Layer.examples``: arguments, input, forward keywords
such as a fixed dropout mask, mode, step ``h`` and state), plus the loss. A layer
added to the registry is checked here without a line of this file changing.

Step size. Between its kinks every layer here is LINEAR in any single input or
parameter, so the central difference is exact up to rounding, and rounding
shrinks as h grows: h = 1e-2, with test inputs kept more than h away from the
kinks (ReLU inputs |x| >= 0.1, pooling windows with values >= 0.05 apart, dropout
masks fixed; ``layer_base.gradcheck_input``). Smooth layers (Tanh, Sigmoid,
BatchNorm2d) and the loss: a small h (1e-4 to 1e-5; error O(h^2) + rounding).

Run it:  python -m scratchcnn.gradcheck   (exit status 1 when a check fails)
"""
import argparse
import sys
import zlib

import numpy as np

from scratchcnn.layer_base import REGISTRY
from scratchcnn.layers import SoftmaxCrossEntropy

THRESHOLD = 1e-7


def numerical_gradient(f, a, h, dout=None):
    """Central differences of the scalar ``f()`` w.r.t. every element of ``a`` (changed in place,
    restored). With ``dout``, ``f()`` returns an array and the scalar is sum(f() * dout), its two
    values subtracted elementwise before the sum."""
    grad = np.zeros_like(a)
    flat = a.reshape(-1)                 # a view: a is C-contiguous
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = np.array(f(), copy=True)  # f() may return a view of a (Flatten does)
        flat[i] = old - h
        diff = plus - f()
        flat[i] = old
        grad.flat[i] = (diff if dout is None else np.sum(diff * dout)) / (2 * h)
    return grad


def relative_error(analytic, numeric):
    return float(np.max(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-8)))


def upstream_gradient(shape, seed=0, dtype=np.float64):
    """The fixed random ``dout`` of the checks: standard normal values from a generator of its
    own, ``default_rng([seed, 8191])``. Not ``default_rng(seed)``: an example input drawn from
    that generator would be ``dout`` itself, and for a layer such as BatchNorm2d, whose input
    gradient vanishes when ``dout`` is an affine function of the input, the check would then
    compare two zeros made of rounding."""
    return np.random.default_rng([seed, 8191]).standard_normal(shape).astype(dtype)


def check_layer(layer, x, h, **forward_kwargs):
    """[(parameter, max rel error)] for the input ("x") and each parameter of ``layer``."""
    out = layer.forward(x, **forward_kwargs)
    dout = upstream_gradient(np.shape(out))
    analytic = {"x": layer.backward(dout)}
    analytic.update({name: p.grad.copy() for name, p in layer.parameters()})

    def output():
        return layer.forward(x, **forward_kwargs)

    arrays = {"x": x, **{name: p.data for name, p in layer.parameters()}}
    return [(name, relative_error(analytic[name], numerical_gradient(output, arrays[name], h, dout)))
            for name in arrays]


def layer_examples(registry=None):
    """[(kind, index, Example)] for every registered layer (or ``registry``: {kind: class}),
    each kind's examples drawn from a generator seeded by its name, so that adding a layer
    changes no other layer's cases."""
    registry = REGISTRY if registry is None else registry
    return [(kind, i, example) for kind, cls in registry.items()
            for i, example in enumerate(cls.examples(np.random.default_rng(zlib.crc32(kind.encode()))))]


def describe(cls, example):
    """One line for an example: its arguments other than the defaults, the input shape, the mode
    and any fixed forward keyword, e.g. ``in_channels=3 out_channels=4 kernel_size=3x2 x=(1, 3, 6, 5)``."""
    defaults = cls.defaults()
    args = [f"{k}={'x'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
            for k, v in example.args.items() if k not in defaults or defaults[k] != v]
    words = args + [f"x={tuple(np.shape(example.x))}"] + (["eval"] if example.mode == "eval" else [])
    return " ".join(words + [f"fixed {k}" for k in example.forward_kwargs])


def cases():
    """(layer name, config, layer, x, h, forward kwargs) for every check: every registered
    layer with each of its examples (float64), then the loss."""
    out = []
    for kind, _, example in layer_examples():
        layer = REGISTRY[kind].build_example(example, np.float64)
        out.append((kind, describe(REGISTRY[kind], example), layer, np.array(example.x, np.float64), example.h,
                    dict(example.forward_kwargs)))
    rng = np.random.default_rng(1234)
    out.append(("SoftmaxCrossEntropy", "logits=(4, 5)", SoftmaxCrossEntropy(), rng.standard_normal((4, 5)), 1e-5,
                {"targets": rng.integers(0, 5, 4)}))
    return out


def run_gradchecks(threshold=THRESHOLD):
    """Rows (layer, config, parameter, max_rel_error, passed) for every check."""
    rows = []
    for layer_name, config, layer, x, h, kwargs in cases():
        for param, err in check_layer(layer, x, h, **kwargs):
            rows.append((layer_name, config, param, err, err < threshold))
    return rows


def main(argv=None):
    """Print the table; return 1 if any check failed, else 0."""
    parser = argparse.ArgumentParser(
        prog="scratchcnn gradcheck",
        description="Central-difference gradient checks (float64) of every registered layer (each of its "
                    "examples) and every parameter, and of the loss.")
    parser.parse_args(argv)
    rows = run_gradchecks()
    header = ("layer", "config", "parameter", "max rel error", "result")
    table = [header] + [(l, c, p, f"{e:.2e}", "ok" if ok else "FAIL") for l, c, p, e, ok in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    failed = sum(not ok for *_, ok in rows)
    print(f"\n{len(rows) - failed}/{len(rows)} gradient checks passed (float64, threshold {THRESHOLD:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
