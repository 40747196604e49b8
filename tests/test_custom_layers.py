"""A learner's own layer in a network spec: trained by both backends, and ``train --check-layers``
(every layer against its torch twin in one float64 step) names the first layer that is wrong."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import one_error_line
from scratchcnn.checkpoint import load_checkpoint
from scratchcnn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "my_layers.py")
SMALL = ["--epochs", "1", "--train-size", "256", "--test-size", "64", "--no-progress"]

FORGETFUL = '''
import numpy as np
from scratchcnn.layer_base import Layer


class ForgetfulLeakyReLU(Layer):
    """LeakyReLU whose backward forgets the slope for negative inputs."""
    torch_kind = "LeakyReLU"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        self.x = x
        return np.where(x > 0, x, x.dtype.type(self.negative_slope) * x)

    def backward(self, dout):
        return np.where(self.x > 0, dout, 0)
'''


def spec(tmp_path, kind, name="net.json"):
    """A small network with ``kind`` as its activation, written to tmp_path/name."""
    layers = [{"kind": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
              {"kind": kind, "negative_slope": 0.1},
              {"kind": "MaxPool2d", "kernel_size": 2},
              {"kind": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
              {"kind": "ReLU"},
              {"kind": "Flatten"},
              {"kind": "Linear"}]
    path = tmp_path / name
    path.write_text(json.dumps(layers))
    return str(path)


@pytest.fixture(scope="module")
def example_spec(tmp_path_factory):
    """The example layer named by a path relative to the spec file."""
    folder = tmp_path_factory.mktemp("spec")
    return spec(folder, os.path.relpath(EXAMPLE, folder) + ":MyLeakyReLU")


def test_both_backends_train_the_custom_layer_alike(example_spec, tmp_path, capsys):
    accs = {}
    for backend in ("scratch", "torch"):
        out = str(tmp_path / backend)
        assert main(["train", "--arch", example_spec, "--backend", backend, "--out", out] + SMALL) == 0
        ck = load_checkpoint(os.path.join(out, "checkpoint.pth"), allow_custom=True)
        kinds = [layer["kind"] for layer in ck["config"]["arch_spec"]]
        assert kinds[1] == f"{EXAMPLE}:MyLeakyReLU"                  # recorded with the file's absolute path
        assert ck["config"]["arch_spec"][1]["negative_slope"] == 0.1
        accs[backend] = json.load(open(os.path.join(out, "metrics.json")))["epochs"][0]
    for key in ("train_loss", "test_loss"):
        assert accs["scratch"][key] == pytest.approx(accs["torch"][key], rel=1e-4), key


def test_check_layers_passes_for_the_example_layer(example_spec, tmp_path, capsys):
    capsys.readouterr()
    assert main(["train", "--arch", example_spec, "--out", str(tmp_path / "run"), "--check-layers"] + SMALL) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("check-layers:"))
    assert line.startswith("check-layers: all 7 layers agree with torch (float64, one training step on 8 images; "
                           "worst error ")
    assert float(line.split("worst error ")[1].split(",")[0]) < 1e-13


def test_check_layers_names_the_broken_layer_and_stops(tmp_path, capsys):
    (tmp_path / "bad.py").write_text(FORGETFUL)
    arch = spec(tmp_path, "bad.py:ForgetfulLeakyReLU")
    out = tmp_path / "run"
    line = one_error_line(capsys, ["train", "--arch", arch, "--out", str(out), "--check-layers"] + SMALL)
    assert line.startswith("error: --check-layers: layer 2 (forgetfulleakyrelu1, ForgetfulLeakyReLU) is the first "
                           "to disagree with torch.nn.LeakyReLU: its input gradient is off by ")
    assert "training stopped; check it alone with: scratchcnn checklayer " in line
    assert line.endswith("bad.py:ForgetfulLeakyReLU --args '{\"negative_slope\": 0.1}'")
    assert not out.exists()                                   # nothing was trained or written
    # without the check, the same network trains (the bug goes unnoticed)
    assert main(["train", "--arch", arch, "--out", str(out)] + SMALL) == 0


def test_check_layers_isolates_each_layer():
    """A wrong backward in layer 2 shows in layer 2 only: layer 1 is given the scratch network's
    own upstream gradient, so it agrees, and the layers after it were never touched."""
    from scratchcnn import parity
    from scratchcnn.architecture import load
    from scratchcnn.layers import LeakyReLU
    import scratchcnn.layer_base as lb

    class SlopeLess(LeakyReLU):
        torch_kind = "LeakyReLU"

        def backward(self, dout):
            return np.where(self.x > 0, dout, 0)
    lb.REGISTRY["SlopeLess"] = SlopeLess
    try:
        arch = load([{"kind": "Conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
                     {"kind": "SlopeLess", "negative_slope": 0.2}, {"kind": "Flatten"}, {"kind": "Linear"}], 10)
        x, y = parity.parity_batch(0, np.float64, 4)
        checks = parity.check_layers(arch, x, y)
    finally:
        del lb.REGISTRY["SlopeLess"]
    assert [c.name for c in checks] == ["conv1", "slopeless1", "flat", "fc2"]
    bad, what = parity.first_disagreement(checks)
    assert (bad.name, what) == ("slopeless1", "dx") and bad.errors["dx"] > 1e-2 and bad.errors["out"] == 0
    assert max(checks[0].errors.values()) < 1e-13 and max(checks[3].errors.values()) < 1e-13
