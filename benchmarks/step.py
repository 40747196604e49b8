"""Training-step benchmark: scratch (fused) vs PyTorch CPU, interleaved, at 2 and 1 threads.

    python -m benchmarks.step [--force] [--quick] [--openblas-default]

One worker process per framework and thread count (so numba's and torch's
thread pools never share a process); after warm-up (numba kernels loaded from
the cache, torch's first steps) the parent runs them in alternating rounds of
``--steps-per-round`` steps, so slow drifts of the machine hit all of them
alike. A step is forward + backward + SGD-momentum update of one batch of 32
random images (the same batch each time), dropout on, except "torch-nodrop".
"""
import numpy as np

from benchmarks import _common as C


def run(args):
    quiet = C.check_quiet(args.force)
    rounds, per_round = (3, 5) if args.quick else (args.rounds, args.steps_per_round)
    thread_counts = [2, 1]
    configs = []
    for th in thread_counts:
        configs += [("scratch", th, None), ("torch", th, None), ("torch-nodrop", th, None)]
    if args.openblas_default:
        configs.append(("scratch", 2, {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}))
    if args.omp_passive:
        configs.append(("scratch", 2, {"OMP_WAIT_POLICY": "PASSIVE"}))
    import torch
    if torch.cuda.is_available():
        configs.append(("torch-cuda", 2, None))
    results, infos, peaks = {}, {}, {}
    monitor, workers_cpu = C.LoadMonitor().start(), 0.0
    for th in thread_counts:
        group = [c for c in configs if c[1] == th]
        workers = {}
        for fw, t, env in group:
            tag = "" if not env else "-omp-passive" if "OMP_WAIT_POLICY" in env else "-openblas-default"
            key = f"{fw}{tag}@{t}"
            print(f"starting {key} ...", flush=True)
            workers[key] = C.Worker(fw, t, env=env)
            infos[key] = workers[key].info
            workers[key].call(cmd="steps", n=5, batch=32)              # warm-up, discarded
        scratch_key = f"scratch@{th}"
        peaks[th] = workers[scratch_key].call(cmd="peak")["gflops"]
        times = {k: [] for k in workers}
        for r in range(rounds):
            order = list(workers) if r % 2 == 0 else list(workers)[::-1]
            for k in order:
                times[k] += workers[k].call(cmd="steps", n=per_round, batch=32)["times"]
        profile = workers[scratch_key].call(cmd="profile", n=per_round * 2, batch=32)["stages"]
        for k, w in workers.items():
            workers_cpu += w.close()
            s = C.stats(times[k], 32)
            s["fraction_of_measured_peak"] = s["gflops"] / _usable_peak(peaks[th], th)
            s["fraction_of_nominal_peak"] = s["gflops"] / C.NOMINAL_PEAK_GFLOPS[th]
            results[k] = s
        results[scratch_key]["profile_s"] = profile
    quiet["during_run"] = monitor.stop(workers_cpu)
    return quiet, results, infos, peaks


def _usable_peak(measured, threads):
    """The measured peak, unless a busy machine spoiled it (below half the nominal one):
    then the nominal peak, so the percentages stay meaningful."""
    nominal = C.NOMINAL_PEAK_GFLOPS[threads]
    return measured if measured >= 0.5 * nominal else nominal


def table(results, peaks):
    lines = ["| config | threads | median ms | p10 ms | p90 ms | images/s | GFLOP/s | % of measured peak | "
             "speed-up of scratch |", "|---|---|---|---|---|---|---|---|---|"]
    for k, s in results.items():
        fw, th = k.split("@")
        th = int(th)
        ref = results.get(f"scratch@{th}")
        ratio = s["median_ms"] / ref["median_ms"] if ref and not fw.startswith("scratch") else None
        lines.append(f"| {fw} | {th} | {s['median_ms']:.2f} | {s['p10_ms']:.2f} | {s['p90_ms']:.2f} | "
                     f"{s['images_per_s']:.0f} | {s['gflops']:.0f} | {100 * s['fraction_of_measured_peak']:.0f}% | "
                     + (f"{ratio:.2f}x |" if ratio else "- |"))
    lines.append("")
    lines.append("Measured FP32 FMA peak (numba, 16-lane FMA chains): " +
                 ", ".join(f"{th} thread(s) {g:.0f} GFLOP/s" for th, g in peaks.items()) +
                 f"; nominal Zen 5 figures: {C.NOMINAL_PEAK_GFLOPS} (used instead of a measured peak "
                 f"below half of them). {C.MFLOP_PER_IMAGE:.1f} MFLOP per image.")
    for th in sorted({int(k.split('@')[1]) for k in results}):
        prof = results.get(f"scratch@{th}", {}).get("profile_s")
        if not prof:
            continue
        total = sum(prof.values())
        lines += ["", f"Where the scratch step's time goes ({th} thread(s), median per stage, sum {total * 1e3:.2f} ms):",
                  "", "| stage | ms | share |", "|---|---|---|"]
        lines += [f"| {k} | {v * 1e3:.3f} | {100 * v / total:.0f}% |" for k, v in
                  sorted(prof.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def plot(results):
    def draw(path):
        import matplotlib.pyplot as plt
        keys = list(results)
        med = [results[k]["median_ms"] for k in keys]
        lo = [results[k]["median_ms"] - results[k]["p10_ms"] for k in keys]
        hi = [results[k]["p90_ms"] - results[k]["median_ms"] for k in keys]
        colors = ["tab:blue" if k.startswith("scratch") else "tab:orange" for k in keys]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.bar(range(len(keys)), med, yerr=[lo, hi], color=colors, capsize=4)
        ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
        ax.set_ylabel("ms per training step (batch 32), median, p10-p90")
        ax.set_title("scratchcnn fused step vs PyTorch CPU")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    return draw


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps-per-round", type=int, default=10)
    p.add_argument("--openblas-default", action="store_true",
                   help="also time scratch with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (OpenBLAS picks its kernel)")
    p.add_argument("--omp-passive", action="store_true",
                   help="also time scratch with OMP_WAIT_POLICY=PASSIVE (numba's OpenMP threads sleep "
                        "instead of spinning while OpenBLAS runs fc3)")
    args = p.parse_args()
    quiet, results, infos, peaks = run(args)
    md = table(results, peaks) + "\n\nLibraries: " + "  \n".join(
        f"{k}: {C.versions_line(v)}" for k, v in infos.items())
    C.save("step", md, {"quiet_check": quiet, "load_during_run": quiet["during_run"], "results": results,
                        "workers": infos,
                        "measured_peak_gflops": peaks, "nominal_peak_gflops": C.NOMINAL_PEAK_GFLOPS},
           plot(results))


if __name__ == "__main__":
    main()
