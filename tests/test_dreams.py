"""Images the network dreams up (study.dreams) and the dream, fool and occlusion commands.

A small network of its own (layer names that are not the tutorial's, so nothing may assume
them) is trained for a few seconds on the built-in synthetic dataset, once per module. Every
ascent here is a few steps long: the properties tested (the score rises, both backends make
the same image, a fooling image fools) show within them.
"""
import json
import os

import numpy as np
import pytest

from scratchcnn.cli import main
from scratchcnn.data import to_float
from scratchcnn.evaluate import dataset_split, load_backend
from scratchcnn.study import dreams
from conftest import one_error_line

pytestmark = pytest.mark.usefixtures("one_thread_per_pool")

# Names unlike the tutorial's; two conv blocks, a hidden Linear and dropout.
SPEC = [{"kind": "Conv2d", "name": "edges", "out_channels": 6, "kernel_size": 3, "padding": 1},
        {"kind": "ReLU", "name": "edges_on"},
        {"kind": "MaxPool2d", "name": "halve", "kernel_size": 2},
        {"kind": "Conv2d", "name": "shapes", "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"kind": "ReLU", "name": "shapes_on"},
        {"kind": "MaxPool2d", "name": "quarter", "kernel_size": 2},
        {"kind": "Flatten", "name": "flat"},
        {"kind": "Linear", "name": "hidden", "out_features": 32},
        {"kind": "ReLU", "name": "hidden_on"},
        {"kind": "Dropout", "name": "drop", "p": 0.2},
        {"kind": "Linear", "name": "scores"}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder of the small network trained 4 epochs on 640 synthetic images."""
    folder = tmp_path_factory.mktemp("dreams")
    spec = folder / "small.json"
    spec.write_text(json.dumps(SPEC))
    out = str(folder / "run")
    assert main(["train", "--arch", str(spec), "--dataset", "synthetic", "--train-size", "640",
                 "--test-size", "60", "--epochs", "4", "--lr", "0.05", "--seed", "1", "--out", out,
                 "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def ckpt_path(run):
    return os.path.join(run, "checkpoint.pth")


@pytest.fixture(scope="module")
def backends(ckpt_path):
    return {name: load_backend(ckpt_path, name)[0] for name in ("scratch", "torch")}


@pytest.fixture(scope="module")
def test_set(ckpt_path):
    from scratchcnn.checkpoint import load_checkpoint
    return dataset_split(load_checkpoint(ckpt_path)["config"], None, None, "test")


def _predict(backend, image_uint8):
    return dreams.softmax(backend.predict(to_float(image_uint8[None]))[0])


# ---------------------------------------------------------------- the gradient

@pytest.mark.parametrize("name", ["scratch", "torch"])
def test_score_gradient_is_saliencys_class_gradient(backends, test_set, name):
    """The one backward every dream uses gives, for a one-hot on the logits, exactly the input
    gradient of saliency.class_gradients (the verified one)."""
    from scratchcnn.study.saliency import class_gradients

    x = to_float(test_set.x[:3])
    _, logits, dx = dreams.score_gradient(backends[name], x, "scores",
                                          lambda z: np.eye(10, dtype=np.float32)[[4, 4, 4]])
    ref = class_gradients(backends[name], x, 4)
    np.testing.assert_allclose(logits, ref["logits"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(dx, ref["grads"]["input"], rtol=0, atol=1e-7 * np.abs(dx).max())


def test_channel_gradient_matches_a_finite_difference(backends, test_set):
    """ds/dx for s = the mean of one channel of an inner layer, against central differences of
    the forward pass at a few pixels (float64 copy of the scratch model)."""
    from scratchcnn.model import Network

    model = Network(backends["scratch"].model.arch, dtype=np.float64)
    model.load_state_dict(backends["scratch"].state_dict())
    x = to_float(test_set.x[:1]).astype(np.float64)

    def score(xx):
        return model.eval().forward_intermediates(xx)["shapes_on"][0, 5].mean()

    class Wrapped:                    # the scratch backend's interface, float64
        name = "scratch"
    wrapped = Wrapped()
    wrapped.model = model
    seed = np.zeros((1, 8, 16, 16))
    seed[0, 5] = 1 / 256
    _, _, dx = dreams.score_gradient(wrapped, x, "shapes_on", lambda out: seed)
    for idx in [(0, 0, 5, 7), (0, 1, 12, 20), (0, 2, 30, 3), (0, 0, 16, 16)]:
        e = np.zeros_like(x)
        e[idx] = 1e-6
        numeric = (score(x + e) - score(x - e)) / 2e-6
        assert abs(dx[idx] - numeric) <= 1e-7 + 1e-5 * abs(numeric), idx
    assert np.abs(dx).max() > 0


# ---------------------------------------------------------------- activation maximisation

def test_class_visualisation_raises_the_logit_and_both_backends_dream_the_same(backends):
    r = {name: dreams.class_visualisation(b, 6, steps=25, seed=3) for name, b in backends.items()}
    s = r["scratch"]
    assert len(s["scores"]) == 26 and s["image"].shape == (3, 32, 32) and s["image"].dtype == np.float32
    assert s["scores"][-1] > s["scores"][0] + 3, s["scores"]              # the class-6 logit rose
    assert s["probs"].argmax() == 6 and abs(s["probs"].sum() - 1) < 1e-9
    assert s["image"].min() >= 0 and s["image"].max() <= 1               # clipped to the pixel range
    np.testing.assert_array_equal(s["uint8"], dreams.to_uint8(s["image"], None))
    # same seed, other backend: the same image to float32 rounding
    assert np.abs(s["image"] - r["torch"]["image"]).max() < 1e-4
    np.testing.assert_allclose(s["scores"], r["torch"]["scores"], rtol=0, atol=1e-3)


def test_the_seed_decides_the_dream(backends):
    b = backends["scratch"]
    a1 = dreams.class_visualisation(b, 2, steps=3, seed=5)["image"]
    a2 = dreams.class_visualisation(b, 2, steps=3, seed=5)["image"]
    a3 = dreams.class_visualisation(b, 2, steps=3, seed=6)["image"]
    np.testing.assert_array_equal(a1, a2)
    assert np.abs(a1 - a3).max() > 0.05


def test_normalised_inputs_stay_in_the_valid_pixel_range(backends):
    """With a checkpoint's normalisation the image lives in (x - mean) / std units and is clipped
    to the values of pixels 0..1 in each channel."""
    stats = ([0.2, 0.5, 0.7], [0.25, 0.1, 0.3])
    r = dreams.class_visualisation(backends["scratch"], 1, steps=8, seed=0, normalize=stats, lr=3.0)
    lo, hi = dreams.pixel_range(stats)
    assert (r["image"] >= lo - 1e-6).all() and (r["image"] <= hi + 1e-6).all()
    assert (r["image"] <= lo + 1e-6).any() or (r["image"] >= hi - 1e-6).any()   # the clip was reached
    assert r["scores"][-1] > r["scores"][0]


def test_channel_visualisation_raises_the_channel_mean_on_both_backends(backends):
    r = {name: dreams.channel_visualisation(b, "shapes_on", 5, steps=20, seed=1) for name, b in backends.items()}
    s = r["scratch"]
    acts = dreams.layer_output(backends["scratch"], s["image"][None], "shapes_on")
    assert s["scores"][-1] == pytest.approx(float(acts[0, 5].mean()), abs=1e-5)   # really that channel's mean
    assert s["scores"][-1] > 4 * s["scores"][0] and s["scores"][-1] > s["scores"][0] + 0.1, s["scores"]
    assert np.abs(s["image"] - r["torch"]["image"]).max() < 1e-4


def test_top_activating_are_really_the_top_k(backends, test_set):
    """Against a brute force: every test image forward on its own, its channel mean computed here."""
    from scratchcnn.study.featuremaps import intermediates

    means = [float(intermediates(backends["torch"], to_float(test_set.x[i:i + 1]))["edges"][0, 2].mean())
             for i in range(len(test_set))]
    expected = np.argsort(-np.array(means), kind="stable")[:9]
    for b in backends.values():
        top = dreams.top_activating(b, test_set, "edges", 2, k=9)
        assert [i for i, _ in top] == list(expected)
        np.testing.assert_allclose([v for _, v in top], np.array(means)[expected], rtol=1e-5)
    assert len(dreams.top_activating(backends["scratch"], test_set.x[:4], "edges", 2, k=9)) == 4


# ---------------------------------------------------------------- fooling images

def _an_image_and_another_class(backend, test_set):
    """A test image the network classifies right and most confidently, and the class it ranks
    second for it."""
    p = dreams.softmax(backend.predict(to_float(test_set.x)))
    right = np.flatnonzero(p.argmax(1) == test_set.y)
    i = int(right[p[right].max(1).argmax()])
    return i, int(np.argsort(-p[i])[1])


def test_a_fooling_image_makes_the_network_answer_the_target(backends, test_set):
    b = backends["scratch"]
    i, target = _an_image_and_another_class(b, test_set)
    r = dreams.fooling_image(b, test_set.x[i], target, max_steps=100)
    assert r["success"] and 0 < r["steps"] <= 100                         # measured: 36 steps
    assert _predict(b, r["uint8"]).argmax() == target                     # the uint8 image fools it
    np.testing.assert_allclose(r["after"], _predict(b, r["uint8"]), atol=1e-6)
    np.testing.assert_allclose(r["before"], _predict(b, test_set.x[i]), atol=1e-6)
    change = np.abs(r["uint8"].astype(int) - test_set.x[i].astype(int))
    assert 0 < change.mean() < 16        # a touch-up, not a new image (measured: 9.8 of 255 levels)
    t = dreams.fooling_image(backends["torch"], test_set.x[i], target, max_steps=100)
    assert t["steps"] == r["steps"] and np.abs(t["uint8"].astype(int) - r["uint8"]).max() <= 1


@pytest.mark.parametrize("epsilon", [8 / 255, 0.05])
def test_fgsm_moves_every_pixel_by_at_most_epsilon_towards_the_target(backends, test_set, epsilon):
    b = backends["scratch"]
    i, target = _an_image_and_another_class(b, test_set)
    r = dreams.fooling_image(b, test_set.x[i], target, method="fgsm", epsilon=epsilon)
    change = r["uint8"].astype(int) - test_set.x[i].astype(int)
    assert np.abs(change).max() <= epsilon * 255 + 1e-9
    # one signed step: every pixel the clip leaves free moves by floor(epsilon * 255) levels
    free = (test_set.x[i] >= 30) & (test_set.x[i] <= 225)
    assert (np.abs(change[free]) == int(epsilon * 255 + 1e-6)).mean() > 0.95
    assert r["steps"] == 1 and r["after"][target] > r["before"][target]   # towards the target
    assert r["difference"].dtype == np.uint8 and np.abs(r["difference"].astype(int) - 128).max() == 127


def test_fooling_towards_the_answer_it_already_gives_changes_nothing(backends, test_set):
    b = backends["scratch"]
    now = int(_predict(b, test_set.x[0]).argmax())
    r = dreams.fooling_image(b, test_set.x[0], now)
    assert r["steps"] == 0 and r["success"]
    np.testing.assert_array_equal(r["uint8"], test_set.x[0])


# ---------------------------------------------------------------- occlusion

def test_occluding_the_whole_image_gives_the_drop_to_a_grey_image(backends, test_set):
    stats = ([0.4, 0.45, 0.5], [0.2, 0.25, 0.3])
    b = backends["scratch"]
    heat = dreams.occlusion_map(b, test_set.x[3], 7, patch=32, stride=5, normalize=stats)
    grey = ((0.5 - np.array(stats[0])) / np.array(stats[1])).astype(np.float32)
    grey_image = np.broadcast_to(grey[None, :, None, None], (1, 3, 32, 32)).copy()
    p_grey = dreams.softmax(b.predict(grey_image))[0, 7]
    p = dreams.softmax(b.predict(to_float(test_set.x[3:4], stats)))[0, 7]
    assert heat.shape == (32, 32)
    np.testing.assert_allclose(heat, p - p_grey, rtol=0, atol=1e-7)


def test_occlusion_quadrants_are_the_drop_of_covering_each_quadrant(backends, test_set):
    """16x16 squares every 16 pixels: each pixel is covered by one square, so each quadrant of
    the map is the drop for covering that quadrant with the image's mean colour."""
    b = backends["torch"]
    x = to_float(test_set.x[5:6])
    target = int(b.predict(x)[0].argmax())
    heat = dreams.occlusion_map(b, test_set.x[5], target, patch=16, stride=16, fill="mean")
    p0 = dreams.softmax(b.predict(x))[0, target]
    covered = x.copy()
    covered[0, :, 16:, :16] = x[0].mean(axis=(1, 2))[:, None, None]      # bottom-left quadrant
    drop = p0 - dreams.softmax(b.predict(covered))[0, target]
    np.testing.assert_allclose(heat[16:, :16], drop, atol=2e-6)       # float32, batches of 5 and 1
    assert len(np.unique(heat.round(9))) <= 4
    assert dreams.patch_positions(32, 8, 5) == [0, 5, 10, 15, 20, 24]   # the last reaches the edge


# ---------------------------------------------------------------- the commands

def _run(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().out


def test_dream_writes_the_image_and_the_score_curve(ckpt_path, tmp_path, capsys):
    rc, out = _run(capsys, "dream", "--checkpoint", ckpt_path, "--class", "rings", "--steps", "6",
                   "--out", tmp_path / "c")
    assert rc == 0 and "class 6 'rings': logit" in out
    assert sorted(os.listdir(tmp_path / "c")) == ["dream.png", "scores.png"]
    rc, out = _run(capsys, "dream", "--checkpoint", ckpt_path, "--layer", "shapes", "--channel", "3",
                   "--steps", "4", "--backend", "torch", "--out", tmp_path / "l")
    assert rc == 0 and "channel 3 of shapes" in out and "top-9 test images" in out
    assert os.path.getsize(tmp_path / "l" / "dream.png") > 10_000      # the dream and the 9 beside it


def test_fool_prints_the_prediction_before_and_after(ckpt_path, backends, test_set, tmp_path, capsys):
    i, target = _an_image_and_another_class(backends["scratch"], test_set)
    names = test_set.classes
    before = _predict(backends["scratch"], test_set.x[i])
    rc, out = _run(capsys, "fool", "--checkpoint", ckpt_path, "--index", i, "--target", names[target],
                   "--max-steps", 100, "--out", tmp_path)
    assert rc == 0
    lines = dict(line.split(":", 1) for line in out.splitlines() if line.startswith(("before", "after")))
    assert lines["before"].strip() == f"'{names[before.argmax()]}' ({100 * before.max():.1f}%)"
    assert lines["after"].strip().startswith(f"'{names[target]}' (") and "it answers the target" in out
    assert os.path.exists(tmp_path / "fool.png")
    rc, out = _run(capsys, "fool", "--checkpoint", ckpt_path, "--index", i, "--target", names[before.argmax()],
                   "--out", tmp_path / "same")
    assert rc == 0 and "already answers" in out and not os.path.exists(tmp_path / "same")


def test_occlusion_writes_the_map(ckpt_path, tmp_path, capsys):
    rc, out = _run(capsys, "occlusion", "--checkpoint", ckpt_path, "--index", 2, "--out", tmp_path)
    assert rc == 0 and "the drop in probability runs from" in out and os.path.getsize(tmp_path / "occlusion.png") > 10_000


@pytest.mark.parametrize("args, match", [
    (["dream", "--class", "tulips"], "--class 'tulips' is not a class"),
    (["dream", "--layer", "hidden", "--channel", "0"], "outputs a vector of 32, not channels"),
    (["dream", "--layer", "edges", "--channel", "6"], "channel 6 is out of range: edges has 6 channels"),
    (["dream", "--layer", "conv1", "--channel", "0"], "has no layer 'conv1'"),
    (["dream", "--layer", "edges"], "--layer and --channel go together"),
    (["dream", "--class", "3", "--layer", "edges", "--channel", "0"], "either --class C"),
    (["dream", "--class", "3", "--steps", "0"], "--steps: must be at least 1"),
    (["fool", "--index", "60", "--target", "rings"], "--index 60 is out of range"),
    (["fool", "--index", "0", "--target", "tulips"], "--target 'tulips' is not a class"),
    (["fool", "--index", "0", "--target", "1", "--method", "fgsm", "--epsilon", "0"], "--epsilon: must be a number > 0"),
    (["fool", "--index", "0", "--target", "1", "--epsilon", "-0.1"], "--epsilon: must be a number > 0"),
    (["occlusion", "--index", "-1"], "--index -1 is out of range"),
    (["occlusion", "--index", "0", "--patch", "33"], "--patch 33 is larger than the 32x32 image"),
])
def test_bad_input_is_one_line(ckpt_path, capsys, args, match):
    line = one_error_line(capsys, args[:1] + ["--checkpoint", ckpt_path] + args[1:])
    assert match in line, line
