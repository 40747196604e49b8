"""``TrainConfig``: every setting of a training run, and how each is checked.

Its own module so that both the training loop (``scratchcnn.train``) and the
checkpoint loader (``scratchcnn.checkpoint``, which validates a stored config)
can import it without importing each other.
"""
import math
from dataclasses import dataclass, fields

from scratchcnn.data import check_sizes
from scratchcnn.errors import UserError
from scratchcnn.schedules import Schedule, check_schedule

# The most snapshots (train --snapshots K: K per epoch) a run may keep; 2,000 of the
# tutorial's network take 34 GB.
MAX_SNAPSHOTS = 2000

# What each --recipe changes from TrainConfig's defaults (which are the tutorial's).
# docs/training-and-recipes.md ("Past the tutorial's 70%") gives the reasoning for "improved".
RECIPES = {
    "tutorial": {},
    "improved": {"epochs": 30, "lr": 0.02, "augment": True, "weight_decay": 5e-4,
                 "normalize": True, "lr_schedule": "cosine", "schedule_per": "step",
                 "warmup_epochs": 2, "warmup_factor": 0.1},
}


@dataclass
class TrainConfig:
    arch: str = "tutorial"       # the network: a preset name or a JSON spec file (scratchcnn.architecture)
    backend: str = "scratch"
    device: str = "cpu"
    dataset: str = "synthetic"
    data_dir: str = "data"
    download: bool = False
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.001
    momentum: float = 0.9
    seed: int = 0
    train_size: int = 0          # 0: the whole split
    test_size: int = 0
    normalize: bool = False      # per-channel (x - mean) / std from the training set
    layer_stats: bool = False    # per-layer activation/gradient/update statistics each epoch
    fused: bool = True           # scratch: the fused fast path; False: the layers one by one
    recipe: str = "tutorial"     # which RECIPES entry set the defaults
    augment: bool = False        # random crop (4-pixel zero padding) and horizontal flip
    weight_decay: float = 0.0    # torch.optim.SGD's: added to the gradient before momentum
    lr_schedule: str = "constant"    # constant, cosine or step (scratchcnn.schedules)
    schedule_per: str = "epoch"  # the schedule advances once per epoch or once per step
    warmup_epochs: int = 0       # linear warm-up from lr * warmup_factor to lr
    warmup_factor: float = 0.1
    lr_step: int = 10            # step schedule: multiply the lr by lr_gamma every lr_step epochs
    lr_gamma: float = 0.1
    lr_min: float = 0.0          # cosine schedule: the lr it ends at
    snapshots: int = 0           # weights kept this many times per epoch (scratchcnn.study.snapshots)

    def schedule(self, steps_per_epoch=1):
        """The :class:`scratchcnn.schedules.Schedule` these settings describe."""
        return Schedule(name=self.lr_schedule, lr0=self.lr, epochs=self.epochs,
                        steps_per_epoch=steps_per_epoch, per=self.schedule_per,
                        warmup=self.warmup_epochs, warmup_factor=self.warmup_factor,
                        step_size=self.lr_step, gamma=self.lr_gamma, eta_min=self.lr_min)

    def validate(self, n_train=None):
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive number (got {self.lr}); the tutorial uses 0.001")
        if not (0 <= self.momentum < 1):
            raise UserError(f"--momentum must be in [0, 1) (got {self.momentum}); the tutorial uses 0.9")
        for flag, v in (("--train-size", self.train_size), ("--test-size", self.test_size)):
            if v < 0:
                raise UserError(f"{flag} must be a number of images, or 0 for the whole split (got {v})")
        if self.seed < 0:
            raise UserError(f"--seed must be 0 or more (got {self.seed})")
        if self.recipe not in RECIPES:
            raise UserError(f"--recipe must be one of {', '.join(RECIPES)} (got {self.recipe!r})")
        if self.snapshots < 0:
            raise UserError(f"--snapshots must be 0 (none) or a number per epoch (got {self.snapshots})")
        if self.snapshots * self.epochs > MAX_SNAPSHOTS:
            raise UserError(f"--snapshots {self.snapshots} for {self.epochs} epochs keeps "
                            f"{self.snapshots * self.epochs} snapshots, more than {MAX_SNAPSHOTS:,}; use at "
                            f"most {max(MAX_SNAPSHOTS // self.epochs, 1)} per epoch")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise UserError(f"--weight-decay must be 0 or a positive number (got {self.weight_decay})")
        problems = check_schedule(self.schedule())
        if problems:
            raise UserError(problems[0])
        check_sizes(self.dataset, self.train_size, self.test_size, self.batch_size)
        if n_train is not None and self.batch_size > n_train:
            raise UserError(f"--batch-size {self.batch_size} is larger than the training set "
                            f"({n_train} images); use a smaller --batch-size")
        steps = -(-n_train // self.batch_size) if n_train is not None else None
        if steps is not None and self.snapshots > steps:
            raise UserError(f"--snapshots {self.snapshots} is more than the {steps} steps of an epoch; "
                            f"use at most {steps} (one per step)")

    @classmethod
    def from_dict(cls, d, source="the settings"):
        """The known keys of ``d``, each checked to have its field's type (an int passes for a float)."""
        kept = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v, want = d[f.name], type(f.default)
            ok = isinstance(v, want) and (want is bool or not isinstance(v, bool))
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v, ok = float(v), True
            if not ok:
                raise UserError(f"{source}: {f.name} is {v!r}; expected {want.__name__}")
            kept[f.name] = v
        return cls(**kept)
