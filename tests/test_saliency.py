"""Gradients that reach the pixels: model.backward(input_grad=True), saliency maps,
Grad-CAM and per-layer gradients, scratch (hand-written backward) against torch (autograd)."""
import numpy as np
import pytest
import torch

from scratchcnn.model import CIFAR10Model
from torch_reference import CIFAR10Model as TorchModel


def _torch_twin(model):
    t = TorchModel().double() if model.dtype == np.float64 else TorchModel()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return t.eval()


@pytest.mark.parametrize("reference", [False, True], ids=["kernels", "numpy-reference"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_model_backward_input_grad_matches_torch_and_is_skipped_by_default(dtype, tol, reference):
    from scratchcnn import ops

    model = CIFAR10Model(dtype=dtype, rng=3).eval()
    x = np.random.default_rng(4).random((2, 3, 32, 32)).astype(dtype)
    dlogits = np.random.default_rng(5).standard_normal((2, 10)).astype(dtype)
    with ops.reference_mode(reference):
        model.forward(x)
        assert model.backward(dlogits) is None             # training's default: no col2im for conv1
        w_grad_skipped = model.conv1.weight.grad.copy()
        model.forward(x)
        dx = model.backward(dlogits, input_grad=True)
    np.testing.assert_array_equal(model.conv1.weight.grad, w_grad_skipped)

    xt = torch.from_numpy(x).requires_grad_(True)
    (_torch_twin(model)(xt) * torch.from_numpy(dlogits)).sum().backward()
    ref = xt.grad.numpy()
    assert dx.shape == (2, 3, 32, 32) and dx.dtype == dtype
    assert np.abs(dx - ref).max() <= tol * np.abs(ref).max()


# ---------------------------------------------------------------------------
# Saliency, Grad-CAM and per-layer gradients: scratch backward == torch autograd
# ---------------------------------------------------------------------------
from scratchcnn.architecture import tutorial  # noqa: E402

LAYER_NAMES = tutorial().layer_names
from scratchcnn.data import make_synthetic, to_float  # noqa: E402
from scratchcnn.study.saliency import (ClassScore, grad_cam, saliency_map,  # noqa: E402
                                       scratch_class_gradients, torch_class_gradients,
                                       upsample_bilinear)

pytestmark = pytest.mark.usefixtures("one_thread_per_pool")


def _rel_err(a, b):
    """max |a - b| / max |b|: the error relative to the array's own scale."""
    scale = float(np.abs(b).max())
    assert scale > 0, "reference is all zero: the test would not test anything"
    return float(np.abs(np.asarray(a, np.float64) - b).max()) / scale


# Measured worst cases (3 seeds x these class choices): float64 gradients 1.3e-15, Grad-CAM
# 4.4e-15; float32 gradients 4.2e-7, Grad-CAM 3.9e-6 (a sum of 32 signed terms). Margin ~10x.
@pytest.mark.parametrize("dtype,tol,cam_tol", [(np.float64, 1e-14, 5e-14), (np.float32, 4e-6, 4e-5)])
@pytest.mark.parametrize("classes", [None, [0, 3, 7, 9, 2], 5], ids=["predicted", "per-image", "one-class"])
def test_scratch_gradients_equal_torch_autograd(dtype, tol, cam_tol, classes):
    """Five synthetic images: logits, ds/d(output) of every layer, ds/dx, the saliency map
    and Grad-CAM agree between the hand-written backward and autograd (errors relative to
    each array's largest magnitude)."""
    model = CIFAR10Model(dtype=dtype, rng=11)
    x = to_float(make_synthetic(5, seed=1).x).astype(dtype)
    ours = scratch_class_gradients(model, x, classes)
    ref = torch_class_gradients(_torch_twin(model), x, classes)

    expected = ref["logits"].argmax(1) if classes is None else np.broadcast_to(classes, (5,))
    np.testing.assert_array_equal(ours["classes"], expected)
    np.testing.assert_array_equal(ref["classes"], expected)
    assert _rel_err(ours["logits"], ref["logits"]) < tol
    for name in ("input", *LAYER_NAMES):
        assert ours["grads"][name].shape == ref["grads"][name].shape, name
        assert ours["grads"][name].dtype == dtype, name
        assert _rel_err(ours["grads"][name], ref["grads"][name]) < tol, name
    # ds/dlogits is exactly one-hot: the score is one logit per image.
    np.testing.assert_array_equal(ours["grads"]["fc4"], np.eye(10, dtype=dtype)[expected])

    sal, sal_ref = saliency_map(ours["grads"]["input"]), saliency_map(ref["grads"]["input"])
    assert sal.shape == (5, 32, 32) and _rel_err(sal, sal_ref) < tol
    cam = grad_cam(ours["acts"]["conv2"], ours["grads"]["conv2"])
    cam_ref = grad_cam(ref["acts"]["conv2"], ref["grads"]["conv2"])
    assert cam.shape == (5, 32, 32) and _rel_err(cam, cam_ref) < cam_tol


def test_saliency_is_the_gradient_of_the_chosen_logit_by_finite_differences():
    """Independent of both backends: a central difference of logit c along one pixel of one
    channel equals ds/dx there (float64), and the saliency map is the max over channels."""
    model = CIFAR10Model(dtype=np.float64, rng=2).eval()
    x = to_float(make_synthetic(1, seed=4).x).astype(np.float64)
    r = scratch_class_gradients(model, x, 6)
    g = r["grads"]["input"][0]
    eps = 1e-6
    for ch, h, w in [(0, 3, 4), (1, 16, 16), (2, 31, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[0, ch, h, w] += eps
        xm[0, ch, h, w] -= eps
        numeric = (model.forward(xp)[0, 6] - model.forward(xm)[0, 6]) / (2 * eps)
        assert abs(numeric - g[ch, h, w]) <= 1e-7 * max(1.0, abs(numeric)), (ch, h, w)
    np.testing.assert_array_equal(saliency_map(g), np.abs(g).max(axis=0))


def test_grad_cam_by_hand():
    """Two channels of 2x2: alpha = (mean grad) = (1, -0.5); cam = ReLU(A0 - 0.5 A1)."""
    acts = np.array([[[[1.0, 2.0], [3.0, 0.0]], [[4.0, 0.0], [2.0, 2.0]]]])
    grads = np.array([[[[1.0, 1.0], [1.0, 1.0]], [[-2.0, 0.0], [0.0, 0.0]]]])
    cam = grad_cam(acts, grads, size=2)
    np.testing.assert_allclose(cam, [[[0.0, 2.0], [2.0, 0.0]]])


def test_grad_cam_upsampling_matches_torch_bilinear():
    """Grad-CAM on pool2's 16x16 maps is upsampled like torch's interpolate(align_corners=False)."""
    maps = np.random.default_rng(0).random((2, 16, 16))
    ref = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=(32, 32),
                                          mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(upsample_bilinear(maps, 32), ref, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(upsample_bilinear(maps, 16), maps)


@pytest.mark.parametrize("bad", [10, -1, [1, 2], 2.5, "cat"])
def test_class_score_rejects_classes_that_are_not_classes(bad):
    with pytest.raises(ValueError, match="classes must be"):
        ClassScore().forward(np.zeros((3, 10)), bad)


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------
from scratchcnn.cli import main  # noqa: E402
from scratchcnn.data import SYNTHETIC_CLASSES  # noqa: E402

def test_cli_saliency_writes_every_figure_for_the_named_class(checkpoint, tmp_path, capsys):
    import matplotlib.image as mpimg

    out = tmp_path / "sal"
    rc = main(["saliency", "--checkpoint", checkpoint, "--index", "2", "--class", "Rings", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert f"explaining class {SYNTHETIC_CLASSES.index('rings')} 'rings'" in text
    names = ["saliency", "gradcam", "gradients_conv1", "gradients_act1", "gradients_conv2",
             "gradients_act2", "gradients_pool2", "gradients_fc3"]
    for name in names:
        path = out / f"{name}.png"
        assert path.stat().st_size > 5000 and mpimg.imread(str(path)).std() > 0.01, name


@pytest.mark.parametrize("argv,message", [
    (["--class", "giraffe"], "--class 'giraffe' is not a class"),
    (["--class", "10"], "--class '10' is not a class"),
    (["--index", "99"], "--index 99 is out of range"),
    (["--index", "1", "--image", "x.png"], "either --image FILE or --index N"),
])
def test_cli_saliency_bad_input_is_one_line(checkpoint, tmp_path, capsys, argv, message):
    rc = main(["saliency", "--checkpoint", checkpoint, "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
