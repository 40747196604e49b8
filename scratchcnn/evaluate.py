"""``scratchcnn evaluate``: accuracy, loss, per-class accuracy and a confusion matrix on the
test split, or (``--split train``) on the training split, in eval mode."""
import numpy as np

from scratchcnn.backends import cross_entropy, evaluate_logits, make_backend, predicted_class
from scratchcnn.checkpoint import load_checkpoint
from scratchcnn.data import load_dataset
from scratchcnn.errors import UserError


def confusion_matrix(y_true, y_pred, n_classes=10):
    """``cm[i, j]`` = how many images of class i were predicted as class j."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def load_backend(checkpoint, backend="scratch", device="cpu", arch=None, allow_custom=False):
    """A backend holding the network and weights of ``checkpoint`` (ours or the tutorial's),
    its kernels loaded, and the loaded checkpoint (``ckpt["arch"]`` is the network; ``arch``
    names it for a bare state_dict, see ``checkpoint.load_checkpoint``)."""
    ckpt = load_checkpoint(checkpoint, arch=arch, allow_custom=allow_custom)
    b = make_backend(backend, arch=ckpt["arch"], device=device)
    b.load_state_dict(ckpt["model"])
    b.warmup()
    return b, ckpt


def dataset_split(cfg, dataset, data_dir, split, size=None):
    """The ``split`` ("train"/"test") of the checkpoint's dataset (or ``dataset``).

    When it is the dataset the checkpoint was trained on, it is drawn exactly as in
    training (same ``--train-size``/``--test-size``, same ``--data-dir`` unless
    ``data_dir`` is given) and its class names must be the ones training recorded.
    ``size``: only the first ``size`` images of the split instead.
    """
    from scratchcnn.data import find_cifar10

    name = dataset or cfg.get("dataset") or "cifar10"
    same = name == cfg.get("dataset")        # then draw exactly the images training used
    if data_dir is None:
        data_dir = cfg.get("data_dir", "data") if same else "data"
    if name == "cifar10" and find_cifar10(data_dir) is None:
        why = ("the checkpoint records no dataset (a bare state_dict), so CIFAR-10 is assumed"
               if not (dataset or cfg.get("dataset")) else "CIFAR-10 was asked for")
        raise UserError(f"{why}, but none was found in --data-dir {data_dir!r}; point --data-dir at an "
                        f"extracted copy (scratchcnn train --download fetches one), pass --dataset "
                        f"synthetic or folder, or use your own picture with --image FILE")
    n = {"train": (cfg.get("train_size") or None) if same else None,
         "test": (cfg.get("test_size") or None) if same else None}
    if size:
        n[split] = size
    train, test = load_dataset(name, data_dir, False, cfg.get("seed", 0), n["train"], n["test"])
    data = train if split == "train" else test
    if same and cfg.get("classes") and list(cfg["classes"]) != list(data.classes):
        raise UserError(f"the checkpoint was trained on the classes {', '.join(cfg['classes'])}, "
                        f"but {data_dir} now has {', '.join(data.classes)}; evaluate on the data "
                        f"it was trained on")
    return data


def evaluate(checkpoint, *, backend="scratch", device="cpu", dataset=None, data_dir=None,
             split="test", test_size=0, arch=None, allow_custom=False):
    """Evaluate (eval mode: dropout off) on the ``split`` of the checkpoint's dataset (or ``dataset``).

    ``split="train"`` measures the training set, as the tutorial's "accuracy" did.
    Returns ``{"accuracy", "loss", "per_class", "confusion", "classes", "n", "dataset", "split"}``.
    """
    if test_size < 0:
        raise UserError(f"--test-size must be a number of images, or 0 for all (got {test_size})")
    b, ckpt = load_backend(checkpoint, backend, device, arch, allow_custom)
    cfg = ckpt["config"]
    data = dataset_split(cfg, dataset, data_dir, split, test_size if split == "test" else None)
    logits = evaluate_logits(b, data, normalize=cfg.get("normalize_stats"))
    pred = predicted_class(logits, len(data.classes))
    cm = confusion_matrix(data.y, pred, len(data.classes))
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {"accuracy": float((pred == data.y).mean()), "loss": cross_entropy(logits, data.y),
            "per_class": per_class.tolist(), "confusion": cm, "classes": list(data.classes),
            "n": len(data), "dataset": data.name, "split": split}


def format_report(r):
    split = r.get("split", "test")
    lines = [f"{split} accuracy: {100 * r['accuracy']:.2f}% on {r['n']} {r['dataset']} {split} images",
             f"{split} loss: {r['loss']:.4f} (mean cross-entropy; eval mode, dropout off)", "",
             "per-class accuracy:"]
    lines += [f"  {c:>12s}  {100 * a:6.2f}%" for c, a in zip(r["classes"], r["per_class"])]
    w = max(len(c) for c in r["classes"])
    lines += ["", "confusion matrix (rows: true, columns: predicted):",
              " " * (w + 2) + " ".join(f"{c[:5]:>5s}" for c in r["classes"])]
    lines += [f"{c:>{w}s}  " + " ".join(f"{v:5d}" for v in row)
              for c, row in zip(r["classes"], r["confusion"])]
    return "\n".join(lines)
