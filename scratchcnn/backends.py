"""The two backends behind one small interface, so one training loop drives both.

    backend.seed(s)                 dropout randomness for the coming epoch
    backend.train_step(x, y)        forward + backward + SGD step -> (mean loss, #correct)
    backend.predict(x)              eval-mode logits, (N, 10) float32 numpy
    backend.state_dict()            {"conv1.weight": ndarray, ...}  (torch's keys)
    backend.load_state_dict(sd)
    backend.optimizer_state()       {"conv1.weight": momentum buffer, ...}
    backend.load_optimizer_state(d)

Arrays cross this boundary as NumPy (x: float32 (N, 3, 32, 32), y: int64 (N,)).
Both backends start from the same initial weights for the same seed: they are
drawn by the scratch model's initialiser, from PyTorch's default distributions.
"""
import numpy as np

from scratchcnn.errors import UserError

BACKENDS = ("scratch", "torch")


def initial_state_dict(seed):
    """The starting weights for ``seed`` (PyTorch's default init, drawn with NumPy)."""
    from scratchcnn.model import CIFAR10Model
    return CIFAR10Model(rng=seed).state_dict()


def make_backend(name, *, device="cpu", lr=0.001, momentum=0.9, seed=0, fused=True):
    if name == "torch":
        return TorchBackend(device=device, lr=lr, momentum=momentum, seed=seed)
    if name == "scratch":
        if device != "cpu":
            raise UserError(f"the scratch backend runs on the CPU only; drop --device {device} "
                            f"or use --backend torch --device {device}")
        return ScratchBackend(lr=lr, momentum=momentum, seed=seed, fast=fused)
    raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


class ScratchBackend:
    """NumPy + numba: ``scratchcnn.model.CIFAR10Model`` with hand-written backward passes.

    ``fast=True`` runs the fused training step (``scratchcnn.fused``), which is
    tested equal to the layer-by-layer path; ``fast=False`` runs the layers one by one.
    """
    name = "scratch"
    device = "cpu"

    def __init__(self, *, lr, momentum, seed, fast=True):
        from scratchcnn.layers import SoftmaxCrossEntropy
        from scratchcnn.model import CIFAR10Model
        from scratchcnn.optim import SGD

        self.model = CIFAR10Model(rng=seed)
        self.criterion = SoftmaxCrossEntropy()
        self.optimizer = SGD(self.model.parameters(), lr=lr, momentum=momentum)
        self.fused = None
        if fast:                      # the fast path, or an error now: never a silent fallback
            from scratchcnn import fused
            fused.check_supported(self.model)
            fused.check_optimizer(self.model, self.optimizer)
            self.fused = fused

    def seed(self, s):
        self.model.seed_dropout(s)

    def train_step(self, x, y):
        self.model.train()
        if self.fused is not None:     # forward, backward and the SGD update in one fused pass
            loss, logits = self.fused.fused_train_step(self.model, self.optimizer, x, y)
        else:
            logits = self.model.forward(x)
            loss = self.criterion.forward(logits, y)
            self.model.backward(self.criterion.backward())
            self.optimizer.step()
        return float(loss), int((logits.argmax(1) == y).sum())

    def predict(self, x):
        self.model.eval()
        if self.fused is not None:
            return self.fused.fused_predict(self.model, x)
        return self.model.forward(x)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, sd):
        self.model.load_state_dict(sd)

    def optimizer_state(self):
        return self.optimizer.state_dict()["momentum_buffers"]

    def load_optimizer_state(self, buffers):
        self.optimizer.load_state_dict({"lr": self.optimizer.lr, "momentum": self.optimizer.momentum,
                                        "momentum_buffers": buffers})


class TorchBackend:
    """The tutorial's PyTorch model, ``CrossEntropyLoss`` and ``SGD``, on CPU or CUDA."""
    name = "torch"

    def __init__(self, *, device="cpu", lr, momentum, seed):
        import torch
        from torch_reference import CIFAR10Model

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU; "
                            "use --device cpu")
        if device != "cpu" and not device.startswith("cuda"):
            raise UserError(f"unknown device {device!r}; use cpu or cuda")
        self.torch, self.device = torch, torch.device(device)
        torch.manual_seed(seed)
        self.model = CIFAR10Model().to(self.device)
        self.load_state_dict(initial_state_dict(seed))
        self.criterion = torch.nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)

    def seed(self, s):
        self.torch.manual_seed(s)      # seeds the CPU and every CUDA generator

    def _tensor(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def train_step(self, x, y):
        self.model.train()
        xt, yt = self._tensor(x), self._tensor(y)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(xt)
        loss = self.criterion(logits, yt)
        loss.backward()
        self.optimizer.step()
        correct = (logits.argmax(1) == yt).sum()
        return float(loss.item()), int(correct.item())

    def predict(self, x):
        self.model.eval()
        with self.torch.no_grad():
            return self.model(self._tensor(x)).float().cpu().numpy()

    def state_dict(self):
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, sd):
        self.model.load_state_dict({k: self.torch.as_tensor(np.asarray(v)) for k, v in sd.items()})

    def optimizer_state(self):
        out = {}
        for name, p in self.model.named_parameters():
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[name] = buf.detach().cpu().numpy().copy()
        return out

    def load_optimizer_state(self, state):
        for name, p in self.model.named_parameters():
            if name in state:
                self.optimizer.state[p]["momentum_buffer"] = self._tensor(state[name]).clone()


def evaluate_logits(backend, data, batch_size=500, normalize=None):
    """Eval-mode logits for a whole Dataset, in its order."""
    from scratchcnn.data import iterate_batches
    chunks = [backend.predict(x) for x, _ in iterate_batches(data, batch_size, normalize=normalize)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 10), np.float32)


def accuracy(backend, data, batch_size=500, normalize=None):
    if len(data) == 0:
        return float("nan")
    return float((evaluate_logits(backend, data, batch_size, normalize).argmax(1) == data.y).mean())
