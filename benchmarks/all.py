"""Run every benchmark in turn, then regenerate the docs' generated blocks; extra flags go to each.

    python -m benchmarks.all [--force] [--quick] [--out DIR] [--data-dir DIR]

Order: step, presets (every preset network's step), ladder, inference, layers,
scaling, memory, epoch and epoch --arch vgg (on ``--data-dir`` when given, e.g.
CIFAR-10 as JPEG folders, else on the built-in dataset); then
``python -m benchmarks.docs --write`` (only when the results went to
benchmarks/results, the folder the docs are generated from): docs/speed.md's Speed section and
the speed figures of the README's headline, so neither drifts from the new results.
"""
import subprocess
import sys

from benchmarks import _common as C

BENCHMARKS = ("step", "presets", "ladder", "inference --presets all", "layers", "scaling", "memory", "epoch", "epoch --arch vgg")


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="the epoch benchmark's ImageFolder-layout dataset")
    args = p.parse_args()
    C.check_quiet(args.force)                 # fail fast, before the first benchmark starts
    flags = [f for f, on in (("--force", args.force), ("--quick", args.quick)) if on] + ["--out", str(args.out)]
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        module, *options = name.split()
        extra = ["--data-dir", args.data_dir] if module == "epoch" and args.data_dir else []
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{module}", *options, *flags, *extra])
        if rc:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print("error: failed: " + ", ".join(failed), file=sys.stderr)
        sys.exit(1)
    if args.out.resolve() == C.RESULTS.resolve():
        sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.docs", "--write"]))


if __name__ == "__main__":
    main()
