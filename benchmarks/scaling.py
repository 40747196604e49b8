"""Step time vs batch size (1 to 256), scratch (fused) vs PyTorch CPU, and a full epoch.

    python -m benchmarks.scaling [--force] [--quick] [--threads 2] [--epoch]

Interleaved like benchmarks.step (one worker per framework, rounds in random order,
median of per-round medians). The epoch time
on 50,000 images is EXTRAPOLATED from the median step time at each batch
size (50000 / B steps), not measured, unless ``--epoch`` is given: then one
real pass of 50,000 random images at batch 32 is timed for each framework
(about a minute each on 2 cores).
"""
import time

from benchmarks import _common as C
from benchmarks import _report as R
from benchmarks import _stats as S
from benchmarks._workload import MFLOP_PER_IMAGE

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epoch", action="store_true", help="also time one real 50,000-image pass at batch 32")
    args = p.parse_args()
    quiet = C.check_quiet(args.force)
    frameworks = ("scratch", "torch")
    monitor = C.LoadMonitor().start()
    workers = {fw: C.Worker(fw, args.threads) for fw in frameworks}
    res = {fw: {} for fw in frameworks}
    for b in BATCHES:
        n = max(3, min(20, 640 // b)) if not args.quick else 3
        for fw in frameworks:
            workers[fw].call(cmd="steps", n=2, batch=b)               # warm-up at this size
            workers[fw].settle()
        times, _ = C.run_rounds(workers, 3 if args.quick else 6, lambda k: {"cmd": "steps", "n": n, "batch": b},
                                seed=b)
        for fw in frameworks:
            s = S.summary(times[fw], b, MFLOP_PER_IMAGE * 1e6)
            s["rounds_s"] = times[fw]
            s["epoch_s_extrapolated"] = s["median_ms"] / 1e3 * 50000 / b
            res[fw][b] = s
        ratio, lo, hi = S.bootstrap_ratio(times["torch"], times["scratch"], seed=b)
        res["torch"][b]["speedup"] = {"ratio": ratio, "low": lo, "high": hi}
    epoch = {}
    if args.epoch:
        for fw in frameworks:
            t = time.perf_counter()
            workers[fw].call(cmd="steps", n=50000 // 32, batch=32)
            epoch[fw] = time.perf_counter() - t
    infos = {fw: w.info for fw, w in workers.items()}
    during = monitor.stop(sum(w.close() for w in workers.values()))

    lines = [f"{args.threads} thread(s); epoch = 50,000 images, extrapolated from the median step (the median of "
             f"per-round medians; intervals from a paired bootstrap over rounds).", "",
             "| batch | scratch ms/step | torch ms/step | scratch ms/image | torch ms/image | "
             "speed-up of scratch (95% interval; below 1x: scratch is slower) | "
             "scratch epoch s | torch epoch s |", "|---|---|---|---|---|---|---|---|"]
    for b in BATCHES:
        s, t = res["scratch"][b], res["torch"][b]
        lines.append(f"| {b} | {s['median_ms']:.2f} | {t['median_ms']:.2f} | {s['median_ms'] / b:.3f} | "
                     f"{t['median_ms'] / b:.3f} | {R.fmt_ratio(t['speedup'])} | "
                     f"{s['epoch_s_extrapolated']:.1f} | {t['epoch_s_extrapolated']:.1f} |")
    if epoch:
        lines += ["", "Measured full pass (50,000 random images, batch 32, 1562 steps): " +
                  ", ".join(f"{fw} {v:.1f} s" for fw, v in epoch.items())]
    md = "\n".join(lines) + "\n\nLibraries: " + "  \n".join(f"{k}: {C.versions_line(v)}" for k, v in infos.items())

    def draw(path):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for fw in frameworks:
            ax.plot(BATCHES, [res[fw][b]["median_ms"] / b for b in BATCHES], "o-", label=fw)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("ms per image (training step, median)")
        ax.set_title(f"step time per image vs batch size, {args.threads} thread(s)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    C.save("scaling", md, {"quiet_check": quiet, "load_during_run": during, "threads": args.threads,
                           "results": {fw: {str(b): v for b, v in r.items()} for fw, r in res.items()},
                           "epoch_measured_s": epoch, "workers": infos}, draw, out=args.out)


if __name__ == "__main__":
    main()
