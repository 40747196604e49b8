"""Checkpoints: one file, written atomically, loaded without running code from it.

A training checkpoint (``runs/NAME/checkpoint.pth``) is a ``torch.save`` of a
plain dict, the same for both backends::

    {"format": "scratchcnn-checkpoint", "version": 1,
     "model": {"conv1.weight": Tensor, ...},         # torch's state_dict keys
     "optimizer": {"conv1.weight": Tensor, ...},     # SGD momentum buffers (absent before step 1)
     "epoch": 3,                                      # completed epochs
     "metrics": [{"epoch": 1, "train_loss": ...}, ...],
     "config": {"backend": "scratch", "lr": 0.001, ...}}

Beside it, ``model.pth`` is the bare ``state_dict``, exactly what the
tutorial's ``torch.save(model.state_dict(), ...)`` writes, so the tutorial's
code can load our weights and we can load the tutorial's.

Loading always uses ``torch.load(weights_only=True)``: tensors, numbers,
strings and containers only; a pickle that asks for anything else is refused.
"""
import os
import warnings
from collections import OrderedDict

import numpy as np

from scratchcnn.architecture import PARAM_SHAPES
from scratchcnn.atomic import atomic_write
from scratchcnn.config import TrainConfig
from scratchcnn.errors import UserError

FORMAT = "scratchcnn-checkpoint"
VERSION = 1

def _to_tensors(arrays):
    import torch
    return OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in arrays.items())


def save_state_dict(path, state_dict):
    """The tutorial's format: ``torch.save`` of the bare state_dict (numpy arrays in, tensors out)."""
    import torch
    atomic_write(path, lambda f: torch.save(_to_tensors(state_dict), f))


def save_checkpoint(path, *, model, optimizer, epoch, metrics, config):
    """Write a full training checkpoint atomically (arrays as numpy, the rest plain values)."""
    import torch
    payload = {"format": FORMAT, "version": VERSION,
               "model": _to_tensors(model), "optimizer": _to_tensors(optimizer),
               "epoch": int(epoch), "metrics": list(metrics), "config": dict(config)}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path):
    """Load a training checkpoint or a bare tutorial state_dict.

    Returns a dict with numpy arrays: ``{"model", "optimizer", "epoch", "metrics", "config"}``
    (the last four empty/zero for a bare state_dict). Every failure is a :class:`UserError`.
    """
    import pickle
    import torch

    if not os.path.exists(path):
        raise UserError(f"checkpoint {path!r} does not exist; pass the checkpoint.pth or model.pth "
                        f"of a training run (runs/NAME/checkpoint.pth)")
    if os.path.isdir(path):
        raise UserError(f"checkpoint {path!r} is a folder; pass the file inside it, "
                        f"e.g. {os.path.join(path, 'checkpoint.pth')}")
    if os.path.getsize(path) == 0:
        raise UserError(f"checkpoint {path!r} is empty (an interrupted copy?); use another checkpoint")
    try:
        with warnings.catch_warnings():      # e.g. "Detected pickle protocol 4": the error says enough
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's restricted unpickler: random bytes, or a pickle that asks for code.
        lines = [line.strip() for line in str(e).split("WeightsUnpickler error:")[-1].splitlines()
                 if line.strip() and not line.startswith(("Weights only load failed", "Check the doc"))]
        detail = (lines[0] if lines else "refused by torch's weights-only loader")[:160]
        raise UserError(f"{path!r} is not a plain weights file ({detail}); it was not loaded, "
                        f"and no code in it ran. Only load checkpoints from sources you trust") from e
    except Exception as e:   # truncated zip, wrong format: torch raises many types
        first = str(e).strip().splitlines()[0].split(". ")[0][:160] if str(e).strip() else "no detail"
        raise UserError(f"{path!r} is not a readable checkpoint ({type(e).__name__}: {first}); "
                        f"it may be truncated or not a .pth file") from e

    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("version") != VERSION:
            raise UserError(f"{path!r} is a scratchcnn checkpoint of version {obj.get('version')}; "
                            f"this scratchcnn reads version {VERSION}")
        ckpt = {"model": _checked_tensors(obj.get("model"), path),
                "optimizer": _checked_tensors(obj.get("optimizer", {}), path),
                "epoch": obj.get("epoch", 0), "metrics": obj.get("metrics", []),
                "config": obj.get("config", {})}
        _check_training_state(ckpt, path)
    elif isinstance(obj, dict) and all(isinstance(k, str) for k in obj) and obj:
        ckpt = {"model": _checked_tensors(obj, path), "optimizer": {}, "epoch": 0,
                "metrics": [], "config": {}}
    else:
        raise UserError(f"{path!r} holds a {type(obj).__name__}, not a state_dict or a scratchcnn "
                        f"checkpoint")
    check_architecture(ckpt["model"], path)
    return ckpt


def _checked_tensors(d, path):
    """{name: float32 numpy array} from a mapping of names to floating-point tensors."""
    import torch
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                          for k, v in d.items()):
        raise UserError(f"{path!r} is not a state_dict: expected a mapping of names to tensors")
    not_float = [f"{k} ({v.dtype})" for k, v in d.items() if not v.is_floating_point()]
    if not_float:
        raise UserError(f"{path!r} is not a state_dict of weights: {', '.join(not_float[:4])} "
                        f"should be floating point")
    return OrderedDict((k, v.detach().cpu().float().numpy()) for k, v in d.items())


def _check_training_state(ckpt, path):
    """The non-tensor parts of a scratchcnn checkpoint have the types training writes."""
    epoch, metrics, config = ckpt["epoch"], ckpt["metrics"], ckpt["config"]
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0) \
            or not (isinstance(metrics, list) and all(isinstance(m, dict) for m in metrics)) \
            or not (isinstance(config, dict) and all(isinstance(k, str) for k in config)):
        raise UserError(f"{path!r} is a damaged scratchcnn checkpoint (its epoch, metrics or config "
                        f"has the wrong type); use another checkpoint")
    TrainConfig.from_dict(config, source=path)
    stats = config.get("normalize_stats")
    if stats is not None:
        arr = np.asarray(stats, dtype=object)
        try:
            ok = arr.shape == (2, 3) and np.isfinite(arr.astype(np.float64)).all() \
                and (arr[1].astype(np.float64) > 0).all()
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"{path!r} is a damaged scratchcnn checkpoint: normalize_stats should be "
                            f"[3 means, 3 positive stds], got {stats!r:.80}")
    wrong = [k for k, v in ckpt["optimizer"].items()
             if k not in PARAM_SHAPES or tuple(v.shape) != PARAM_SHAPES[k]]
    if wrong:
        raise UserError(f"{path!r} is a damaged scratchcnn checkpoint: its optimizer state for "
                        f"{', '.join(wrong[:4])} does not match the model's parameters")


def check_architecture(state_dict, path="state_dict"):
    """Raise a UserError naming every missing, unexpected or mis-shaped key."""
    problems = []
    missing = [k for k in PARAM_SHAPES if k not in state_dict]
    unexpected = [k for k in state_dict if k not in PARAM_SHAPES]
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
    for k, shape in PARAM_SHAPES.items():
        if k in state_dict and tuple(state_dict[k].shape) != shape:
            problems.append(f"{k} has shape {tuple(state_dict[k].shape)}, expected {shape}")
    if problems:
        raise UserError(f"{path!r} is not the tutorial's CIFAR10Model: " + "; ".join(problems))
    not_finite = [k for k, v in state_dict.items() if not np.isfinite(v).all()]
    if not_finite:
        raise UserError(f"{path!r} holds NaN or infinite weights ({', '.join(not_finite)}); "
                        f"it cannot be used (a diverged or damaged run?)")
