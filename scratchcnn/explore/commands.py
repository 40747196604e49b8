"""The ``scratchcnn explore`` subcommand: the explorer registers its own command.

``scratchcnn.cli`` calls :func:`register` with its argparse subparsers;
:func:`cmd_explore` takes the parsed ``args`` and returns an exit code. Bad input
raises ``UserError`` (one line: what was wrong, what to do). Only the argparse
side is imported when the parser is built; the model, the data and the server
load when the command runs.
"""
from scratchcnn.arguments import HelpFormatter, add_checkpoint_arch_options, add_dataset_options
from scratchcnn.errors import UserError


def register(sub):
    """Add ``explore`` to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser("explore", formatter_class=HelpFormatter,
                       help="a local web page to explore the network on your checkpoint",
                       description="Start a web server (127.0.0.1 by default) with a page that works offline: "
                                   "browse the test set, see every layer's activations and gradients, "
                                   "saliency and Grad-CAM, any number of any layer written out (forward, and "
                                   "backward beside torch and a finite difference), the filters, the "
                                   "confusion matrix and the run's training curves, what the network dreams "
                                   "of (class and channel visualisation, fooling images, occlusion), through "
                                   "either backend; with a time slider over the weights a run trained with "
                                   "--snapshots kept.")
    p.add_argument("--checkpoint", required=True,
                   help="runs/NAME/checkpoint.pth, model.pth, or a state_dict saved by the tutorial")
    add_checkpoint_arch_options(p)
    add_dataset_options(p, dataset_default_help="default: the checkpoint's dataset; cifar10 for a "
                                                "bare state_dict",
                        data_dir_default_help="default: the checkpoint's, for its dataset; else data")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but 127.0.0.1/localhost exposes the page to "
                        "your network (a warning is printed)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--measure", action="store_true",
                   help="do not serve: time every kind of request in-process and print the table")
    p.set_defaults(func=cmd_explore)


def cmd_explore(args):
    from scratchcnn.checkpoint import load_checkpoint
    from scratchcnn.data import CIFAR10_CLASSES
    from scratchcnn.evaluate import dataset_split
    from scratchcnn.explore.analysis import Explorer
    from scratchcnn.explore.http import serve
    from scratchcnn.explore.measure import measure

    if not 0 <= args.port <= 65535:                 # before the slow part
        raise UserError(f"--port {args.port} is out of range 0..65535 (0: any free port)")
    cfg = load_checkpoint(args.checkpoint, arch=args.arch, allow_custom=args.allow_custom_layers)["config"]
    data = dataset_split(cfg, args.dataset, args.data_dir, "test")
    explorer = Explorer(args.checkpoint, data, list(cfg.get("classes") or data.classes or CIFAR10_CLASSES),
                        arch=args.arch, allow_custom=args.allow_custom_layers)
    if args.measure:
        print(measure(explorer))
        return 0
    return serve(explorer, host=args.host, port=args.port)
