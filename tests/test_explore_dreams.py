"""The explorer's Dreams tab, time slider and confusion cells, through its HTTP API.

A small network of its own names (so nothing depends on the tutorial's layer names) is trained
2 epochs on 160 synthetic images with ``train --snapshots 2``: 4 snapshots. Every answer is
checked against ``study.dreams`` or the snapshot's weights loaded directly.
"""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from scratchcnn.backends import make_backend
from scratchcnn.cli import main
from scratchcnn.data import load_dataset, to_float
from scratchcnn.explore.analysis import Explorer
from scratchcnn.explore.http import dispatch
from scratchcnn.study import dreams
from scratchcnn.study.snapshots import list_snapshots, load_snapshot

pytestmark = pytest.mark.usefixtures("one_thread_per_pool")

SPEC = [{"kind": "Conv2d", "name": "look", "out_channels": 6, "kernel_size": 3, "padding": 1},
        {"kind": "ReLU", "name": "fire"},
        {"kind": "MaxPool2d", "name": "shrink", "kernel_size": 4},
        {"kind": "Conv2d", "name": "again", "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"kind": "ReLU"},
        {"kind": "Flatten"},
        {"kind": "Linear", "name": "answer"}]
# Measured (same seed, 25-30 steps, 12 dreams of classes and channels): through this network the
# two backends' images were identical and the scores agreed to 2e-7 (relative); through the
# tutorial's network (trained 3 epochs, 57%) 94 of 36,864 values differed, by at most 3 levels of
# 255, the scores by 2e-4: float32 rounding, carried along by every step of the ascent.
PIXEL_TOLERANCE = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dreams")
    (folder / "net.json").write_text(json.dumps(SPEC))
    out = folder / "run"
    assert main(["train", "--arch", str(folder / "net.json"), "--dataset", "synthetic", "--train-size", "160",
                 "--test-size", "30", "--epochs", "2", "--snapshots", "2", "--lr", "0.05", "--seed", "1",
                 "--no-progress", "--out", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=10, n_test=30)[1]


@pytest.fixture(scope="module")
def explorer(run, data):
    return Explorer(f"{run}/checkpoint.pth", data)


def call(explorer, method, path, body=None):
    raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else (body or b"")
    status, ctype, out = dispatch(explorer, method, path, raw)
    assert ctype == "application/json"
    return status, json.loads(out)


def ok(explorer, method, path, body=None):
    status, r = call(explorer, method, path, body)
    assert status == 200, r
    return r


def png(uri):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))).transpose(2, 0, 1)


def decode(arr):
    return np.frombuffer(base64.b64decode(arr["data"]), "<f4").reshape(arr["shape"])


def backend_at(run, snapshot, name="scratch"):
    s = load_snapshot(run, snapshot)
    b = make_backend(name, arch=s["arch"])
    b.load_state_dict(s["model"])
    return b


def final_backend(explorer, name="scratch"):
    b = make_backend(name, arch=explorer.arch)
    b.load_state_dict(explorer.state_dict)
    return b


# --------------------------------------------------------------------------- dreams
def test_class_dream_raises_the_class_score_and_both_backends_agree(explorer, data):
    a = ok(explorer, "POST", "/api/dream", {"class": 3, "backend": "scratch", "seed": 7, "steps": 30})
    b = ok(explorer, "POST", "/api/dream", {"class": 3, "backend": "torch", "seed": 7, "steps": 30})
    assert a["score"] > a["start_score"] and len(a["scores"]) == 31 and a["class"] == 3 and a["ranked"] == 30
    assert np.abs(png(a["png"]).astype(int) - png(b["png"]).astype(int)).max() <= PIXEL_TOLERANCE
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-4, atol=1e-4)
    # the same as study.dreams, called directly
    r = dreams.class_visualisation(final_backend(explorer), 3, steps=30, seed=7)
    np.testing.assert_array_equal(png(a["png"]), r["uint8"])
    assert a["score"] == pytest.approx(r["scores"][-1], rel=1e-6) and abs(sum(a["probs"]) - 1) < 1e-6
    # another seed, another image
    c = ok(explorer, "POST", "/api/dream", {"class": 3, "seed": 8, "steps": 30})
    assert not np.array_equal(png(c["png"]), png(a["png"]))
    # beside it: the 9 test images with the largest logit of that class, largest first
    logits = final_backend(explorer).predict(to_float(data.x))[:, 3]
    assert [t["index"] for t in a["top"]] == np.argsort(-logits, kind="stable")[:9].tolist()
    np.testing.assert_allclose([t["value"] for t in a["top"]], np.sort(logits)[::-1][:9], rtol=1e-5, atol=1e-6)
    assert [t["index"] for t in b["top"]] == [t["index"] for t in a["top"]]
    np.testing.assert_array_equal(png(a["top"][0]["png"]), data.x[a["top"][0]["index"]])


def test_channel_dream_of_any_layer_with_channels(explorer, data):
    info = ok(explorer, "GET", "/api/info")
    with_maps = [L["name"] for L in info["layers"][1:-1] if len(L["shape"]) == 3]
    assert with_maps[:4] == ["look", "fire", "shrink", "again"] and len(with_maps) == 5     # (+ an unnamed ReLU)
    for layer in (with_maps[0], with_maps[-2]):
        a = ok(explorer, "POST", "/api/dream", {"layer": layer, "channel": 2, "seed": 1, "steps": 20})
        assert a["layer"] == layer and a["channel"] == 2 and a["score"] > a["start_score"]
        b = ok(explorer, "POST", "/api/dream", {"layer": layer, "channel": 2, "seed": 1, "steps": 20,
                                                "backend": "torch"})
        assert np.abs(png(a["png"]).astype(int) - png(b["png"]).astype(int)).max() <= PIXEL_TOLERANCE
        top = dreams.top_activating(final_backend(explorer), data, layer, 2, k=9)
        assert [t["index"] for t in a["top"]] == [i for i, _ in top]
        np.testing.assert_allclose([t["value"] for t in a["top"]], [v for _, v in top], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- fooling
def test_fool_changes_the_prediction_or_says_it_could_not(explorer):
    a = ok(explorer, "POST", "/api/analyze", {"image": "test:4"})
    target = (a["pred"] + 1) % 10
    r = ok(explorer, "POST", "/api/fool", {"image": "test:4", "target": target, "max_steps": 300})
    np.testing.assert_allclose(r["before"], a["probs"], rtol=1e-5, atol=1e-7)
    assert r["pred_before"] == a["pred"] and abs(sum(r["after"]) - 1) < 1e-6
    assert r["success"] and r["pred_after"] == target and r["steps"] > 0, r["message"]
    assert r["message"].startswith("the network now answers")
    fooled = png(r["png"])
    np.testing.assert_array_equal(png(r["png_before"]), explorer.image("test:4"))
    # the answer is the fooled image's: analyse it the way the page does, as an upload
    direct = dreams.fooling_image(final_backend(explorer), explorer.image("test:4"), target, max_steps=300,
                                  step_size=0.25)
    np.testing.assert_array_equal(fooled, direct["uint8"])
    assert int(np.argmax(final_backend(explorer).predict(to_float(fooled[None]))[0])) == target

    # FGSM: every pixel moves by at most epsilon; one level is too little here
    f = ok(explorer, "POST", "/api/fool", {"image": "test:4", "target": target, "method": "fgsm",
                                           "epsilon": 1 / 255, "backend": "torch"})
    assert f["steps"] == 1 and f["max_change"] <= 1
    if not f["success"]:
        assert f["message"].startswith("could not make the network answer") and "epsilon" in f["message"]
    # the class it already answers: nothing changes
    same = ok(explorer, "POST", "/api/fool", {"image": "test:4", "target": a["pred"]})
    assert same["steps"] == 0 and same["success"] and same["max_change"] == 0


def test_a_fool_that_cannot_succeed_says_so(explorer):
    a = ok(explorer, "POST", "/api/analyze", {"image": "test:2"})
    target = (a["pred"] + 5) % 10
    r = ok(explorer, "POST", "/api/fool", {"image": "test:2", "target": target, "max_steps": 1, "step_size": 1e-4})
    assert not r["success"] and r["steps"] == 1 and r["pred_after"] == a["pred"]
    assert r["message"].startswith("could not make the network answer")


def test_occlusion_equals_study_dreams(explorer):
    r = ok(explorer, "POST", "/api/occlusion", {"image": "test:6", "patch": 8, "stride": 8, "backend": "torch"})
    pred = ok(explorer, "POST", "/api/analyze", {"image": "test:6", "backend": "torch"})["target"]
    assert r["target"] == pred
    heat = dreams.occlusion_map(final_backend(explorer, "torch"), explorer.image("test:6"), pred, patch=8, stride=8)
    np.testing.assert_allclose(decode(r["map"]), heat, rtol=1e-5, atol=1e-6)
    s = ok(explorer, "POST", "/api/occlusion", {"image": "test:6", "class": 2, "fill": "mean"})
    assert s["target"] == 2 and decode(s["map"]).shape == (32, 32)


@pytest.mark.parametrize("path, body, status, words", [
    ("/api/dream", {}, 400, "either 'class'"),
    ("/api/dream", {"class": 1, "layer": "look", "channel": 0}, 400, "either 'class'"),
    ("/api/dream", {"class": 10}, 400, "out of range 0..9"),
    ("/api/dream", {"class": -1}, 400, "out of range"),
    ("/api/dream", {"class": "3"}, 400, "whole number"),
    ("/api/dream", {"class": True}, 400, "whole number"),
    ("/api/dream", {"class": 1, "steps": 100000}, 400, "steps 100000 is out of range"),
    ("/api/dream", {"class": 1, "steps": 0}, 400, "steps 0"),
    ("/api/dream", {"class": 1, "seed": -3}, 400, "seed"),
    ("/api/dream", {"class": 1, "backend": "gpu"}, 400, "backend"),
    ("/api/dream", {"layer": "answer", "channel": 0}, 400, "no channels"),
    ("/api/dream", {"layer": "nope", "channel": 0}, 400, "no channels"),
    ("/api/dream", {"layer": "look", "channel": 6}, 400, "channel 6 is out of range 0..5"),
    ("/api/dream", {"layer": "look"}, 400, "channel"),
    ("/api/dream", [1, 2], 400, "JSON object"),
    ("/api/dream", b"{not json", 400, "not valid JSON"),
    ("/api/fool", {"image": "test:1"}, 400, "target"),
    ("/api/fool", {"image": "test:1", "target": 11}, 400, "out of range"),
    ("/api/fool", {"image": "test:999", "target": 1}, 404, "out of range"),
    ("/api/fool", {"image": 5, "target": 1}, 400, "'image' must be a string"),
    ("/api/fool", {"image": "test:1", "target": 1, "method": "magic"}, 400, "method"),
    ("/api/fool", {"image": "test:1", "target": 1, "epsilon": 0}, 400, "epsilon"),
    ("/api/fool", {"image": "test:1", "target": 1, "epsilon": float("inf")}, 400, "not valid JSON"),
    ("/api/fool", {"image": "test:1", "target": 1, "max_steps": 10**6}, 400, "max_steps"),
    ("/api/fool", {"image": "test:1", "target": 1, "step_size": "big"}, 400, "step_size"),
    ("/api/occlusion", {"image": "test:1", "patch": 33}, 400, "patch 33 is out of range 1..32"),
    ("/api/occlusion", {"image": "test:1", "stride": 0}, 400, "stride"),
    ("/api/occlusion", {"image": "test:1", "fill": "pink"}, 400, "fill"),
    ("/api/occlusion", {"image": "upload:9", "class": 1}, 404, "no image"),
    ("/api/analyze", {"image": "test:1", "snapshot": 4}, 400, "snapshot 4 is out of range: this run has 4 (0..3)"),
    ("/api/analyze", {"image": "test:1", "snapshot": -1}, 400, "out of range"),
    ("/api/analyze", {"image": "test:1", "snapshot": "0"}, 400, "whole number"),
    ("/api/layer", {"image": "test:1", "layer": "look", "snapshot": 1.5}, 400, "out of range"),
    ("/api/dream", {"class": 1, "snapshot": 9}, 400, "snapshot 9"),
    ("/api/filters?snapshot=x", None, 400, "whole number"),
    ("/api/filters?snapshot=7", None, 400, "out of range"),
])
def test_bad_requests_get_a_one_line_4xx(explorer, path, body, status, words):
    if isinstance(body, dict) and body.get("epsilon") == float("inf"):
        raw = b'{"image": "test:1", "target": 1, "epsilon": Infinity}'
        status_, ctype, out = dispatch(explorer, "POST", path, raw)
        r = json.loads(out)
        assert status_ == 400 and "epsilon must be a number" in r["error"]
        return
    got, r = call(explorer, "GET" if body is None else "POST", path, body)
    assert got == status and words in r["error"] and "\n" not in r["error"], r


# --------------------------------------------------------------------------- snapshots
def test_snapshots_route_lists_what_train_wrote(explorer, run):
    r = ok(explorer, "GET", "/api/snapshots")
    entries = list_snapshots(run)
    assert len(entries) == 4
    assert [(s["index"], s["epoch"], s["step"], s["global_step"]) for s in r["snapshots"]] == [
        (i, e["epoch"], e["step"], e["global_step"]) for i, e in enumerate(entries)]
    assert [s["at"] for s in r["snapshots"]] == [0.4, 1.0, 1.4, 2.0]      # 5 steps per epoch, kept at 2 and 5


def test_analysis_routes_at_a_snapshot_use_its_weights(explorer, run, data):
    x = to_float(data.x[3:4])
    final = ok(explorer, "POST", "/api/analyze", {"image": "test:3"})
    for k in (0, 2):
        at = ok(explorer, "POST", "/api/analyze", {"image": "test:3", "snapshot": k, "backend": "torch"})
        direct = backend_at(run, k).predict(x)[0]
        np.testing.assert_allclose(at["logits"], direct, rtol=1e-5, atol=1e-6)
        assert np.abs(np.array(at["logits"]) - final["logits"]).max() > 1e-3
        assert at["snapshot"] == k and at["diff"]["logits"] < 1e-4
    # the last snapshot is the end of training: the checkpoint's weights
    last = ok(explorer, "POST", "/api/analyze", {"image": "test:3", "snapshot": 3})
    np.testing.assert_allclose(last["logits"], final["logits"], rtol=1e-6, atol=1e-6)

    # feature maps, gradients, one number written out, the filters: all of snapshot 0
    s = load_snapshot(run, 0)
    acts = backend_at(run, 0).model.eval().forward_intermediates(x)
    layer = ok(explorer, "POST", "/api/layer", {"image": "test:3", "layer": "look", "snapshot": 0})
    np.testing.assert_allclose(decode(layer), acts["look"][0], rtol=1e-5, atol=1e-6)
    pixel = ok(explorer, "POST", "/api/pixel", {"image": "test:3", "layer": "look", "mode": "forward",
                                                "index": [1, 5, 5], "snapshot": 0})
    assert pixel["value"] == pytest.approx(float(acts["look"][0, 1, 5, 5]), rel=1e-5, abs=1e-6)
    assert pixel["computed"] == pytest.approx(pixel["value"], rel=1e-5, abs=1e-6)       # with its own weights
    grad = ok(explorer, "POST", "/api/pixel", {"image": "test:3", "layer": "fire", "mode": "gradient",
                                               "index": [1, 5, 5], "snapshot": 0})
    assert grad["finite_difference"] == pytest.approx(grad["scratch"], rel=1e-3, abs=1e-6)
    assert abs(grad["torch"] - grad["scratch"]) <= 1e-5 * max(abs(grad["scratch"]), 1e-3)
    f = ok(explorer, "GET", "/api/filters?snapshot=0")
    np.testing.assert_array_equal(decode(f["layers"][0]["weight"]), s["model"]["look.weight"])
    assert not np.array_equal(decode(ok(explorer, "GET", "/api/filters")["layers"][0]["weight"]),
                              s["model"]["look.weight"])
    # dreams at a moment of training, too
    d = ok(explorer, "POST", "/api/dream", {"class": 1, "steps": 10, "snapshot": 0})
    r = dreams.class_visualisation(backend_at(run, 0), 1, steps=10, seed=0)
    np.testing.assert_array_equal(png(d["png"]), r["uint8"])


def test_snapshots_kept_in_memory_are_bounded(explorer):
    from scratchcnn.explore.weights import KEPT

    for k in (0, 1, 2, 3, 0, 1):
        ok(explorer, "POST", "/api/analyze", {"image": "test:0", "snapshot": k})
    assert len(explorer.timeline.kept) <= KEPT


def test_a_run_without_snapshots(tmp_path, data):
    from test_explore import make_run

    ex = Explorer(make_run(str(tmp_path / "plain")), data)
    assert ok(ex, "GET", "/api/snapshots") == {"snapshots": []}
    status, r = call(ex, "POST", "/api/analyze", {"image": "test:0", "snapshot": 0})
    assert status == 404 and "--snapshots" in r["error"]


# --------------------------------------------------------------------------- confusion cells
def test_a_confusion_cell_lists_exactly_its_images(explorer, data):
    for backend in ("scratch", "torch"):
        cm = ok(explorer, "GET", f"/api/confusion?backend={backend}")["matrix"]
        pred = final_backend(explorer, backend).predict(to_float(data.x)).argmax(1)
        for i in range(10):
            for j in range(10):
                r = ok(explorer, "GET", f"/api/images?cls={i}&pred={j}&limit=500&backend={backend}")
                expected = np.flatnonzero((data.y == i) & (pred == j)).tolist()
                assert [t["index"] for t in r["items"]] == expected and r["total"] == cm[i][j]
                assert all(t["label"] == i and t["pred"] == j for t in r["items"])


def test_the_top_images_are_ranked_among_the_first_ranked(explorer, monkeypatch):
    from scratchcnn.explore import dreaming

    monkeypatch.setattr(dreaming, "RANKED", 10)
    for body in ({"class": 2}, {"layer": "again", "channel": 1, "backend": "torch"}):
        r = ok(explorer, "POST", "/api/dream", {**body, "steps": 2})
        assert r["ranked"] == 10 and sorted(t["index"] for t in r["top"]) == sorted(set(t["index"] for t in r["top"]))
        assert len(r["top"]) == 9 and all(t["index"] < 10 for t in r["top"])


def test_measure_times_the_dreams_and_the_time_slider(explorer):
    from scratchcnn.explore.measure import measure

    table = measure(explorer, repeats=1)
    for row in ("POST /api/dream class", "POST /api/dream one channel of look", "first (+ ranking the test split)",
                "POST /api/fool steps", "POST /api/fool fgsm", "POST /api/occlusion",
                "POST /api/analyze at a snapshot not loaded yet", "POST /api/analyze at a snapshot kept in memory"):
        assert row in table, row
    maps = list(explorer.arch.map_layers)
    assert f"POST /api/dream one channel of {maps[-1]} at a snapshot not loaded yet, scratch" in table


ODD = [None, True, -1, 0, 1.5, 1e308, "1", "", [], {}, [1], {"a": 1}, 2**64]


@pytest.mark.parametrize("path, base", [
    ("/api/dream", {"class": 1, "steps": 1}),
    ("/api/dream", {"layer": "look", "channel": 1, "steps": 1}),
    ("/api/fool", {"image": "test:1", "target": 2, "max_steps": 1}),
    ("/api/occlusion", {"image": "test:1", "patch": 16, "stride": 16}),
])
def test_odd_values_in_any_field_never_give_a_5xx(explorer, path, base):
    fields = {*base, "backend", "seed", "steps", "snapshot", "method", "epsilon", "step_size", "fill", "class",
              "layer", "channel", "image", "target"}
    for field in sorted(fields):
        for value in ODD:
            status, r = call(explorer, "POST", path, {**base, field: value})
            assert status == 200 or (400 <= status < 500 and "\n" not in r["error"]), (field, value, r)
    for raw in (b"", b"null", b"1", b'"x"', b"[]", b'{"class": NaN}', b'{"epsilon": -Infinity}'):
        status, _, out = dispatch(explorer, "POST", path, raw)
        assert 400 <= status < 500, (raw, out)


def test_start_up_ranks_the_test_images_by_every_channel_in_one_pass_as_each_layer_alone_would(run, data):
    from scratchcnn.explore import dreaming
    from scratchcnn.explore.weights import channel_means

    fresh = Explorer(f"{run}/checkpoint.pth", data)
    fresh.warm()
    images = data.x[:dreaming.RANKED]
    maps = list(fresh.arch.map_layers)
    assert maps[:4] == ["look", "fire", "shrink", "again"] and len(maps) == 5      # and again's ReLU
    for backend in ("scratch", "torch"):
        for layer in maps:
            cached = fresh.final.responses_cache[(backend, layer, len(images))]
            alone = channel_means(fresh.final.backend(backend), layer, images, fresh.normalize)
            np.testing.assert_array_equal(cached, alone)
    # a channel dream at the checkpoint's weights then ranks nothing: its top-9 come from that cache
    before = dict(fresh.final.responses_cache)
    r = ok(fresh, "POST", "/api/dream", {"layer": "again", "channel": 3, "steps": 1})
    assert fresh.final.responses_cache == before
    top = np.argsort(-before[("scratch", "again", len(images))][:, 3], kind="stable")[:9]
    assert [t["index"] for t in r["top"]] == top.tolist()
