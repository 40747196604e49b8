"""Tables from the benchmarks' JSON results: the same text in results/*.md and in docs/speed.md.

Everything here reads the saved JSON only (never a live run), so
``benchmarks.readme`` regenerates docs/speed.md's Speed section from the
committed results, and a test checks the two agree. It also reads results
written by older versions of the harness (no rounds, no intervals, the config
"torch-nodrop"): what they lack is shown as "n/a".
"""

LABELS = {
    "scratch": "scratch (fused)",
    "scratch+nodrop": "scratch (fused) without dropout",
    "scratch-layers": "scratch, numba layers",
    "scratch-reference": "scratch, NumPy reference layers",
    "torch": "torch (the tutorial's loop)",
    "torch+nodrop": "torch without dropout",
    "torch+channels_last": "torch, channels_last",
    "torch+fused_sgd": "torch, SGD(fused=True)",
    "torch+channels_last+fused_sgd": "torch, channels_last + fused SGD",
    "torch+compile": "torch, torch.compile",
    "torch+channels_last+fused_sgd+compile": "torch, channels_last + fused SGD + compile",
    "torch+malloc": "torch, glibc malloc keeps freed memory",
    "torch+channels_last+fused_sgd+malloc": "torch, channels_last + fused SGD + malloc tuned",
    "torch-cuda": "torch on the GPU (CUDA)",
    "scratch-omp-passive": "scratch (fused), OMP_WAIT_POLICY=PASSIVE",
    "scratch-openblas-default": "scratch (fused), OpenBLAS's own kernel choice",
}
_LEGACY = {"torch-nodrop": "torch+nodrop"}
TUTORIAL = "torch"


def config_of(key):
    """'torch-nodrop@2' -> ('torch+nodrop', 2): a results key split, old names mapped to new ones."""
    config, threads = key.rsplit("@", 1)
    return _LEGACY.get(config, config), int(threads)


def label(config):
    return LABELS.get(config, config)


def is_torch_cpu(config):
    return config.startswith("torch") and not config.startswith("torch-cuda")


def counterpart(config):
    """The scratch row a row is compared with: like for like (without dropout against without)."""
    return "scratch+nodrop" if "nodrop" in config.split("+") else "scratch"


def fmt_ratio(sp):
    """'2.75x (2.61-2.90)' from a speed-up record; 'n/a' parts where it has none."""
    if not sp:
        return "-"
    text = f"{sp['ratio']:.2f}x"
    if sp.get("low") is not None:
        text += f" ({sp['low']:.2f}-{sp['high']:.2f})"
    return text


def rows(step):
    """The step results as a list of dicts (key, config, threads, label, the stats, speedup, ...),
    in the JSON's order, with the speed-up filled in for results that predate intervals."""
    res = step["results"]
    out = []
    for key, r in res.items():
        config, threads = config_of(key)
        row = dict(r, key=key, config=config, threads=threads, label=label(config))
        if "speedup" not in r and not config.startswith("scratch"):
            ref = res.get(f"{counterpart(config)}@{threads}") or res.get(f"scratch@{threads}")
            row["speedup"] = {"ratio": r["median_ms"] / ref["median_ms"], "low": None, "high": None} if ref else None
        out.append(row)
    return out


def best_torch(step, threads=None):
    """The fastest PyTorch CPU configuration with dropout at ``threads`` (default: the largest thread
    count that has one): a rows() entry, or None."""
    cands = [r for r in rows(step) if is_torch_cpu(r["config"]) and "nodrop" not in r["config"].split("+")]
    if threads is None and cands:
        threads = max(r["threads"] for r in cands)
    return min((r for r in cands if r["threads"] == threads), key=lambda r: r["median_ms"], default=None)


def headline(step):
    """{'threads', 'tutorial': row or None, 'best': row, 'scratch': row or None} for the largest
    thread count with a PyTorch CPU row, or None when there is none."""
    best = best_torch(step)
    if best is None:
        return None
    by_key = {r["key"]: r for r in rows(step)}
    tut = next((r for r in rows(step) if r["config"] == TUTORIAL and r["threads"] == best["threads"]), None)
    return {"threads": best["threads"], "tutorial": tut, "best": best,
            "scratch": by_key.get(f"scratch@{best['threads']}")}


def _pct(x):
    return f"{100 * x:.0f}%" if x is not None else "-"


def step_table(step):
    """The Markdown table of the step benchmark."""
    best = best_torch(step)
    n_cands = sum(1 for r in rows(step) if is_torch_cpu(r["config"]) and "nodrop" not in r["config"].split("+")
                  and best and r["threads"] == best["threads"])
    if n_cands < 2:
        best = None                          # only the tutorial's loop was measured: nothing to name
    lines = ["| config | threads | median ms | p10-p90 ms | images/s | GFLOP/s | % of FMA peak | "
             "speed-up of scratch (95% interval; below 1x: scratch is slower) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows(step):
        name = r["label"] + (" **(best PyTorch configuration)**" if best and r["key"] == best["key"]
                             and r["config"] != TUTORIAL else "")
        if r["config"] == TUTORIAL and best and r["key"] == best["key"]:
            name += " **(also the best PyTorch configuration)**"
        if r.get("compile_s") is not None:
            name += f" (compile: {r['compile_s']:.0f} s, not timed)"
        gpu = r["config"].startswith("torch-cuda")
        frac = r.get("fraction_of_measured_peak")
        pct = "- (GPU)" if gpu else _pct(frac)
        sp = r.get("speedup")
        ratio = fmt_ratio(sp) if sp else "-"
        if sp and r.get("compared_with") and r["compared_with"] != "scratch":
            ratio += f" vs {label(r['compared_with'])}"
        lines.append(f"| {name} | {r['threads'] if not gpu else 'GPU'} | {r['median_ms']:.2f} | "
                     f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f} | {r['images_per_s']:.0f} | {r['gflops']:.0f} | {pct} | "
                     f"{ratio} |")
    return "\n".join(lines)


def cpu_name(machine):
    """The CPU's model name with its family and model numbers, e.g. "AMD EPYC (family 25 model 1)".
    A virtual machine's model name alone ("AMD EPYC") is the same for CPUs of different
    generations (a Zen 3 and a Zen 5 have both reported it), whose speeds differ by 1.6x."""
    name = machine.get("cpu", "an unknown CPU")
    if machine.get("cpu_family") is None:
        return name
    return f"{name} (family {machine['cpu_family']} model {machine.get('cpu_model', '?')})"


def cpu_id(machine):
    """What makes two results' CPUs the same kind: (model name, family, model)."""
    return machine.get("cpu"), machine.get("cpu_family"), machine.get("cpu_model")


def machine_line(data):
    m = data.get("machine", {})
    return f"{m.get('logical_cpus', '?')} vCPUs of {cpu_name(m)}"


def status_line(data):
    """'quiet', or why the results must not be trusted."""
    notes = []
    if data.get("quiet_check", {}).get("forced"):
        notes.append("FORCED: the machine was busy before the run")
    during = data.get("load_during_run") or {}
    if during.get("disturbed"):
        notes.append(f"DISTURBED: other processes used {100 * during['others_cpu_share']:.0f}% of the CPUs "
                     f"during the run")
    return "; ".join(notes) if notes else "quiet before and during the run"


def ladder_table(ladder):
    """The optimisation ladder: each rung's step time and what it bought over the rung before."""
    lines = ["| rung | median ms | images/s | faster than the rung before (95% interval) | "
             "faster than NumPy reference layers |", "|---|---|---|---|---|"]
    for r in ladder["rungs"]:
        lines.append(f"| {label(r['config'])} | {r['median_ms']:.1f} | {r['images_per_s']:.1f} | "
                     f"{fmt_ratio(r.get('vs_previous'))} | {fmt_ratio(r.get('vs_first'))} |")
    return "\n".join(lines)


INFERENCE_LABELS = {"scratch": "scratch (fused_predict)", "scratch-layers": "scratch, numba layers",
                    "torch": "torch", "torch-cuda": "torch on the GPU (CUDA)"}


def inference_table(inf):
    """One row per backend and mode; with ``--presets`` (rows carrying "arch") a network column
    first, and scratch's label says which path it ran (fused_predict or the numba layers)."""
    nets = any(r.get("arch", "tutorial") != "tutorial" for r in inf["rows"])
    head = "| network " if nets else ""
    lines = [f"{head}| backend | mode | median ms per batch of {inf['batch']} | images/s | "
             "speed-up of scratch (95% interval; below 1x: scratch is slower) |", "|---" * (5 + nets) + "|"]
    for r in inf["rows"]:
        key = r["config"].split("+arch=")[0]
        if key == "scratch" and r.get("path") == "layers":
            key = "scratch-layers"
        first = f"| {r.get('arch', 'tutorial')} " if nets else ""
        lines.append(f"{first}| {INFERENCE_LABELS.get(key, key)} | {r['mode']} | {r['median_ms']:.1f} | "
                     f"{r['images_per_s']:.0f} | {fmt_ratio(r.get('speedup'))} |")
    return "\n".join(lines)


def memory_table(mem):
    lines = ["| backend | resident after set-up MiB | peak while training MiB | training adds MiB |",
             "|---|---|---|---|"]
    for config, r in mem["results"].items():
        lines.append(f"| {label(config)} | {r['rss_before_mib']:.0f} | {r['peak_during_training_mib']:.0f} | "
                     f"{r['training_adds_mib']:.0f} |")
    return "\n".join(lines)


def epoch_table(ep):
    """One epoch of ``scratchcnn train`` per backend: loop, evaluation, epoch, process, ratios to scratch."""
    lines = ["| backend | training loop s | evaluation s | epoch s (loop + eval) | images/s (loop) | "
             "whole process s | speed-up of scratch (below 1x: slower): epoch (95% interval) | loop | process |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in ep["rows"]:
        sp = r.get("speedup") or {}
        lines.append(f"| {r['backend']} | {r['loop_s']:.1f} | {r['eval_s']:.1f} | {r['epoch_s']:.1f} | "
                     f"{r['images_per_s']:.0f} | {r['wall_s']:.1f} | {fmt_ratio(sp.get('epoch_s'))} | "
                     f"{fmt_ratio(sp.get('loop_s'))} | {fmt_ratio(sp.get('wall_s'))} |")
    return "\n".join(lines)
