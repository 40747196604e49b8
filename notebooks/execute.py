"""Run the notebooks in this folder top to bottom, and keep their committed outputs honest.

    python notebooks/execute.py              # run each notebook; exit 1 if a cell fails or an output is stale
    python notebooks/execute.py --write      # run each notebook and save its new outputs in place
    python notebooks/execute.py walkthrough.ipynb   # just that one

The notebooks are committed WITH their outputs, so they can be read on the
repository page without running anything. Those outputs go stale when the code
changes, so some cells are marked as checked: their code cell metadata holds

    "scratchcnn_check": {"rtol": r, "atol": a, "factor": f, "floor": z}

(each key optional: rtol and atol default to 0, factor to 10, floor to 0).
For a checked cell, the text it printed (stdout and plain-text results) is split
into numbers and the words around them. Re-executed, the cell must print the same
words and as many numbers, and each number must match the committed one:

* a magnitude, a number printed in exponent notation with one or two decimals
  (``f"{err:.1e}"``, ``.2e``: parity errors, differences, relative errors, whose
  size is what they say) must stay within a factor ``f`` of the committed one,
  values under ``z`` counting as ``z``: with f = 10, a committed 2.7e-15 accepts
  2.7e-16 .. 2.7e-14, never 1e-6, and with z = 0 a committed 0.0e+00 stays 0.
  ``z`` is the size under which the magnitude is rounding noise (1e-16 for a
  float64 relative error, about 1e-8 for a float32 difference of values near 1).
  Both stay relative to what the cell publishes: ``f`` is at most 100, and ``z`` at
  most 10 times the smallest nonzero magnitude the cell prints, so no published
  number may grow more than 1000-fold unnoticed (a floor of 1e-9 sized for a cell's
  float32 errors would let its float64 errors of 1e-16 grow to 1e-7);
* every other number must be within ``atol + rtol * |committed|`` of the
  committed one, plus one unit in the last printed digit for a number printed
  with a decimal point or exponent (so 0.12345 printed as 0.1235 or 0.1234 both
  pass). Integers (shapes, counts) get no such unit.

Shapes, the hand-computed pixel, losses, parity errors and accuracies are in
checked cells; timings are in unchecked cells, because they differ on every run.

Each notebook runs in a fresh Jupyter kernel (``nbclient``, with a timeout per
cell) whose working folder is a temporary one, with this checkout first on
PYTHONPATH, so it uses the code next to it even when another copy of
scratchcnn is installed. ``tests/test_notebooks.py`` runs this.
"""
import argparse
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHECK_KEY = "scratchcnn_check"
CELL_TIMEOUT_S = 600
MAX_BYTES = 1_000_000           # committed notebooks stay small enough to render on the repository page
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def notebooks():
    """The notebooks of this folder, sorted by name."""
    return sorted(os.path.join(HERE, f) for f in os.listdir(HERE) if f.endswith(".ipynb"))


def execute(path, timeout=CELL_TIMEOUT_S):
    """Run the notebook at ``path`` in a fresh kernel; return the executed copy (nbformat node).

    Raises ``nbclient.exceptions.CellExecutionError`` (with the cell's traceback) when a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + ([env_before] if env_before else []))
    try:
        with tempfile.TemporaryDirectory(prefix="scratchcnn-nb-") as workdir:
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                                    resources={"metadata": {"path": workdir}})
            client.execute()
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
    return nb


def cell_text(cell):
    """What a code cell printed: its stdout streams and plain-text results, joined."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            if "text/plain" in out.get("data", {}) and not any(k.startswith("image/") for k in out["data"]):
                parts.append(out["data"]["text/plain"])
    return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


def split_numbers(text):
    """(words, numbers): the text with every number replaced by '#', and the numbers as strings."""
    return NUMBER.sub("#", text), NUMBER.findall(text)


def last_digit(token):
    """One unit in the last printed digit of a decimal number ('0.123' -> 0.001, '1.5e-07' -> 1e-08);
    0 for an integer, which must then match within the tolerance alone, and for a zero printed in
    exponent notation ('0.0e+00'), which only an exact zero prints."""
    mantissa, _, exponent = token.lower().partition("e")
    if "." not in mantissa and not exponent:
        return 0.0
    if exponent and float(mantissa) == 0:
        return 0.0
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent or 0) - decimals)


MAGNITUDE = re.compile(r"[-+]?\d\.\d{1,2}[eE][-+]?\d+")
TOLERANCE_KEYS = {"rtol": 0.0, "atol": 0.0, "factor": 10.0, "floor": 0.0}
MAX_FACTOR = 100.0              # a magnitude may change at most this many times...
FLOOR_SLACK = 10.0              # ...and the floor may lie at most this far above a published magnitude


def is_magnitude(token):
    """Whether a printed number is a magnitude: exponent notation with one or two decimals."""
    return MAGNITUDE.fullmatch(token) is not None


def number_matches(old, new, rtol=0.0, atol=0.0, factor=10.0, floor=0.0):
    """(ok, allowed) for one committed number ``old`` and its fresh value ``new`` (both as printed);
    ``allowed`` says what was allowed, for the message. See the module's docstring."""
    if is_magnitude(old):
        o, n = max(abs(float(old)), floor), max(abs(float(new)), floor)
        return n <= factor * o and o <= factor * n, f"within a factor {factor:g} of {o:.3g}"
    allowed = atol + rtol * abs(float(old)) + last_digit(old)
    return abs(float(new) - float(old)) <= allowed * (1 + 1e-9), f"difference {allowed:.3g}"


def compare_cell(committed, fresh, rtol=0.0, atol=0.0, factor=10.0, floor=0.0):
    """[problem, ...] between the committed and the freshly printed text of one checked cell."""
    words_old, nums_old = split_numbers(committed)
    words_new, nums_new = split_numbers(fresh)
    if words_old != words_new or len(nums_old) != len(nums_new):
        return [f"the printed text changed:\n--- committed\n{committed}\n--- now\n{fresh}"]
    problems = []
    for old, new in zip(nums_old, nums_new):
        ok, allowed = number_matches(old, new, rtol, atol, factor, floor)
        if not ok:
            problems.append(f"{old} is now {new} (allowed: {allowed})")
    return problems


def checked_cells(nb):
    """[(index, cell, tolerances)] for the code cells marked as checked; tolerances: a dict with
    every key of TOLERANCE_KEYS (the defaults filled in), for compare_cell."""
    out = []
    for i, cell in enumerate(nb.cells):
        spec = cell.get("metadata", {}).get(CHECK_KEY)
        if cell.cell_type == "code" and spec is not None:
            out.append((i, cell, {k: float(spec.get(k, d)) for k, d in TOLERANCE_KEYS.items()}))
    return out


def spec_problems(nb):
    """[message, ...] for check specs with unknown keys (a typo would silently mean a default),
    a factor below 1 or above MAX_FACTOR, a negative tolerance, or a floor more than FLOOR_SLACK
    times the smallest nonzero magnitude the cell publishes (which it would let grow unnoticed)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        spec = cell.get("metadata", {}).get(CHECK_KEY)
        if cell.cell_type != "code" or spec is None:
            continue
        unknown = sorted(set(spec) - set(TOLERANCE_KEYS))
        if unknown:
            problems.append(f"cell {i}: unknown {CHECK_KEY} keys {unknown}; known: {sorted(TOLERANCE_KEYS)}")
        factor = float(spec.get("factor", TOLERANCE_KEYS["factor"]))
        if not 1 <= factor <= MAX_FACTOR:
            problems.append(f"cell {i}: {CHECK_KEY} factor must be between 1 and {MAX_FACTOR:g}, not {factor:g}")
        if any(float(spec.get(k, 0)) < 0 for k in ("rtol", "atol", "floor")):
            problems.append(f"cell {i}: {CHECK_KEY} tolerances must not be negative")
        floor = float(spec.get("floor", 0))
        published = [abs(float(t)) for t in split_numbers(cell_text(cell))[1] if is_magnitude(t) and float(t)]
        if published and floor > FLOOR_SLACK * min(published):
            problems.append(f"cell {i}: {CHECK_KEY} floor {floor:g} is more than {FLOOR_SLACK:g} times the "
                            f"published {min(published):.2g}, which it would let grow to {factor * floor:g} "
                            f"unnoticed; lower it (or print that number in another cell)")
    return problems


def stale_outputs(committed_nb, fresh_nb):
    """[message, ...] for every checked cell whose fresh output differs from the committed one."""
    if len(committed_nb.cells) != len(fresh_nb.cells):
        return ["the number of cells changed while executing"]
    fresh_cells = fresh_nb.cells
    problems = []
    for i, cell, tol in checked_cells(committed_nb):
        for p in compare_cell(cell_text(cell), cell_text(fresh_cells[i]), **tol):
            first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            problems.append(f"cell {i} ({first[:60]}): {p}")
    return problems


def committed_problems(path):
    """[message, ...] for a committed notebook that is not fully executed, shows an error, or is too large."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    problems = []
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        problems.append(f"{os.path.basename(path)} is {size} bytes; keep it under {MAX_BYTES} "
                        f"(smaller or fewer images)")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i} has not been executed; run python notebooks/execute.py --write")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i} shows an error: {out.get('ename')}: {out.get('evalue')}")
    if not checked_cells(nb):
        problems.append(f"{os.path.basename(path)} has no checked cells (metadata {CHECK_KEY!r})")
    problems += spec_problems(nb)
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python notebooks/execute.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: every .ipynb in notebooks/)")
    parser.add_argument("--write", action="store_true", help="save the new outputs into the notebooks")
    args = parser.parse_args(argv)
    import nbformat

    paths = [os.path.join(HERE, os.path.basename(n)) for n in args.names] or notebooks()
    failed = False
    for path in paths:
        name = os.path.basename(path)
        committed = nbformat.read(path, as_version=4)
        fresh = execute(path)
        if args.write:
            nbformat.write(fresh, path)
            problems = committed_problems(path)
            print(f"{name}: outputs written ({os.path.getsize(path)} bytes)")
        else:
            problems = committed_problems(path) + stale_outputs(committed, fresh)
            print(f"{name}: ran top to bottom; " + ("outputs up to date" if not problems else "STALE"))
        for p in problems:
            print("  " + p)
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
