"""The notebooks in notebooks/ run top to bottom, and their committed outputs are current.

``notebooks/execute.py`` does the work (it is also the command that regenerates
the outputs); these tests run it and check that its staleness check can fail.
"""
import importlib.util
import os

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("notebook_execute", os.path.join(ROOT, "notebooks", "execute.py"))
nbexec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbexec)

NOTEBOOKS = nbexec.notebooks()


def test_there_is_a_notebook():
    assert [os.path.basename(p) for p in NOTEBOOKS] == ["walkthrough.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_notebook_is_executed_small_and_checked(path):
    assert nbexec.committed_problems(path) == []
    nb = nbformat.read(path, as_version=4)
    # the walkthrough's checked cells cover shapes, the hand-computed values, the gradients,
    # the parity errors and the accuracies: at least that many
    assert len(nbexec.checked_cells(nb)) >= 12


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_and_its_outputs_are_current(path):
    committed = nbformat.read(path, as_version=4)
    fresh = nbexec.execute(path)          # raises CellExecutionError, with the traceback, if a cell fails
    assert all(out.get("output_type") != "error" for cell in fresh.cells for out in cell.get("outputs", []))
    problems = nbexec.stale_outputs(committed, fresh)
    assert problems == [], ("outputs are stale; regenerate them with python notebooks/execute.py --write:\n"
                            + "\n".join(problems))


# ---------------------------------------------------------------- the staleness check itself

def test_last_printed_digit():
    assert nbexec.last_digit("0.1235") == pytest.approx(1e-4)
    assert nbexec.last_digit("-2.5e-07") == pytest.approx(1e-8)
    assert nbexec.last_digit("3e-5") == pytest.approx(1e-5)
    assert nbexec.last_digit("12.") == pytest.approx(1.0)
    assert nbexec.last_digit("32") == 0.0            # integers (shapes, counts) get no slack
    assert nbexec.last_digit("0.0e+00") == 0.0       # only an exact zero prints so
    assert nbexec.last_digit("0.0000") == pytest.approx(1e-4)


def test_magnitudes_are_exponent_notation_with_one_or_two_decimals():
    assert all(map(nbexec.is_magnitude, ["4.6e-07", "2.50e-11", "0.0e+00", "-1.2E+03"]))
    assert not any(map(nbexec.is_magnitude, ["-1.756590e-02", "5.635e-01", "1e-07", "0.1235", "32"]))


def test_split_numbers():
    words, nums = nbexec.split_numbers("conv1 (1, 32, 32, 32) min -0.8651 err 4.6e-07\n")
    assert words == "conv# (#, #, #, #) min # err #\n"
    assert nums == ["1", "1", "32", "32", "32", "-0.8651", "4.6e-07"]


@pytest.mark.parametrize("old, new, rtol, atol, ok", [
    ("loss 2.3279", "loss 2.3279", 0, 0, True),
    ("loss 2.3279", "loss 2.3280", 0, 0, True),           # one unit in the last printed digit
    ("loss 2.3279", "loss 2.3281", 0, 0, False),
    ("loss 2.3279", "loss 2.3281", 1e-4, 0, True),
    ("acc 98.6%", "acc 95.1%", 0, 4, True),
    ("acc 98.6%", "acc 93.0%", 0, 4, False),
    ("shape (1, 32, 16, 16)", "shape (1, 32, 16, 17)", 1e-4, 1e-6, False),   # integers must match
    ("grad -1.756590e-02", "grad -1.756591e-02", 0, 0, True),    # a value in exponent notation
    ("grad -1.756590e-02", "grad -1.756690e-02", 1e-5, 0, False),
    # magnitudes (.1e, .2e): within a factor 10 of the committed value, whatever atol says
    ("error 4.6e-07", "error 9.9e-07", 0, 0, True),
    ("error 4.6e-07", "error 9.9e-06", 0, 2e-5, False),
    ("error 4.6e-07", "error 3.0e-08", 0, 2e-5, False),          # shrinking 15x is news too
    ("error 2.7e-15", "error 1.0e-06", 0, 2e-5, False),          # float64 parity lost
    ("error 2.7e-15", "error 2.0e-14", 1, 1, True),
    ("error 2.50e-11", "error 2.51e-10", 0, 0, False),
    ("error 0.0e+00", "error 1.1e-16", 1, 1, False),             # a committed zero stays zero
    ("result ok", "result FAIL", 1, 1, False),               # the words must match
    ("1 2 3", "1 2", 1, 1, False),                           # so must the count of numbers
])
def test_compare_cell(old, new, rtol, atol, ok):
    assert (nbexec.compare_cell(old, new, rtol, atol) == []) is ok


@pytest.mark.parametrize("old, new, factor, floor, ok", [
    ("2.7e-15", "2.7e-16", 10, 0, True),
    ("2.7e-15", "2.6e-16", 10, 0, False),
    ("2.7e-15", "1.0e-06", 1e3, 0, False),
    ("4.6e-07", "9.0e-07", 2, 0, True),
    ("4.6e-07", "9.5e-07", 2, 0, False),
    ("0.0e+00", "1.1e-16", 10, 1e-16, True),       # under the floor: rounding noise
    ("0.0e+00", "1.1e-15", 10, 1e-16, False),
    ("3.7e-09", "0.0e+00", 10, 1e-8, True),
    ("3.7e-09", "2.0e-07", 10, 1e-8, False),
])
def test_magnitudes_compare_by_factor_above_the_floor(old, new, factor, floor, ok):
    assert (nbexec.compare_cell(f"err {old}", f"err {new}", 0, 1, factor, floor) == []) is ok


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_the_check_catches_a_float64_parity_error_growing_to_1e_6(path):
    """The walkthrough publishes float64 parity errors near 1e-15; a run printing 1e-6 instead
    (parity lost) must be stale: the committed notebook against a copy whose table says so."""
    committed = nbformat.read(path, as_version=4)
    fresh = nbformat.read(path, as_version=4)
    [i] = [c[0] for c in nbexec.checked_cells(committed) if "float64 error" in nbexec.cell_text(c[1])]
    text = nbexec.cell_text(committed.cells[i])
    line = next(ln for ln in text.splitlines() if ln.startswith("conv1.weight.grad"))
    e64 = nbexec.split_numbers(line)[1][-1]
    assert 1e-16 < float(e64) < 1e-13, line                       # what the table publishes
    assert nbexec.stale_outputs(committed, fresh) == []
    [out] = [o for o in fresh.cells[i].outputs if line in o.get("text", "")]
    out.text = out.text.replace(line, line[:line.rindex(e64)] + "1.0e-06")
    problems = nbexec.stale_outputs(committed, fresh)
    assert len(problems) == 1 and f"{e64} is now 1.0e-06" in problems[0], problems


def _replace_number(text, k, new):
    """``text`` with its k-th number (as split_numbers counts them) replaced by the string ``new``."""
    m = list(nbexec.NUMBER.finditer(text))[k]
    return text[:m.start()] + new + text[m.end():]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_every_published_magnitude_is_stale_when_it_grows_a_thousandfold(path):
    """Each parity error, difference or relative error a checked cell publishes is guarded
    relative to ITS OWN value, whatever the cell's spec: a published 1.5e-16 that a rerun prints
    as 1.5e-13 (or a published 0.0e+00 printed as 1.0e-10) is stale. A cell-wide floor or atol
    sized for its float32 numbers must not let its float64 numbers grow unnoticed."""
    nb = nbformat.read(path, as_version=4)
    checked = 0
    for i, cell, tol in nbexec.checked_cells(nb):
        text = nbexec.cell_text(cell)
        for k, token in enumerate(nbexec.split_numbers(text)[1]):
            if not nbexec.is_magnitude(token):
                continue
            grown = f"{1e3 * abs(float(token)):.2e}" if float(token) else "1.0e-10"
            assert nbexec.compare_cell(text, _replace_number(text, k, grown), **tol) != [], \
                f"cell {i}: published {token}, a rerun printing {grown} would pass ({tol})"
            checked += 1
    assert checked >= 20                       # the float64 / float32 error tables are really read


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_check_specs_are_valid(path):
    assert nbexec.spec_problems(nbformat.read(path, as_version=4)) == []


def test_spec_problems_names_unknown_keys_and_bad_values():
    cells = [nbformat.v4.new_code_cell("1", metadata={nbexec.CHECK_KEY: spec})
             for spec in ({"rtol": 1e-4, "flor": 1e-16}, {"factor": 0.5}, {"atol": -1}, {"factor": 4},
                          {"factor": 1000}, {"factor": 100})]
    problems = nbexec.spec_problems(nbformat.v4.new_notebook(cells=cells))
    assert len(problems) == 4
    assert "cell 0: unknown" in problems[0] and "'flor'" in problems[0]
    assert problems[1].startswith("cell 1") and problems[2].startswith("cell 2")
    assert problems[3].startswith("cell 4: scratchcnn_check factor must be between 1 and 100")


@pytest.mark.parametrize("floor, ok", [(1e-16, True), (1.5e-15, True), (1.6e-15, False), (1e-9, False)])
def test_a_floor_may_not_hide_the_smallest_published_magnitude(floor, ok):
    """A floor is rounding noise for the cell's numbers: at most 10 times the smallest nonzero one it
    prints (zeros do not count), else a published 1.5e-16 could grow to factor * floor unnoticed."""
    cell = nbformat.v4.new_code_cell("print(errors)", metadata={nbexec.CHECK_KEY: {"factor": 100, "floor": floor}})
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text="float64 1.5e-16 0.0e+00\nfloat32 4.1e-08 loss 2.3279\n")]
    problems = nbexec.spec_problems(nbformat.v4.new_notebook(cells=[cell]))
    assert (problems == []) is ok, problems
    if not ok:
        assert "floor" in problems[0] and "1.5e-16" in problems[0]


def test_stale_outputs_names_the_cell_that_changed():
    def notebook(value):
        cell = nbformat.v4.new_code_cell("print(loss)", metadata={nbexec.CHECK_KEY: {"rtol": 0, "atol": 1e-6}})
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"loss {value}\n")]
        free = nbformat.v4.new_code_cell("print(time)")
        free.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"took {value} ms\n")]
        return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), cell, free])

    assert nbexec.stale_outputs(notebook("2.3279"), notebook("2.3279")) == []
    problems = nbexec.stale_outputs(notebook("2.3279"), notebook("2.4000"))
    assert len(problems) == 1 and problems[0].startswith("cell 1 (print(loss)): 2.3279 is now 2.4000")


def test_committed_problems_finds_unexecuted_cells_errors_and_missing_checks(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0"), nbformat.v4.new_code_cell("x = 1")])
    nb.cells[0].execution_count = 1
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                                  traceback=[])]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, str(path))
    problems = nbexec.committed_problems(str(path))
    assert any("cell 0 shows an error: ZeroDivisionError" in p for p in problems)
    assert any("cell 1 has not been executed" in p for p in problems)
    assert any("has no checked cells" in p for p in problems)
