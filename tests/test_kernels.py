"""The numba kernels compute exactly what their NumPy references in scratchcnn.reference say."""
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
