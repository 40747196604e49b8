"""``train --snapshots K``: the weights kept K times per epoch, their index, and --resume.

A small network (5 steps per epoch: 160 synthetic images, batch 32) trains in seconds.
"""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import one_error_line
from scratchcnn import architecture
from scratchcnn.cli import main
from scratchcnn.errors import UserError
from scratchcnn.study.snapshots import describe_cost, list_snapshots, load_snapshot

SPEC = [{"kind": "Conv2d", "name": "look", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"kind": "ReLU"},
        {"kind": "MaxPool2d", "kernel_size": 4},
        {"kind": "Flatten"},
        {"kind": "Linear", "name": "mid", "out_features": 16},
        {"kind": "ReLU"},
        {"kind": "Dropout", "p": 0.3},
        {"kind": "Linear", "name": "out"}]
SEED, LR = 4, 0.02


def _train(folder, *extra):
    return main(["train", "--arch", str(folder / "net.json"), "--dataset", "synthetic", "--train-size", "160",
                 "--test-size", "20", "--lr", str(LR), "--seed", str(SEED), "--no-progress", *map(str, extra)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    f = tmp_path_factory.mktemp("snapshots")
    (f / "net.json").write_text(json.dumps(SPEC))
    return f


@pytest.fixture(scope="module")
def straight(folder):
    """Two epochs, 2 snapshots per epoch, without interruption."""
    out = folder / "straight"
    assert _train(folder, "--epochs", 2, "--snapshots", 2, "--out", out) == 0
    return str(out)


def _weights(path, run):
    from scratchcnn.checkpoint import load_checkpoint
    return load_checkpoint(path, arch=load_snapshot(run, 0)["arch"])["model"]


def test_k_snapshots_per_epoch_with_their_index(straight):
    files = sorted(os.listdir(os.path.join(straight, "snapshots")))
    assert files == ["epoch-1-step-2.pth", "epoch-1-step-5.pth", "epoch-2-step-2.pth", "epoch-2-step-5.pth",
                     "index.json"]
    entries = list_snapshots(straight)
    assert [(e["epoch"], e["step"], e["global_step"], e["images_seen"]) for e in entries] == [
        (1, 2, 2, 64), (1, 5, 5, 160), (2, 2, 7, 224), (2, 5, 10, 320)]       # 5 steps of 32, 32, 32, 32, 32
    assert [e["file"] for e in entries] == [f"snapshots/{f}" for f in files[:4]]
    index = json.load(open(os.path.join(straight, "snapshots", "index.json")))
    arch = architecture.load(str(os.path.join(os.path.dirname(straight), "net.json")), 10)
    assert index["per_epoch"] == 2 and index["steps_per_epoch"] == 5
    assert index["floats"] == arch.n_params == 4 * 27 + 4 + 256 * 16 + 16 + 16 * 10 + 10
    # the last snapshot of each epoch is the epoch's end: the run's final weights
    last = load_snapshot(straight, -1)
    assert last["epoch"] == 2 and last["arch"] == arch and last["classes"][0] == "horizontal"
    final = _weights(os.path.join(straight, "model.pth"), straight)
    for k in final:
        np.testing.assert_array_equal(last["model"][k], final[k])
    assert not np.array_equal(load_snapshot(straight, 0)["model"]["mid.weight"], final["mid.weight"])


def test_each_snapshot_holds_the_weights_after_its_step(folder, capsys):
    """K = steps per epoch: snapshot s equals a training run stopped after step s, replayed here
    with the same backend, batches, lr and dropout seed as the training loop uses."""
    from scratchcnn.backends import make_backend
    from scratchcnn.data import iterate_batches, load_dataset
    from scratchcnn.train import epoch_seed

    out = str(folder / "every-step")
    capsys.readouterr()
    assert _train(folder, "--epochs", 1, "--snapshots", 5, "--out", out) == 0
    arch = architecture.load(str(folder / "net.json"), 10)
    log = capsys.readouterr().out
    assert f"snapshots: 5 per epoch, after steps 1, 2, 3, 4, 5 of 5; {describe_cost(arch)}" in log
    train, _ = load_dataset("synthetic", seed=SEED, n_train=160, n_test=20)
    backend = make_backend("scratch", arch=arch, lr=LR, momentum=0.9, seed=SEED, n_classes=10)
    backend.seed(epoch_seed(SEED, 0))
    batches = iterate_batches(train, 32, shuffle=True, seed=SEED, epoch=0)
    for step, (x, y) in enumerate(batches):
        backend.set_lr(LR)
        backend.train_step(x, y)
        snap = load_snapshot(out, step)
        assert (snap["epoch"], snap["step"]) == (1, step + 1)
        for k, v in backend.state_dict().items():
            np.testing.assert_array_equal(snap["model"][k], v, err_msg=f"step {step + 1}: {k}")


def test_resume_neither_duplicates_nor_loses_a_snapshot(folder, straight):
    out = folder / "resumed"
    assert _train(folder, "--epochs", 1, "--snapshots", 2, "--out", out) == 0
    # an interrupted second epoch left a snapshot, its index entry and a half-written file
    snaps = out / "snapshots"
    shutil.copy(snaps / "epoch-1-step-2.pth", snaps / "epoch-2-step-2.pth")
    (snaps / "epoch-2-step-5.pth.abcd1234.tmp").write_bytes(b"half")
    index = json.loads((snaps / "index.json").read_text())
    index["snapshots"].append({"epoch": 2, "step": 2, "global_step": 7, "images_seen": 224,
                               "file": "snapshots/epoch-2-step-2.pth"})
    (snaps / "index.json").write_text(json.dumps(index))
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert sorted(os.listdir(snaps)) == sorted(os.listdir(os.path.join(straight, "snapshots")))
    ours, theirs = list_snapshots(str(out)), list_snapshots(straight)
    assert [{k: e[k] for k in ("epoch", "step", "global_step", "images_seen", "file")} for e in ours] == \
           [{k: e[k] for k in ("epoch", "step", "global_step", "images_seen", "file")} for e in theirs]
    for i in range(len(theirs)):
        a, b = load_snapshot(str(out), i)["model"], load_snapshot(straight, i)["model"]
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # starting over in that folder without --snapshots leaves none of the old run's
    assert _train(folder, "--epochs", 1, "--out", out, "--overwrite") == 0
    assert list_snapshots(str(out)) == [] and os.listdir(snaps) == ["index.json"]


def test_snapshot_errors(folder, straight, capsys):
    base = ["train", "--arch", str(folder / "net.json"), "--train-size", "160", "--test-size", "20",
            "--no-progress", "--out", str(folder / "refused")]
    assert "--snapshots 6 is more than the 5 steps of an epoch" in one_error_line(capsys, base + ["--snapshots", "6"])
    assert "keeps 2005 snapshots, more than 2,000" in one_error_line(
        capsys, base + ["--snapshots", "5", "--epochs", "401"])
    assert "drop --snapshots" in one_error_line(capsys, ["train", "--resume", straight, "--snapshots", "1"])
    assert not os.path.exists(folder / "refused")
    with pytest.raises(UserError, match="holds no snapshots"):
        list_snapshots(str(folder))
    with pytest.raises(UserError, match=r"snapshot 4 is out of range: .* has 4 \(0..3\)"):
        load_snapshot(straight, 4)


def test_help_states_the_disk_cost_computed_from_the_tutorials_parameters(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    cost = describe_cost(architecture.tutorial())
    assert cost == "4.2 M floats = 16.8 MB per snapshot" and cost in text
