"""Checkpoints: one file, written atomically, loaded without running code from it.

A training checkpoint (``runs/NAME/checkpoint.pth``) is a ``torch.save`` of a
plain dict, the same for both backends::

    {"format": "scratchcnn-checkpoint", "version": 1,
     "model": {"conv1.weight": Tensor, ...},         # torch's state_dict keys
     "optimizer": {"conv1.weight": Tensor, ...},     # SGD momentum buffers (absent before step 1)
     "epoch": 3,                                      # completed epochs
     "metrics": [{"epoch": 1, "train_loss": ...}, ...],
     "config": {"backend": "scratch", "lr": 0.001, "arch": "tutorial",
                "arch_spec": [{"name": "conv1", "kind": "Conv2d", ...}, ...], ...}}

``config["arch_spec"]`` is the network, every layer written out
(``architecture.Architecture.to_json``), so every command that takes a checkpoint
rebuilds exactly the network it holds. A bare state_dict has no spec: it is read as
the tutorial's network (or ``arch``, a preset or JSON file the caller names), and
when its keys or shapes do not fit, the error says which preset they do fit.

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

from scratchcnn import architecture
from scratchcnn.atomic import atomic_write
from scratchcnn.config import TrainConfig
from scratchcnn.errors import UserError

FORMAT = "scratchcnn-checkpoint"
VERSION = 1

def _to_tensors(arrays):
    import torch
    return OrderedDict((k, torch.from_numpy(np.array(v, order="C"))) for k, v in arrays.items())


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


def load_checkpoint(path, arch=None, allow_custom=False):
    """Load a training checkpoint or a bare tutorial state_dict.

    Returns ``{"model", "optimizer", "epoch", "metrics", "config", "arch"}``: numpy arrays
    for the first two (empty/zero/None for a bare state_dict) and the network's
    ``architecture.Architecture``: the checkpoint's own spec, or for a bare state_dict
    ``arch`` (a preset name or JSON file; default the tutorial's). ``allow_custom``: load
    a learner's own layer files named in the spec (that runs their code). Every failure is
    a :class:`UserError`.
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
        recorded = _recorded_arch(ckpt["config"], path, allow_custom)
        ckpt["arch"] = recorded or _bare_arch(ckpt["model"], arch, path)
        check_architecture(ckpt["model"], ckpt["arch"], path, bare=recorded is None)
        _check_training_state(ckpt, path)
    elif isinstance(obj, dict) and all(isinstance(k, str) for k in obj) and obj:
        ckpt = {"model": _checked_tensors(obj, path), "optimizer": {}, "epoch": 0,
                "metrics": [], "config": {}}
        ckpt["arch"] = _bare_arch(ckpt["model"], arch, path)
        check_architecture(ckpt["model"], ckpt["arch"], path, bare=True)
    else:
        raise UserError(f"{path!r} holds a {type(obj).__name__}, not a state_dict or a scratchcnn "
                        f"checkpoint")
    return ckpt


def _recorded_arch(config, path, allow_custom):
    """The Architecture a scratchcnn checkpoint records (checkpoints written before
    networks were a choice record none: the tutorial's, sized by their own last layer)."""
    spec = config.get("arch_spec") if isinstance(config, dict) else None
    if spec is None:
        return None
    try:
        return architecture.resolve(spec, None, name=str(config.get("arch", "custom")), allow_custom=allow_custom)
    except architecture.SpecError as e:
        if "pass --allow-custom-layers" in str(e):
            raise UserError(f"{path!r}: {e}") from None
        raise UserError(f"{path!r} is a damaged scratchcnn checkpoint: its network spec does not "
                        f"resolve ({e})") from None


def _bare_arch(state_dict, arch, path):
    """``arch`` (default the tutorial's), its last Linear sized by the state_dict's own weight
    of that name (the tutorial's .pth for 10 classes, a run's model.pth for a 3-class folder)."""
    try:
        probe = architecture.load(arch or "tutorial", 1)          # only to find the last Linear's name
        last = probe.of_kind("Linear")[-1].name if probe.of_kind("Linear") else None
        weight = state_dict.get(f"{last}.weight") if last else None
        rows = int(weight.shape[0]) if weight is not None and weight.ndim == 2 else architecture.NUM_CLASSES
        return architecture.load(arch or "tutorial", rows)
    except architecture.SpecError as e:
        raise UserError(f"{path!r} holds bare weights and --arch {arch!r} cannot describe them ({e})") from None


def _checked_tensors(d, path):
    """{name: numpy array} from a mapping of names to tensors: float32 for floating-point
    tensors, int64 for the integer counters torch keeps as buffers (``num_batches_tracked``)."""
    import torch
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                          for k, v in d.items()):
        raise UserError(f"{path!r} is not a state_dict: expected a mapping of names to tensors")
    wrong = [f"{k} ({v.dtype})" for k, v in d.items()
             if not (v.is_floating_point() or (k.endswith(".num_batches_tracked") and not v.is_complex()
                                               and v.dtype != torch.bool))]
    if wrong:
        raise UserError(f"{path!r} is not a state_dict of weights: {', '.join(wrong[:4])} "
                        f"should be floating point")
    return OrderedDict((k, v.detach().cpu().float().numpy() if v.is_floating_point()
                        else v.detach().cpu().to(torch.int64).numpy()) for k, v in d.items())


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
    shapes = ckpt["arch"].param_shapes()
    wrong = [k for k, v in ckpt["optimizer"].items()
             if k not in shapes or tuple(v.shape) != shapes[k] or v.dtype != np.float32]
    if wrong:
        raise UserError(f"{path!r} is a damaged scratchcnn checkpoint: its optimizer state for "
                        f"{', '.join(wrong[:4])} does not match the model's parameters")


def check_architecture(state_dict, arch, path="state_dict", bare=False):
    """Raise a UserError naming every missing, unexpected or mis-shaped key of ``state_dict``
    against the network ``arch`` (``bare``: a state_dict without a spec; then the message
    also names the presets whose keys and shapes it does fit)."""
    want = arch.state_shapes()
    problems = []
    missing = [k for k in want if k not in state_dict]
    unexpected = [k for k in state_dict if k not in want]
    if missing:
        problems.append("missing " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
    for k, (shape, dtype) in want.items():
        if k in state_dict and tuple(state_dict[k].shape) != shape:
            problems.append(f"{k} has shape {tuple(state_dict[k].shape)}, expected {shape}")
        elif k in state_dict and (dtype == "int64") != (state_dict[k].dtype.kind in "iu"):
            problems.append(f"{k} is {state_dict[k].dtype}, expected {'an integer' if dtype == 'int64' else 'float'}")
    if problems:
        what = f"the {arch.name} network" if arch.name in architecture.PRESETS else f"the network {arch.name!r}"
        hint = ""
        if bare:
            fits = architecture.matching_presets({k: tuple(v.shape) for k, v in state_dict.items()})
            hint = (f"; its weights fit the preset {fits[0]}: pass --arch {fits[0]}" if fits else
                    "; it holds " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(state_dict.items())[:4])
                    + " ...: pass --arch with a spec of those layers (scratchcnn arch show NAME shows one)")
        raise UserError(f"{path!r} does not fit {what}: " + "; ".join(problems[:6]) + hint)
    not_finite = [k for k, v in state_dict.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if not_finite:
        raise UserError(f"{path!r} holds NaN or infinite weights ({', '.join(not_finite)}); "
                        f"it cannot be used (a diverged or damaged run?)")
