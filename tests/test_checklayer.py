"""``scratchcnn checklayer``: a learner's own layer checked like ours (central differences and
parity with a torch.nn class), exit 0 / 1, and one ``error:`` line for whatever cannot be checked."""
import os
import re
import textwrap

import pytest

from conftest import one_error_line
from scratchcnn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "my_layers.py")

pytestmark = pytest.mark.usefixtures("one_thread_per_pool")


def layer_file(tmp_path, body, name="mine.py"):
    path = tmp_path / name
    path.write_text("import numpy as np\nfrom scratchcnn.layer_base import Layer, Parameter\n\n"
                    + textwrap.dedent(body))
    return str(path)


LEAKY_WITHOUT_SLOPE = """
class ForgetfulLeakyReLU(Layer):
    torch_kind = "LeakyReLU"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        self.x = x
        return np.where(x > 0, x, x.dtype.type(self.negative_slope) * x)

    def backward(self, dout):
        return np.where(self.x > 0, dout, 0)          # the slope is missing
"""

MY_LINEAR = """
class MyLinear(Layer):
    def __init__(self, in_features, out_features, dtype=np.float32, rng=None):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.weight = Parameter(rng.uniform(-0.5, 0.5, (out_features, in_features)).astype(dtype), "weight")
        self.bias = Parameter(rng.uniform(-0.5, 0.5, out_features).astype(dtype), "bias")

    def forward(self, x):
        self.x = x
        return x @ self.weight.data.T + self.bias.data

    def backward(self, dout):
        self.weight.grad[...] = dout.T @ self.x
        self.bias.grad[...] = dout.sum(axis=0)
        return dout @ self.weight.data
"""


def run(capsys, *args):
    capsys.readouterr()
    rc = main(["checklayer", *args])
    return rc, capsys.readouterr().out


def rows(out):
    """{(check, dtype, quantity): result} from the printed table."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"(central differences|vs torch\.nn\.\w+) +(float\d\d) +(.+?) {2,}(\S+) +(\S+) +(ok|FAIL.*)$", line)
        if m:
            found[(m[1], m[2], m[3])] = m[6]
    return found


def test_the_example_layer_passes(capsys):
    rc, out = run(capsys, "examples/my_layers.py:MyLeakyReLU", "--torch", "LeakyReLU",
                  "--args", '{"negative_slope": 0.1}')
    assert rc == 0, out
    assert "negative_slope=0.1" in out and "input (2, 3, 8, 8)" in out
    assert rows(out) == {("central differences", "float64", "input gradient"): "ok",
                         **{(f"vs torch.nn.LeakyReLU", d, q): "ok" for d in ("float64", "float32")
                            for q in ("forward output", "input gradient")}}
    assert "all 5 checks pass" in out


def test_a_backward_without_the_slope_fails_naming_the_input_gradient(capsys, tmp_path):
    path = layer_file(tmp_path, LEAKY_WITHOUT_SLOPE)
    rc, out = run(capsys, f"{path}:ForgetfulLeakyReLU", "--args", '{"negative_slope": 0.1}')   # torch_kind
    assert rc == 1
    failed = {k for k, v in rows(out).items() if v != "ok"}
    assert failed == {("central differences", "float64", "input gradient"),
                      ("vs torch.nn.LeakyReLU", "float64", "input gradient"),
                      ("vs torch.nn.LeakyReLU", "float32", "input gradient")}
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("3 of 5 checks FAIL: input gradient (central differences, float64)")


def test_parameters_are_copied_into_torch_by_name_and_checked(capsys, tmp_path):
    path = layer_file(tmp_path, MY_LINEAR)
    rc, out = run(capsys, f"{path}:MyLinear", "--torch", "Linear", "--args", '{"in_features": 5, "out_features": 3}')
    assert rc == 0, out
    assert "input (2, 5)" in out
    quantities = {q for _, _, q in rows(out)}
    assert quantities == {"forward output", "input gradient", "weight gradient", "bias gradient"}


def test_a_forward_of_the_wrong_dtype_fails(capsys, tmp_path):
    path = layer_file(tmp_path, """
        class Doubled(Layer):
            torch_kind = "Tanh"

            def forward(self, x):
                self.out = np.tanh(x.astype(np.float64))
                return self.out

            def backward(self, dout):
                return (dout * (1 - self.out ** 2)).astype(dout.dtype)
        """)
    rc, out = run(capsys, f"{path}:Doubled")
    assert rc == 1
    assert rows(out)[("vs torch.nn.Tanh", "float32", "forward output")] == "FAIL (dtype float64, torch's float32)"
    assert rows(out)[("vs torch.nn.Tanh", "float64", "forward output")] == "ok"


@pytest.mark.parametrize("args, message", [
    (["examples/my_layers.py:Nope", "--torch", "LeakyReLU"], "has no class 'Nope'; it has MyLeakyReLU"),
    (["examples/my_layers.py", "--torch", "LeakyReLU"], "name your own layer as FILE.py:ClassName"),
    (["examples/missing.py:MyLeakyReLU", "--torch", "LeakyReLU"], "does not exist"),
    (["examples/my_layers.py:MyLeakyReLU", "--torch", "LeakyRelu"],
     "--torch 'LeakyRelu' is not a torch.nn class (did you mean LeakyReLU?)"),
    (["examples/my_layers.py:MyLeakyReLU", "--torch", "functional"], "--torch 'functional' is not a torch.nn class"),
    (["examples/my_layers.py:MyLeakyReLU", "--args", "[0.1]"], "--args must be a JSON object"),
    (["examples/my_layers.py:MyLeakyReLU", "--args", "{negative_slope: 0.1}"], "--args is not valid JSON"),
    (["examples/my_layers.py:MyLeakyReLU", "--args", '{"slope": 0.1}'],
     "MyLeakyReLU(**{\"slope\": 0.1}) failed: TypeError: "),
    (["examples/my_layers.py:MyLeakyReLU", "--torch", "Tanh", "--args", '{"negative_slope": 0.1}'],
     "torch.nn.Tanh(**{\"negative_slope\": 0.1}) failed: TypeError: "),
    (["examples/my_layers.py:MyLeakyReLU", "--shape", "2,3,x"], "--shape '2,3,x': expected positive whole numbers"),
    (["examples/my_layers.py:MyLeakyReLU", "--shape", "2,0,8,8"], "--shape '2,0,8,8': expected positive"),
    (["examples/my_layers.py:MyLeakyReLU", "--torch", "Linear", "--args", '{"in_features": 4, "out_features": 2}'],
     "MyLeakyReLU(**{\"in_features\": 4, \"out_features\": 2}) failed: TypeError"),
])
def test_bad_input_is_one_line(capsys, args, message):
    assert message in one_error_line(capsys, ["checklayer", *args])


def test_files_and_classes_that_cannot_be_used_are_one_line(capsys, tmp_path):
    broken = layer_file(tmp_path, "def oops(:\n", "broken.py")
    assert "importing" in one_error_line(capsys, ["checklayer", f"{broken}:X", "--torch", "ReLU"])
    crashing = layer_file(tmp_path, "raise RuntimeError('no numpy today')\n", "crash.py")
    line = one_error_line(capsys, ["checklayer", f"{crashing}:X", "--torch", "ReLU"])
    assert "failed: RuntimeError: no numpy today" in line
    path = layer_file(tmp_path, """
        class NotALayer:
            def forward(self, x):
                return x

        class NoBackward(Layer):
            def forward(self, x):
                return x

        class Typo(Layer):
            torch_kind = "ReLU"

            def forward(self, x):
                self.out = np.maximum(x, 0)
                return self.out

            def backward(self, dout):
                return np.where(self.ouut > 0, dout, 0)

        class OwnNames(Layer):
            torch_kind = "Linear"

            def __init__(self, in_features, out_features):
                super().__init__()
                self.w = Parameter(np.zeros((out_features, in_features)), "w")

            def parameters(self):
                return [("w", self.w)]

            def forward(self, x):
                return x @ self.w.data.T

            def backward(self, dout):
                return dout @ self.w.data
        """, "wrong.py")
    assert "is not a subclass of scratchcnn.layer_base.Layer" in one_error_line(
        capsys, ["checklayer", f"{path}:NotALayer", "--torch", "ReLU"])
    assert "NoBackward has no backward() method" in one_error_line(
        capsys, ["checklayer", f"{path}:NoBackward", "--torch", "ReLU"])
    assert "NoBackward declares no torch_kind" not in one_error_line(
        capsys, ["checklayer", f"{path}:NoBackward"])
    line = one_error_line(capsys, ["checklayer", f"{path}:Typo"])
    assert re.search(r"Typo\.backward raised AttributeError: .*'ouut'.* \(wrong\.py line \d+\)", line), line
    line = one_error_line(capsys, ["checklayer", f"{path}:OwnNames", "--args", '{"in_features": 3, "out_features": 2}'])
    assert "OwnNames and torch.nn.Linear have different parameters: w vs weight, bias" in line
