"""scratchcnn.optim.SGD against torch.optim.SGD, step by step."""
import numpy as np
import pytest
import torch

from scratchcnn.layers import Parameter
from scratchcnn.model import CIFAR10Model
from scratchcnn.optim import SGD


def make_params(dtype, flat):
    """Three named parameters, as separate arrays or as views of one flat buffer (like the model's)."""
    g = np.random.default_rng(0)
    shapes = {"a.weight": (4, 3), "a.bias": (4,), "b.weight": (2, 2, 3)}
    params = [(n, Parameter(g.standard_normal(s).astype(dtype), n)) for n, s in shapes.items()]
    if flat:
        total = sum(p.data.size for _, p in params)
        data, grad, offset = np.empty(total, dtype), np.empty(total, dtype), 0
        for _, p in params:
            size, shape = p.data.size, p.data.shape
            data[offset:offset + size] = p.data.ravel()
            p.data, p.grad = data[offset:offset + size].reshape(shape), grad[offset:offset + size].reshape(shape)
            offset += size
    return params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_sgd_matches_torch(dtype, flat, momentum, weight_decay):
    """Several steps, the learning rate changed between two of them (as a schedule does)."""
    params = make_params(dtype, flat)
    opt = SGD(params, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    assert opt.is_flat == flat                                   # the one-pass path is taken
    torch_params = [torch.tensor(p.data.copy(), requires_grad=True) for _, p in params]
    torch_opt = torch.optim.SGD(torch_params, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    g = np.random.default_rng(1)
    for step in range(5):
        if step == 3:
            opt.lr = 0.02
            torch_opt.param_groups[0]["lr"] = 0.02
        for (_, p), tp in zip(params, torch_params):
            p.grad[...] = g.standard_normal(p.data.shape)
            tp.grad = torch.tensor(p.grad.copy())
        opt.step()
        torch_opt.step()
        tol = 1e-6 if dtype == np.float32 else 1e-15     # torch fuses p - lr*buf (and g + wd*p) into FMAs
        for (name, p), tp in zip(params, torch_params):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=tol, atol=tol, err_msg=f"{name} step {step}")
            if momentum:
                np.testing.assert_allclose(opt.momentum_buffers[name],
                                           torch_opt.state[tp]["momentum_buffer"].numpy(), rtol=tol, atol=tol)
            else:
                assert opt.momentum_buffers == {} and torch_opt.state[tp].get("momentum_buffer") is None


def test_weight_decay_first_step_and_state_dict():
    """torch's order: d = g + wd * p, then buf = d on the first step; wd travels in state_dict."""
    params = make_params(np.float64, flat=True)
    before = {n: p.data.copy() for n, p in params}
    opt = SGD(params, lr=0.5, momentum=0.9, weight_decay=0.1)
    for _, p in params:
        p.grad[...] = 2.0
    opt.step()
    for n, p in params:
        np.testing.assert_array_equal(opt.momentum_buffers[n], 2.0 + 0.1 * before[n])
        np.testing.assert_array_equal(p.data, before[n] - 0.5 * (2.0 + 0.1 * before[n]))
    state = opt.state_dict()
    assert (state["lr"], state["momentum"], state["weight_decay"]) == (0.5, 0.9, 0.1)
    other = SGD(make_params(np.float64, flat=False), lr=1.0)
    other.load_state_dict(state)
    assert (other.lr, other.momentum, other.weight_decay) == (0.5, 0.9, 0.1)
    other.load_state_dict({k: v for k, v in state.items() if k != "weight_decay"})   # older files: kept
    assert other.weight_decay == 0.1
    for bad in (dict(lr=-1.0), dict(lr=0.1, momentum=-0.5), dict(lr=0.1, weight_decay=float("nan"))):
        with pytest.raises(ValueError, match="must be >= 0"):
            SGD(params, **bad)


def test_first_step_copies_the_gradient_into_the_buffer():
    params = make_params(np.float64, flat=True)
    before = {n: p.data.copy() for n, p in params}
    opt = SGD(params, lr=0.5, momentum=0.9)
    assert opt.state_dict()["momentum_buffers"] == {}              # no buffers before the first step
    for _, p in params:
        p.grad[...] = 2.0
    opt.step()
    for n, p in params:
        np.testing.assert_array_equal(opt.momentum_buffers[n], 2.0)          # buf = g
        np.testing.assert_array_equal(p.data, before[n] - 1.0)               # p -= 0.5 * 2
    opt.step()                                                                # buf = 0.9*2 + 2 = 3.8
    for n, p in params:
        np.testing.assert_allclose(opt.momentum_buffers[n], 3.8, rtol=1e-15)
        np.testing.assert_allclose(p.data, before[n] - 1.0 - 1.9, rtol=1e-15)


def test_state_dict_round_trip_continues_identically():
    a, b = make_params(np.float64, flat=True), make_params(np.float64, flat=False)
    opt_a, opt_b = SGD(a, lr=0.1, momentum=0.9), SGD(b, lr=0.1, momentum=0.9)
    g = np.random.default_rng(2)
    for _, p in a:
        p.grad[...] = g.standard_normal(p.data.shape)
    opt_a.step()
    state = opt_a.state_dict()
    assert sorted(state["momentum_buffers"]) == ["a.bias", "a.weight", "b.weight"]
    for (_, pa), (_, pb) in zip(a, b):
        pb.data[...] = pa.data
    opt_b.load_state_dict(state)
    for _ in range(2):
        for (_, pa), (_, pb) in zip(a, b):
            pa.grad[...] = pb.grad[...] = g.standard_normal(pa.data.shape)
        opt_a.step()
        opt_b.step()
    for (_, pa), (_, pb) in zip(a, b):
        np.testing.assert_array_equal(pa.data, pb.data)
    with pytest.raises(ValueError, match="momentum buffers"):
        opt_b.load_state_dict({"lr": 0.1, "momentum": 0.9, "momentum_buffers": {"x": np.zeros(1)}})


def test_model_parameters_take_the_one_pass_path():
    model = CIFAR10Model(rng=0)
    opt = SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.01)
    param, grad, buf = opt.flat_state()
    assert opt.is_flat and param is model.flat_data and grad is model.flat_grad and buf is None
    assert opt.begin_step() is True and opt.begin_step() is False       # buffers made once
    buf = opt.flat_state()[2]
    assert buf.shape == param.shape and np.shares_memory(buf, opt.momentum_buffers["fc3.weight"])
    s = model.param_slice("fc3.weight")
    assert (s.start, s.stop) == (896 + 9248, 896 + 9248 + 4194304)
    np.testing.assert_array_equal(param[s], model.fc3.weight.data.ravel())
    assert opt.hyperparameters(np.float32) == (np.float32(0.001), np.float32(0.9), np.float32(0.01))
    with pytest.raises(ValueError, match="separate arrays"):
        SGD(make_params(np.float32, flat=False), lr=0.1).flat_state()
    opt = SGD(model.parameters(), lr=0.001, momentum=0.9)
    model.flat_grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(opt.momentum_buffers["fc4.bias"], 1.0)
    # Parameters that carry their own names work too
    assert [n for n, _ in SGD([p for _, p in model.parameters()], lr=0.1).params][:2] == ["conv1.weight", "conv1.bias"]
