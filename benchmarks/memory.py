"""What training adds to resident memory, per backend, each in a fresh process.

    python -m benchmarks.memory [--force] [--quick] [--steps 50] [--threads 2]

Each backend's worker sets up (imports, model, optimizer, numba kernels
loaded and ``fused.warmup`` run), then reports its resident memory (VmRSS),
resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``),
trains ``--steps`` steps at batch 32 and reads the new peak (VmHWM).

    training adds = peak while training - resident before training

This is what training itself needs: gradients, SGD momentum buffers (16 MiB
for fc3's weight alone), activations and workspaces. Earlier versions took
``ru_maxrss`` after training minus ``ru_maxrss`` after set-up; but set-up's
own peak (``fused.warmup`` trains a throwaway model) already covered most of
training's, and the difference came out at 17 MiB, less than the momentum
buffer alone. Linux only (the counter reset needs /proc).
"""
from benchmarks import _common as C
from benchmarks import _report as R

BACKENDS = ("scratch", "scratch-layers", "torch")


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    quiet = C.check_quiet(args.force)
    steps = 5 if args.quick else args.steps
    res, infos = {}, {}
    for config in BACKENDS:
        w = C.Worker(config, args.threads)
        infos[config] = w.info
        res[config] = w.call(cmd="memory", n=steps, batch=32)
        w.close()
    data = {"quiet_check": quiet, "steps": steps, "threads": args.threads, "results": res, "workers": infos}
    md = (f"{steps} training steps at batch 32, {args.threads} thread(s), one fresh process per backend; "
          f"peak = VmHWM after resetting it once set-up was done.\n\n" + R.memory_table(data))

    def draw(path):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        names = [R.label(n) for n in res]
        ax.bar(names, [r["rss_before_mib"] for r in res.values()], label="resident after set-up")
        ax.bar(names, [r["training_adds_mib"] for r in res.values()],
               bottom=[r["rss_before_mib"] for r in res.values()], label="added by training (peak)")
        ax.set_ylabel("resident memory, MiB")
        ax.tick_params(axis="x", labelsize=8)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    C.save("memory", md, data, draw, out=args.out)


if __name__ == "__main__":
    main()
