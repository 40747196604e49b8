"""``scratchcnn summary``: a per-layer table of the network, like torchinfo's.

Nothing here is typed in by hand: one image goes through a freshly built scratch
``Network`` of the chosen spec and each row is read off the layer afterwards (its
``.out`` shape and its Parameters), then scaled to the batch size. The receptive
field comes from the spec's arithmetic (``Architecture.receptive_field``).

    multiply-adds of a layer with a weight = output elements x weight elements per output
        conv:   (F x OH x OW) x (C x KH x KW)      e.g. conv2: 32*32*32 x 32*3*3 = 9,437,184 per image
        linear: out_features  x in_features        e.g. fc3:   512 x 8192        = 4,194,304 per image
    output memory = output elements x batch x 4 bytes (float32)
    receptive field: the input pixels one output pixel depends on, size and jump (stride on
        the input) of a window layer: size += (K - 1) x jump, jump x= S, layer by layer
        e.g. conv1 3, conv2 5, pool2 6 (jump 2); after Flatten, the whole image
"""
import numpy as np


def summary_rows(batch_size=32, arch="tutorial"):
    """``[{"name", "type", "shape", "params", "macs", "bytes", "rf", "jump"}]``: the input, then
    every layer of ``arch`` (a preset, a JSON file or an Architecture).

    shape is the output shape for the batch, macs the multiply-adds for the whole batch,
    bytes the output's size in memory for the batch, rf the receptive field (h, w) of one
    output pixel on the input ("all" after a Flatten) and jump its step (h, w).
    """
    from scratchcnn.model import Network

    model = Network(arch, rng=0).eval()
    x = np.zeros((1, *model.arch.input_shape), model.dtype)
    model.forward(x)
    rows = [{"name": "input", "type": "", "shape": (batch_size, *x.shape[1:]), "params": 0,
             "macs": 0, "bytes": batch_size * x[0].nbytes, "rf": (1, 1), "jump": (1, 1)}]
    for name, layer in model.layers:
        out = layer.out[0]                                   # one image's output
        weight = getattr(layer, "weight", None)
        macs = out.size * weight.data[0].size if weight is not None and type(layer).__name__ != "BatchNorm2d" else 0
        rf = model.arch.receptive_field(name)
        rows.append({"name": name, "type": type(layer).__name__, "shape": (batch_size, *out.shape),
                     "params": sum(p.data.size for _, p in layer.parameters()),
                     "macs": batch_size * macs, "bytes": batch_size * out.nbytes,
                     "rf": "all" if rf.whole else rf.size, "jump": None if rf.whole else rf.jump})
    return rows


def _megabytes(n):
    return f"{n / 1e6:,.2f} MB"


def _rf(r):
    if r["rf"] == "all":
        return "whole image"
    (h, w), (jh, jw) = r["rf"], r["jump"]
    size = f"{h}x{w}" if h != w else f"{h}"
    return size + (f" (jump {jh})" if jh == jw and jh > 1 else f" (jump {jh}x{jw})" if jh != jw else "")


def format_summary(rows, batch_size, name="tutorial"):
    """The table as text, with totals at the bottom."""
    width = max(18, max(len(f"{r['name']} ({r['type']})") for r in rows) + 2)
    head = (f"{'Layer (type)':<{width}}{'Output shape':<22}{'Param #':>11}{'Mult-adds':>16}"
            f"{'Output memory':>16}  Receptive field")
    rule = "=" * len(head)
    lines = [f"Network {name}, batch of {batch_size} images (float32)", rule, head, rule]
    for r in rows:
        label = f"{r['name']} ({r['type']})" if r["type"] else r["name"]
        lines.append(f"{label:<{width}}{str(r['shape']):<22}{r['params']:>11,}{r['macs']:>16,}"
                     f"{_megabytes(r['bytes']):>16}  {_rf(r)}")
    params = sum(r["params"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    act = sum(r["bytes"] for r in rows[1:])
    lines += [rule,
              f"Total params: {params:,} ({_megabytes(4 * params)} as float32)",
              f"Total mult-adds: {macs:,} for the batch ({macs // batch_size:,} per image)",
              f"Input: {_megabytes(rows[0]['bytes'])}; layer outputs: {_megabytes(act)} for the batch",
              rule,
              "Mult-adds count one per weight use (conv: output elements x C x KH x KW; linear: in x out);",
              "bias additions, activations, BatchNorm, dropout and pooling are not counted. Flatten's output",
              "is a view of its input's (no copy); training also keeps gradients and dropout masks, not",
              "counted here. Receptive field: the input pixels one output pixel depends on (height x width),",
              "and the jump between neighbouring output pixels, on the input."]
    return "\n".join(lines)
