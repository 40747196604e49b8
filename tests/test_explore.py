"""scratchcnn explore, without a browser: every API answer checked against the models,
and a real HTTP server fed bad requests (each must get a 4xx JSON error and leave the
server answering). The page itself is driven in tests/test_explore_browser.py."""
import base64
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from scratchcnn.architecture import PRESETS, tutorial
from scratchcnn.checkpoint import save_checkpoint, save_state_dict
from scratchcnn.data import SYNTHETIC_CLASSES, load_dataset, to_float
from scratchcnn.explore.analysis import Explorer
from scratchcnn.explore.http import MAX_JSON_DEPTH, dispatch, make_server
from scratchcnn.explore.measure import measure
from scratchcnn.explore.uploads import MAX_UPLOAD_BYTES
from scratchcnn.model import CIFAR10Model
from scratchcnn.study.saliency import grad_cam, saliency_map, scratch_class_gradients

pytestmark = pytest.mark.usefixtures("one_thread_per_pool")

CONFIG = {"dataset": "synthetic", "seed": 0, "train_size": 40, "test_size": 30,
          "normalize_stats": None, "classes": list(SYNTHETIC_CLASSES)}
EPOCHS = [{"epoch": 1, "train_loss": 2.1, "train_acc": 0.3, "test_acc": 0.4},
          {"epoch": 2, "train_loss": 1.2, "train_acc": 0.6, "test_acc": 0.7,
           "layer_stats": {"loss": 1.0, "layers": {"act1": {"act": {"mean": 0.1, "std": 0.2, "min": 0.0, "max": 1.0},
                                                            "grad": {"mean": 0.0, "std": 1e-4, "min": -1e-3,
                                                                     "max": 1e-3}, "dead": 0.05}}}}]


def make_run(folder, seed=3):
    """A run folder: checkpoint.pth of a seeded scratch model and a metrics.json."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "checkpoint.pth")
    save_checkpoint(path, model=CIFAR10Model(rng=seed).state_dict(), optimizer={}, epoch=2,
                    metrics=EPOCHS, config=CONFIG)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump({"config": CONFIG, "epochs": EPOCHS}, f)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(str(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("synthetic", n_train=10, n_test=30)[1]


@pytest.fixture(scope="module")
def explorer(run, test_split):
    return Explorer(run, test_split)


@pytest.fixture(scope="module")
def model():
    return CIFAR10Model(rng=3).eval()


def call(explorer, method, path, body=None):
    """http.dispatch with a JSON body (dict) or raw bytes -> (status, decoded JSON)."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    status, ctype, data = dispatch(explorer, method, path, raw)
    assert ctype == "application/json"
    return status, json.loads(data)


def decode(arr):
    return np.frombuffer(base64.b64decode(arr["data"]), "<f4").reshape(arr["shape"])


def png_bytes(image_chw):
    buf = io.BytesIO()
    Image.fromarray(image_chw.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- API, in-process
def test_info_lists_the_layers_of_the_architecture(explorer):
    status, info = call(explorer, "GET", "/api/info")
    assert status == 200
    assert [L["name"] for L in info["layers"]] == ["input", *tutorial().layer_names, "softmax"]
    assert [tuple(L["shape"]) for L in info["layers"][1:-1]] == [s.out_shape for s in tutorial().layers]
    assert [L["kind"] for L in info["layers"]] == ["Input", *(s.kind for s in tutorial().layers), "Softmax"]
    # how each map is coloured: can its values be negative? (pixels in [0, 1]; after a ReLU never)
    assert {L["name"]: L["signed"] for L in info["layers"]} == {
        "input": False, "conv1": True, "act1": False, "drop1": False, "conv2": True, "act2": False, "pool2": False,
        "flat": False, "fc3": True, "act3": False, "drop3": False, "fc4": True, "softmax": False}
    assert info["layers"][0]["channels"] == ["R", "G", "B"] and info["logits"] == "fc4"
    assert info["layers"][1]["receptive_field"] == [3, 3] and info["layers"][4]["receptive_field"] == [5, 5]
    assert info["gradcam_layer"] == "conv2" and info["arch"] == "tutorial"
    assert info["classes"] == list(SYNTHETIC_CLASSES) and info["n_test"] == 30 and info["has_run"]


def test_images_filter_and_sort(explorer, test_split, model):
    pred = model.forward(to_float(test_split.x)).argmax(1)
    status, r = call(explorer, "GET", "/api/images?limit=500")
    assert status == 200 and r["total"] == 30 and [it["index"] for it in r["items"]] == list(range(30))
    assert [it["pred"] for it in r["items"]] == pred.tolist()
    first = r["items"][0]["png"]
    assert first.startswith("data:image/png;base64,")
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(first.split(",", 1)[1]))))
    np.testing.assert_array_equal(thumb.transpose(2, 0, 1), test_split.x[0])

    _, r = call(explorer, "GET", "/api/images?cls=4&limit=500")
    assert r["total"] == int((test_split.y == 4).sum()) > 0 and {it["label"] for it in r["items"]} == {4}
    _, r = call(explorer, "GET", "/api/images?wrong=1&limit=500")
    assert r["total"] == int((pred != test_split.y).sum()) > 0     # an untrained model gets most wrong
    assert all(it["pred"] != it["label"] for it in r["items"])
    _, r = call(explorer, "GET", "/api/images?sort=confidence&limit=500")
    conf = [it["conf"] for it in r["items"]]
    assert conf == sorted(conf)
    _, r = call(explorer, "GET", "/api/images?sort=-confidence&limit=5&offset=2&backend=torch")
    assert len(r["items"]) == 5 and r["offset"] == 2


def test_analyze_layer_and_pixel_equal_the_scratch_model(explorer, test_split, model):
    x = to_float(test_split.x[5:6])
    ref = scratch_class_gradients(model, x, 2)
    status, a = call(explorer, "POST", "/api/analyze", {"image": "test:5", "class": 2})
    assert status == 200 and a["target"] == 2 and a["label"] == int(test_split.y[5])
    np.testing.assert_allclose(a["logits"], ref["logits"][0], rtol=1e-6, atol=1e-6)
    assert abs(sum(a["probs"]) - 1) < 1e-6 and a["pred"] == int(np.argmax(a["logits"]))
    np.testing.assert_allclose(decode(a["saliency"]), saliency_map(ref["grads"]["input"])[0], rtol=1e-6)
    np.testing.assert_allclose(decode(a["gradcam"]), grad_cam(ref["acts"]["conv2"], ref["grads"]["conv2"])[0],
                               rtol=1e-5, atol=1e-7)
    assert a["diff"]["logits"] < 1e-5 and a["diff"]["saliency"] < 1e-6 * max(1, decode(a["saliency"]).max())

    for layer, mode, expected in [("conv1", "forward", ref["acts"]["conv1"][0]),
                                  ("pool2", "forward", ref["acts"]["pool2"][0]),
                                  ("conv2", "gradient", ref["grads"]["conv2"][0]),
                                  ("fc3", "gradient", ref["grads"]["fc3"][0]),
                                  ("input", "gradient", ref["grads"]["input"][0])]:
        status, r = call(explorer, "POST", "/api/layer", {"image": "test:5", "class": 2, "layer": layer, "mode": mode})
        assert status == 200 and tuple(r["shape"]) == expected.shape, layer
        np.testing.assert_allclose(decode(r), expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())
        assert r["diff"] <= 1e-5 * np.abs(expected).max(), (layer, r["diff"])

    # conv2, channel 7, at the top-left corner: the patch reaches into the zero padding.
    status, p = call(explorer, "POST", "/api/pixel", {"image": "test:5", "layer": "conv2", "index": [7, 0, 0]})
    assert status == 200 and p["input"] == "drop1" and p["formula"] == "conv" and p["kind"] == "Conv2d"
    patch, kernel = np.array(p["patch"]), np.array(p["kernel"])
    assert patch.shape == (32, 3, 3) and np.all(patch[:, 0, :] == 0) and np.all(patch[:, :, 0] == 0)
    np.testing.assert_array_equal(np.array(p["inside"])[0], [False, False, False])
    np.testing.assert_array_equal(patch[:, 1:, 1:], ref["acts"]["drop1"][0, :, :2, :2])
    np.testing.assert_array_equal(kernel, model.conv2.weight.data[7])
    np.testing.assert_allclose(np.array(p["products"]), patch * kernel, rtol=1e-6)
    assert p["value"] == float(ref["acts"]["conv2"][0, 7, 0, 0])
    assert abs(p["computed"] - p["value"]) < 1e-5 and p["bias"] == float(model.conv2.bias.data[7])
    assert p["region"] == [0, 2, 0, 2]                      # the 5x5 receptive field, clipped to the image

    # ... and inside the image, where every tap reads a real input value.
    for y, x in [(13, 20), (31, 31), (16, 1)]:
        _, p = call(explorer, "POST", "/api/pixel", {"image": "test:5", "class": 2, "layer": "conv2", "index": [3, y, x]})
        patch = np.pad(ref["acts"]["drop1"][0], ((0, 0), (1, 1), (1, 1)))[:, y:y + 3, x:x + 3]
        np.testing.assert_array_equal(np.array(p["patch"]), patch)
        np.testing.assert_allclose(p["partial"], (patch * model.conv2.weight.data[3]).sum(axis=(1, 2)), rtol=1e-5, atol=1e-7)
        assert p["value"] == float(ref["acts"]["conv2"][0, 3, y, x]) and abs(p["computed"] - p["value"]) < 1e-5
        assert p["region"] == [max(y - 2, 0), min(y + 2, 31), max(x - 2, 0), min(x + 2, 31)]


def test_torch_backend_and_other_views(explorer, run):
    status, a = call(explorer, "POST", "/api/analyze", {"image": "test:1", "backend": "torch"})
    assert status == 200 and a["backend"] == "torch" and a["diff"]["probs"] < 1e-5
    status, r = call(explorer, "POST", "/api/layer", {"image": "test:1", "backend": "torch", "layer": "softmax"})
    assert status == 200 and abs(decode(r).sum() - 1) < 1e-5
    status, f = call(explorer, "GET", "/api/filters")
    assert [(L["name"], L["reads_image"]) for L in f["layers"]] == [("conv1", True), ("conv2", False)]
    np.testing.assert_array_equal(decode(f["layers"][0]["weight"]), CIFAR10Model(rng=3).conv1.weight.data)
    np.testing.assert_array_equal(decode(f["layers"][1]["weight"]), CIFAR10Model(rng=3).conv2.weight.data)
    status, r = call(explorer, "GET", "/api/run")
    assert status == 200 and r["epochs"] == EPOCHS and r["source"].endswith("metrics.json")


# --------------------------------------------------------------------------- any network, every kind
# Every kind of layer, with kernels, strides and paddings that are not the tutorial's, and
# BatchNorm running statistics that are not 0 and 1: what /api/pixel writes out must be exact.
ZOO = [{"kind": "Conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
       {"kind": "BatchNorm2d"}, {"kind": "LeakyReLU", "negative_slope": 0.1},
       {"kind": "Conv2d", "out_channels": 5, "kernel_size": [3, 2], "padding": [1, 0]}, {"kind": "Tanh"},
       {"kind": "AvgPool2d", "kernel_size": 2}, {"kind": "MaxPool2d", "kernel_size": 3, "stride": 2},
       {"kind": "Sigmoid"}, {"kind": "Flatten"}, {"kind": "Dropout", "p": 0.2},
       {"kind": "Linear", "out_features": 12}, {"kind": "ReLU"}, {"kind": "Linear"}]


def make_arch_run(folder, arch, seed=1, normalize=None, state=None):
    """A run folder whose checkpoint records the network ``arch`` (an Architecture)."""
    from scratchcnn.model import Network

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "checkpoint.pth")
    config = dict(CONFIG, arch=arch.name, arch_spec=arch.to_json(), normalize_stats=normalize)
    save_checkpoint(path, model=state or Network(arch, rng=seed).state_dict(), optimizer={}, epoch=1,
                    metrics=EPOCHS[:1], config=config)
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, test_split):
    """(Explorer, scratch model in eval mode) of the ZOO network with non-trivial running statistics."""
    from scratchcnn.architecture import resolve
    from scratchcnn.model import Network

    arch = resolve(ZOO, 10, name="zoo")
    net = Network(arch, rng=1)
    state = net.state_dict()
    rng = np.random.default_rng(0)
    state["bn1.running_mean"] = rng.normal(0, 0.1, 4).astype(np.float32)
    state["bn1.running_var"] = rng.uniform(0.5, 2, 4).astype(np.float32)
    state["bn1.weight"] = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    state["bn1.bias"] = rng.normal(0, 0.1, 4).astype(np.float32)
    path = make_arch_run(str(tmp_path_factory.mktemp("zoo")), arch, state=state)
    net.load_state_dict(state)
    return Explorer(path, test_split), net.eval()


def interior(shape):
    return [n // 2 for n in shape]


def test_the_explorer_follows_the_network_the_checkpoint_holds(zoo):
    explorer, net = zoo
    _, info = call(explorer, "GET", "/api/info")
    assert [(L["name"], L["kind"], tuple(L["shape"])) for L in info["layers"][1:-1]] == \
        [(s.name, s.kind, s.out_shape) for s in net.arch.layers]
    assert info["logits"] == "fc4" and info["gradcam_layer"] == "conv2" and info["arch"] == "zoo"
    signed = {L["name"]: L["signed"] for L in info["layers"]}
    assert signed["bn1"] and signed["act2"] and not signed["act2_2"] and not signed["drop2"] and not signed["act3"]
    assert info["layers"][4]["receptive_field"] == [7, 5]          # conv2 (3x2) after conv1 (3x3, stride 2)
    _, f = call(explorer, "GET", "/api/filters")
    assert [L["name"] for L in f["layers"]] == ["conv1", "conv2"] and decode(f["layers"][1]["weight"]).shape == (5, 4, 3, 2)


def test_forward_formula_of_every_kind_at_corner_interior_and_last_positions(zoo, test_split):
    explorer, net = zoo
    x = to_float(test_split.x[4:5])
    acts = {"input": x, **net.forward_intermediates(x)}
    inputs = dict(zip(net.arch.layer_names, ["input", *net.arch.layer_names[:-1]]))
    seen = set()
    for s in net.arch.layers:
        for index in ([0] * len(s.out_shape), interior(s.out_shape), [n - 1 for n in s.out_shape]):
            status, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": s.name, "index": index})
            assert status == 200 and p["kind"] == s.kind and p["input"] == inputs[s.name], (s.name, p)
            value = float(acts[s.name][(0, *index)])
            assert p["value"] == value, (s.name, index)
            assert abs(p["computed"] - value) <= 1e-5 * max(1, abs(value)), (s.name, index, p["computed"], value)
            seen.add(p["formula"])
    assert seen == {"conv", "batchnorm", "elementwise", "avgpool", "maxpool", "flatten", "linear"}

    # The ingredients, computed here independently. conv1: stride 2, padding 1, at (y=7, x=9).
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "conv1", "index": [2, 7, 9]})
    patch = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))[:, 14:17, 18:21]
    np.testing.assert_array_equal(np.array(p["patch"]), patch)
    assert (p["top"], p["left"], p["stride"], p["padding"]) == (13, 17, [2, 2], [1, 1])
    # conv2: a 3x2 kernel, padding (1, 0), at the bottom edge: the last row is padding.
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "conv2", "index": [4, 15, 3]})
    np.testing.assert_array_equal(np.array(p["inside"]), [[True, True], [True, True], [False, False]])
    np.testing.assert_array_equal(np.array(p["patch"])[:, :2], acts["act1"][0, :, 14:16, 3:5])
    np.testing.assert_array_equal(p["kernel"], net.conv2.weight.data[4])
    # BatchNorm in eval mode: the running statistics, not the image's.
    bn = net.bn1
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "bn1", "index": [3, 5, 6]})
    v = float(acts["conv1"][0, 3, 5, 6])
    assert p["input_value"] == v and p["running_mean"] == float(bn.running_mean[3])
    expected = (v - bn.running_mean[3]) / np.sqrt(float(bn.running_var[3]) + 1e-5) * bn.weight.data[3] + bn.bias.data[3]
    assert abs(p["computed"] - expected) < 1e-6
    # LeakyReLU on a negative input: the slope.
    neg = np.argwhere(acts["bn1"][0] < -0.05)[0].tolist()
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "act1", "index": neg})
    assert p["function"] == "LeakyReLU" and abs(p["computed"] - 0.1 * p["input_value"]) < 1e-12
    # max-pool 3x3, stride 2: the window at (1, 2) starts at (2, 4); the winner is its maximum.
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "pool2_2", "index": [1, 1, 2]})
    window = acts["pool2"][0, 1, 2:5, 4:7]
    np.testing.assert_array_equal(np.array(p["window"]), window)
    assert p["winner"] == list(np.unravel_index(window.argmax(), (3, 3))) and p["computed"] == window.max()
    # avg-pool 2x2: the mean.
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "pool2", "index": [2, 3, 5]})
    assert p["count"] == 4 and abs(p["computed"] - acts["act2"][0, 2, 6:8, 10:12].mean()) < 1e-7
    # Flatten: unit 23 of a 5x3x3 map is (c 2, y 1, x 2).
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "flat", "index": [23]})
    assert p["source"] == [2, 1, 2] and p["computed"] == float(acts["act2_2"][0, 2, 1, 2])
    # Linear: the largest products, the rest summed, the bias: the unit's value.
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "fc3", "index": [7]})
    products = net.fc3.weight.data[7].astype(np.float64) * acts["drop2"][0]
    order = np.argsort(-np.abs(products))
    assert [t["j"] for t in p["terms"]] == order[:8].tolist() and p["n_rest"] == 37
    assert p["terms"][0]["at"] == list(np.unravel_index(order[0], (5, 3, 3)))
    assert abs(sum(t["product"] for t in p["terms"]) + p["rest"] + p["bias"] - p["computed"]) < 1e-9
    # softmax: the exponentials and their sum.
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:4", "layer": "softmax", "index": [3]})
    z = acts["fc4"][0].astype(np.float64)
    assert p["formula"] == "softmax" and abs(p["sum"] - np.exp(z - z.max()).sum()) < 1e-9
    assert abs(p["computed"] - np.exp(z[3] - z.max()) / np.exp(z - z.max()).sum()) < 1e-12 and abs(p["value"] - p["computed"]) < 1e-6


def assert_three_agree(p, scale):
    """The written-out sum, the scratch backend, torch and the float64 finite difference agree."""
    tol = 2e-5 * scale + 1e-9
    assert not p["kink"] and abs(p["slopes"][0] - p["slopes"][1]) < 1e-2 * scale, p
    assert abs(p["computed"] - p["value"]) <= tol, p
    assert p["differences"]["scratch_torch"] == abs(p["scratch"] - p["torch"]) <= tol, p
    assert abs(p["finite_difference"] - p["scratch"]) <= tol and abs(p["finite_difference"] - p["torch"]) <= tol, p


def test_backward_formula_of_every_kind_agrees_with_both_backends_and_a_finite_difference(zoo, test_split):
    explorer, net = zoo
    from scratchcnn.study.saliency import scratch_class_gradients

    ref = scratch_class_gradients(net, to_float(test_split.x[6:7]), 3)
    seen = set()
    for name in ["input", *net.arch.layer_names]:
        g = ref["grads"][name][0]
        scale = float(np.abs(g).max())
        for index in ([int(i) for i in np.unravel_index(np.abs(g).argmax(), g.shape)], interior(g.shape)):
            status, p = call(explorer, "POST", "/api/pixel", {"image": "test:6", "class": 3, "layer": name,
                                                              "mode": "gradient", "index": index})
            assert status == 200 and p["value"] == float(g[tuple(index)]) and p["target"] == 3, (name, p)
            assert_three_agree(p, scale)
            seen.add(p["formula"])
    assert seen == {"conv_input", "batchnorm_input", "elementwise_input", "avgpool_input", "maxpool_input",
                    "flatten_input", "linear_input", "score"}
    assert scale == 1.0 and p["formula"] == "score"                   # fc4: ds/dz is one-hot

    # conv1 (stride 2) sent ds/dx back: from pixel (y=9, x=6) only odd taps reach whole output positions.
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:6", "class": 3, "layer": "input", "mode": "gradient",
                                                 "index": [1, 9, 6]})
    assert p["next"] == {"name": "conv1", "kind": "Conv2d"}
    # tap i reads output row (9 + 1 - i) / 2: whole for i = 0 and 2; tap j: (6 + 1 - j) / 2, whole for j = 1
    np.testing.assert_array_equal(np.array(p["valid"]), [[False, True, False], [False, False, False], [False, True, False]])
    assert p["positions"][0][1] == [5, 3] and p["positions"][2][1] == [4, 3]
    np.testing.assert_array_equal(np.array(p["weights"]), net.conv1.weight.data[:, 1])
    # max-pool routing: each window holding the element sends its gradient to its winner only.
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:6", "class": 3, "layer": "pool2", "mode": "gradient",
                                                 "index": [2, 4, 4]})
    assert [(w["y"], w["x"]) for w in p["windows"]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert p["computed"] == sum(w["upstream"] for w in p["windows"] if w["routed"])
    assert all(w["routed"] == (w["winner"] == [4, 4]) for w in p["windows"])


def test_the_finite_difference_says_where_it_straddles_a_kink(explorer, test_split, model):
    """Where a ReLU's input is exactly 0 ... in practice: a max-pool window of tied zeros. The backends
    send the gradient to the first zero; the finite difference sees half of it, and says why."""
    x = to_float(test_split.x[0:1])
    acts = model.forward_intermediates(x)
    a = acts["act2"][0]
    for c, y, xx in np.argwhere(a == 0):
        window = a[c, y - y % 2:y - y % 2 + 2, xx - xx % 2:xx - xx % 2 + 2]
        if (window == 0).all() and (y % 2, xx % 2) == (0, 0):             # the first of a window of zeros
            break
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:0", "layer": "act2", "mode": "gradient",
                                                 "index": [int(c), int(y), int(xx)]})
    if p["scratch"] == 0:
        pytest.skip("this window's gradient is 0 anyway")
    assert p["kink"] and abs(p["finite_difference"] - p["scratch"] / 2) < 1e-5 * abs(p["scratch"])
    assert sorted([abs(v) for v in p["slopes"]]) == pytest.approx([0, abs(p["scratch"])], abs=1e-5 * abs(p["scratch"]))


def test_weight_gradient_is_the_sum_over_positions_in_both_backends(zoo, test_split):
    explorer, net = zoo
    from scratchcnn.study.saliency import scratch_class_gradients

    ref = scratch_class_gradients(net, to_float(test_split.x[6:7]), 3)
    for name in ("conv1", "conv2"):
        grad = getattr(net, name).weight.grad.copy() if name == "conv2" else None
        status, r = call(explorer, "POST", "/api/layer", {"image": "test:6", "class": 3, "layer": name, "mode": "weight"})
        assert status == 200 and r["diff"] < 1e-5 * np.abs(decode(r)).max()
        if grad is not None:
            np.testing.assert_allclose(decode(r), grad, rtol=1e-6, atol=1e-9)
        w = decode(r)
        for index in ([int(i) for i in np.unravel_index(np.abs(w).argmax(), w.shape)], [1, 2, 1, 0]):
            _, p = call(explorer, "POST", "/api/pixel", {"image": "test:6", "class": 3, "layer": name, "mode": "weight",
                                                         "index": index})
            assert p["formula"] == "conv_weight" and p["value"] == float(w[tuple(index)])
            assert_three_agree(p, float(np.abs(w).max()))
            assert abs(sum(t["product"] for t in p["terms"]) + p["rest"] - p["computed"]) < 1e-9
    f, c, i, j = 1, 2, 1, 0                            # conv2's tap (1, 0) reads act1[c, y + 1 - 1, x + 0]
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:6", "class": 3, "layer": "conv2", "mode": "weight",
                                                 "index": [f, c, i, j]})
    np.testing.assert_array_equal(decode(p["input"]), ref["acts"]["act1"][0, c, :, :15])
    np.testing.assert_array_equal(decode(p["upstream"]), ref["grads"]["conv2"][0, f])


def test_the_scratch_torch_difference_is_a_real_difference(run, test_split, model):
    """Give torch slightly different weights: every number's diff is |scratch - torch| of the two."""
    from torch_reference import TorchNetwork

    import torch

    explorer = Explorer(run, test_split)
    other = {k: v + np.float32(1e-3) for k, v in CIFAR10Model(rng=3).state_dict().items()}
    explorer.backend("torch").load_state_dict(other)
    twin = TorchNetwork()
    twin.load_state_dict({k: torch.as_tensor(v) for k, v in other.items()})
    from scratchcnn.study.saliency import scratch_class_gradients, torch_class_gradients

    x = to_float(test_split.x[2:3])
    mine, theirs = scratch_class_gradients(model, x, 1), torch_class_gradients(twin.eval(), x, 1)
    _, r = call(explorer, "POST", "/api/layer", {"image": "test:2", "class": 1, "layer": "conv2"})
    expected = float(np.abs(mine["acts"]["conv2"] - theirs["acts"]["conv2"]).max())
    assert r["diff"] > 1e-3 and abs(r["diff"] - expected) <= 1e-6 * expected
    _, a = call(explorer, "POST", "/api/analyze", {"image": "test:2", "class": 1, "backend": "torch"})
    assert abs(a["diff"]["logits"] - float(np.abs(mine["logits"] - theirs["logits"]).max())) < 1e-6
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:2", "class": 1, "layer": "fc3", "mode": "gradient",
                                                 "index": [11]})
    s, t = float(mine["grads"]["fc3"][0, 11]), float(theirs["grads"]["fc3"][0, 11])
    assert p["scratch"] == s and p["torch"] == t and p["differences"]["scratch_torch"] == abs(s - t) > 1e-5
    assert abs(p["finite_difference"] - s) < 1e-5 * abs(s) + 1e-9        # the checkpoint's weights: scratch's
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:2", "class": 1, "layer": "conv1", "index": [0, 4, 4],
                                                 "backend": "torch"})
    assert p["value"] == float(theirs["acts"]["conv1"][0, 0, 4, 4]) and p["other"] == float(mine["acts"]["conv1"][0, 0, 4, 4])
    assert p["diff"] == abs(p["value"] - p["other"]) > 1e-4


def test_a_checkpoint_trained_with_normalize_explores_the_normalised_input(tmp_path, test_split):
    from scratchcnn.architecture import load as load_arch

    stats = [[0.5, 0.4, 0.3], [0.25, 0.2, 0.3]]
    path = make_arch_run(str(tmp_path / "norm"), load_arch("tutorial", 10), seed=4, normalize=stats)
    explorer = Explorer(path, test_split)
    net = CIFAR10Model(rng=4).eval()
    x = to_float(test_split.x[8:9], stats)
    assert x.min() < 0                                                   # really normalised
    _, info = call(explorer, "GET", "/api/info")
    assert info["normalize"] and info["layers"][0]["signed"]
    _, r = call(explorer, "POST", "/api/layer", {"image": "test:8", "layer": "input"})
    np.testing.assert_allclose(decode(r), x[0], rtol=1e-6)
    _, r = call(explorer, "POST", "/api/layer", {"image": "test:8", "layer": "fc4"})
    np.testing.assert_allclose(decode(r), net.forward(x)[0], rtol=1e-5, atol=1e-6)
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:8", "layer": "input", "index": [2, 5, 6]})
    raw = int(test_split.x[8, 2, 5, 6])
    assert p["formula"] == "input" and p["raw"] == raw and (p["mean"], p["std"]) == (0.3, 0.3)
    assert abs(p["computed"] - (raw / 255 - 0.3) / 0.3) < 1e-12 and abs(p["value"] - p["computed"]) < 1e-6
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:8", "layer": "input", "mode": "gradient", "index": [0, 9, 9]})
    assert_three_agree(p, 1.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_explores(preset, tmp_path, test_split):
    """Each preset's checkpoint: the layers its network has, and one number of each layer written out,
    forward and backward, equal to the maps."""
    from scratchcnn.architecture import load as load_arch

    arch = load_arch(preset, 10)
    explorer = Explorer(make_arch_run(str(tmp_path), arch, seed=2), test_split)
    _, info = call(explorer, "GET", "/api/info")
    assert [L["name"] for L in info["layers"]] == ["input", *arch.layer_names, "softmax"]
    for L in info["layers"]:
        for mode in ("forward", "gradient") if L["kind"] != "Softmax" else ("forward",):
            status, r = call(explorer, "POST", "/api/layer", {"image": "test:1", "layer": L["name"], "mode": mode})
            assert status == 200 and r["shape"] == L["shape"]
            status, p = call(explorer, "POST", "/api/pixel", {"image": "test:1", "layer": L["name"], "mode": mode,
                                                              "index": interior(L["shape"])})
            assert status == 200 and abs(p["computed"] - p["value"]) <= 1e-5 * max(1, abs(p["value"])), (L["name"], mode)
            if mode == "gradient" and not p["kink"]:   # (an untrained vgg's max-pools see ties of zeros: kinks)
                assert abs(p["finite_difference"] - p["scratch"]) <= 2e-5 * max(abs(p["scratch"]), 1e-3), (L["name"], p)


def test_confusion_matrix_and_its_cells_images(explorer, test_split, model):
    pred = model.forward(to_float(test_split.x)).argmax(1)
    status, c = call(explorer, "GET", "/api/confusion?backend=torch")
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (test_split.y, pred), 1)
    assert status == 200 and c["matrix"] == expected.tolist() and c["n"] == 30
    i, j = np.unravel_index(expected.argmax(), expected.shape)
    _, r = call(explorer, "GET", f"/api/images?cls={i}&pred={j}&limit=500")
    assert r["total"] == expected[i, j] and all(it["label"] == i and it["pred"] == j for it in r["items"])


def test_upload_is_decoded_from_memory_and_analysed_like_the_same_test_image(explorer, test_split):
    status, u = call(explorer, "POST", "/api/upload", png_bytes(test_split.x[3]))
    assert status == 200 and u["image"].startswith("upload:")
    _, a_up = call(explorer, "POST", "/api/analyze", {"image": u["image"]})
    _, a_test = call(explorer, "POST", "/api/analyze", {"image": "test:3"})
    assert a_up["label"] is None and a_up["logits"] == a_test["logits"]   # a 32x32 upload is not resized


def test_measure_prints_every_request_kind(explorer):
    table = measure(explorer, repeats=1)
    assert "GET /api/images" in table and table.splitlines()[-1].startswith("slowest:")
    for kind in ("Conv2d", "ReLU", "Dropout", "MaxPool2d", "Flatten", "Linear", "Softmax"):
        assert f"POST /api/pixel forward {kind}" in table
    for kind in ("Conv2d", "ReLU", "Dropout", "MaxPool2d", "Flatten", "Linear"):
        assert f"POST /api/pixel gradient through {kind}" in table
    assert "POST /api/pixel weight gradient conv2" in table and "GET /api/confusion" in table


@pytest.mark.parametrize("method,path,body,status,message", [
    ("POST", "/api/analyze", b"{not json", 400, "not valid JSON"),
    ("POST", "/api/analyze", b"[1, 2]", 400, "JSON object"),
    ("POST", "/api/analyze", {"image": "test:30"}, 404, "out of range"),
    ("POST", "/api/analyze", {"image": "test:-1"}, 404, "out of range"),
    ("POST", "/api/analyze", {"image": "upload:999"}, 404, "no image"),
    ("POST", "/api/analyze", {"image": 7}, 400, "'image' must be a string"),
    ("POST", "/api/analyze", {"image": "test:1", "class": 10}, 400, "class 10 is out of range"),
    ("POST", "/api/analyze", {"image": "test:1", "backend": "jax"}, 400, "backend 'jax'"),
    ("POST", "/api/layer", {"image": "test:1", "layer": "conv3"}, 400, "layer 'conv3'"),
    ("POST", "/api/layer", {"image": "test:1", "layer": "softmax", "mode": "gradient"}, 400, "before the softmax"),
    ("POST", "/api/pixel", {"image": "test:1", "layer": "fc3", "index": [0, 0, 0]}, 400, "list (unit) for fc3"),
    ("POST", "/api/pixel", {"image": "test:1", "layer": "conv1", "index": [32, 0, 0]}, 400, "index[0] 32 is out of range"),
    ("POST", "/api/pixel", {"image": "test:1", "layer": "conv1", "index": [0, 1.5, 0]}, 400, "whole number"),
    ("POST", "/api/pixel", {"image": "test:1", "layer": "conv1", "index": "0,0,0"}, 400, "(channel, y, x)"),
    ("POST", "/api/pixel", {"image": "test:1", "layer": "conv9", "index": [0]}, 400, "layer 'conv9'"),
    ("POST", "/api/pixel", {"image": "test:1", "layer": "softmax", "mode": "gradient", "index": [0]}, 400, "before the softmax"),
    ("POST", "/api/pixel", {"image": "test:1", "layer": "act1", "mode": "weight", "index": [0, 0, 0, 0]}, 400, "Conv2d"),
    ("POST", "/api/pixel", {"image": "test:1", "layer": "conv1", "mode": "weight", "index": [0, 3, 0, 0]}, 400, "index[1] 3"),
    ("POST", "/api/layer", {"image": "test:1", "layer": "fc3", "mode": "weight"}, 400, "conv1, conv2"),
    ("POST", "/api/layer", {"image": "test:1", "layer": "conv1", "mode": "sideways"}, 400, "mode 'sideways'"),
    ("GET", "/api/images?pred=10", None, 400, "pred 10"),
    ("GET", "/api/confusion?backend=jax", None, 400, "backend 'jax'"),
    ("POST", "/api/upload", b"this is not an image", 400, "not an image"),
    ("POST", "/api/upload", b"", 400, "empty"),
    ("GET", "/api/images?cls=12", None, 400, "cls 12"),
    ("GET", "/api/images?limit=abc", None, 400, "whole number"),
    ("GET", "/api/analyze", None, 405, "not allowed"),
    ("GET", "/../../etc/passwd", None, 404, "nothing at"),
    ("GET", "/static/../http.py", None, 404, "nothing at"),
])
def test_bad_requests_get_a_json_error(explorer, method, path, body, status, message):
    got, r = call(explorer, method, path, body)
    assert got == status and message in r["error"] and "\n" not in r["error"]


@pytest.mark.parametrize("side,message", [(7000, "7000x7000 pixels"), (10000, "decompression-bomb guard")])
def test_pixel_bombs_are_refused_before_decoding(explorer, side, message):
    """Blank PNGs of 49 M and 100 M pixels compress to well under the upload limit. The first
    is refused by our pixel limit read from the header, the second already by Pillow's guard."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    assert len(buf.getvalue()) < MAX_UPLOAD_BYTES
    status, r = call(explorer, "POST", "/api/upload", buf.getvalue())
    assert status == 413 and message in r["error"]


# --------------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def server(explorer):
    srv = make_server(explorer, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


def test_server_survives_bad_requests(server, explorer, monkeypatch):
    port = server
    json_type = {"Content-Type": "application/json"}
    assert request(port, "POST", "/api/analyze", b"{oops", json_type)[0] == 400
    assert request(port, "POST", "/api/analyze", json.dumps({"image": "test:999"}), json_type)[0] == 404
    assert request(port, "POST", "/api/layer", json.dumps({"image": "test:0", "layer": "nope"}), json_type)[0] == 400
    assert request(port, "POST", "/api/upload", b"GIF89a but not really", {"Content-Type": "image/gif"})[0] == 400

    # A huge upload: refused from its Content-Length, before the body is read.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", "/api/upload")
    conn.putheader("Content-Length", str(MAX_UPLOAD_BYTES + 1))
    conn.endheaders()
    res = conn.getresponse()
    assert res.status == 413 and "limit" in json.loads(res.read())["error"]
    conn.close()

    # A JSON body over 64 KiB, a POST without Content-Length, a foreign Host header.
    assert request(port, "POST", "/api/analyze", b"{" + b" " * 70000 + b"}")[0] == 413
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", "/api/analyze")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    status, _, body = request(port, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403 and "127.0.0.1" in json.loads(body)["error"]

    # A bug inside a request: a one-line 500, and the server keeps serving.
    def broken(*args):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr(explorer, "filters", broken)
    status, _, body = request(port, "GET", "/api/filters")
    assert status == 500 and json.loads(body)["error"] == "internal error (RuntimeError: boom)"

    status, headers, body = request(port, "GET", "/api/info")
    assert status == 200 and json.loads(body)["n_test"] == 30
    status, headers, body = request(port, "GET", "/")
    assert status == 200 and b"<canvas" in body and "default-src 'self'" in headers["Content-Security-Policy"]
    for name in ("js/main.js", "js/formula.js", "style.css"):
        assert request(port, "GET", f"/static/{name}")[0] == 200


SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Cache-Control")


def assert_json_error(status, headers, body, expected_status, *words):
    """A one-line JSON error with the status expected and every security header."""
    assert status == expected_status, (status, body)
    assert headers["Content-Type"] == "application/json"
    assert [h for h in SECURITY_HEADERS if h not in headers] == []
    error = json.loads(body)["error"]
    assert "\n" not in error and all(w in error for w in words), error


def assert_still_serving(port):
    status, _, body = request(port, "GET", "/api/info")
    assert status == 200 and json.loads(body)["n_test"] == 30


def raw_exchange(port, data, timeout=10):
    """Send raw bytes, read until the server closes the connection -> the bytes received."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "BREW"])
def test_other_methods_get_a_json_405_with_the_security_headers(server, method):
    """Not http.server's HTML 501 page without our headers: a JSON 405 naming what is allowed
    (404 where nothing is), and the connection closed (a body it may carry is not read)."""
    status, headers, body = request(server, method, "/api/info", body=b"{}")
    assert_json_error(status, headers, body, 405, method, "/api/info")
    assert headers["Allow"] == "GET, HEAD" and headers["Connection"] == "close"
    status, headers, body = request(server, method, "/api/analyze")
    assert_json_error(status, headers, body, 405, method)
    assert headers["Allow"] == "POST"
    assert_json_error(*request(server, method, "/nowhere"), 404, "nothing at /nowhere")
    assert_still_serving(server)


def test_head_answers_like_get_without_a_body(server):
    """HEAD: GET's status and headers (Content-Length included), no body; on one kept-alive
    connection, so a body sent after HEAD's headers would break the GET that follows."""
    _, get_headers, get_body = request(server, "GET", "/api/info")
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=60)
    try:
        for path, status in [("/api/info", 200), ("/", 200), ("/api/analyze", 405), ("/nowhere", 404)]:
            conn.request("HEAD", path)
            res = conn.getresponse()
            assert res.status == status and res.read() == b""
            assert [h for h in SECURITY_HEADERS if res.getheader(h) is None] == []
            if path == "/api/info":
                assert int(res.getheader("Content-Length")) == len(get_body)
            conn.request("GET", "/api/info")
            res = conn.getresponse()
            assert res.status == 200 and res.read() == get_body
    finally:
        conn.close()


@pytest.mark.parametrize("raw,status,words", [
    (b"GET /api/info HTTP/x.y\r\n\r\n", 400, ["Bad request version"]),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, []),
    (b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n", 431, ["headers"]),
])
def test_malformed_requests_get_json_with_the_security_headers(server, raw, status, words):
    """What http.server refuses itself (a bad request line, version or headers) is answered
    like everything else: JSON, our headers, one line."""
    answer = raw_exchange(server, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert_json_error(int(lines[0].split()[1]), headers, body, status, *words)
    assert_still_serving(server)


def test_json_nested_too_deep_is_a_400(server, explorer):
    """20,000 nested lists fit in the 64 KiB limit and made json.loads raise RecursionError (a 500).
    Deeper than MAX_JSON_DEPTH is refused before parsing; brackets inside strings do not count."""
    deep = b"[" * 20000 + b"]" * 20000
    status, headers, body = request(server, "POST", "/api/analyze", deep, {"Content-Type": "application/json"})
    assert_json_error(status, headers, body, 400, f"nested deeper than {MAX_JSON_DEPTH}")
    deep_object = b'{"a":' * 10000 + b"1" + b"}" * 10000
    assert_json_error(*request(server, "POST", "/api/layer", deep_object, {"Content-Type": "application/json"}),
                      400, "nested deeper")
    just_deep_enough = {"image": "test:1", "extra": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))}
    assert call(explorer, "POST", "/api/analyze", just_deep_enough)[0] == 200
    brackets_in_strings = {"image": "upload:[[[" + "[{" * 5000 + '\\"\\'}
    status, r = call(explorer, "POST", "/api/analyze", brackets_in_strings)
    assert status == 404 and "no image" in r["error"]
    assert_still_serving(server)


@pytest.fixture
def impatient_server(explorer):
    """A server that gives each request 0.5 s to arrive (READ_TIMEOUT is 15 s)."""
    srv = make_server(explorer, "127.0.0.1", 0, read_timeout=0.5)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def handler_threads():
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def read_until_closed(sock):
    """What the server sends until it closes the connection (a reset counts as closing)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_clients_too_slow_to_send_are_cut_off(impatient_server):
    """A body shorter than its Content-Length, headers trickled in one by one (slow loris) and a
    connection that never sends: each held a server thread forever. Now each request must arrive
    whole within the read timeout: the stalled body gets a 408, the others are closed."""
    import socket

    port = impatient_server
    threads_before = len(handler_threads())
    head = (b"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head + b'{"image": ')                  # 10 of the 100 bytes announced
        answer = read_until_closed(s)
    assert time.monotonic() - t < 4
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in headers.decode().split("\r\n"))
    assert_json_error(int(status_line.split()[1]), headers, body, 408, "did not arrive")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head + b'{"image": ')
        s.shutdown(socket.SHUT_WR)                      # and hangs up: not taken for the whole body
        assert b"the request body ended after 10 of the 100 bytes announced" in read_until_closed(s)

    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for i in range(40):                         # a header every 0.1 s, for 4 s
                time.sleep(0.1)
                s.sendall(b"X-Slow-%d: 1\r\n" % i)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_until_closed(s) == b""
    assert time.monotonic() - t < 3

    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert read_until_closed(s) == b""              # silent: closed, no answer
    assert time.monotonic() - t < 3

    while len(handler_threads()) > threads_before and time.monotonic() - t < 5:
        time.sleep(0.05)
    assert len(handler_threads()) <= threads_before      # the threads were freed
    assert_still_serving(port)


def test_fifty_connections_at_once_are_all_queued_and_answered(explorer):
    """The listen backlog was the standard library's 5: with the server busy, the 6th
    connection at once had its handshake dropped and retried after 1, 3, 7 s... Here 50
    clients connect before the server accepts any (as when they all arrive while it is busy):
    every handshake completes at once, and every request is answered."""
    import socket

    srv = make_server(explorer, "127.0.0.1", 0)
    port = srv.server_address[1]
    clients, serving = [], threading.Thread(target=srv.serve_forever, daemon=True)
    try:
        for _ in range(50):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=3))
        for c in clients:
            c.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        serving.start()
        t = time.monotonic()
        answers = [read_until_closed(c) for c in clients]
        assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 50
        assert time.monotonic() - t < 10                 # the busy 2-core CI machine: about 0.1 s
        assert_still_serving(port)
    finally:
        for c in clients:
            c.close()
        if serving.is_alive():
            srv.shutdown()
        srv.server_close()


def test_pages_of_other_sites_cannot_post(server, test_split):
    """A page on another origin could POST to /api/upload (200, evicting the user's uploads):
    neither Origin nor the content type was checked. A POST whose Origin is not the address
    the page was loaded from, or that the browser marks as from another site, is refused (403);
    the JSON endpoints take application/json only, and /api/upload an image type or
    application/octet-stream (what a form or a no-cors fetch can send without asking: 415)."""
    port = server
    own = f"http://127.0.0.1:{port}"
    png = png_bytes(test_split.x[3])
    analyze = json.dumps({"image": "test:1"}).encode()
    image_type, json_type = {"Content-Type": "image/png"}, {"Content-Type": "application/json"}
    for foreign in [{"Origin": "http://evil.example"}, {"Origin": f"http://127.0.0.1:{port + 1}"},
                    {"Origin": f"https://127.0.0.1:{port}"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:x"},
                    {"Origin": f"http://localhost:{port}"},        # Host says 127.0.0.1: another origin
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": own, "Sec-Fetch-Site": "cross-site"}]:
        assert_json_error(*request(port, "POST", "/api/upload", png, {**image_type, **foreign}), 403, "its own page")
        assert_json_error(*request(port, "POST", "/api/analyze", analyze, {**json_type, **foreign}), 403)

    # The page's own requests, as Chromium sends them (on either loopback name), and tools without Origin.
    for origin in (own, f"http://localhost:{port}"):
        same = {"Origin": origin, "Host": origin[len("http://"):], "Sec-Fetch-Site": "same-origin"}
        status, _, body = request(port, "POST", "/api/upload", png, {**image_type, **same})
        assert status == 200 and json.loads(body)["image"].startswith("upload:")
        assert request(port, "POST", "/api/analyze", analyze, {**json_type, **same})[0] == 200
    assert request(port, "POST", "/api/upload", png, {"Content-Type": "application/octet-stream"})[0] == 200
    assert request(port, "POST", "/api/analyze", analyze, {"Content-Type": "application/json; charset=utf-8"})[0] == 200

    for simple in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": simple} if simple else {}
        assert_json_error(*request(port, "POST", "/api/analyze", analyze, headers), 415, "application/json")
        assert_json_error(*request(port, "POST", "/api/upload", png, headers), 415, "image")
    assert_json_error(*request(port, "POST", "/api/upload", png, json_type), 415, "image")
    assert_still_serving(port)


def memory_mib(reset_peak=False):
    """(resident, peak resident since the last reset) memory of this process in MiB (Linux)."""
    if reset_peak:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                # VmHWM := VmRSS
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@pytest.mark.slow
def test_six_huge_uploads_at_once_stay_within_one_decode_of_memory(server):
    """Six 40-Mpx uploads at once (a plain 8000x5000 image is 0.1 MB as PNG, 0.6 MB as JPEG) raised
    the server's memory by 0.8 GB (JPEG) and 1.7 GB (PNG): each held 160 MB of pixels, twice once
    converted to RGB, all at the same time. Now JPEGs decode at 1/8 scale (Pillow's draft), an RGB
    image is not copied, and one upload is decoded at a time."""
    try:
        memory_mib(reset_peak=True)
    except OSError:
        pytest.skip("measuring the peak needs Linux's /proc/self/clear_refs")
    big = Image.new("RGB", (8000, 5000), (120, 30, 200))
    files = {}
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        big.save(buf, format=fmt)
        files[fmt] = buf.getvalue()
    del big
    growth = {}
    for fmt, limit in [("JPEG", 100), ("PNG", 400)]:
        rss, _ = memory_mib(reset_peak=True)
        answers = [None] * 6

        def upload(i):
            answers[i] = request(server, "POST", "/api/upload", files[fmt], {"Content-Type": f"image/{fmt.lower()}"})
        threads = [threading.Thread(target=upload, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        growth[fmt] = memory_mib()[1] - rss
        assert [a[0] for a in answers] == [200] * 6, answers
        assert growth[fmt] < limit, growth
    assert_still_serving(server)


def test_a_big_jpeg_decoded_at_reduced_scale_looks_like_the_full_decode(explorer, monkeypatch):
    """Pillow's draft decodes a 2000x1500 JPEG at 1/8 scale: on a pattern with detail at the
    32x32 scale (the hardest case), within 2 levels of 255 on average (measured 1.7, at most 11)
    of decoding every pixel first. And an upload kept waiting DECODE_WAIT seconds gets a 503."""
    from scratchcnn.explore import uploads

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((2000, 1500), Image.BICUBIC)
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=90)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        full = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.int16).transpose(2, 0, 1)
    diff = np.abs(uploads.decode_upload(buf.getvalue()).astype(np.int16) - full)
    assert diff.mean() < 2 and diff.max() <= 16

    wait = uploads.DECODE_WAIT
    monkeypatch.setattr(uploads, "DECODE_WAIT", 0.2)
    decoder_free = threading.Event()
    uploads._decoder.submit(decoder_free.wait, 10)           # the decoding thread, busy
    try:
        status, r = call(explorer, "POST", "/api/upload", buf.getvalue())
    finally:
        decoder_free.set()
    assert status == 503 and "busy" in r["error"]
    # free again: the next upload is decoded (with the real wait: on a loaded machine the decode
    # itself took longer than 0.2 s, and the test failed on that, not on the server)
    monkeypatch.setattr(uploads, "DECODE_WAIT", wait)
    assert call(explorer, "POST", "/api/upload", buf.getvalue())[0] == 200


def test_clients_that_hang_up_leave_no_traceback(server, capfd):
    """A client that closes its connection right after its request (a reload, a closed tab) made
    the server print a BrokenPipeError or ConnectionResetError traceback in the terminal."""
    import socket
    import struct

    requests = [b"GET /api/images?limit=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 20\r\n\r\n" + b'{"image": "test:2"} ']
    for i in range(30):
        with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
            if i % 2:                                      # a reset (RST), not a polite close (FIN)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(requests[i % 3])
            if i % 5 == 4:
                s.recv(1)                                  # hang up in the middle of the answer
    t = time.monotonic()
    while handler_threads() and time.monotonic() - t < 10:
        time.sleep(0.05)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    assert_still_serving(server)


# --------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_cli_serves_a_bare_tutorial_state_dict(tmp_path):
    """`scratchcnn explore` on a state_dict saved the tutorial's way, with --dataset synthetic:
    it prints the URL, and the page and the API answer there."""
    import torch
    from torch_reference import CIFAR10Model as TorchModel

    path = str(tmp_path / "cifar10model.pth")
    torch.save(TorchModel().state_dict(), path)                # the tutorial's own line
    proc = subprocess.Popen([sys.executable, "-m", "scratchcnn", "explore", "--checkpoint", path,
                             "--dataset", "synthetic", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "http://" in line:
                break
        assert lines and "http://" in lines[-1], "".join(lines)
        url = lines[-1].split("http://")[1].split("/")[0]
        port = int(url.split(":")[1])
        status, _, body = request(port, "GET", "/api/info")
        assert status == 200 and json.loads(body)["dataset"] == "synthetic" and json.loads(body)["epoch"] == 0
        status, _, body = request(port, "POST", "/api/analyze", json.dumps({"image": "test:0"}),
                                  {"Content-Type": "application/json"})
        assert status == 200 and len(json.loads(body)["probs"]) == 10
        assert request(port, "GET", "/api/run")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert url.startswith("127.0.0.1:"), "".join(lines)


def test_cli_explore_without_data_is_one_line(tmp_path, capsys):
    from scratchcnn.cli import main

    path = str(tmp_path / "model.pth")
    save_state_dict(path, CIFAR10Model(rng=0).state_dict())
    rc = main(["explore", "--checkpoint", path, "--data-dir", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "--dataset synthetic" in err and err.count("\n") == 1


def test_cli_explore_takes_the_network_of_a_bare_state_dict_and_custom_layers(tmp_path, capsys, monkeypatch):
    """--arch names the network of a bare state_dict; a checkpoint naming a layer of the learner's
    own is refused in one line unless --allow-custom-layers says to load its code."""
    from scratchcnn.architecture import resolve
    from scratchcnn.cli import main
    from scratchcnn.explore import http as http_module
    from scratchcnn.model import Network

    served = []
    monkeypatch.setattr(http_module, "serve", lambda explorer, host, port: served.append(explorer) or 0)
    path = str(tmp_path / "model.pth")
    save_state_dict(path, Network("k5", rng=0).state_dict())
    rc = main(["explore", "--checkpoint", path, "--dataset", "synthetic"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "k5" in err and err.count("\n") == 1
    assert main(["explore", "--checkpoint", path, "--dataset", "synthetic", "--arch", "k5"]) == 0
    assert served[-1].arch.name == "k5" and served[-1].specs["conv1"].args["kernel_size"] == 5

    (tmp_path / "my_layers.py").write_text(
        "import numpy as np\nfrom scratchcnn.layer_base import Layer\n\n\nclass MyReLU(Layer):\n"
        "    torch_kind = 'ReLU'\n\n    def forward(self, x):\n        self.x = x\n"
        "        self.out = np.maximum(x, 0)\n        return self.out\n\n"
        "    def backward(self, dout):\n        return dout * (self.x > 0)\n")
    spec = [{"kind": "Conv2d", "out_channels": 4, "kernel_size": 3}, {"kind": "my_layers.py:MyReLU"},
            {"kind": "Flatten"}, {"kind": "Linear"}]
    arch = resolve(spec, 10, name="mine", base_dir=str(tmp_path))
    run = make_arch_run(str(tmp_path / "mine"), arch)
    rc = main(["explore", "--checkpoint", run])
    err = capsys.readouterr().err
    assert rc == 2 and "--allow-custom-layers" in err and err.count("\n") == 1
    assert main(["explore", "--checkpoint", run, "--allow-custom-layers"]) == 0
    explorer = served[-1]
    _, info = call(explorer, "GET", "/api/info")
    assert info["layers"][2]["kind"] == "MyReLU" and not info["layers"][2]["explained"]
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:0", "layer": "myrelu1", "index": [0, 5, 5]})
    assert p["formula"] == "none" and p["computed"] is None and p["diff"] < 1e-6
    _, p = call(explorer, "POST", "/api/pixel", {"image": "test:0", "layer": "conv1", "mode": "gradient", "index": [0, 5, 5]})
    assert p["formula"] == "none" and abs(p["finite_difference"] - p["scratch"]) < 1e-5


def test_cli_explore_port_out_of_range_is_one_line(run, capsys):
    from scratchcnn.cli import main

    rc = main(["explore", "--checkpoint", run, "--port", "70000"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "error: --port 70000 is out of range 0..65535 (0: any free port)\n"


def test_cli_explore_busy_port_is_one_line(run, capsys):
    import socket

    from scratchcnn.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        rc = main(["explore", "--checkpoint", run, "--port", str(s.getsockname()[1])])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot listen on 127.0.0.1" in err and err.count("\n") == 1


def test_host_other_than_loopback_prints_a_warning(explorer, capsys, monkeypatch):
    """--host 0.0.0.0 is served (any Host header answered) after a printed warning."""
    from http.server import ThreadingHTTPServer

    from scratchcnn.explore import http as http_module

    seen = {}

    def stop(self, *args, **kwargs):                 # instead of serving: record and "Ctrl-C"
        seen["loopback_only"] = self.loopback_only
        raise KeyboardInterrupt
    monkeypatch.setattr(ThreadingHTTPServer, "serve_forever", stop)
    assert http_module.serve(explorer, host="0.0.0.0", port=0) == 0
    out = capsys.readouterr().out
    assert out.startswith("WARNING: listening on 0.0.0.0: anyone who can reach this machine")
    assert "scratchcnn explore: http://127.0.0.1:" in out and seen == {"loopback_only": False}
    assert http_module.serve(explorer, host="127.0.0.1", port=0) == 0
    assert "WARNING" not in capsys.readouterr().out and seen == {"loopback_only": True}
