"""``scratchcnn trace``: one training step of the scratch model, followed in numbers.

Forward, layer by layer: the output's shape and its range. Then the loss. Then
backward, from the loss to the input: each layer receives dL/d(its output) and
hands dL/d(its input) to the layer before it, filling its parameters' ``.grad``
on the way; the trace prints the shapes and L2 norms of all of them::

    g = criterion.backward()                 # dL/dlogits
    for name, layer in reversed(model.layers):
        g = layer.backward(g)                # dL/d(output) -> dL/d(input)

Dropout is on (training mode), so the step is exactly what training does.
"""
import numpy as np


def forward_backward(model, criterion, x, y):
    """Forward and backward of a scratch ``CIFAR10Model``, layer by layer, in its current mode.

    Returns ``(loss, acts, grads, dx)``: acts[name] is the layer's output, grads[name]
    is dL/d(that output), dx is dL/dx of the input. Fills every Parameter's ``.grad``.
    (The same arithmetic as ``model.backward``, unrolled so every dL/d(output) is kept.)
    """
    acts = model.forward_intermediates(x)
    loss = criterion.forward(acts[model.layers[-1][0]], y)
    g = criterion.backward()
    grads = {}
    for name, layer in reversed(model.layers):
        grads[name] = g
        g = layer.backward(g)
    return float(loss), acts, grads, g


def _norm(a):
    return float(np.linalg.norm(np.asarray(a, np.float64).ravel()))


def trace_step(model, x, y, criterion=None):
    """Run one forward + backward of ``model`` on (x, y) in training mode and record it:

    ``{"input": {shape, min, max, mean}, "forward": [{name, type, shape, min, max, mean}],
    "loss": float, "dx_norm": float,
    "backward": [{name, shape, dout_norm, din_norm, params: [(name, shape, grad norm)]}]}``,
    backward in the order it runs (fc4 first). Norms are L2 over all elements.
    """
    from scratchcnn.layers import SoftmaxCrossEntropy

    criterion = criterion or SoftmaxCrossEntropy()
    model.train()
    loss, acts, grads, dx = forward_backward(model, criterion, x, y)

    def summary(a):
        return {"shape": tuple(a.shape), "min": float(a.min()), "max": float(a.max()),
                "mean": float(a.mean())}

    forward = [{"name": name, "type": type(layer).__name__, **summary(acts[name])}
               for name, layer in model.layers]
    backward = []
    names = [name for name, _ in model.layers]
    for i in reversed(range(len(names))):
        name, layer = model.layers[i]
        din = grads[names[i - 1]] if i > 0 else dx
        backward.append({"name": name, "shape": tuple(grads[name].shape),
                         "dout_norm": _norm(grads[name]), "din_norm": _norm(din),
                         "params": [(f"{name}.{pname}", tuple(p.grad.shape), _norm(p.grad))
                                    for pname, p in layer.parameters()]})
    return {"input": summary(x), "forward": forward, "loss": loss, "backward": backward,
            "dx_norm": _norm(dx), "n_classes": acts[names[-1]].shape[1]}


def format_trace(record, header=""):
    """The record of :func:`trace_step` as a table a learner can read top to bottom."""
    lines = [header] if header else []
    lines += ["", "FORWARD: each layer's output",
              f"  {'layer':<7}{'type':<10}{'output shape':<20}{'min':>10}{'max':>10}{'mean':>10}"]
    inp = record["input"]
    lines.append(f"  {'input':<7}{'':<10}{str(inp['shape']):<20}{inp['min']:>10.4f}"
                 f"{inp['max']:>10.4f}{inp['mean']:>10.4f}")
    for r in record["forward"]:
        lines.append(f"  {r['name']:<7}{r['type']:<10}{str(r['shape']):<20}{r['min']:>10.4f}"
                     f"{r['max']:>10.4f}{r['mean']:>10.4f}")
    k = record["n_classes"]
    lines += ["", f"LOSS: softmax cross-entropy of the logits = {record['loss']:.4f}   "
                  f"(a uniform guess over {k} classes gives ln {k} = {np.log(k):.4f})",
              "", "BACKWARD: each layer turns dL/d(its output) into dL/d(its input); L2 norms",
              f"  {'layer':<7}{'dL/d output shape':<20}{'||dL/d output||':>16}{'||dL/d input||':>16}"]
    for r in record["backward"]:
        lines.append(f"  {r['name']:<7}{str(r['shape']):<20}{r['dout_norm']:>16.4e}{r['din_norm']:>16.4e}")
        for pname, shape, norm in r["params"]:
            lines.append(f"  {'':<7}  {pname}.grad {str(shape)}  ||grad|| = {norm:.4e}")
    lines.append(f"  dL/dx of the input images: ||dL/dx|| = {record['dx_norm']:.4e}")
    return "\n".join(lines)
