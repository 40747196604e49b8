"""Run every benchmark (step, layers, scaling, memory) in turn; extra flags go to each.

    python -m benchmarks.all [--force] [--quick]
"""
import subprocess
import sys

from benchmarks import _common as C


def main():
    args = C.parser(__doc__.splitlines()[0]).parse_args()
    C.check_quiet(args.force)                 # fail fast, before the first benchmark starts
    flags = [f for f, on in (("--force", args.force), ("--quick", args.quick)) if on]
    failed = []
    for name in ("step", "layers", "scaling", "memory"):
        print(f"\n=== benchmarks.{name} ===", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *flags])
        if rc:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
