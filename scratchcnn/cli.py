"""The ``scratchcnn`` command line: train, evaluate, gradcheck, the study tools and explore.

Every subcommand has ``--help`` with its defaults. Bad input ends with a single
``error: ...`` line and exit status 2; ``--debug`` shows the traceback instead.
"""
import argparse
import os
import sys

from scratchcnn import checklayer, compare, study
from scratchcnn.arguments import (ARCH_HELP, HelpFormatter, add_checkpoint_arch_options, add_dataset_options,
                                  nonnegative_int, positive_int)
from scratchcnn.config import RECIPES
from scratchcnn.errors import UserError
from scratchcnn.explore import commands as explore_commands
from scratchcnn.schedules import SCHEDULES, UNITS


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``error: ...`` line (exit 2) like every other error."""

    def error(self, message):
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


def _add_train(sub):
    p = sub.add_parser("train", help="train a network (the tutorial's, a preset or your own) with either backend",
                       formatter_class=HelpFormatter,
                       description="Train the tutorial's network, or another one with --arch. Defaults are the "
                                   "tutorial's settings; the default dataset is the built-in synthetic one.")
    p.add_argument("--arch", default=None, help=ARCH_HELP + " (default: tutorial)")
    p.add_argument("--backend", choices=["scratch", "torch"], default=None,
                   help="scratch: NumPy + numba (default); torch: the PyTorch reference")
    p.add_argument("--device", default=None, help="cpu or cuda (torch backend only) (default: cpu)")
    add_dataset_options(p, dataset_default_help="default: synthetic; cifar10 when --data-dir or "
                                                "--download is given",
                        data_dir_default_help="default: data")
    p.add_argument("--download", action="store_true", default=None,
                   help="download CIFAR-10 (MD5-checked) into --data-dir if it is not there")
    p.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help="tutorial: the tutorial's settings (default); improved: "
                        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in RECIPES["improved"].items())
                        + ". Options given explicitly override the recipe; the defaults below "
                          "are the tutorial's")
    p.add_argument("--epochs", type=positive_int, default=None, help="passes over the training set (default: 20)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per SGD step (default: 32)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate; with a schedule, its peak (default: 0.001)")
    p.add_argument("--momentum", type=float, default=None, help="SGD momentum (default: 0.9)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="L2 penalty as torch.optim.SGD applies it: added to the gradient before "
                        "momentum (default: 0)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop with 4-pixel zero padding and random horizontal flip of "
                        "every training image (default: off)")
    p.add_argument("--lr-schedule", choices=SCHEDULES, default=None,
                   help="constant; cosine: CosineAnnealingLR down to --lr-min over the run; step: "
                        "StepLR, x--lr-gamma every --lr-step epochs (default: constant)")
    p.add_argument("--schedule-per", choices=UNITS, default=None,
                   help="advance the schedule once per epoch or after every step (default: epoch)")
    p.add_argument("--warmup-epochs", type=nonnegative_int, default=None,
                   help="linear warm-up (LinearLR) from --lr x --warmup-factor to --lr over this "
                        "many epochs, then the schedule (default: 0)")
    p.add_argument("--warmup-factor", type=float, default=None,
                   help="where the warm-up starts, as a fraction of --lr (default: 0.1)")
    p.add_argument("--lr-step", type=positive_int, default=None,
                   help="step schedule: epochs between decays (default: 10)")
    p.add_argument("--lr-gamma", type=float, default=None,
                   help="step schedule: factor per decay (default: 0.1)")
    p.add_argument("--lr-min", type=float, default=None,
                   help="cosine schedule: the lr at the end (default: 0)")
    p.add_argument("--seed", type=int, default=None, help="weights, shuffling and dropout (default: 0)")
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images (default: all)")
    p.add_argument("--test-size", type=int, default=None, help="use only the first N test images (default: all)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardise each channel with the training set's mean/std (off: pixels in [0, 1])")
    p.add_argument("--layer-stats", action="store_true", default=None,
                   help="each epoch, record per-layer activation/gradient statistics, dead ReLU "
                        "units and update/weight ratios on a probe batch (metrics.json, layer_stats.png)")
    p.add_argument("--snapshots", type=nonnegative_int, default=None, metavar="K",
                   help="keep the weights K times per epoch (evenly spaced steps, the last at the epoch's "
                        "end) in RUN/snapshots/ with an index.json, to watch the network change during "
                        "training (scratchcnn.study.snapshots). Each costs 4 bytes per parameter: 4.2 M "
                        "floats = 16.8 MB per snapshot for the tutorial's network. At most one per step "
                        "and 2,000 in a run (default: 0, none)")
    p.add_argument("--no-fused", dest="fused", action="store_false", default=None,
                   help="scratch backend: train through the readable layer-by-layer path instead "
                        "of the fused fast path (same results to float rounding, several times slower; "
                        "networks the fast path was not written for always use the layer path)")
    p.add_argument("--check-layers", action="store_true",
                   help="before training, check every layer against its torch twin in one float64 step on "
                        "the first batch (same weights and dropout masks); stop, naming the first layer "
                        "that disagrees")
    p.add_argument("--out", default=None, help="run folder (default: runs/BACKEND-DATASET, numbered if taken)")
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the run in this folder from its last completed epoch")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs stay)")
    p.set_defaults(func=_cmd_train)


def _fresh_run_dir(backend, dataset):
    base = os.path.join("runs", f"{backend}-{dataset}")
    out, k = base, 1
    while os.path.exists(os.path.join(out, "checkpoint.pth")):
        k += 1
        out = f"{base}-{k}"
    return out


# Settings that change the result, so --resume refuses to change them.
FIXED_ON_RESUME = ("arch", "backend", "dataset", "batch_size", "lr", "momentum", "seed", "train_size",
                   "test_size", "normalize", "recipe", "augment", "weight_decay", "lr_schedule",
                   "schedule_per", "warmup_epochs", "warmup_factor", "lr_step", "lr_gamma", "lr_min",
                   "snapshots")


def _cmd_train(args):
    from scratchcnn.config import TrainConfig
    from scratchcnn.train import train

    given = {k: v for k, v in vars(args).items() if v is not None}
    if args.resume:
        from scratchcnn.checkpoint import load_checkpoint
        out = args.resume
        resume_from = load_checkpoint(os.path.join(out, "checkpoint.pth"))
        stored = resume_from["config"]
        if not stored:
            raise UserError(f"{out}/checkpoint.pth has no training state to resume; "
                            f"start a new run with --out")
        cfg = TrainConfig.from_dict(stored, source=f"{out}/checkpoint.pth")
        changed = [k for k in FIXED_ON_RESUME if k in given and given[k] != getattr(cfg, k)]
        if "epochs" in given and given["epochs"] != cfg.epochs and cfg.lr_schedule == "cosine":
            changed.append("epochs")          # the cosine schedule spans --epochs
        if changed:
            raise UserError(f"--resume continues the run as it was configured; drop "
                            f"{', '.join('--' + c.replace('_', '-') for c in changed)}"
                            + (" (its cosine schedule spans the --epochs it was started with)"
                               if "epochs" in changed else ""))
        for k in ("epochs", "device", "data_dir", "download", "layer_stats", "fused"):   # may change on resume
            if k in given:
                setattr(cfg, k, given[k])
    else:
        resume_from = None
        if "dataset" not in given and ("data_dir" in given or given.get("download")):
            given["dataset"] = "cifar10"          # --data-dir / --download mean real CIFAR-10
        cfg = TrainConfig.from_dict({**RECIPES[given.get("recipe", "tutorial")], **given})
        out = args.out or _fresh_run_dir(cfg.backend, cfg.dataset)
    cfg.validate()                   # bad numbers and devices fail before the kernels load
    if cfg.backend == "scratch" and cfg.device != "cpu":
        raise UserError(f"the scratch backend runs on the CPU only; drop --device {cfg.device} "
                        f"or use --backend torch --device {cfg.device}")
    train(cfg, out, resume_from=resume_from, overwrite=args.overwrite,
          progress=not args.no_progress, check_layers=args.check_layers)
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="test-set (or --split train) accuracy, loss, per-class "
                                        "accuracy, confusion matrix",
                       formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="runs/NAME/checkpoint.pth, model.pth, or a state_dict saved by the tutorial")
    p.add_argument("--backend", choices=["scratch", "torch"], default="scratch")
    p.add_argument("--device", default="cpu")
    add_checkpoint_arch_options(p)
    add_dataset_options(p, dataset_default_help="default: the checkpoint's dataset; cifar10 for a "
                                                "bare state_dict",
                        data_dir_default_help="default: the checkpoint's, for its dataset; else data")
    p.add_argument("--split", choices=["test", "train"], default="test",
                   help="which split to measure; train shows what the tutorial called its "
                        "accuracy (measured on the images it trained on)")
    p.add_argument("--test-size", type=nonnegative_int, default=0,
                   help="only the first N test images (0: those training used)")
    p.add_argument("--plot", metavar="PNG", default=None, help="also save the confusion matrix here")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args):
    from scratchcnn.evaluate import evaluate, format_report
    from scratchcnn.plots import plot_confusion

    r = evaluate(args.checkpoint, backend=args.backend, device=args.device, dataset=args.dataset,
                 data_dir=args.data_dir, split=args.split, test_size=args.test_size, arch=args.arch,
                 allow_custom=args.allow_custom_layers)
    print(format_report(r))
    if args.plot:
        plot_confusion(r["confusion"], r["classes"], args.plot)
        print(f"\nconfusion matrix plot: {args.plot}")
    return 0


def _add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="check every layer's backward against central differences")
    p.set_defaults(func=_cmd_gradcheck)


def _cmd_gradcheck(args):
    from scratchcnn.gradcheck import main as gradcheck_main
    return gradcheck_main([])


def _add_arch(sub):
    p = sub.add_parser("arch", help="list the network presets, or show one (or your JSON spec) layer by layer",
                       formatter_class=HelpFormatter,
                       description="'arch list': the presets and what each teaches. 'arch show NAME|FILE.json': "
                                   "every layer with its arguments, output shape, parameters, multiply-adds and "
                                   "receptive field; --json prints the spec with every name and argument filled in.")
    what = p.add_subparsers(dest="arch_command", metavar="list|show")
    what.required = True
    what.add_parser("list", help="the presets")
    show = what.add_parser("show", help="one network, layer by layer", formatter_class=HelpFormatter)
    show.add_argument("arch", metavar="NAME|FILE", help=ARCH_HELP)
    show.add_argument("--classes", type=positive_int, default=10,
                      help="the number of classes, for a last Linear without out_features")
    show.add_argument("--json", action="store_true", help="print the resolved spec as JSON instead")
    p.set_defaults(func=_cmd_arch)


def _cmd_arch(args):
    import json

    from scratchcnn import architecture
    if args.arch_command == "list":
        width = max(map(len, architecture.PRESETS))
        print(f"{'preset':<{width}}  {'parameters':>10}  {'mult-adds':>11}  what it teaches")
        for name, (about, _) in architecture.PRESETS.items():
            a = architecture.load(name, architecture.NUM_CLASSES)
            print(f"{name:<{width}}  {a.n_params:>10,}  {a.total_macs:>11,}  {about}")
        print("\n'scratchcnn arch show NAME' shows one layer by layer; 'scratchcnn train --arch NAME' trains it.")
        return 0
    arch = architecture.load(args.arch, args.classes)
    print(json.dumps(arch.to_json(), indent=1) if args.json else architecture.describe(arch))
    return 0


def build_parser():
    parser = _Parser(
        prog="scratchcnn",
        description="The PyTorch CIFAR-10 tutorial's CNN, from scratch (NumPy + numba) and in PyTorch.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    _add_evaluate(sub)
    _add_gradcheck(sub)
    checklayer.add_parser(sub)
    _add_arch(sub)
    compare.add_parser(sub)
    study.register(sub)
    explore_commands.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory; try a smaller --batch-size or --train-size", file=sys.stderr)
        return 2
    except BrokenPipeError:          # e.g. 'scratchcnn arch show vgg | head': the reader left, say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
