"""Every preset (and a hand-written spec) trains in both backends through the CLI, interchanges
its weights between them, and works in every command that takes a checkpoint."""
import json
import os

import numpy as np
import pytest

from scratchcnn import architecture as A
from scratchcnn.checkpoint import load_checkpoint
from scratchcnn.cli import main
from scratchcnn.data import load_dataset, to_float
from scratchcnn.evaluate import load_backend

pytestmark = pytest.mark.usefixtures("one_thread_per_pool")

SMALL = ["--epochs", "1", "--train-size", "48", "--test-size", "16", "--batch-size", "16", "--no-progress"]


FAST = ("tutorial", "k1", "k5", "k7", "avgpool", "deep", "bn")   # the fused path's: fused.SHAPE


def train(tmp_path, capsys, arch, backend, *extra):
    out = str(tmp_path / f"{os.path.basename(arch)}-{backend}")
    rc = main(["train", "--arch", arch, "--backend", backend, "--out", out, *SMALL, *extra])
    text = capsys.readouterr().out
    assert rc == 0, text
    return out, text


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(A.PRESETS))
def test_every_preset_trains_in_both_backends_and_interchanges_weights(preset, tmp_path, capsys):
    images = to_float(load_dataset("synthetic", n_train=8, n_test=8)[1].x[:8])
    runs = {}
    for backend in ("scratch", "torch"):
        out, text = train(tmp_path, capsys, preset, backend)
        arch = A.load(preset, 10)
        assert f"network {preset}: {len(arch.layers)} layers, {arch.n_params:,} parameters" in text
        path = "the fused fast path" if preset in FAST else "the layer-by-layer path"
        assert backend == "torch" or f"scratch runs {path}" in text
        ckpt = load_checkpoint(os.path.join(out, "checkpoint.pth"))
        assert ckpt["arch"] == arch and ckpt["config"]["arch"] == preset
        assert list(ckpt["model"]) == list(arch.state_shapes())
        metrics = json.load(open(os.path.join(out, "metrics.json")))["epochs"]
        assert np.isfinite(metrics[0]["train_loss"]) and np.isfinite(metrics[0]["test_loss"])
        runs[backend] = os.path.join(out, "checkpoint.pth")
    # weights written by one backend give the same logits in the other (BatchNorm's statistics too)
    for path in runs.values():
        logits = {b: load_backend(path, b)[0].predict(images) for b in ("scratch", "torch")}
        np.testing.assert_allclose(logits["scratch"], logits["torch"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_bn_running_statistics_train_like_torchs(tmp_path, capsys):
    """After one training step from the same weights and batch, bn1's buffers (before any dropout,
    whose masks differ between the backends) are the same in both, to float32 rounding."""
    sd = {}
    for backend in ("scratch", "torch"):
        out, _ = train(tmp_path, capsys, "bn", backend, "--train-size", "16")
        sd[backend] = load_checkpoint(os.path.join(out, "checkpoint.pth"))["model"]
    for key in ("bn1.running_mean", "bn1.running_var"):
        np.testing.assert_allclose(sd["scratch"][key], sd["torch"][key], rtol=1e-5, atol=1e-7, err_msg=key)
        assert not np.allclose(sd["scratch"][key], 0 if "mean" in key else 1)        # they did move
    assert sd["scratch"]["bn1.num_batches_tracked"] == sd["torch"]["bn2.num_batches_tracked"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["vgg", "k1"])
def test_every_command_follows_the_checkpoints_network(preset, tmp_path, capsys):
    out, _ = train(tmp_path, capsys, preset, "scratch")
    ckpt = os.path.join(out, "checkpoint.pth")
    arch = A.load(preset, 10)
    convs = [s.name for s in arch.of_kind("Conv2d")]

    assert main(["evaluate", "--checkpoint", ckpt]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["featuremaps", "--checkpoint", ckpt, "--stage", "conv", "pool", "--out", str(tmp_path / "fm")]) == 0
    capsys.readouterr()
    pools = [s.name for s in arch.layers if s.kind == "MaxPool2d"]
    assert sorted(os.listdir(tmp_path / "fm")) == sorted(
        [f"featuremaps_{n}.png" for n in convs + pools] + ["featuremaps_input.png"])
    assert main(["filters", "--checkpoint", ckpt, "--out", str(tmp_path / "f")]) == 0
    capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "f")) == sorted(f"filters_{n}.png" for n in convs)
    assert main(["saliency", "--checkpoint", ckpt, "--out", str(tmp_path / "s")]) == 0
    text = capsys.readouterr().out
    assert f"gradcam.png" in text and f"gradients_{convs[-1]}.png" in text
    assert main(["trace", "--checkpoint", ckpt, "--batch-size", "2"]) == 0
    assert convs[-1] in capsys.readouterr().out
    assert main(["summary", "--checkpoint", ckpt]) == 0
    assert f"Total params: {arch.n_params:,}" in capsys.readouterr().out
    assert main(["compare", out, "--out", str(tmp_path / "c.png")]) == 0
    assert f"| {preset} |" in capsys.readouterr().out
    assert main(["train", "--resume", out, "--epochs", "2", "--no-progress"]) == 0
    assert f"network {preset}" in capsys.readouterr().out
    assert load_checkpoint(ckpt)["epoch"] == 2


@pytest.mark.slow
def test_a_hand_written_spec_with_its_own_names_trains_and_its_bare_weights_load(tmp_path, capsys):
    spec = [{"kind": "Conv2d", "name": "features", "out_channels": 8, "kernel_size": 5, "stride": 2, "padding": 2},
            {"kind": "LeakyReLU", "negative_slope": 0.1}, {"kind": "AvgPool2d", "kernel_size": 2},
            {"kind": "Conv2d", "out_channels": 16, "kernel_size": 3, "bias": False}, {"kind": "BatchNorm2d"},
            {"kind": "Tanh"}, {"kind": "Flatten"}, {"kind": "Linear", "out_features": 20}, {"kind": "Sigmoid"},
            {"kind": "Dropout", "p": 0.2}, {"kind": "Linear", "name": "classifier"}]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec))
    outs = {b: train(tmp_path, capsys, str(path), b)[0] for b in ("scratch", "torch")}
    ckpt = load_checkpoint(os.path.join(outs["torch"], "checkpoint.pth"))
    assert ckpt["arch"].layer_names == ("features", "act1", "pool1", "conv2", "bn2", "act2", "flat", "fc3",
                                        "act3", "drop3", "classifier")
    bare = os.path.join(outs["torch"], "model.pth")
    line = "error: " + str(pytest.raises(Exception, load_checkpoint, bare).value)
    assert "does not fit the tutorial network" in line and "pass --arch with a spec of those layers" in line
    assert main(["evaluate", "--checkpoint", bare, "--arch", str(path), "--dataset", "synthetic",
                 "--test-size", "16"]) == 0
    assert "test accuracy" in capsys.readouterr().out
