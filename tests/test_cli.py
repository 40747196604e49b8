"""The command line end to end, on small subsets of the built-in dataset."""
import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest

from scratchcnn.checkpoint import load_checkpoint
from scratchcnn.cli import main

TINY = ["--dataset", "synthetic", "--train-size", "320", "--test-size", "100", "--no-progress"]


@pytest.fixture(scope="module", params=["scratch", "torch"])
def tiny_run(request, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / request.param)
    assert main(["train", "--backend", request.param, "--epochs", "1", "--out", out] + TINY) == 0
    return request.param, out


def test_train_writes_checkpoint_metrics_and_plot(tiny_run):
    backend, out = tiny_run
    assert sorted(os.listdir(out)) == ["checkpoint.pth", "curves.png", "metrics.json", "model.pth"]
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["config"]["backend"] == backend and m["config"]["batch_size"] == 32
    (e,) = m["epochs"]
    assert e["epoch"] == 1
    assert 1.5 < e["train_loss"] < 2.6                # cross-entropy of 10 classes starts at ln 10
    assert 0.0 <= e["train_acc"] <= 1.0 and 0.0 <= e["test_acc"] <= 1.0
    assert e["seconds"] > 0 and e["images_per_s"] == pytest.approx(320 / e["seconds"])
    assert e["eval_seconds"] > 0                       # the evaluation is timed apart from the epoch
    assert m["machine"]["cpus"] >= 1 and m["machine"]["numpy"] and m["machine"]["cpu"]   # where it ran
    ck = load_checkpoint(os.path.join(out, "checkpoint.pth"))
    assert ck["epoch"] == 1 and set(ck["optimizer"]) == set(ck["model"])   # momentum for every parameter
    img = mpimg.imread(os.path.join(out, "curves.png"))
    assert img.shape[0] > 200 and img.std() > 0.05


def test_both_backends_start_from_the_same_weights():
    from scratchcnn.backends import make_backend
    s, t = make_backend("scratch", seed=3), make_backend("torch", seed=3)
    for k, v in s.state_dict().items():
        np.testing.assert_array_equal(t.state_dict()[k], v)


def test_evaluate_reports_the_accuracy_training_measured(tiny_run, capsys):
    backend, out = tiny_run
    capsys.readouterr()
    plot = os.path.join(out, "..", f"confusion-{backend}.png")
    assert main(["evaluate", "--checkpoint", os.path.join(out, "checkpoint.pth"), "--backend", backend,
                 "--test-size", "100", "--plot", plot]) == 0
    text = capsys.readouterr().out
    acc = json.load(open(os.path.join(out, "metrics.json")))["epochs"][-1]["test_acc"]
    assert f"test accuracy: {100 * acc:.2f}% on 100 synthetic test images" in text
    rows = [line for line in text.splitlines() if line.strip().startswith(("horizontal", "zigzag"))]
    assert len(rows) == 4                              # per-class line and confusion row for two classes
    assert os.path.getsize(plot) > 10_000


def test_checkpoints_interchange_between_backends(tiny_run, capsys):
    """A checkpoint from either backend gives the same test accuracy in the other."""
    _, out = tiny_run
    accs = []
    for b in ("scratch", "torch"):
        capsys.readouterr()
        main(["evaluate", "--checkpoint", os.path.join(out, "model.pth"), "--backend", b,
              "--dataset", "synthetic", "--test-size", "100"])
        accs.append([line for line in capsys.readouterr().out.splitlines() if "test accuracy" in line][0])
    assert accs[0] == accs[1]


def test_existing_run_is_not_overwritten(tiny_run, capsys):
    _, out = tiny_run
    assert main(["train", "--out", out, "--epochs", "1"] + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--resume" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("args,match", [
    (["train", "--backend", "scratch", "--device", "cuda"], "scratch backend runs on the CPU only"),
    (["train", "--lr", "-1"], "--lr must be a positive number"),
    (["train", "--batch-size", "1000", "--train-size", "100"], "larger than the training set"),
    (["train", "--dataset", "cifar10", "--data-dir", "/nonexistent"], "--data-dir"),
    (["evaluate", "--checkpoint", "/nonexistent.pth"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args, match, capsys, tmp_path):
    assert main(args + ["--out", str(tmp_path / "r")] if args[0] == "train" else args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and match in err and len(err.splitlines()) == 1


def test_epochs_zero_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "0"])
    assert e.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_layer_stats_are_recorded_and_do_not_change_training(tiny_run, tmp_path):
    backend, out = tiny_run
    probed = str(tmp_path / "probed")
    assert main(["train", "--backend", backend, "--epochs", "1", "--out", probed, "--layer-stats"] + TINY) == 0
    stats = json.load(open(os.path.join(probed, "metrics.json")))["epochs"][0]["layer_stats"]["layers"]
    assert set(stats) == {"conv1", "act1", "drop1", "conv2", "act2", "pool2", "flat", "fc3", "act3",
                          "drop3", "fc4"}
    assert 0.0 <= stats["act2"]["dead"] <= 1.0 and stats["act1"]["act"]["min"] == 0.0   # after ReLU
    assert 0 < stats["fc3"]["update_ratio"] < 1e-2
    assert mpimg.imread(os.path.join(probed, "layer_stats.png")).std() > 0.05
    plain, with_probe = (load_checkpoint(os.path.join(d, "checkpoint.pth")) for d in (out, probed))
    for k, v in plain["model"].items():            # the probe puts every bit of state back
        np.testing.assert_array_equal(with_probe["model"][k], v)
        np.testing.assert_array_equal(with_probe["optimizer"][k], plain["optimizer"][k])


@pytest.mark.parametrize("layout", ["cifar_python_dir", "cifar_binary_dir"])
def test_train_on_an_extracted_cifar10_copy(layout, request, tmp_path, capsys):
    """--data-dir alone means real CIFAR-10, in either official layout."""
    data_dir = request.getfixturevalue(layout)
    out = str(tmp_path / "run")
    assert main(["train", "--backend", "torch", "--data-dir", data_dir, "--epochs", "1",
                 "--out", out, "--no-progress"]) == 0
    assert "cifar10 (40 train / 8 test images)" in capsys.readouterr().out
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["config"]["dataset"] == "cifar10" and m["config"]["classes"][7] == "horse"


def test_layer_by_layer_training_matches_the_fused_path(tiny_run, tmp_path):
    """--no-fused trains through the readable layers; the result equals the fused run's."""
    backend, out = tiny_run
    if backend != "scratch":
        pytest.skip("the fused path is the scratch backend's")
    layers = str(tmp_path / "layers")
    assert main(["train", "--epochs", "1", "--out", layers, "--no-fused"] + TINY) == 0
    fused, plain = (load_checkpoint(os.path.join(d, "checkpoint.pth")) for d in (out, layers))
    for k, v in fused["model"].items():
        np.testing.assert_allclose(plain["model"][k], v, rtol=0, atol=2e-6, err_msg=k)
        np.testing.assert_allclose(plain["optimizer"][k], fused["optimizer"][k], rtol=0, atol=2e-4, err_msg=k)


def test_recipes_set_defaults_that_explicit_options_override(tmp_path, capsys):
    """metrics.json records every effective setting: the recipe's, and what was given explicitly."""
    from scratchcnn.config import RECIPES, TrainConfig
    out = str(tmp_path / "improved")
    assert main(["train", "--backend", "torch", "--recipe", "improved", "--epochs", "2", "--lr", "0.01",
                 "--out", out] + TINY) == 0
    cfg = json.load(open(os.path.join(out, "metrics.json")))["config"]
    assert set(cfg) >= {f for f in TrainConfig.__dataclass_fields__}
    assert cfg["recipe"] == "improved" and cfg["epochs"] == 2 and cfg["lr"] == 0.01     # given: wins
    for k in ("augment", "weight_decay", "normalize", "lr_schedule", "schedule_per", "warmup_epochs"):
        assert cfg[k] == RECIPES["improved"][k], k
    assert cfg["normalize_stats"] is not None and len(cfg["normalize_stats"][0]) == 3
    m = json.load(open(os.path.join(out, "metrics.json")))["epochs"]
    assert m[0]["lr"] == pytest.approx(0.01 * (0.1 + 0.9 * 9 / 20))    # last step of epoch 1, warm-up
    assert m[1]["lr"] == pytest.approx(0.01 * 0.1 + 0.01 * 0.9 * 19 / 20)   # 2 warm-up epochs of 10 steps
    assert all(1.0 < e["test_loss"] < 3.0 for e in m)
    assert "recipe improved, 2 epochs, batch 32, lr 0.01 (2 warm-up epochs from x0.1, then cosine to " \
           "0.0, per step), momentum 0.9, weight decay 0.0005, augment on" in capsys.readouterr().out
    tutorial = str(tmp_path / "tutorial")
    assert main(["train", "--backend", "torch", "--epochs", "1", "--out", tutorial] + TINY) == 0
    cfg = json.load(open(os.path.join(tutorial, "metrics.json")))["config"]
    assert (cfg["recipe"], cfg["lr"], cfg["augment"], cfg["weight_decay"], cfg["lr_schedule"],
            cfg["normalize"]) == ("tutorial", 0.001, False, 0.0, "constant", False)


def test_curves_show_test_loss_and_evaluate_split_train_shows_the_tutorials_number(tiny_run, capsys):
    backend, out = tiny_run
    m = json.load(open(os.path.join(out, "metrics.json")))["epochs"][-1]
    assert 1.5 < m["test_loss"] < 2.6
    capsys.readouterr()
    ckpt = os.path.join(out, "checkpoint.pth")
    assert main(["evaluate", "--checkpoint", ckpt, "--backend", backend]) == 0
    test_text = capsys.readouterr().out
    assert f"test loss: {m['test_loss']:.4f}" in test_text
    assert main(["evaluate", "--checkpoint", ckpt, "--backend", backend, "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "on 320 synthetic train images" in text and "train loss: " in text
    from scratchcnn.backends import make_backend
    from scratchcnn.data import load_dataset
    b = make_backend(backend)
    b.load_state_dict(load_checkpoint(ckpt)["model"])
    train, _ = load_dataset("synthetic", n_train=320, n_test=100)
    acc = float((b.predict(train.x.astype(np.float32) / np.float32(255)).argmax(1) == train.y).mean())
    assert f"train accuracy: {100 * acc:.2f}%" in text


@pytest.mark.usefixtures("one_thread_per_pool")
@pytest.mark.parametrize("backend,fused", [("scratch", True), ("scratch", False), ("torch", True)],
                         ids=["scratch-fused", "scratch-layers", "torch"])
def test_weight_decay_reaches_each_optimizer_with_torchs_semantics(backend, fused):
    """One step from the same weights, batch and dropout masks, with and without weight decay:
    torch.optim.SGD adds wd * p to the gradient, and the first step's momentum buffer is that
    gradient, so the two results differ by exactly -lr * wd * p0."""
    from scratchcnn.backends import make_backend
    from scratchcnn.data import iterate_batches, load_dataset
    train, _ = load_dataset("synthetic", n_train=32, n_test=10)
    x, y = next(iterate_batches(train, 32))
    lr, wd, after = 0.01, 0.05, {}
    for decay in (0.0, wd):
        b = make_backend(backend, lr=lr, momentum=0.9, weight_decay=decay, seed=0, fused=fused)
        p0 = b.state_dict()
        b.seed(123)
        b.train_step(x, y)
        after[decay] = b.state_dict()
    for k, p in p0.items():
        np.testing.assert_allclose(after[wd][k] - after[0.0][k], -lr * wd * p, rtol=1e-3, atol=2e-7,
                                   err_msg=k)
        assert np.abs(after[wd][k] - after[0.0][k]).max() > 1e-6, k
