"""The study subcommands of ``scratchcnn``: featuremaps, saliency, filters, summary, trace.

``scratchcnn.cli`` calls :func:`register` with its argparse subparsers; each
command function takes the parsed ``args`` and returns an exit code. Bad input
raises ``UserError`` (one line: what was wrong, what to do).
"""
import os

from scratchcnn.arguments import (ARCH_HELP, HelpFormatter, add_checkpoint_arch_options, add_dataset_options,
                                  positive_int)
from scratchcnn.errors import UserError
from scratchcnn.evaluate import dataset_split


def register(sub):
    """Add the study subcommands to ``sub`` (an argparse subparsers object)."""
    fmt = HelpFormatter

    p = sub.add_parser("featuremaps", formatter_class=fmt,
                       help="every convolution's feature maps of one image as grids, and its top-3 classes",
                       description="Save the input image and a grid of every convolution's output channels "
                                   "(4x8 for the tutorial's 32, as in the tutorial) for one dataset image or "
                                   "your own image, and print the model's top-3 classes for it.")
    _add_checkpoint_args(p, required=True)
    _add_image_args(p)
    _add_dataset_args(p)
    p.add_argument("--stage", nargs="+", choices=["conv", "norm", "relu", "pool"], default=["conv"],
                   help="which maps: every Conv2d's output (before its activation), BatchNorm2d's, every "
                        "activation function's (ReLU and the others) and every pooling layer's")
    p.add_argument("--scale", choices=["shared", "per-panel"], default="shared",
                   help="one colour scale for all panels of a grid, or each panel stretched to its own range")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder [CHECKPOINT_FOLDER/featuremaps/SPLIT-INDEX or .../IMAGE_NAME]")
    p.set_defaults(func=cmd_featuremaps)

    p = sub.add_parser("saliency", formatter_class=fmt,
                       help="gradients down to the pixels: saliency map, Grad-CAM, every layer's gradient",
                       description="For the predicted class (or --class), one backward pass from that class's "
                                   "logit: writes the vanilla gradient saliency map max_ch |ds/dx| and Grad-CAM "
                                   "on the last convolution's output, each over the image, and the gradient "
                                   "arriving at every layer with feature maps (grids) and every hidden Linear "
                                   "layer (strips).")
    _add_checkpoint_args(p, required=True)
    _add_image_args(p)
    p.add_argument("--class", dest="target", metavar="C", default=None,
                   help="explain this class (a number 0-9 or a class name) [the predicted class]")
    _add_dataset_args(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder [CHECKPOINT_FOLDER/saliency/SPLIT-INDEX-CLASS or .../IMAGE_NAME-CLASS]")
    p.set_defaults(func=cmd_saliency)

    p = sub.add_parser("filters", formatter_class=fmt, help="every convolution's kernels as images",
                       description="Draw the kernels of a convolution that reads the image (3 channels, "
                                   "like conv1) as tiny RGB images, and those of every other convolution "
                                   "as one grid of output x input channels on a diverging colour scale.")
    _add_checkpoint_args(p, required=True)
    p.add_argument("--out", metavar="DIR", default=None, help="output folder [CHECKPOINT_FOLDER/filters]")
    p.set_defaults(func=cmd_filters)

    p = sub.add_parser("summary", formatter_class=fmt,
                       help="per-layer output shapes, parameters, mult-adds, memory and receptive field",
                       description="A table per layer, computed from the layers' real shapes: output "
                                   "shape, parameter count, multiply-adds and output memory for a batch, "
                                   "and the receptive field of one output pixel on the input image.")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per batch")
    p.add_argument("--arch", default="tutorial", help=ARCH_HELP)
    p.add_argument("--checkpoint", default=None, help="the network a checkpoint holds (instead of --arch)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("trace", formatter_class=fmt,
                       help="one training step of the scratch model, layer by layer, in numbers",
                       description="Run one batch through the scratch model and print each layer's output "
                                   "shape and range, the loss, then the gradients coming back: dL/d(output) "
                                   "of each layer and each parameter's gradient norm.")
    p.add_argument("--checkpoint", default=None,
                   help="weights to use (and its dataset's first training images); "
                        "without it: fresh weights of --arch and synthetic images")
    p.add_argument("--arch", default=None, help=ARCH_HELP + "; for fresh weights or a bare state_dict [tutorial]")
    p.add_argument("--allow-custom-layers", action="store_true",
                   help="load your own layer files named in the checkpoint's network (runs their code)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images in the batch")
    p.add_argument("--seed", type=int, default=0, help="fresh weights (without --checkpoint) and dropout masks")
    _add_dataset_args(p, "; synthetic without --checkpoint")
    p.set_defaults(func=cmd_trace)


def _add_image_args(p):
    """--index/--split (a dataset image) or --image FILE (your own): featuremaps and saliency."""
    p.add_argument("--index", type=int, default=None,
                   help="which image of the split [7, the tutorial's choice]")
    p.add_argument("--split", choices=["train", "test"], default="train", help="which dataset split")
    p.add_argument("--image", metavar="FILE", default=None,
                   help="use your own image (PNG/JPEG; resized to 32x32) instead of a dataset image")


def _add_checkpoint_args(p, required):
    p.add_argument("--checkpoint", required=required,
                   help="runs/NAME/checkpoint.pth, model.pth, or a state_dict saved by the tutorial")
    p.add_argument("--backend", choices=["scratch", "torch"], default="scratch",
                   help="which implementation runs the model (same weights, same maps)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (torch backend only)")
    add_checkpoint_arch_options(p)


def _load(args):
    """(backend, checkpoint) for --checkpoint, --backend, --device, --arch, --allow-custom-layers."""
    from scratchcnn.evaluate import load_backend
    return load_backend(args.checkpoint, args.backend, args.device, args.arch, args.allow_custom_layers)


def _add_dataset_args(p, without_checkpoint=""):
    add_dataset_options(p, dataset_default_help="default: the checkpoint's dataset; cifar10 for a "
                                                "bare state_dict" + without_checkpoint,
                        data_dir_default_help="default: the checkpoint's, for its dataset; else data")


def _class_names(cfg, fallback=None):
    from scratchcnn.data import CIFAR10_CLASSES
    return list(cfg.get("classes") or fallback or CIFAR10_CLASSES)


def _chosen_image(args, cfg):
    """The image of ``--image FILE`` or ``--index N`` of ``--split`` (default: training image 7,
    the tutorial's), as ``(uint8 (1, 3, 32, 32), class names, description, file tag)``."""
    from scratchcnn.data import load_image

    if args.image and args.index is not None:
        raise UserError("pass either --image FILE or --index N (a dataset image), not both")
    if args.image:
        source = f"{os.path.basename(args.image)} (resized to 32x32)"
        return (load_image(args.image), _class_names(cfg), source,
                os.path.splitext(os.path.basename(args.image))[0])
    index = 7 if args.index is None else args.index
    data = dataset_split(cfg, args.dataset, args.data_dir, args.split)
    if not 0 <= index < len(data):
        raise UserError(f"--index {index} is out of range: the {args.split} split of {data.name} "
                        f"has {len(data)} images (0..{len(data) - 1})")
    source = f"{args.split}[{index}] of {data.name}, label '{data.classes[data.y[index]]}'"
    return data.x[index:index + 1], _class_names(cfg, data.classes), source, f"{args.split}-{index}"


def cmd_featuremaps(args):
    from scratchcnn.data import to_float
    from scratchcnn.study.featuremaps import (feature_maps, format_top_k, intermediates,
                                              plot_feature_maps, plot_input, top_k)

    backend, ckpt = _load(args)
    cfg, arch = ckpt["config"], ckpt["arch"]
    image, classes, source, tag = _chosen_image(args, cfg)
    out_dir = args.out or os.path.join(os.path.dirname(args.checkpoint), "featuremaps", tag)

    acts = intermediates(backend, to_float(image, cfg.get("normalize_stats")))
    top = top_k(acts[arch.layer_names[-1]][0], classes)
    paths = [plot_input(image[0], os.path.join(out_dir, "featuremaps_input.png"), source, top)]
    figures = feature_maps(arch, acts, args.stage)
    if not figures:
        raise UserError(f"the network {arch.name} has no layer for --stage {' '.join(args.stage)}; "
                        f"try --stage conv")
    for stem, what, maps in figures:
        paths.append(plot_feature_maps(maps, os.path.join(out_dir, stem + ".png"),
                                       f"{what}: {source}", args.scale))
    print(f"image: {source}; {args.backend} backend")
    if not cfg.get("classes"):
        print("(the checkpoint records no class names; CIFAR-10's are assumed)")
    print(f"top-3: {format_top_k(top)}")
    print("wrote:\n" + "\n".join(f"  {p}" for p in paths))
    return 0


def _target_class(text, classes):
    """--class: a class number or name -> int, or None (the predicted class)."""
    if text is None:
        return None
    if text.strip().isdigit() and int(text) < len(classes):
        return int(text)
    lowered = [c.lower() for c in classes]
    if text.strip().lower() in lowered:
        return lowered.index(text.strip().lower())
    raise UserError(f"--class {text!r} is not a class; use a number 0-{len(classes) - 1} or one of "
                    f"{', '.join(classes)}")


def cmd_saliency(args):
    from scratchcnn.data import to_float
    from scratchcnn.study.featuremaps import format_top_k, top_k
    from scratchcnn.study.saliency import class_gradients, write_saliency_figures

    backend, ckpt = _load(args)
    cfg = ckpt["config"]
    image, classes, source, tag = _chosen_image(args, cfg)
    target = _target_class(args.target, classes)
    x = to_float(image, cfg.get("normalize_stats"))
    # the predicted class among the dataset's classes (a folder may use fewer than the 10 outputs)
    explain = int(backend.predict(x)[0, :len(classes)].argmax()) if target is None else target
    result = class_gradients(backend, x, explain)
    c = int(result["classes"][0])
    out_dir = args.out or os.path.join(os.path.dirname(args.checkpoint), "saliency", f"{tag}-{classes[c]}")
    paths = write_saliency_figures(ckpt["arch"], result, image[0], out_dir, classes, source=source)
    print(f"image: {source}; {args.backend} backend")
    print(f"top-3: {format_top_k(top_k(result['logits'][0], classes))}")
    print(f"explaining class {c} '{classes[c]}'" + (" (the predicted class)" if target is None else ""))
    print("wrote:\n" + "\n".join(f"  {p}" for p in paths))
    return 0


def cmd_filters(args):
    from scratchcnn.study.featuremaps import plot_filters

    backend, ckpt = _load(args)
    if not ckpt["arch"].of_kind("Conv2d"):
        raise UserError(f"the network {ckpt['arch'].name} has no Conv2d layer, so no filters to draw")
    out_dir = args.out or os.path.join(os.path.dirname(args.checkpoint), "filters")
    paths = plot_filters(ckpt["arch"], backend.state_dict(), out_dir)
    print("wrote:\n" + "\n".join(f"  {p}" for p in paths))
    return 0


def cmd_summary(args):
    from scratchcnn import architecture
    from scratchcnn.study.summary import format_summary, summary_rows

    if args.checkpoint:
        from scratchcnn.checkpoint import load_checkpoint
        arch = load_checkpoint(args.checkpoint, arch=args.arch if args.arch != "tutorial" else None)["arch"]
    else:
        arch = architecture.load(args.arch, architecture.NUM_CLASSES)
    print(format_summary(summary_rows(args.batch_size, arch), args.batch_size, arch.name))
    return 0


def cmd_trace(args):
    from scratchcnn import architecture
    from scratchcnn.data import check_sizes, load_dataset, to_float
    from scratchcnn.model import Network
    from scratchcnn.study.trace import format_trace, trace_step

    if args.checkpoint:
        from scratchcnn.checkpoint import load_checkpoint
        ckpt = load_checkpoint(args.checkpoint, arch=args.arch, allow_custom=args.allow_custom_layers)
        model = Network(ckpt["arch"], rng=args.seed)
        model.load_state_dict(ckpt["model"])
        cfg, weights = ckpt["config"], f"from {args.checkpoint}"
        data = dataset_split(cfg, args.dataset, args.data_dir, "train")
    else:
        model = Network(architecture.load(args.arch or "tutorial", architecture.NUM_CLASSES), rng=args.seed)
        cfg, weights = {}, f"fresh PyTorch-default initialisation, seed {args.seed}"
        name = args.dataset or "synthetic"
        check_sizes(name, batch_size=args.batch_size)      # before generating them
        few = name == "synthetic"             # generate only what is needed; real data is read whole
        data, _ = load_dataset(name, args.data_dir or "data", False, args.seed,
                               max(args.batch_size, 10) if few else None, 10 if few else None)
    if args.batch_size > len(data):
        raise UserError(f"--batch-size {args.batch_size} is larger than the {len(data)} images of "
                        f"{data.name}'s training split; use a smaller --batch-size")
    x = to_float(data.x[:args.batch_size], cfg.get("normalize_stats"))
    y = data.y[:args.batch_size]
    labels = ", ".join(data.classes[i] for i in y)
    header = (f"One training step of the scratch model {model.arch.name} (dropout on), {args.batch_size} "
              f"{data.name} training images (labels: {labels})\nweights: {weights}")
    print(format_trace(trace_step(model, x, y), header))
    return 0
