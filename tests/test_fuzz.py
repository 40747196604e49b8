"""Fuzzing the loaders of untrusted files: every load succeeds with valid data or raises UserError.

Four valid files (a training checkpoint.pth, a bare model.pth, a python-format
and a binary-format CIFAR-10 batch) are damaged in seeded random ways: replaced by
random bytes, truncated at random offsets, and with random bytes flipped (half of
the flips land in the first and last 4 KiB, where the pickle, zip directory and
record headers are). No other exception type may escape, and no load may hang.
"""
import os
import signal

import numpy as np
import pytest

from conftest import fake_cifar_arrays, write_cifar_binary, write_cifar_python
from scratchcnn.architecture import tutorial

PARAM_SHAPES = tutorial().param_shapes()
from scratchcnn import checkpoint as ck
from scratchcnn import data
from scratchcnn.errors import UserError

N_RANDOM, N_TRUNCATE, N_FLIP = 8, 14, 24        # per file: 46 cases, 184 in all
SECONDS_PER_LOAD = 20


def _damaged(raw, rng):
    """Yield (description, bytes) for the random, truncated and flipped versions of ``raw``."""
    for _ in range(N_RANDOM):
        n = int(rng.integers(0, 5000))
        yield f"random {n} bytes", rng.bytes(n)
    for _ in range(N_TRUNCATE):
        cut = int(rng.integers(0, len(raw)))
        yield f"truncated at {cut}", raw[:cut]
    edge = min(4096, len(raw))
    for _ in range(N_FLIP):
        b = bytearray(raw)
        where = []
        for _ in range(int(rng.integers(1, 9))):
            if rng.random() < 0.5:
                i = int(rng.integers(0, edge)) if rng.random() < 0.5 else len(raw) - 1 - int(rng.integers(0, edge))
            else:
                i = int(rng.integers(0, len(raw)))
            b[i] = int(rng.integers(0, 256))
            where.append(i)
        yield f"bytes changed at {where}", bytes(b)


class _Hung(Exception):
    pass


def _alarm(signum, frame):
    raise _Hung()


def _fuzz(raw, path, load, check, seed):
    """Write each damaged version of ``raw`` to ``path`` and ``load()`` it; return outcome counts."""
    rng = np.random.default_rng(seed)
    outcomes = {"loaded": 0, "UserError": 0}
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for what, content in _damaged(raw, rng):
            with open(path, "wb") as f:
                f.write(content)
            signal.alarm(SECONDS_PER_LOAD)
            try:
                result = load()
            except UserError:
                outcomes["UserError"] += 1
                continue
            except _Hung:
                pytest.fail(f"{what}: the load hung for {SECONDS_PER_LOAD} s")
            except Exception as e:
                pytest.fail(f"{what}: {type(e).__name__} escaped instead of UserError: {e}")
            finally:
                signal.alarm(0)
            check(result)
            outcomes["loaded"] += 1
    finally:
        signal.signal(signal.SIGALRM, old)
    return outcomes


def _check_checkpoint(ckpt):
    assert list(ckpt["model"]) == list(PARAM_SHAPES)
    for k, v in ckpt["model"].items():
        assert v.shape == PARAM_SHAPES[k] and v.dtype == np.float32 and np.isfinite(v).all()
    assert isinstance(ckpt["epoch"], int) and isinstance(ckpt["metrics"], list)


def _check_cifar(splits):
    for split in splits:
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (3, 32, 32)
        assert split.y.dtype == np.int64 and split.y.shape == (len(split.x),)
        assert split.y.min() >= 0 and split.y.max() <= 9


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-0.1, 0.1, s).astype(np.float32) for k, s in PARAM_SHAPES.items()}


@pytest.mark.parametrize("kind", ["checkpoint.pth", "model.pth"])
def test_fuzzed_checkpoints_load_or_raise_user_error(kind, tmp_path):
    valid = str(tmp_path / "valid.pth")
    if kind == "checkpoint.pth":
        ck.save_checkpoint(valid, model=_state(0), optimizer=_state(1), epoch=3,
                           metrics=[{"epoch": e, "train_loss": 2.0, "test_acc": 0.1} for e in (1, 2, 3)],
                           config={"backend": "scratch", "dataset": "synthetic", "lr": 0.001, "seed": 0,
                                   "normalize_stats": [[0.5] * 3, [0.25] * 3]})
    else:
        ck.save_state_dict(valid, _state(0))
    _check_checkpoint(ck.load_checkpoint(valid))
    path = str(tmp_path / kind)
    out = _fuzz(open(valid, "rb").read(), path, lambda: ck.load_checkpoint(path), _check_checkpoint,
                seed=1 if kind == "checkpoint.pth" else 2)
    assert out["UserError"] >= N_RANDOM + N_TRUNCATE      # random and truncated files never load


@pytest.mark.parametrize("layout", ["python", "binary"])
def test_fuzzed_cifar_batches_load_or_raise_user_error(layout, tmp_path):
    arrays = fake_cifar_arrays(per_batch=6, seed=3)
    if layout == "python":
        folder = write_cifar_python(str(tmp_path), arrays)
        victim = os.path.join(folder, "test_batch")
    else:
        folder = write_cifar_binary(str(tmp_path), arrays)
        victim = os.path.join(folder, "test_batch.bin")
    _check_cifar(data.load_cifar10(str(tmp_path)))
    raw = open(victim, "rb").read()
    out = _fuzz(raw, victim, lambda: data.load_cifar10(str(tmp_path)), _check_cifar,
                seed=3 if layout == "python" else 4)
    assert out["UserError"] >= N_RANDOM                   # random bytes are not a batch


def test_fuzzed_checkpoint_fields_load_or_raise_user_error(tmp_path):
    """Well-formed files whose fields hold the wrong things (what a byte flip rarely reaches):
    each top-level field, config entry and tensor replaced by a random odd value."""
    import torch
    rng = np.random.default_rng(5)
    odd = [None, "x", -1, 1.5, True, [1], {"a": 1}, {}, float("nan"), torch.zeros(2),
           torch.zeros(3, dtype=torch.int64), torch.full((2, 3), float("inf")), [[0.5] * 3, [0.0] * 3],
           {"conv1.weight": torch.zeros(2)}, [{"epoch": 1}], 2 ** 70]
    sd = {k: torch.from_numpy(v) for k, v in _state(0).items()}
    base = {"format": ck.FORMAT, "version": ck.VERSION, "model": sd, "optimizer": dict(sd), "epoch": 1,
            "metrics": [{"epoch": 1}], "config": {"backend": "torch", "dataset": "synthetic", "lr": 0.001,
                                                 "seed": 0, "epochs": 2, "batch_size": 32, "train_size": 0,
                                                 "normalize_stats": [[0.5] * 3, [0.25] * 3]}}
    places = ["format", "version", "model", "optimizer", "epoch", "metrics", "config"] + \
             [f"config.{k}" for k in base["config"]] + [f"model.{k}" for k in ("conv1.weight", "fc4.bias")] + \
             ["optimizer.fc3.bias"]
    path = str(tmp_path / "checkpoint.pth")
    outcomes = {"loaded": 0, "UserError": 0}
    for _ in range(30):
        where, value = places[int(rng.integers(len(places)))], odd[int(rng.integers(len(odd)))]
        obj = {**base, "model": dict(sd), "optimizer": dict(sd), "config": dict(base["config"])}
        outer, _, inner = where.partition(".")
        if inner:
            obj[outer][inner] = value
        else:
            obj[outer] = value
        torch.save(obj, path)
        try:
            got = ck.load_checkpoint(path)
        except UserError:
            outcomes["UserError"] += 1
            continue
        except Exception as e:
            pytest.fail(f"{where} = {value!r}: {type(e).__name__} escaped instead of UserError: {e}")
        _check_checkpoint(got)
        outcomes["loaded"] += 1
    assert outcomes["UserError"] >= 10
