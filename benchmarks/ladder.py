"""The optimisation ladder: what each step from plain NumPy to the fused path bought, and PyTorch beside it.

    python -m benchmarks.ladder [--force] [--quick] [--rounds 5] [--threads N] [--seed S]

Four rungs, one training step of batch 32 each (forward, backward, SGD with
momentum, dropout on), all at the same thread count (default: all cores):

    1. NumPy reference layers   the layer path with ``scratchcnn.ops.use_reference()``: every
                                conv, pool and dropout op runs on its NumPy twin in
                                ``scratchcnn/reference.py`` (im2col + matmul, reshape pooling)
    2. numba layers             the same layers on the numba kernels (``scratchcnn train --no-fused``)
    3. fused                    ``scratchcnn.fused.fused_train_step``: NHWC, fused epilogues,
                                fc3's gradient and SGD update in one pass
    4. PyTorch                  the tutorial's loop

as cs231n's assignments print "naive vs fast: speed-up". Each rung runs in
its own worker; the rungs take turns in rounds (random order, idle threads
settled) like benchmarks.step, and each speed-up has a paired bootstrap 95%
interval over rounds. The reference rung takes seconds per step, so every
rung runs a fixed time budget per round (at least one step) instead of a fixed
number of steps.
"""
import os

from benchmarks import _common as C
from benchmarks import _report as R
from benchmarks import _stats as S
from benchmarks._workload import MFLOP_PER_IMAGE

RUNGS = ("scratch-reference", "scratch-layers", "scratch", "torch")
BATCH = 32


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds-per-round", type=float, default=2.0,
                   help="time each rung runs per round (at least one step)")
    p.add_argument("--threads", type=int, default=None, help="thread count (default: all cores)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    quiet = C.check_quiet(args.force)
    threads = args.threads or C.thread_counts()[0]
    rounds = 2 if args.quick else args.rounds
    budget = 0.3 if args.quick else args.seconds_per_round
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    monitor, workers = C.LoadMonitor().start(), {}
    steps = {}
    for config in RUNGS:
        print(f"starting {config} ...", flush=True)
        w = workers[config] = C.Worker(config, threads)
        first = w.call(cmd="steps", n=2, batch=BATCH)["times"]        # warm-up; sizes the rounds
        steps[config] = max(1, min(20, int(budget / max(first[-1], 1e-6))))
        w.settle()
    times, orders = C.run_rounds(workers, rounds, lambda k: {"cmd": "steps", "n": steps[k], "batch": BATCH}, seed)
    infos = {k: w.info for k, w in workers.items()}
    spin = C.spin_record(workers)
    during = monitor.stop(sum(w.close() for w in workers.values()))
    rungs = []
    for i, config in enumerate(RUNGS):
        r = S.summary(times[config], BATCH, MFLOP_PER_IMAGE * 1e6)
        r.update(config=config, rounds_s=times[config], steps_per_round=steps[config])
        if i:
            ratio, lo, hi = S.bootstrap_ratio(times[RUNGS[i - 1]], times[config], seed=seed)
            r["vs_previous"] = {"ratio": ratio, "low": lo, "high": hi}
            ratio, lo, hi = S.bootstrap_ratio(times[RUNGS[0]], times[config], seed=seed)
            r["vs_first"] = {"ratio": ratio, "low": lo, "high": hi}
        rungs.append(r)
    data = {"quiet_check": quiet, "load_during_run": during, "threads": threads, "batch": BATCH, "rounds": rounds,
            "seed": seed, "round_orders": orders, "rungs": rungs, "idle_threads": spin, "workers": infos}
    md = (f"{threads} thread(s), batch {BATCH}; median of per-round medians over {rounds} rounds "
          f"(each rung about {budget:g} s per round); paired bootstrap 95% intervals.\n\n" + R.ladder_table(data)
          + "\n\nLibraries: " + "  \n".join(f"{k}: {C.versions_line(v)}" for k, v in infos.items()))

    def draw(path):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        names = [R.label(r["config"]) for r in rungs]
        ax.barh(names[::-1], [r["median_ms"] for r in rungs][::-1],
                color=["tab:orange" if r["config"].startswith("torch") else "tab:blue" for r in rungs][::-1])
        ax.set_xscale("log")
        ax.set_xlabel("ms per training step (batch 32, median), log scale")
        ax.set_title("the optimisation ladder")
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    C.save("ladder", md, data, draw, out=args.out)


if __name__ == "__main__":
    main()
