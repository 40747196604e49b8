"""Reliability: bad input gives one clear line, interruptions lose nothing, untrusted files run nothing.

Every user-facing failure is a ``UserError``: the CLI prints exactly one
``error: ...`` line on stderr and exits 2 (``--debug`` raises it instead).
Training can be killed at any moment and resumed to the same weights as a
run that never stopped; a diverging run stops and keeps its last good
checkpoint; checkpoints and CIFAR batches that carry code are refused unrun.
"""
import glob
import io
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
import torch

from conftest import fake_cifar_arrays, one_error_line, write_cifar_binary, write_cifar_python
import scratchcnn
from scratchcnn.architecture import tutorial

PARAM_SHAPES = tutorial().param_shapes()
from scratchcnn.atomic import atomic_write, remove_stale_temp_files
from scratchcnn import checkpoint as ck
from scratchcnn import data
from scratchcnn.cli import main
from scratchcnn.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "synthetic", "--train-size", "128", "--test-size", "32", "--no-progress"]


# ----------------------------------------------------------------------------
# Files for the bad-input cases, made once
# ----------------------------------------------------------------------------

class Evil:
    """Unpickling this would run a shell command that leaves a marker file."""
    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-0.1, 0.1, s).astype(np.float32) for k, s in PARAM_SHAPES.items()}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """{name: path} of damaged data folders, checkpoints and images."""
    root = tmp_path_factory.mktemp("bad")
    Evil.marker = str(root / "MARKER")
    p = {"root": str(root), "marker": Evil.marker}
    os.makedirs(root / "empty")
    p["empty"] = str(root / "empty")

    def cifar(name, layout, victim, content):
        folder = str(root / name)
        (write_cifar_python if layout == "py" else write_cifar_binary)(folder, fake_cifar_arrays(4))
        sub = "cifar-10-batches-py" if layout == "py" else "cifar-10-batches-bin"
        path = os.path.join(folder, sub, victim)
        raw = open(path, "rb").read()
        if content is None:
            os.remove(path)
        else:
            open(path, "wb").write(content(raw) if callable(content) else content)
        p[name] = folder

    cifar("py_random", "py", "data_batch_2", np.random.default_rng(0).bytes(4000))
    cifar("py_truncated", "py", "data_batch_2", lambda raw: raw[:len(raw) // 2])
    cifar("py_not_a_dict", "py", "data_batch_2", pickle.dumps([1, 2, 3], protocol=2))
    cifar("py_text_labels", "py", "test_batch", lambda raw: pickle.dumps(
        {b"data": np.zeros((4, 3072), np.uint8), b"labels": ["cat"] * 4}, protocol=2))
    cifar("py_binary_inside", "py", "data_batch_1", bytes(3073 * 4))
    cifar("py_evil", "py", "data_batch_1", pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    cifar("bin_truncated", "bin", "data_batch_2.bin", lambda raw: raw[:3073 * 3 - 100])
    cifar("bin_bad_label", "bin", "test_batch.bin", lambda raw: b"\xc8" + raw[1:])
    cifar("bin_missing", "bin", "data_batch_3.bin", None)

    good = str(root / "good.pth")
    ck.save_checkpoint(good, model=_state(), optimizer=_state(1), epoch=1, metrics=[{"epoch": 1}],
                       config={"backend": "torch", "dataset": "synthetic", "seed": 0})
    p["good"] = good
    raw = open(good, "rb").read()
    (root / "truncated.pth").write_bytes(raw[:len(raw) // 2])
    (root / "empty.pth").write_bytes(b"")
    (root / "text.pth").write_text("this is not a checkpoint\n")
    other = _state()
    other["fc3.weight"] = np.zeros((256, 8192), np.float32)
    del other["conv2.bias"]
    other["fc5.weight"] = np.zeros((2, 2), np.float32)
    ck.save_state_dict(str(root / "other.pth"), other)
    torch.save({k: torch.from_numpy(v).long() for k, v in _state().items()}, root / "ints.pth")
    torch.save({k: torch.from_numpy(v) * float("nan") for k, v in _state().items()}, root / "nan.pth")
    full = torch.load(good, weights_only=True)
    torch.save({**full, "epoch": "one"}, root / "damaged.pth")
    (root / "evil_raw2.pth").write_bytes(pickle.dumps({"model": Evil()}, protocol=2))
    (root / "evil_raw4.pth").write_bytes(pickle.dumps({"model": Evil()}, protocol=4))
    torch.save({"model": Evil()}, root / "evil_zip.pth")
    torch.save({**full, "model": {**full["model"], "fc4.bias": Evil()}}, root / "evil_inside.pth")
    os.makedirs(root / "bad_optimizer")
    torch.save({**full, "optimizer": {"conv1.weight": torch.zeros(2)}},
               root / "bad_optimizer" / "checkpoint.pth")
    for name in ("truncated", "empty", "text", "other", "ints", "nan", "damaged",
                 "evil_raw2", "evil_raw4", "evil_zip", "evil_inside"):
        p[name + "_pth"] = str(root / f"{name}.pth")
    p["bad_optimizer"] = str(root / "bad_optimizer")
    (root / "notes.png").write_text("not an image")
    p["notes_png"] = str(root / "notes.png")
    (root / "afile").write_text("")
    p["afile"] = str(root / "afile")
    return p


# (id, argv with {name} placeholders for the fixture's paths, part of the message)
DATA = ["train", "--backend", "torch", "--dataset", "cifar10", "--batch-size", "4", "--epochs", "1",
        "--no-progress", "--out", "{root}/run", "--data-dir"]
EVAL = ["evaluate", "--backend", "torch", "--dataset", "synthetic", "--test-size", "8", "--checkpoint"]
TRAIN = ["train", "--backend", "torch", "--out", "{root}/run"] + TINY
CASES = [
    ("data-dir missing", DATA + ["{root}/nowhere"], "no CIFAR-10 found in --data-dir"),
    ("data-dir empty", DATA + ["{empty}"], "no CIFAR-10 found in --data-dir"),
    ("py random bytes", DATA + ["{py_random}"], "data_batch_2 is not a readable CIFAR-10 python batch"),
    ("py truncated", DATA + ["{py_truncated}"], "data_batch_2 is not a readable CIFAR-10 python batch"),
    ("py not a dict", DATA + ["{py_not_a_dict}"], "expected a dict, got list"),
    ("py text labels", DATA + ["{py_text_labels}"], "needs 'data' uint8 (N, 3072) and N integer 'labels'"),
    ("py holds binary", DATA + ["{py_binary_inside}"], "data_batch_1 is not a readable CIFAR-10 python"),
    ("bin truncated", DATA + ["{bin_truncated}"], "not a whole number of 3073-byte CIFAR-10 records"),
    ("bin bad label", DATA + ["{bin_bad_label}"], "test_batch.bin has labels outside 0..9"),
    ("bin incomplete", DATA + ["{bin_missing}"], "data_batch_3.bin is missing"),
    ("ckpt missing", EVAL + ["{root}/nope.pth"], "does not exist"),
    ("ckpt is a folder", EVAL + ["{root}"], "is a folder; pass the file inside it"),
    ("ckpt truncated", EVAL + ["{truncated_pth}"], "is not a readable checkpoint (RuntimeError: "
                                                   "PytorchStreamReader failed reading zip archive"),
    ("ckpt empty", EVAL + ["{empty_pth}"], "is empty"),
    ("ckpt text", EVAL + ["{text_pth}"], "it may be truncated or not a .pth file"),
    ("ckpt other arch", EVAL + ["{other_pth}"],
     "does not fit the tutorial network: missing conv2.bias; unexpected fc5.weight; "
     "fc3.weight has shape (256, 8192), expected (512, 8192); it holds conv1.weight (32, 3, 3, 3)"),
    ("ckpt int weights", EVAL + ["{ints_pth}"], "conv1.weight (torch.int64)"),
    ("ckpt nan weights", EVAL + ["{nan_pth}"], "holds NaN or infinite weights"),
    ("ckpt damaged epoch", EVAL + ["{damaged_pth}"], "is a damaged scratchcnn checkpoint"),
    ("resume bad optimizer", ["train", "--resume", "{bad_optimizer}"],
     "its optimizer state for conv1.weight does not match"),
    ("resume missing", ["train", "--resume", "{root}/nope"], "checkpoint.pth' does not exist"),
    ("scratch on cuda", TRAIN + ["--backend", "scratch", "--device", "cuda"],
     "the scratch backend runs on the CPU only"),
    ("unknown device", TRAIN + ["--device", "tpu"], "unknown device 'tpu'; use cpu or cuda"),
    ("lr negative", TRAIN + ["--lr", "-1"], "--lr must be a positive number (got -1.0)"),
    ("lr zero", TRAIN + ["--lr", "0"], "--lr must be a positive number"),
    ("lr nan", TRAIN + ["--lr", "nan"], "--lr must be a positive number (got nan)"),
    ("lr inf", TRAIN + ["--lr", "inf"], "--lr must be a positive number (got inf)"),
    ("momentum 1.5", TRAIN + ["--momentum", "1.5"], "--momentum must be in [0, 1) (got 1.5)"),
    ("momentum negative", TRAIN + ["--momentum", "-0.1"], "--momentum must be in [0, 1)"),
    ("momentum nan", TRAIN + ["--momentum", "nan"], "--momentum must be in [0, 1) (got nan)"),
    ("batch > dataset", TRAIN + ["--batch-size", "129"], "--batch-size 129 is larger than the training set"),
    ("train-size negative", TRAIN + ["--train-size", "-5"], "--train-size must be a number of images"),
    ("test-size negative", TRAIN + ["--test-size", "-1"], "--test-size must be a number of images"),
    ("seed negative", TRAIN + ["--seed", "-1"], "--seed must be 0 or more (got -1)"),
    ("weight decay negative", TRAIN + ["--weight-decay", "-1"],
     "--weight-decay must be 0 or a positive number (got -1.0)"),
    ("weight decay nan", TRAIN + ["--weight-decay", "nan"], "--weight-decay must be 0 or a positive number"),
    ("warmup factor 0", TRAIN + ["--warmup-factor", "0"], "--warmup-factor must be in (0, 1] (got 0.0)"),
    ("lr gamma 2", TRAIN + ["--lr-schedule", "step", "--lr-gamma", "2"], "--lr-gamma must be in (0, 1] (got 2.0)"),
    ("lr-min above lr", TRAIN + ["--lr-schedule", "cosine", "--lr-min", "0.5"],
     "--lr-min must be in [0, --lr) (got 0.5)"),
    ("out is a file", ["train", "--backend", "torch", "--out", "{afile}"] + TINY, "cannot create the run folder"),
    ("image not an image", ["featuremaps", "--backend", "torch", "--checkpoint", "{good}",
                            "--image", "{notes_png}", "--out", "{root}/maps"], "is not an image"),
]
PARSER_CASES = [   # rejected by argparse: one line too, before anything runs (no --debug traceback)
    (["train", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["train", "--epochs", "-2"], "argument --epochs: must be at least 1, got -2"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
    (["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["evaluate", "--checkpoint", "x.pth", "--test-size", "-1"], "argument --test-size: must be 0 or more"),
    (["train", "--backend", "jax"], "argument --backend: invalid choice: 'jax'"),
    (["train", "--lr-schedule", "linear"], "argument --lr-schedule: invalid choice: 'linear'"),
    (["train", "--warmup-epochs", "-1"], "argument --warmup-epochs: must be 0 or more, got -1"),
    (["train", "--recipe", "fast"], "argument --recipe: invalid choice: 'fast'"),
]


def _fill(args, paths):
    return [a.format(**paths) for a in args]


@pytest.mark.parametrize("args,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_exit_2_and_debug_raises(args, match, bad, capsys):
    args = _fill(args, bad)
    line = one_error_line(capsys, args)
    assert match in line, line
    with pytest.raises(UserError):
        main(["--debug"] + args)
    assert not os.path.exists(bad["marker"])


def test_resume_refuses_changed_settings_that_would_change_the_result(tmp_path, capsys):
    """--train-size was silently ignored on --resume; now it is named (like --lr)."""
    out = str(tmp_path / "run")
    ck.save_checkpoint(os.path.join(out, "checkpoint.pth"), model=_state(), optimizer={}, epoch=1,
                       metrics=[], config={"backend": "torch", "dataset": "synthetic", "train_size": 128})
    line = one_error_line(capsys, ["train", "--resume", out, "--train-size", "64", "--lr", "0.1"])
    assert line == "error: --resume continues the run as it was configured; drop --lr, --train-size"


def test_resume_refuses_changed_training_options(tmp_path, capsys):
    """Augmentation, weight decay and the schedule change the result; a cosine schedule spans
    --epochs, so its --epochs cannot change either (a step schedule's can)."""
    out = str(tmp_path / "run")
    config = {"backend": "torch", "dataset": "synthetic", "lr_schedule": "cosine", "epochs": 3}
    ck.save_checkpoint(os.path.join(out, "checkpoint.pth"), model=_state(), optimizer={}, epoch=1,
                       metrics=[], config=config)
    line = one_error_line(capsys, ["train", "--resume", out, "--augment", "--weight-decay", "0.1",
                                   "--lr-schedule", "step", "--warmup-epochs", "1", "--recipe", "improved"])
    assert line == ("error: --resume continues the run as it was configured; drop --recipe, "
                    "--augment, --weight-decay, --lr-schedule, --warmup-epochs")
    line = one_error_line(capsys, ["train", "--resume", out, "--epochs", "5"])
    assert line == ("error: --resume continues the run as it was configured; drop --epochs (its cosine "
                    "schedule spans the --epochs it was started with)")


@pytest.mark.parametrize("args,match", PARSER_CASES, ids=[" ".join(c[0][:3]) for c in PARSER_CASES])
def test_bad_arguments_are_one_error_line_too(args, match, capsys):
    line = one_error_line(capsys, args)
    assert match in line and line.endswith("--help'"), line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cuda_without_cuda(command, bad, capsys):
    args = (TRAIN if command == "train" else EVAL + ["{good}"]) + ["--device", "cuda"]
    line = one_error_line(capsys, _fill(args, bad))
    assert line == "error: --device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu"


@pytest.mark.parametrize("layer,x,match", [
    (scratchcnn.Conv2d(3, 8, 3), np.zeros((2, 4, 32, 32), np.float32),
     "Conv2d: expected float32 input of shape (N, 3, H, W), got float32 (2, 4, 32, 32)"),
    (scratchcnn.Conv2d(3, 8, 3), np.zeros((2, 3, 32, 32), np.float64),
     "Conv2d: expected float32 input of shape (N, 3, H, W), got float64 (2, 3, 32, 32)"),
    (scratchcnn.Conv2d(3, 8, 3), [[0.0]], "Conv2d: expected float32 input of shape (N, 3, H, W), got list"),
    (scratchcnn.Linear(8192, 512), np.zeros((2, 100), np.float32),
     "Linear: expected float32 input of shape (N, 8192), got float32 (2, 100)"),
    (scratchcnn.MaxPool2d(2), np.zeros((3, 32, 32), np.float32),
     "MaxPool2d: expected float32 or float64 input of shape (N, C, H, W), got float32 (3, 32, 32)"),
    (scratchcnn.CIFAR10Model(rng=0), np.zeros((1, 3, 32, 32), np.float64),
     "conv1 (Conv2d): expected float32 input of shape (N, 3, H, W), got float64 (1, 3, 32, 32)"),
    (scratchcnn.CIFAR10Model(rng=0), np.zeros((1, 3, 28, 28), np.float32),
     "Network: expected input of shape (N, 3, 32, 32), got (1, 3, 28, 28)"),
], ids=["conv-channels", "conv-dtype", "conv-list", "linear", "pool-ndim", "model-dtype", "model-size"])
def test_layers_name_themselves_and_the_expected_shape(layer, x, match):
    with pytest.raises(ValueError) as e:
        layer.forward(x)
    assert str(e.value) == match


def test_image_that_is_not_an_image(bad, tmp_path):
    with pytest.raises(UserError, match="is not an image Pillow can read"):
        data.load_image(bad["notes_png"])
    from PIL import Image
    png = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:40])
    with pytest.raises(UserError, match="is not an image"):
        data.load_image(str(tmp_path / "cut.png"))
    with pytest.raises(UserError, match="does not exist"):
        data.load_image(str(tmp_path / "nope.png"))


# ----------------------------------------------------------------------------
# Untrusted files run nothing
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["evil_raw2_pth", "evil_raw4_pth", "evil_zip_pth", "evil_inside_pth"])
def test_checkpoint_carrying_code_is_refused_and_nothing_runs(name, bad, capsys):
    with pytest.raises(UserError) as e:
        ck.load_checkpoint(bad[name])
    msg = str(e.value)
    assert "is not a plain weights file" in msg and "no code in it ran" in msg
    if name != "evil_raw4_pth":      # protocol 4 already fails at its FRAME opcode
        assert "posix.system" in msg
    line = one_error_line(capsys, EVAL + [bad[name]])
    assert "no code in it ran" in line
    assert not os.path.exists(bad["marker"])


def test_the_evil_pickle_would_run_if_loaded_unsafely(bad, tmp_path):
    """The control: without the safeguards the same bytes DO run the command."""
    Evil.marker = str(tmp_path / "ran")
    try:
        pickle.loads(pickle.dumps(Evil(), protocol=2))
    finally:
        Evil.marker = bad["marker"]
    assert os.path.exists(tmp_path / "ran")


def test_cifar_python_batch_carrying_code_is_refused(bad, capsys):
    line = one_error_line(capsys, _fill(DATA + ["{py_evil}"], bad))
    assert "refusing to load posix.system" in line
    assert not os.path.exists(bad["marker"])


def test_every_loader_of_files_is_a_safe_one():
    """No torch.load without weights_only=True, no np.load without allow_pickle=False,
    no pickle.load / Unpickler other than data.py's NumPy-only one, anywhere in the package."""
    for path in glob.glob(os.path.join(ROOT, "scratchcnn", "**", "*.py"), recursive=True):
        src = open(path).read()
        for call in re.findall(r"torch\.load\([^)]*\)", src):
            assert "weights_only=True" in call, (path, call)
        for call in re.findall(r"np\.load\([^)]*\)|numpy\.load\([^)]*\)", src):
            assert "allow_pickle=False" in call, (path, call)
        assert re.findall(r"pickle\.loads?\(", src) == [], path
        unpicklers = re.findall(r"(?<!class )\b(\w*Unpickler)\(", src)     # built on a file
        expected = ["_NumpyOnlyUnpickler"] if path.endswith(os.path.join("scratchcnn", "data.py")) else []
        assert unpicklers == expected, path


# ----------------------------------------------------------------------------
# Download integrity
# ----------------------------------------------------------------------------

def _archive(tmp_path, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(buf.getvalue())
    return path


def test_truncated_download_is_deleted_and_reported(tmp_path):
    full = _archive(tmp_path, [("cifar-10-batches-py/readme.html", os.urandom(50_000))])
    md5 = data.md5sum(str(full))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full.read_bytes()[:20_000])
    dest = tmp_path / "data"
    with pytest.raises(UserError, match=f"expected {md5}; it was deleted"):
        data.download_cifar10(str(dest), url=cut.as_uri(), md5=md5)
    assert os.listdir(dest) == []


def test_connection_cut_mid_download_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    """The server promises 100000 bytes and hangs up after 10: http.client.IncompleteRead."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    dest = tmp_path / "data"
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/cifar-10-python.tar.gz"
    with pytest.raises(UserError, match="was cut off after 10 of 100000 bytes; it was deleted"):
        data.download_cifar10(str(dest), url=url, md5="0" * 32)
    t.join(5)
    srv.close()
    assert os.listdir(dest) == []


def test_archive_with_path_traversal_is_refused(tmp_path):
    archive = _archive(tmp_path, [("cifar-10-batches-py/batches.meta", b"x"), ("../evil", b"pwned")])
    dest = tmp_path / "data"
    with pytest.raises(UserError, match="could not extract .*outside the destination"):
        data.download_cifar10(str(dest), url=archive.as_uri(), md5=data.md5sum(str(archive)))
    assert not (tmp_path / "evil").exists()


# ----------------------------------------------------------------------------
# Nothing lost: resume, kill -9, Ctrl-C
# ----------------------------------------------------------------------------

def _weights(path):
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


def _no_timings(metrics):
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_s", "eval_seconds")} for m in metrics]


@pytest.fixture(scope="module", params=["scratch", "torch"])
def resumed(request, tmp_path_factory):
    """Two runs of one config: 2 epochs straight, and 1 epoch then ``--resume`` to 2."""
    root = tmp_path_factory.mktemp(f"resume-{request.param}")
    base = ["train", "--backend", request.param] + TINY
    straight, resumed_, epoch1 = str(root / "straight"), str(root / "resumed"), str(root / "epoch1")
    assert main(base + ["--epochs", "2", "--out", straight]) == 0
    assert main(base + ["--epochs", "1", "--out", resumed_]) == 0
    shutil.copytree(resumed_, epoch1)
    assert main(["train", "--resume", resumed_, "--epochs", "2", "--no-progress"]) == 0
    return request.param, straight, resumed_, epoch1


def test_resume_ends_with_the_same_weights_momentum_and_metrics(resumed):
    """Bit for bit, on both backends: all randomness derives from (seed, epoch) and the
    checkpoint carries the momentum buffers, so nothing differs (torch CPU included)."""
    _, straight, again, _ = resumed
    a, b = _weights(os.path.join(straight, "model.pth")), _weights(os.path.join(again, "model.pth"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ca, cb = (ck.load_checkpoint(os.path.join(d, "checkpoint.pth")) for d in (straight, again))
    assert ca["epoch"] == cb["epoch"] == 2 and set(ca["optimizer"]) == set(PARAM_SHAPES)
    for k in ca["optimizer"]:
        np.testing.assert_array_equal(ca["optimizer"][k], cb["optimizer"][k], err_msg=k)
    assert _no_timings(ca["metrics"]) == _no_timings(cb["metrics"])
    assert [m["epoch"] for m in cb["metrics"]] == [1, 2]


class _Sabotaged:
    """A backend whose loss (or weights) turn NaN at a chosen epoch and step."""

    def __init__(self, inner, epoch, step=None):
        self.inner, self.at_epoch, self.at_step = inner, epoch, step
        self.epoch, self.step = 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def seed(self, s):
        self.epoch += 1
        self.step = 0
        self.inner.seed(s)

    def train_step(self, x, y):
        self.step += 1
        loss, right = self.inner.train_step(x, y)
        if self.epoch == self.at_epoch and self.step == self.at_step:
            loss = float("nan")
        return loss, right

    def state_dict(self):
        sd = self.inner.state_dict()
        if self.epoch == self.at_epoch and self.at_step is None:
            sd["fc3.weight"][0, 0] = np.inf
        return sd


@pytest.mark.parametrize("step", [3, None], ids=["nan-loss", "inf-weights"])
def test_divergence_stops_names_the_step_and_keeps_the_last_good_checkpoint(
        step, resumed, tmp_path, monkeypatch, capsys):
    import scratchcnn.train as train_mod
    backend, _, _, epoch1 = resumed
    real = train_mod.make_backend
    monkeypatch.setattr(train_mod, "make_backend", lambda *a, **k: _Sabotaged(real(*a, **k), 2, step))
    out = str(tmp_path / "run")
    line = one_error_line(capsys, ["train", "--backend", backend, "--epochs", "2", "--out", out] + TINY)
    if step:
        assert line.startswith("error: loss became nan at epoch 2, step 3; training stopped "
                               f"(the checkpoint of epoch 1 in {out}/checkpoint.pth is kept)")
    else:
        assert "weights (fc3.weight) became NaN or infinite in epoch 2" in line
    assert line.endswith("try a lower --lr than 0.001")
    kept = ck.load_checkpoint(os.path.join(out, "checkpoint.pth"))
    ref = ck.load_checkpoint(os.path.join(epoch1, "checkpoint.pth"))
    assert kept["epoch"] == 1
    for k in ref["model"]:
        np.testing.assert_array_equal(kept["model"][k], ref["model"][k])


def test_a_real_too_high_learning_rate_is_caught(tmp_path, capsys):
    out = str(tmp_path / "run")
    line = one_error_line(capsys, ["train", "--backend", "torch", "--lr", "1e4", "--epochs", "1",
                                   "--out", out] + TINY)
    assert re.match(r"error: loss became (nan|inf) at epoch 1, step \d+; training stopped "
                    r"\(no checkpoint was written\); try a lower --lr than 10000.0$", line), line
    assert not os.path.exists(os.path.join(out, "checkpoint.pth"))


def _config(backend, train_size):
    """Batches of 16, so an epoch has many steps and the progress bar shows one mid-epoch."""
    return ["--backend", backend, "--dataset", "synthetic", "--train-size", str(train_size),
            "--test-size", "32", "--batch-size", "16"]


def _start(out, config):
    """``python -m scratchcnn train`` for 2 epochs in a subprocess, progress bar on (stderr to a file)."""
    log = open(out + ".stderr", "w")
    args = [sys.executable, "-m", "scratchcnn", "train", *config, "--epochs", "2", "--out", out]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    return proc, out + ".stderr"


def _wait_for_epoch_2_progress(proc, stderr_path, timeout=240):
    """Block until the progress bar shows at least one finished batch of epoch 2."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        text = open(stderr_path).read()
        if re.search(r"epoch 2/2:\s+\d+%\|[^\r\n]*\| *[1-9]\d*/\d+", text):
            return
        assert proc.poll() is None, f"training ended early:\n{text}"
        time.sleep(0.05)
    proc.kill()
    pytest.fail("epoch 2 never started")


def _cli(*args):
    """``python -m scratchcnn ARGS`` in a subprocess (like the killed runs: same threads, same
    environment); asserts exit 0 and returns its stdout."""
    proc = subprocess.run([sys.executable, "-m", "scratchcnn", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _same_run(a, b):
    """Two run folders hold bit-identical weights and momentum buffers, and the same metrics."""
    wa, wb = _weights(os.path.join(a, "model.pth")), _weights(os.path.join(b, "model.pth"))
    diffs = {k: float(np.abs(wa[k] - wb[k]).max()) for k in wa}
    assert wa.keys() == wb.keys() and max(diffs.values()) == 0.0, diffs
    ca, cb = (ck.load_checkpoint(os.path.join(d, "checkpoint.pth")) for d in (a, b))
    assert ca["epoch"] == cb["epoch"] and set(ca["optimizer"]) == set(cb["optimizer"]) == set(PARAM_SHAPES)
    for k in ca["optimizer"]:
        np.testing.assert_array_equal(ca["optimizer"][k], cb["optimizer"][k], err_msg=k)
    assert _no_timings(ca["metrics"]) == _no_timings(cb["metrics"])


# The improved recipe: augmentation and the lr depend on the position in training, and weight
# decay and normalisation join the update; resume must land on all of it. One warm-up epoch, so
# the 2-epoch run reaches its cosine part.
POSITION_DEPENDENT = ["--recipe", "improved", "--warmup-epochs", "1", "--lr", "0.01"]


@pytest.mark.slow
@pytest.mark.parametrize("backend, options", [("scratch", []), ("torch", []), ("scratch", POSITION_DEPENDENT)],
                         ids=["scratch", "torch", "scratch-recipe-improved"])
def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_weights(backend, options, tmp_path):
    killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
    # epoch 2 must outlast the progress bar's 0.5 s refresh: the fused step takes ~10 ms
    config = _config(backend, 4096 if backend == "scratch" else 1024) + options
    proc, stderr_path = _start(killed, config)
    _wait_for_epoch_2_progress(proc, stderr_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert ck.load_checkpoint(os.path.join(killed, "checkpoint.pth"))["epoch"] == 1   # died in epoch 2
    _cli("train", "--resume", killed, "--no-progress")
    _cli("train", "--epochs", "2", "--out", straight, "--no-progress", *config)
    _same_run(straight, killed)
    assert [f for f in os.listdir(killed) if f.endswith(".tmp")] == []   # died outside a save


# Runs the CLI with os.replace patched: the second time checkpoint.pth is about to be renamed
# into place (the end of epoch 2), the process kills itself with SIGKILL, so the temporary
# file is fully written and fsynced but never renamed. No hook in the product's code.
KILL_IN_SAVE = """
import os, signal, sys
real_replace = os.replace
calls = []

def replace(src, dst):
    if os.path.basename(dst) == "checkpoint.pth":
        calls.append(dst)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

os.replace = replace
from scratchcnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["scratch", "torch"])
def test_kill_inside_the_checkpoint_write_keeps_the_previous_one_and_resume_cleans_up(backend, tmp_path):
    killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
    config = [*_config(backend, 256), "--epochs", "2", "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, "train", *config, "--out", killed],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = glob.glob(os.path.join(killed, "checkpoint.pth.*.tmp"))
    assert len(leftovers) == 1, os.listdir(killed)
    assert ck.load_checkpoint(leftovers[0])["epoch"] == 2        # complete, only the rename was missing
    assert ck.load_checkpoint(os.path.join(killed, "checkpoint.pth"))["epoch"] == 1   # the previous one loads
    other = os.path.join(killed, "notes.abcdefgh.tmp")            # not ours: left alone
    open(other, "w").close()
    out = _cli("train", "--resume", killed, "--no-progress")
    assert f"removed {leftovers[0]}, left by a save that was interrupted" in out
    assert sorted(f for f in os.listdir(killed) if f.endswith(".tmp")) == ["notes.abcdefgh.tmp"]
    _cli("train", *config, "--out", straight)
    _same_run(straight, killed)


def test_ctrl_c_inside_a_save_stays_a_ctrl_c_and_keeps_the_old_file(tmp_path):
    """Seen once: SIGINT inside torch.save made its zip writer fail on the way out
    ("unexpected pos ..."), a RuntimeError that hid the KeyboardInterrupt (exit 1, traceback)."""
    path = str(tmp_path / "checkpoint.pth")
    atomic_write(path, lambda f: f.write(b"old"))

    def interrupted_write(f):
        f.write(b"half of the new one")
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 43456 vs 43408")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted_write)
    assert open(path, "rb").read() == b"old" and os.listdir(tmp_path) == ["checkpoint.pth"]
    with pytest.raises(RuntimeError, match="disk"):                # other errors pass through unchanged
        atomic_write(path, lambda f: (_ for _ in ()).throw(RuntimeError("disk")))


def test_remove_stale_temp_files_takes_only_atomic_writes_leftovers(tmp_path):
    names = ["checkpoint.pth.k2j_9xqa.tmp", "model.pth.abcdefgh.tmp", "checkpoint.pth.short.tmp",
             "checkpoint.pth", "other.pth.abcdefgh.tmp", "checkpoint.pth.abcdefgh.tmp.bak"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(str(tmp_path), ["checkpoint.pth", "model.pth"])
    assert sorted(os.path.basename(p) for p in removed) == ["checkpoint.pth.k2j_9xqa.tmp", "model.pth.abcdefgh.tmp"]
    assert sorted(os.listdir(tmp_path)) == sorted(set(names) - {os.path.basename(p) for p in removed})
    assert remove_stale_temp_files(str(tmp_path / "missing"), ["checkpoint.pth"]) == []
    # and atomic_write's own temporary names have exactly that shape
    before = set(os.listdir(tmp_path))
    seen = []
    atomic_write(str(tmp_path / "model.pth"), lambda f: seen.extend(set(os.listdir(tmp_path)) - before))
    assert len(seen) == 1 and re.fullmatch(r"model\.pth\.[a-z0-9_]{8}\.tmp", seen[0]), seen


@pytest.mark.slow
def test_ctrl_c_exits_130_names_resume_and_keeps_the_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    proc, stderr_path = _start(out, _config("torch", 2048))      # so SIGINT lands mid-epoch
    _wait_for_epoch_2_progress(proc, stderr_path)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    err = open(stderr_path).read()
    assert proc.returncode == 130, err
    assert f"interrupted during epoch 2; epoch 1 is saved in {out}/checkpoint.pth. " \
           f"Continue with: scratchcnn train --resume {out}" in stdout
    assert err.rstrip().endswith("interrupted") and "Traceback" not in err
    assert ck.load_checkpoint(os.path.join(out, "checkpoint.pth"))["epoch"] == 1
