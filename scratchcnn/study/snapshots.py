"""Snapshots of training: the weights kept K times per epoch by ``scratchcnn train --snapshots K``.

A run folder trained with ``--snapshots K`` holds::

    snapshots/epoch-E-step-S.pth    the bare state_dict after step S (1-based) of epoch E (1-based),
                                    torch's keys, written atomically (checkpoint.save_state_dict)
    snapshots/index.json            {"per_epoch": K, "steps_per_epoch", "batch_size", "train_images",
                                     "floats", "bytes" (one snapshot), "arch", "arch_spec",
                                     "normalize_stats", "classes",
                                     "snapshots": [{"epoch", "step", "global_step", "images_seen",
                                                    "file"}, ...]}        in training order

The K steps of an epoch of S steps are evenly spaced, the last at the epoch's end:
step_j = floor((j + 1) * S / K), j = 0..K-1 (distinct because K <= S). The last one of epoch E
equals the run's weights after E epochs. ``--resume`` first drops every snapshot of an epoch the
checkpoint has not completed (an interrupted epoch is trained again, and writes them again, to
the same weights), so the index never holds a duplicate or misses a step.

From Python (the explorer's time slider)::

    from scratchcnn.study.snapshots import list_snapshots, load_snapshot
    entries = list_snapshots("runs/study")       # [{"epoch", "step", "global_step", "images_seen",
                                                 #   "file", "path"}, ...]
    s = load_snapshot("runs/study", 3)           # entries[3] plus "model" (state_dict), "arch",
                                                 # "normalize_stats", "classes"
"""
import json
import math
import os
import re

from scratchcnn.atomic import atomic_write
from scratchcnn.config import MAX_SNAPSHOTS  # noqa: F401  (the bound, checked by TrainConfig.validate)
from scratchcnn.errors import UserError

FOLDER = "snapshots"
INDEX = "index.json"
_NAME = re.compile(r"epoch-(\d+)-step-(\d+)\.pth")
_TEMP = re.compile(r"(?:epoch-\d+-step-\d+\.pth|index\.json)\.[a-z0-9_]{8}\.tmp")   # atomic_write's


def snapshot_steps(steps_per_epoch, k):
    """The steps (1-based, within an epoch) after which a snapshot is kept: floor((j+1) S / k)."""
    return [(j + 1) * steps_per_epoch // k for j in range(k)]


def snapshot_cost(arch):
    """(floats, bytes) of one snapshot of the network ``arch``: every value of its state_dict
    (parameters and buffers), 4 bytes each (8 for int64 counters); torch.save adds a few KB."""
    floats = nbytes = 0
    for shape, dtype in arch.state_shapes().values():
        n = math.prod(shape)
        floats += n
        nbytes += n * (8 if dtype == "int64" else 4)
    return floats, nbytes


def describe_cost(arch):
    """E.g. "4.2 M floats = 16.8 MB per snapshot" (the tutorial's network)."""
    floats, nbytes = snapshot_cost(arch)
    count = f"{floats / 1e6:.1f} M" if floats >= 1e6 else f"{floats:,}"
    return f"{count} floats = {format_bytes(nbytes)} per snapshot"


def format_bytes(n):
    """Decimal units, as disks are sold: 16.8 MB, 1.3 GB, 17.6 kB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def _file(epoch, step):
    return f"{FOLDER}/epoch-{epoch}-step-{step}.pth"


class SnapshotWriter:
    """Keeps the snapshots of one training run (``train.train`` calls it after every step).

    ``start_epoch``: the epochs already completed (0 for a new run). Creating the writer
    drops what does not belong to this run: for a new run every old snapshot, when resuming
    the snapshots of epochs after ``start_epoch`` (an interrupted epoch), and their files.
    """

    def __init__(self, out, k, *, steps_per_epoch, batch_size, n_train, start_epoch, arch, config, log=print):
        self.out, self.k = out, k
        self.steps = set(snapshot_steps(steps_per_epoch, k)) if k else set()
        floats, nbytes = snapshot_cost(arch)
        self.meta = {"format": "scratchcnn-snapshots", "per_epoch": k, "steps_per_epoch": steps_per_epoch,
                     "batch_size": batch_size, "train_images": n_train, "floats": floats, "bytes": nbytes,
                     "arch": arch.name, "arch_spec": arch.to_json(),
                     "normalize_stats": config.get("normalize_stats"), "classes": config.get("classes")}
        folder = os.path.join(out, FOLDER)
        kept = [e for e in _read_index(out, missing_ok=True)
                if e["epoch"] <= start_epoch and os.path.isfile(os.path.join(out, e["file"]))]
        keep = {os.path.basename(e["file"]) for e in kept}
        removed = 0
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if (_NAME.fullmatch(name) and name not in keep) or _TEMP.fullmatch(name):
                    os.remove(os.path.join(folder, name))
                    removed += not _TEMP.fullmatch(name)
        if removed:
            log(f"removed {removed} snapshot{'s' if removed != 1 else ''} of epochs this run has not "
                f"completed (or of an earlier run) from {folder}")
        self.entries = kept
        if k or os.path.exists(os.path.join(folder, INDEX)):
            self._write_index()

    def after_step(self, backend, epoch, step):
        """``epoch`` and ``step`` 0-based, as the training loop counts; keeps the weights if
        step + 1 is one of the epoch's snapshot steps."""
        if step + 1 not in self.steps:
            return
        from scratchcnn.checkpoint import save_state_dict

        m = self.meta
        e, s = epoch + 1, step + 1
        entry = {"epoch": e, "step": s, "global_step": epoch * m["steps_per_epoch"] + s,
                 "images_seen": epoch * m["train_images"] + min(s * m["batch_size"], m["train_images"]),
                 "file": _file(e, s)}
        try:
            save_state_dict(os.path.join(self.out, entry["file"]), backend.state_dict())
            self.entries = [x for x in self.entries if (x["epoch"], x["step"]) != (e, s)] + [entry]
            self._write_index()
        except OSError as err:
            raise UserError(f"could not save the snapshot {entry['file']} in {self.out} ({err.strerror or err}); "
                            f"free disk space, then continue with --resume {self.out}") from err

    def _write_index(self):
        text = json.dumps({**self.meta, "snapshots": self.entries}, indent=1).encode()
        atomic_write(os.path.join(self.out, FOLDER, INDEX), lambda f: f.write(text))


def _read_index(run_folder, missing_ok=False):
    """The "snapshots" list of RUN/snapshots/index.json ([] if missing and ``missing_ok``)."""
    return _read_index_file(run_folder, missing_ok).get("snapshots", [])


def _read_index_file(run_folder, missing_ok=False):
    path = os.path.join(run_folder, FOLDER, INDEX)
    if not os.path.isfile(path):
        if missing_ok:
            return {}
        raise UserError(f"{run_folder!r} holds no snapshots ({path} is missing); train with "
                        f"--snapshots K to keep the weights K times per epoch")
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        entries = index["snapshots"]
        ok = isinstance(entries, list) and all(
            isinstance(e, dict) and all(isinstance(e.get(k), int) for k in ("epoch", "step", "global_step",
                                                                            "images_seen"))
            and isinstance(e.get("file"), str) and _NAME.fullmatch(os.path.basename(e["file"]))
            for e in entries)
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError(f"{path} is damaged (not the index train --snapshots writes)")
    return index


def list_snapshots(run_folder):
    """Every snapshot of a run, in training order: ``[{"epoch", "step", "global_step",
    "images_seen", "file" (relative to the run folder), "path"}]``."""
    return [{**e, "path": os.path.join(run_folder, e["file"])} for e in _read_index(run_folder)]


def load_snapshot(run_folder, i, allow_custom=False):
    """Snapshot ``i`` of :func:`list_snapshots` (negative counts from the end): its entry plus
    ``"model"`` (the state_dict, NumPy arrays), ``"arch"`` (the network, an Architecture),
    ``"normalize_stats"`` and ``"classes"`` (as the run's checkpoint records them). Load it into
    a backend with ``make_backend(name, arch=s["arch"]).load_state_dict(s["model"])``."""
    from scratchcnn import architecture
    from scratchcnn.checkpoint import load_checkpoint

    index = _read_index_file(run_folder)
    entries = list_snapshots(run_folder)
    if isinstance(i, bool) or not isinstance(i, int) or not -len(entries) <= i < len(entries):
        raise UserError(f"snapshot {i!r} is out of range: {run_folder} has {len(entries)} "
                        f"(0..{len(entries) - 1})")
    entry = entries[i]
    try:
        arch = architecture.resolve(index["arch_spec"], None, name=str(index.get("arch", "custom")),
                                    allow_custom=allow_custom)
    except (KeyError, TypeError) as e:
        raise UserError(f"{os.path.join(run_folder, FOLDER, INDEX)} is damaged (no network spec)") from e
    ckpt = load_checkpoint(entry["path"], arch=arch)
    return {**entry, "model": ckpt["model"], "arch": arch, "normalize_stats": index.get("normalize_stats"),
            "classes": index.get("classes")}
