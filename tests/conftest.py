"""Shared fixtures and helpers: small CIFAR-10 copies written in both official on-disk formats,
and ``one_error_line`` (run the CLI, expect exactly one ``error: ...`` line and exit 2).

The real archive cannot be downloaded in CI; these files have the exact layout
of the official "python version" (pickled dicts, one per batch) and "binary
version" (3073-byte records: label, then 1024 R, 1024 G, 1024 B bytes).
"""
import os
import pickle

import numpy as np
import pytest

TRAIN_NAMES = [f"data_batch_{i}" for i in range(1, 6)]


def fake_cifar_arrays(per_batch=8, seed=0):
    """{batch name: (uint8 (n, 3072), labels (n,))} for the five train batches and test_batch."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in TRAIN_NAMES + ["test_batch"]:
        out[name] = (rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                     rng.integers(0, 10, per_batch).astype(np.int64))
    return out


def write_cifar_python(root, arrays):
    """The official python layout: root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for name, (x, y) in arrays.items():
        d = {b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": x,
             b"filenames": [f"{name}_{i}.png".encode() for i in range(len(y))]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(d, f, protocol=2)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                                      b"dog", b"frog", b"horse", b"ship", b"truck"]}, f, protocol=2)
    return folder


def write_cifar_binary(root, arrays):
    """The official binary layout: root/cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin}."""
    folder = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(folder, exist_ok=True)
    for name, (x, y) in arrays.items():
        rec = np.concatenate([y.astype(np.uint8)[:, None], x], axis=1)
        rec.tofile(os.path.join(folder, name + ".bin"))
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
        f.write("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")
    return folder


@pytest.fixture
def cifar_arrays():
    return fake_cifar_arrays()


@pytest.fixture
def cifar_python_dir(tmp_path, cifar_arrays):
    write_cifar_python(tmp_path, cifar_arrays)
    return str(tmp_path)


@pytest.fixture
def cifar_binary_dir(tmp_path, cifar_arrays):
    write_cifar_binary(tmp_path, cifar_arrays)
    return str(tmp_path)


@pytest.fixture(scope="module")
def one_thread_per_pool():
    """torch's OpenMP threads and NumPy's OpenBLAS threads spin-wait against each
    other when one process uses both on 2 cores (a training step ran 10-20x
    slower); parity needs no parallelism, so each library gets one thread.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread_per_pool")``."""
    import torch
    from threadpoolctl import threadpool_limits

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(torch_threads)


def one_error_line(capsys, args):
    """Run the CLI; assert exit 2 and exactly one ``error: `` line on stderr, no traceback; return it."""
    from scratchcnn.cli import main
    capsys.readouterr()
    try:
        rc = main(args)
    except SystemExit as e:          # argparse rejects the argument before anything runs
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """runs/NAME/checkpoint.pth of a seeded, untrained scratch model, recorded as trained on the
    first 20 / 10 images of the synthetic dataset (for the study and saliency commands)."""
    from scratchcnn.checkpoint import save_checkpoint
    from scratchcnn.data import SYNTHETIC_CLASSES
    from scratchcnn.model import CIFAR10Model
    config = {"dataset": "synthetic", "seed": 0, "train_size": 20, "test_size": 10,
              "normalize_stats": None, "classes": list(SYNTHETIC_CLASSES)}
    path = str(tmp_path_factory.mktemp("run") / "checkpoint.pth")
    save_checkpoint(path, model=CIFAR10Model(rng=3).state_dict(), optimizer={}, epoch=1,
                    metrics=[], config=config)
    return path
