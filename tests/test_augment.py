"""Augmentation: torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip, drawn from
(seed, epoch, batch), applied once in the data pipeline so both backends get the same batches."""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

import scratchcnn.train as train_mod
from scratchcnn.augment import PAD, augment_batch, augment_params, crop_flip
from scratchcnn.config import TrainConfig
from scratchcnn.data import iterate_batches, load_dataset, make_synthetic, to_float
from scratchcnn.train import channel_stats, train

REAL_MAKE_BACKEND = train_mod.make_backend


def _images(n=6, seed=0):
    return np.random.default_rng(seed).integers(1, 256, (n, 3, 32, 32), dtype=np.uint8)


def test_crop_flip_equals_torchvision_pad_crop_hflip():
    """For every offset and both flips: torchvision.transforms.functional on the same image."""
    x = _images(1)
    for dy in range(2 * PAD + 1):
        for dx in range(2 * PAD + 1):
            for flip in (False, True):
                ours = crop_flip(x, np.array([dy]), np.array([dx]), np.array([flip]))[0]
                t = TF.crop(TF.pad(torch.from_numpy(x[0]), [PAD], fill=0), dy, dx, 32, 32)
                if flip:
                    t = TF.hflip(t)
                np.testing.assert_array_equal(ours, t.numpy(), err_msg=f"dy={dy} dx={dx} flip={flip}")


def test_crop_flip_by_hand():
    """Shift by (dy - 4, dx - 4): zeros come in from the side it moves away from."""
    x = _images(2)
    out = crop_flip(x, np.array([4, 0]), np.array([4, 8]), np.array([False, True]))
    np.testing.assert_array_equal(out[0], x[0])                       # centred, no flip: unchanged
    assert out.dtype == np.uint8 and out.shape == x.shape
    # image 1: window starts 4 rows above and 4 columns right of the image, then mirrored
    assert (out[1, :, :4, :] == 0).all() and (out[1, :, 4:, :4] == 0).all()
    np.testing.assert_array_equal(out[1, :, 4:, 4:], x[1, :, :28, 4:][:, :, ::-1])


def test_draws_depend_on_seed_epoch_batch_only():
    a = augment_params(5000, seed=3, epoch=2, batch=7)
    b = augment_params(5000, seed=3, epoch=2, batch=7)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    for other in [(4, 2, 7), (3, 3, 7), (3, 2, 8)]:
        c = augment_params(5000, *other)
        assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[2], c[2])
    dy, dx, flip = a
    assert set(dy) == set(dx) == set(range(9))                        # every offset occurs
    assert 0.47 < flip.mean() < 0.53 and 3.8 < dy.mean() < 4.2 and 3.8 < dx.mean() < 4.2


def test_iterate_batches_augments_each_batch_from_its_index():
    data = make_synthetic(70, seed=1)
    plain = list(iterate_batches(data, 32, shuffle=True, seed=5, epoch=1))
    aug = list(iterate_batches(data, 32, shuffle=True, seed=5, epoch=1, augment=True))
    order = np.random.default_rng([5, 1]).permutation(70)
    for b, ((xp, yp), (xa, ya)) in enumerate(zip(plain, aug)):
        np.testing.assert_array_equal(ya, yp)                         # labels untouched, same order
        expected = augment_batch(data.x[order[32 * b:32 * b + 32]], 5, 1, b)
        np.testing.assert_array_equal(xa, to_float(expected))
        assert not np.array_equal(xa, xp)
    assert [len(y) for _, y in aug] == [32, 32, 6]


class _RecordBatches:
    def __init__(self, inner, seen):
        self.inner, self.seen = inner, seen

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train_step(self, x, y):
        self.seen.append((x.copy(), y.copy()))
        return self.inner.train_step(x, y)


@pytest.mark.usefixtures("one_thread_per_pool")
def test_both_backends_receive_identical_augmented_batches(tmp_path, monkeypatch):
    """train() hands each backend the batches iterate_batches(..., augment=True) makes, not the
    unaugmented ones: shuffling alone changes the batches between epochs, so comparing the two
    backends or two epochs with each other would not notice augmentation being switched off."""
    seen = {}
    for backend in ("scratch", "torch"):
        seen[backend] = []
        monkeypatch.setattr(train_mod, "make_backend",
                            lambda *a, _s=seen[backend], **k: _RecordBatches(REAL_MAKE_BACKEND(*a, **k), _s))
        cfg = TrainConfig(backend=backend, dataset="synthetic", train_size=64, test_size=32,
                          epochs=2, augment=True, normalize=True)
        train(cfg, str(tmp_path / backend), progress=False, log=lambda m: None)
    assert len(seen["scratch"]) == len(seen["torch"]) == 4
    for (xs, ys), (xt, yt) in zip(seen["scratch"], seen["torch"]):
        np.testing.assert_array_equal(xs, xt)
        np.testing.assert_array_equal(ys, yt)
    # epoch 2 is augmented differently from epoch 1 (same images in another order and crop)
    assert not np.array_equal(np.sort(seen["torch"][0][0].ravel()), np.sort(seen["torch"][2][0].ravel()))

    # what train() must have used: the same data, statistics and positions in training
    train_set, _ = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed,
                                cfg.train_size, cfg.test_size)
    normalize = channel_stats(train_set)

    def batches(augment):
        return [b for epoch in range(cfg.epochs)
                for b in iterate_batches(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                         epoch=epoch, normalize=normalize, augment=augment)]
    augmented, plain = batches(True), batches(False)
    assert len(augmented) == len(plain) == 4
    for i, ((x, y), (xa, ya), (xp, yp)) in enumerate(zip(seen["torch"], augmented, plain)):
        np.testing.assert_array_equal(y, ya)
        np.testing.assert_array_equal(x, xa, err_msg=f"batch {i} is not the augmented one")
        assert not np.array_equal(x, xp), f"batch {i} reached the backend unaugmented"


def _crops_and_flips(x, pad=PAD):
    """{image bytes: [(index, dy, dx, flip), ...]}: every image of x (N, C, H, W) uint8 under each
    of the (2 pad + 1)^2 zero-padded crops and both flips, written here with np.pad and slicing
    (not with scratchcnn.augment), so it says what augmentation must do, not what the code does."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    table = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[:, :, dy:dy + h, dx:dx + w]
            for flip in (False, True):
                view = window[:, :, :, ::-1] if flip else window
                for i in range(n):
                    table.setdefault(view[i].tobytes(), []).append((i, dy, dx, flip))
    return table


@pytest.mark.usefixtures("one_thread_per_pool")
def test_train_with_augment_hands_both_backends_cropped_and_flipped_training_images(tmp_path, monkeypatch):
    """train() with augment=True, as ``scratchcnn train --augment`` calls it: every image a backend
    receives is one training image (each exactly once per epoch, with its label) shifted by a
    zero-padded crop and perhaps mirrored, about half of them mirrored, nearly none left as they
    were; and both backends receive the same batches. Checked against the raw images, not against
    iterate_batches, so it fails whether train() or the data pipeline stops augmenting."""
    seen = {}
    for backend in ("scratch", "torch"):
        seen[backend] = []
        monkeypatch.setattr(train_mod, "make_backend",
                            lambda *a, _s=seen[backend], **k: _RecordBatches(REAL_MAKE_BACKEND(*a, **k), _s))
        cfg = TrainConfig(backend=backend, dataset="synthetic", train_size=64, test_size=32,
                          epochs=1, augment=True)         # pixels in [0, 1]: the uint8 image * 1/255
        train(cfg, str(tmp_path / backend), progress=False, log=lambda m: None)
    assert [len(y) for _, y in seen["scratch"]] == [len(y) for _, y in seen["torch"]] == [32, 32]
    for (xs, ys), (xt, yt) in zip(seen["scratch"], seen["torch"]):
        np.testing.assert_array_equal(xs, xt)
        np.testing.assert_array_equal(ys, yt)

    train_set, _ = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed,
                                cfg.train_size, cfg.test_size)
    table = _crops_and_flips(train_set.x)
    used, unchanged, flipped, shifted = [], 0, 0, 0
    for b, (x, y) in enumerate(seen["torch"]):
        pixels = np.rint(x * 255).astype(np.uint8)
        assert np.abs(x * 255 - pixels).max() < 1e-3                  # really uint8 pixels / 255
        for j in range(len(y)):
            found = table.get(pixels[j].tobytes())
            assert found, f"batch {b} image {j} is no crop or flip of a training image"
            [i] = {f[0] for f in found}
            assert y[j] == train_set.y[i], f"batch {b} image {j} has another image's label"
            used.append(i)
            unchanged += (i, PAD, PAD, False) in found
            flipped += all(f[3] for f in found)
            shifted += all((f[1], f[2]) != (PAD, PAD) for f in found)
    n = len(train_set)
    assert sorted(used) == list(range(n))                    # each training image once per epoch
    assert unchanged <= 2, f"{unchanged} of {n} images reached the backend as they are"
    assert 0.25 * n <= flipped <= 0.75 * n, f"{flipped} of {n} images mirrored"
    assert shifted >= 0.8 * n, f"only {shifted} of {n} images shifted"


def test_a_flip_turns_synthetic_diagonal_stripes_into_antidiagonal_ones(tmp_path):
    """Why training notes that --augment changes labels on the built-in dataset."""
    from scratchcnn.data import SYNTHETIC_CLASSES, _class_mask
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    diag = _class_mask(SYNTHETIC_CLASSES.index("diagonal"), yy, xx, 0, 0, 7.0, 0.3)
    anti = _class_mask(SYNTHETIC_CLASSES.index("antidiagonal"), yy, xx, 0, 0, 7.0, 0.3)
    flipped = diag[:, ::-1]

    def along(m, dx):        # how often a pixel equals its neighbour one row down and dx across
        return (m[1:, max(dx, 0):32 + min(dx, 0)] == m[:-1, max(-dx, 0):32 + min(-dx, 0)]).mean()
    assert along(diag, -1) == 1.0 and along(diag, 1) < 0.7         # stripes along x + y = const
    assert along(anti, 1) == 1.0 and along(anti, -1) < 0.7         # stripes along x - y = const
    assert along(flipped, 1) == 1.0 and along(flipped, -1) < 0.7   # flipped: the anti-diagonal kind
    log = []
    train(TrainConfig(backend="torch", dataset="synthetic", train_size=32, test_size=10, epochs=1,
                      augment=True), str(tmp_path / "run"), progress=False, log=log.append)
    assert any("'diagonal' stripes into 'antidiagonal'" in m for m in log)
