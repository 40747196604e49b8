"""``scratchcnn compare RUN [RUN ...]``: several training runs side by side, as a table and one figure.

Each RUN is a run folder written by ``scratchcnn train`` (its ``metrics.json``).
The table gives, per run: the network, backend, recipe, epochs, the final and the
best test accuracy, the final test loss, the network's parameters, multiply-adds per
image and the receptive field of its last convolution (from the spec the run
recorded), the median epoch time (training loop and evaluation), the training time
(the epochs' training loops plus, where recorded, their evaluations) and the median
images/s of the training loops. The figure plots every run's test accuracy and its train
and test loss per epoch on shared axes, so two recipes or two backends can be
compared at a glance.
"""
import json
import os
import statistics

from scratchcnn.errors import UserError


def load_run(folder):
    """``{'folder', 'config', 'epochs'}`` from ``folder/metrics.json`` (or a metrics.json path)."""
    path = folder if folder.endswith(".json") else os.path.join(folder, "metrics.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; pass run folders written by scratchcnn train") from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({getattr(e, 'strerror', None) or e}); is it a training run's "
                        f"metrics.json?") from None
    if not isinstance(data, dict) or not data.get("epochs") or "config" not in data:
        raise UserError(f"{path} holds no completed epoch; train at least one epoch first")
    return {"folder": os.path.dirname(path) or ".", "config": data["config"], "epochs": data["epochs"],
            "machine": data.get("machine")}


def run_architecture(cfg):
    """The run's network (``architecture.Architecture``), from the spec its metrics.json records
    (a run made before networks were a choice: the tutorial's); None when it cannot be rebuilt
    here (a learner's own layer file is never loaded for a table)."""
    from scratchcnn import architecture
    try:
        if cfg.get("arch_spec"):
            return architecture.resolve(cfg["arch_spec"], None, name=str(cfg.get("arch", "custom")),
                                        allow_custom=False)
        return architecture.tutorial(len(cfg.get("classes") or ()) or architecture.NUM_CLASSES)
    except UserError:
        return None


def summarise(run, label=None):
    """One table row (a dict) for a run from :func:`load_run`."""
    cfg, ep = run["config"], run["epochs"]
    best = max(ep, key=lambda m: m["test_acc"])
    timed_eval = all("eval_seconds" in m for m in ep)
    arch = run_architecture(cfg)
    convs = arch.of_kind("Conv2d") if arch is not None else []
    rf = arch.receptive_field(convs[-1].name).size if convs else None
    return {"label": label or default_label(run), "network": _network_name(cfg), "backend": cfg.get("backend", "?"),
            "params": arch.n_params if arch else None, "macs": arch.total_macs if arch else None,
            "rf": rf, "epoch_seconds": statistics.median(m["seconds"] + m.get("eval_seconds", 0.0) for m in ep),
            "recipe": cfg.get("recipe", "tutorial"), "dataset": cfg.get("dataset", "?"), "epochs": ep[-1]["epoch"],
            "final_test_acc": ep[-1]["test_acc"], "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
            "final_test_loss": ep[-1].get("test_loss"),
            "minutes": sum(m["seconds"] + m.get("eval_seconds", 0.0) for m in ep) / 60,
            "includes_eval": timed_eval,
            "images_per_s": statistics.median(m["images_per_s"] for m in ep)}


def _network_name(cfg):
    return os.path.basename(str(cfg.get("arch") or "tutorial"))


def default_label(run):
    cfg = run["config"]
    network = _network_name(cfg)
    return ", ".join([cfg.get("backend", "?")] + ([network] if network != "tutorial" else [])
                     + [cfg.get("recipe", "tutorial")])


def format_table(rows):
    """The rows as a Markdown table."""
    lines = ["| run | network | backend | recipe | epochs | test accuracy (final) | best (epoch) | test loss (final) | "
             "parameters | mult-adds per image | receptive field of the last conv | epoch s (median) | "
             "training time min | images/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        loss = f"{r['final_test_loss']:.3f}" if r["final_test_loss"] is not None else "-"
        params = f"{r['params']:,}" if r["params"] is not None else "-"
        macs = f"{r['macs'] / 1e6:.1f} M" if r["macs"] is not None else "-"
        rf = "x".join(map(str, r["rf"])) if r["rf"] else "-"
        lines.append(f"| {r['label']} | {r['network']} | {r['backend']} | {r['recipe']} | {r['epochs']} | "
                     f"{100 * r['final_test_acc']:.2f}% | {100 * r['best_test_acc']:.2f}% ({r['best_epoch']}) | "
                     f"{loss} | {params} | {macs} | {rf} | {r['epoch_seconds']:.1f} | "
                     f"{r['minutes']:.1f}{'' if r['includes_eval'] else '*'} | {r['images_per_s']:.0f} |")
    if not all(r["includes_eval"] for r in rows):
        lines.append("\n\\* training loops only: this run's metrics.json predates the timing of evaluations.")
    return "\n".join(lines)


def compare(folders, out, labels=None):
    """Load the runs, write the figure to ``out`` (a .png path), return the Markdown table."""
    if labels and len(labels) != len(folders):
        raise UserError(f"{len(labels)} --label value(s) for {len(folders)} run(s); give one per run or none")
    if not out.lower().endswith(".png"):
        raise UserError(f"--out {out!r} must be a .png file name")
    runs = [load_run(f) for f in folders]
    names = labels or [default_label(r) for r in runs]
    if not labels and len(set(names)) < len(names):                 # same backend and recipe: add the folder
        names = [f"{n} ({os.path.basename(os.path.normpath(r['folder']))})" for n, r in zip(names, runs)]
    from scratchcnn.plots import plot_comparison
    plot_comparison([r["epochs"] for r in runs], names, out)
    return format_table([summarise(r, n) for r, n in zip(runs, names)])


def add_parser(sub):
    p = sub.add_parser("compare", help="several training runs side by side: a table and one figure",
                       description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by scratchcnn train")
    p.add_argument("--label", action="append", default=None,
                   help="a name for each run, in order (repeat it; default: backend and recipe)")
    p.add_argument("--out", default="compare.png", help="the figure's file name (.png)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args):
    print(compare(args.runs, args.out, args.label))
    print(f"\nwrote {args.out}")
    return 0
