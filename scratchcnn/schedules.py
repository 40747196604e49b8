"""Learning-rate schedules as pure functions of the position in training.

The lr used for a step depends only on *where* that step is (epoch, step in the
epoch), never on what happened before, so one formula serves both backends and
``--resume`` lands on the right lr without storing any scheduler state.

Each schedule reproduces a ``torch.optim.lr_scheduler`` chain. ``t`` counts
``scheduler.step()`` calls: epochs (``per="epoch"``, torch's usual
once-per-epoch call) or optimizer steps (``per="step"``, a call after every
batch). ``T`` is the total (epochs, or epochs x batches per epoch) and ``W``
the warm-up length in the same unit. ``lr0`` is ``--lr``.

    constant   lr(t) = lr0                                           (no scheduler)
    cosine     lr(t) = eta_min + (lr0 - eta_min) (1 + cos(pi t' / T')) / 2,
               t' = t - W, T' = T - W                                (CosineAnnealingLR(T_max=T'))
    step       lr(t) = lr0 * gamma ** floor(t' / S),  S = step size  (StepLR(step_size=S, gamma))

with an optional linear warm-up over the first W units (``LinearLR(start_factor=f,
total_iters=W)``, chained to the schedule above by ``SequentialLR(milestones=[W])``):

    warm-up    lr(t) = lr0 * (f + (1 - f) t / W)          for t < W

A run shorter than its warm-up (``--recipe improved --epochs 1`` for a quick
try) is warm-up from start to end; the cosine part (t' < T' always holds
during training) is then never reached, so T' <= 0 never divides.

torch computes these recursively (each lr from the previous one); the closed
forms here give the same numbers to float64 rounding (tested to a relative
1e-12 against ``get_last_lr()`` at every step, in both modes, with and without
warm-up: ``tests/test_schedules.py``).
"""
import math
from dataclasses import dataclass

SCHEDULES = ("constant", "cosine", "step")
UNITS = ("epoch", "step")


@dataclass(frozen=True)
class Schedule:
    """``Schedule(...).lr(epoch, step)``: the lr of batch ``step`` (0-based) of ``epoch`` (0-based).

    ``warmup``, ``step_size`` and ``epochs`` are in epochs; with ``per="step"``
    they are scaled by ``steps_per_epoch`` (warm-up over W epochs = W x
    steps_per_epoch steps; cosine over all steps of the run).
    """
    name: str = "constant"
    lr0: float = 0.001
    epochs: int = 20
    steps_per_epoch: int = 1
    per: str = "epoch"
    warmup: int = 0              # epochs of linear warm-up
    warmup_factor: float = 0.1   # warm-up starts at lr0 * warmup_factor
    step_size: int = 10          # step: multiply by gamma every step_size epochs (after warm-up)
    gamma: float = 0.1
    eta_min: float = 0.0         # cosine: the lr it ends at

    def _unit(self):
        return self.steps_per_epoch if self.per == "step" else 1

    def t(self, epoch, step):
        """How many ``scheduler.step()`` calls torch has made before this batch."""
        return epoch * self.steps_per_epoch + step if self.per == "step" else epoch

    def lr(self, epoch, step=0):
        return self.lr_at(self.t(epoch, step))

    def lr_at(self, t):
        """The lr after ``t`` scheduler steps (torch's ``get_last_lr()[0]``)."""
        u = self._unit()
        w = self.warmup * u
        if t < w:
            f = self.warmup_factor
            return self.lr0 * (f + (1.0 - f) * t / w)
        t -= w
        if self.name == "cosine":
            span = self.epochs * u - w
            return self.eta_min + (self.lr0 - self.eta_min) * (1 + math.cos(math.pi * t / span)) / 2
        if self.name == "step":
            return self.lr0 * self.gamma ** (t // (self.step_size * u))
        return self.lr0


def check_schedule(s):
    """Problems with a schedule's settings, as a list of messages naming the options."""
    problems = []
    if s.name not in SCHEDULES:
        problems.append(f"--lr-schedule must be one of {', '.join(SCHEDULES)} (got {s.name!r})")
    if s.per not in UNITS:
        problems.append(f"--schedule-per must be epoch or step (got {s.per!r})")
    if s.warmup < 0:
        problems.append(f"--warmup-epochs must be 0 or more (got {s.warmup})")
    if not (0 < s.warmup_factor <= 1):
        problems.append(f"--warmup-factor must be in (0, 1] (got {s.warmup_factor})")
    if s.step_size < 1:
        problems.append(f"--lr-step must be at least 1 epoch (got {s.step_size})")
    if not (0 < s.gamma <= 1):
        problems.append(f"--lr-gamma must be in (0, 1] (got {s.gamma})")
    if not (0 <= s.eta_min < s.lr0) and s.name == "cosine":
        problems.append(f"--lr-min must be in [0, --lr) (got {s.eta_min})")
    return problems
