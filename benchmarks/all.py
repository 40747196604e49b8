"""Run every benchmark in turn, then regenerate the README's Speed section; extra flags go to each.

    python -m benchmarks.all [--force] [--quick] [--out DIR]

Order: step, ladder, inference, layers, scaling, memory; then
``python -m benchmarks.readme --write`` (only when the results went to
benchmarks/results, the folder the README is generated from).
"""
import subprocess
import sys

from benchmarks import _common as C

BENCHMARKS = ("step", "ladder", "inference", "layers", "scaling", "memory")


def main():
    args = C.parser(__doc__.splitlines()[0]).parse_args()
    C.check_quiet(args.force)                 # fail fast, before the first benchmark starts
    flags = [f for f, on in (("--force", args.force), ("--quick", args.quick)) if on] + ["--out", str(args.out)]
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *flags])
        if rc:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print("error: failed: " + ", ".join(failed), file=sys.stderr)
        sys.exit(1)
    if args.out.resolve() == C.RESULTS.resolve():
        sys.exit(subprocess.call([sys.executable, "-m", "benchmarks.readme", "--write"]))


if __name__ == "__main__":
    main()
