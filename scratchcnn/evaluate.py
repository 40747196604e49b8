"""``scratchcnn evaluate``: test-set accuracy, per-class accuracy and a confusion matrix."""
import numpy as np

from scratchcnn.backends import evaluate_logits, make_backend
from scratchcnn.checkpoint import load_checkpoint
from scratchcnn.data import load_dataset
from scratchcnn.errors import UserError


def confusion_matrix(y_true, y_pred, n_classes=10):
    """``cm[i, j]`` = how many images of class i were predicted as class j."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def load_backend(checkpoint, backend="scratch", device="cpu"):
    """A backend holding the weights of ``checkpoint`` (ours or the tutorial's), and its config."""
    ckpt = load_checkpoint(checkpoint)
    b = make_backend(backend, device=device)
    b.load_state_dict(ckpt["model"])
    return b, ckpt


def evaluate(checkpoint, *, backend="scratch", device="cpu", dataset=None, data_dir="data",
             test_size=0, seed=None):
    """Evaluate on the test split of the checkpoint's dataset (or ``dataset``).

    Returns ``{"accuracy", "per_class", "confusion", "classes", "n"}``.
    """
    if test_size < 0:
        raise UserError(f"--test-size must be a number of images, or 0 for all (got {test_size})")
    b, ckpt = load_backend(checkpoint, backend, device)
    cfg = ckpt["config"]
    dataset = dataset or cfg.get("dataset", "cifar10")
    seed = cfg.get("seed", 0) if seed is None else seed
    _, test = load_dataset(dataset, data_dir, False, seed, None, test_size or None)
    pred = evaluate_logits(b, test, normalize=cfg.get("normalize_stats")).argmax(1)
    cm = confusion_matrix(test.y, pred, len(test.classes))
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {"accuracy": float((pred == test.y).mean()), "per_class": per_class.tolist(),
            "confusion": cm, "classes": list(test.classes), "n": len(test), "dataset": dataset}


def format_report(r):
    lines = [f"test accuracy: {100 * r['accuracy']:.2f}% on {r['n']} {r['dataset']} test images", "",
             "per-class accuracy:"]
    lines += [f"  {c:>12s}  {100 * a:6.2f}%" for c, a in zip(r["classes"], r["per_class"])]
    w = max(len(c) for c in r["classes"])
    lines += ["", "confusion matrix (rows: true, columns: predicted):",
              " " * (w + 2) + " ".join(f"{c[:5]:>5s}" for c in r["classes"])]
    lines += [f"{c:>{w}s}  " + " ".join(f"{v:5d}" for v in row)
              for c, row in zip(r["classes"], r["confusion"])]
    return "\n".join(lines)
