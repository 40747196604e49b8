"""Argument helpers shared by every subcommand's parser (``scratchcnn.cli`` and ``scratchcnn.study``).

A module of its own so that the study commands can use them without importing
the CLI that registers them.
"""
import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to each option's help, except where the default is None
    (those options say in their help what happens when they are left out)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def int_at_least(minimum):
    """An argparse ``type`` for whole numbers >= ``minimum``, with a one-line error otherwise."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be {'at least 1' if minimum == 1 else f'{minimum} or more'}, got {v}")
        return v
    return parse


positive_int, nonnegative_int = int_at_least(1), int_at_least(0)


def add_dataset_options(p, *, dataset_default_help, data_dir_default_help):
    """--dataset and --data-dir, the same for train, evaluate and every study command."""
    from scratchcnn.data import DATASETS
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="synthetic: built in, offline; cifar10: the official archive; folder: your "
                        "own images in --data-dir, DIR/train/CLASS/*.png|jpg and DIR/test/CLASS/* "
                        f"({dataset_default_help})")
    p.add_argument("--data-dir", default=None,
                   help=f"where CIFAR-10 or your image folder is ({data_dir_default_help})")


ARCH_HELP = ("the network: a preset (tutorial, k1, k5, k7, deep, avgpool, bn, vgg; see 'scratchcnn arch list') "
             "or a JSON file with a list of layers")


def add_checkpoint_arch_options(p):
    """--arch and --allow-custom-layers for commands that load a checkpoint: a checkpoint written
    by ``train`` records its network; a bare state_dict (the tutorial's own .pth, or a run's
    model.pth) does not, and is read as --arch."""
    p.add_argument("--arch", default=None,
                   help="for a bare state_dict (model.pth, the tutorial's .pth), which network its weights "
                        "are: a preset or a JSON spec [tutorial]; a checkpoint.pth records its own")
    p.add_argument("--allow-custom-layers", action="store_true",
                   help="load your own layer files named in the checkpoint's network (runs their code; only "
                        "for checkpoints you trust)")
