"""Generated tests: every registered layer, with every example it declares, checked two ways.

The cases come from the registry (``scratchcnn.layer_base.REGISTRY``) and each class's
``examples(rng)`` (``scratchcnn.gradcheck.layer_examples``), so a layer added tomorrow with
examples is tested here without a line of this file changing:

* gradients: the float64 central-difference check of the input and every parameter
  (``scratchcnn.gradcheck.check_layer``), every max relative error below 1e-7;
* torch: the layer against its twin ``cls.torch_twin(args)`` holding the same parameters
  and buffers, in the example's mode, in float32 and float64
  (``scratchcnn.parity.compare_with_twin``): the output, the input gradient, every
  parameter gradient (torch's from ``autograd.grad((out * dout).sum())``) and every buffer
  after the forward pass (BatchNorm's running_mean, running_var, num_batches_tracked). Each
  relative error (max |ours - torch| / max |torch|) must be at most the class's
  ``PARITY_ULPS`` units of rounding of the dtype: 0 (bit-identical) for ReLU, LeakyReLU,
  the pools, Dropout (given torch's own mask) and Flatten; 4 for Tanh, Sigmoid and Linear;
  8 for Conv2d and BatchNorm2d, whose sums run in another order than torch's. Worst
  measured (2 vCPUs of an AMD EPYC): Conv2d 2.7 ulps, BatchNorm2d 3.3, Sigmoid 2.5.

The last tests break layers on purpose and check that this machinery catches them.
"""
import numpy as np
import pytest
import torch

from scratchcnn import gradcheck
from scratchcnn.layer_base import REGISTRY, Example, Layer
from scratchcnn.layers import BatchNorm2d, LeakyReLU
from scratchcnn.parity import compare_with_twin

pytestmark = pytest.mark.usefixtures("one_thread_per_pool")

CASES = gradcheck.layer_examples()
IDS = [f"{kind}-{i}" for kind, i, _ in CASES]
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------- the checks, as functions of a class

def gradient_failures(cls, example):
    """["x: max rel error 3.1e-02 >= 1e-07", ...] for the float64 central-difference check."""
    layer = cls.build_example(example, np.float64)
    rows = gradcheck.check_layer(layer, np.array(example.x, np.float64), example.h, **example.forward_kwargs)
    assert [name for name, _ in rows] == ["x"] + [n for n, _ in layer.parameters()]
    return [f"{name}: max rel error {err:.1e} >= {gradcheck.THRESHOLD:g}" for name, err in rows
            if not err < gradcheck.THRESHOLD]


def parity_failures(cls, example, dtype):
    """["dx: max rel error 4.2e-01 > 0 (0 ulps)", ...] against the torch twin in ``dtype``."""
    r = compare_with_twin(cls, example, dtype)
    expected = ["out", "dx"] + [f"d{n}" for n, _ in r.layer.parameters()] + [n for n, _ in r.layer.buffers()]
    assert list(r.errors) == expected
    for what in expected[:2 + len(r.layer.parameters())]:
        assert r.scales[what] > 0, f"{what} is all zeros in torch: the example tests nothing"
    tol = cls.parity_tolerance(dtype)
    return [f"{what}: max rel error {err:.1e} > {tol:.1e} ({cls.PARITY_ULPS} ulps)"
            for what, err in r.errors.items() if err > tol]


# ---------------------------------------------------------------- every registered layer

@pytest.mark.parametrize("kind, index, example", CASES, ids=IDS)
def test_gradients_match_central_differences(kind, index, example):
    assert gradient_failures(REGISTRY[kind], example) == []


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind, index, example", CASES, ids=IDS)
def test_matches_its_torch_twin(kind, index, example, dtype):
    assert parity_failures(REGISTRY[kind], example, dtype) == []


@pytest.mark.parametrize("kind, index, example", [c for c in CASES if "mask" in c[2].forward_kwargs],
                         ids=[i for i, c in zip(IDS, CASES) if "mask" in c[2].forward_kwargs])
def test_random_layers_are_given_the_twins_own_mask(kind, index, example):
    """The parity's dropout mask is torch's, read back from its output: a real random mask."""
    layer = compare_with_twin(REGISTRY[kind], example, np.float64).layer
    p = example.args["p"]
    assert 0 < layer.mask.mean() < 1 and abs(layer.mask.mean() - (1 - p)) < 0.15
    assert not np.array_equal(layer.mask, np.asarray(example.forward_kwargs["mask"]) != 0)


def test_every_registered_layer_is_covered():
    assert REGISTRY, "the registry is empty: scratchcnn.layers was not imported?"
    assert {kind for kind, _, _ in CASES} == set(REGISTRY)
    assert len(CASES) >= 25


def layers_without_examples(registry):
    rng = np.random.default_rng(0)
    return [kind for kind, cls in registry.items() if not cls.examples(rng)]


def test_every_registered_layer_has_examples():
    assert layers_without_examples(REGISTRY) == []

    class Silent(Layer):
        @classmethod
        def examples(cls, rng):
            return []
    assert layers_without_examples({"Silent": Silent, **REGISTRY}) == ["Silent"]


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_argument_is_exercised_by_an_example(kind):
    """Each argument a spec may pass (ARGS) takes a value other than its default in some
    example, so an argument the layer ignores or passes on wrongly is caught."""
    cls = REGISTRY[kind]
    defaults = cls.defaults()
    examples = [e for k, _, e in CASES if k == kind]
    untried = [a for a in cls.ARGS if not any(a in e.args and (a not in defaults or e.args[a] != defaults[a])
                                              for e in examples)]
    assert untried == [], f"{kind}: no example sets {', '.join(untried)}"


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_the_twin_is_the_torch_class_of_the_same_name(kind):
    cls = REGISTRY[kind]
    example = next(e for k, _, e in CASES if k == kind)
    assert type(cls.torch_twin(example.args)) is getattr(torch.nn, cls.torch_kind or kind)


def test_a_training_batchnorm_example_moves_its_running_statistics():
    """The buffer comparison compares something: after a training forward the running
    statistics differ from the example's starting state, on both sides."""
    example = next(e for k, _, e in CASES if k == "BatchNorm2d" and e.mode == "train" and e.state)
    layer = compare_with_twin(BatchNorm2d, example, np.float64).layer
    assert np.abs(layer.running_mean - example.state["running_mean"]).min() > 1e-3
    assert int(layer.num_batches_tracked) == 1


# ---------------------------------------------------------------- broken layers are caught

class LeakyReLUWithoutSlope(LeakyReLU):
    """A classic bug: the backward pass forgets the slope for negative inputs (ReLU's backward)."""
    torch_kind = "LeakyReLU"

    def backward(self, dout):
        return np.where(self.x > 0, dout, 0)


class BatchNormWithoutMeanTerm(BatchNorm2d):
    """Another: training backward without the -sum(dout) term (the batch mean's own gradient)."""
    torch_kind = "BatchNorm2d"

    def backward(self, dout):
        if not self.training:
            return super().backward(dout)
        dx = super().backward(dout)
        m = dout.shape[0] * dout.shape[2] * dout.shape[3]
        return dx + (self._gamma() * self.rstd)[:, None, None] / m * dout.sum(axis=(0, 2, 3))[:, None, None]


class BatchNormWithBiasedRunningVar(BatchNorm2d):
    """And a bug no gradient check sees: the running variance updated with the biased batch
    variance (torch keeps the unbiased one)."""
    torch_kind = "BatchNorm2d"

    def forward(self, x):
        before = self.running_var.copy()
        out = super().forward(x)
        if self.training:
            var = x.var(axis=(0, 2, 3))
            self.running_var[...] = (1 - self.momentum) * before + self.momentum * var
        return out


def _train_example(cls):
    return next(e for e in cls.examples(np.random.default_rng(0)) if e.mode == "train")


def test_a_leaky_relu_without_its_slope_is_caught():
    example = _train_example(LeakyReLUWithoutSlope)
    assert [f.split(":")[0] for f in gradient_failures(LeakyReLUWithoutSlope, example)] == ["x"]
    for dtype in DTYPES:
        assert [f.split(":")[0] for f in parity_failures(LeakyReLUWithoutSlope, example, dtype)] == ["dx"]
    assert gradient_failures(LeakyReLU, example) == [] and parity_failures(LeakyReLU, example, np.float32) == []


def test_a_batchnorm_with_a_wrong_backward_is_caught():
    example = _train_example(BatchNormWithoutMeanTerm)
    assert [f.split(":")[0] for f in gradient_failures(BatchNormWithoutMeanTerm, example)] == ["x"]
    for dtype in DTYPES:
        assert [f.split(":")[0] for f in parity_failures(BatchNormWithoutMeanTerm, example, dtype)] == ["dx"]


def test_a_batchnorm_with_wrong_running_statistics_is_caught():
    example = _train_example(BatchNormWithBiasedRunningVar)
    assert gradient_failures(BatchNormWithBiasedRunningVar, example) == []
    for dtype in DTYPES:
        assert [f.split(":")[0] for f in parity_failures(BatchNormWithBiasedRunningVar, example, dtype)] == \
            ["running_var"]


def test_a_layer_whose_dtype_differs_from_torchs_is_refused():
    class Float64Sigmoid(REGISTRY["Sigmoid"]):
        torch_kind = "Sigmoid"

        def forward(self, x):
            return super().forward(x).astype(np.float64)
    example = Example({}, np.random.default_rng(0).standard_normal((2, 3)), {})
    with pytest.raises(ValueError, match="out: dtype float64, torch's float32"):
        compare_with_twin(Float64Sigmoid, example, np.float32)
