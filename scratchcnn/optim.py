"""Stochastic gradient descent with momentum, exactly as ``torch.optim.SGD``
(no dampening, no Nesterov, no weight decay).

For each parameter p with gradient g, at every ``step()``:

    first step:   buf = g                      (torch copies the gradient; no zeros)
    later steps:  buf = momentum * buf + g
    always:       p  -= lr * buf               (momentum = 0: p -= lr * g, no buffer)

When the parameters tile one flat buffer back to back (as ``CIFAR10Model``'s do),
the whole update is ONE fused pass over that buffer
(``scratchcnn.kernels.sgd.sgd_momentum_step``); otherwise one pass per parameter.
"""
import numpy as np

from scratchcnn.kernels.sgd import sgd_momentum_step


def _tiled_base(arrays):
    """The 1-D array that ``arrays`` are consecutive views of (in order, covering it), or None."""
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    start = base.ctypes.data
    offset = 0
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.ctypes.data != start + offset:
            return None
        offset += a.nbytes
    return base if offset == base.nbytes else None


class SGD:
    """``SGD(params, lr, momentum=0.0)``: params is a list of (name, Parameter)
    pairs or of Parameters that have a ``.name``; names key the momentum buffers.

    ``step()`` reads ``p.grad`` and updates ``p.data`` in place. ``state_dict()``
    holds lr, momentum and a copy of each momentum buffer by parameter name
    (no buffers before the first step, as in torch).
    """

    def __init__(self, params, lr, momentum=0.0):
        self.params = [p if isinstance(p, tuple) else (p.name, p) for p in params]
        self.lr, self.momentum = lr, momentum
        self.momentum_buffers = {}                   # name -> array; filled by the first step
        data = [p.data for _, p in self.params]
        grads = [p.grad for _, p in self.params]
        flat_data, flat_grad = _tiled_base(data), _tiled_base(grads)
        self._flat = None if flat_data is None or flat_grad is None else (flat_data, flat_grad)

    def zero_grad(self):
        for _, p in self.params:
            p.grad[...] = 0

    def step(self):
        first_step = not self.momentum_buffers
        if self.momentum == 0:
            for _, p in self.params:
                p.data -= p.data.dtype.type(self.lr) * p.grad
            return
        if first_step:
            self._allocate_buffers()
        for param, grad, buf in self._passes():
            dt = param.dtype.type
            sgd_momentum_step(param, grad, buf, dt(self.lr), dt(self.momentum), first_step)

    def _allocate_buffers(self):
        """One buffer per parameter; views of one flat buffer when the params are flat."""
        if self._flat is not None:
            self._flat_buffer = np.zeros_like(self._flat[0])
        offset = 0
        for name, p in self.params:
            if self._flat is not None:
                self.momentum_buffers[name] = self._flat_buffer[offset:offset + p.data.size].reshape(p.data.shape)
                offset += p.data.size
            else:
                self.momentum_buffers[name] = np.zeros_like(p.data)

    def _passes(self):
        """(param, grad, buf) 1-D arrays for sgd_momentum_step: one pass, or one per parameter."""
        if self._flat is not None:
            return [(*self._flat, self._flat_buffer)]
        return [(p.data.reshape(-1), p.grad.reshape(-1), self.momentum_buffers[name].reshape(-1))
                for name, p in self.params]

    def state_dict(self):
        return {"lr": self.lr, "momentum": self.momentum,
                "momentum_buffers": {k: v.copy() for k, v in self.momentum_buffers.items()}}

    def load_state_dict(self, state):
        """Restore lr, momentum and the buffers (by parameter name; none = before the first step)."""
        names = [n for n, _ in self.params]
        buffers = state["momentum_buffers"]
        if buffers and sorted(buffers) != sorted(names):
            raise ValueError(f"SGD.load_state_dict: momentum buffers for {sorted(buffers)}, "
                             f"expected {sorted(names)}")
        self.lr, self.momentum = state["lr"], state["momentum"]
        self.momentum_buffers = {}
        if buffers:
            self._allocate_buffers()
            for name, p in self.params:
                self.momentum_buffers[name][...] = np.asarray(buffers[name]).reshape(p.data.shape)
