"""End to end: one epoch of ``scratchcnn train`` per backend, data pipeline and evaluation included.

    python -m benchmarks.epoch [--force] [--quick] [--rounds 3] [--data-dir DIR] [--recipe tutorial]
                               [--arch tutorial]

The step benchmark times the step alone. This one times what a user waits
for: each round runs ``python -m scratchcnn train --epochs 1`` once per
backend (scratch, torch on the CPU), in a fresh random order, one process at
a time, all cores each. From each run's ``metrics.json`` it reads

    loop   the epoch's training loop: batches drawn, shuffled (and augmented,
           with --recipe improved), converted, and one training step each
    eval   the evaluation of the whole test set that follows every epoch

and it times the whole process (start-up, imports, loading the data, saving
the checkpoint). The headline is the epoch, loop + eval, as the ratio
torch / scratch with a paired bootstrap 95% interval over rounds.

Data: without ``--data-dir``, the built-in synthetic dataset's whole splits
(20,000 train / 2,000 test images of 3x32x32, ``scratchcnn.data.SPLIT_SIZES``;
the tutorial's committed run predates that cap and used 50,000 / 10,000), which
cost the same per image as CIFAR-10 and need no download; with ``--data-dir DIR``,
``--dataset folder`` on DIR (for example CIFAR-10 as JPEG folders, see the
README). ``--arch`` picks the network (a preset; default the tutorial's): results
go to ``epoch.md/.json/.png`` for the tutorial's network and to
``epoch-<arch>.*`` for any other (``benchmarks.all`` also runs ``--arch vgg``,
the strong preset). Before the first timed round one short untimed run per backend loads
numba's kernels into the cache and, for a folder, builds its decoded cache.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _common as C
from benchmarks import _report as R
from benchmarks import _stats as S
from scratchcnn.data import SPLIT_SIZES

BACKENDS = ("scratch", "torch")
SIZES = dict(zip(("train", "test"), SPLIT_SIZES["synthetic"]))   # asking for more is refused


def train_command(backend, out, args, sizes=None):
    """The ``scratchcnn train`` command line of one run: one epoch of ``backend`` into ``out``."""
    sizes = sizes or ({} if args.data_dir else SIZES)
    data = (["--dataset", "folder", "--data-dir", str(args.data_dir)] if args.data_dir
            else ["--dataset", "synthetic"])
    cmd = [sys.executable, "-m", "scratchcnn", "train", "--backend", backend, *data, "--recipe", args.recipe,
           "--arch", args.arch, "--epochs", "1", "--seed", str(args.train_seed), "--out", str(out),
           "--overwrite", "--no-progress"]
    for split, n in sizes.items():
        cmd += [f"--{split}-size", str(n)]
    return cmd


def run_once(backend, out, args, sizes=None):
    """One run: {'loop_s', 'eval_s', 'epoch_s', 'wall_s', 'images'} from the run's metrics.json."""
    t0 = time.perf_counter()
    proc = subprocess.run(train_command(backend, out, args, sizes), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"scratchcnn train --backend {backend} failed (exit {proc.returncode}): {tail[0]}")
    (e,) = json.loads((Path(out) / "metrics.json").read_text())["epochs"]
    return {"loop_s": e["seconds"], "eval_s": e["eval_seconds"], "epoch_s": e["seconds"] + e["eval_seconds"],
            "wall_s": wall, "images": round(e["images_per_s"] * e["seconds"]), "test_acc": e["test_acc"]}


def summarise(runs, seed):
    """Rows per backend from ``runs[backend] = [run_once() per round]``: the median of each figure over
    rounds, and for torch the ratios to scratch (epoch, loop, wall) with paired bootstrap intervals."""
    rows = []
    for b in BACKENDS:
        rs = runs[b]
        row = {"backend": b, "rounds": rs}
        for k in ("loop_s", "eval_s", "epoch_s", "wall_s"):
            row[k] = S.centre([[r[k]] for r in rs])
        row["images_per_s"] = rs[0]["images"] / row["loop_s"]
        if b != "scratch":
            row["speedup"] = {}
            for k in ("epoch_s", "loop_s", "wall_s"):
                ratio, lo, hi = S.bootstrap_ratio([[r[k]] for r in rs], [[r[k]] for r in runs["scratch"]], seed=seed)
                row["speedup"][k] = {"ratio": ratio, "low": lo, "high": hi}
        rows.append(row)
    return rows


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="an ImageFolder-layout folder (DIR/train, DIR/test); default: the built-in synthetic dataset "
                        "at CIFAR-10's sizes")
    p.add_argument("--recipe", choices=("tutorial", "improved"), default="tutorial")
    p.add_argument("--arch", default="tutorial", help="the network, a preset name (default: tutorial)")
    p.add_argument("--train-seed", type=int, default=0, help="the --seed of every training run")
    p.add_argument("--seed", type=int, default=None, help="seed of the round order and of the bootstrap")
    args = p.parse_args()
    if args.data_dir is not None and not (args.data_dir / "train").is_dir():
        sys.exit(f"error: {args.data_dir} has no train/ folder; pass a folder in ImageFolder layout "
                 f"(DIR/train/<class>/..., DIR/test/<class>/...) or leave out --data-dir")
    from scratchcnn.architecture import PRESETS
    if args.arch not in PRESETS:
        p.error(f"unknown preset {args.arch!r}: choose one of {', '.join(PRESETS)}")
    quiet = C.check_quiet(args.force)
    rounds = 1 if args.quick else args.rounds
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    sizes = {"train": 3200, "test": 1000} if args.quick else None
    runs, orders = {b: [] for b in BACKENDS}, []
    with tempfile.TemporaryDirectory(prefix="scratchcnn-epoch-") as tmp:
        for b in BACKENDS:                       # untimed: numba's cache, the folder's decoded cache
            print(f"warming up {b} ...", flush=True)
            run_once(b, Path(tmp) / f"warm-{b}", args, {"train": 320, "test": 100})
        monitor = C.LoadMonitor().start()
        import numpy as np
        rng = np.random.default_rng(seed)
        for k in range(rounds):
            order = [BACKENDS[i] for i in rng.permutation(len(BACKENDS))]
            orders.append(order)
            for b in order:
                r = run_once(b, Path(tmp) / f"{b}-{k}", args, sizes)
                runs[b].append(r)
                print(f"round {k + 1}/{rounds}  {b:7s}  epoch {r['epoch_s']:6.1f} s (loop {r['loop_s']:.1f} s, "
                      f"eval {r['eval_s']:.1f} s)  process {r['wall_s']:.1f} s", flush=True)
        during = monitor.stop(0.0)           # the training runs are reaped children: counted as ours
    rows = summarise(runs, seed)
    import torch
    data = {"quiet_check": quiet, "load_during_run": during, "rounds": rounds, "seed": seed, "round_orders": orders,
            "dataset": f"folder {args.data_dir.name}" if args.data_dir else "synthetic", "recipe": args.recipe,
            "arch": args.arch,
            "train_images": runs["scratch"][0]["images"], "threads": os.cpu_count(), "rows": rows,
            "torch": torch.__version__}
    md = (f"One epoch of `scratchcnn train --arch {args.arch} --recipe {args.recipe}` per backend on {data['dataset']} "
          f"({data['train_images']:,} training images), all cores; median over {rounds} interleaved round(s); "
          f"paired bootstrap 95% intervals.\n\n" + R.epoch_table(data))

    def draw(path):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for i, r in enumerate(rows):
            ax.barh(i, r["loop_s"], color="tab:blue" if r["backend"] == "scratch" else "tab:orange",
                    label="training loop" if i == 0 else None)
            ax.barh(i, r["eval_s"], left=r["loop_s"], color="0.6", label="evaluation" if i == 0 else None)
        ax.set_yticks(range(len(rows)), [r["backend"] for r in rows])
        ax.set_xlabel(f"seconds per epoch ({data['train_images']:,} images, {data['dataset']})")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    C.save("epoch" if args.arch == "tutorial" else f"epoch-{args.arch}", md, data, draw, out=args.out)


if __name__ == "__main__":
    main()
