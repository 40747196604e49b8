"""Per-layer forward / backward timings inside a worker (see benchmarks.layers).

Both frameworks run each layer of the network separately on the activations a
real forward pass feeds it (batch of random images), and take the median of
``n`` repetitions. The backward of a layer computes the gradient of its input
(except conv1, whose input needs none) and of its parameters.
"""
import time

import numpy as np

from benchmarks._workload import LAYER_NAMES, batch

NAMES = LAYER_NAMES + ("loss",)


def _median_time(fn, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def time_layers(framework, fw, n_rep, batch_size):
    x, y = batch(batch_size)
    if framework.startswith("scratch"):
        return _scratch_layers(fw, x, y, n_rep)
    return _torch_layers(fw, x, y, n_rep)


def _scratch_layers(fw, x, y, n_rep):
    model = fw.model.train()
    layers = dict(model.layers)
    out = {}
    act = x
    rng = np.random.default_rng(1)
    for name in NAMES:
        if name == "loss":
            crit = fw.crit
            fwd = _median_time(lambda: crit.forward(act, y), n_rep)
            bwd = _median_time(lambda: crit.backward(), n_rep)
        else:
            layer = layers[name]
            inp = act
            fwd = _median_time(lambda: layer.forward(inp), n_rep)
            o = layer.forward(inp)
            dout = rng.standard_normal(o.shape).astype(np.float32)
            bwd = _median_time(lambda: layer.backward(dout), n_rep)
            act = o
        out[name] = {"forward_s": fwd, "backward_s": bwd}
    return out


def _torch_layers(fw, x, y, n_rep):
    torch = fw.torch
    model = fw.model.train()
    seq = [(n, getattr(model, n)) for n in NAMES[:-1]]
    out = {}
    act = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    for name, layer in seq + [("loss", fw.loss)]:
        inp = act.detach().requires_grad_(name != "conv1")
        if name == "loss":
            f = lambda: layer(inp, yt)                    # noqa: E731
        else:
            f = lambda: layer(inp)                        # noqa: E731
        fwd = _median_time(lambda: f(), n_rep)
        wrt = ([inp] if name != "conv1" else []) + [p for p in (layer.parameters() if name != "loss" else [])]
        o = f()
        dout = torch.randn_like(o)

        def backward():
            o = f()
            t = time.perf_counter()
            torch.autograd.grad(o, wrt, dout)
            return time.perf_counter() - t
        bwd = float(np.median([backward() for _ in range(n_rep)]))
        out[name] = {"forward_s": fwd, "backward_s": bwd}
        act = o.detach()
    return out
