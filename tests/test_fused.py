"""The fused fast path against its references.

* each numba kernel of ``scratchcnn.kernels.fused_*`` == its NumPy twin;
* ``fused_forward_backward`` == the layer-by-layer path (model.forward +
  SoftmaxCrossEntropy + model.backward): loss, logits, every parameter
  gradient and the dropout counters, at batch 32 and an odd batch size;
* ``fused_predict`` == the layer path in eval mode; ``fused_train_step`` ==
  ``fused_forward_backward`` + ``SGD.step`` bit for bit (momentum, weight
  decay, an lr changed between steps), and it refuses an optimizer it cannot run;
* NaN and inf reach the loss exactly as on the layer path, and ``train`` stops
  at the same step on both; two models never share the fast path's buffers.

Tolerances: the fused path sums in a different order (NHWC, blocked), so
results agree to float32 rounding, not bitwise; relative errors of a few
1e-6 are expected, 1e-4 would mean a bug.
"""
import threading

import numba
import numpy as np
import pytest

from scratchcnn import fused, reference
from scratchcnn.kernels import fused_conv as fc
from scratchcnn.kernels import fused_elementwise as fe
from scratchcnn.kernels import fused_linear as fl
from scratchcnn.kernels.rng import keep_mask
from scratchcnn.layers import Parameter, SoftmaxCrossEntropy
from scratchcnn.model import CIFAR10Model
from scratchcnn.optim import SGD

PARAM_NAMES = [name for name, _ in CIFAR10Model(rng=0).parameters()]


def rel_err(a, b):
    """max |a - b| / max |b|: error relative to the array's scale."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


def padded(rng, n, c, h=32, w=32):
    xp = np.zeros((n, h + 2, w + 2, c), np.float32)
    xp[:, 1:-1, 1:-1] = rng.standard_normal((n, h, w, c))
    return xp


# ------------------------------------------------------------------ kernels

@pytest.mark.parametrize("c", [3, 32])
def test_conv3x3_forward_matches_reference(c):
    rng = np.random.default_rng(c)
    xp = padded(rng, 3, c)
    koff = fc.tap_offsets(32, c)
    wk = fc.pack_weights(rng.standard_normal((32, c, 3, 3)).astype(np.float32), len(koff))
    bias = rng.standard_normal(32).astype(np.float32)
    out = np.empty((3, 32, 32, 32), np.float32)
    fc.conv3x3_forward(xp, wk, koff, bias, out)
    assert rel_err(out, fc.conv3x3_forward_reference(xp, wk, koff, bias)) < 2e-6


def test_conv3x3_forward_matches_torch_and_rotation_gives_input_grad():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 32, 32)).astype(np.float32)          # NCHW
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((2, 32, 32, 32)).astype(np.float32)       # NCHW
    koff = fc.tap_offsets(32, 32)
    xp = np.zeros((2, 34, 34, 32), np.float32)
    xp[:, 1:-1, 1:-1] = x.transpose(0, 2, 3, 1)
    out = np.empty((2, 32, 32, 32), np.float32)
    fc.conv3x3_forward(xp, fc.pack_weights(w, len(koff)), koff, np.zeros(32, np.float32), out)
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, torch.from_numpy(w), padding=1)
    assert rel_err(out, ty.detach().numpy().transpose(0, 2, 3, 1)) < 2e-6
    (dx,) = torch.autograd.grad(ty, tx, torch.from_numpy(dout))
    gp = np.zeros((2, 34, 34, 32), np.float32)
    gp[:, 1:-1, 1:-1] = dout.transpose(0, 2, 3, 1)
    fc.conv3x3_forward(gp, fc.pack_weights(fc.rotated_weights(w), len(koff)), koff, np.zeros(32, np.float32), out)
    assert rel_err(out, dx.numpy().transpose(0, 2, 3, 1)) < 2e-6


@pytest.mark.parametrize("c, gpad", [(3, 0), (32, 1)])
def test_conv3x3_weight_grad_matches_reference(c, gpad):
    rng = np.random.default_rng(c)
    xp = padded(rng, 3, c)
    g = rng.standard_normal((3, 32 + 2 * gpad, 32 + 2 * gpad, 32)).astype(np.float32)
    koff = fc.tap_offsets(32, c)
    partial = np.empty((3, len(koff), 32), np.float32)        # 3 chunks: uneven row split
    partial_b = np.empty((3, 32), np.float32)
    fc.conv3x3_weight_grad(xp, g, koff, partial, partial_b)
    dw, db = fc.conv3x3_weight_grad_reference(xp, g, koff)
    assert rel_err(partial.sum(0), dw) < 1e-5
    assert rel_err(partial_b.sum(0), db) < 1e-5


def test_relu_dropout_pad_matches_keep_mask():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 32, 32, 32)).astype(np.float32)
    outp = np.zeros((3, 34, 34, 32), np.float32)
    fe.relu_dropout_pad_nhwc(a, outp, 123, 7, 0.3, fe.dropout_scale(0.3))
    ref = fe.relu_dropout_reference(a.transpose(0, 3, 1, 2), 123, 7, 0.3)     # NCHW mask order
    np.testing.assert_array_equal(outp[:, 1:-1, 1:-1], ref.transpose(0, 2, 3, 1))
    assert not outp[:, 0].any() and not outp[:, :, -1].any()                  # border stays zero
    h = rng.standard_normal((5, 512)).astype(np.float32)
    out = np.empty_like(h)
    fe.relu_dropout_rows(h, out, 9, 2, 0.5, fe.dropout_scale(0.5))
    np.testing.assert_array_equal(out, fe.relu_dropout_reference(h, 9, 2, 0.5))
    # the reference uses the same bits as the layer path's numba mask
    np.testing.assert_array_equal(keep_mask(9, 2, h.size, 0.5).reshape(h.shape) * np.maximum(h, 0) * 2,
                                  fe.relu_dropout_reference(h, 9, 2, 0.5))


def test_maxpool_forward_backward_match_reference():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 32, 32, 32)).astype(np.float32)
    a[0, 0, 0, 0] = a[0, 0, 1, 0] = 5.0                        # a tie: the first one wins, like torch
    flat = np.empty((3, 8192), np.float32)
    arg = np.empty((3, 16, 16, 32), np.uint8)
    fe.relu_maxpool2_nhwc(a, flat, arg)
    ref_flat, ref_arg = fe.relu_maxpool2_reference(a)
    np.testing.assert_array_equal(flat, ref_flat)
    np.testing.assert_array_equal(arg, ref_arg)
    assert arg[0, 0, 0, 0] == 0
    dflat = rng.standard_normal((3, 8192)).astype(np.float32)
    gp = np.zeros((3, 34, 34, 32), np.float32)
    fe.maxpool2_relu_backward_pad(dflat, flat, arg, gp)
    np.testing.assert_array_equal(gp[:, 1:-1, 1:-1], fe.maxpool2_relu_backward_reference(dflat, flat, arg))
    g1 = np.empty_like(a)
    dout = rng.standard_normal(a.shape).astype(np.float32)
    fe.dropout_relu_backward_nhwc(dout, gp, np.float32(2), g1)
    np.testing.assert_array_equal(g1, np.where(gp[:, 1:-1, 1:-1] > 0, dout * np.float32(2), 0))


def test_average_pool_kernels_give_the_layer_paths_bits_nan_and_inf_included():
    """relu then 2x2 average pool, and its backward, equal their NumPy twins and the layer path
    (layers.ReLU then layers.AvgPool2d, NCHW) bit for bit; a NaN or +inf in a window makes its
    mean NaN or inf; the NaN passes no gradient back (NaN > 0 is false), the inf does."""
    from scratchcnn.layers import AvgPool2d, ReLU
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 32, 32, 32)).astype(np.float32)
    a[0, 0, 0, 0] = np.nan
    a[1, 2, 3, 4] = np.inf
    flat = np.empty((3, 8192), np.float32)
    fe.relu_avgpool2_nhwc(a, flat)
    np.testing.assert_array_equal(flat, fe.relu_avgpool2_reference(a))
    relu, pool = ReLU(), AvgPool2d(2)
    pooled = pool.forward(relu.forward(np.ascontiguousarray(a.transpose(0, 3, 1, 2))))
    np.testing.assert_array_equal(flat, pooled.reshape(3, -1))
    assert np.isnan(flat[0, 0]) and flat[1, (4 * 16 + 1) * 16 + 1] == np.inf
    assert np.isfinite(np.delete(flat[0], 0)).all()
    dflat = rng.standard_normal((3, 8192)).astype(np.float32)
    gp = np.full((3, 34, 34, 32), 7, np.float32)               # the border must stay untouched
    fe.avgpool2_relu_backward_pad(dflat, a, gp)
    np.testing.assert_array_equal(gp[:, 1:-1, 1:-1], fe.avgpool2_relu_backward_reference(dflat, a))
    layer_grad = relu.backward(pool.backward(dflat.reshape(pooled.shape))).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(gp[:, 1:-1, 1:-1], layer_grad)
    assert gp[0, 1, 1, 0] == 0 and gp[1, 3, 4, 4] == dflat[1, (4 * 16 + 1) * 16 + 1] / 4
    assert (gp[:, 0] == 7).all() and (gp[:, :, -1] == 7).all()
    # fused into conv2's parallel loop: the same as the conv, then the standalone epilogue
    koff = fc.tap_offsets(32, 32)
    xp = padded(rng, 3, 32)
    wk = fc.pack_weights(rng.standard_normal((32, 32, 3, 3)).astype(np.float32) * 0.1, len(koff))
    b = rng.standard_normal(32).astype(np.float32)
    a_sep, a_fused = np.empty((2, 3, 32, 32, 32), np.float32)
    flat_sep, flat_fused = np.empty((2, 3, 8192), np.float32)
    fc.conv3x3_forward(xp, wk, koff, b, a_sep)
    fe.relu_avgpool2_nhwc(a_sep, flat_sep)
    unused_arg = np.empty((3, 16, 16, 32), np.uint8)     # max-pool only
    fc.conv3x3_forward_relu_pool2(xp, wk, koff, b, a_fused, flat_fused, unused_arg, True)
    np.testing.assert_array_equal(a_fused, a_sep)
    np.testing.assert_array_equal(flat_fused, flat_sep)


def test_batchnorm_kernels_equal_their_twins_and_the_layer_in_training_and_eval():
    """The fast path's BatchNorm2d (NHWC, float64 sums) against its NumPy twins and layers.BatchNorm2d
    (NCHW): batch statistics, the output, both parameter gradients and dL/dy, from a padded
    gradient buffer whose border stays untouched; eval mode with the running statistics."""
    from scratchcnn.kernels import fused_batchnorm as fbn
    from scratchcnn.layers import BatchNorm2d
    rng = np.random.default_rng(11)
    y = (rng.standard_normal((4, 32, 32, 32)) * 3 + 5).astype(np.float32)     # mean 5: the sums must not drift
    partial = np.empty((3, 32))
    mean64, var64 = fbn.batch_stats(y, partial)
    np.testing.assert_allclose(mean64, y.astype(np.float64).mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(var64, y.astype(np.float64).var(axis=(0, 1, 2)), rtol=1e-10)
    layer = BatchNorm2d(32)
    layer.weight.data[...] = rng.standard_normal(32).astype(np.float32)
    layer.bias.data[...] = rng.standard_normal(32).astype(np.float32)
    gamma, beta = layer.weight.data, layer.bias.data
    dz = rng.standard_normal(y.shape).astype(np.float32)
    for training in (True, False):
        layer.train() if training else layer.eval()
        out = layer.forward(np.ascontiguousarray(y.transpose(0, 3, 1, 2)))
        mean, var = ((mean64.astype(np.float32), var64.astype(np.float32)) if training
                     else (layer.running_mean, layer.running_var))
        rstd = 1 / np.sqrt(var + np.float32(layer.eps))
        z = np.empty_like(y)
        fbn.bn_forward_nhwc(y, mean, rstd, gamma, beta, z)
        np.testing.assert_array_equal(z, fbn.bn_forward_reference(y, mean, rstd, gamma, beta))
        assert rel_err(z.transpose(0, 3, 1, 2), out) < 1e-6
        dx = layer.backward(np.ascontiguousarray(dz.transpose(0, 3, 1, 2)))
        g = np.full((4, 34, 34, 32), 7, np.float32)
        g[:, 1:-1, 1:-1] = dz
        sum_dz, sum_dzx = (s.astype(np.float32) for s in fbn.bn_backward_sums(g, y, mean, rstd, partial))
        ref_dy, ref_dgamma, ref_dbeta = fbn.bn_backward_reference(dz, y, mean, rstd, gamma, training)
        np.testing.assert_allclose(sum_dzx, ref_dgamma, rtol=1e-6, atol=1e-3)
        np.testing.assert_allclose(sum_dz, ref_dbeta, rtol=1e-6)
        assert rel_err(sum_dzx, layer.weight.grad) < 1e-5 and rel_err(sum_dz, layer.bias.grad) < 1e-5
        fbn.bn_backward_apply(g, y, mean, rstd, gamma, sum_dz, sum_dzx, training)
        assert rel_err(g[:, 1:-1, 1:-1], ref_dy) < 1e-6
        assert rel_err(g[:, 1:-1, 1:-1].transpose(0, 3, 1, 2), dx) < 1e-5, training
        assert (g[:, 0] == 7).all() and (g[:, :, 33] == 7).all()


def test_conv_with_epilogue_equals_conv_then_epilogue():
    rng = np.random.default_rng(6)
    n = 3
    koff3, koff32 = fc.tap_offsets(32, 3), fc.tap_offsets(32, 32)
    xp = padded(rng, n, 3)
    w1 = fc.pack_weights(rng.standard_normal((32, 3, 3, 3)).astype(np.float32), len(koff3))
    w2 = fc.pack_weights(rng.standard_normal((32, 32, 3, 3)).astype(np.float32) * 0.1, len(koff32))
    b = rng.standard_normal(32).astype(np.float32)
    scale = fe.dropout_scale(0.3)
    a_sep, a_fused = np.empty((2, n, 32, 32, 32), np.float32)
    d_sep, d_fused = np.zeros((2, n, 34, 34, 32), np.float32)
    fc.conv3x3_forward(xp, w1, koff3, b, a_sep)
    fe.relu_dropout_pad_nhwc(a_sep, d_sep, 5, 1, 0.3, scale)
    fc.conv3x3_forward_relu_dropout_pad(xp, w1, koff3, b, a_fused, d_fused, 5, 1, 0.3, scale)
    np.testing.assert_array_equal(d_fused, d_sep)
    flat_sep, flat_fused = np.empty((2, n, 8192), np.float32)
    arg_sep, arg_fused = np.empty((2, n, 16, 16, 32), np.uint8)
    fc.conv3x3_forward(d_sep, w2, koff32, b, a_sep)
    fe.relu_maxpool2_nhwc(a_sep, flat_sep, arg_sep)
    fc.conv3x3_forward_relu_pool2(d_sep, w2, koff32, b, a_fused, flat_fused, arg_fused, False)
    np.testing.assert_array_equal(flat_fused, flat_sep)
    np.testing.assert_array_equal(arg_fused, arg_sep)
    g_sep, g_fused = np.empty((2, n, 32, 32, 32), np.float32)
    fc.conv3x3_forward(d_sep, w2, koff32, b, a_sep)
    fe.dropout_relu_backward_nhwc(a_sep, d_sep, scale, g_sep)
    fc.conv3x3_forward_dropout_relu_backward(d_sep, w2, koff32, b, a_fused, d_sep, scale, g_fused)
    np.testing.assert_array_equal(g_fused, g_sep)


@pytest.mark.parametrize("n", [32, 5])
def test_linear_kernels_match_reference(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 2048)).astype(np.float32)
    w = rng.standard_normal((64, 2048)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    g = rng.standard_normal((n, 64)).astype(np.float32)
    out = np.empty((n, 64), np.float32)
    fl.linear_forward(x, w, b, out)
    assert rel_err(out, fl.linear_forward_reference(x.astype(np.float64), w, b)) < 2e-6
    out_t = np.empty((64, 32), np.float32)
    xt = np.zeros((2048, 32), np.float32)
    xt[:, :n] = x.T
    fl.linear_forward_t(xt, w, b, out_t)
    assert rel_err(out_t[:, :n].T, fl.linear_forward_reference(x.astype(np.float64), w, b)) < 5e-6
    gp = np.empty((64 // 8, n, 8), np.float32)
    xp = np.empty((2048 // 32, n, 32), np.float32)
    fl.to_panels(g, gp)
    fl.to_panels(x, xp)
    np.testing.assert_array_equal(gp, fl.to_panels_reference(g, 8))
    np.testing.assert_array_equal(xp, fl.to_panels_reference(x, 32))
    x_back = np.empty_like(x)
    fl.from_panels(xp, x_back)
    np.testing.assert_array_equal(x_back, x)
    dxp = np.empty((2048 // 32, n, 32), np.float32)
    fl.linear_grad_input(gp, w, dxp)
    dx = np.empty_like(x)
    fl.from_panels(dxp, dx)
    assert rel_err(dx, fl.linear_grad_input_reference(g.astype(np.float64), w)) < 2e-6
    dw = np.empty_like(w)
    fl.linear_grad_weight(gp, xp, dw)
    assert rel_err(dw, fl.linear_grad_weight_reference(g.astype(np.float64), x)) < 2e-6
    # dw and SGD's update in one pass == dw, then reference.sgd_momentum_step (bit for bit:
    # the same element update, each operation rounded once)
    for first, momentum, weight_decay in [(True, 0.9, 0.0), (False, 0.9, 0.0), (True, 0.9, 5e-4),
                                          (False, 0.9, 5e-4), (False, 0.0, 5e-4), (False, 0.0, 0.0)]:
        w1, w2 = w.copy(), w.copy()
        buf1 = rng.standard_normal(w.shape).astype(np.float32)
        buf2 = buf1.copy()
        dw1 = np.empty_like(w)
        hyper = np.float32(0.01), np.float32(momentum), np.float32(weight_decay)
        fl.linear_grad_weight_sgd(gp, xp, dw1, buf1, w1, *hyper, first)
        np.testing.assert_array_equal(dw1, dw)                  # same sums, same order
        reference.sgd_momentum_step(w2.reshape(-1), dw.reshape(-1), buf2.reshape(-1), *hyper, first)
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(buf1, buf2)               # momentum 0: untouched, as torch keeps none
        assert not np.array_equal(w1, w)


# ------------------------------------------------------------------ whole network

@pytest.mark.parametrize("n, p", [(32, None), (5, None), (8, 0.0)], ids=["32", "5", "no-dropout"])
def test_fused_forward_backward_equals_layer_path(n, p):
    """p = 0: the fast path skips the masks altogether (no hashing), the layers keep every unit."""
    layer_model, fused_model = CIFAR10Model(rng=11), CIFAR10Model(rng=11)
    if p is not None:
        for model in (layer_model, fused_model):
            model.drop1.p = model.drop3.p = p
    rng = np.random.default_rng(n)
    criterion = SoftmaxCrossEntropy()
    for step in range(2):                    # the second step checks the advanced dropout counters
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, n)
        logits = layer_model.forward(x)
        loss = criterion.forward(logits, y)
        layer_model.backward(criterion.backward())
        f_loss, f_logits = fused.fused_forward_backward(fused_model, x, y)
        assert isinstance(f_loss, float)
        assert abs(f_loss - float(loss)) < 1e-6 * abs(float(loss))
        assert rel_err(f_logits, logits) < 2e-6
        for (name, p_layer), (_, p_fused) in zip(layer_model.parameters(), fused_model.parameters()):
            assert rel_err(p_fused.grad, p_layer.grad) < 1e-5, name
        assert fused_model.dropout_state() == layer_model.dropout_state()
    assert layer_model.dropout_state()["drop1"]["counter"] == 2


@pytest.mark.parametrize("n, momentum, weight_decay", [(32, 0.9, 0.0), (5, 0.9, 0.0), (32, 0.9, 5e-3),
                                                        (5, 0.0, 5e-3), (5, 0.0, 0.0)])
def test_fused_train_step_equals_forward_backward_then_sgd(n, momentum, weight_decay):
    m1, m2 = CIFAR10Model(rng=5), CIFAR10Model(rng=5)
    o1 = SGD(m1.parameters(), lr=0.001, momentum=momentum, weight_decay=weight_decay)
    o2 = SGD(m2.parameters(), lr=0.001, momentum=momentum, weight_decay=weight_decay)
    rng = np.random.default_rng(n)
    for step in range(3):                     # first step (buf = d), later ones, and a new lr
        if step == 2:
            o1.lr = o2.lr = 0.01              # a schedule sets lr between steps: read at every step
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, n)
        before = m2.flat_data.copy()
        l1, _ = fused.fused_forward_backward(m1, x, y)
        o1.step()
        l2, _ = fused.fused_train_step(m2, o2, x, y)
        assert l1 == l2
        np.testing.assert_array_equal(m2.flat_grad, m1.flat_grad)
        np.testing.assert_array_equal(m2.flat_data, m1.flat_data)
        assert o2.state_dict()["momentum_buffers"].keys() == o1.state_dict()["momentum_buffers"].keys()
        for k, v in o1.state_dict()["momentum_buffers"].items():
            np.testing.assert_array_equal(o2.state_dict()["momentum_buffers"][k], v)
        for name, _ in m2.parameters():          # every tensor moved (fc3.weight's pass and the rest)
            part = m2.param_slice(name)
            assert (m2.flat_data[part] != before[part]).any(), name
    assert bool(o2.momentum_buffers) == (momentum != 0)


def test_fused_train_step_refuses_an_optimizer_it_cannot_run():
    """No silent fallback: the wrong optimizer is an error, and the model is left untouched."""
    model, other = CIFAR10Model(rng=0), CIFAR10Model(rng=1)
    x, y = np.zeros((2, 3, 32, 32), np.float32), np.array([0, 1])
    separate = [(name, Parameter(p.data.copy(), name)) for name, p in model.parameters()]

    class NotSGD:
        lr, momentum = 0.001, 0.9

    before, state = model.flat_data.copy(), model.dropout_state()
    for opt, match in [(NotSGD(), "scratchcnn.optim.SGD only, not NotSGD"),
                       (SGD(other.parameters(), lr=0.1), "does not hold this model's parameters"),
                       (SGD(separate, lr=0.1), "does not hold this model's parameters")]:
        with pytest.raises(NotImplementedError, match=match):
            fused.fused_train_step(model, opt, x, y)
    np.testing.assert_array_equal(model.flat_data, before)
    assert model.dropout_state() == state and not model.flat_grad.any()
    fused.check_optimizer(model, SGD(model.parameters(), lr=0.1))          # the right one passes


def test_fused_overwrites_grads_and_respects_eval_mode():
    m_layer, m_fused = CIFAR10Model(rng=4).eval(), CIFAR10Model(rng=4).eval()
    m_fused.flat_grad[:] = 7.0                               # stale values must be overwritten
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    y = np.array([1, 2, 3])
    crit = SoftmaxCrossEntropy()
    crit.forward(m_layer.forward(x), y)
    m_layer.backward(crit.backward())
    fused.fused_forward_backward(m_fused, x, y)
    assert rel_err(m_fused.flat_grad, m_layer.flat_grad) < 1e-5
    assert m_fused.dropout_state() == m_layer.dropout_state()            # no mask drawn in eval
    assert rel_err(fused.fused_predict(m_fused, x), m_layer.forward(x)) < 2e-6


def test_fused_rejects_what_it_does_not_support():
    with pytest.raises(NotImplementedError, match="float32"):
        fused.fused_forward_backward(CIFAR10Model(dtype=np.float64, rng=0),
                                     np.zeros((1, 3, 32, 32)), np.zeros(1, np.int64))
    model = CIFAR10Model(rng=0)
    with pytest.raises(ValueError, match="shape"):
        fused.fused_forward_backward(model, np.zeros((1, 3, 28, 28), np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="labels"):
        fused.fused_forward_backward(model, np.zeros((2, 3, 32, 32), np.float32), np.array([0, 10]))


def test_warmup_loads_the_kernel_groups_a_model_runs_once_per_process(monkeypatch):
    """warmup(model) warms only the groups the model runs (the tutorial: no average pool, no
    BatchNorm), each once; warmup() warms the rest; an unsupported model is refused, not warmed."""
    from scratchcnn.model import Network
    monkeypatch.setattr(fused, "_warmed", set())
    assert fused.warmup(Network("tutorial", rng=0), verbose=False) > 0
    assert fused._warmed == {"core"}
    assert fused.warmup(Network("k5", rng=0), verbose=False) == 0.0           # same kernels
    assert fused.warmup(Network("bn", rng=0), verbose=False) > 0
    assert fused._warmed == {"core", "batchnorm"}
    assert fused.warmup(verbose=False) > 0 and fused._warmed == set(fused._WARM)
    assert fused.warmup(Network("avgpool", rng=0), verbose=False) == 0.0
    assert fused.kernels_cached()
    with pytest.raises(NotImplementedError, match="vgg|fast path|supports only"):
        fused.warmup(Network("vgg", rng=0), verbose=False)


# ------------------------------------------------------------------ NaN and inf, as on the layer path

def layer_train_step(model, opt, x, y):
    """The layer-by-layer path's step (what ``--no-fused`` runs): loss, then backward and SGD."""
    criterion = SoftmaxCrossEntropy()
    loss = float(criterion.forward(model.forward(x), y))
    model.backward(criterion.backward())
    opt.step()
    return loss


def test_maxpool_and_relu_dropout_kernels_propagate_nan_like_torch():
    """NaN wins a pooling window (the last NaN, as reference.max_pool2d_forward); relu(NaN) = NaN;
    a dropped NaN or +inf is NaN (x * 0), as layers.Dropout computes it."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 32, 32, 32)).astype(np.float32)
    a[0, 0, 0, 0] = a[0, 1, 1, 0] = np.nan                      # two NaNs in one window: the last wins
    a[1, 2, 3, 4] = np.nan
    a[1, 4, 4, 5] = np.inf
    flat, arg = np.empty((2, 8192), np.float32), np.empty((2, 16, 16, 32), np.uint8)
    fe.relu_maxpool2_nhwc(a, flat, arg)
    ref_flat, ref_arg = fe.relu_maxpool2_reference(a)
    np.testing.assert_array_equal(flat, ref_flat)
    np.testing.assert_array_equal(arg, ref_arg)
    assert arg[0, 0, 0, 0] == 3 and np.isnan(flat[0, 0]) and arg[1, 1, 1, 4] == 1     # (dy, dx) = (0, 1)
    # the layer path (NCHW, ReLU then pool) picks the same pixel: index h*W + w of the last NaN
    pooled, idx = reference.max_pool2d_forward(np.maximum(a, 0).transpose(0, 3, 1, 2), 2, 2, 2, 2)
    np.testing.assert_array_equal(flat, pooled.reshape(2, -1))
    assert idx[0, 0, 0, 0] == 1 * 32 + 1 and idx[1, 4, 1, 1] == 2 * 32 + 3
    h = np.array([[np.nan, np.inf, -np.inf, 1.0] * 128] * 3, np.float32)
    out = np.empty_like(h)
    fe.relu_dropout_rows(h, out, 3, 0, 0.5, fe.dropout_scale(0.5))
    with np.errstate(invalid="ignore"):                                              # inf * 0
        np.testing.assert_array_equal(out, fe.relu_dropout_reference(h, 3, 0, 0.5))  # NaN == NaN here
    kept = keep_mask(3, 0, h.size, 0.5).reshape(h.shape).astype(bool)
    assert np.isnan(out[:, 0::4]).all() and np.isnan(out[:, 1::4][~kept[:, 1::4]]).all()
    assert (out[:, 1::4][kept[:, 1::4]] == np.inf).all() and (out[:, 2::4] == 0).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("where", ["input"] + PARAM_NAMES)
def test_nan_or_inf_in_input_or_weights_gives_nan_loss_on_both_paths(where, bad):
    """Measured before the fix: a NaN in one input pixel or one conv1 weight gave a finite loss
    (2.31) on the fused path, NaN on the layer path."""
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = np.array([1, 5, 0, 9])
    losses = []
    for path in ("layers", "fused"):
        model, xb = CIFAR10Model(rng=1), x.copy()
        if where == "input":
            xb[2, 1, 5, 7] = bad
        else:
            dict(model.parameters())[where].data.flat[3] = bad
        opt = SGD(model.parameters(), lr=0.001, momentum=0.9)
        with np.errstate(invalid="ignore", over="ignore"):
            losses.append(layer_train_step(model, opt, xb, y) if path == "layers"
                          else fused.fused_train_step(model, opt, xb, y)[0])
    assert np.isnan(losses).all(), losses


@pytest.mark.parametrize("bad", [np.nan, -np.inf], ids=["nan", "-inf"])
def test_nan_or_inf_in_a_momentum_buffer_gives_nan_loss_at_the_same_step(bad):
    """The step after the bad buffer entry is used: loss NaN on both paths, for every tensor's buffer.
    (-inf makes the weight +inf; +inf would make it -inf, which a ReLU can clamp to a finite loss,
    on both paths alike.)"""
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((4, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 4)) for _ in range(3)]
    for name in PARAM_NAMES:
        losses = {}
        for path, step in (("layers", layer_train_step), ("fused", lambda *a: fused.fused_train_step(*a)[0])):
            model = CIFAR10Model(rng=2)
            opt = SGD(model.parameters(), lr=0.001, momentum=0.9)
            with np.errstate(invalid="ignore", over="ignore"):
                losses[path] = [step(model, opt, *batches[0])]
                opt.momentum_buffers[name].flat[0] = bad
                losses[path] += [step(model, opt, *batch) for batch in batches[1:]]
        assert np.isfinite(losses["layers"][:2]).all() and np.isnan(losses["layers"][2]), (name, losses)
        np.testing.assert_allclose(losses["fused"], losses["layers"], rtol=1e-5, err_msg=name)   # NaN == NaN


class _Inject:
    """A scratch backend that puts ``bad`` into the input, a weight or a momentum buffer
    just before training step ``at`` (counted from 1 over the run)."""

    def __init__(self, inner, where, bad, at):
        self.inner, self.where, self.bad, self.at, self.step = inner, where, bad, at, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def train_step(self, x, y):
        self.step += 1
        if self.step == self.at:
            if self.where == "input":
                x = x.copy()
                x[0, 0, 0, 0] = self.bad
            elif self.where == "momentum":
                self.inner.optimizer.momentum_buffers["conv2.weight"].flat[7] = self.bad
            else:
                dict(self.inner.model.parameters())[self.where].data.flat[0] = self.bad
        with np.errstate(invalid="ignore", over="ignore"):
            return self.inner.train_step(x, y)


@pytest.mark.slow
@pytest.mark.parametrize("where, bad, stop", [("input", np.nan, 3), ("input", np.inf, 3),
                                              ("conv1.weight", np.nan, 3), ("momentum", np.nan, 4)])
def test_train_stops_at_the_same_step_on_both_paths(where, bad, stop, tmp_path, monkeypatch):
    import scratchcnn.train as train_mod
    from scratchcnn.config import TrainConfig
    real = train_mod.make_backend
    messages = {}
    for fused_path in (True, False):
        monkeypatch.setattr(train_mod, "make_backend", lambda *a, **k: _Inject(real(*a, **k), where, bad, 3))
        cfg = TrainConfig(backend="scratch", dataset="synthetic", train_size=128, test_size=16, epochs=1,
                          batch_size=16, fused=fused_path)
        with pytest.raises(train_mod.TrainingDiverged) as e:
            train_mod.train(cfg, str(tmp_path / f"run-{fused_path}"), progress=False, log=lambda *a: None)
        messages[fused_path] = str(e.value).replace(str(tmp_path / f"run-{fused_path}"), "RUN")
    assert messages[True] == messages[False], messages
    assert messages[True].startswith(f"loss became nan at epoch 1, step {stop}; training stopped")


# ------------------------------------------------------------------ per-model state

def test_two_models_in_one_process_do_not_share_the_fast_paths_buffers():
    """Two models stepping in two threads, interleaved: each ends exactly as if it had trained alone
    (with one shared set of buffers, one model's activations overwrote the other's mid-step)."""
    rng = np.random.default_rng(9)
    data = {seed: [(rng.standard_normal((16, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 16))
                   for _ in range(4)] for seed in (1, 2)}

    def run(seed, model, opt, barrier=None):
        for x, y in data[seed]:
            if barrier is not None:
                barrier.wait()                   # both threads start each step together
            fused.fused_train_step(model, opt, x, y)

    alone = {}
    for seed in (1, 2):
        model = CIFAR10Model(rng=seed)
        run(seed, model, SGD(model.parameters(), lr=0.01, momentum=0.9))
        alone[seed] = model.flat_data.copy()
    models = {seed: CIFAR10Model(rng=seed) for seed in (1, 2)}
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=run, args=(seed, m, SGD(m.parameters(), lr=0.01, momentum=0.9), barrier))
               for seed, m in models.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for seed, model in models.items():
        np.testing.assert_array_equal(model.flat_data, alone[seed])
    assert fused._workspace(models[1], 16, 10) is not fused._workspace(models[2], 16, 10)


# ---------------------------------------------------------------- register blocks per CPU
@numba.njit(parallel=True)
def _forward_with_8px(xp, wk, koff, bias, out):
    for r in numba.prange(xp.shape[0] * (xp.shape[1] - 2)):
        fc.conv3x3_row_8px(xp, wk, koff, bias, out, r)


@numba.njit(parallel=True)
def _forward_with_2px(xp, wk, koff, bias, out):
    for r in numba.prange(xp.shape[0] * (xp.shape[1] - 2)):
        fc.conv3x3_row_2px(xp, wk, koff, bias, out, r)


@numba.njit
def _weight_grad_with(taps, xp, g, koff):
    n_img, hp, wp, c = xp.shape
    h_out, w_out = hp - 2, wp - 2
    dw = np.zeros(koff.size * fc.COUT, np.float32)
    xf, gf = xp.reshape(-1), g.reshape(-1)
    for r in range(n_img * h_out):
        n, h = r // h_out, r % h_out
        x_row, g_row = (n * hp + h) * wp * c, (n * h_out + h) * w_out * fc.COUT
        for k0 in range(0, koff.size, taps):
            if taps == 8:
                fc._wgrad_block_8taps(dw, xf, gf, koff, k0, x_row, g_row, c, w_out)
            else:
                fc._wgrad_block_2taps(dw, xf, gf, koff, k0, x_row, g_row, c, w_out)
    return dw.reshape(koff.size, fc.COUT)


def test_both_register_blocks_of_the_conv_kernels_give_the_same_bits_as_each_other_and_the_reference():
    """8 pixels / 8 taps per block (AVX-512) or 2 (AVX2): the same sums in the same order. Both run
    on every CPU (the big block only slower where it spills), so both are checked wherever tests run."""
    rng = np.random.default_rng(7)
    n, c, size = 3, 32, 16
    xp = np.zeros((n, size + 2, size + 2, c), np.float32)
    xp[:, 1:-1, 1:-1] = rng.standard_normal((n, size, size, c))
    koff = fc.tap_offsets(size, c)
    wk = fc.pack_weights(rng.standard_normal((32, c, 3, 3)).astype(np.float32), koff.size)
    bias = rng.standard_normal(32).astype(np.float32)
    out8, out2 = (np.empty((n, size, size, 32), np.float32) for _ in range(2))
    _forward_with_8px(xp, wk, koff, bias, out8)
    _forward_with_2px(xp, wk, koff, bias, out2)
    np.testing.assert_array_equal(out8, out2)
    np.testing.assert_allclose(out2, fc.conv3x3_forward_reference(xp, wk, koff, bias), rtol=1e-5, atol=1e-4)
    g = rng.standard_normal((n, size, size, 32)).astype(np.float32)
    dw8, dw2 = _weight_grad_with(8, xp, g, koff), _weight_grad_with(2, xp, g, koff)
    np.testing.assert_array_equal(dw8, dw2)
    np.testing.assert_allclose(dw2, fc.conv3x3_weight_grad_reference(xp, g, koff)[0], rtol=1e-4, atol=1e-3)
    # this CPU's choice is one of the two
    assert fc.conv3x3_row is (fc.conv3x3_row_8px if fc.AVX512 else fc.conv3x3_row_2px)
    assert fc.WGRAD_TAPS == (8 if fc.AVX512 else 2)


# ------------------------------------------------------------------ any odd filter size

def assert_same_gradients_and_buffers(fused_model, layer_model):
    """Every parameter's gradient within 1e-5 of the layer path's, BatchNorm's running statistics
    within 1e-6. A convolution's bias right before a BatchNorm has gradient 0 but for rounding
    (``parity.zero_gradient_parameters``): both sides must give ~0 beside its weight's gradient."""
    from scratchcnn.parity import zero_gradient_parameters
    zero = zero_gradient_parameters(layer_model.arch)
    grads = dict(layer_model.parameters())
    for name, p_fused in fused_model.parameters():
        if name in zero:
            scale = np.abs(grads[name[:-len("bias")] + "weight"].grad).max()
            assert np.abs(p_fused.grad).max() < 1e-5 * scale and np.abs(grads[name].grad).max() < 1e-5 * scale, name
        else:
            assert rel_err(p_fused.grad, grads[name].grad) < 1e-5, name
    theirs = layer_model.state_dict()
    for name, buf in fused_model.state_dict().items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert rel_err(buf.astype(np.float64), theirs[name].astype(np.float64)) < 1e-6, name


def assert_fused_steps_equal_the_layers(fused_model, layer_model, rng, n, steps=2, classes=10):
    """``steps`` forward and backward passes on random batches of n: the fast path gives the
    layer path's loss, logits, every gradient, BatchNorm's buffers and dropout counters (the
    second step meets advanced counters and updated running statistics); then
    eval-mode prediction of 5 images gives the layers' logits. Returns the batches it used."""
    criterion, batches = SoftmaxCrossEntropy(), []
    for _ in range(steps):
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, classes, n)
        logits = layer_model.forward(x)
        loss = criterion.forward(logits, y)
        layer_model.backward(criterion.backward())
        f_loss, f_logits = fused.fused_forward_backward(fused_model, x, y)
        assert abs(f_loss - float(loss)) < 1e-6 * abs(float(loss))
        assert rel_err(f_logits, logits) < 2e-6
        assert_same_gradients_and_buffers(fused_model, layer_model)
        assert fused_model.dropout_state() == layer_model.dropout_state()
        batches.append((x, y))
    layer_model.eval(), fused_model.eval()
    x = rng.standard_normal((5, 3, 32, 32)).astype(np.float32)
    assert rel_err(fused.fused_predict(fused_model, x), layer_model.forward(x)) < 2e-6
    return batches


@pytest.mark.parametrize("arch", ["k1", "k5", "k7", "avgpool", "deep", "bn"])
def test_every_preset_of_the_fast_path_runs_fused_and_equals_the_layer_path(arch):
    """The presets k1, k5 and k7 (the tutorial's network with 1x1, 5x5, 7x7 filters and "same"
    padding), avgpool (2x2 average pooling), deep (four 3x3 convolutions) and bn (BatchNorm2d
    after each convolution) run on the fast path: two steps of forward and backward equal the
    layer path's (logits, loss, every gradient, BatchNorm's running statistics, the dropout
    counters); the training step equals forward and backward, then optim.SGD, bit for bit;
    prediction equals the layers' eval forward."""
    from scratchcnn.model import Network
    assert fused.unsupported_reason(Network(arch, rng=0)) is None
    layer_model, fused_model, stepped, checked = (Network(arch, rng=3) for _ in range(4))
    opt_stepped = SGD(stepped.parameters(), lr=0.01, momentum=0.9)
    opt_checked = SGD(checked.parameters(), lr=0.01, momentum=0.9)
    for x, y in assert_fused_steps_equal_the_layers(fused_model, layer_model, np.random.default_rng(3), 8):
        fused.fused_train_step(stepped, opt_stepped, x, y)
        fused.fused_forward_backward(checked, x, y)
        opt_checked.step()
        np.testing.assert_array_equal(stepped.flat_data, checked.flat_data)
    assert not np.array_equal(stepped.flat_data, layer_model.flat_data)       # it did move


@pytest.mark.parametrize("k1, k2", [(5, 1), (1, 7)])
def test_a_changed_tutorial_network_with_two_filter_sizes_runs_fused_like_the_layers(k1, k2):
    """Each convolution keeps its own filter size ("same" padding): conv1 5x5 with conv2 1x1, and
    conv1 1x1 with conv2 7x7, give the layer path's loss, gradients and prediction on the fast path."""
    from scratchcnn import architecture as A
    from scratchcnn.model import Network
    spec = [{k: v for k, v in layer.items() if k not in ("in_channels", "in_features")}
            for layer in A.PRESETS["tutorial"][1]]
    spec[0].update(kernel_size=k1, padding=(k1 - 1) // 2)
    spec[3].update(kernel_size=k2, padding=(k2 - 1) // 2)
    arch = A.resolve(spec, 10)
    layer_model, fused_model = Network(arch, rng=2), Network(arch, rng=2)
    assert fused.unsupported_reason(fused_model) is None
    assert_fused_steps_equal_the_layers(fused_model, layer_model, np.random.default_rng(2), 4, steps=1)


def conv_stack(*blocks, pool="AvgPool2d", p3=0.5):
    """A spec of the fast path's family: one (kernel size, dropout p or None[, BatchNorm2d's
    arguments]) per convolution, then ``pool`` and the classifier with dropout ``p3``."""
    spec = []
    for k, p, *bn in blocks:
        spec += [{"kind": "Conv2d", "out_channels": 32, "kernel_size": k, "padding": k // 2}]
        spec += [{"kind": "BatchNorm2d", **bn[0]}] if bn else []
        spec += [{"kind": "ReLU"}] + ([{"kind": "Dropout", "p": p}] if p is not None else [])
    return spec + [{"kind": pool, "kernel_size": 2}, {"kind": "Flatten"},
                   {"kind": "Linear", "out_features": 512}, {"kind": "ReLU"}, {"kind": "Dropout", "p": p3},
                   {"kind": "Linear"}]


@pytest.mark.parametrize("blocks", [((3, None),), ((5, 0.2), (1, 0.4), (3, None)), ((3, None), (7, 0.1), (5, None)),
                                    ((3, 0.2, {}), (5, None), (3, None, {"affine": False, "eps": 1e-3, "momentum": 0.3})),
                                    ((3, None, {}),)],
                         ids=["one conv", "5x5+drop, 1x1+drop, 3x3", "3x3, 7x7+drop, 5x5",
                              "bn+drop, plain, bn without affine", "one conv with bn"])
def test_a_stack_of_any_length_with_its_own_filters_and_dropouts_runs_fused_like_the_layers(blocks):
    """One convolution (its gradient comes straight from the pool, unpadded), or three with
    different filter sizes and dropout after the first or the middle one, and BatchNorm2d after
    some (with its own eps and momentum, or no affine parameters): two training steps (the second
    with advanced dropout counters and running statistics) give the layer path's loss, every
    gradient, BatchNorm's buffers and the same dropout state; eval-mode prediction gives its logits.

    The two paths round differently (the convolution's sums, BatchNorm's statistics), so a ReLU
    input within rounding of 0 may be decided either way, and that unit's gradient then goes
    elsewhere: BatchNorm centres ReLU's inputs on 0 and scales rounding up by 1/std, so a stack
    like a single 1x1 convolution with BatchNorm at batch 6 meets one (measured: conv1.weight's
    gradient 3.5% off the layer path, which float64 confirms, from one flipped unit). These
    batches meet none; the 20-step tests against torch measure both sides against float64."""
    from scratchcnn import architecture as A
    from scratchcnn.model import Network
    arch = A.resolve(conv_stack(*blocks), 10)
    layer_model, fused_model = Network(arch, rng=4), Network(arch, rng=4)
    assert fused.unsupported_reason(fused_model) is None
    assert_fused_steps_equal_the_layers(fused_model, layer_model, np.random.default_rng(4), 6)


def random_family_member(rng):
    """(spec, classes) drawn from the fast path's family (``fused.SHAPE``): 1 to 3 convolutions,
    each with an odd filter up to 7x7, BatchNorm2d or not (its own eps and momentum, affine or
    not), dropout or not (never after the last, as the family says); max or average pooling;
    the classifier's dropout anywhere in [0, 1); 2 to 12 classes."""
    blocks = []
    depth = int(rng.integers(1, 4))
    for i in range(depth):
        drop = None if i == depth - 1 or rng.random() < 0.5 else round(float(rng.uniform(0, 0.6)), 2)
        block = (int(rng.choice([1, 3, 5, 7])), drop)
        if rng.random() < 0.4:
            block += ({"eps": float(rng.choice([1e-5, 1e-3])), "momentum": round(float(rng.uniform(0.05, 0.5)), 2),
                       "affine": bool(rng.random() < 0.7)},)
        blocks.append(block)
    pool = "MaxPool2d" if rng.random() < 0.5 else "AvgPool2d"
    return conv_stack(*blocks, pool=pool, p3=round(float(rng.uniform(0, 0.9)), 2)), int(rng.integers(2, 13))


@pytest.mark.parametrize("seed", range(6))
def test_networks_drawn_at_random_from_the_family_run_fused_like_the_layers(seed):
    """The presets and the hand-picked stacks above are a few points of the family the fast path
    accepts; these six are drawn from all of it (``random_family_member``). Each must be accepted
    and give the layer path's losses, gradients, buffers, dropout state and prediction over two
    steps. The draws are seeded, so a failure names its network: ``arch show`` the printed spec."""
    from scratchcnn import architecture as A
    from scratchcnn.model import Network
    spec, classes = random_family_member(np.random.default_rng(100 + seed))
    print(spec, classes)
    arch = A.resolve(spec, classes)
    layer_model, fused_model = Network(arch, rng=seed), Network(arch, rng=seed)
    assert fused.unsupported_reason(fused_model) is None
    assert_fused_steps_equal_the_layers(fused_model, layer_model, np.random.default_rng(seed), 4, classes=classes)


def test_fused_predict_in_chunks_with_a_short_last_one_equals_the_layer_path():
    """150 images in chunks of 64: two full chunks (fc3 by linear_forward) and one of 22
    (fc3 on transposed activations); every row equals the layer path's eval forward."""
    model = CIFAR10Model(rng=6).eval()
    x = np.random.default_rng(6).standard_normal((150, 3, 32, 32)).astype(np.float32)
    expected = model.forward(x)
    for batch_size in (64, 150, 7):
        got = fused.fused_predict(model, x, batch_size=batch_size)
        assert got.shape == (150, 10)
        assert rel_err(got, expected) < 2e-6, batch_size
