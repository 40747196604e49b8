"""Datasets and the one batch iterator both backends read from.

Images are kept as uint8 arrays in NCHW layout, ``(N, 3, 32, 32)``; labels as
int64 ``(N,)``. :func:`iterate_batches` turns them into float32 batches scaled
to [0, 1] (the tutorial's ``ToTensor``), in an order that depends only on
``(seed, epoch)``, so both backends see the same batches in the same order and
an interrupted run can resume exactly.

Three sources:

* ``cifar10``: the official CIFAR-10 archive, either downloaded (MD5-checked)
  or read from an already extracted copy in the official "python version"
  (``cifar-10-batches-py/``) or "binary version" (``cifar-10-batches-bin/``)
  layout. The python batches are pickles; they are read with a restricted
  unpickler that can build NumPy arrays and nothing else.
* ``synthetic``: ten procedurally drawn textures (stripes at four angles,
  checkerboard, diamonds, concentric rings, dots, grid, zigzag) at random
  scale, phase and colours, with pixel noise. Deterministic from a seed, made
  in seconds, works offline. Every texture covers about half of its image with
  a bright foreground, so the mean colour says nothing about the class (a
  nearest-mean classifier on it scores about 10%): the network has to find
  the local structure with its convolutions.
* ``folder``: your own images in torchvision's ``ImageFolder`` layout,
  ``DIR/train/<class>/*`` and ``DIR/test/<class>/*``, resized to 32x32 and
  cached beside them (``scratchcnn.folder``).
"""
import hashlib
import http.client
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass

import numpy as np

from scratchcnn.augment import augment_batch
from scratchcnn.errors import UserError
from scratchcnn.folder import decode_image, read_image_folder

DATASETS = ("synthetic", "cifar10", "folder")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
SYNTHETIC_CLASSES = ("horizontal", "vertical", "diagonal", "antidiagonal", "checker",
                     "diamonds", "rings", "dots", "grid", "zigzag")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_PY_DIR, _BIN_DIR = "cifar-10-batches-py", "cifar-10-batches-bin"
_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
_TEST_BATCHES = ["test_batch"]
_BIN_RECORD = 1 + 3 * 32 * 32          # label byte + 3072 pixel bytes

# (train, test) images of each built-in dataset; a size option may ask for fewer, never more.
SPLIT_SIZES = {"synthetic": (20000, 2000), "cifar10": (50000, 10000)}


@dataclass
class Dataset:
    """Images ``x`` (N, 3, 32, 32) uint8 and labels ``y`` (N,) int64."""
    x: np.ndarray
    y: np.ndarray
    classes: tuple
    name: str

    def __len__(self):
        return len(self.y)

    def subset(self, n):
        """The first ``n`` examples (for quick runs and tests)."""
        return Dataset(self.x[:n], self.y[:n], self.classes, self.name)


# ----------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------

def to_float(x_uint8, normalize=None):
    """uint8 pixels -> float32 in [0, 1] (``ToTensor``); optionally ``(x - mean) / std``
    per channel, with ``normalize = (mean[3], std[3])``."""
    x = x_uint8.astype(np.float32) * np.float32(1.0 / 255.0)
    if normalize is not None:
        mean, std = (np.asarray(v, np.float32).reshape(1, 3, 1, 1) for v in normalize)
        x = (x - mean) / std
    return x


def epoch_order(n, seed, epoch):
    """The shuffled order of ``n`` examples for one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def iterate_batches(data, batch_size, *, shuffle=False, seed=0, epoch=0, normalize=None,
                    augment=False):
    """Yield ``(x, y)`` batches: x float32 (B, 3, 32, 32), y int64 (B,).

    The last batch is smaller when ``batch_size`` does not divide the dataset
    (like ``DataLoader(drop_last=False)``). ``augment=True`` applies
    ``scratchcnn.augment.augment_batch`` (random crop and flip, drawn from
    (seed, epoch, batch index)) to the uint8 images before scaling.
    """
    n = len(data)
    order = epoch_order(n, seed, epoch) if shuffle else np.arange(n)
    for b, start in enumerate(range(0, n, batch_size)):
        idx = order[start:start + batch_size]
        x = data.x[idx]
        if augment:
            x = augment_batch(x, seed, epoch, b)
        yield to_float(x, normalize), data.y[idx]


def num_batches(n, batch_size):
    return (n + batch_size - 1) // batch_size


# ----------------------------------------------------------------------------
# CIFAR-10 on disk
# ----------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays; refuses every other global.

    The official python-format batches are Python 2 pickles of a dict holding
    a uint8 array and a list of labels. Nothing in them needs more than these
    names, and refusing the rest means a crafted file cannot run code.
    """
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),        # how protocol-2 pickles store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_python_batch(path):
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as e:
        raise UserError(f"{path} is not a readable CIFAR-10 python batch ({e}); "
                        f"re-extract the official archive into --data-dir") from e
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a CIFAR-10 python batch (expected a dict, "
                        f"got {type(d).__name__}); re-extract the official archive")
    d = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    x, y = d.get("data"), d.get("labels")
    if isinstance(y, list) and all(type(v) is int and abs(v) < 2**62 for v in y):
        y = np.array(y, dtype=np.int64) if y else np.zeros(0, np.int64)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 \
            or not isinstance(y, np.ndarray) or y.shape != (len(x),):
        raise UserError(f"{path} is not a CIFAR-10 python batch (needs 'data' uint8 (N, 3072) "
                        f"and N integer 'labels'); re-extract the official archive into --data-dir")
    return x.reshape(-1, 3, 32, 32), _check_labels(y, path)


def _read_binary_batch(path):
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}); check its permissions") from e
    if raw.size == 0 or raw.size % _BIN_RECORD:
        raise UserError(f"{path} has {raw.size} bytes, not a whole number of {_BIN_RECORD}-byte "
                        f"CIFAR-10 records (truncated?); re-extract the official archive")
    rec = raw.reshape(-1, _BIN_RECORD)
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), _check_labels(rec[:, 0], path)


def _check_labels(y, path):
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() > 9)):
        raise UserError(f"{path} has labels outside 0..9; it is not a CIFAR-10 batch")
    return y.astype(np.int64)


def find_cifar10(data_dir):
    """Return ``("python" | "binary", folder)`` for an extracted copy under ``data_dir``, or None."""
    for fmt, sub, probe in (("python", _PY_DIR, "data_batch_1"), ("binary", _BIN_DIR, "data_batch_1.bin")):
        for folder in (os.path.join(data_dir, sub), data_dir):
            if os.path.isfile(os.path.join(folder, probe)):
                return fmt, folder
    return None


def _load_split(fmt, folder, names):
    xs, ys = [], []
    for name in names:
        path = os.path.join(folder, name + (".bin" if fmt == "binary" else ""))
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing: the CIFAR-10 copy in {folder} is incomplete; "
                            f"re-extract the official archive into --data-dir")
        x, y = (_read_binary_batch if fmt == "binary" else _read_python_batch)(path)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar10(data_dir="data", download=False):
    """``(train, test)`` Datasets from an extracted CIFAR-10 under ``data_dir``.

    With ``download=True`` and nothing on disk, fetch and verify the official
    archive first.
    """
    found = find_cifar10(data_dir)
    if found is None and download:
        download_cifar10(data_dir)
        found = find_cifar10(data_dir)
    if found is None and all(os.path.isdir(os.path.join(data_dir, s)) for s in ("train", "test")):
        raise UserError(f"no CIFAR-10 batches in --data-dir {data_dir!r}, but it has train/ and "
                        f"test/ folders: for images in class folders, pass --dataset folder")
    if found is None:
        raise UserError(f"no CIFAR-10 found in --data-dir {data_dir!r} (expected {_PY_DIR}/ or "
                        f"{_BIN_DIR}/); pass --download to fetch it, point --data-dir at an "
                        f"extracted copy, or use the built-in --dataset synthetic")
    fmt, folder = found
    train = Dataset(*_load_split(fmt, folder, _TRAIN_BATCHES), CIFAR10_CLASSES, "cifar10")
    test = Dataset(*_load_split(fmt, folder, _TEST_BATCHES), CIFAR10_CLASSES, "cifar10")
    return train, test


def md5sum(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_cifar10(data_dir, url=CIFAR10_URL, md5=CIFAR10_MD5):
    """Download the archive into ``data_dir``, verify its MD5, extract it safely.

    An archive whose checksum does not match is deleted and reported, never used.
    """
    from tqdm import tqdm

    os.makedirs(data_dir, exist_ok=True)
    archive = os.path.join(data_dir, os.path.basename(url))
    if not (os.path.isfile(archive) and md5sum(archive) == md5):
        partial = archive + ".part"
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(partial, "wb") as f, \
                    tqdm(total=int(r.headers.get("Content-Length") or 0) or None, unit="B",
                         unit_scale=True, desc="downloading CIFAR-10") as bar:
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    bar.update(len(block))
                total, got = bar.total, bar.n
        except (OSError, http.client.HTTPException) as e:     # IncompleteRead: cut off mid-way
            _remove(partial)
            raise UserError(f"could not download {url} ({e}); download it by hand into "
                            f"--data-dir {data_dir!r}, or use the built-in --dataset synthetic") from e
        if total is not None and got != total:
            _remove(partial)
            raise UserError(f"the download of {url} was cut off after {got} of {total} bytes; "
                            f"it was deleted. Try again, or download it by hand into --data-dir")
        got = md5sum(partial)
        if got != md5:
            _remove(partial)
            raise UserError(f"downloaded archive from {url} has MD5 {got}, expected {md5}; "
                            f"it was deleted. Try again, or download it by hand into --data-dir")
        os.replace(partial, archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(data_dir, filter="data")    # no absolute paths, links out, devices
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"could not extract {archive} ({e}); delete it and download again") from e


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# ----------------------------------------------------------------------------
# The built-in synthetic dataset
# ----------------------------------------------------------------------------

def _class_mask(k, yy, xx, cy, cx, period, phase):
    """Foreground (bool) of texture class ``k``; arrays broadcast to (n, H, W).

    Every class covers the whole image, so it can be recognised anywhere by local
    features (what convolutions learn), and covers about the same fraction of it.
    """
    def wave(u):                                       # stripes of period ``period``
        return np.sin(2 * np.pi * u / period + phase) > 0
    d = np.float32(np.sqrt(0.5))
    if k == 0:
        return wave(yy + 0 * cx)                                         # horizontal stripes
    if k == 1:
        return wave(xx + 0 * cy)                                         # vertical stripes
    if k == 2:
        return wave((xx + yy) * d + 0 * cx)                              # diagonal stripes
    if k == 3:
        return wave((xx - yy) * d + 0 * cx)                              # anti-diagonal stripes
    if k == 4:
        return wave(xx + 0 * cy) ^ wave(yy + 0 * cx)                     # checkerboard
    if k == 5:
        return wave((xx + yy) * d + 0 * cx) ^ wave((xx - yy) * d + 0 * cx)   # diamonds
    if k == 6:
        return np.hypot(yy - cy, xx - cx) % period < period / 2          # concentric rings
    if k == 7:
        u, v = (xx - cx) % period - period / 2, (yy - cy) % period - period / 2
        return u * u + v * v < (0.4 * period) ** 2                       # dots on a lattice
    if k == 8:
        u, v = (xx - cx) % period, (yy - cy) % period
        return (u < 0.29 * period) | (v < 0.29 * period)                 # grid lines
    return wave(yy + np.abs((xx - cx) % period - period / 2) * 1.2)      # zigzag


def _pattern_masks(labels, rng, size=32):
    """Foreground coverage (0 or 1), (N, size, size), for each image's class."""
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0, size, (2, n, 1, 1)).astype(np.float32)       # pattern origin
    period = rng.uniform(5.0, 9.0, (n, 1, 1)).astype(np.float32)         # pattern scale
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    masks = np.empty((n, size, size), np.float32)
    for k in range(10):
        sel = labels == k
        masks[sel] = _class_mask(k, yy, xx, cy[sel], cx[sel], period[sel], phase[sel])
    return masks


def make_synthetic(n, seed=0, size=32):
    """``n`` images of the ten synthetic classes, balanced (n // 10 each, the rest spread),
    in a shuffled order. Deterministic in ``(n, seed)``."""
    rng = np.random.default_rng([seed, 2024])
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    m = _pattern_masks(labels, rng, size)[:, None]                       # (N, 1, H, W)
    # Random colours, foreground always brighter than background: about half of
    # every image is foreground, so the mean colour says nothing about the class.
    fg = rng.uniform(0.7, 1.0, (n, 3, 1, 1)).astype(np.float32)
    bg = rng.uniform(0.0, 0.3, (n, 3, 1, 1)).astype(np.float32)
    img = m * fg + (1 - m) * bg + rng.normal(0, 0.03, (n, 3, size, size)).astype(np.float32)
    x = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return Dataset(x, labels, SYNTHETIC_CLASSES, "synthetic")


def load_synthetic(n_train=SPLIT_SIZES["synthetic"][0], n_test=SPLIT_SIZES["synthetic"][1], seed=0):
    """``(train, test)``: independent draws (different seeds) of the synthetic classes."""
    return make_synthetic(n_train, seed=2 * seed), make_synthetic(n_test, seed=2 * seed + 1)


def load_folder(data_dir):
    """``(train, test)`` Datasets from your own images (``scratchcnn.folder``); classes are
    the folder names."""
    classes, splits = read_image_folder(data_dir)
    return tuple(Dataset(*splits[s], classes, "folder") for s in ("train", "test"))


def check_sizes(name, n_train=None, n_test=None, batch_size=None):
    """Raise a one-line UserError unless every requested count fits ``name``'s splits.

    Called before anything is loaded or generated, so ``--test-size 999999`` fails at
    once instead of generating (and allocating) what was asked for. None or 0: the whole split.
    """
    if name not in SPLIT_SIZES:
        return
    full_train, full_test = SPLIT_SIZES[name]
    for flag, n, full, split in (("--train-size", n_train, full_train, "training"),
                                 ("--test-size", n_test, full_test, "test")):
        if n and n > full:
            raise UserError(f"{flag} {n} is more than the {full} images of {name}'s {split} split; "
                            f"use at most {full} (or leave it out for all of them)")
    if batch_size and batch_size > (n_train or full_train):
        raise UserError(f"--batch-size {batch_size} is larger than the training set "
                        f"({n_train or full_train} images); use a smaller --batch-size")


def load_dataset(name, data_dir="data", download=False, seed=0, n_train=None, n_test=None):
    """``(train, test)`` for ``name`` in DATASETS; optionally cut to n_train/n_test."""
    check_sizes(name, n_train, n_test)
    if name == "synthetic":
        return load_synthetic(n_train or SPLIT_SIZES["synthetic"][0],
                              n_test or SPLIT_SIZES["synthetic"][1], seed=seed)
    if name == "cifar10":
        train, test = load_cifar10(data_dir, download=download)
    elif name == "folder":              # its sizes are known only once it is scanned
        train, test = load_folder(data_dir)
        for flag, n, split, which in (("--train-size", n_train, train, "train"),
                                      ("--test-size", n_test, test, "test")):
            if n and n > len(split):
                raise UserError(f"{flag} {n} is more than the {len(split)} images in "
                                f"{os.path.join(data_dir, which)}; use at most {len(split)} "
                                f"(or leave it out for all of them)")
    else:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if n_train:
        train = train.subset(n_train)
    if n_test:
        test = test.subset(n_test)
    return train, test


def load_image(path):
    """A user's image file as uint8 (1, 3, 32, 32): RGB, centre-cropped and resized exactly as
    the images of a folder dataset are (``scratchcnn.folder.decode_image``)."""
    if not os.path.isfile(path):
        raise UserError(f"image {path!r} does not exist; check --image")
    return decode_image(path, fix="pass a PNG or JPEG to --image")[None]
