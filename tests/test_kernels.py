"""The numba kernels compute exactly what their NumPy references in scratchcnn.reference say."""
import os

import numpy as np
import pytest

from scratchcnn import reference
from scratchcnn.kernels import conv, pool, rng, sgd

# (x shape, kernel, stride, padding): square and not, stride 1/2, padding 0/1/2, kernel 1/3/5
CONV_CONFIGS = [
    ((2, 3, 8, 8), (3, 3), (1, 1), (1, 1)),
    ((2, 2, 9, 7), (5, 5), (2, 2), (2, 2)),
    ((1, 4, 5, 6), (1, 1), (1, 1), (0, 0)),
    ((2, 3, 7, 10), (3, 2), (2, 1), (0, 1)),
]


@pytest.mark.parametrize("shape,kernel,stride,padding", CONV_CONFIGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_col2im_match_reference(shape, kernel, stride, padding, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    args = (*kernel, *stride, *padding)
    cols = conv.im2col(x, *args)
    np.testing.assert_array_equal(cols, reference.im2col(x, *args))
    # col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>
    c = np.random.default_rng(1).standard_normal(cols.shape).astype(dtype)
    back = conv.col2im(c, shape[2], shape[3], *args)
    np.testing.assert_allclose(back, reference.col2im(c, shape[2], shape[3], *args), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("shape,kernel,stride,padding", CONV_CONFIGS)
def test_conv2d_im2col_matches_direct_summation(shape, kernel, stride, padding):
    g = np.random.default_rng(2)
    x = g.standard_normal(shape)
    weight = g.standard_normal((5, shape[1], *kernel))
    bias = g.standard_normal(5)
    out, cols = conv.conv2d_forward(x, weight, bias, stride, padding)
    ref_out, saved = reference.conv2d_forward(x, weight, bias, stride, padding)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    dout = g.standard_normal(out.shape)
    ours = conv.conv2d_backward(dout, cols, x.shape, weight, stride, padding)
    theirs = reference.conv2d_backward(dout, saved, x.shape, weight, stride, padding)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# (x shape, output channels, kernel): conv1-like (3 channels), several 32-channel groups, 1x1..7x7
DIRECT_CONFIGS = [((2, 3, 8, 8), 32, 3), ((3, 32, 16, 16), 64, 5), ((2, 64, 8, 8), 128, 7),
                  ((1, 5, 6, 6), 32, 1), ((2, 7, 4, 8), 96, 3)]


@pytest.mark.parametrize("shape,filters,k", DIRECT_CONFIGS)
def test_direct_conv_forward_matches_direct_summation_and_its_backward_builds_the_patches(shape, filters, k):
    """float32 "same" convolutions run fused_conv's direct kernel (NHWC inside) and equal the
    reference; the backward after it (which builds the patches itself) equals the reference's."""
    g = np.random.default_rng(3)
    x = g.standard_normal(shape).astype(np.float32)
    weight = g.standard_normal((filters, shape[1], k, k)).astype(np.float32)
    bias = g.standard_normal(filters).astype(np.float32)
    pad = ((k - 1) // 2,) * 2
    assert conv.direct_forward_ok(x, weight, (1, 1), pad)
    out, saved = conv.conv2d_forward(x, weight, bias, (1, 1), pad, direct=True)
    assert isinstance(saved, conv.Input) and saved.x is x
    assert not isinstance(conv.conv2d_forward(x, weight, bias, (1, 1), pad)[1], conv.Input)  # training: im2col
    ref_out, ref_saved = reference.conv2d_forward(x.astype(np.float64), weight.astype(np.float64),
                                                  bias.astype(np.float64), (1, 1), pad)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5 * np.abs(ref_out).max())
    dout = g.standard_normal(out.shape).astype(np.float32)
    ours = conv.conv2d_backward(dout, saved, x.shape, weight, (1, 1), pad)
    theirs = reference.conv2d_backward(dout.astype(np.float64), ref_saved, x.shape, weight.astype(np.float64),
                                       (1, 1), pad)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


@pytest.mark.parametrize("change", ["float64", "stride 2", "padding 0", "31 filters", "4x4", "9x9", "odd width"])
def test_direct_conv_forward_is_only_taken_where_its_kernel_is_safe(change):
    """Everything the direct kernel assumes is checked before it runs (numba does not
    bounds-check): each of these goes through im2col and still equals the reference."""
    g = np.random.default_rng(4)
    shape, filters, k, stride, pad, dtype = (2, 3, 8, 8), 32, 3, (1, 1), (1, 1), np.float32
    if change == "float64":
        dtype = np.float64
    elif change == "stride 2":
        stride = (2, 2)
    elif change == "padding 0":
        pad = (0, 0)
    elif change == "31 filters":
        filters = 31
    elif change == "4x4":
        k, pad = 4, (2, 2)
    elif change == "9x9":
        k, pad = 9, (4, 4)
    else:
        shape = (2, 3, 8, 7)
    x = g.standard_normal(shape).astype(dtype)
    weight = g.standard_normal((filters, shape[1], k, k)).astype(dtype)
    bias = g.standard_normal(filters).astype(dtype)
    assert not conv.direct_forward_ok(x, weight, stride, pad)
    out, saved = conv.conv2d_forward(x, weight, bias, stride, pad, direct=True)
    assert not isinstance(saved, conv.Input)
    ref_out, _ = reference.conv2d_forward(x.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64),
                                          stride, pad)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5 * np.abs(ref_out).max())


@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 3, 8, 8), (2, 2), (2, 2)),
    ((2, 2, 9, 7), (3, 3), (2, 2)),      # overlapping windows
    ((1, 2, 6, 9), (2, 3), (1, 2)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_matches_reference_including_ties_and_nan(shape, kernel, stride, dtype):
    g = np.random.default_rng(3)
    x = g.integers(0, 3, size=shape).astype(dtype)       # many tied maxima
    x.flat[g.choice(x.size, size=x.size // 10, replace=False)] = np.nan
    x.flat[:4] = -np.inf
    out, idx = pool.max_pool2d_forward(x, *kernel, *stride)
    ref_out, ref_idx = reference.max_pool2d_forward(x, *kernel, *stride)
    np.testing.assert_array_equal(out, ref_out)          # NaNs compare equal here
    np.testing.assert_array_equal(idx, ref_idx)
    dout = g.standard_normal(out.shape).astype(dtype)
    np.testing.assert_array_equal(pool.max_pool2d_backward(dout, idx, *shape[2:]),
                                  reference.max_pool2d_backward(dout, idx, *shape[2:]))


def test_max_pool_picks_first_tied_max():
    x = np.array([[[[1.0, 5.0], [5.0, 2.0]]]])
    out, idx = pool.max_pool2d_forward(x, 2, 2, 2, 2)
    assert out[0, 0, 0, 0] == 5.0 and idx[0, 0, 0, 0] == 1     # (0, 1), not (1, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("first_step", [True, False])
@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.9, 0.01), (0.0, 0.01), (0.0, 0.0)])
def test_sgd_kernels_match_reference(dtype, first_step, momentum, weight_decay):
    """Serial and parallel kernels == reference.sgd_momentum_step, bit for bit (10007: uneven blocks)."""
    g = np.random.default_rng(4)
    param, grad, buf = (g.standard_normal(10007).astype(dtype) for _ in range(3))
    hyper = dtype(0.01), dtype(momentum), dtype(weight_decay)
    ref = [a.copy() for a in (param, grad, buf)]
    reference.sgd_momentum_step(*ref, *hyper, first_step)
    assert not np.array_equal(ref[0], param)
    for kernel in (sgd.sgd_momentum_step, sgd.sgd_momentum_step_parallel):
        ours = [a.copy() for a in (param, grad, buf)]
        kernel(*ours, *hyper, first_step)
        np.testing.assert_array_equal(ours[0], ref[0])
        np.testing.assert_array_equal(ours[2], ref[2])          # momentum 0: buf untouched
    if momentum == 0:
        np.testing.assert_array_equal(ref[2], buf)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_sgd_kernels_keep_nan_and_inf(bad):
    """A NaN or inf in a gradient, weight or momentum buffer stays non-finite (no fastmath)."""
    for where in range(3):
        arrays = [np.ones(64, np.float32) for _ in range(3)]
        arrays[where][5] = bad
        sgd.sgd_momentum_step_parallel(*arrays, np.float32(0.1), np.float32(0.9), np.float32(0.01), False)
        assert not np.isfinite(arrays[0][5]) and np.isfinite(np.delete(arrays[0], 5)).all()


@pytest.mark.parametrize("seed,counter,p", [(0, 0, 0.3), (12345, 7, 0.5), (2**32 - 1, 1000, 0.9)])
def test_keep_mask_matches_reference(seed, counter, p):
    np.testing.assert_array_equal(rng.keep_mask(seed, counter, 10_000, p),
                                  rng.keep_mask_reference(seed, counter, 10_000, p))


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_keep_mask_keeps_one_minus_p(p):
    n = 1_000_000
    mask = rng.keep_mask(42, 0, n, p)
    assert set(np.unique(mask)) <= {0, 1}
    # within 5 standard deviations of a Binomial(n, 1 - p) fraction
    assert abs(mask.mean() - (1 - p)) <= 5 * np.sqrt(p * (1 - p) / n)


def test_keep_mask_streams_differ():
    a = rng.keep_mask(1, 0, 4096, 0.5)
    assert not np.array_equal(a, rng.keep_mask(1, 1, 4096, 0.5))   # next counter
    assert not np.array_equal(a, rng.keep_mask(2, 0, 4096, 0.5))   # other seed


def test_conv2d_layer_runs_the_direct_kernel_in_eval_mode_only_with_the_same_results():
    """The layer's eval-mode forward (direct kernel) and the gradients after it equal its
    training-mode ones (im2col): the explorer's gradients run in eval mode."""
    from scratchcnn.layers import Conv2d

    g = np.random.default_rng(5)
    layer = Conv2d(16, 64, 5, padding=2, rng=0)
    x = g.standard_normal((3, 16, 8, 8)).astype(np.float32)
    dout = g.standard_normal((3, 64, 8, 8)).astype(np.float32)
    out_train = layer.forward(x)
    assert not isinstance(layer.saved, conv.Input)
    dx_train = layer.backward(dout)
    dw_train = layer.weight.grad.copy()
    layer.eval()
    out_eval = layer.forward(x)
    assert isinstance(layer.saved, conv.Input)
    dx_eval = layer.backward(dout)
    np.testing.assert_allclose(out_eval, out_train, rtol=1e-5, atol=1e-5 * np.abs(out_train).max())
    np.testing.assert_array_equal(dx_eval, dx_train)            # the same patches, the same BLAS calls
    np.testing.assert_array_equal(layer.weight.grad, dw_train)


def test_every_kernel_module_that_compiles_in_another_ones_code_carries_its_fingerprint():
    """numba's cache is keyed on a kernel's own file: after an edit of fused_elementwise's ReLU
    epilogue, fused_conv's cached kernels kept running the old epilogue (measured: an input gradient
    off by 104 where the fresh compile is exact). Each module with jitted helpers from another keeps
    their fingerprint, so such an edit fails here until the module's own text changes too."""
    import importlib
    import re

    from scratchcnn import kernels
    folder = os.path.dirname(kernels.__file__)
    checked = []
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".py") or file == "__init__.py":
            continue
        text = open(os.path.join(folder, file)).read()
        deps = sorted(set(re.findall(r"^from scratchcnn\.kernels\.(\w+) import", text, re.M)))
        if not deps:
            continue
        module = importlib.import_module(f"scratchcnn.kernels.{file[:-3]}")
        want = kernels.fingerprint(*deps)
        assert getattr(module, "DEPENDS_SHA256", None) == want, \
            f'{file} compiles in code from {", ".join(deps)}: set DEPENDS_SHA256 = "{want}" in it'
        checked.append(file)
    assert checked == ["fused_conv.py", "fused_elementwise.py", "fused_linear.py"]
