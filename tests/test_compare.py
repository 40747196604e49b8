"""scratchcnn compare: the table's figures from known metrics, the figure, and its one-line errors."""
import json

import matplotlib.image as mpimg
import pytest

from scratchcnn.cli import main
from scratchcnn.compare import compare, load_run, summarise
from scratchcnn.errors import UserError


def _run(folder, backend, recipe, accs, seconds=10.0, eval_seconds=2.0):
    folder.mkdir(parents=True)
    epochs = [{"epoch": k + 1, "train_loss": 2.0 - 0.1 * k, "train_acc": a - 0.05, "test_loss": 1.5 - 0.1 * k,
               "test_acc": a, "lr": 0.001, "seconds": seconds, "images_per_s": 50000 / seconds,
               **({"eval_seconds": eval_seconds} if eval_seconds is not None else {})}
              for k, a in enumerate(accs)]
    (folder / "metrics.json").write_text(json.dumps({"config": {"backend": backend, "recipe": recipe,
                                                                "dataset": "folder"}, "epochs": epochs}))
    return str(folder)


def test_summary_of_a_run(tmp_path):
    run = load_run(_run(tmp_path / "a", "torch", "improved", [0.40, 0.62, 0.60], seconds=30.0, eval_seconds=3.0))
    r = summarise(run)
    assert r["label"] == "torch, improved" and r["epochs"] == 3
    assert r["final_test_acc"] == 0.60 and (r["best_test_acc"], r["best_epoch"]) == (0.62, 2)
    assert r["final_test_loss"] == pytest.approx(1.3)
    assert r["minutes"] == pytest.approx(3 * 33 / 60) and r["includes_eval"]
    assert r["images_per_s"] == pytest.approx(50000 / 30)


def test_table_and_figure(tmp_path):
    a = _run(tmp_path / "s", "scratch", "tutorial", [0.5, 0.6])
    b = _run(tmp_path / "t", "torch", "tutorial", [0.5, 0.55], eval_seconds=None)     # an older run
    out = tmp_path / "cmp.png"
    table = compare([a, b], str(out))
    lines = table.splitlines()
    assert lines[2] == ("| scratch, tutorial | tutorial | scratch | tutorial | 2 | 60.00% | 60.00% (2) | 1.400 | "
                        "4,210,090 | 14.5 M | 5x5 | 12.0 | 0.4 | 5000 |")
    assert lines[3] == ("| torch, tutorial | tutorial | torch | tutorial | 2 | 55.00% | 55.00% (2) | 1.400 | "
                        "4,210,090 | 14.5 M | 5x5 | 10.0 | 0.3* | 5000 |")
    assert "training loops only" in lines[-1]
    img = mpimg.imread(out)
    assert img.shape[0] > 300 and img.std() > 0.05


def test_runs_with_the_same_backend_and_recipe_are_told_apart_by_folder(tmp_path):
    a = _run(tmp_path / "seed0", "scratch", "improved", [0.7])
    b = _run(tmp_path / "seed1", "scratch", "improved", [0.71])
    table = compare([a, b], str(tmp_path / "c.png"))
    assert "| scratch, improved (seed0) |" in table and "| scratch, improved (seed1) |" in table
    table = compare([a, b], str(tmp_path / "c.png"), labels=["first", "second"])
    assert "| first |" in table and "| second |" in table


@pytest.mark.parametrize("make, args, message", [
    (lambda d: None, ["{d}/missing"], "missing/metrics.json does not exist"),
    (lambda d: (d / "bad").mkdir() or (d / "bad" / "metrics.json").write_text("{not json"),
     ["{d}/bad"], "cannot read"),
    (lambda d: (d / "empty").mkdir() or (d / "empty" / "metrics.json").write_text('{"config": {}, "epochs": []}'),
     ["{d}/empty"], "holds no completed epoch"),
    (lambda d: _run(d / "a", "scratch", "tutorial", [0.5]), ["{d}/a", "--label", "x", "--label", "y"],
     "2 --label value(s) for 1 run(s)"),
    (lambda d: _run(d / "a", "scratch", "tutorial", [0.5]), ["{d}/a", "--out", "{d}/c.jpg"], "must be a .png"),
])
def test_bad_input_gives_one_line(tmp_path, capsys, make, args, message):
    make(tmp_path)
    argv = ["compare", *[a.format(d=tmp_path) for a in args]]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "c.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_compare_refuses_in_python_too(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_run(str(tmp_path))
