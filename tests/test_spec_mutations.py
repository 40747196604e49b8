"""No spec may crash the process, and the fast path runs only the networks it was written for
(the tutorial's and its family: ``fused.SHAPE``).

Before networks were data, these edits of the tutorial's network broke things badly: an
extra conv3 gave wrong logits from the fast path, conv3 32->64 segfaulted it, and
``--no-fused`` still ran its warm-up (a traceback, or a segfault). Each is now either
trained correctly on the layer path or refused in one line, in a separate process, so a
crash would show as a signal (a negative return code) instead of taking the test run down.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scratchcnn import architecture as A
from scratchcnn import fused
from scratchcnn.model import Network

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tutorial_with(edit):
    """The tutorial's spec, edited; in_channels and in_features left to be inferred (the preset
    writes them out, as the tutorial does, and an edit upstream would contradict them)."""
    spec = [{k: v for k, v in layer.items() if k not in ("in_channels", "in_features")}
            for layer in A.PRESETS["tutorial"][1]]
    edit(spec)
    return spec


MUTATIONS = {   # name -> (spec, what the fast path says)
    "conv3 32->32 before pool2": (tutorial_with(lambda s: s.insert(5, {"kind": "Conv2d", "out_channels": 32,
                                                                       "kernel_size": 3, "padding": 1})),
                                  "layer 7 (pool3) is MaxPool2d; the fast path needs ReLU there"),
    "conv3 32->64 before pool2": (tutorial_with(lambda s: s.insert(5, {"kind": "Conv2d", "out_channels": 64,
                                                                       "kernel_size": 3, "padding": 1})),
                                  "layer 6 (conv3, Conv2d) has out_channels=64; the fast path needs 32"),
    "conv2 at 64 channels": (tutorial_with(lambda s: s[3].update(out_channels=64)),
                             "layer 4 (conv2, Conv2d) has out_channels=64; the fast path needs 32"),
    "drop2 after act2": (tutorial_with(lambda s: s.insert(5, {"kind": "Dropout", "p": 0.2})),
                         "layer 6 (drop2) is a Dropout right before the pool; the fast path needs the last "
                         "convolution's ReLU followed by the pool"),
    "5x5 filters without padding": (tutorial_with(lambda s: s[0].update(kernel_size=5, padding=0)),
                                    "layer 1 (conv1, Conv2d) has padding=(0, 0); the fast path needs same"),
    "4x4 filters": (tutorial_with(lambda s: [s[0].update(kernel_size=4, padding=2), s[3].update(kernel_size=2)]),
                    "layer 1 (conv1, Conv2d) has kernel_size=(4, 4); the fast path needs odd square <= 7"),
    "4x4 average pooling": (tutorial_with(lambda s: s[5].update(kind="AvgPool2d", kernel_size=4)),
                            "layer 6 (pool2, AvgPool2d) has kernel_size=(4, 4); the fast path needs (2, 2)"),
    "stride 2": (tutorial_with(lambda s: s[0].update(stride=2)),
                 "layer 1 (conv1, Conv2d) has stride=(2, 2); the fast path needs (1, 1)"),
    "LeakyReLU": (tutorial_with(lambda s: s.__setitem__(1, {"kind": "LeakyReLU"})),
                  "layer 2 (act1) is LeakyReLU; the fast path needs ReLU there"),
    "a Linear after fc4": (tutorial_with(lambda s: [s[-1].update(out_features=64), s.append({"kind": "Linear"})]),
                           "layer 12 (fc5) follows the last Linear; the fast path's network ends there"),
    "no classifier": ([{"kind": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1}, {"kind": "ReLU"},
                       {"kind": "MaxPool2d", "kernel_size": 2}, {"kind": "Flatten"}],
                      "it ends after layer 4; the fast path needs Linear next"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_the_fast_path_refuses_every_network_but_the_tutorials_with_any_odd_filter(name):
    spec, reason = MUTATIONS[name]
    model = Network(A.resolve(spec, 10), rng=0)
    assert fused.unsupported_reason(model) == reason
    with pytest.raises(NotImplementedError, match="supports only the tutorial's network"):
        fused.fused_forward_backward(model, np.zeros((2, 3, 32, 32), np.float32), np.zeros(2, np.int64))
    assert fused.unsupported_reason(Network(rng=0)) is None
    assert "float32" in fused.unsupported_reason(Network(dtype=np.float64, rng=0))


def test_a_learners_subclass_never_runs_on_the_fast_path():
    """The fast path has its own arithmetic: a subclass with another backward must not be
    silently replaced by it."""
    from scratchcnn.layers import ReLU

    class MyReLU(ReLU):
        def backward(self, dout):
            return dout

    model = Network(rng=0)
    model.act1 = MyReLU()
    model.layers[1] = ("act1", model.act1)
    assert "layer 2 (act1) is MyReLU" in fused.unsupported_reason(model)


def _cli(tmp_path, spec, *extra):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(spec))
    return subprocess.run([sys.executable, "-m", "scratchcnn", "train", "--arch", str(path), "--epochs", "1",
                           "--train-size", "32", "--test-size", "16", "--batch-size", "16", "--no-progress",
                           "--out", str(tmp_path / "run"), "--overwrite", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conv3 32->64 before pool2", "conv2 at 64 channels", "drop2 after act2"])
@pytest.mark.parametrize("fast", [True, False])
def test_the_mutations_train_on_the_layer_path_in_a_process_of_their_own(name, fast, tmp_path):
    r = _cli(tmp_path, MUTATIONS[name][0], *([] if fast else ["--no-fused"]))
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "scratch runs the layer-by-layer path" in r.stdout and "Traceback" not in r.stderr
    assert ("(it runs the tutorial" in r.stdout or "the fast path needs" in r.stdout) if fast else "--no-fused" in r.stdout


def test_no_fused_never_touches_the_fast_path(tmp_path, monkeypatch, capsys):
    from scratchcnn.cli import main

    def boom(*a, **k):
        raise AssertionError("the fast path ran")
    for name in ("warmup", "fused_train_step", "fused_predict", "fused_forward_backward"):
        monkeypatch.setattr(fused, name, boom)
    assert main(["train", "--no-fused", "--epochs", "1", "--train-size", "32", "--test-size", "16",
                 "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "scratch runs the layer-by-layer path (--no-fused)" in capsys.readouterr().out


FUZZ = r'''
import json, sys
import numpy as np
import torch
from scratchcnn import architecture as A, fused
from scratchcnn.layers import SoftmaxCrossEntropy
from scratchcnn.model import Network
from torch_reference import TorchNetwork

torch.set_num_threads(1)
rng = np.random.default_rng(int(sys.argv[1]))
KINDS = ["Conv2d", "Conv2d", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "MaxPool2d", "AvgPool2d",
         "BatchNorm2d", "Dropout", "Flatten", "Linear"]

def layer():
    k = str(rng.choice(KINDS))
    d = {"kind": k}
    if k == "Conv2d":
        d.update(out_channels=int(rng.integers(1, 9)), kernel_size=int(rng.integers(1, 8)),
                 stride=int(rng.integers(1, 4)), padding=int(rng.integers(0, 4)), bias=bool(rng.random() < 0.8))
    elif k in ("MaxPool2d", "AvgPool2d"):
        d.update(kernel_size=int(rng.integers(1, 5)))
        if rng.random() < 0.5:
            d["stride"] = int(rng.integers(1, 4))
    elif k == "Linear":
        d["out_features"] = int(rng.integers(1, 40))
    elif k == "Dropout":
        d["p"] = float(rng.random())
    return d

valid = refused = 0
for trial in range(int(sys.argv[2])):
    spec = [layer() for _ in range(int(rng.integers(1, 7)))]
    if rng.random() < 0.7:
        spec += [{"kind": "Flatten"}, {"kind": "Linear"}]
    try:
        arch = A.resolve(spec, 4)
    except A.SpecError as e:
        assert "\n" not in str(e)
        refused += 1
        continue
    valid += 1
    for dtype in (np.float64,):
        ours = Network(arch, dtype=dtype, rng=trial).train()
        theirs = TorchNetwork(arch).double().train()
        theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
        for name, drop in ours.dropouts():
            drop.p = 0.0; getattr(theirs, name).p = 0.0      # masks are compared elsewhere
        x = np.random.default_rng(trial).standard_normal((3, 3, 32, 32))
        logits = ours.forward(x)
        loss = SoftmaxCrossEntropy()
        loss.forward(logits, np.arange(3) % logits.shape[1])
        dx = ours.backward(loss.backward(), input_grad=True)
        xt = torch.from_numpy(x).requires_grad_(True)
        lt = torch.nn.functional.cross_entropy(theirs(xt), torch.from_numpy(np.arange(3) % logits.shape[1]))
        lt.backward()
        scale = max(1.0, float(np.abs(logits).max()))
        assert np.abs(logits - theirs(xt).detach().numpy()).max() < 1e-9 * scale, json.dumps(spec)
        assert np.abs(dx - xt.grad.numpy()).max() <= 1e-9 * max(1e-12, float(np.abs(xt.grad).max())) or \
            np.abs(dx - xt.grad.numpy()).max() < 1e-12, json.dumps(spec)
    if fused.unsupported_reason(Network(arch, rng=0)) is None:
        raise AssertionError("the fast path accepted " + json.dumps(spec))
print(f"valid {valid} refused {refused}")
'''


@pytest.mark.slow
def test_random_specs_never_crash_and_match_torch(tmp_path):
    """Random stacks of the layer zoo: each is refused in one line or builds, runs forward and
    backward, and equals torch (float64, dropout off) in its logits and input gradient; in a
    process of its own, so a crash is a failed return code, not a lost test run."""
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    r = subprocess.run([sys.executable, str(script), "7", "150"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    valid, refused = (int(w) for w in r.stdout.split()[1::2])
    assert valid >= 30 and refused >= 30, r.stdout
