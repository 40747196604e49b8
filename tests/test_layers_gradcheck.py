"""Central-difference gradient checks (scratchcnn.gradcheck): generated for every registered layer,
and they catch bugs. The checks themselves run per example in tests/test_layer_zoo.py; here the
case list, the table and the exit code of ``scratchcnn gradcheck``."""
import re

import numpy as np

from scratchcnn import gradcheck
from scratchcnn.layer_base import REGISTRY
from scratchcnn.layers import Conv2d, Dropout


def test_the_cases_are_every_registered_layer_with_each_example_and_the_loss():
    cases = gradcheck.cases()
    assert [c[0] for c in cases] == [kind for kind, _, _ in gradcheck.layer_examples()] + ["SoftmaxCrossEntropy"]
    assert {c[0] for c in cases} == set(REGISTRY) | {"SoftmaxCrossEntropy"}
    conv_configs = {config for layer, config, *_ in cases if layer == "Conv2d"}
    assert len(conv_configs) >= 5 and "kernel_size=3x2 stride=2x1 padding=1x0" in " | ".join(conv_configs)
    for kind, config, layer, x, h, kwargs in cases:
        assert x.dtype == np.float64 and all(p.data.dtype == np.float64 for _, p in layer.parameters()), kind
    bn_eval = [c for c in cases if c[0] == "BatchNorm2d" and "eval" in c[1]]
    assert len(bn_eval) == 1 and not bn_eval[0][2].training


class DropoutWithoutBackwardScale(Dropout):
    """A classic bug: the backward pass forgets the 1/(1-p)."""

    def backward(self, dout):
        return dout * self.mask


class ConvWithFlippedBackward(Conv2d):
    """Another: dL/dx mirrored in space, as when the kernel's 180-degree rotation goes wrong."""

    def backward(self, dout):
        dx = super().backward(dout)
        return dx[:, :, ::-1, ::-1]


def test_gradcheck_catches_broken_backward():
    g = np.random.default_rng(0)
    x = g.standard_normal((2, 3, 4, 5))
    errors = dict(gradcheck.check_layer(DropoutWithoutBackwardScale(0.5), x, 1e-2, mask=g.random(x.shape) > 0.5))
    assert errors["x"] > 1e-2
    conv = ConvWithFlippedBackward(3, 2, 3, padding=1, dtype=np.float64, rng=0)
    errors = dict(gradcheck.check_layer(conv, x, 1e-2))
    assert errors["x"] > 1e-2 and errors["weight"] < gradcheck.THRESHOLD


def test_main_prints_table_and_exit_code(capsys, monkeypatch):
    everything = gradcheck.cases()
    some = [c for c in everything if c[0] in ("Conv2d", "BatchNorm2d")][:4]
    monkeypatch.setattr(gradcheck, "cases", lambda: some)
    assert gradcheck.main([]) == 0
    out = capsys.readouterr().out
    n = sum(1 + len(c[2].parameters()) for c in some)          # the input and every parameter
    assert "Conv2d" in out and "FAIL" not in out and out.count(" ok") == n
    assert f"{n}/{n} gradient checks passed (float64, threshold 1e-07)" in out

    def broken_cases():
        x = np.random.default_rng(0).standard_normal((2, 3))
        return some[:1] + [("Dropout", "broken backward", DropoutWithoutBackwardScale(0.5), x, 1e-2,
                            {"mask": np.array([[1, 0, 1], [1, 1, 0]])})]
    monkeypatch.setattr(gradcheck, "cases", broken_cases)
    assert gradcheck.main([]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == 1 and re.search(r"Dropout +broken backward +x +\S+ +FAIL", out)
