"""The whole scratch model against torch_reference.model.CIFAR10Model (llm.c style).

Same starting weights (torch's init, loaded through ``load_state_dict``), same
batches, same dropout masks (torch's drop1/drop3 are replaced by a module that
multiplies by the scratch model's mask / (1 - p), which is what nn.Dropout does
with its own random mask). Step 0: logits, loss and every parameter gradient;
then 50 SGD steps (lr 0.001, momentum 0.9) and 10 with weight decay: the loss
at every step, the final weights and momentum buffers. That is the layer path
(batch 8); the fused path that ``scratchcnn train`` runs by default is checked
the same way at batch 32 by ``scratchcnn.parity.fused_vs_torch`` (last tests).

Errors are max |ours - torch| / max |torch| per tensor ("change": the same for
the weights' change over the 50 steps, w50 - w0, which is what training did and
far smaller than the weights themselves). Worst measured (torch and OpenBLAS
single-threaded, as here):

               step 0: logits  loss   grads  | 50 steps: loss   weights  change
    float64           7e-16    0      7e-16  |           4e-16  4e-16    2e-14
    float32           4e-7     0      2e-6   |           1e-7   3e-7     9e-6

Tolerances (TOL) sit about 10x above. float32 differences start as rounding in
differently ordered sums (torch's conv kernels vs im2col + OpenBLAS, ~1e-6 of a
gradient's scale); each step feeds them back into the weights, so the weight
change drifts to ~1e-5 after 50 steps, while the loss stays within ~1e-7.
At batch 32 (the fused tests) there are 4x more activations, and some ReLU input
or max-pool near-tie falls within rounding of its decision: the change then
drifts to ~1e-3, in torch's own float32 run against float64 as much as in ours.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from scratchcnn.layers import SoftmaxCrossEntropy
from scratchcnn.model import CIFAR10Model
from scratchcnn.optim import SGD
from scratchcnn.parity import fused_vs_torch, model_pair, share_masks
from scratchcnn.parity import parity_batch as batch
from scratchcnn.parity import rel_error as rel


pytestmark = pytest.mark.usefixtures("one_thread_per_pool")


TOL = {
    np.float32: dict(out=5e-6, grad=2e-5, loss=1e-6, weights=3e-6, change=1e-4, momentum=1e-4),
    np.float64: dict(out=1e-14, grad=1e-14, loss=1e-14, weights=1e-14, change=2e-13, momentum=2e-13),
}


def forward_both(ours, theirs, x, y, loss_fn):
    """Scratch forward draws its masks; torch reuses them. Returns (our logits, loss, torch logits, loss)."""
    logits = ours.forward(x)
    loss = loss_fn.forward(logits, y)
    share_masks(ours, theirs)
    logits_t = theirs(torch.from_numpy(x))
    loss_t = nn.functional.cross_entropy(logits_t, torch.from_numpy(y))
    return logits, loss, logits_t, loss_t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step0_logits_loss_and_every_gradient(dtype):
    ours, theirs = model_pair(dtype)
    loss_fn = SoftmaxCrossEntropy()
    x, y = batch(0, dtype)
    logits, loss, logits_t, loss_t = forward_both(ours, theirs, x, y, loss_fn)
    ours.backward(loss_fn.backward())
    loss_t.backward()
    tol = TOL[dtype]
    assert ours.drop1.mask.mean() == pytest.approx(0.7, abs=0.01)      # masks were really applied
    assert rel(logits, logits_t) < tol["out"], rel(logits, logits_t)
    assert rel(loss, loss_t) < tol["out"], rel(loss, loss_t)
    torch_params = dict(theirs.named_parameters())
    assert [n for n, _ in ours.parameters()] == list(torch_params)
    for name, p in ours.parameters():
        err = rel(p.grad, torch_params[name].grad)
        assert err < tol["grad"], f"{name} grad ({np.dtype(dtype).name}): max rel error {err:.3g} > {tol['grad']:g}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("steps, weight_decay", [(50, 0.0), (10, 0.05)], ids=["50-steps", "weight-decay"])
def test_sgd_steps_track_torch(dtype, steps, weight_decay):
    ours, theirs = model_pair(dtype)
    start = ours.state_dict()
    loss_fn = SoftmaxCrossEntropy()
    opt = SGD(ours.parameters(), lr=0.001, momentum=0.9, weight_decay=weight_decay)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.001, momentum=0.9, weight_decay=weight_decay)
    tol = TOL[dtype]
    for step in range(steps):
        x, y = batch(step, dtype)
        _, loss, _, loss_t = forward_both(ours, theirs, x, y, loss_fn)
        ours.backward(loss_fn.backward())
        opt.step()
        opt_t.zero_grad()
        loss_t.backward()
        opt_t.step()
        assert rel(loss, loss_t) < tol["loss"], f"step {step}: loss {loss} vs torch {loss_t.item()}"
    assert ours.drop3.counter == steps                            # a fresh mask every step
    torch_params = dict(theirs.named_parameters())
    for name, p in ours.parameters():
        change, change_t = p.data - start[name], torch_params[name].detach().numpy() - start[name]
        assert np.abs(change_t).max() > 1e-5, name                # training really moved every tensor
        buf_t = opt_t.state[torch_params[name]]["momentum_buffer"]
        for what, err in [("weights", rel(p.data, torch_params[name])), ("change", rel(change, change_t)),
                          ("momentum", rel(opt.momentum_buffers[name], buf_t))]:
            assert err < tol[what], f"{name} {what} after {steps} steps: max rel error {err:.3g} > {tol[what]:g}"


# ---- the fused path, i.e. what `scratchcnn train` runs by default, against torch (scratchcnn.parity)

@pytest.mark.slow
def test_fused_step_tracks_torch_over_50_steps():
    """50 steps of fused_train_step at batch 32 (lr 0.001, momentum 0.9, the synthetic data and
    dropout masks of `scratchcnn train --seed 0`'s first epoch) against torch float32 and float64.

    Measured (2 vCPUs of an AMD EPYC): ours vs torch float32: loss 1.0e-7, weights 2.5e-5,
    change 9.0e-4, momentum 2.2e-3 (conv2.weight is the worst tensor). Against float64, torch
    float32 itself is at loss 1.6e-7, weights 1.1e-5, change 8.8e-4, momentum 5.3e-3, and
    ours at 1.0e-7, 2.6e-5, 9.0e-4, 5.3e-3: the weight change's 1e-3 is float32 drift that
    torch has too (a ReLU or pooling decision within rounding goes the other way in one run;
    the layer path measures the same 8.8e-4), not a difference of the fused step. Bounds sit
    about 5x above; a wrong update, mask or gradient gives errors of order 1.
    """
    r = fused_vs_torch(steps=50, seed=0)
    assert r["steps"] == 50 and len(r["losses"]) == 50
    bounds = {"loss": 1e-6, "weights": 2e-4, "change": 5e-3, "momentum": 2e-2}
    for what, bound in bounds.items():
        assert r[what] < bound, f"{what}: max rel error {r[what]:.3g} vs torch float32 > {bound:g}"
        assert r["float64"]["ours"][what] < bound, (what, r["float64"])
    for name, errors in r["per_tensor"].items():
        assert errors["change"] < bounds["change"] and errors["momentum"] < bounds["momentum"], (name, errors)
    assert r["losses"][-1] < r["losses"][0]                      # and it learned something


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["k1", "k5", "k7", "avgpool", "deep", "bn"])
def test_fused_step_of_every_preset_it_runs_tracks_float64_as_closely_as_torch_float32(arch):
    """20 fused training steps of k1, k5, k7, avgpool, deep and bn at batch 32 against torch float32 and float64.

    Measured (2 vCPUs of an AMD EPYC Zen 3), ours vs float64: loss 1e-7 to 1.6e-7, weights
    5e-7 to 6.5e-5, change 1e-4 to 3e-3, momentum 2.5e-6 to 5.3e-3; torch float32 vs float64
    is as far or farther (k7: weights 1.6e-3, change 0.046: its 7x7 convolution rounds
    differently), so ours is held to float64 directly, with bounds about 5x above. bn, where
    BatchNorm centres ReLU's inputs on 0 and more of them are decided by rounding: weights 3.0e-4,
    change 3.2e-4, momentum 2.1e-4 (torch float32: 4.6e-4, 1.3e-3, 3.5e-3)."""
    r = fused_vs_torch(steps=20, seed=0, arch=arch)
    assert r["steps"] == 20
    bounds = {"loss": 1e-6, "weights": 5e-4, "change": 2e-2, "momentum": 3e-2}
    for what, bound in bounds.items():
        ours, theirs = r["float64"]["ours"][what], r["float64"]["torch"][what]
        assert ours < bound, f"{arch} {what}: ours vs float64 {ours:.3g} > {bound:g}"
        assert ours <= 2 * theirs + 1e-6, f"{arch} {what}: ours {ours:.3g} vs torch float32's {theirs:.3g}"
    # BatchNorm's running statistics after 20 updates (bn, measured: 3.0e-6 from torch float32)
    assert (r["buffers"] is None) == (arch != "bn") and (r["buffers"] is None or r["buffers"] < 3e-5), r["buffers"]


def test_fused_step_with_weight_decay_tracks_torch():
    """Weight decay on the fused path (fc3's fused pass included) against torch.optim.SGD.
    Measured: loss 1e-7, weights 9e-8, change 1.1e-4 (conv1.weight: 4 steps move a weight by a
    few hundred float32 ulps, so the change carries ~1e-4 of rounding), momentum 1.8e-6."""
    r = fused_vs_torch(steps=4, seed=1, weight_decay=0.05)
    assert r["steps"] == 4
    assert r["loss"] < 1e-6 and r["weights"] < 1e-6 and r["change"] < 2e-3 and r["momentum"] < 5e-5, r
    plain = fused_vs_torch(steps=4, seed=1)
    assert plain["per_tensor"]["fc3.weight"]["momentum"] < 5e-5
    assert abs(plain["losses"][-1] - r["losses"][-1]) > 1e-6      # the decay really changed the run


def test_state_dict_round_trip_and_strict_loading():
    ours = CIFAR10Model(rng=1)
    sd = ours.state_dict()
    assert list(sd) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                        "fc3.weight", "fc3.bias", "fc4.weight", "fc4.bias"]
    assert [v.size for v in sd.values()] == [864, 32, 9216, 32, 4194304, 512, 5120, 10]
    other = CIFAR10Model(rng=2)
    other.load_state_dict(sd)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    sd["conv1.weight"][...] = 0                                   # a copy, not a view
    assert np.abs(ours.conv1.weight.data).max() > 0
    bad = dict(sd)
    del bad["fc4.bias"]
    bad["extra"] = np.zeros(1)
    bad["fc3.weight"] = np.zeros((512, 100))
    with pytest.raises(ValueError) as e:
        other.load_state_dict(bad)
    assert str(e.value) == ("Network.load_state_dict: missing keys ['fc4.bias']; unexpected keys ['extra']; "
                            "fc3.weight: expected shape (512, 8192), got (512, 100)")


def test_flat_buffers_dropout_state_and_intermediates():
    model = CIFAR10Model(rng=3)
    assert model.flat_data.size == 896 + 9248 + 4194816 + 5130
    assert np.shares_memory(model.fc3.weight.data, model.flat_data)
    assert np.shares_memory(model.fc3.weight.grad, model.flat_grad)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    model.seed_dropout(5)
    state = model.dropout_state()
    assert state["drop1"]["seed"] != state["drop3"]["seed"] and state["drop1"]["counter"] == 0
    first = model.forward(x)
    assert model.dropout_state()["drop1"]["counter"] == 1
    model.load_dropout_state(state)
    np.testing.assert_array_equal(model.forward(x), first)        # same seeds and counters: same masks
    inter = model.forward_intermediates(x)
    assert list(inter) == [name for name, _ in model.layers]
    assert inter["conv1"].shape == (2, 32, 32, 32) and inter["pool2"].shape == (2, 32, 16, 16)
    assert inter["fc4"].shape == (2, 10) and model.conv1.out is inter["conv1"]
    model.eval()
    np.testing.assert_array_equal(model.forward(x), model.forward(x))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, 32, 32\)"):
        model.forward(np.zeros((2, 3, 28, 28), np.float32))
