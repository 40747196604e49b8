"""Stochastic gradient descent with momentum and weight decay, exactly as ``torch.optim.SGD``
(no dampening, no Nesterov).

For each parameter p with gradient g, at every ``step()``:

    d = g + weight_decay * p               (weight_decay = 0: d = g)
    first step:   buf = d                  (torch copies d; no zeros)
    later steps:  buf = momentum * buf + d
    always:       p  -= lr * buf           (momentum = 0: p -= lr * d, no buffer)

When the parameters tile one flat buffer back to back (as ``CIFAR10Model``'s do),
the whole update is ONE pass over that buffer, split across threads
(``scratchcnn.kernels.sgd.sgd_momentum_step_parallel``); otherwise one pass per
parameter (``sgd_momentum_step``). Both apply the same element update,
``kernels.sgd.sgd_update``; its NumPy twin is ``scratchcnn.reference.sgd_momentum_step``.

``lr``, ``momentum`` and ``weight_decay`` are plain attributes, read at every
step: a learning-rate schedule sets ``opt.lr`` between steps.

Public contract for code that applies the update itself (the fused fast path,
``scratchcnn.fused``): ``begin_step()`` makes the momentum buffers when needed and
says whether this is the first step; ``flat_state()`` gives the flat
(param, grad, buf) arrays; ``hyperparameters(dtype)`` the three scalars.
"""
import numpy as np

from scratchcnn.kernels.sgd import sgd_momentum_step, sgd_momentum_step_parallel


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
    """``SGD(params, lr, momentum=0.0, weight_decay=0.0)``: params is a list of (name, Parameter)
    pairs or of Parameters that have a ``.name``; names key the momentum buffers.

    ``step()`` reads ``p.grad`` and updates ``p.data`` in place. ``state_dict()``
    holds lr, momentum, weight_decay and a copy of each momentum buffer by
    parameter name (no buffers before the first step, as in torch).
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        for what, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not v >= 0:                      # as torch: "Invalid learning rate: -1" etc.; NaN fails too
                raise ValueError(f"SGD: {what} must be >= 0, got {v}")
        self.params = [p if isinstance(p, tuple) else (p.name, p) for p in params]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.momentum_buffers = {}                   # name -> array; filled by the first step
        data = [p.data for _, p in self.params]
        grads = [p.grad for _, p in self.params]
        flat_data, flat_grad = _tiled_base(data), _tiled_base(grads)
        self._flat = None if flat_data is None or flat_grad is None else (flat_data, flat_grad)
        self._flat_buffer = None

    def zero_grad(self):
        for _, p in self.params:
            p.grad[...] = 0

    def step(self):
        first_step = self.begin_step()
        if self._flat is not None:
            param, grad, buf = self.flat_state()
            sgd_momentum_step_parallel(param, grad, grad if buf is None else buf,
                                       *self.hyperparameters(param.dtype), first_step)
            return
        for name, p in self.params:
            param, grad = p.data.reshape(-1), p.grad.reshape(-1)
            buf = self.momentum_buffers[name].reshape(-1) if self.momentum != 0 else grad
            sgd_momentum_step(param, grad, buf, *self.hyperparameters(param.dtype), first_step)

    # ---- the contract for code that runs the update itself (scratchcnn.fused)

    def begin_step(self):
        """Get ready for one update: make the momentum buffers if there are none yet
        (zeros; the first step overwrites them with d). Returns True when this step
        is the first one (buf = d), False otherwise and whenever momentum is 0."""
        if self.momentum == 0:
            return False
        if self.momentum_buffers:
            return False
        self._allocate_buffers()
        return True

    @property
    def is_flat(self):
        """True when the parameters (and gradients) are consecutive views of one flat buffer."""
        return self._flat is not None

    def flat_state(self):
        """``(param, grad, buf)``: the 1-D arrays that every parameter, gradient and
        momentum buffer is a view of, in ``params`` order. ``buf`` is None before the
        first ``begin_step()`` and whenever momentum is 0. Raises ValueError when the
        parameters are separate arrays (``is_flat`` is False)."""
        if self._flat is None:
            raise ValueError("SGD.flat_state: the parameters are separate arrays, not views of one flat "
                             "buffer (build SGD from CIFAR10Model.parameters())")
        buf = self._flat_buffer if self.momentum != 0 and self.momentum_buffers else None
        return (*self._flat, buf)

    def hyperparameters(self, dtype):
        """``(lr, momentum, weight_decay)`` as scalars of ``dtype``, as the kernels take them."""
        t = np.dtype(dtype).type
        return t(self.lr), t(self.momentum), t(self.weight_decay)

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

    def state_dict(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "momentum_buffers": {k: v.copy() for k, v in self.momentum_buffers.items()}}

    def load_state_dict(self, state):
        """Restore lr, momentum, weight_decay (kept as is when ``state`` has none, as in
        files written before it existed) and the buffers (by parameter name; none = before
        the first step)."""
        names = [n for n, _ in self.params]
        buffers = state["momentum_buffers"]
        if buffers and sorted(buffers) != sorted(names):
            raise ValueError(f"SGD.load_state_dict: momentum buffers for {sorted(buffers)}, "
                             f"expected {sorted(names)}")
        self.lr, self.momentum = state["lr"], state["momentum"]
        self.weight_decay = state.get("weight_decay", self.weight_decay)
        self.momentum_buffers = {}
        self._flat_buffer = None
        if buffers:
            self._allocate_buffers()
            for name, p in self.params:
                self.momentum_buffers[name][...] = np.asarray(buffers[name]).reshape(p.data.shape)
