"""Central-difference gradient checks (scratchcnn.gradcheck) pass, cover every layer, and catch bugs."""
import numpy as np

from scratchcnn import gradcheck
from scratchcnn.layers import Conv2d, Dropout


def test_every_layer_and_parameter_passes():
    rows = gradcheck.run_gradchecks()
    failures = [r for r in rows if not r[4]]
    assert not failures, f"gradient checks failed: {failures}"
    checked = {(layer, param) for layer, _, param, _, _ in rows}
    assert checked == {("Conv2d", "x"), ("Conv2d", "weight"), ("Conv2d", "bias"),
                       ("Linear", "x"), ("Linear", "weight"), ("Linear", "bias"),
                       ("ReLU", "x"), ("MaxPool2d", "x"), ("Dropout", "x"), ("Flatten", "x"),
                       ("SoftmaxCrossEntropy", "x")}
    conv_configs = {config for layer, config, *_ in rows if layer == "Conv2d"}
    assert len(conv_configs) >= 5
    assert max(err for *_, err, _ in rows) < gradcheck.THRESHOLD


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
    assert gradcheck.main([]) == 0
    out = capsys.readouterr().out
    assert "Conv2d" in out and "FAIL" not in out and "gradient checks passed" in out

    def broken_cases():
        x = np.random.default_rng(0).standard_normal((2, 3))
        return [("Dropout", "broken backward", DropoutWithoutBackwardScale(0.5), x, 1e-2,
                 {"mask": np.array([[1, 0, 1], [1, 1, 0]])})]
    monkeypatch.setattr(gradcheck, "cases", broken_cases)
    assert gradcheck.main([]) == 1
    assert "FAIL" in capsys.readouterr().out
