"""Every size option is checked against the dataset it names before anything is allocated.

Found trying it as a new user: ``--test-size 999999`` generated 999,999 synthetic
images (23 GB) before the kernel killed the process, and ``--test-size 5000``
silently made 5,000 although the built-in test split has 2,000.
"""
import re

import numpy as np
import pytest

from scratchcnn import data
from scratchcnn.config import TrainConfig
from scratchcnn.errors import UserError
from test_reliability import one_error_line


@pytest.fixture
def nothing_is_generated(monkeypatch):
    """Fail the test if a synthetic image is drawn or CIFAR-10 is looked for."""
    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the size was checked")
    monkeypatch.setattr(data, "make_synthetic", refuse)
    monkeypatch.setattr(data, "load_cifar10", refuse)


SYN = ["--dataset", "synthetic", "--no-progress"]


@pytest.mark.parametrize("args, match", [
    (["--train-size", "64", "--test-size", "999999"], "--test-size 999999 is more than the 2000 images"),
    (["--test-size", "5000"], "--test-size 5000 is more than the 2000 images of synthetic's test split"),
    (["--train-size", "20001"], "--train-size 20001 is more than the 20000 images"),
    (["--batch-size", "30000"], "--batch-size 30000 is larger than the training set \\(20000 images\\)"),
    (["--train-size", "32", "--batch-size", "64"], "--batch-size 64 is larger than the training set \\(32"),
])
def test_train_sizes_beyond_the_synthetic_splits(args, match, tmp_path, capsys, nothing_is_generated):
    line = one_error_line(capsys, ["train", *SYN, "--out", str(tmp_path / "run"), *args])
    assert re.search(match, line), line
    assert not (tmp_path / "run").exists()


def test_cifar10_sizes_are_checked_before_looking_for_the_data(tmp_path, capsys, nothing_is_generated):
    line = one_error_line(capsys, ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"),
                                   "--train-size", "60000", "--out", str(tmp_path / "run")])
    assert "--train-size 60000 is more than the 50000 images of cifar10's training split" in line


def test_evaluate_test_size(tmp_path, capsys, nothing_is_generated):
    import torch
    from torch_reference import CIFAR10Model
    path = tmp_path / "model.pth"
    torch.save(CIFAR10Model().state_dict(), path)
    line = one_error_line(capsys, ["evaluate", "--checkpoint", str(path), "--dataset", "synthetic",
                                   "--test-size", "999999"])
    assert "--test-size 999999 is more than the 2000 images" in line


def test_trace_batch_size_is_checked_before_generating_images(capsys, nothing_is_generated):
    line = one_error_line(capsys, ["trace", "--batch-size", "10000000"])
    assert "--batch-size 10000000 is larger than the training set (20000 images)" in line


def test_sizes_that_fit_are_accepted_exactly_at_the_limit():
    data.check_sizes("synthetic", 20000, 2000, 20000)
    data.check_sizes("cifar10", 50000, 10000, 32)
    TrainConfig(dataset="synthetic", test_size=2000).validate()
    with pytest.raises(UserError, match="--test-size 2001"):
        TrainConfig(dataset="synthetic", test_size=2001).validate()
    train, test = data.load_dataset("synthetic", n_train=12, n_test=2000)
    assert (len(train), len(test)) == (12, 2000) and test.x.dtype == np.uint8
