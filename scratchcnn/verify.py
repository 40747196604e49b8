"""Proof that the path ``scratchcnn train`` runs by default is the tutorial's PyTorch training.

``fused_vs_torch(steps=50, seed=0)`` trains two copies of the network side by side:

* ours: ``scratchcnn.fused.fused_train_step`` with ``scratchcnn.optim.SGD`` (what
  ``ScratchBackend`` runs unless ``--no-fused``);
* theirs: ``torch_reference.CIFAR10Model``, ``nn.functional.cross_entropy`` and
  ``torch.optim.SGD``, with the same hyperparameters.

Same starting weights (our initialiser's, loaded into torch), the same batches
in the same order and the same dropout masks as epoch 1 of
``scratchcnn train --dataset synthetic --seed SEED``: the fused path recomputes
its masks from (seed, counter) inside its kernels, and torch's two dropouts are
replaced by ``parity.fixed_mask_dropout`` modules that multiply by those masks
(``kernels.rng.keep_mask``) divided by 1 - p, which is what ``nn.Dropout``
does with its own random mask.

Errors are relative to the scale of what is compared, max |ours - torch| / max |torch|:

    loss        worst over the steps, |loss - loss_torch| / |loss_torch|
    weights     worst over the 8 tensors, after the last step
    change      the same for the weight change w_last - w_0 (what training did; far
                smaller than the weights, so this is the demanding one)
    momentum    the same for the SGD momentum buffers after the last step

Used by ``tests/test_model_parity.py`` and by the README's verification table
(``scratchcnn.parity``).
"""
import numpy as np

from scratchcnn.architecture import output_shape
from scratchcnn.kernels.rng import keep_mask
from scratchcnn.parity import fixed_mask_dropout, rel_error

__all__ = ["fused_vs_torch"]


def _next_masks(model, n):
    """The 0/1 masks drop1 and drop3 will draw for a batch of n in the coming training step (NCHW)."""
    masks = []
    for name in ("drop1", "drop3"):
        layer, shape = getattr(model, name), (n, *output_shape(name))
        masks.append(keep_mask(layer.seed, layer.counter, int(np.prod(shape)), layer.p).reshape(shape))
    return masks


def _errors(losses, weights, buffers, ref_losses, ref_weights, ref_buffers, start):
    """Relative errors of one run against another: worst over steps (loss) and tensors."""
    per_tensor = {}
    for name, w_ref in ref_weights.items():
        errors = {"weights": rel_error(weights[name], w_ref),
                  "change": rel_error(weights[name] - start[name], w_ref - start[name])}
        if ref_buffers:
            errors["momentum"] = rel_error(buffers[name], ref_buffers[name])
        per_tensor[name] = errors
    worst = {what: max(e[what] for e in per_tensor.values()) for what in next(iter(per_tensor.values()))}
    loss = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
    return {"loss": loss, **worst, "per_tensor": per_tensor}


def fused_vs_torch(steps=50, seed=0, batch_size=32, lr=0.001, momentum=0.9, weight_decay=0.0):
    """Train ``steps`` steps both ways (see the module docstring); return the errors:

        {"steps": int, "loss", "weights", "change", "momentum": worst relative errors, ours
         against torch float32, "per_tensor": {name: {"weights", "change", "momentum"}},
         "float64": {"ours": {...}, "torch": {...}}, "losses": [ours], "torch_losses": [torch]}

    ``float64`` puts those numbers in scale: a third copy, torch in float64 with the
    same masks, stands in for the exact answer, and both float32 runs are measured
    against it. Over 50 steps at batch 32, float32 rounding does not stay small in the
    weight change: where a ReLU input or a max-pool near-tie sits within rounding of
    the decision, the two float32 runs decide differently and route that unit's
    gradient elsewhere, and momentum carries it on. torch's own float32 run drifts
    from float64 the same way, so "as close to float64 as torch float32 is" is the
    fair test of our float32 step (``tests/test_model_parity.py``).

    Runs torch and BLAS on one thread each (two thread pools on two cores fight).
    Raises nothing when the errors are large: the caller decides what is good enough.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from scratchcnn import fused
    from scratchcnn.data import iterate_batches, load_dataset
    from scratchcnn.model import CIFAR10Model
    from scratchcnn.optim import SGD
    from scratchcnn.train import epoch_seed
    from torch_reference import CIFAR10Model as TorchModel

    train_set, _ = load_dataset("synthetic", seed=seed, n_train=steps * batch_size, n_test=1)
    ours = CIFAR10Model(rng=seed)
    ours.seed_dropout(epoch_seed(seed, 0))                 # as train() does before epoch 1
    opt = SGD(ours.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    start = ours.state_dict()
    torch_runs = {}                                        # dtype -> (model, optimizer, losses)
    for dtype in (torch.float32, torch.float64):
        model = TorchModel().to(dtype)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
        model.drop1, model.drop3 = fixed_mask_dropout(ours.drop1.p), fixed_mask_dropout(ours.drop3.p)
        torch_runs[dtype] = (model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                                    weight_decay=weight_decay), [])
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            batches = iterate_batches(train_set, batch_size, shuffle=True, seed=seed, epoch=0)
            for step, (x, y) in zip(range(steps), batches):
                masks = [torch.from_numpy(m) for m in _next_masks(ours, len(y))]
                losses.append(float(fused.fused_train_step(ours, opt, x, y)[0]))
                for dtype, (model, opt_t, run_losses) in torch_runs.items():
                    model.drop1.mask, model.drop3.mask = masks
                    opt_t.zero_grad()
                    logits = model(torch.from_numpy(x).to(dtype))
                    loss_t = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
                    loss_t.backward()
                    opt_t.step()
                    run_losses.append(float(loss_t.item()))
    finally:
        torch.set_num_threads(threads)

    def final_state(model, opt_t):
        weights = {n: p.detach().numpy() for n, p in model.named_parameters()}
        buffers = {n: opt_t.state[p]["momentum_buffer"].numpy() for n, p in model.named_parameters()
                   if momentum != 0}
        return weights, buffers

    runs = {"ours": (losses, {n: p.data for n, p in ours.parameters()},
                     opt.state_dict()["momentum_buffers"] if momentum != 0 else {})}
    for dtype, name in ((torch.float32, "torch"), (torch.float64, "torch64")):
        model, opt_t, run_losses = torch_runs[dtype]
        runs[name] = (run_losses, *final_state(model, opt_t))
    errors = _errors(*runs["ours"], *runs["torch"], start)
    errors["float64"] = {who: {k: v for k, v in _errors(*runs[who], *runs["torch64"], start).items()
                               if k != "per_tensor"} for who in ("ours", "torch")}
    return {"steps": len(losses), **errors, "losses": losses, "torch_losses": runs["torch"][0]}
