"""Training step of every preset network: scratch against PyTorch, interleaved, at one thread count.

    python -m benchmarks.presets [--force] [--quick] [--presets tutorial,k5,...] [--threads 2]
                                 [--rounds 12] [--steps-per-round 5] [--seed S] [--no-memory]

For each preset of ``scratchcnn.architecture.PRESETS`` four workers (one
process each, ``benchmarks._worker``) time a training step of a batch of 32
random images (forward, backward, SGD with momentum; dropout on):

    scratch                           what ``scratchcnn train`` runs: the fused fast path where it
                                      supports the network, the numba layer path otherwise
    scratch-layers                    the numba layer path
    torch                             the tutorial's PyTorch loop
    torch+channels_last+fused_sgd+malloc
                                      PyTorch's fastest CPU configuration without torch.compile
                                      on these machines (``benchmarks.step`` times them all),
                                      glibc's allocator tuned as scratch's is
                                      (``scratchcnn.allocator``)

A preset's four workers take turns in ``--rounds`` rounds in a fresh random
order (``_common.run_rounds``), so each ratio compares steps taken seconds
apart; the ratio's 95% interval is the paired bootstrap over rounds
(``_stats.bootstrap_ratio``). "torch best" is the faster of the two PyTorch
rows for that preset. FLOPs per image come from the network's own
``Architecture`` (2 per multiply-add; backward = the weight gradient plus the
input gradient, each as much as the forward, except the first layer's input
gradient, which training never computes), and "% of FMA peak" divides the
achieved GFLOP/s by the peak measured at the same thread count
(``_peak.measure_peak``, probed before and after the run: the larger). The
scratch layer path's per-layer profile says where each preset's time goes.
With memory on, each preset's scratch and torch workers also report the peak
resident memory while training (``_worker.training_memory``).
"""
import os

import numpy as np

from benchmarks import _common as C
from benchmarks import _report as R
from benchmarks import _stats as S

BATCH = 32
BEST = "torch+channels_last+fused_sgd+malloc"
CONFIGS = ("scratch", "scratch-layers", "torch", BEST)
TORCH_CONFIGS = ("torch", BEST)


def train_flops_per_image(arch):
    """FLOPs of one training step per image: forward + input gradients + weight gradients."""
    total, first = 0, True
    for name in arch.layer_names:
        fwd = 2 * arch.macs(name)                      # nonzero for the layers with weights
        if fwd:
            total += fwd + fwd + (0 if first else fwd)  # forward, weight gradient, input gradient
            first = False
    return total


def profile_shares(stages, top=4):
    """[(stage, share of the step)] of the ``top`` largest stages of a layer profile."""
    total = sum(stages.values())
    return [(k, v / total) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])[:top]]


def measure_preset(preset, threads, rounds, per_round, seed, memory, quick):
    workers = {c: C.Worker(f"{c}+arch={preset}", threads) for c in CONFIGS}
    try:
        for w in workers.values():                     # first steps (allocation, page faults) untimed
            w.call(cmd="steps", n=2, batch=BATCH)
            w.settle()
        times, orders = C.run_rounds(workers, rounds, lambda k: {"cmd": "steps", "n": per_round, "batch": BATCH},
                                     seed)
        prof = workers["scratch-layers"].call(cmd="layer_profile", n=2 if quick else 5, batch=BATCH)["stages"]
        mem = {}
        if memory:
            for c in ("scratch", "torch"):
                mem[c] = workers[c].call(cmd="memory", n=3 if quick else 10, batch=BATCH)
        infos = {c: w.info for c, w in workers.items()}
        cpu = 0.0
    finally:
        cpu = sum(w.close() for w in workers.values())
    return times, orders, prof, mem, infos, cpu


def summarise(preset, times, flop_per_image, peak_gflops):
    """The per-preset record: each row's summary, torch best, the ratios with intervals."""
    rows = {c: S.summary(times[c], BATCH, flop_per_image) for c in CONFIGS}
    best = min(TORCH_CONFIGS, key=lambda c: rows[c]["median_ms"])
    ratio = {}
    for c in ("scratch-layers", "scratch"):
        for ref in ("torch", best):
            r, lo, hi = S.bootstrap_ratio(times[ref], times[c])
            ratio[f"{c} vs {ref}"] = {"ratio": r, "low": lo, "high": hi}
    for c in rows:
        rows[c]["fma_peak_share"] = rows[c]["gflops"] / peak_gflops if peak_gflops else None
    return {"rows": rows, "torch_best": best, "speedup": ratio}


def table(data):
    """One line per preset: the four step times, scratch's speed-up with its interval, % of the FMA peak,
    memory, and the largest stages of the layer path's profile."""
    lines = ["| network | MFLOP/image | scratch runs | scratch ms | scratch layer path ms | torch (tutorial loop) ms | "
             "torch best ms | scratch vs torch best | scratch vs tutorial loop | scratch % of FMA peak | "
             "peak MiB while training, scratch / torch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for preset, p in data["presets"].items():
        rows, sp = p["rows"], p["speedup"]
        mem = p.get("memory") or {}
        mem_text = (f"{mem['scratch']['peak_during_training_mib']:.0f} / {mem['torch']['peak_during_training_mib']:.0f}"
                    if mem else "-")
        lines.append(f"| {preset} | {p['mflop_per_image']:.0f} | {p['scratch_path']} | {rows['scratch']['median_ms']:.1f} | "
                     f"{rows['scratch-layers']['median_ms']:.1f} | {rows['torch']['median_ms']:.1f} | "
                     f"{rows[p['torch_best']]['median_ms']:.1f} | "
                     f"{R.fmt_ratio(sp['scratch vs ' + p['torch_best']])} | {R.fmt_ratio(sp['scratch vs torch'])} | "
                     f"{R._pct(rows['scratch']['fma_peak_share'])} | {mem_text} |")
    return "\n".join(lines)


def profile_table(data):
    lines = ["| network | where the layer path's step goes (largest stages, share of the step) |", "|---|---|"]
    for preset, p in data["presets"].items():
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in profile_shares(p["layer_profile"]))
        lines.append(f"| {preset} | {shares} |")
    return "\n".join(lines)


def main():
    from scratchcnn.architecture import NUM_CLASSES, PRESETS, load
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(PRESETS),
                   help=f"comma-separated presets (default: all: {','.join(PRESETS)})")
    p.add_argument("--threads", type=int, default=None, help="threads per worker (default: all cores)")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps-per-round", type=int, default=5)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    args = p.parse_args()
    presets = [s for s in args.presets.split(",") if s]
    unknown = [s for s in presets if s not in PRESETS]
    if unknown or not presets:
        p.error(f"unknown preset(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(PRESETS)}")
    quiet = C.check_quiet(args.force)
    rounds, per_round = (3, 2) if args.quick else (args.rounds, args.steps_per_round)
    threads = args.threads or C.thread_counts()[0]
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    monitor = C.LoadMonitor().start()
    print(f"measuring the FMA peak and the memory bandwidth at {threads} thread(s) ...", flush=True)
    machine = C.probe_machine(threads, quick=args.quick)
    workers_cpu = machine.pop("cpu_s")
    out, raw = {}, {}
    for i, preset in enumerate(presets):
        print(f"[{i + 1}/{len(presets)}] {preset}: {rounds} rounds x {per_round} steps x {len(CONFIGS)} workers",
              flush=True)
        arch = load(preset, NUM_CLASSES)
        flop = train_flops_per_image(arch)
        times, orders, prof, mem, infos, cpu = measure_preset(preset, threads, rounds, per_round, seed + i,
                                                              not args.no_memory, args.quick)
        workers_cpu += cpu
        rec = summarise(preset, times, flop, machine["fma_gflops"])
        rec.update(mflop_per_image=flop / 1e6, parameters=arch.n_params, scratch_path=infos["scratch"]["path"],
                   layer_profile=prof, memory=mem or None, orders=orders,
                   versions={c: infos[c]["versions"] for c in infos})
        out[preset] = rec
        raw[preset] = times
        sp = rec["speedup"][f"scratch vs {rec['torch_best']}"]
        print(f"    scratch ({rec['scratch_path']}) {rec['rows']['scratch']['median_ms']:.1f} ms, "
              f"torch best {rec['rows'][rec['torch_best']]['median_ms']:.1f} ms: {R.fmt_ratio(sp)}", flush=True)
    # the peak again at the end: a probe that another process (or a slow first call) disturbed would
    # make every share of it too large (one run measured 99 GFLOP/s at the start, where runs before and
    # after measured 197-205), so the larger of the two is the ceiling
    again = C.probe_machine(threads, quick=args.quick)
    workers_cpu += again.pop("cpu_s")
    machine["fma_gflops_probes"] = [machine["fma_gflops"], again["fma_gflops"]]
    machine["fma_gflops"] = max(machine["fma_gflops_probes"])
    for rec in out.values():
        for row in rec["rows"].values():
            row["fma_peak_share"] = row["gflops"] / machine["fma_gflops"]
    data = {"quiet_check": quiet, "load_during_run": monitor.stop(workers_cpu), "threads": threads, "batch": BATCH,
            "rounds": rounds, "steps_per_round": per_round, "seed": seed, "machine_probe": machine,
            "presets": out, "times": raw}
    md = (f"Training step at batch 32, {threads} thread(s); median of per-round medians over {rounds} interleaved "
          f"rounds of {per_round} steps; speed-ups with paired-bootstrap 95% intervals (above 1: scratch is "
          f"faster); FMA peak measured at {machine['fma_gflops']:.0f} GFLOP/s.\n\n" + table(data) + "\n\n"
          + profile_table(data))

    def draw(path):
        import matplotlib.pyplot as plt
        names = list(out)
        fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 4))
        xs = np.arange(len(names))
        for off, key, lab in ((-0.2, "scratch vs {best}", "scratch"), (0.2, "scratch-layers vs {best}", "layer path")):
            sps = [out[n]["speedup"][key.format(best=out[n]["torch_best"])] for n in names]
            ax.bar(xs + off, [s["ratio"] for s in sps], width=0.4, label=lab,
                   yerr=[[s["ratio"] - s["low"] for s in sps], [s["high"] - s["ratio"] for s in sps]], capsize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(xs, names)
        ax.set_ylabel("speed-up over PyTorch's best CPU configuration")
        ax.set_title(f"training step, batch 32, {threads} thread(s)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    C.save("presets", md, data, draw, out=args.out)


if __name__ == "__main__":
    main()
