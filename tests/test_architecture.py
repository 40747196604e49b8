"""The network as data: specs resolve to the right names, shapes, counts and receptive fields,
and a spec that cannot work is one error line naming the layer, before anything is loaded."""
import json

import numpy as np
import pytest
import torch

from conftest import one_error_line
from scratchcnn import architecture as A
from scratchcnn.cli import main
from scratchcnn.model import Network

TUTORIAL_KEYS = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                 "fc3.weight", "fc3.bias", "fc4.weight", "fc4.bias"]


def test_the_tutorial_written_as_json_gives_the_tutorials_names_and_keys(tmp_path):
    spec = [{"kind": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1}, {"kind": "ReLU"},
            {"kind": "Dropout", "p": 0.3}, {"kind": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1},
            {"kind": "ReLU"}, {"kind": "MaxPool2d", "kernel_size": 2}, {"kind": "Flatten"},
            {"kind": "Linear", "out_features": 512}, {"kind": "ReLU"}, {"kind": "Dropout", "p": 0.5},
            {"kind": "Linear"}]
    path = tmp_path / "tutorial.json"
    path.write_text(json.dumps(spec))
    arch = A.load(str(path), 10)
    assert arch.layer_names == ("conv1", "act1", "drop1", "conv2", "act2", "pool2", "flat", "fc3", "act3",
                                "drop3", "fc4")
    assert list(arch.param_shapes()) == TUTORIAL_KEYS
    assert arch == A.tutorial()                                  # every inferred argument filled in alike
    assert list(Network(arch, rng=0).state_dict()) == TUTORIAL_KEYS
    assert A.resolve(arch.to_json(), None) == arch               # the recorded form resolves to itself


def test_shapes_counts_and_inferred_arguments_are_computed():
    arch = A.tutorial()
    assert [s.out_shape for s in arch.layers] == [(32, 32, 32)] * 5 + [(32, 16, 16), (8192,), (512,), (512,),
                                                                       (512,), (10,)]
    assert arch.spec("conv2").args["in_channels"] == 32 and arch.spec("fc3").args["in_features"] == 8192
    assert arch.n_params == 4_210_090
    assert arch.macs("conv2") == 9_437_184 and arch.macs("fc3") == 4_194_304 and arch.macs("pool2") == 0
    assert arch.total_macs == 14_521_344
    for classes in (3, 37):                                      # a folder's classes size the last Linear
        a = A.load("tutorial", classes)
        assert a.spec("fc4").out_shape == (classes,) and a.num_classes == classes
    bn = A.load("bn", 10)
    assert bn.state_shapes()["bn1.num_batches_tracked"] == ((), "int64")
    assert bn.spec("bn2").args["num_features"] == 32 and bn.n_params == arch.n_params + 4 * 32


def test_default_names_follow_the_tutorials_scheme():
    deep = A.load("deep", 10)
    assert deep.layer_names == ("conv1", "act1", "drop1", "conv2", "act2", "conv3", "act3", "conv4", "act4",
                                "pool4", "flat", "fc5", "act5", "drop5", "fc6")
    odd = A.resolve([{"kind": "Dropout", "p": 0.1}, {"kind": "Conv2d", "out_channels": 4, "kernel_size": 3},
                     {"kind": "ReLU"}, {"kind": "Tanh"}, {"kind": "Flatten", "name": "features"},
                     {"kind": "Linear"}], 10)
    assert odd.layer_names == ("drop0", "conv1", "act1", "act1_2", "features", "fc2")


def test_receptive_fields_by_the_arithmetic():
    def rf(arch, name):
        r = A.load(arch, 10).receptive_field(name)
        return r.size[0], r.jump[0], r.whole
    assert [rf("tutorial", n) for n in ("conv1", "conv2", "pool2")] == [(3, 1, False), (5, 1, False), (6, 2, False)]
    assert [rf("k5", n) for n in ("conv1", "conv2", "pool2")] == [(5, 1, False), (9, 1, False), (10, 2, False)]
    assert rf("deep", "conv4") == (9, 1, False) == rf("k5", "conv2")[:2] + (False,)   # four 3x3 = two 5x5
    assert rf("k1", "conv2") == (1, 1, False)
    assert rf("vgg", "conv6") == (32, 4, False)              # 3, 5, 6; 10, 14, 16; 24, 32
    assert rf("tutorial", "fc3")[2]


@pytest.mark.parametrize("y,x", [(0, 0), (3, 4), (5, 7), (5, 0)])     # conv3 is 6x8
def test_input_region_is_where_the_gradient_reaches(y, x):
    """Autograd of one output pixel, with all-positive weights and input, is non-zero exactly on
    the input pixels it depends on (average pooling: every window element counts)."""
    spec = [{"kind": "Conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1},
            {"kind": "Conv2d", "out_channels": 2, "kernel_size": 5, "padding": 2},
            {"kind": "AvgPool2d", "kernel_size": 2},
            {"kind": "Conv2d", "out_channels": 2, "kernel_size": [3, 1]},
            {"kind": "Flatten"}, {"kind": "Linear"}]
    arch = A.resolve(spec, 2)
    from torch_reference import TorchNetwork
    net = TorchNetwork(arch).double()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    xt = torch.ones((1, 3, 32, 32), dtype=torch.float64, requires_grad=True)
    out = xt
    for name in arch.layer_names[:4]:
        out = getattr(net, name)(out)
    (g,) = torch.autograd.grad(out[0, 0, y, x], [xt])
    rows, cols = np.nonzero(g[0].abs().sum(0).numpy())
    assert arch.layer_names[3] == "conv3"
    assert arch.input_region("conv3", y, x) == (rows.min(), rows.max(), cols.min(), cols.max())


def test_reserved_names_cover_the_models_attributes():
    """A layer named like an attribute of the scratch or the torch model would overwrite it."""
    model = Network(rng=0)
    attributes = (set(dir(Network)) | set(vars(model)) | set(dir(torch.nn.Module()))) - set(model.arch.layer_names)
    clash = sorted(a for a in attributes if A._NAME.match(a) and a not in A.RESERVED)
    assert clash == []


def test_a_state_dict_names_the_preset_it_fits():
    assert A.matching_presets({k: s for k, (s, _) in A.load("bn", 10).state_shapes().items()}) == ["bn"]
    assert set(A.matching_presets({k: s for k, (s, _) in A.tutorial().state_shapes().items()})) == {
        "tutorial", "avgpool"}                                    # same weights, another pooling


BAD_SPECS = [
    ([{"kind": "Conv2d", "out_channels": 8, "kernel_size": 40}, {"kind": "Flatten"}, {"kind": "Linear"}],
     "layer 1 (conv1, Conv2d): its 40x40 kernel is larger than its 32x32 input"),
    ([{"kind": "Conv2d", "out_channels": 8, "kernel_size": 3}, {"kind": "Linear"}],
     "layer 2 (fc2, Linear): needs flat features, but its input is (8, 30, 30): put a Flatten before it"),
    ([{"kind": "Conv3d", "out_channels": 8, "kernel_size": 3}], "layer 1: unknown kind 'Conv3d'; scratchcnn has "),
    ([{"kind": "Conv2d", "out_channels": 8, "kernel": 3}],
     "layer 1 (conv1, Conv2d): unknown argument 'kernel'; it takes in_channels, out_channels, kernel_size, "
     "stride, padding, bias"),
    ([{"kind": "Conv2d", "out_channels": 0, "kernel_size": 3}],
     "layer 1 (conv1, Conv2d): out_channels must be a positive whole number, got 0"),
    ([{"kind": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": -1}],
     "layer 1 (conv1, Conv2d): padding must be 0 or more, got -1"),
    ([{"kind": "Flatten"}, {"kind": "Linear", "out_features": 20000}, {"kind": "Linear"}],
     "has 61,660,010 parameters, more than 50,000,000; the largest layer is fc1 Linear (61,460,000)"),
    ([{"kind": "Conv2d", "kernel_size": 3}], "layer 1 (conv1, Conv2d): out_channels is missing"),
    ([{"kind": "Conv2d", "in_channels": 4, "out_channels": 8, "kernel_size": 3}],
     "layer 1 (conv1, Conv2d): in_channels is 4, but its input has 3 channels"),
    ({"kind": "Conv2d"}, "expected a non-empty JSON list of layers, got dict"),
    ([{"kind": "Conv2d", "out_channels": 8, "kernel_size": 3}],
     "ends with conv1 whose output is (8, 30, 30), not a vector of class scores; end with Flatten and Linear"),
    ([{"kind": "Flatten"}, {"kind": "Conv2d", "out_channels": 8, "kernel_size": 3}],
     "layer 2 (conv1, Conv2d): needs a (channels, height, width) input, but its input is (3072,)"),
    ([{"kind": "Flatten", "name": "forward"}, {"kind": "Linear"}], "layer 1: name 'forward' is reserved"),
    ([{"kind": "Flatten", "name": "a"}, {"kind": "Linear", "name": "a"}], "layer 2: name 'a' is used twice"),
    ([{"kind": "Dropout", "p": 1.5}, {"kind": "Flatten"}, {"kind": "Linear"}],
     "layer 1 (drop0, Dropout): p must be a number in [0, 1], got 1.5"),
    ([{"kind": "Conv2d", "out_channels": True, "kernel_size": 3}],
     "out_channels must be a positive whole number, got True"),
    ([{"kind": "Flatten"}, {"kind": "Linear"}, {"kind": "ReLU"}, {"kind": "Linear"}],
     "layer 2 (fc1, Linear): out_features is missing (only the last Linear may omit it"),
    ([{"kind": "Flatten"}, {"kind": "Linear", "out_features": 3}],
     "ends with 3 outputs, but the data has 10 classes"),
    ([{"kind": "Conv2d", "out_channels": 4096, "kernel_size": 1}, {"kind": "Flatten"},
      {"kind": "Linear", "out_features": 1}, {"kind": "Linear"}], "its layer outputs hold 8,388,619 values per image"),
    ([3], 'layer 1: expected an object with a "kind"'),
    ([{"kind": "MaxPool2d", "kernel_size": 2, "padding": 1}, {"kind": "Flatten"}, {"kind": "Linear"}],
     "layer 1 (pool0, MaxPool2d): unknown argument 'padding'; it takes kernel_size, stride"),
    ([{"kind": "nope.py:MyLayer"}, {"kind": "Flatten"}, {"kind": "Linear"}], "does not exist"),
]


@pytest.mark.parametrize("spec,message", BAD_SPECS, ids=[m[:40] for _, m in BAD_SPECS])
def test_a_spec_that_cannot_work_is_one_line_before_any_data_is_loaded(spec, message, tmp_path, capsys,
                                                                       monkeypatch):
    import scratchcnn.train as train_module

    def no_data(*a, **k):
        raise AssertionError("the dataset was loaded before the spec was checked")
    monkeypatch.setattr(train_module, "load_dataset", no_data)
    path = tmp_path / "net.json"
    path.write_text(json.dumps(spec))
    line = one_error_line(capsys, ["train", "--arch", str(path), "--epochs", "1", "--out", str(tmp_path / "run")])
    assert message in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,message", [
    (["--arch", "tutoral"], "--arch 'tutoral': no preset of that name and no such file; the presets are "
                            "tutorial, k1, k5, k7, deep, avgpool, bn, vgg (did you mean tutorial?)"),
    (["--arch", "{dir}"], "is a folder; give a .json file holding a list of layers"),
    (["--arch", "{broken}"], "is not valid JSON (Expecting"),
])
def test_bad_arch_argument_is_one_line(argv, message, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"kind": "ReLU"},')
    argv = [a.format(dir=tmp_path, broken=broken) for a in argv]
    line = one_error_line(capsys, ["train", *argv, "--epochs", "1", "--out", str(tmp_path / "run")])
    assert message in line, line


def test_arch_list_and_show(capsys, tmp_path):
    assert main(["arch", "list"]) == 0
    out = capsys.readouterr().out
    for name in A.PRESETS:
        assert f"\n{name} " in out
    assert "4,210,090" in out and "551,466" in out                     # tutorial's and vgg's parameters
    assert main(["arch", "show", "deep"]) == 0
    out = capsys.readouterr().out
    assert "conv4" in out and "pool4" in out and "parameters 4,228,586" in out
    assert "  9" in out.split("conv4")[1].splitlines()[0]              # conv4's receptive field, 9
    assert main(["arch", "show", "k5", "--json", "--classes", "3"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec[-1] == {"name": "fc4", "kind": "Linear", "in_features": 512, "out_features": 3}
    assert A.resolve(spec, None) == A.load("k5", 3)


def test_map_layers_are_the_layers_whose_output_is_a_stack_of_images():
    assert A.load("tutorial", 10).map_layers == ("conv1", "act1", "drop1", "conv2", "act2", "pool2")
    assert A.load("bn", 10).map_layers == ("conv1", "bn1", "act1", "drop1", "conv2", "bn2", "act2", "pool2")
    vgg = A.load("vgg", 10)
    assert len(vgg.map_layers) == 24 and vgg.map_layers[-2:] == ("pool6", "drop6") and "flat" not in vgg.map_layers
