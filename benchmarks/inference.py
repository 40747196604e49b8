"""Inference throughput: what ``scratchcnn evaluate`` runs, per backend, at batch 500.

    python -m benchmarks.inference [--force] [--quick] [--rounds 5] [--threads N] [--batch 500]

``scratchcnn evaluate`` feeds the test set in batches of 500 through each
backend's ``predict``: eval mode, no dropout, no gradients. Rows:

    scratch          ``scratchcnn.fused.fused_predict`` (what ``--backend scratch`` runs)
    torch no_grad    the tutorial's model under ``torch.no_grad()`` (what ``--backend torch`` runs)
    torch inference_mode   the same under ``torch.inference_mode()`` (no autograd bookkeeping at all)
    torch-cuda       on the GPU, under no_grad, when CUDA is present (timed with synchronize)

Each in its own worker, rounds in random order, idle threads settled, median
of per-round medians, and a paired bootstrap 95% interval for each ratio to
scratch, as in benchmarks.step.

``--presets tutorial,k5,...`` (default: the tutorial only) repeats the three CPU
rows for each preset network of ``scratchcnn.architecture.PRESETS`` (workers
``scratch+arch=NAME``, ...): scratch runs ``fused_predict`` where the fast path
supports the network and the numba layers in eval mode otherwise (their
convolutions on the direct kernel, ``kernels.conv``), as ``evaluate`` does.
"""
import os

from benchmarks import _common as C
from benchmarks import _report as R
from benchmarks import _stats as S

ROWS = (("scratch", "scratch", "no_grad"), ("torch", "torch", "no_grad"), ("torch-inference_mode", "torch", "inference_mode"))


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls-per-round", type=int, default=3)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--threads", type=int, default=None, help="thread count (default: all cores)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--presets", default="tutorial",
                   help="comma-separated preset networks, or 'all' (default: tutorial)")
    args = p.parse_args()
    from scratchcnn.architecture import PRESETS, load
    presets = list(PRESETS) if args.presets == "all" else [a for a in args.presets.split(",") if a]
    unknown = [a for a in presets if a not in PRESETS]
    if unknown or not presets:
        p.error(f"--presets: unknown network(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PRESETS)}")
    quiet = C.check_quiet(args.force)
    threads = args.threads or C.thread_counts()[0]
    rounds, calls = (2, 1) if args.quick else (args.rounds, args.calls_per_round)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    import torch
    cuda = (("torch-cuda", "torch-cuda", "no_grad"),) if torch.cuda.is_available() else ()
    monitor, rows, orders, infos, spin, closed = C.LoadMonitor().start(), [], {}, {}, {}, 0
    for arch in presets:
        rows_measured = [(k, c if arch == "tutorial" else f"{c}+arch={arch}", m) for k, c, m in ROWS + cuda]
        workers, modes = {}, {}
        for key, config, mode in rows_measured:
            print(f"{arch}: starting {key} ...", flush=True)
            workers[key], modes[key] = C.Worker(config, threads), mode
            workers[key].call(cmd="predict", n=2, batch=args.batch, mode=mode)      # warm-up
            workers[key].settle()
        times, orders[arch] = C.run_rounds(workers, rounds, lambda k: {"cmd": "predict", "n": calls,
                                                                       "batch": args.batch, "mode": modes[k]}, seed)
        infos.update({f"{arch}:{k}": w.info for k, w in workers.items()})
        spin[arch] = C.spin_record(workers)
        closed += sum(w.close() for w in workers.values())
        forward_flop = 2 * load(arch, num_classes=10).total_macs
        for key, config, mode in rows_measured:
            r = S.summary(times[key], args.batch, forward_flop)
            r.update(key=key, config=config, mode=mode, arch=arch, rounds_s=times[key],
                     path=workers[key].info.get("path"))
            if key != "scratch":
                ratio, lo, hi = S.bootstrap_ratio(times[key], times["scratch"], seed=seed)
                r["speedup"] = {"ratio": ratio, "low": lo, "high": hi}
            rows.append(r)
    during = monitor.stop(closed)
    data = {"quiet_check": quiet, "load_during_run": during, "threads": threads, "batch": args.batch,
            "rounds": rounds, "calls_per_round": calls, "seed": seed, "round_orders": orders, "rows": rows,
            "idle_threads": spin, "workers": infos, "presets": presets}
    md = (f"{threads} thread(s), batch {args.batch}, eval mode; median of per-round medians over {rounds} rounds of "
          f"{calls} call(s); paired bootstrap 95% intervals.\n\n" + R.inference_table(data)
          + "\n\nLibraries: " + "  \n".join(f"{k}: {C.versions_line(v)}" for k, v in infos.items()))

    def draw(path):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(max(7, 2.2 * len(rows) / 3 + 3), 4))
        ax.bar([f"{r.get('arch', 'tutorial')}\n{R.label(r['config'].split('+arch=')[0])}\n{r['mode']}" for r in rows],
               [r["images_per_s"] for r in rows],
               color=["tab:blue" if r["config"].startswith("scratch") else "tab:orange" for r in rows])
        ax.set_ylabel(f"images/s (eval, batch {args.batch})")
        ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    C.save("inference", md, data, draw, out=args.out)


if __name__ == "__main__":
    main()
