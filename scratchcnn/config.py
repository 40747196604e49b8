"""``TrainConfig``: every setting of a training run, and how each is checked.

Its own module so that both the training loop (``scratchcnn.train``) and the
checkpoint loader (``scratchcnn.checkpoint``, which validates a stored config)
can import it without importing each other.
"""
import math
from dataclasses import dataclass, fields

from scratchcnn.data import check_sizes
from scratchcnn.errors import UserError


@dataclass
class TrainConfig:
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
        check_sizes(self.dataset, self.train_size, self.test_size, self.batch_size)
        if n_train is not None and self.batch_size > n_train:
            raise UserError(f"--batch-size {self.batch_size} is larger than the training set "
                            f"({n_train} images); use a smaller --batch-size")

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
