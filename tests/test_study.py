"""The study tools: feature maps, filters, summary, trace and layer statistics.

Every check uses a tiny checkpoint written here from a seeded scratch model (no
training) and the built-in synthetic dataset, so nothing is downloaded.
"""
import os

import numpy as np
import pytest
import torch

from scratchcnn.backends import make_backend
from scratchcnn.checkpoint import save_state_dict
from scratchcnn.cli import main
from scratchcnn.data import SYNTHETIC_CLASSES, load_dataset, to_float
from scratchcnn.model import CIFAR10Model
from scratchcnn.study.featuremaps import feature_maps, intermediates, softmax, top_k
from scratchcnn.study.layer_stats import (dead_fraction, format_layer_stats, layer_stats,
                                          plot_layer_stats, probe_layer_stats, update_ratio)
from scratchcnn.study.summary import summary_rows
from scratchcnn.study.trace import trace_step
from scratchcnn.architecture import tutorial

LAYER_NAMES = tutorial().layer_names

@pytest.fixture(scope="module")
def images():
    """Eight synthetic training images, float32 (8, 3, 32, 32), and their labels."""
    train, _ = load_dataset("synthetic", n_train=20, n_test=10)
    return to_float(train.x[:8]), train.y[:8]


def backend_from(checkpoint, name):
    from scratchcnn.evaluate import load_backend
    return load_backend(checkpoint, name)[0]


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_png_not_blank(path):
    import matplotlib.image as mpimg
    assert os.path.getsize(path) > 5000, path
    assert mpimg.imread(path).std() > 0.01, f"{path} looks blank"


# ---------------------------------------------------------------- feature maps

def test_conv1_maps_are_a_direct_convolution_of_the_input(checkpoint, images):
    x, _ = images
    acts = intermediates(backend_from(checkpoint, "scratch"), x)
    sd = CIFAR10Model(rng=3).state_dict()
    w, b = sd["conv1.weight"].astype(np.float64), sd["conv1.bias"].astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((len(x), 32, 32, 32)) + b[None, :, None, None]
    for i in range(3):
        for j in range(3):
            expected += np.einsum("fc,nchw->nfhw", w[:, :, i, j], xp[:, :, i:i + 32, j:j + 32])
    np.testing.assert_allclose(acts["conv1"], expected, atol=1e-5)
    np.testing.assert_array_equal(acts["act1"], np.maximum(acts["conv1"], 0))


def test_scratch_and_torch_give_the_same_maps(checkpoint, images):
    x, _ = images
    scratch = intermediates(backend_from(checkpoint, "scratch"), x)
    torch_ = intermediates(backend_from(checkpoint, "torch"), x)
    assert list(scratch) == list(torch_) == list(LAYER_NAMES)
    for name in LAYER_NAMES:
        np.testing.assert_allclose(scratch[name], torch_[name], atol=1e-5, err_msg=name)


def test_pooled_maps_are_the_2x2_max_of_the_relu_maps(checkpoint, images):
    acts = intermediates(backend_from(checkpoint, "scratch"), images[0])
    relu = acts["act2"]
    n, c, h, w = relu.shape
    np.testing.assert_array_equal(acts["pool2"], relu.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5)))
    arch = tutorial()
    figures = feature_maps(arch, acts, ("conv", "relu", "pool"))
    assert [stem for stem, _, _ in figures] == ["featuremaps_conv1", "featuremaps_act1", "featuremaps_conv2",
                                                "featuremaps_act2", "featuremaps_pool2"]
    assert [what for _, what, _ in figures] == [
        "conv1 output (Conv2d 3x3 of the image, before its activation)", "act1 = ReLU(conv1)",
        "conv2 output (Conv2d 3x3 of drop1, before its activation)", "act2 = ReLU(conv2)",
        "pool2 = 2x2 max-pool of act2 (16x16)"]
    assert [maps.shape for _, _, maps in feature_maps(arch, acts, ("pool",))] == [(32, 16, 16)]


def test_top3_is_the_softmax_of_the_logits(checkpoint, images):
    logits = intermediates(backend_from(checkpoint, "scratch"), images[0])["fc4"]
    for row in logits:
        top = top_k(row, SYNTHETIC_CLASSES)
        p = torch.softmax(torch.tensor(row, dtype=torch.float64), 0).numpy()
        order = np.argsort(-p)[:3]
        assert [name for name, _ in top] == [SYNTHETIC_CLASSES[i] for i in order]
        np.testing.assert_allclose([q for _, q in top], p[order], rtol=1e-12)
        assert sum(q for _, q in top) <= 1
    np.testing.assert_allclose(softmax(logits).sum(1), 1)


def test_featuremaps_command_writes_labelled_pngs(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "fm")
    rc, text, _ = run_cli(capsys, "featuremaps", "--checkpoint", checkpoint, "--stage", "conv", "pool",
                          "--out", out)
    assert rc == 0
    assert "train[7] of synthetic" in text and "top-3:" in text
    names = sorted(os.listdir(out))
    assert names == ["featuremaps_conv1.png", "featuremaps_conv2.png", "featuremaps_input.png",
                     "featuremaps_pool2.png"]
    for name in names:
        assert os.path.join(out, name) in text
        assert_png_not_blank(os.path.join(out, name))
    probs = [float(tok.rstrip("%,")) for tok in text.split("top-3:")[1].split("\n")[0].split()[1::2]]
    assert len(probs) == 3 and sum(probs) <= 100.05


def test_featuremaps_of_your_own_image_through_torch(checkpoint, tmp_path, capsys):
    from PIL import Image
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(photo)
    rc, text, _ = run_cli(capsys, "featuremaps", "--checkpoint", checkpoint, "--backend", "torch",
                          "--image", str(photo), "--scale", "per-panel", "--stage", "relu")
    assert rc == 0 and "photo.png (resized to 32x32)" in text
    out = os.path.join(os.path.dirname(checkpoint), "featuremaps", "photo")
    assert sorted(os.listdir(out)) == ["featuremaps_act1.png", "featuremaps_act2.png", "featuremaps_input.png"]


@pytest.mark.parametrize("argv, message", [
    (["--index", "20"], "--index 20 is out of range: the train split of synthetic has 20 images"),
    (["--index", "3", "--image", "x.png"], "either --image FILE or --index N"),
    (["--image", __file__], "is not an image"),
])
def test_featuremaps_errors_are_one_line(checkpoint, capsys, argv, message):
    rc, _, err = run_cli(capsys, "featuremaps", "--checkpoint", checkpoint, *argv)
    assert rc == 2 and message in err and err.count("\n") == 1


def test_bare_state_dict_without_cifar10_says_what_to_do(tmp_path, capsys):
    path = str(tmp_path / "model.pth")
    save_state_dict(path, CIFAR10Model(rng=0).state_dict())
    rc, _, err = run_cli(capsys, "featuremaps", "--checkpoint", path, "--data-dir", str(tmp_path))
    assert rc == 2
    assert "bare state_dict" in err and "--data-dir" in err and "--dataset synthetic" in err
    assert "--image" in err
    from PIL import Image
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "grey.png")
    rc, text, _ = run_cli(capsys, "featuremaps", "--checkpoint", path, "--image", str(tmp_path / "grey.png"),
                          "--stage", "pool", "--out", str(tmp_path / "fm"))
    assert rc == 0 and "CIFAR-10's are assumed" in text


def test_filters_command(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "filters")
    rc, text, _ = run_cli(capsys, "filters", "--checkpoint", checkpoint, "--backend", "torch", "--out", out)
    assert rc == 0
    for name in ("filters_conv1.png", "filters_conv2.png"):
        assert os.path.join(out, name) in text
        assert_png_not_blank(os.path.join(out, name))


# ---------------------------------------------------------------- summary

def test_summary_numbers_come_from_the_layers(capsys):
    rows = {r["name"]: r for r in summary_rows(batch_size=2)}
    assert sum(r["params"] for r in rows.values()) == 4_210_090
    assert rows["conv2"]["macs"] == 2 * 32 * 32 * 9 * 32 * 32          # 9,437,184 per image
    assert rows["conv1"]["macs"] == 2 * 32 * 27 * 32 * 32
    assert rows["fc3"]["macs"] == 2 * 8192 * 512 and rows["fc3"]["params"] == 8192 * 512 + 512
    assert rows["pool2"]["shape"] == (2, 32, 16, 16) and rows["flat"]["shape"] == (2, 8192)
    assert rows["fc4"]["shape"] == (2, 10) and rows["conv1"]["shape"] == (2, 32, 32, 32)
    assert rows["conv1"]["bytes"] == 2 * 32 * 32 * 32 * 4
    rc, text, _ = run_cli(capsys, "summary", "--batch-size", "1")
    assert rc == 0 and "Total params: 4,210,090" in text and "9,437,184" in text
    assert all(name in text for name in LAYER_NAMES)


# ---------------------------------------------------------------- trace

def test_trace_gradient_norms_match_torch_autograd(images):
    """The trace's norms against torch autograd on the same weights and dropout masks."""
    x, y = images
    model = CIFAR10Model(rng=5)
    record = trace_step(model, x, y)
    sd = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.state_dict().items()}
    keep1 = torch.tensor(model.drop1.mask, dtype=torch.float64) / (1 - model.drop1.p)
    keep3 = torch.tensor(model.drop3.mask, dtype=torch.float64) / (1 - model.drop3.p)
    F = torch.nn.functional
    outs = {}

    def keep(name, t):
        t.retain_grad()
        outs[name] = t
        return t
    h = keep("conv1", F.conv2d(torch.tensor(x, dtype=torch.float64), sd["conv1.weight"], sd["conv1.bias"], padding=1))
    h = keep("drop1", keep("act1", F.relu(h)) * keep1)
    h = keep("conv2", F.conv2d(h, sd["conv2.weight"], sd["conv2.bias"], padding=1))
    h = keep("flat", keep("pool2", F.max_pool2d(keep("act2", F.relu(h)), 2)).flatten(1))
    h = keep("fc3", F.linear(h, sd["fc3.weight"], sd["fc3.bias"]))
    h = keep("drop3", keep("act3", F.relu(h)) * keep3)
    loss = F.cross_entropy(keep("fc4", F.linear(h, sd["fc4.weight"], sd["fc4.bias"])), torch.tensor(y))
    loss.backward()

    assert record["loss"] == pytest.approx(loss.item(), rel=1e-5)
    for r in record["backward"]:
        assert r["dout_norm"] == pytest.approx(outs[r["name"]].grad.norm().item(), rel=1e-4), r["name"]
        for pname, shape, norm in r["params"]:
            assert shape == tuple(sd[pname].shape)
            assert norm == pytest.approx(sd[pname].grad.norm().item(), rel=1e-4), pname


def test_trace_command_prints_every_layer(capsys):
    rc, text, _ = run_cli(capsys, "trace", "--batch-size", "2")
    assert rc == 0
    forward, backward = text.split("BACKWARD")
    for name in LAYER_NAMES:
        assert f"  {name} " in forward and f"  {name} " in backward
    assert "LOSS" in forward and "conv2.weight.grad (32, 32, 3, 3)  ||grad|| = " in backward


def test_trace_command_with_a_checkpoint(checkpoint, capsys):
    rc, text, _ = run_cli(capsys, "trace", "--checkpoint", checkpoint, "--batch-size", "3")
    assert rc == 0 and f"weights: from {checkpoint}" in text and "3 synthetic training images" in text


# ---------------------------------------------------------------- layer statistics

def test_dead_fraction_on_a_constructed_batch():
    out = np.zeros((3, 2, 2, 2), np.float32)     # 8 units, 3 examples
    out[0, 0, 0, 0] = 1.0                         # unit alive in one example only: not dead
    out[2, 1, 1, 1] = 0.5                         # another unit alive
    assert dead_fraction(out) == 6 / 8
    stats = layer_stats({"act1": out}, {"act1": np.ones_like(out)}, relu_layers=("act1",))
    assert stats["act1"]["dead"] == 6 / 8
    assert stats["act1"]["act"] == {"mean": pytest.approx(1.5 / 24), "std": pytest.approx(np.std(out)),
                                    "min": 0.0, "max": 1.0}


def test_update_ratio_by_hand():
    w = np.array([[3.0, 0.0], [0.0, 4.0]])        # ||w|| = 5
    step = np.array([[0.0, 0.03], [0.04, 0.0]])   # ||lr * update|| = 0.05
    assert update_ratio(w, w - step) == pytest.approx(0.01)
    stats = layer_stats({"fc4": np.ones((2, 2))}, {"fc4": np.ones((2, 2))},
                        {"fc4.weight": w}, {"fc4.weight": w - step})
    assert stats["fc4"]["update_ratio"] == pytest.approx(0.01) and "dead" not in stats["fc4"]


def _training_state(backend):
    state = {"weights": backend.state_dict(), "optimizer": backend.optimizer_state()}
    if backend.name == "scratch":
        state["dropout"] = backend.model.dropout_state()
        state["grads"] = backend.model.flat_grad.copy()
    else:
        state["rng"] = torch.get_rng_state()
    return state


def _assert_same_state(a, b):
    for key in ("weights", "optimizer"):
        assert sorted(a[key]) == sorted(b[key]), key
        for name in a[key]:
            np.testing.assert_array_equal(a[key][name], b[key][name], err_msg=f"{key} {name}")
    if "dropout" in a:
        assert a["dropout"] == b["dropout"]
        np.testing.assert_array_equal(a["grads"], b["grads"])
    else:
        assert torch.equal(a["rng"], b["rng"])


@pytest.mark.parametrize("name", ["scratch", "torch"])
def test_probe_leaves_training_state_alone(name, images):
    x, y = images
    backend = make_backend(name, lr=0.01, seed=1)
    backend.seed(7)
    backend.train_step(x, y)                      # momentum buffers and dropout counters exist now
    before = _training_state(backend)
    stats = probe_layer_stats(backend, x, y)
    _assert_same_state(before, _training_state(backend))
    assert set(stats["layers"]) == set(LAYER_NAMES) and np.isfinite(stats["loss"])
    assert {n for n, s in stats["layers"].items() if "update_ratio" in s} == {"conv1", "conv2", "fc3", "fc4"}
    assert {n for n, s in stats["layers"].items() if "dead" in s} == {"act1", "act2", "act3"}
    # The probe did not disturb training: the next step is the one an unprobed twin takes.
    # (The twin is built afterwards: torch's dropout draws from one global generator.)
    next_step = backend.train_step(x, y)
    twin = make_backend(name, lr=0.01, seed=1)
    twin.seed(7)
    twin.train_step(x, y)
    assert next_step == twin.train_step(x, y)


def test_probe_update_ratio_is_lr_times_grad_on_the_first_step(images):
    """Before any step SGD's update is lr * grad, so the ratio is lr * ||grad|| / ||w||."""
    from scratchcnn.study.trace import forward_backward
    x, y = images
    backend = make_backend("scratch", lr=0.01, seed=2)
    stats = probe_layer_stats(backend, x, y)["layers"]
    model = CIFAR10Model(rng=2).train()
    forward_backward(model, backend.criterion, x, y)    # same weights, same dropout masks
    for layer in ("conv1", "conv2", "fc3", "fc4"):
        p = getattr(model, layer).weight
        expected = 0.01 * np.linalg.norm(p.grad.astype(np.float64)) / np.linalg.norm(p.data.astype(np.float64))
        assert stats[layer]["update_ratio"] == pytest.approx(expected, rel=1e-4), layer


def test_plot_layer_stats(images, tmp_path):
    backend = make_backend("scratch", seed=0)
    probe = probe_layer_stats(backend, *images)
    history = [{**probe, "epoch": 1}, {"epoch": 2, "layer_stats": probe}]   # both accepted forms
    path = plot_layer_stats(history, str(tmp_path / "layer_stats.png"))
    assert_png_not_blank(path)
    line = format_layer_stats(probe)
    assert line.startswith("dead ReLU units: act1 ") and "| update/weight: conv1 " in line
