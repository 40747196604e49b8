import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from conftest import TRAIN_NAMES, fake_cifar_arrays, write_cifar_python
from scratchcnn import data
from scratchcnn.errors import UserError


def _expected(arrays, names):
    x = np.concatenate([arrays[n][0] for n in names]).reshape(-1, 3, 32, 32)
    return x, np.concatenate([arrays[n][1] for n in names])


@pytest.mark.parametrize("layout", ["cifar_python_dir", "cifar_binary_dir"])
def test_cifar_layouts_load_exact_pixels_and_labels(layout, cifar_arrays, request):
    train, test = data.load_cifar10(request.getfixturevalue(layout))
    x, y = _expected(cifar_arrays, TRAIN_NAMES)
    np.testing.assert_array_equal(train.x, x)
    np.testing.assert_array_equal(train.y, y)
    xt, yt = _expected(cifar_arrays, ["test_batch"])
    np.testing.assert_array_equal(test.x, xt)
    np.testing.assert_array_equal(test.y, yt)
    assert train.x.shape == (40, 3, 32, 32) and train.y.dtype == np.int64
    # Channel-major rows: the first 1024 bytes of a row are the red plane.
    np.testing.assert_array_equal(train.x[0, 0].ravel(), cifar_arrays["data_batch_1"][0][0, :1024])
    assert train.classes[7] == "horse"


def test_extracted_folder_itself_is_accepted(cifar_python_dir):
    train, _ = data.load_cifar10(os.path.join(cifar_python_dir, "cifar-10-batches-py"))
    assert len(train) == 40


def test_missing_cifar_names_data_dir_and_synthetic(tmp_path):
    with pytest.raises(UserError, match="--data-dir.*synthetic"):
        data.load_cifar10(str(tmp_path))


def test_incomplete_copy_names_the_missing_file(cifar_binary_dir):
    os.remove(os.path.join(cifar_binary_dir, "cifar-10-batches-bin", "data_batch_3.bin"))
    with pytest.raises(UserError, match="data_batch_3.bin is missing"):
        data.load_cifar10(cifar_binary_dir)


def test_truncated_binary_batch_is_reported(cifar_binary_dir):
    path = os.path.join(cifar_binary_dir, "cifar-10-batches-bin", "data_batch_2.bin")
    with open(path, "r+b") as f:
        f.truncate(3073 * 3 - 100)
    with pytest.raises(UserError, match="truncated"):
        data.load_cifar10(cifar_binary_dir)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_python_batch_unpickler_refuses_code(cifar_python_dir, monkeypatch):
    path = os.path.join(cifar_python_dir, "cifar-10-batches-py", "data_batch_1")
    with open(path, "wb") as f:
        pickle.dump({b"data": _Boom(), b"labels": [0]}, f, protocol=2)
    ran = []
    monkeypatch.setattr(os, "system", lambda cmd: ran.append(cmd))
    with pytest.raises(UserError, match="refusing to load"):
        data.load_cifar10(cifar_python_dir)
    assert ran == []


def test_synthetic_is_deterministic_balanced_and_seeded():
    a, b, c = data.make_synthetic(200, seed=3), data.make_synthetic(200, seed=3), data.make_synthetic(200, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert a.x.shape == (200, 3, 32, 32) and a.x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(a.y, minlength=10), [20] * 10)
    train, test = data.load_synthetic(100, 50, seed=0)
    assert not np.array_equal(train.x[:50], test.x)        # independent draws


def test_synthetic_is_not_separable_by_mean_colour():
    """Nearest class-mean on the mean RGB colour stays near chance (10%)."""
    train, test = data.load_synthetic(3000, 1000, seed=0)
    f = train.x.reshape(len(train), 3, -1).mean(-1)
    ft = test.x.reshape(len(test), 3, -1).mean(-1)
    means = np.stack([f[train.y == k].mean(0) for k in range(10)])
    pred = ((ft[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == test.y).mean() < 0.2


def test_batches_scale_shuffle_and_keep_the_last_partial_batch():
    ds = data.make_synthetic(70, seed=1)
    batches = list(data.iterate_batches(ds, 32, shuffle=True, seed=5, epoch=2))
    assert [len(y) for _, y in batches] == [32, 32, 6]
    x0, y0 = batches[0]
    assert x0.dtype == np.float32 and y0.dtype == np.int64
    order = data.epoch_order(70, 5, 2)
    np.testing.assert_array_equal(y0, ds.y[order[:32]])
    np.testing.assert_allclose(x0, ds.x[order[:32]] / 255.0, rtol=1e-6)
    again = list(data.iterate_batches(ds, 32, shuffle=True, seed=5, epoch=2))
    np.testing.assert_array_equal(again[1][1], batches[1][1])
    other = data.epoch_order(70, 5, 3)
    assert not np.array_equal(order, other)
    assert sorted(order) == list(range(70))


def test_normalize_option_standardises_channels():
    ds = data.make_synthetic(50, seed=1)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    (x, _), = data.iterate_batches(ds, 50, normalize=(mean, std))
    np.testing.assert_allclose(x[:, 1], (ds.x[:, 1] / 255.0 - 0.4) / 0.25, rtol=1e-5, atol=1e-6)


def _tar_of_python_layout(tmp_path):
    src = tmp_path / "src"
    write_cifar_python(str(src), fake_cifar_arrays(per_batch=2))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(src / "cifar-10-batches-py"), arcname="cifar-10-batches-py")
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(buf.getvalue())
    return path


def test_download_verifies_md5_and_extracts(tmp_path):
    archive = _tar_of_python_layout(tmp_path)
    dest = tmp_path / "data"
    data.download_cifar10(str(dest), url=archive.as_uri(), md5=data.md5sum(str(archive)))
    train, test = data.load_cifar10(str(dest))
    assert len(train) == 10 and len(test) == 2


def test_download_with_wrong_checksum_is_deleted_and_reported(tmp_path):
    archive = _tar_of_python_layout(tmp_path)
    dest = tmp_path / "data"
    with pytest.raises(UserError, match="MD5 .* expected 0{32}; it was deleted"):
        data.download_cifar10(str(dest), url=archive.as_uri(), md5="0" * 32)
    assert os.listdir(dest) == []


def test_image_file_loading(tmp_path):
    from PIL import Image
    path = tmp_path / "photo.png"
    img = np.full((64, 48, 3), (200, 10, 30), np.uint8)
    img[:8], img[56:] = 0, 255                 # cut off by the centre crop (48x48 of 48 wide, 64 high)
    Image.fromarray(img).save(path)
    x = data.load_image(str(path))
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.uint8
    assert (x[0].reshape(3, -1).T == (200, 10, 30)).all()
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(UserError, match="not an image"):
        data.load_image(str(bad))


def test_channel_stats_equal_numpys_without_a_float_copy_of_the_dataset():
    from scratchcnn.train import channel_stats
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(1000, 3, 32, 32), dtype=np.uint8)
    x[:, 2] //= 4                                            # channels with different statistics
    ds = data.Dataset(x, np.zeros(1000, np.int64), data.SYNTHETIC_CLASSES, "synthetic")
    ref = x.reshape(1000, 3, -1).astype(np.float64) / 255.0
    for chunk in (7, 4096):                                   # chunk borders inside and beyond the data
        mean, std = channel_stats(ds, chunk=chunk)
        np.testing.assert_allclose(mean, ref.mean(axis=(0, 2)), rtol=1e-13)
        np.testing.assert_allclose(std, ref.std(axis=(0, 2)), rtol=1e-11)
    assert std[2] < 0.5 * std[0]
