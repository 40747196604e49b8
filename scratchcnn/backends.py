"""The two backends behind one small interface, so one training loop drives both.

    backend.seed(s)                 dropout randomness for the coming epoch
    backend.set_lr(lr)              the learning rate of the coming steps (schedules)
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


def make_backend(name, *, device="cpu", lr=0.001, momentum=0.9, weight_decay=0.0, seed=0,
                 fused=True, n_classes=10):
    """``n_classes``: how many of the network's 10 outputs are classes of the data (a
    folder dataset may have fewer); ``train_step`` counts a prediction among those only."""
    if name == "torch":
        return TorchBackend(device=device, lr=lr, momentum=momentum, weight_decay=weight_decay,
                            seed=seed, n_classes=n_classes)
    if name == "scratch":
        if device != "cpu":
            raise UserError(f"the scratch backend runs on the CPU only; drop --device {device} "
                            f"or use --backend torch --device {device}")
        return ScratchBackend(lr=lr, momentum=momentum, weight_decay=weight_decay, seed=seed,
                              fast=fused, n_classes=n_classes)
    raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


class ScratchBackend:
    """NumPy + numba: ``scratchcnn.model.CIFAR10Model`` with hand-written backward passes.

    ``fast=True`` runs the fused training step (``scratchcnn.fused``), which is
    tested equal to the layer-by-layer path; ``fast=False`` runs the layers one by one.
    """
    name = "scratch"
    device = "cpu"

    def __init__(self, *, lr, momentum, seed, weight_decay=0.0, fast=True, n_classes=10):
        from scratchcnn.layers import SoftmaxCrossEntropy
        from scratchcnn.model import CIFAR10Model
        from scratchcnn.optim import SGD

        self.model = CIFAR10Model(rng=seed)
        self.criterion = SoftmaxCrossEntropy()
        self.n_classes = n_classes
        decay = {"weight_decay": weight_decay} if weight_decay else {}
        self.optimizer = SGD(self.model.parameters(), lr=lr, momentum=momentum, **decay)
        self.fused = None
        if fast:                      # the fast path, or an error now: never a silent fallback
            from scratchcnn import fused
            fused.check_supported(self.model)
            fused.check_optimizer(self.model, self.optimizer)
            self.fused = fused

    def seed(self, s):
        self.model.seed_dropout(s)

    def set_lr(self, lr):
        self.optimizer.lr = lr         # read by optimizer.step() and by the fused update

    def train_step(self, x, y):
        self.model.train()
        if self.fused is not None:     # forward, backward and the SGD update in one fused pass
            loss, logits = self.fused.fused_train_step(self.model, self.optimizer, x, y)
        else:
            logits = self.model.forward(x)
            loss = self.criterion.forward(logits, y)
            self.model.backward(self.criterion.backward())
            self.optimizer.step()
        return float(loss), int((predicted_class(logits, self.n_classes) == y).sum())

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

    def __init__(self, *, device="cpu", lr, momentum, seed, weight_decay=0.0, n_classes=10):
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
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum,
                                         weight_decay=weight_decay)
        self.n_classes = n_classes

    def seed(self, s):
        self.torch.manual_seed(s)      # seeds the CPU and every CUDA generator

    def set_lr(self, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr

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
        correct = (logits[:, :self.n_classes].argmax(1) == yt).sum()
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


def predicted_class(logits, n_classes=10):
    """The class each row of ``logits`` (N, 10) predicts, among the first ``n_classes`` outputs.

    A dataset with K < 10 classes trains only the first K outputs; the others are
    never a label, and are left out here so that they are never a prediction either.
    """
    return logits[:, :n_classes].argmax(1)


def cross_entropy(logits, y):
    """Mean softmax cross-entropy of logits (N, C) and labels y (N,), in float64:
    mean_i [ log sum_j exp(z_ij) - z_i,y_i ] (torch's ``CrossEntropyLoss``)."""
    z = logits.astype(np.float64)
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    return float((lse - z[np.arange(len(y)), y]).mean())


def evaluate_logits(backend, data, batch_size=500, normalize=None):
    """Eval-mode logits for a whole Dataset, in its order."""
    from scratchcnn.data import iterate_batches
    chunks = [backend.predict(x) for x, _ in iterate_batches(data, batch_size, normalize=normalize)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 10), np.float32)


def loss_and_accuracy(backend, data, batch_size=500, normalize=None):
    """Eval-mode (dropout off) mean cross-entropy and accuracy over a whole Dataset."""
    if len(data) == 0:
        return float("nan"), float("nan")
    logits = evaluate_logits(backend, data, batch_size, normalize)
    right = predicted_class(logits, len(data.classes)) == data.y
    return cross_entropy(logits, data.y), float(right.mean())
