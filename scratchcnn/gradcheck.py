"""Central-difference gradient checks of every layer and every parameter, in float64.

For a layer with output ``out`` and a fixed random ``dout`` the scalar checked is
L = sum(out * dout), whose gradient the layer's backward(dout) returns. Each
element v of the input and of every parameter is nudged both ways:

    numeric dL/dv = (L(v + h) - L(v - h)) / (2h)
    rel error     = |analytic - numeric| / max(|analytic| + |numeric|, 1e-8)

and the check passes when the largest rel error is below 1e-7 (cs231n: below
1e-7 is good, above 1e-2 is wrong).

Step size. Between its kinks every layer here is LINEAR in any single input or
parameter, so the central difference is exact up to rounding, and rounding
shrinks as h grows: h = 1e-2, with test inputs kept more than h away from the
kinks (ReLU inputs |x| >= 0.1, pooling windows with values >= 0.05 apart, dropout
masks fixed). The loss is smooth, not linear: h = 1e-5 (error O(h^2) + rounding).

Run it:  python -m scratchcnn.gradcheck   (exit status 1 when a check fails)
"""
import argparse
import sys

import numpy as np

from scratchcnn.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, SoftmaxCrossEntropy

THRESHOLD = 1e-7


def numerical_gradient(f, a, h):
    """Central differences of the scalar ``f()`` w.r.t. every element of ``a`` (changed in place, restored)."""
    grad = np.zeros_like(a)
    flat = a.reshape(-1)                 # a view: a is C-contiguous
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        grad.flat[i] = (plus - minus) / (2 * h)
    return grad


def relative_error(analytic, numeric):
    return float(np.max(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-8)))


def check_layer(layer, x, h, **forward_kwargs):
    """[(parameter, max rel error)] for the input ("x") and each parameter of ``layer``."""
    out = layer.forward(x, **forward_kwargs)
    dout = np.random.default_rng(0).standard_normal(np.shape(out))
    analytic = {"x": layer.backward(dout)}
    analytic.update({name: p.grad.copy() for name, p in layer.parameters()})

    def loss():
        return float(np.sum(layer.forward(x, **forward_kwargs) * dout))

    arrays = {"x": x, **{name: p.data for name, p in layer.parameters()}}
    return [(name, relative_error(analytic[name], numerical_gradient(loss, arrays[name], h)))
            for name in arrays]


def _away_from_zero(rng, shape):
    """Normal values pushed to |x| >= 0.1, so a +-h step never crosses ReLU's kink."""
    x = rng.standard_normal(shape)
    return x + 0.1 * np.sign(x)


def _distinct(rng, shape):
    """Values 0.05 apart in random order: no pooling window has a tie within +-h."""
    return 0.05 * rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float64)


def cases():
    """(layer name, config, layer, x, h, forward kwargs) for every check."""
    rng = np.random.default_rng(1234)
    f64 = np.float64
    out = []
    for cin, cout, k, s, p, shape in [
        (3, 4, 3, 1, 1, (2, 3, 6, 6)),
        (3, 4, 3, 2, 0, (2, 3, 7, 5)),
        (2, 3, 5, 2, 2, (2, 2, 9, 7)),
        (4, 3, 1, 1, 0, (2, 4, 5, 6)),
        (3, 2, (3, 2), (2, 1), (1, 0), (1, 3, 6, 5)),
    ]:
        layer = Conv2d(cin, cout, k, stride=s, padding=p, dtype=f64, rng=rng)
        out.append(("Conv2d", f"k={k} s={s} p={p} x={shape}", layer, rng.standard_normal(shape), 1e-2, {}))
    layer = Conv2d(3, 2, 3, padding=1, bias=False, dtype=f64, rng=rng)
    out.append(("Conv2d", "k=3 s=1 p=1 no bias x=(2, 3, 5, 5)", layer, rng.standard_normal((2, 3, 5, 5)), 1e-2, {}))
    out.append(("Linear", "7->5 x=(3, 7)", Linear(7, 5, dtype=f64, rng=rng), rng.standard_normal((3, 7)), 1e-2, {}))
    out.append(("ReLU", "x=(2, 3, 4, 5)", ReLU(), _away_from_zero(rng, (2, 3, 4, 5)), 1e-2, {}))
    for k, s, shape in [(2, None, (2, 3, 6, 6)), (3, 2, (2, 2, 7, 9)), ((2, 3), (1, 2), (1, 2, 5, 7))]:
        out.append(("MaxPool2d", f"k={k} s={s} x={shape}", MaxPool2d(k, s), _distinct(rng, shape), 1e-2, {}))
    for p in (0.3, 0.5):
        shape = (2, 3, 4, 5)
        mask = rng.random(shape) >= p
        out.append(("Dropout", f"p={p} fixed mask x={shape}", Dropout(p), rng.standard_normal(shape), 1e-2,
                    {"mask": mask}))
    out.append(("Flatten", "x=(2, 3, 4, 5)", Flatten(), rng.standard_normal((2, 3, 4, 5)), 1e-2, {}))
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
        description="Central-difference gradient checks (float64) of every scratch layer and parameter.")
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
