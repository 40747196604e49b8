import os

import numpy as np
import pytest
import torch

from scratchcnn.architecture import tutorial

PARAM_SHAPES = tutorial().param_shapes()
from scratchcnn import checkpoint as ck
from scratchcnn.atomic import atomic_write
from scratchcnn.errors import UserError


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in PARAM_SHAPES.items()}


def test_checkpoint_round_trip(tmp_path):
    sd, opt = _state(0), {"fc4.bias": np.arange(10, dtype=np.float32)}
    metrics = [{"epoch": 1, "train_loss": 1.5, "test_acc": 0.5}]
    path = str(tmp_path / "run" / "checkpoint.pth")
    ck.save_checkpoint(path, model=sd, optimizer=opt, epoch=1, metrics=metrics,
                       config={"backend": "scratch", "lr": 0.001})
    got = ck.load_checkpoint(path)
    assert got["epoch"] == 1 and got["metrics"] == metrics and got["config"]["lr"] == 0.001
    for k in sd:
        np.testing.assert_array_equal(got["model"][k], sd[k])
    np.testing.assert_array_equal(got["optimizer"]["fc4.bias"], opt["fc4.bias"])
    assert os.listdir(tmp_path / "run") == ["checkpoint.pth"]      # no temporary files left


def test_bare_state_dict_is_tutorial_compatible(tmp_path):
    path = str(tmp_path / "model.pth")
    ck.save_state_dict(path, _state(1))
    from torch_reference import CIFAR10Model
    m = CIFAR10Model()
    m.load_state_dict(torch.load(path, weights_only=True))       # the tutorial's own loading code
    np.testing.assert_array_equal(m.fc4.bias.detach().numpy(), _state(1)["fc4.bias"])


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "checkpoint.pth")
    ck.save_state_dict(path, _state(0))
    before = open(path, "rb").read()

    def half_then_crash(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_other_architecture_names_keys_and_shapes(tmp_path):
    sd = _state(0)
    sd["fc3.weight"] = np.zeros((256, 8192), np.float32)
    del sd["conv2.bias"]
    sd["fc5.weight"] = np.zeros((2, 2), np.float32)
    path = str(tmp_path / "other.pth")
    ck.save_state_dict(path, sd)
    with pytest.raises(UserError) as e:
        ck.load_checkpoint(path)
    msg = str(e.value)
    assert "missing conv2.bias" in msg and "unexpected fc5.weight" in msg
    assert "fc3.weight has shape (256, 8192), expected (512, 8192)" in msg


@pytest.mark.parametrize("content,match", [
    (None, "does not exist"), (b"", "is empty"), (b"\x00garbage" * 50, "not a plain weights file")])
def test_unreadable_files_give_one_clear_error(tmp_path, content, match):
    path = tmp_path / "x.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        ck.load_checkpoint(str(path))
