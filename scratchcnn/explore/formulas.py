"""One number of the network written out: how it was computed, for every kind of layer.

Forward: ``forward(kind, ...)`` explains one output value of a layer from the layer's
input (the output of the layer before it, or the image), for every kind of
``scratchcnn.layers``:

    Conv2d      bias[f] + sum_{c,i,j} W[f,c,i,j] * xp[c, y*SH+i, x*SW+j]   (xp: x zero-padded)
    ReLU, LeakyReLU, Tanh, Sigmoid      the function of the one input value
    MaxPool2d   the window, and which element won
    AvgPool2d   the window and its mean
    BatchNorm2d (x - running_mean) / sqrt(running_var + eps) * weight + bias   (eval mode)
    Dropout     the input itself (eval mode: dropout is off)
    Flatten     which (c, y, x) of the input the unit is
    Linear      bias[i] + sum_j W[i,j] x[j]: the largest products, the rest summed
    Softmax     exp(z_i - max z) / sum_k exp(z_k - max z)

Backward: ``backward(next_kind, ...)`` explains one element of ds/d(a layer's output)
from the layer ABOVE it, the one that read that output: its backward pass applied to
the gradient it received (``scratchcnn.layers``' docstrings give each formula):

    Conv2d      sum_{f,i,j} ds/dout[f, (h+PH-i)/SH, (w+PW-j)/SW] * W[f,c,i,j]  (the transposed
                convolution: taps whose output position is not a whole number inside the map
                read the gradient map's zero padding)
    ReLU etc.   the upstream gradient times the local derivative (ReLU: the gate x > 0)
    MaxPool2d   the windows holding the element; each routes its gradient to its winner only
    AvgPool2d   each window holding the element gives it 1/(KH*KW) of its gradient
    BatchNorm2d ds/dout * weight / sqrt(running_var + eps)
    Linear      sum_i ds/dout[i] * W[i,j]: the largest products, the rest summed
    (the logits) s = z_target, so ds/dz_i is 1 for the target class and 0 otherwise

and ``weight_gradient`` one element of ds/dW of a Conv2d:
sum_{y,x} ds/dout[f,y,x] * xp[c, y*SH+i, x*SW+j].

Every function takes NumPy arrays of ONE image (no batch axis), computes in float64
and returns a JSON-ready dict with ``"formula"`` (which explanation it is) and
``"computed"`` (the value the written-out arithmetic gives). A kind without a
written-out formula here (a learner's own layer) gets ``{"formula": "none"}``.
"""
import math

import numpy as np

from scratchcnn.layer_base import pair

TOP_TERMS = 8                      # a dot product lists its largest products, and sums the rest


def _f(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _list(a):
    return np.asarray(a, np.float64).tolist()


def conv_geometry(args):
    """((KH, KW), (SH, SW), (PH, PW)) of a Conv2d's arguments."""
    return pair(args["kernel_size"]), pair(args.get("stride", 1)), pair(args.get("padding", 0))


def pool_geometry(args):
    k = pair(args["kernel_size"])
    return k, pair(args["stride"]) if args.get("stride") is not None else k


def _top_terms(products, labels, k=TOP_TERMS):
    """The k largest |products| as terms, and the sum and count of the rest."""
    order = np.argsort(-np.abs(products), kind="stable")
    top, rest = order[:k], order[k:]
    return [labels(int(j)) for j in top], float(products[rest].sum()), int(rest.size)


# ---------------------------------------------------------------------------- forward
def forward(kind, args, params, x_in, out, index, unflat=None):
    """How output ``index`` of a layer of ``kind`` came from its input ``x_in``.
    params: {"weight": ..., "bias": ..., "running_mean": ...} of that layer; out: its output;
    unflat: for a Linear reading a flattened map, that map's (C, H, W)."""
    fn = _FORWARD.get(kind)
    if fn is None:
        return {"formula": "none", "computed": None}
    r = fn(args, params, np.asarray(x_in, np.float64), index, unflat)
    r["value"] = _f(out[tuple(index)])
    return r


def _conv_forward(args, params, x, index, _):
    f, y, xo = index
    (kh, kw), (sh, sw), (ph, pw) = conv_geometry(args)
    c_in, h, w = x.shape
    top, left = y * sh - ph, xo * sw - pw
    rows, cols = top + np.arange(kh), left + np.arange(kw)
    inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    patch = np.zeros((c_in, kh, kw))
    r, c = np.nonzero(inside)
    patch[:, r, c] = x[:, rows[r], cols[c]]
    kernel = np.asarray(params["weight"][f], np.float64)
    products = patch * kernel
    partial = products.sum(axis=(1, 2))
    bias = float(params["bias"][f]) if params.get("bias") is not None else 0.0
    total = float(partial.sum())
    return {"formula": "conv", "channel": f, "y": y, "x": xo, "top": top, "left": left,
            "kernel_size": [kh, kw], "stride": [sh, sw], "padding": [ph, pw],
            "patch": _list(patch), "kernel": _list(kernel), "products": _list(products),
            "partial": _list(partial), "inside": inside.tolist(), "n_products": int(products.size),
            "sum": total, "bias": bias, "has_bias": params.get("bias") is not None, "computed": total + bias}


def _elementwise(kind):
    def explain(args, params, x, index, _):
        v = float(x[tuple(index)])
        if kind == "ReLU":
            out = max(v, 0.0)
        elif kind == "LeakyReLU":
            out = v if v > 0 else args.get("negative_slope", 0.01) * v
        elif kind == "Tanh":
            out = math.tanh(v)
        elif kind == "Sigmoid":
            out = 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
        else:                                        # Dropout in eval mode
            out = v
        return {"formula": "elementwise", "function": kind, "input_value": v, "computed": out,
                "negative_slope": args.get("negative_slope", 0.01) if kind == "LeakyReLU" else None,
                "p": args.get("p", 0.5) if kind == "Dropout" else None}
    return explain


def _pool_forward(kind):
    def explain(args, params, x, index, _):
        c, y, xo = index
        (kh, kw), (sh, sw) = pool_geometry(args)
        window = x[c, y * sh:y * sh + kh, xo * sw:xo * sw + kw]
        r = {"formula": "maxpool" if kind == "MaxPool2d" else "avgpool", "channel": c, "y": y, "x": xo,
             "top": y * sh, "left": xo * sw, "kernel_size": [kh, kw], "stride": [sh, sw],
             "window": _list(window)}
        if kind == "MaxPool2d":
            i = int(np.argmax(window))                   # the first maximum, as torch's CPU kernel
            r.update(winner=[i // kw, i % kw], computed=float(window.flat[i]))
        else:
            r.update(sum=float(window.sum()), count=int(window.size), computed=float(window.mean()))
        return r
    return explain


def _bn_forward(args, params, x, index, _):
    c = index[0]
    v = float(x[tuple(index)])
    mean, var = float(params["running_mean"][c]), float(params["running_var"][c])
    eps = float(args.get("eps", 1e-5))
    weight = float(params["weight"][c]) if params.get("weight") is not None else 1.0
    bias = float(params["bias"][c]) if params.get("bias") is not None else 0.0
    rstd = 1 / math.sqrt(var + eps)
    xhat = (v - mean) * rstd
    return {"formula": "batchnorm", "channel": c, "input_value": v, "running_mean": mean,
            "running_var": var, "eps": eps, "weight": weight, "bias": bias, "rstd": rstd, "xhat": xhat,
            "computed": xhat * weight + bias}


def _flatten_forward(args, params, x, index, _):
    (i,) = index
    source = [int(v) for v in np.unravel_index(i, x.shape)]
    return {"formula": "flatten", "source": source, "source_shape": list(x.shape),
            "computed": float(x[tuple(source)])}


def _unflat_label(unflat):
    def label(j):
        return [int(v) for v in np.unravel_index(j, unflat)] if unflat else None
    return label


def _linear_forward(args, params, x, index, unflat):
    (i,) = index
    w = np.asarray(params["weight"][i], np.float64)
    products = w * x
    where = _unflat_label(unflat)
    terms, rest, n_rest = _top_terms(products, lambda j: {"j": j, "x": float(x[j]), "w": float(w[j]),
                                                             "product": float(products[j]), "at": where(j)})
    bias = float(params["bias"][i]) if params.get("bias") is not None else 0.0
    total = float(products.sum())
    return {"formula": "linear", "unit": i, "n_in": int(x.size), "terms": terms, "rest": rest,
            "n_rest": n_rest, "sum": total, "bias": bias, "has_bias": params.get("bias") is not None,
            "zeros": int((x == 0).sum()), "computed": total + bias}


def softmax_forward(logits, index, probs):
    """p_i = exp(z_i - max z) / sum_k exp(z_k - max z), written out for class i."""
    (i,) = index
    z = np.asarray(logits, np.float64)
    shift = float(z.max())
    exps = np.exp(z - shift)
    return {"formula": "softmax", "unit": i, "logits": _list(z), "shift": shift, "exps": _list(exps),
            "sum": float(exps.sum()), "computed": float(exps[i] / exps.sum()), "value": _f(probs[i])}


_FORWARD = {"Conv2d": _conv_forward, "ReLU": _elementwise("ReLU"), "LeakyReLU": _elementwise("LeakyReLU"),
            "Tanh": _elementwise("Tanh"), "Sigmoid": _elementwise("Sigmoid"), "Dropout": _elementwise("Dropout"),
            "MaxPool2d": _pool_forward("MaxPool2d"), "AvgPool2d": _pool_forward("AvgPool2d"),
            "BatchNorm2d": _bn_forward, "Flatten": _flatten_forward, "Linear": _linear_forward}
FORWARD_KINDS = tuple(_FORWARD) + ("Softmax",)


# ---------------------------------------------------------------------------- backward
def score(target, index, n):
    """ds/dz_i of the class score s = z_target."""
    (i,) = index
    return {"formula": "score", "unit": i, "target": int(target), "n": int(n), "computed": float(i == target)}


def backward(next_kind, args, params, x, out, g_up, index, unflat=None):
    """How ds/dx[index] came back through the layer above (kind ``next_kind``), which read
    ``x`` (its input: the output whose gradient this is), wrote ``out`` and received
    ``g_up`` = ds/d(its output). params: that layer's parameters and buffers."""
    fn = _BACKWARD.get(next_kind)
    if fn is None:
        return {"formula": "none", "computed": None}
    return fn(args, params, np.asarray(x, np.float64), np.asarray(out, np.float64),
              np.asarray(g_up, np.float64), list(index), unflat)


def _conv_backward(args, params, x, out, g, index, _):
    c, h, w = index
    (kh, kw), (sh, sw), (ph, pw) = conv_geometry(args)
    n_out, oh, ow = g.shape
    weight = np.asarray(params["weight"][:, c], np.float64)           # (F, KH, KW)
    ys, xs = h + ph - np.arange(kh), w + pw - np.arange(kw)           # sh*y for tap i, sw*x for tap j
    y_ok = (ys % sh == 0) & (ys >= 0) & (ys // sh < oh)
    x_ok = (xs % sw == 0) & (xs >= 0) & (xs // sw < ow)
    valid = y_ok[:, None] & x_ok[None, :]
    taps = np.zeros((n_out, kh, kw))
    i, j = np.nonzero(valid)
    taps[:, i, j] = g[:, ys[i] // sh, xs[j] // sw]
    products = taps * weight
    partial = products.sum(axis=(1, 2))
    positions = [[[int(ys[a] // sh), int(xs[b] // sw)] if valid[a, b] else None for b in range(kw)]
                 for a in range(kh)]
    return {"formula": "conv_input", "channel": c, "y": h, "x": w, "kernel_size": [kh, kw],
            "stride": [sh, sw], "padding": [ph, pw], "valid": valid.tolist(), "positions": positions,
            "upstream": _list(taps), "weights": _list(weight), "products": _list(products),
            "partial": _list(partial), "n_terms": int(valid.sum() * n_out), "computed": float(partial.sum())}


def _elementwise_backward(kind):
    def explain(args, params, x, out, g, index, _):
        e = tuple(index)
        v, o, up = float(x[e]), float(out[e]), float(g[e])
        if kind == "ReLU":
            local = 1.0 if v > 0 else 0.0
        elif kind == "LeakyReLU":
            local = 1.0 if v > 0 else float(args.get("negative_slope", 0.01))
        elif kind == "Tanh":
            local = 1 - o * o
        elif kind == "Sigmoid":
            local = o * (1 - o)
        else:                                   # Dropout, eval mode
            local = 1.0
        return {"formula": "elementwise_input", "function": kind, "input_value": v, "output_value": o,
                "upstream": up, "local": local, "computed": up * local,
                "negative_slope": args.get("negative_slope", 0.01) if kind == "LeakyReLU" else None}
    return explain


def _pool_backward(kind):
    def explain(args, params, x, out, g, index, _):
        c, h, w = index
        (kh, kw), (sh, sw) = pool_geometry(args)
        _, oh, ow = g.shape
        windows, total = [], 0.0
        for y in range(max(0, -(-(h - kh + 1) // sh)), min(oh - 1, h // sh) + 1):
            for xo in range(max(0, -(-(w - kw + 1) // sw)), min(ow - 1, w // sw) + 1):
                win = x[c, y * sh:y * sh + kh, xo * sw:xo * sw + kw]
                up = float(g[c, y, xo])
                entry = {"y": y, "x": xo, "top": y * sh, "left": xo * sw, "upstream": up, "window": _list(win)}
                if kind == "MaxPool2d":
                    k = int(np.argmax(win))
                    winner = [y * sh + k // kw, xo * sw + k % kw]
                    entry.update(winner=winner, routed=winner == [h, w], share=up if winner == [h, w] else 0.0)
                else:
                    entry.update(share=up / (kh * kw))
                total += entry["share"]
                windows.append(entry)
        return {"formula": "maxpool_input" if kind == "MaxPool2d" else "avgpool_input", "channel": c,
                "y": h, "x": w, "kernel_size": [kh, kw], "stride": [sh, sw], "windows": windows,
                "computed": total}
    return explain


def _bn_backward(args, params, x, out, g, index, _):
    c = index[0]
    var, eps = float(params["running_var"][c]), float(args.get("eps", 1e-5))
    weight = float(params["weight"][c]) if params.get("weight") is not None else 1.0
    rstd = 1 / math.sqrt(var + eps)
    up = float(g[tuple(index)])
    return {"formula": "batchnorm_input", "channel": c, "upstream": up, "weight": weight, "running_var": var,
            "eps": eps, "rstd": rstd, "computed": up * weight * rstd}


def _flatten_backward(args, params, x, out, g, index, _):
    flat = int(np.ravel_multi_index(tuple(index), x.shape))
    return {"formula": "flatten_input", "unit": flat, "upstream": float(g[flat]), "computed": float(g[flat])}


def _linear_backward(args, params, x, out, g, index, unflat):
    (j,) = index
    w = np.asarray(params["weight"][:, j], np.float64)
    products = g * w
    terms, rest, n_rest = _top_terms(products, lambda i: {"i": i, "upstream": float(g[i]), "w": float(w[i]),
                                                             "product": float(products[i])})
    return {"formula": "linear_input", "unit": j, "at": _unflat_label(unflat)(j), "n_out": int(g.size),
            "terms": terms, "rest": rest, "n_rest": n_rest, "computed": float(products.sum())}


_BACKWARD = {"Conv2d": _conv_backward, "ReLU": _elementwise_backward("ReLU"),
             "LeakyReLU": _elementwise_backward("LeakyReLU"), "Tanh": _elementwise_backward("Tanh"),
             "Sigmoid": _elementwise_backward("Sigmoid"), "Dropout": _elementwise_backward("Dropout"),
             "MaxPool2d": _pool_backward("MaxPool2d"), "AvgPool2d": _pool_backward("AvgPool2d"),
             "BatchNorm2d": _bn_backward, "Flatten": _flatten_backward, "Linear": _linear_backward}
BACKWARD_KINDS = tuple(_BACKWARD)


def weight_gradient(args, x, g, index):
    """ds/dW[f,c,i,j] of a Conv2d: sum over output positions (y, x) of ds/dout[f,y,x] times the
    input value that tap (i, j) read there, xp[c, y*SH+i, x*SW+j] (0 in the padding).
    x: the layer's input (C, H, W); g: ds/d(its output) (F, OH, OW). Returns the three maps
    (upstream, input read, products; each OH x OW) and their sum."""
    f, c, i, j = index
    (kh, kw), (sh, sw), (ph, pw) = conv_geometry(args)
    _, oh, ow = g.shape
    xp = np.pad(np.asarray(x[c], np.float64), ((ph, ph), (pw, pw)))
    read = xp[i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
    up = np.asarray(g[f], np.float64)
    products = up * read
    rows = np.arange(oh)[:, None] * sh + i - ph
    cols = np.arange(ow)[None, :] * sw + j - pw
    padded = ~(((rows >= 0) & (rows < x.shape[1])) & ((cols >= 0) & (cols < x.shape[2])))
    terms, rest, n_rest = _top_terms(products.ravel(), lambda k: {
        "y": k // ow, "x": k % ow, "upstream": float(up.flat[k]), "input": float(read.flat[k]),
        "product": float(products.flat[k])})
    return {"formula": "conv_weight", "out_channel": f, "in_channel": c, "i": i, "j": j,
            "kernel_size": [kh, kw], "stride": [sh, sw], "padding": [ph, pw], "shape": [oh, ow],
            "upstream": up, "input": read, "products": products, "padded": int(padded.sum()),
            "terms": terms, "rest": rest, "n_rest": n_rest, "computed": float(products.sum())}
