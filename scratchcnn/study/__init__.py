"""Study tools: look inside every layer of the network.

Command line (each has ``--help``):

    scratchcnn featuremaps --checkpoint PATH   every convolution's feature maps of one image, as grids
    scratchcnn saliency --checkpoint PATH      saliency map, Grad-CAM and every layer's gradient
    scratchcnn filters --checkpoint PATH       every convolution's kernels (RGB tiles for the first)
    scratchcnn summary [--arch NAME]           per-layer shapes, parameters, mult-adds, memory, receptive field
    scratchcnn trace                           one training step, forward then backward, in numbers
    scratchcnn dream --checkpoint PATH         the image the network dreams up for a class or a channel
    scratchcnn fool --checkpoint PATH          the smallest change that makes it answer another class
    scratchcnn occlusion --checkpoint PATH     which parts of an image it needs (grey squares)

From Python, the pieces behind them, one module each:

    study.featuremaps   intermediates(backend, x) -> {layer: output} through either backend,
                        feature_maps, top_k, plot_feature_maps, plot_input, plot_filters
    study.saliency      class_gradients(backend, x, classes) -> logits, every layer's output and
                        ds/d(output) down to the pixels, through either backend;
                        saliency_map, grad_cam, write_saliency_figures
    study.summary       summary_rows(batch_size, arch), format_summary
    study.layer_stats   probe_layer_stats(backend, x, y), layer_stats, plot_layer_stats
                        (for ``train --layer-stats``)
    study.trace         forward_backward(model, criterion, x, y), trace_step, format_trace
    study.dreams        class_visualisation, channel_visualisation, top_activating, fooling_image,
                        occlusion_map: the input gradient put to work, through either backend
    study.snapshots     list_snapshots(run folder), load_snapshot(run folder, i): the weights
                        ``train --snapshots K`` kept during training
    study.commands      register(subparsers): the argparse side (study.dream_commands: dream,
                        fool, occlusion)

This package imports nothing heavy itself, so building the CLI's parser stays fast.
"""
from scratchcnn.study import commands, dream_commands

__all__ = ["register"]


def register(sub):
    """Add every study subcommand to ``sub`` (an argparse subparsers object)."""
    commands.register(sub)
    dream_commands.register(sub)
