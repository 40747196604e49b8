"""PNG figures, headless-safe: matplotlib's Agg backend, no display needed."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scratchcnn.atomic import atomic_write  # noqa: E402


def _save(fig, path):
    """Write the figure as a PNG atomically (``atomic.atomic_write``: temporary file,
    then rename) and close it."""
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=110, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)
    return path


def plot_curves(metrics, path, title=""):
    """Train and test loss, and train and test accuracy, per epoch.

    The train figures are running means over the epoch's steps in train mode
    (dropout on, augmented images if --augment); the test figures are measured
    after the epoch in eval mode. Runs recorded before test loss existed show
    the train loss only.
    """
    ep = [m["epoch"] for m in metrics]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(ep, [m["train_loss"] for m in metrics], "o-", label="train")
    if all("test_loss" in m for m in metrics):
        ax1.plot(ep, [m["test_loss"] for m in metrics], "s-", label="test")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax2.plot(ep, [100 * m["train_acc"] for m in metrics], "o-", label="train")
    ax2.plot(ep, [100 * m["test_acc"] for m in metrics], "s-", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    return _save(fig, path)


def plot_comparison(runs, labels, path):
    """Several runs on shared axes: test accuracy per epoch, and train (dashed) and test (solid) loss.

    ``runs``: one list of per-epoch metrics (``metrics.json``'s "epochs") per run.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (metrics, label) in enumerate(zip(runs, labels)):
        colour = f"C{k % 10}"
        ep = [m["epoch"] for m in metrics]
        ax1.plot(ep, [100 * m["test_acc"] for m in metrics], "-", color=colour,
                 label=f"{label}: {100 * metrics[-1]['test_acc']:.2f}%")
        ax2.plot(ep, [m["train_loss"] for m in metrics], "--", color=colour, alpha=0.7)
        if all("test_loss" in m for m in metrics):
            ax2.plot(ep, [m["test_loss"] for m in metrics], "-", color=colour, label=label)
    ax1.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy (final value in the legend)")
    ax2.set(xlabel="epoch", ylabel="cross-entropy", title="loss: test (solid), train (dashed)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def plot_confusion(cm, classes, path, title="confusion matrix (test set)"):
    """Rows: true class; columns: predicted class; counts written in each cell."""
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)),
           xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    thresh = cm.max() / 2 if cm.size else 0
    for i, j in np.ndindex(cm.shape):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                color="white" if cm[i, j] > thresh else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)
