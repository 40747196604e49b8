"""One configuration in one process, driven by JSON lines on stdin (see _common.Worker).

    python -m benchmarks._worker CONFIG THREADS

CONFIG is a base name and options joined by '+':

    scratch              the fused fast path, ``scratchcnn.fused.fused_train_step`` (every scratch
                         configuration runs with ``scratchcnn.allocator.keep_freed_memory()``,
                         as ``scratchcnn train`` does)
    scratch-layers       the readable layer-by-layer path (numba kernels) + ``optim.SGD``
    scratch-reference    the same layers on their NumPy twins (``scratchcnn.ops.use_reference()``)
    torch                the tutorial loop on the CPU: zero_grad, forward, CrossEntropyLoss, backward, step
    torch-cuda           the same on the GPU (timed with ``torch.cuda.synchronize()``)
    machine              no model: the FMA peak and the memory bandwidth probes (``benchmarks._peak``)

    +nodrop              both Dropout layers off (scratch: p = 0; torch: replaced by identity)
    +channels_last       torch: model and input in ``torch.channels_last`` memory format
    +fused_sgd           torch: ``torch.optim.SGD(..., fused=True)``
    +compile             torch: ``torch.compile(model)``; the first step (the compilation) is
                         timed separately and reported as ``compile_s``
    +malloc              torch: glibc's allocator told to keep freed memory (the parent sets
                         ``_common.MALLOC_ENV`` before the process starts, when glibc reads it)
    +arch=NAME           the network: a preset of ``scratchcnn.architecture.PRESETS`` (default
                         tutorial). "scratch" runs the fused fast path where it supports the
                         network and the layer path otherwise, as ``scratchcnn train`` does;
                         ``info`` says which ran ("path")

Thread counts are pinned by the parent's environment and again here.
Commands: info, steps, profile, layer_profile, layers, predict, peak, bandwidth, memory,
quit. Each reply is one JSON line on stdout; everything else goes to stderr.
"""
import json
import os
import resource
import sys
import time

import numpy as np

from benchmarks._workload import batch

CONFIG, THREADS = sys.argv[1], int(sys.argv[2])
BASE, *_opts = CONFIG.split("+")
ARCH = next((o.split("=", 1)[1] for o in _opts if o.startswith("arch=")), "tutorial")
OPTIONS = {o for o in _opts if not o.startswith("arch=")}
BASES = ("scratch", "scratch-layers", "scratch-reference", "torch", "torch-cuda", "machine")
TORCH_OPTIONS = {"nodrop", "channels_last", "fused_sgd", "compile", "malloc"}
_real_stdout = sys.stdout
sys.stdout = sys.stderr               # stray prints must not corrupt the protocol


def reply(obj):
    _real_stdout.write(json.dumps(obj) + "\n")
    _real_stdout.flush()


class Scratch:
    """scratchcnn's model and SGD; ``mode`` is 'fused', 'layers' or 'reference'."""

    def __init__(self, mode, dropout=True, arch="tutorial"):
        import numba
        from scratchcnn import allocator, fused, ops
        from scratchcnn.backends import warm_layer_path
        from scratchcnn.layers import SoftmaxCrossEntropy
        from scratchcnn.model import Network
        from scratchcnn.optim import SGD
        numba.set_num_threads(THREADS)
        allocator.keep_freed_memory()         # as scratchcnn train does (backends.make_backend)
        self.model = Network(arch, rng=0).train()
        if mode == "fused" and fused.unsupported_reason(self.model) is not None:
            mode = "layers"                   # as scratchcnn train does: the layer path, knowingly
        t = time.perf_counter()
        fused.warmup(self.model, verbose=False) if mode == "fused" else warm_layer_path(arch, verbose=False)
        self.warmup_s = time.perf_counter() - t
        ops.use_reference(mode == "reference")
        self.fused, self.mode = fused, mode
        if not dropout:
            for _, layer in self.model.dropouts():
                layer.p = 0.0
        self.opt = SGD(self.model.parameters(), lr=0.001, momentum=0.9)
        self.crit = SoftmaxCrossEntropy()

    def step(self, x, y):
        self.model.train()
        if self.mode == "fused":
            self.fused.fused_train_step(self.model, self.opt, x, y)
        else:
            self.crit.forward(self.model.forward(x), y)
            self.model.backward(self.crit.backward())
            self.opt.step()

    def predict(self, x, mode):
        self.model.eval()
        if self.mode == "fused":
            return self.fused.fused_predict(self.model, x)
        return self.model.forward(x)

    def sync(self):
        pass


class Torch:
    """The tutorial's model, CrossEntropyLoss and SGD, with the options of CONFIG."""

    def __init__(self, device="cpu", options=(), arch="tutorial"):
        import torch
        from torch_reference.model import TorchNetwork
        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        self.torch, self.device = torch, device
        self.model = TorchNetwork(arch).to(device).train()
        if "nodrop" in options:
            for name, layer in list(self.model.named_children()):
                if isinstance(layer, torch.nn.Dropout):
                    setattr(self.model, name, torch.nn.Identity())
        self.memory_format = torch.channels_last if "channels_last" in options else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.001, momentum=0.9,
                                   **({"fused": True} if "fused_sgd" in options else {}))
        self.loss = torch.nn.CrossEntropyLoss()
        self.forward = torch.compile(self.model) if "compile" in options else self.model
        self.warmup_s, self.compile_s = 0.0, None
        if "compile" in options:            # compile now, so no timed step includes it
            x, y = self.tensors(*batch(32))
            t = time.perf_counter()
            self.step(x, y)
            self.sync()
            self.compile_s = time.perf_counter() - t

    def tensors(self, x, y):
        t = self.torch
        return (t.from_numpy(x).to(self.device).contiguous(memory_format=self.memory_format),
                t.from_numpy(y).to(self.device))

    def step(self, x, y):
        self.opt.zero_grad()
        self.loss(self.forward(x), y).backward()
        self.opt.step()

    def predict(self, x, mode):
        """Eval-mode logits as ``scratchcnn evaluate`` gets them (no_grad), or under inference_mode."""
        self.model.eval()
        ctx = self.torch.inference_mode() if mode == "inference_mode" else self.torch.no_grad()
        with ctx:
            return self.forward(x)

    def sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()


def make():
    from scratchcnn.architecture import PRESETS
    unknown = OPTIONS - TORCH_OPTIONS
    if BASE not in BASES or unknown or (BASE.startswith("scratch") and OPTIONS - {"nodrop"}):
        raise SystemExit(f"unknown configuration {CONFIG!r}")
    if ARCH not in PRESETS:
        raise SystemExit(f"unknown network {ARCH!r} in {CONFIG!r}: choose one of {', '.join(PRESETS)}")
    if "malloc" in OPTIONS and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        raise SystemExit(f"{CONFIG!r} needs glibc's MALLOC_* variables set before the process starts "
                         f"(benchmarks._common.Worker does it)")
    if BASE.startswith("scratch"):
        mode = {"scratch": "fused", "scratch-layers": "layers", "scratch-reference": "reference"}[BASE]
        return Scratch(mode, dropout="nodrop" not in OPTIONS, arch=ARCH)
    if BASE == "machine":
        import numba
        numba.set_num_threads(THREADS)
        return None
    return Torch(device="cuda" if BASE == "torch-cuda" else "cpu", options=OPTIONS, arch=ARCH)


def info(fw):
    from threadpoolctl import threadpool_info
    import numpy
    versions = {"numpy": numpy.__version__}
    if BASE.startswith("scratch") or BASE == "machine":
        import llvmlite
        import numba
        versions.update(numba=numba.__version__, llvmlite=llvmlite.__version__,
                        numba_threading_layer=_numba_layer(), numba_threads=numba.get_num_threads())
    else:
        import torch
        versions.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                        torch_blas=torch.backends.mkldnn.is_available() and "oneDNN+" + (
                            "MKL" if torch.backends.mkl.is_available() else "no MKL"))
        if BASE == "torch-cuda":
            versions["cuda_device"] = torch.cuda.get_device_name(0)
    out = {"config": CONFIG, "threads": THREADS, "arch": ARCH, "path": getattr(fw, "mode", None), "versions": versions, "threadpools": threadpool_info(),
           "warmup_s": getattr(fw, "warmup_s", 0.0), "maxrss_mib_after_setup": maxrss_mib()}
    if getattr(fw, "compile_s", None) is not None:
        out["compile_s"] = fw.compile_s
    return out


def _numba_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet initialised"


def maxrss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def _inputs(fw, batch_size):
    x, y = batch(batch_size)
    return fw.tensors(x, y) if isinstance(fw, Torch) else (x, y)


def _timed(fw, n, call):
    """Seconds of each of n calls of ``call()``, the device synchronised before the clock stops."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        fw.sync()
        times.append(time.perf_counter() - t)
    return times


def timed_steps(fw, n_steps, batch_size):
    """Seconds per training step of one batch, n_steps times."""
    x, y = _inputs(fw, batch_size)
    return _timed(fw, n_steps, lambda: fw.step(x, y))


def timed_predict(fw, n_calls, batch_size, mode):
    """Seconds per ``predict`` of one batch (eval mode, no gradients), n_calls times."""
    x, _ = _inputs(fw, batch_size)
    return _timed(fw, n_calls, lambda: fw.predict(x, mode))


def fused_profile(fw, n_steps, batch_size):
    """Median seconds per stage of the fused training step over n_steps."""
    x, y = batch(batch_size)
    per = {}
    for _ in range(n_steps):
        prof = {}
        fw.fused.fused_train_step(fw.model, fw.opt, x, y, profile=prof)
        for k, v in prof.items():
            per.setdefault(k, []).append(v)
    return {k: float(np.median(v)) for k, v in per.items()}


def layer_profile(fw, n_steps, batch_size):
    """Median seconds of each layer's forward and backward, and of the SGD step, on the layer path
    (any network): {"conv1 forward": s, "conv1 backward": s, ..., "sgd": s}."""
    from scratchcnn.layer_base import REGISTRY
    x, y = batch(batch_size)
    model, per = fw.model.train(), {}
    for _ in range(n_steps):
        a = x
        for name, layer in model.layers:
            t = time.perf_counter()
            a = layer.forward(a)
            per.setdefault(f"{name} forward", []).append(time.perf_counter() - t)
        fw.crit.forward(a, y)
        g = fw.crit.backward()
        for i, (name, layer) in enumerate(reversed(model.layers)):
            t = time.perf_counter()
            first_conv = i == len(model.layers) - 1 and isinstance(layer, REGISTRY["Conv2d"])
            g = layer.backward(g, input_grad=False) if first_conv else layer.backward(g)   # as Network.backward
            per.setdefault(f"{name} backward", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        fw.opt.step()
        per.setdefault("sgd", []).append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in per.items()}


def _proc_status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def training_memory(fw, n_steps, batch_size):
    """What training adds to resident memory, without what set-up left behind in the peak.

    Set-up (imports, loading the kernels, ``fused.warmup``'s throwaway model)
    raises the process's peak RSS (``ru_maxrss``) above what is resident once it
    is done, so ``ru_maxrss after training - ru_maxrss after set-up`` misses
    whatever training allocates up to that old peak. Instead: resident memory
    now (VmRSS), then reset the peak (Linux: ``echo 5 > /proc/self/clear_refs``
    resets VmHWM), train, and read the new peak (VmHWM).

    Memory that set-up freed is first handed back to the system
    (``malloc_trim(0)``): glibc keeps freed blocks resident in its heap (and,
    after freeing a large block, serves the next ones up to 32 MiB from that
    heap too), so training would otherwise reuse the throwaway warm-up model's
    pages and seem to need almost nothing.
    """
    import ctypes
    import gc
    gc.collect()
    try:
        trimmed = bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):             # not glibc
        trimmed = None
    rss_before = _proc_status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    hwm_reset = _proc_status_kib("VmHWM")
    timed_steps(fw, n_steps, batch_size)
    hwm = _proc_status_kib("VmHWM")
    return {"malloc_trim": trimmed, "rss_before_mib": rss_before / 1024, "peak_reset_to_mib": hwm_reset / 1024,
            "peak_during_training_mib": hwm / 1024, "training_adds_mib": (hwm - rss_before) / 1024,
            "maxrss_mib_after_setup": None, "maxrss_mib_after_training": maxrss_mib()}


def main():
    fw = make()
    setup_maxrss = maxrss_mib()
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.get("cmd")
        try:
            if cmd == "info":
                reply(info(fw))
            elif cmd == "steps":
                reply({"times": timed_steps(fw, msg["n"], msg["batch"])})
            elif cmd == "predict":
                reply({"times": timed_predict(fw, msg["n"], msg["batch"], msg.get("mode", "no_grad"))})
            elif cmd == "profile":
                reply({"stages": fused_profile(fw, msg["n"], msg["batch"])})
            elif cmd == "layer_profile":
                reply({"stages": layer_profile(fw, msg["n"], msg["batch"])})
            elif cmd == "layers":
                from benchmarks._layer_ops import time_layers
                reply({"layers": time_layers(BASE, fw, msg["n"], msg["batch"])})
            elif cmd == "peak":
                from benchmarks._peak import fma_instructions, measure_peak
                reply({"gflops": measure_peak(THREADS, msg.get("seconds", 1.0)), "fma": fma_instructions()})
            elif cmd == "bandwidth":
                from benchmarks._peak import measure_bandwidth
                reply(measure_bandwidth(THREADS, msg.get("mib", 128)))
            elif cmd == "memory":
                rec = training_memory(fw, msg["n"], msg["batch"])
                rec["maxrss_mib_after_setup"] = setup_maxrss
                reply(rec)
            elif cmd == "quit":
                reply({"bye": True})
                return
            else:
                reply({"error": f"unknown command {cmd!r}"})
        except Exception as e:                       # report, keep serving
            import traceback
            traceback.print_exc()
            reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
