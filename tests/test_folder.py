"""Your own images: --dataset folder reads DIR/train/<class>/* and DIR/test/<class>/*, resizes
to 32x32 RGB, caches the arrays beside the data, and names every bad file or folder in one line."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import one_error_line
from scratchcnn import folder
from scratchcnn.cli import main
from scratchcnn.data import load_dataset
from scratchcnn.errors import UserError

CLASSES = ["bird", "cat", "dog"]                 # sorted, as the folders are
PER_CLASS = {"train": 12, "test": 4}


def colour(label, i):
    """Every generated image is one flat colour that encodes its class and its index."""
    return ((40 + 60 * label) % 256, (10 + 7 * i) % 256, 200)


def make_folder(root, classes=CLASSES, per_class=PER_CLASS):
    """PNG images 32x32, one flat colour each (lossless: the loaded pixels are known exactly)."""
    for split, n in per_class.items():
        for label, name in enumerate(classes):
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(n):
                img = np.empty((32, 32, 3), np.uint8)
                img[:] = colour(label, i)
                Image.fromarray(img).save(root / split / name / f"{i:03d}.png")
    return root


@pytest.fixture
def images(tmp_path):
    return make_folder(tmp_path / "pets")


def test_loads_classes_labels_and_pixels(images):
    train, test = load_dataset("folder", str(images))
    assert train.classes == test.classes == tuple(CLASSES) and train.name == "folder"
    assert train.x.shape == (36, 3, 32, 32) and train.x.dtype == np.uint8 and train.y.dtype == np.int64
    assert test.x.shape == (12, 3, 32, 32)
    assert np.bincount(train.y).tolist() == [12, 12, 12]
    for x, y in zip(train.x, train.y):               # each image carries its own label's colour
        r, g, b = x[:, 0, 0]
        assert (x == x[:, :1, :1]).all() and r == 40 + 60 * y and b == 200
    # one fixed mixed order: --train-size takes several classes, and the order is the same every run
    assert len(set(train.y[:6].tolist())) > 1
    again, _ = load_dataset("folder", str(images))
    np.testing.assert_array_equal(again.x, train.x)
    sub, _ = load_dataset("folder", str(images), n_train=5)
    np.testing.assert_array_equal(sub.x, train.x[:5])


def test_resize_centre_crops_then_bicubic(tmp_path):
    """A 64x48 photo whose centre 48x48 is one colour and whose side strips are others: only
    the centre survives. Grey, palette and RGBA images become RGB; a big image is antialiased."""
    a = np.zeros((48, 64, 3), np.uint8)
    a[:] = (200, 100, 50)
    a[:, :8], a[:, 56:] = (0, 255, 0), (0, 0, 255)
    Image.fromarray(a).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(folder.decode_image(str(tmp_path / "wide.png")),
                                  np.broadcast_to(np.array([200, 100, 50], np.uint8)[:, None, None], (3, 32, 32)))
    Image.fromarray(np.full((32, 32), 77, np.uint8)).save(tmp_path / "grey.png")
    assert (folder.decode_image(str(tmp_path / "grey.png")) == 77).all()
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (1, 2, 3), 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert folder.decode_image(str(tmp_path / "rgba.png"))[:, 5, 5].tolist() == [1, 2, 3]
    # a 320x320 checkerboard of 1-pixel squares averages to grey instead of aliasing
    check = ((np.indices((320, 320)).sum(0) % 2) * 255).astype(np.uint8)
    Image.fromarray(check).save(tmp_path / "fine.png")
    small = folder.decode_image(str(tmp_path / "fine.png")).astype(int)
    assert abs(small.mean() - 127.5) < 2 and small.std() < 3


def test_jpeg_files_load_too(tmp_path):
    root = make_folder(tmp_path / "d", per_class={"train": 2, "test": 1})
    img = np.full((40, 40, 3), (30, 160, 90), np.uint8)
    Image.fromarray(img).save(root / "train" / "cat" / "photo.jpg", quality=95)
    train, _ = load_dataset("folder", str(root))
    assert len(train) == 7
    jpg = [x for x in train.x if abs(int(x[1, 16, 16]) - 160) <= 3]
    assert len(jpg) == 1 and abs(int(jpg[0][0, 16, 16]) - 30) <= 3


def test_second_run_reads_the_cache_and_changed_files_are_decoded_again(images, monkeypatch):
    first, _ = load_dataset("folder", str(images))
    cache = images / folder.CACHE_DIR / folder.CACHE_NAME
    assert cache.is_file()
    with np.load(cache, allow_pickle=False) as z:
        assert z["classes"].tolist() == CLASSES and z["train_x"].shape == (36, 3, 32, 32)

    decoded = []
    real = folder.decode_image
    monkeypatch.setattr(folder, "decode_image", lambda p: decoded.append(p) or real(p))
    again, _ = load_dataset("folder", str(images))
    assert decoded == []                                 # nothing decoded: the cache was used
    np.testing.assert_array_equal(again.x, first.x)

    victim = images / "train" / "cat" / "000.png"       # same size, new content and mtime
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(victim)
    st = os.stat(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed, _ = load_dataset("folder", str(images))
    assert len(decoded) == 36 + 12
    assert (changed.x.reshape(len(changed), -1).max(1) == 0).sum() == 1   # the black image is in

    decoded.clear()
    os.remove(images / "test" / "dog" / "003.png")
    _, test = load_dataset("folder", str(images))
    assert len(test) == 11 and len(decoded) == 36 + 11

    decoded.clear()
    cache.write_bytes(cache.read_bytes()[:1000])          # a damaged cache is rebuilt, not an error
    _, test = load_dataset("folder", str(images))
    assert len(test) == 11 and len(decoded) == 36 + 11


def test_cache_that_cannot_be_written_is_a_note_not_an_error(images, monkeypatch, capsys):
    def refuse(path, write):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("scratchcnn.atomic.atomic_write", refuse)
    train, _ = load_dataset("folder", str(images))
    assert len(train) == 36
    err = capsys.readouterr().err
    assert "note: could not write the image cache" in err and "Permission denied" in err


def _bad(root, case):
    """Damage a good folder the way ``case`` says; return the path the message must name."""
    if case == "empty class":
        for f in (root / "train" / "cat").iterdir():
            f.unlink()
        return f"class folder {root}/train/cat has no images"
    if case == "not an image":
        (root / "test" / "dog" / "notes.txt").write_text("not a picture")
        return f"{root}/test/dog/notes.txt is not an image Pillow can read"
    if case == "truncated jpeg":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
            root / "train" / "bird" / "photo.jpg", quality=90)
        raw = (root / "train" / "bird" / "photo.jpg").read_bytes()
        (root / "train" / "bird" / "photo.jpg").write_bytes(raw[:len(raw) // 2])
        return f"{root}/train/bird/photo.jpg is not an image Pillow can read (OSError: image file is truncated"
    if case == "no test split":
        for d in sorted((root / "test").rglob("*"), reverse=True):
            d.unlink() if d.is_file() else d.rmdir()
        (root / "test").rmdir()
        return f"{root}/test is missing: --dataset folder needs both"
    if case == "classes differ":
        (root / "test" / "cat").rename(root / "test" / "kitten")
        return f"the class folders of {root}/train and {root}/test differ: only in train: cat; only in test: kitten"
    if case == "too many classes":             # the limit (1000) is lowered for the test: see the test
        make_folder(root, classes=[f"c{k:03d}" for k in range(256)], per_class={"train": 1, "test": 1})
        return f"{root}/train has 259 class folders; scratchcnn takes at most 200 classes"
    if case == "no class folders":
        for d in sorted((root / "train").rglob("*"), reverse=True):
            d.unlink() if d.is_file() else d.rmdir()
        return f"{root}/train has no class folders"
    if case == "data-dir missing":
        return f"--data-dir '{root}/nowhere' does not exist"
    if case == "train-size too large":
        return f"--train-size 37 is more than the 36 images in {root}/train; use at most 36"
    raise AssertionError(case)


BAD = ["empty class", "not an image", "truncated jpeg", "no test split", "classes differ",
       "too many classes", "no class folders", "data-dir missing", "train-size too large"]


@pytest.mark.parametrize("case", BAD)
def test_bad_folders_are_one_error_line_naming_the_file(case, images, capsys, monkeypatch):
    monkeypatch.setattr(folder, "MAX_CLASSES", 200)           # 1000 class folders would take a while
    expected = _bad(images, case)
    data_dir = f"{images}/nowhere" if case == "data-dir missing" else str(images)
    size = ["--train-size", "37"] if case == "train-size too large" else []
    line = one_error_line(capsys, ["train", "--backend", "torch", "--dataset", "folder",
                                   "--data-dir", data_dir, "--epochs", "1", "--batch-size", "4",
                                   "--no-progress", "--out", str(images.parent / "run")] + size)
    assert expected in line, line
    assert not (images.parent / "run").exists()


def test_unreadable_folder_and_file_are_named(images, monkeypatch):
    """Permissions cannot be taken from root (CI runs as root), so the OS refusal is simulated."""
    real_scandir = os.scandir
    bad_dir = str(images / "test" / "cat")

    def scandir(path):
        if str(path) == bad_dir:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)
    monkeypatch.setattr(folder.os, "scandir", scandir)
    with pytest.raises(UserError, match=f"cannot read the folder {bad_dir} \\(Permission denied\\); "
                                        f"check its permissions"):
        folder.read_image_folder(str(images))
    monkeypatch.setattr(folder.os, "scandir", real_scandir)

    bad_file = str(images / "train" / "dog" / "002.png")
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied")) if str(p) == bad_file else real_open(p, *a, **k))
    with pytest.raises(UserError, match=f"cannot read {bad_file} \\(Permission denied\\)"):
        folder.read_image_folder(str(images))


@pytest.mark.usefixtures("one_thread_per_pool")
@pytest.mark.parametrize("backend", ["scratch", "torch"])
def test_train_evaluate_and_study_commands_use_the_folder_names(backend, images, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--backend", backend, "--dataset", "folder", "--data-dir", str(images),
                 "--epochs", "2", "--batch-size", "6", "--lr", "0.01", "--no-progress",
                 "--out", out]) == 0
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["config"]["classes"] == CLASSES and m["config"]["dataset"] == "folder"
    assert m["config"]["data_dir"] == str(images)
    assert m["config"]["arch_spec"][-1]["out_features"] == len(CLASSES)      # one output per class
    capsys.readouterr()
    # the checkpoint remembers its folder: no --data-dir needed
    assert main(["evaluate", "--backend", backend, "--checkpoint", os.path.join(out, "checkpoint.pth")]) == 0
    text = capsys.readouterr().out
    assert f"test accuracy: {100 * m['epochs'][-1]['test_acc']:.2f}% on 12 folder test images" in text
    assert [line.split()[0] for line in text.splitlines() if line.endswith("%") and line.startswith("  ")] \
        == CLASSES
    assert main(["evaluate", "--backend", backend, "--split", "train",
                 "--checkpoint", os.path.join(out, "checkpoint.pth")]) == 0
    assert "train accuracy: " in capsys.readouterr().out
    assert main(["featuremaps", "--backend", backend, "--checkpoint", os.path.join(out, "checkpoint.pth"),
                 "--index", "0", "--out", str(tmp_path / "maps")]) == 0
    text = capsys.readouterr().out
    top = text.split("top-3: ")[1].splitlines()[0]
    assert sorted(name for name, _ in (p.rsplit(" ", 1) for p in top.split(", "))) == CLASSES
    assert "of folder, label '" in text
    assert main(["saliency", "--backend", backend, "--checkpoint", os.path.join(out, "checkpoint.pth"),
                 "--index", "1", "--out", str(tmp_path / "saliency")]) == 0
    explained = capsys.readouterr().out.split("explaining class ")[1].split()[1].strip("'")
    assert explained in CLASSES                        # never one of the 7 outputs without a class
    assert main(["trace", "--checkpoint", os.path.join(out, "checkpoint.pth"), "--batch-size", "3"]) == 0
    labels = capsys.readouterr().out.split("(labels: ")[1].split(")")[0].split(", ")
    assert set(labels) <= set(CLASSES)


def test_outputs_without_a_class_are_never_predicted(images, tmp_path, capsys):
    """A checkpoint written before networks were sized to the data has the tutorial's 10 outputs
    for a 3-class folder: its classes use outputs 0-2. Even when outputs 3-9 have the largest
    logits (their bias set to 50), evaluate, featuremaps and saliency pick among the 3 classes
    and do not crash."""
    from scratchcnn import checkpoint as ck
    out = str(tmp_path / "run")
    assert main(["train", "--backend", "torch", "--dataset", "folder", "--data-dir", str(images),
                 "--epochs", "1", "--batch-size", "6", "--no-progress", "--out", out]) == 0
    state = ck.load_checkpoint(f"{out}/checkpoint.pth")
    model, optimizer = state["model"], state["optimizer"]
    for sd, fill in ((model, 50.0), (optimizer, 0.0)):       # the old layout: fc4 with 10 rows
        sd["fc4.weight"] = np.concatenate([sd["fc4.weight"], np.zeros((7, 512), np.float32)])
        sd["fc4.bias"] = np.concatenate([sd["fc4.bias"], np.full(7, fill, np.float32)])
    config = {k: v for k, v in state["config"].items() if k not in ("arch", "arch_spec")}
    ck.save_checkpoint(f"{out}/skewed.pth", model=model, optimizer=optimizer,
                       epoch=state["epoch"], metrics=state["metrics"], config=config)
    assert ck.load_checkpoint(f"{out}/skewed.pth")["arch"].num_classes == 10
    capsys.readouterr()
    assert main(["evaluate", "--backend", "torch", "--checkpoint", f"{out}/skewed.pth"]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.split("confusion matrix")[1].splitlines()[2:5]]
    assert [r[0] for r in rows] == CLASSES and sum(int(v) for r in rows for v in r[1:]) == 12
    for command in ("featuremaps", "saliency"):
        assert main([command, "--backend", "torch", "--checkpoint", f"{out}/skewed.pth", "--index", "0",
                     "--out", str(tmp_path / command)]) == 0
        text = capsys.readouterr().out
        top = text.split("top-3: ")[1].splitlines()[0]
        assert sorted(p.rsplit(" ", 1)[0] for p in top.split(", ")) == CLASSES
        if command == "saliency":
            assert text.split("explaining class ")[1].split()[1].strip("'") in CLASSES


def test_evaluate_refuses_a_folder_whose_classes_changed(images, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--backend", "torch", "--dataset", "folder", "--data-dir", str(images),
                 "--epochs", "1", "--batch-size", "6", "--no-progress", "--out", out]) == 0
    for split in ("train", "test"):
        (images / split / "dog").rename(images / split / "wolf")
    line = one_error_line(capsys, ["evaluate", "--backend", "torch", "--checkpoint", f"{out}/checkpoint.pth"])
    assert line == (f"error: the checkpoint was trained on the classes bird, cat, dog, but {images} now "
                    f"has bird, cat, wolf; evaluate on the data it was trained on")


def test_a_folder_passed_as_cifar10_suggests_dataset_folder(images, capsys):
    """--data-dir alone means CIFAR-10's batches; an ImageFolder layout there gets a pointer."""
    line = one_error_line(capsys, ["train", "--backend", "torch", "--data-dir", str(images),
                                   "--no-progress", "--out", str(images.parent / "run")])
    assert line == (f"error: no CIFAR-10 batches in --data-dir '{images}', but it has train/ and "
                    f"test/ folders: for images in class folders, pass --dataset folder")
