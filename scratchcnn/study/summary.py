"""``scratchcnn summary``: a per-layer table of the network, like torchinfo's.

Nothing here is typed in by hand: one image goes through a freshly built scratch
``CIFAR10Model`` and each row is read off the layer afterwards (its ``.out``
shape and its Parameters), then scaled to the batch size.

    multiply-adds of a layer with a weight = output elements x weight elements per output
        conv:   (F x OH x OW) x (C x KH x KW)      e.g. conv2: 32*32*32 x 32*3*3 = 9,437,184 per image
        linear: out_features  x in_features        e.g. fc3:   512 x 8192        = 4,194,304 per image
    output memory = output elements x batch x 4 bytes (float32)
"""
import numpy as np


def summary_rows(batch_size=32):
    """``[{"name", "type", "shape", "params", "macs", "bytes"}]``: the input, then every layer.

    shape is the output shape for the batch, macs the multiply-adds for the whole batch,
    bytes the output's size in memory for the batch.
    """
    from scratchcnn.model import CIFAR10Model

    model = CIFAR10Model(rng=0).eval()
    x = np.zeros((1, 3, 32, 32), model.dtype)
    model.forward(x)
    rows = [{"name": "input", "type": "", "shape": (batch_size, *x.shape[1:]), "params": 0,
             "macs": 0, "bytes": batch_size * x[0].nbytes}]
    for name, layer in model.layers:
        out = layer.out[0]                                   # one image's output
        weight = getattr(layer, "weight", None)
        macs = out.size * weight.data[0].size if weight is not None else 0
        rows.append({"name": name, "type": type(layer).__name__, "shape": (batch_size, *out.shape),
                     "params": sum(p.data.size for _, p in layer.parameters()),
                     "macs": batch_size * macs, "bytes": batch_size * out.nbytes})
    return rows


def _megabytes(n):
    return f"{n / 1e6:,.2f} MB"


def format_summary(rows, batch_size):
    """The table as text, with totals at the bottom."""
    head = f"{'Layer (type)':<18}{'Output shape':<20}{'Param #':>11}{'Mult-adds':>16}{'Output memory':>16}"
    rule = "=" * len(head)
    lines = [f"CIFAR10Model, batch of {batch_size} images (float32)", rule, head, rule]
    for r in rows:
        label = f"{r['name']} ({r['type']})" if r["type"] else r["name"]
        lines.append(f"{label:<18}{str(r['shape']):<20}{r['params']:>11,}{r['macs']:>16,}"
                     f"{_megabytes(r['bytes']):>16}")
    params = sum(r["params"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    act = sum(r["bytes"] for r in rows[1:])
    lines += [rule,
              f"Total params: {params:,} ({_megabytes(4 * params)} as float32)",
              f"Total mult-adds: {macs:,} for the batch ({macs // batch_size:,} per image)",
              f"Input: {_megabytes(rows[0]['bytes'])}; layer outputs: {_megabytes(act)} for the batch",
              rule,
              "Mult-adds count one per weight use (conv: output elements x C x 3 x 3; linear: in x out);",
              "bias additions, ReLU, dropout and pooling are not counted. flat's output is a view of",
              "pool2's (no copy); training also keeps gradients and dropout masks, not counted here."]
    return "\n".join(lines)
