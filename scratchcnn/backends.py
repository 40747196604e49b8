"""The two backends behind one small interface, so one training loop drives both.

    backend.seed(s)                 dropout randomness for the coming epoch
    backend.set_lr(lr)              the learning rate of the coming steps (schedules)
    backend.train_step(x, y)        forward + backward + SGD step -> (mean loss, #correct)
    backend.predict(x)              eval-mode logits, (N, K) float32 numpy
    backend.state_dict()            {"conv1.weight": ndarray, ...}  (torch's keys)
    backend.load_state_dict(sd)
    backend.optimizer_state()       {"conv1.weight": momentum buffer, ...}
    backend.load_optimizer_state(d)

Arrays cross this boundary as NumPy (x: float32 (N, 3, 32, 32), y: int64 (N,)).
Both backends build the same network (``arch``: a preset name, a JSON file or an
``architecture.Architecture``) and start from the same initial weights for the same
seed: they are drawn by the scratch model's initialiser, from PyTorch's default
distributions.
"""
import numpy as np

from scratchcnn import allocator
from scratchcnn.errors import UserError

BACKENDS = ("scratch", "torch")


def epoch_seed(seed, epoch):
    """The dropout seed of one epoch (what ``backend.seed`` gets before it): a function of
    (seed, epoch) only."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def initial_state_dict(seed, arch="tutorial"):
    """The starting weights (and buffers) for ``seed`` (PyTorch's default init, drawn with NumPy)."""
    from scratchcnn.model import Network
    return Network(arch, rng=seed).state_dict()


def make_backend(name, *, arch="tutorial", device="cpu", lr=0.001, momentum=0.9, weight_decay=0.0, seed=0,
                 fused=True, n_classes=None):
    """``n_classes``: how many of the network's outputs are classes of the data (default: all;
    an old checkpoint may have 10 outputs for a folder of fewer classes); ``train_step`` counts
    a prediction among those only. ``fused``: the scratch backend's fast path where it
    supports the network (``ScratchBackend.path`` says which runs). Either backend first tells
    glibc to keep freed memory for reuse (``scratchcnn.allocator``)."""
    if name in BACKENDS:
        allocator.keep_freed_memory()
    if name == "torch":
        return TorchBackend(arch=arch, device=device, lr=lr, momentum=momentum, weight_decay=weight_decay,
                            seed=seed, n_classes=n_classes)
    if name == "scratch":
        if device != "cpu":
            raise UserError(f"the scratch backend runs on the CPU only; drop --device {device} "
                            f"or use --backend torch --device {device}")
        return ScratchBackend(arch=arch, lr=lr, momentum=momentum, weight_decay=weight_decay, seed=seed,
                              fast=fused, n_classes=n_classes)
    raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


class ScratchBackend:
    """NumPy + numba: ``scratchcnn.model.Network`` with hand-written backward passes.

    ``fast=True`` runs the fused training step (``scratchcnn.fused``, tested equal to the
    layer-by-layer path) when it supports the network, and the layers one by one
    otherwise; ``path`` says which ("fused" or "layers") and ``path_note`` why.
    ``fast=False`` always runs the layers.
    """
    name = "scratch"
    device = "cpu"

    def __init__(self, *, arch="tutorial", lr, momentum, seed, weight_decay=0.0, fast=True, n_classes=None):
        from scratchcnn.layers import SoftmaxCrossEntropy
        from scratchcnn.model import Network
        from scratchcnn.optim import SGD

        self.model = Network(arch, rng=seed)
        self.criterion = SoftmaxCrossEntropy()
        self.n_classes = n_classes or self.model.arch.num_classes
        self.optimizer = SGD(self.model.parameters(), lr=lr, momentum=momentum,
                             weight_decay=weight_decay)
        self.fused, self.path, self.path_note = None, "layers", "the layer-by-layer path (--no-fused)"
        if fast:
            from scratchcnn import fused
            reason = fused.unsupported_reason(self.model)
            if reason is None:
                fused.check_optimizer(self.model, self.optimizer)
                self.fused, self.path, self.path_note = fused, "fused", "the fused fast path"
            else:
                self.path_note = f"the layer-by-layer path ({reason})"

    def warmup(self, verbose=True):
        """Load (or, the first time, compile) the kernels this backend's path runs, outside
        every timing; "compiling kernels, first run only" is printed when that takes long."""
        if self.fused is not None:
            self.fused.warmup(self.model, verbose=verbose)
        else:
            warm_layer_path(self.model.arch, verbose=verbose)

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
    """The same network in PyTorch (``torch_reference.TorchNetwork``), ``CrossEntropyLoss`` and
    ``SGD``, on CPU or CUDA."""
    name = "torch"
    path, path_note = "torch", "PyTorch"

    def __init__(self, *, arch="tutorial", device="cpu", lr, momentum, seed, weight_decay=0.0, n_classes=None):
        import torch
        from torch_reference import TorchNetwork

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU; "
                            "use --device cpu")
        if device != "cpu" and not device.startswith("cuda"):
            raise UserError(f"unknown device {device!r}; use cpu or cuda")
        self.torch, self.device = torch, torch.device(device)
        torch.manual_seed(seed)
        self.model = TorchNetwork(arch).to(self.device)
        self.load_state_dict(initial_state_dict(seed, self.model.arch))
        self.criterion = torch.nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum,
                                         weight_decay=weight_decay)
        self.n_classes = n_classes or self.model.arch.num_classes

    def warmup(self, verbose=True):
        """Nothing to compile."""

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
        self.model.load_state_dict({k: self.torch.as_tensor(np.array(v)) for k, v in sd.items()})

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


_warm_archs = set()


def warm_layer_path(arch, verbose=True):
    """Compile (first run) or load the numba kernels the layer path runs for ``arch``: one
    forward, backward and SGD step of a throwaway 2-image float32 model, once per process."""
    import time

    from scratchcnn import ops
    from scratchcnn.layers import SoftmaxCrossEntropy
    from scratchcnn.model import Network
    from scratchcnn.optim import SGD
    if arch in _warm_archs or ops.using_reference():
        return
    t0 = time.perf_counter()
    model = Network(arch, rng=0)
    x = np.zeros((2, *model.arch.input_shape), np.float32)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.train().forward(x), np.zeros(2, np.int64))
    model.backward(loss.backward(), input_grad=True)
    opt = SGD(model.parameters(), lr=0.001, momentum=0.9)
    opt.step()
    opt.step()
    model.eval().forward(x)
    _warm_archs.add(arch)
    if verbose and time.perf_counter() - t0 > 5:
        print(f"compiled the layer kernels in {time.perf_counter() - t0:.0f} s (first run only; "
              f"later runs load them from numba's cache)", flush=True)


def predicted_class(logits, n_classes=None):
    """The class each row of ``logits`` (N, K) predicts, among the first ``n_classes`` outputs
    (None: all of them).

    A network with more outputs than the data has classes (the tutorial's 10-output
    checkpoint on a 3-class folder) trains only the first ones; the others are never a
    label, and are left out here so that they are never a prediction either.
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
    return np.concatenate(chunks) if chunks else np.zeros((0, backend.n_classes), np.float32)


def loss_and_accuracy(backend, data, batch_size=500, normalize=None):
    """Eval-mode (dropout off) mean cross-entropy and accuracy over a whole Dataset."""
    if len(data) == 0:
        return float("nan"), float("nan")
    logits = evaluate_logits(backend, data, batch_size, normalize)
    right = predicted_class(logits, len(data.classes)) == data.y
    return cross_entropy(logits, data.y), float(right.mean())
