"""The one training loop, for both backends.

The network is ``cfg.arch`` (a preset or a JSON spec, ``scratchcnn.architecture``), its
last layer sized to the dataset's classes; a resumed run rebuilds the one its
checkpoint recorded. Each epoch: seed the dropout randomness from ``(seed, epoch)``, run the shuffled
batches (order from ``(seed, epoch)``, augmentation from ``(seed, epoch, batch)``)
through ``backend.train_step``, each with the lr its schedule gives for that
(epoch, step), measure test-set loss and accuracy, then write ``checkpoint.pth``
(atomically), ``model.pth``, ``metrics.json`` and ``curves.png`` into the run
folder. Because all randomness and the lr derive from the position in training,
``--resume`` from the last completed epoch ends with exactly the weights an
uninterrupted run has.

Two recipes (``--recipe``) set the defaults of the options; any option given
explicitly wins:

* ``tutorial``: the tutorial's settings (lr 0.001, momentum 0.9, batch 32, 20
  epochs, constant lr, no augmentation, no weight decay, pixels in [0, 1]).
* ``improved``: see ``scratchcnn.config.RECIPES`` and docs/training-and-recipes.md for the reasoning.
"""
import json
import math
import os
import time
from dataclasses import asdict

import numpy as np

from scratchcnn import architecture
from scratchcnn import checkpoint as ckpt_io
from scratchcnn.atomic import atomic_write, remove_stale_temp_files
from scratchcnn.backends import epoch_seed, loss_and_accuracy, make_backend
from scratchcnn.data import iterate_batches, load_dataset, num_batches
from scratchcnn.errors import UserError


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def channel_stats(data, chunk=4096):
    """Per-channel mean and (population) std of a uint8 dataset, in [0, 1] units.

    Exact integer sums of x and x^2 per channel, ``chunk`` images at a time, so no float copy of
    the whole dataset is made (CIFAR-10's would take 1.2 GB, and NumPy's std makes two more):
    mean = S1 / n, var = S2 / n - mean^2, both divided by 255 (and 255^2) at the end.
    """
    x = data.x.reshape(len(data), 3, -1)
    s1, s2 = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for i in range(0, len(x), chunk):
        c = x[i:i + chunk].astype(np.int64)
        s1 += c.sum(axis=(0, 2))
        s2 += (c * c).sum(axis=(0, 2))
    n = x.shape[0] * x.shape[2]
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    return (mean / 255.0).tolist(), (np.sqrt(var) / 255.0).tolist()


# What a run folder holds; each is written with atomic.atomic_write.
RUN_FILES = ("checkpoint.pth", "model.pth", "metrics.json", "curves.png", "layer_stats.png")


def train(cfg, out, *, resume_from=None, overwrite=False, progress=True, log=print, check_layers=False):
    """Train ``cfg.backend`` on ``cfg.dataset``; return the list of per-epoch metrics.

    ``resume_from``: the loaded ``out/checkpoint.pth`` (``checkpoint.load_checkpoint``) to
    continue from its last completed epoch; None starts a new run. ``check_layers``: first
    check every layer against torch on the first batch (``check_layers_against_torch``).
    """
    ckpt_path = os.path.join(out, "checkpoint.pth")
    state = resume_from
    if state is None and os.path.exists(ckpt_path) and not overwrite:
        raise UserError(f"{out} already holds a training run; continue it with --resume {out}, "
                        f"start over with --overwrite, or choose another --out")
    cfg.validate()
    if state is None:                 # a spec that cannot work fails before any data is loaded
        architecture.load(cfg.arch, architecture.NUM_CLASSES)
    train_set, test_set = load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.seed,
                                       cfg.train_size or None, cfg.test_size or None)
    cfg.validate(n_train=len(train_set))
    arch = state["arch"] if state is not None else architecture.load(cfg.arch, len(train_set.classes))
    normalize = channel_stats(train_set) if cfg.normalize else None

    backend = make_backend(cfg.backend, arch=arch, device=cfg.device, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, seed=cfg.seed, fused=cfg.fused,
                           n_classes=len(train_set.classes))
    backend.warmup()                  # kernels compiled or loaded outside every timing
    metrics, start = [], 0
    if state is not None:
        backend.load_state_dict(state["model"])
        backend.load_optimizer_state(state["optimizer"])
        metrics, start = state["metrics"], state["epoch"]
        log(f"resuming {out} after epoch {start} of {cfg.epochs}")
        if start >= cfg.epochs:
            log(f"nothing to do: {start} epochs done; pass a larger --epochs to train further")
            return metrics
    if check_layers:
        x, y = next(iterate_batches(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=start,
                                    normalize=normalize, augment=cfg.augment))
        check_layers_against_torch(arch, x, y, backend.state_dict(), log)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run folder {out!r} ({e.strerror}); choose another --out") from e
    for path in remove_stale_temp_files(out, RUN_FILES):
        log(f"removed {path}, left by a save that was interrupted")
    log(f"network {arch.name}: {len(arch.layers)} layers, {arch.n_params:,} parameters, "
        f"{arch.num_classes} outputs; {cfg.backend} runs {backend.path_note}")
    log(f"training {cfg.backend} on {cfg.device}: {cfg.dataset} ({len(train_set)} train / "
        f"{len(test_set)} test images), recipe {cfg.recipe}, {cfg.epochs} epochs, batch "
        f"{cfg.batch_size}, lr {cfg.lr} ({_describe_schedule(cfg)}), momentum {cfg.momentum}, "
        f"weight decay {cfg.weight_decay}, augment {'on' if cfg.augment else 'off'}, "
        f"seed {cfg.seed} -> {out}")
    if cfg.augment and cfg.dataset == "synthetic":
        log("note: --augment flips images left-right, which turns the built-in dataset's "
            "'diagonal' stripes into 'antidiagonal' ones (and back): on it, augmentation "
            "changes labels. It is meant for photos (cifar10, folder).")
    steps = num_batches(len(train_set), cfg.batch_size)
    schedule = cfg.schedule(steps)
    config = {**asdict(cfg), "arch_spec": arch.to_json(), "normalize_stats": normalize,
              "classes": list(train_set.classes)}
    snaps = _snapshot_writer(cfg, out, state, steps, len(train_set), arch, config, log)
    if cfg.layer_stats:             # one fixed probe batch: the first, unshuffled
        from scratchcnn.study.layer_stats import format_layer_stats, probe_layer_stats
        probe_x, probe_y = next(iterate_batches(train_set, cfg.batch_size, normalize=normalize))

    for epoch in range(start, cfg.epochs):
        backend.seed(epoch_seed(cfg.seed, epoch))
        loss_sum, correct, seen = 0.0, 0, 0
        t0 = time.perf_counter()
        bar = _progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        try:
            batches = iterate_batches(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                      epoch=epoch, normalize=normalize, augment=cfg.augment)
            for step, (x, y) in enumerate(batches):
                backend.set_lr(schedule.lr(epoch, step))
                loss, n_right = backend.train_step(x, y)
                if not math.isfinite(loss):
                    last = (f"the checkpoint of epoch {epoch} in {ckpt_path} is kept"
                            if epoch > 0 else "no checkpoint was written")
                    raise TrainingDiverged(
                        f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; training stopped "
                        f"({last}); try a lower --lr than {cfg.lr}")
                loss_sum += loss * len(y)
                correct += n_right
                seen += len(y)
                if snaps is not None:
                    snaps.after_step(backend, epoch, step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                                refresh=False)
            bar.close()
            seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            test_loss, test_acc = loss_and_accuracy(backend, test_set, normalize=normalize)
            record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                      "test_loss": test_loss, "test_acc": test_acc, "lr": schedule.lr(epoch, steps - 1),
                      "seconds": seconds, "images_per_s": seen / seconds,
                      "eval_seconds": time.perf_counter() - t0}
            log(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {record['train_loss']:.4f}  "
                f"train acc {100 * record['train_acc']:5.2f}%  test loss {test_loss:.4f}  "
                f"test acc {100 * test_acc:5.2f}%  {seconds:6.1f} s  "
                f"{record['images_per_s']:7.0f} img/s")
            if cfg.layer_stats:      # leaves weights, momentum and dropout state as they were
                record["layer_stats"] = probe_layer_stats(backend, probe_x, probe_y)
                log("  " + format_layer_stats(record["layer_stats"]))
            save_run(out, backend, epoch + 1, metrics + [record], config)
            metrics.append(record)
        except KeyboardInterrupt:      # Ctrl-C anywhere in the epoch, saving included
            bar.close()
            done = f"epoch {epoch} is saved in {ckpt_path}" if epoch > 0 else "no epoch was completed"
            log(f"\ninterrupted during epoch {epoch + 1}; {done}. "
                f"Continue with: scratchcnn train --resume {out}")
            raise
    log(f"done: test accuracy {100 * metrics[-1]['test_acc']:.2f}% after {len(metrics)} epochs; "
        f"checkpoint {ckpt_path}, metrics {os.path.join(out, 'metrics.json')}, "
        f"plot {os.path.join(out, 'curves.png')}")
    return metrics


def check_layers_against_torch(arch, x, y, state_dict, log=print, n=8):
    """``train --check-layers``: one float64 training step on the first ``n`` images of (x, y)
    with the run's weights and dropout masks, every layer against its torch twin on its own
    input and upstream gradient (``parity.check_layers``). Logs one line when all agree; raises
    UserError naming the FIRST layer, in forward order, that does not."""
    import json

    from scratchcnn import parity
    from scratchcnn.layer_base import REGISTRY
    checks = parity.check_layers(arch, x[:n], y[:n], state_dict)
    bad, what = parity.first_disagreement(checks)
    if bad is None:
        err, c, w = max(((v, c, k) for c in checks for k, v in c.errors.items()), key=lambda t: t[0])
        params = [k[1:] for k in c.errors if k.startswith("d") and k != "dx"]
        log(f"check-layers: all {len(checks)} layers agree with torch (float64, one training step on "
            f"{min(n, len(y))} images; worst error {err:.1e}, {c.name} {parity.quantity_name(w, params)})")
        return checks
    params = [k[1:] for k in bad.errors if k.startswith("d") and k != "dx"]
    spec = arch.layers[bad.index - 1]
    hint = ""
    if spec.kind not in REGISTRY:                 # a learner's own layer: how to check it alone
        path, _, name = spec.kind.rpartition(":")
        args = f" --args '{json.dumps(spec.args)}'" if spec.args else ""
        path = min(os.path.relpath(path), path, key=len)
        hint = f"; check it alone with: scratchcnn checklayer {path}:{name}{args}"
    raise UserError(f"--check-layers: layer {bad.index} ({bad.name}, {bad.kind}) is the first to disagree with "
                    f"torch.nn.{bad.twin}: its {parity.quantity_name(what, params)} is off by "
                    f"{bad.errors[what]:.1e} (tolerance {parity.CHECK_LAYERS_TOL:g}, float64); training "
                    f"stopped{hint}")


def _snapshot_writer(cfg, out, state, steps, n_train, arch, config, log):
    """``--snapshots K`` (checked by ``cfg.validate``): say what it costs on disk and return the
    writer that keeps the weights K times per epoch; None without it. A new run in a folder that
    holds an earlier run's snapshots gets a writer too, which drops them."""
    from scratchcnn.study import snapshots

    if not cfg.snapshots and (state is not None or not os.path.isdir(os.path.join(out, snapshots.FOLDER))):
        return None
    if cfg.snapshots:
        at = snapshots.snapshot_steps(steps, cfg.snapshots)
        total = cfg.snapshots * cfg.epochs * snapshots.snapshot_cost(arch)[1]
        log(f"snapshots: {cfg.snapshots} per epoch, after step{'s' if len(at) > 1 else ''} "
            f"{', '.join(map(str, at[:6]))}{', ...' if len(at) > 6 else ''} of {steps}; "
            f"{snapshots.describe_cost(arch)}, {snapshots.format_bytes(total)} for {cfg.epochs} epochs "
            f"in {os.path.join(out, snapshots.FOLDER)}")
    return snapshots.SnapshotWriter(out, cfg.snapshots, steps_per_epoch=steps, batch_size=cfg.batch_size,
                                    n_train=n_train, start_epoch=state["epoch"] if state else 0, arch=arch,
                                    config=config, log=log)


def _describe_schedule(cfg):
    if cfg.lr_schedule == "constant" and not cfg.warmup_epochs:
        return "constant"
    what = {"constant": "constant", "cosine": f"cosine to {cfg.lr_min}",
            "step": f"x{cfg.lr_gamma} every {cfg.lr_step} epochs"}[cfg.lr_schedule]
    if cfg.warmup_epochs:
        what = f"{cfg.warmup_epochs} warm-up epochs from x{cfg.warmup_factor}, then {what}"
    return f"{what}, per {cfg.schedule_per}"


def save_run(out, backend, epoch, metrics, config):
    """Everything a finished epoch leaves behind; each file is replaced atomically.

    Weights that are no longer finite are never saved: the last good checkpoint stays.
    """
    state = backend.state_dict()
    bad = [k for k, v in state.items() if not np.isfinite(v).all()]
    if bad:
        raise TrainingDiverged(
            f"the weights ({', '.join(bad)}) became NaN or infinite in epoch {epoch}; training "
            f"stopped and they were not saved; try a lower --lr than {config['lr']}")
    from scratchcnn.plots import plot_curves
    try:
        ckpt_io.save_checkpoint(os.path.join(out, "checkpoint.pth"), model=state,
                                optimizer=backend.optimizer_state(), epoch=epoch,
                                metrics=metrics, config=config)
        ckpt_io.save_state_dict(os.path.join(out, "model.pth"), state)
        text = json.dumps({"config": config, "machine": machine_record(), "epochs": metrics}, indent=2).encode()
        atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(text))
        plot_curves(metrics, os.path.join(out, "curves.png"),
                    title=f"{config['backend']}, {os.path.basename(str(config.get('arch', 'tutorial')))}, "
                          f"on {config['dataset']}")
        with_stats = [m for m in metrics if "layer_stats" in m]
        if with_stats:
            from scratchcnn.study.layer_stats import plot_layer_stats
            plot_layer_stats(with_stats, os.path.join(out, "layer_stats.png"))
    except OSError as e:
        raise UserError(f"could not save epoch {epoch} in {out} ({e.strerror or e}); the files "
                        f"of the epoch before are kept. Free disk space or fix permissions, then "
                        f"continue with --resume {out}") from e


def _progress(total, desc, enabled):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5)


def machine_record():
    """Where the latest epoch ran, for metrics.json: the CPU model, the CPUs this process may use,
    Python and the versions of the libraries that set the speed."""
    import platform
    from importlib import metadata
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for lib in ("numpy", "numba", "torch"):
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {"cpu": cpu, "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "python": platform.python_version(), **versions}
