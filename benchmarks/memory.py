"""Peak resident memory of a short training run, per backend, each in a fresh process.

    python -m benchmarks.memory [--force] [--quick] [--steps 50]

Peak RSS (``getrusage`` ru_maxrss) after setup (imports, model, optimizer,
numba kernels loaded) and after ``--steps`` training steps at batch 32. The
difference is what training itself adds (activations, gradients, momentum
buffers, workspaces); the setup figure is dominated by the libraries (torch
alone is a few hundred MB).
"""
from benchmarks import _common as C


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    quiet = C.check_quiet(args.force)
    steps = 5 if args.quick else args.steps
    res, infos = {}, {}
    for fw in ("scratch", "scratch-layers", "torch"):
        w = C.Worker(fw, args.threads)
        infos[fw] = w.info
        peak = w.call(cmd="memory", n=steps, batch=32)["maxrss_mib"]
        res[fw] = {"setup_mib": w.info["maxrss_mib_after_setup"], "peak_mib": peak,
                   "training_adds_mib": peak - w.info["maxrss_mib_after_setup"]}
        w.close()
    lines = [f"{steps} training steps at batch 32, {args.threads} thread(s), one fresh process per backend.", "",
             "| backend | peak RSS after setup MiB | peak RSS after training MiB | training adds MiB |",
             "|---|---|---|---|"]
    lines += [f"| {fw} | {r['setup_mib']:.0f} | {r['peak_mib']:.0f} | {r['training_adds_mib']:.0f} |"
              for fw, r in res.items()]
    md = "\n".join(lines)

    def draw(path):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        names = list(res)
        ax.bar(names, [res[n]["setup_mib"] for n in names], label="after setup")
        ax.bar(names, [res[n]["training_adds_mib"] for n in names], bottom=[res[n]["setup_mib"] for n in names],
               label="added by training")
        ax.set_ylabel("peak resident memory, MiB")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    C.save("memory", md, {"quiet_check": quiet, "steps": steps, "results": res, "workers": infos}, draw)


if __name__ == "__main__":
    main()
