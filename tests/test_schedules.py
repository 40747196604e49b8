"""Learning-rate schedules: the closed forms of scratchcnn.schedules against torch.optim.lr_scheduler,
and the lr each backend really trains with at every step, fresh and after --resume."""
import warnings

import pytest
import torch

import scratchcnn.train as train_mod
from scratchcnn.schedules import Schedule
from scratchcnn.config import TrainConfig
from scratchcnn.train import train

pytestmark = pytest.mark.usefixtures("one_thread_per_pool")
REAL_MAKE_BACKEND = train_mod.make_backend


def torch_scheduler(s, optimizer):
    """The torch.optim.lr_scheduler chain a Schedule stands for (the docstring of scratchcnn.schedules)."""
    lr_scheduler = torch.optim.lr_scheduler
    u = s.steps_per_epoch if s.per == "step" else 1
    w = s.warmup * u
    if s.name == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.epochs * u - w, eta_min=s.eta_min)
    elif s.name == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=s.step_size * u, gamma=s.gamma)
    else:
        main = lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    if not w:
        return main
    warm = lr_scheduler.LinearLR(optimizer, start_factor=s.warmup_factor, end_factor=1.0, total_iters=w)
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[w])


def torch_lrs(s):
    """get_last_lr() before each of the run's optimizer steps, stepping the scheduler as s.per says."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=s.lr0, momentum=0.9)
    with warnings.catch_warnings():            # SequentialLR calls step(0): a deprecation warning
        warnings.simplefilter("ignore")
        sched = torch_scheduler(s, opt)
        lrs = []
        for epoch in range(s.epochs):
            for step in range(s.steps_per_epoch):
                lrs.append(sched.get_last_lr()[0])
                assert opt.param_groups[0]["lr"] == lrs[-1]
                opt.step()
                if s.per == "step":
                    sched.step()
            if s.per == "epoch":
                sched.step()
    return lrs


CASES = [
    dict(name="constant"),
    dict(name="constant", warmup=2, warmup_factor=0.25),
    dict(name="cosine"),
    dict(name="cosine", eta_min=0.003),
    dict(name="cosine", warmup=3, warmup_factor=0.1),
    dict(name="step", step_size=3, gamma=0.5),
    dict(name="step", step_size=2, gamma=0.1, warmup=1, warmup_factor=0.2),
]


@pytest.mark.parametrize("per", ["epoch", "step"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_schedule_matches_torch_at_every_step(case, per):
    s = Schedule(lr0=0.05, epochs=10, steps_per_epoch=7, per=per, **case)
    ours = [s.lr(e, i) for e in range(s.epochs) for i in range(s.steps_per_epoch)]
    theirs = torch_lrs(s)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    assert len(set(ours)) > (1 if case["name"] != "constant" or case.get("warmup") else 0)


def test_a_run_shorter_than_its_warm_up_is_all_warm_up():
    s = Schedule("cosine", lr0=1.0, epochs=1, steps_per_epoch=4, per="step", warmup=2, warmup_factor=0.2)
    assert [s.lr(0, i) for i in range(4)] == pytest.approx([0.2, 0.3, 0.4, 0.5])


def test_schedule_shapes():
    """The numbers a reader can check by hand."""
    cos = Schedule("cosine", lr0=0.1, epochs=4, warmup=2, warmup_factor=0.1)
    assert [cos.lr(e) for e in range(4)] == pytest.approx([0.01, 0.055, 0.1, 0.05])
    step = Schedule("step", lr0=1.0, epochs=6, step_size=2, gamma=0.5)
    assert [step.lr(e) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    per_step = Schedule("cosine", lr0=1.0, epochs=2, steps_per_epoch=2, per="step")
    assert [per_step.lr(e, i) for e in range(2) for i in range(2)] == pytest.approx(
        [1.0, 0.8535533905932737, 0.5, 0.14644660940672627])


class _RecordLr:
    """Wraps a backend; records the lr in its optimizer at each train_step. ``stop_at``: the
    step (1-based, over the run) that raises KeyboardInterrupt instead, as Ctrl-C would."""

    def __init__(self, inner, log, stop_at=None):
        self.inner, self.log, self.stop_at = inner, log, stop_at

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train_step(self, x, y):
        if self.stop_at is not None and len(self.log) + 1 == self.stop_at:
            raise KeyboardInterrupt
        opt = self.inner.optimizer
        self.log.append(opt.param_groups[0]["lr"] if hasattr(opt, "param_groups") else opt.lr)
        return self.inner.train_step(x, y)


def _recorded_run(tmp_path, monkeypatch, backend, interrupt_in_epoch_2=False, **opts):
    """The lr each train_step of a tiny 3-epoch run saw (96 images, batch 32: 3 steps per epoch).
    ``interrupt_in_epoch_2``: Ctrl-C at its second step, then ``--resume``."""
    log, real = [], REAL_MAKE_BACKEND
    stop = [5 if interrupt_in_epoch_2 else None]
    monkeypatch.setattr(train_mod, "make_backend",
                        lambda *a, **k: _RecordLr(real(*a, **k), log, stop.pop(0) if stop else None))
    cfg = TrainConfig(backend=backend, dataset="synthetic", train_size=96, test_size=32, lr=0.05,
                      epochs=3, **opts)
    out, quiet = str(tmp_path / "run"), dict(progress=False, log=lambda m: None)
    if interrupt_in_epoch_2:
        from scratchcnn.checkpoint import load_checkpoint
        with pytest.raises(KeyboardInterrupt):
            train(cfg, out, **quiet)
        assert len(log) == 4
        del log[3:]                      # the interrupted epoch's step is done again after resume
        train(cfg, out, resume_from=load_checkpoint(out + "/checkpoint.pth"), **quiet)
    else:
        train(cfg, out, **quiet)
    return log, cfg.schedule(3)


@pytest.mark.parametrize("backend", ["scratch", "torch"])
@pytest.mark.parametrize("opts", [
    dict(lr_schedule="cosine", schedule_per="step", warmup_epochs=1),
    dict(lr_schedule="cosine", schedule_per="epoch"),
    dict(lr_schedule="step", schedule_per="epoch", lr_step=1, lr_gamma=0.5, warmup_epochs=1),
    dict(lr_schedule="step", schedule_per="step", lr_step=1, lr_gamma=0.5),
], ids=["cosine-step-warmup", "cosine-epoch", "step-epoch-warmup", "step-step"])
def test_each_backend_trains_with_torchs_lr_at_every_step(backend, opts, tmp_path, monkeypatch):
    log, s = _recorded_run(tmp_path, monkeypatch, backend, **opts)
    assert len(log) == 9
    assert log == pytest.approx(torch_lrs(s), rel=1e-12)


@pytest.mark.parametrize("backend", ["scratch", "torch"])
def test_resume_continues_the_schedule_where_it_stopped(backend, tmp_path, monkeypatch):
    opts = dict(lr_schedule="cosine", schedule_per="step", warmup_epochs=1)
    straight, _ = _recorded_run(tmp_path / "a", monkeypatch, backend, **opts)
    resumed, _ = _recorded_run(tmp_path / "b", monkeypatch, backend, interrupt_in_epoch_2=True, **opts)
    assert resumed == straight and len(set(straight)) == 9
