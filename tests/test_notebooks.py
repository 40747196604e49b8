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
    ("error 4.6e-07", "error 9.9e-06", 0, 2e-5, True),
    ("error 4.6e-07", "error 3.0e-05", 0, 2e-5, False),
    ("result ok", "result FAIL", 1, 1, False),               # the words must match
    ("1 2 3", "1 2", 1, 1, False),                           # so must the count of numbers
])
def test_compare_cell(old, new, rtol, atol, ok):
    assert (nbexec.compare_cell(old, new, rtol, atol) == []) is ok


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
