"""Per-layer benchmark: forward and backward of each layer, scratch vs PyTorch, at 2 threads.

    python -m benchmarks.layers [--force] [--quick] [--threads 2]

Three columns of timings per layer: the fused fast path's stages (what
training actually runs; stages group layers differently, see the second
table), the readable layer-by-layer scratch path (``scratchcnn.layers``), and
PyTorch's layers (``torch.nn`` modules, i.e. ``torch.nn.functional``). Each
framework runs in its own worker process; medians of ``--reps`` repetitions
on one batch of 32 random images.
"""
from benchmarks import _common as C
from benchmarks._layer_ops import NAMES
from benchmarks._workload import flops, stage_flops


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args()
    quiet = C.check_quiet(args.force)
    reps = 5 if args.quick else args.reps
    n = 32
    out, infos = {}, {}
    monitor, workers_cpu = C.LoadMonitor().start(), 0.0
    for fw in ("scratch-layers", "torch", "scratch"):
        w = C.Worker(fw, args.threads)
        infos[fw] = w.info
        w.call(cmd="steps", n=3, batch=n)                         # warm-up
        if fw == "scratch":
            out["fused_stages_s"] = w.call(cmd="profile", n=reps, batch=n)["stages"]
        else:
            out[fw] = w.call(cmd="layers", n=reps, batch=n)["layers"]
        workers_cpu += w.close()
    during = monitor.stop(workers_cpu)

    def gf(name, which, seconds):
        f = flops(name, n)
        return f"{f[which] / seconds / 1e9:.0f}" if f else ""

    lines = [f"Batch {n}, {args.threads} thread(s). GFLOP/s where the layer does matrix work.", "",
             "| layer | scratch layers fwd ms | torch fwd ms | scratch GFLOP/s | torch GFLOP/s | "
             "scratch layers bwd ms | torch bwd ms | scratch GFLOP/s | torch GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in NAMES:
        s, t = out["scratch-layers"][name], out["torch"][name]
        lines.append(f"| {name} | {s['forward_s'] * 1e3:.3f} | {t['forward_s'] * 1e3:.3f} | "
                     f"{gf(name, 0, s['forward_s'])} | {gf(name, 0, t['forward_s'])} | "
                     f"{s['backward_s'] * 1e3:.3f} | {t['backward_s'] * 1e3:.3f} | "
                     f"{gf(name, 1, s['backward_s'])} | {gf(name, 1, t['backward_s'])} |")
    lines += ["", "The scratch layer path's conv1 backward also computes dL/dx (unused); torch's does not.",
              "", "Fused fast path, per stage (what `scratchcnn.fused` spends in a training step):", "",
              "| stage | ms | GFLOP/s |", "|---|---|---|"]
    stage = stage_flops(n)
    for k, v in out["fused_stages_s"].items():
        g = f"{stage[k] / v / 1e9:.0f}" if k in stage else ""
        lines.append(f"| {k} | {v * 1e3:.3f} | {g} |")
    md = "\n".join(lines) + "\n\nLibraries: " + "  \n".join(f"{k}: {C.versions_line(v)}" for k, v in infos.items())

    def draw(path):
        import matplotlib.pyplot as plt
        import numpy as np
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
        xs = np.arange(len(NAMES))
        for ax, key, title in ((axes[0], "forward_s", "forward"), (axes[1], "backward_s", "backward")):
            ax.bar(xs - 0.2, [out["scratch-layers"][nm][key] * 1e3 for nm in NAMES], 0.4, label="scratch layers")
            ax.bar(xs + 0.2, [out["torch"][nm][key] * 1e3 for nm in NAMES], 0.4, label="torch")
            ax.set_xticks(xs, NAMES, rotation=45, ha="right")
            ax.set_ylabel("ms (batch 32)")
            ax.set_title(title)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    C.save("layers", md, {"quiet_check": quiet, "load_during_run": during, "threads": args.threads, "batch": n, "results": out,
                          "workers": infos}, draw, out=args.out)


if __name__ == "__main__":
    main()
