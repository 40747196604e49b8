"""The dream subcommands of ``scratchcnn``: dream, fool and occlusion (``study.dreams``).

``study.register`` adds them beside the other study commands. Each command function takes
the parsed ``args`` and returns an exit code; bad input raises ``UserError`` (one line).
"""
import argparse
import math
import os
import time

from scratchcnn.arguments import HelpFormatter, nonnegative_int, positive_int
from scratchcnn.errors import UserError
from scratchcnn.study.commands import _add_checkpoint_args, _add_dataset_args, _class_names, _load, _target_class


def positive_float(text):
    """An argparse ``type``: a finite number > 0, with a one-line error otherwise."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return v


def register(sub):
    """Add dream, fool and occlusion to ``sub`` (an argparse subparsers object)."""
    fmt = HelpFormatter

    p = sub.add_parser("dream", formatter_class=fmt,
                       help="the image the network dreams up for a class, or for one channel of a layer",
                       description="Gradient ascent on the input image (activation maximisation, as in "
                                   "cs231n): from noise, raise a class's logit (--class) or the mean "
                                   "activation of one channel of a layer (--layer, --channel), with an L2 "
                                   "pull towards grey, random jitter and an occasional blur. Writes the "
                                   "image (upscaled), the score per step, and for a channel the 9 test "
                                   "images that excite it most.")
    _add_checkpoint_args(p, required=True)
    p.add_argument("--class", dest="target", metavar="C", default=None,
                   help="the class to dream of (a number or a class name)")
    p.add_argument("--layer", default=None,
                   help="a layer with feature maps (a Conv2d, its activation, a pooling layer); "
                        "with --channel, instead of --class")
    p.add_argument("--channel", type=nonnegative_int, default=None, help="which channel of --layer")
    p.add_argument("--steps", type=positive_int, default=200, help="gradient steps")
    p.add_argument("--lr", type=positive_float, default=1.0,
                   help="length of each step (L2 norm over the image, in pixel units 0..1)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the starting noise and the jitter")
    p.add_argument("--start", choices=["noise", "grey"], default="noise", help="the image the ascent starts from")
    _add_dataset_args(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder [CHECKPOINT_FOLDER/dreams/class-NAME or .../LAYER-channel-K]")
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser("fool", formatter_class=fmt,
                       help="change an image just enough that the network answers another class",
                       description="Fooling image (cs231n): small gradient steps on the target class's "
                                   "log-probability until the network answers it (--method steps), or one "
                                   "step of the fast gradient sign method with --epsilon (--method fgsm). Writes "
                                   "the original, the fooling image, the change magnified and the "
                                   "probabilities before and after; prints the prediction before and after.")
    _add_checkpoint_args(p, required=True)
    p.add_argument("--index", type=int, required=True, help="which image of the split")
    p.add_argument("--split", choices=["train", "test"], default="test", help="which dataset split")
    p.add_argument("--target", required=True, metavar="C",
                   help="the class the network should answer (a number or a class name)")
    p.add_argument("--method", choices=["steps", "fgsm"], default="steps",
                   help="steps: normalised gradient steps until it answers --target; fgsm: one signed step")
    p.add_argument("--epsilon", type=positive_float, default=8 / 255,
                   help="fgsm: how far every pixel moves, in pixel units (8/255: 8 levels of 255)")
    p.add_argument("--max-steps", type=positive_int, default=500, help="steps: give up after this many steps")
    p.add_argument("--step-size", type=positive_float, default=0.1,
                   help="steps: length of each step (L2 norm over the image, in pixel units 0..1)")
    _add_dataset_args(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder [CHECKPOINT_FOLDER/fool/SPLIT-INDEX-TARGET-METHOD]")
    p.set_defaults(func=cmd_fool)

    p = sub.add_parser("occlusion", formatter_class=fmt,
                       help="which parts of an image the network needs: cover each part and watch the probability",
                       description="Occlusion map (Zeiler & Fergus): slide a grey square over the image and "
                                   "record how much the class's probability drops with each part covered. "
                                   "Only forward passes; compare it with 'scratchcnn saliency' (gradients).")
    _add_checkpoint_args(p, required=True)
    p.add_argument("--index", type=int, required=True, help="which image of the split")
    p.add_argument("--split", choices=["train", "test"], default="test", help="which dataset split")
    p.add_argument("--class", dest="target", metavar="C", default=None,
                   help="the class whose probability to watch (a number or a name) [the predicted class]")
    p.add_argument("--patch", type=positive_int, default=8, help="side of the square, in pixels")
    p.add_argument("--stride", type=positive_int, default=4, help="pixels between square positions")
    p.add_argument("--fill", choices=["grey", "mean"], default="grey",
                   help="what covers the square: grey, or the image's mean colour")
    _add_dataset_args(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder [CHECKPOINT_FOLDER/occlusion/SPLIT-INDEX-CLASS]")
    p.set_defaults(func=cmd_occlusion)


def _class_number(text, classes, flag):
    """A class number or name given to ``flag`` -> int (None stays None)."""
    try:
        return _target_class(text, classes)
    except UserError as e:
        raise UserError(str(e).replace("--class", flag, 1)) from None


def _dataset_image(args, cfg):
    """``--index`` of ``--split``: (uint8 (3, H, W), class names, description, file tag)."""
    from scratchcnn.evaluate import dataset_split

    data = dataset_split(cfg, args.dataset, args.data_dir, args.split)
    if not 0 <= args.index < len(data):
        raise UserError(f"--index {args.index} is out of range: the {args.split} split of {data.name} "
                        f"has {len(data)} images (0..{len(data) - 1})")
    source = f"{args.split}[{args.index}] of {data.name}, label '{data.classes[data.y[args.index]]}'"
    return data.x[args.index], _class_names(cfg, data.classes), source, f"{args.split}-{args.index}"


def _wrote(paths):
    print("wrote:\n" + "\n".join(f"  {p}" for p in paths))


def cmd_dream(args):
    from scratchcnn.study import dreams

    if (args.target is None) == (args.layer is None):
        raise UserError("pass either --class C (a class) or --layer L --channel K (one channel of a layer)")
    if (args.layer is None) != (args.channel is None):
        raise UserError("--layer and --channel go together: --layer L --channel K")
    backend, ckpt = _load(args)
    cfg, arch = ckpt["config"], ckpt["arch"]
    stats = cfg.get("normalize_stats")
    classes = _class_names(cfg)
    ascent = {"steps": args.steps, "lr": args.lr, "seed": args.seed, "start": args.start, "normalize": stats}
    folder = os.path.dirname(args.checkpoint)
    t0 = time.perf_counter()
    if args.target is not None:
        target = _target_class(args.target, classes)
        r = dreams.class_visualisation(backend, target, **ascent)
        what, tag, unit = f"class {target} '{classes[target]}'", f"class-{classes[target]}", "logit"
        top = None
    else:
        dreams.check_channel(arch, args.layer, args.channel)
        r = dreams.channel_visualisation(backend, args.layer, args.channel, **ascent)
        what, tag = f"channel {args.channel} of {args.layer}", f"{args.layer}-channel-{args.channel}"
        unit = "mean activation"
        top = _top_images(backend, cfg, args, stats)
    seconds = time.perf_counter() - t0
    out_dir = args.out or os.path.join(folder, "dreams", tag)
    p = r["probs"][:len(classes)]
    best = int(p.argmax())
    caption = (f"{what}: {unit} {r['scores'][0]:.4g} -> {r['scores'][-1]:.4g} in {args.steps} steps "
               f"(seed {args.seed}); the network says '{classes[best]}' {100 * p[best]:.1f}%")
    paths = [dreams.plot_dream(r["uint8"], os.path.join(out_dir, "dream.png"), caption, top),
             dreams.plot_scores(r["scores"], os.path.join(out_dir, "scores.png"), f"{what}, {args.backend}",
                                unit)]
    print(f"{caption}; {args.backend} backend, {seconds:.1f} s")
    if args.layer is not None and max(r["scores"]) == 0:
        print(f"note: the channel was 0 everywhere at every step, so it had no gradient to climb (its "
              "activation is off for these images); try another --seed, --start grey, or the layer "
              "before the activation")
    if top is not None:
        print(f"top-{len(top[0])} test images for {what}: " + ", ".join(f"[{i}] {v:.3g}" for i, v in top[0]))
    _wrote(paths)
    return 0


def _top_images(backend, cfg, args, stats):
    """The 9 test images that excite the channel most: ([(index, mean activation)], images,
    captions), or None (printed why) when the checkpoint's test images cannot be read."""
    from scratchcnn.evaluate import dataset_split
    from scratchcnn.study import dreams

    try:
        data = dataset_split(cfg, args.dataset, args.data_dir, "test")
    except UserError as e:
        print(f"note: no top-9 test images ({e})")
        return None
    top = dreams.top_activating(backend, data, args.layer, args.channel, k=9, normalize=stats)
    return (top, [data.x[i] for i, _ in top],
            [f"[{i}] {data.classes[data.y[i]]}\n{v:.3g}" for i, v in top])


def _prediction(probs, classes):
    p = probs[:len(classes)]
    c = int(p.argmax())
    return c, f"'{classes[c]}' ({100 * p[c]:.1f}%)"


def cmd_fool(args):
    from scratchcnn.data import to_float
    from scratchcnn.study import dreams

    backend, ckpt = _load(args)
    cfg = ckpt["config"]
    stats = cfg.get("normalize_stats")
    image, classes, source, tag = _dataset_image(args, cfg)
    target = _class_number(args.target, classes, "--target")
    now, said = _prediction(dreams.softmax(backend.predict(to_float(image[None], stats))[0]), classes)
    print(f"image: {source}; {args.backend} backend")
    if now == target:
        print(f"the network already answers {said} for this image: nothing to fool; choose another --target")
        return 0
    r = dreams.fooling_image(backend, image, target, method=args.method, epsilon=args.epsilon,
                             max_steps=args.max_steps, step_size=args.step_size, normalize=stats)
    _, before = _prediction(r["before"], classes)
    _, after = _prediction(r["after"], classes)
    how = (f"{r['steps']} gradient step{'s' if r['steps'] != 1 else ''} of {args.step_size:g}"
           if args.method == "steps" else f"one FGSM step, epsilon {args.epsilon:.4g} ({255 * args.epsilon:.3g}/255)")
    change = r["uint8"].astype(int) - image.astype(int)
    outcome = ("it answers the target" if r["success"] else
               f"it does not answer '{classes[target]}' yet" + (f" after --max-steps {args.max_steps}"
                                                                  if args.method == "steps" else
                                                                  "; try a larger --epsilon"))
    print(f"before: {before}")
    print(f"after:  {after}, target '{classes[target]}' {100 * r['after'][target]:.1f}%; {how}; {outcome}")
    print(f"change: at most {int(abs(change).max())} of 255 levels per pixel value, "
          f"L2 norm {float(((change / 255.0) ** 2).sum()) ** 0.5:.3f} in pixel units (0..1)")
    out_dir = args.out or os.path.join(os.path.dirname(args.checkpoint), "fool",
                                       f"{tag}-{classes[target]}-{args.method}")
    title = f"{source}: fooled towards '{classes[target]}' by {how}" + ("" if r["success"] else " (not reached)")
    _wrote([dreams.plot_fooling(image, r, classes, target, os.path.join(out_dir, "fool.png"), title)])
    return 0


def cmd_occlusion(args):
    from scratchcnn.data import to_float
    from scratchcnn.study import dreams

    backend, ckpt = _load(args)
    cfg = ckpt["config"]
    stats = cfg.get("normalize_stats")
    image, classes, source, tag = _dataset_image(args, cfg)
    target = _target_class(args.target, classes)
    probs = dreams.softmax(backend.predict(to_float(image[None], stats))[0])
    if target is None:
        target = int(probs[:len(classes)].argmax())
    if args.patch > min(image.shape[1:]):
        raise UserError(f"--patch {args.patch} is larger than the {image.shape[1]}x{image.shape[2]} image")
    heat = dreams.occlusion_map(backend, image, target, patch=args.patch, stride=args.stride, fill=args.fill,
                                normalize=stats)
    out_dir = args.out or os.path.join(os.path.dirname(args.checkpoint), "occlusion", f"{tag}-{classes[target]}")
    what = (f"class '{classes[target]}' (p = {100 * probs[target]:.1f}%), {args.patch}x{args.patch} "
            f"{args.fill} squares every {args.stride} px")
    path = dreams.plot_occlusion(image, heat, os.path.join(out_dir, "occlusion.png"), f"{source}: {what}")
    print(f"image: {source}; {args.backend} backend")
    print(f"occlusion for {what}: the drop in probability runs from {float(heat.min()):+.3g} to "
          f"{float(heat.max()):+.3g} (positive: covering that part lowers the class's probability)")
    _wrote([path])
    return 0
