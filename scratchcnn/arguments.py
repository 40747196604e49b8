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
