"""Per-layer health numbers during training (``train --layer-stats``), as ConvNetJS shows them.

On one probe batch, for every layer:

    act          mean, std, min, max of the layer's output
    grad         mean, std, min, max of dL/d(the layer's output)
    dead         (ReLU layers) the fraction of units that are 0 for EVERY example of the
                 batch; a unit is one output element: (channel, y, x) after a conv,
                 one neuron after a linear layer. Dead units pass no gradient back.
    update_ratio (layers with a weight) ||w_after - w_before|| / ||w_before|| over one
                 optimizer step, i.e. ||lr * update|| / ||w||. A common rule of thumb
                 (cs231n) is about 1e-3: far below, the layer barely learns; far above,
                 training is unstable.

    probe_layer_stats(backend, x, y)   -> {"loss": float, "layers": {name: {...}}}
        runs forward, backward and one optimizer step on a copy of the state, then
        puts everything back: weights, gradients, momentum buffers, dropout
        randomness and train/eval mode are exactly as before.
    layer_stats(acts, grads, before, after)  the arithmetic alone, on NumPy arrays
    format_layer_stats(probe)                one log line: dead fractions and update ratios
    plot_layer_stats(history, path)          one line per epoch across the layers
"""
import copy

import numpy as np

from scratchcnn.plots import _save, plt


def _moments(a):
    a = np.asarray(a, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def dead_fraction(relu_out):
    """Fraction of units (all axes but the first) that are <= 0 for every example in the batch."""
    out = np.asarray(relu_out)
    return float(np.all(out <= 0, axis=0).mean())


def update_ratio(before, after):
    """||after - before|| / ||before|| (L2 over all elements), in float64."""
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    norm = np.linalg.norm(before.ravel())
    return float(np.linalg.norm((after - before).ravel()) / norm) if norm > 0 else float("inf")


def layer_stats(acts, grads, weights_before=None, weights_after=None, relu_layers=()):
    """Per-layer statistics from arrays: ``{layer: {"act", "grad", ["dead"], ["update_ratio"]}}``.

    acts[layer]: the layer's output (N, ...); grads[layer]: dL/d(that output), same shape;
    relu_layers: the names of the ReLU layers (their dead fraction is reported).
    weights_before/after: ``{"conv1.weight": array, ...}`` around one optimizer step
    (omit both to skip update ratios). Layers are reported in the order of ``acts``.
    """
    stats = {}
    for name, a in acts.items():
        s = {"act": _moments(a), "grad": _moments(grads[name])}
        if name in relu_layers:
            s["dead"] = dead_fraction(a)
        key = f"{name}.weight"
        if weights_before is not None and key in weights_before:
            s["update_ratio"] = update_ratio(weights_before[key], weights_after[key])
        stats[name] = s
    return stats


def probe_layer_stats(backend, x, y):
    """:func:`layer_stats` of one training step on the batch (x, y), for either backend,
    leaving the backend's training state exactly as it was.

    x float32 (N, 3, 32, 32), y int64 (N,), as ``backend.train_step`` takes them. The
    step is the backend's own: training mode (dropout on), its loss, its optimizer
    (so the update includes momentum and the learning rate). Returns
    ``{"loss": float, "layers": {name: stats}}``, plain floats (JSON-ready).
    """
    relus = [s.name for s in backend.model.arch.of_kind("ReLU")]
    if backend.name == "scratch":
        return _probe_scratch(backend, x, y, relus)
    return _probe_torch(backend, x, y, relus)


def _probe_scratch(backend, x, y, relus):
    from scratchcnn.study.trace import forward_backward

    model, opt = backend.model, backend.optimizer
    saved_data, saved_grad = model.flat_data.copy(), model.flat_grad.copy()
    saved_opt, saved_dropout = opt.state_dict(), model.dropout_state()
    saved_buffers = {name: np.array(b, copy=True) for name, b in model.buffers()}
    was_training = model.training
    try:
        model.train()
        loss, acts, grads, _ = forward_backward(model, backend.criterion, x, y)
        before = {name: p.data.copy() for name, p in model.parameters()}
        opt.step()
        after = {name: p.data for name, p in model.parameters()}
        return {"loss": loss, "layers": layer_stats(acts, grads, before, after, relus)}
    finally:
        model.flat_data[...] = saved_data            # the Parameters are views of these
        model.flat_grad[...] = saved_grad
        for name, b in model.buffers():              # BatchNorm's running statistics moved
            b[...] = saved_buffers[name]
        opt.load_state_dict(saved_opt)
        model.load_dropout_state(saved_dropout)
        if was_training:
            model.train()
        else:
            model.eval()


def _probe_torch(backend, x, y, relus):
    torch, model, opt = backend.torch, backend.model, backend.optimizer
    params = dict(model.named_parameters())
    saved_data = {n: p.detach().clone() for n, p in params.items()}
    saved_buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    saved_grad = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
    saved_opt = copy.deepcopy(opt.state_dict())       # state_dict() holds references, not copies
    saved_rng = torch.get_rng_state()                 # dropout masks come from the global RNG
    cuda = backend.device.type == "cuda"
    saved_cuda_rng = torch.cuda.get_rng_state(backend.device) if cuda else None
    was_training = model.training

    outputs = {}

    def recorder(name):
        def hook(module, inputs, output):
            output.retain_grad()                      # keep dL/d(output) after backward
            outputs[name] = output
        return hook

    hooks = [getattr(model, name).register_forward_hook(recorder(name)) for name in model.arch.layer_names]
    try:
        model.train()
        opt.zero_grad(set_to_none=True)
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(backend.device)
        yt = torch.from_numpy(np.ascontiguousarray(y)).to(backend.device)
        loss = backend.criterion(model(xt), yt)
        loss.backward()
        acts = {n: t.detach().float().cpu().numpy() for n, t in outputs.items()}
        grads = {n: t.grad.float().cpu().numpy() for n, t in outputs.items()}
        before = {n: t.float().cpu().numpy() for n, t in saved_data.items()}
        opt.step()
        after = {n: p.detach().float().cpu().numpy() for n, p in params.items()}
        return {"loss": float(loss.item()), "layers": layer_stats(acts, grads, before, after, relus)}
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved_data[n])
                p.grad = saved_grad[n]
            for n, b in model.named_buffers():
                b.copy_(saved_buffers[n])
        opt.load_state_dict(saved_opt)
        torch.set_rng_state(saved_rng)
        if cuda:
            torch.cuda.set_rng_state(saved_cuda_rng, backend.device)
        model.train(was_training)


def format_layer_stats(probe):
    """One line for the training log, e.g.
    ``dead ReLU units: act1 0.3%, act2 7.1%, act3 13.3% | update/weight: conv1 8.4e-03, ...``"""
    layers = probe["layers"]
    dead = ", ".join(f"{n} {100 * s['dead']:.1f}%" for n, s in layers.items() if "dead" in s)
    ratio = ", ".join(f"{n} {s['update_ratio']:.1e}" for n, s in layers.items() if "update_ratio" in s)
    return f"dead ReLU units: {dead} | update/weight: {ratio}"


def plot_layer_stats(history, path, title="layer statistics on the probe batch"):
    """Four panels across the layers, one line per entry of ``history`` (darker = later):
    activation std and max |a|, gradient std and max |g|, dead ReLU fraction, update ratio.

    history: a list of :func:`probe_layer_stats` results; an entry may carry an "epoch"
    (used in the legend), or be a metrics record holding one under "layer_stats".
    """
    entries = [{**h["layer_stats"], "epoch": h.get("epoch")} if "layer_stats" in h else h for h in history]
    if not entries:
        raise ValueError("plot_layer_stats: history is empty")
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (ax_a, ax_g), (ax_d, ax_u) = axes
    colours = plt.get_cmap("viridis")(np.linspace(0.85, 0.0, len(entries)))
    for k, (entry, colour) in enumerate(zip(entries, colours)):
        layers = entry["layers"]
        label = f"epoch {entry['epoch']}" if entry.get("epoch") is not None else f"probe {k + 1}"
        if 0 < k < len(entries) - 1 and len(entries) > 6:
            label = None                              # legend: first and last only
        names = list(layers)
        pos = np.arange(len(names))
        for ax, key in ((ax_a, "act"), (ax_g, "grad")):
            ax.plot(pos, [layers[n][key]["std"] for n in names], "o-", color=colour, label=label)
            ax.plot(pos, [max(abs(layers[n][key]["min"]), abs(layers[n][key]["max"])) for n in names],
                    "x:", color=colour)
        relus = [n for n in names if "dead" in layers[n]]
        ax_d.plot(relus, [layers[n]["dead"] for n in relus], "o-", color=colour, label=label)
        weighted = [n for n in names if "update_ratio" in layers[n]]
        ax_u.plot(weighted, [layers[n]["update_ratio"] for n in weighted], "o-", color=colour, label=label)
    for ax in (ax_a, ax_g):
        ax.set_xticks(pos, names, rotation=45)
        ax.set_yscale("log")
    ax_a.set(title="activations (layer outputs)", ylabel="std (o, solid) and max |a| (x, dotted)")
    ax_g.set(title="gradients dL/d(layer output)", ylabel="std (o, solid) and max |g| (x, dotted)")
    ax_d.set(title="dead ReLU units (0 for every probe image)", ylabel="fraction", ylim=(-0.02, 1.02))
    ax_u.axhline(1e-3, color="grey", ls="--", lw=1, label="1e-3 (rule of thumb)")
    ax_u.set(title="update ratio ||lr * update|| / ||weight||, one step", ylabel="ratio", yscale="log")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
