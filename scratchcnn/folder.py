"""Your own images: a folder in torchvision's ``ImageFolder`` layout, as 32x32 RGB arrays.

    DIR/train/<class>/*.png|jpg|...      class names are the folder names, sorted
    DIR/test/<class>/*                   the same class folders as train/

Class folders may hold sub-folders (searched recursively, like ``ImageFolder``).
Names starting with "." are skipped (``.DS_Store``, the cache folder); files
directly in ``train/`` or ``test/`` are ignored. Every other file must be an
image Pillow can decode: the first one that is not (a text file, a truncated
JPEG, an unreadable file) stops loading with an error naming it, because a
silently skipped file would change the dataset without anyone noticing.

**Resizing.** Each image is converted to RGB (grey and palette images are
expanded, an alpha channel is dropped), centre-cropped to the largest square
(so nothing is stretched; what is cut is the border of the longer side, as
torchvision's ``Resize(32)`` then ``CenterCrop(32)`` do), then resized to 32x32
with Pillow's ``Image.BICUBIC``. Pillow widens the filter's support by the
reduction factor when it shrinks an image, so every source pixel contributes
(antialiasing, like torchvision's ``Resize(antialias=True)``) and a large photo
does not alias into noise. Images already 32x32 (CIFAR-10 as PNG/JPEG) are
used as they are, bit for bit.

**Cache.** Decoding is slow for a large folder, so the arrays are saved in
``DIR/.scratchcnn-cache/images-32x32.npz`` (uncompressed ``np.savez``, loaded
with ``allow_pickle=False``) together with a key: the SHA-256 of the loader
version and of every image's relative path, size and modification time.
A later run whose files give the same key loads the arrays instead of
decoding; any added, removed, renamed, resized or touched file changes the
key and the folder is decoded again. A cache that cannot be written (a
read-only folder) is reported on one line and training goes on without it.

**Order.** Files are read in sorted order, then each split is put in one fixed
pseudo-random order (the same on every run and machine, independent of
``--seed``), so ``--train-size N`` takes a mix of all classes, not the first
class folder.
"""
import hashlib
import os
import sys

import numpy as np

from scratchcnn.errors import UserError

LOADER_VERSION = 1
SIZE = 32
MAX_CLASSES = 1000        # a sane upper limit (ImageNet's); the network's last layer gets one output each
SPLITS = ("train", "test")
CACHE_DIR = ".scratchcnn-cache"
CACHE_NAME = f"images-{SIZE}x{SIZE}.npz"
_ORDER_SEED = 20240          # the fixed order of each split; not --seed


def _entries(folder):
    """Sorted, non-hidden ``os.DirEntry`` objects of ``folder``; an unreadable folder is a UserError."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except PermissionError as e:
        raise UserError(f"cannot read the folder {folder} ({e.strerror}); check its permissions") from e
    except OSError as e:
        raise UserError(f"cannot read the folder {folder} ({e.strerror or e})") from e


def _files(folder):
    """Every non-hidden file under ``folder``, recursively, in sorted order."""
    out = []
    for e in _entries(folder):
        if e.is_dir():
            out += _files(e.path)
        elif e.is_file():
            out.append(e.path)
    return out


def scan(root):
    """``(classes, {split: [(path, label), ...]})`` for an ImageFolder-style ``root``; checks the layout."""
    if not os.path.exists(root):
        raise UserError(f"--data-dir {root!r} does not exist; --dataset folder needs "
                        f"DIR/train/CLASS/*.png|jpg and DIR/test/CLASS/*")
    if not os.path.isdir(root):
        raise UserError(f"--data-dir {root!r} is not a folder; --dataset folder needs "
                        f"DIR/train/CLASS/*.png|jpg and DIR/test/CLASS/*")
    classes = {}
    for split in SPLITS:
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise UserError(f"{folder} is missing: --dataset folder needs both {root}/train/CLASS/... "
                            f"and {root}/test/CLASS/... (torchvision's ImageFolder layout)")
        classes[split] = [e.name for e in _entries(folder) if e.is_dir()]
        if not classes[split]:
            raise UserError(f"{folder} has no class folders; put each class's images in "
                            f"{folder}/CLASS_NAME/")
    train, test = classes["train"], classes["test"]
    if train != test:
        only_train = sorted(set(train) - set(test))
        only_test = sorted(set(test) - set(train))
        raise UserError(f"the class folders of {root}/train and {root}/test differ: "
                        f"only in train: {', '.join(only_train) or '-'}; "
                        f"only in test: {', '.join(only_test) or '-'}")
    if len(train) > MAX_CLASSES:
        raise UserError(f"{root}/train has {len(train)} class folders; scratchcnn takes at most "
                        f"{MAX_CLASSES} classes")
    files = {}
    for split in SPLITS:
        files[split] = []
        for label, name in enumerate(train):
            folder = os.path.join(root, split, name)
            found = _files(folder)
            if not found:
                raise UserError(f"class folder {folder} has no images; add some or remove the "
                                f"folder (from both train/ and test/)")
            files[split] += [(p, label) for p in found]
    return tuple(train), files


def cache_key(root, files):
    """SHA-256 of the loader version and each file's relative path, size and mtime."""
    h = hashlib.sha256(f"scratchcnn-folder v{LOADER_VERSION} {SIZE}\n".encode())
    for split in SPLITS:
        for path, label in files[split]:
            try:
                st = os.stat(path)
            except OSError as e:
                raise UserError(f"cannot read {path} ({e.strerror or e})") from e
            rel = os.path.relpath(path, root)
            h.update(f"{split}\0{label}\0{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def decode_image(path, fix="remove it from the folder or replace it"):
    """One image file as uint8 (3, 32, 32): RGB, centre-cropped square, BICUBIC to 32x32.
    A file Pillow cannot decode is a UserError naming it, ending with ``fix``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()                         # decode now: a truncated file fails here
            im = im.convert("RGB")
    except PermissionError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); check its permissions, or {fix}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as e:      # what Pillow raises on damaged files
        detail = str(e).split("\n")[0][:100]
        raise UserError(f"{path} is not an image Pillow can read ({e.__class__.__name__}: "
                        f"{detail}); {fix}") from e
    w, h = im.size
    if (w, h) != (SIZE, SIZE):
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))   # crop first: resize(box=) would
        im = im.resize((SIZE, SIZE), Image.BICUBIC)           # blend in pixels outside the box
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))


def _decode_all(root, files):
    from tqdm import tqdm

    total = sum(len(v) for v in files.values())
    arrays = {}
    with tqdm(total=total, desc=f"decoding {root} (first run; cached for the next)", unit="img",
              disable=None, mininterval=0.5) as bar:
        for split in SPLITS:
            x = np.empty((len(files[split]), 3, SIZE, SIZE), np.uint8)
            for i, (path, _) in enumerate(files[split]):
                x[i] = decode_image(path)
                bar.update(1)
            arrays[f"{split}_x"] = x
            arrays[f"{split}_y"] = np.array([label for _, label in files[split]], np.int64)
    return arrays


def _read_cache(path, key):
    """The cached arrays if ``path`` holds them for ``key``; None otherwise (missing, stale, damaged)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files if k != "key"}
    except Exception:             # a damaged cache is only a cache: decode again
        return None


def _write_cache(path, key, arrays, classes):
    from scratchcnn.atomic import atomic_write
    try:
        atomic_write(path, lambda f: np.savez(f, key=np.array(key), classes=np.array(classes),
                                              **arrays))
    except OSError as e:
        print(f"note: could not write the image cache {path} ({e.strerror or e}); the next run "
              f"decodes the images again", file=sys.stderr)


def read_image_folder(root):
    """``(classes, {"train": (x, y), "test": (x, y)})``: x uint8 (N, 3, 32, 32), y int64 (N,)
    in each split's fixed shuffled order. Uses and refreshes the cache beside the data."""
    classes, files = scan(root)
    key = cache_key(root, files)
    path = os.path.join(root, CACHE_DIR, CACHE_NAME)
    arrays = _read_cache(path, key)
    if arrays is None:
        arrays = _decode_all(root, files)
        _write_cache(path, key, arrays, classes)
    arrays.pop("classes", None)
    out = {}
    for split in SPLITS:
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        order = np.random.default_rng([_ORDER_SEED, len(y)]).permutation(len(y))
        out[split] = (x[order], y[order])
    return classes, out
