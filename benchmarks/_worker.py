"""One framework in one process, driven by JSON lines on stdin (see _common.Worker).

    python -m benchmarks._worker FRAMEWORK THREADS

FRAMEWORK: scratch (the fused fast path, ``fused_train_step``), scratch-layers (the readable
layer-by-layer path + optim.SGD), torch, torch-nodrop (both dropouts replaced by
identity), torch-cuda. Thread counts are pinned by the parent's environment and
again here. Commands: info, steps, profile, layers, peak, memory, quit. Each
reply is one JSON line on stdout; everything else goes to stderr.
"""
import json
import os
import resource
import sys
import time

import numpy as np

from benchmarks._workload import batch

FRAMEWORK, THREADS = sys.argv[1], int(sys.argv[2])
_real_stdout = sys.stdout
sys.stdout = sys.stderr               # stray prints must not corrupt the protocol


def reply(obj):
    _real_stdout.write(json.dumps(obj) + "\n")
    _real_stdout.flush()


class Scratch:
    def __init__(self, fast=True):
        import numba
        from scratchcnn import fused
        from scratchcnn.layers import SoftmaxCrossEntropy
        from scratchcnn.model import CIFAR10Model
        from scratchcnn.optim import SGD
        numba.set_num_threads(THREADS)
        t = time.perf_counter()
        fused.warmup(verbose=False)
        self.warmup_s = time.perf_counter() - t
        self.fused, self.fast = fused, fast
        self.model = CIFAR10Model(rng=0).train()
        self.opt = SGD(self.model.parameters(), lr=0.001, momentum=0.9)
        self.crit = SoftmaxCrossEntropy()

    def step(self, x, y):
        if self.fast:
            self.fused.fused_train_step(self.model, self.opt, x, y)
        else:
            self.crit.forward(self.model.forward(x), y)
            self.model.backward(self.crit.backward())
            self.opt.step()

    def sync(self):
        pass


class Torch:
    def __init__(self, dropout=True, device="cpu"):
        import torch
        from torch_reference.model import CIFAR10Model
        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        self.torch, self.device = torch, device
        self.model = CIFAR10Model().to(device).train()
        if not dropout:
            self.model.drop1 = torch.nn.Identity()
            self.model.drop3 = torch.nn.Identity()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.001, momentum=0.9)
        self.loss = torch.nn.CrossEntropyLoss()
        self.warmup_s = 0.0

    def step(self, x, y):
        if not isinstance(x, self.torch.Tensor):
            x, y = self.torch.from_numpy(x).to(self.device), self.torch.from_numpy(y).to(self.device)
        self.opt.zero_grad()
        self.loss(self.model(x), y).backward()
        self.opt.step()

    def sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()


def make():
    if FRAMEWORK == "scratch":
        return Scratch()
    if FRAMEWORK == "scratch-layers":
        return Scratch(fast=False)
    if FRAMEWORK == "torch":
        return Torch()
    if FRAMEWORK == "torch-nodrop":
        return Torch(dropout=False)
    if FRAMEWORK == "torch-cuda":
        return Torch(device="cuda")
    raise SystemExit(f"unknown framework {FRAMEWORK}")


def info(fw):
    from threadpoolctl import threadpool_info
    import numpy
    versions = {"numpy": numpy.__version__}
    if FRAMEWORK.startswith("scratch"):
        import llvmlite
        import numba
        versions.update(numba=numba.__version__, llvmlite=llvmlite.__version__,
                        numba_threading_layer=_numba_layer(), numba_threads=numba.get_num_threads())
    else:
        import torch
        versions.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                        torch_blas=torch.backends.mkldnn.is_available() and "oneDNN+" + (
                            "MKL" if torch.backends.mkl.is_available() else "no MKL"))
        if FRAMEWORK == "torch-cuda":
            versions["cuda_device"] = torch.cuda.get_device_name(0)
    return {"framework": FRAMEWORK, "threads": THREADS, "versions": versions, "threadpools": threadpool_info(),
            "warmup_s": fw.warmup_s, "maxrss_mib_after_setup": maxrss_mib()}


def _numba_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet initialised"


def maxrss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def timed_steps(fw, n_steps, batch_size):
    x, y = batch(batch_size)
    if FRAMEWORK == "torch-cuda":
        x, y = fw.torch.from_numpy(x).cuda(), fw.torch.from_numpy(y).cuda()
    times = []
    for _ in range(n_steps):
        t = time.perf_counter()
        fw.step(x, y)
        fw.sync()
        times.append(time.perf_counter() - t)
    return times


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


def peak(seconds=0.3):
    """Measured FP32 FMA throughput (GFLOP/s) of this process's numba threads: 12 independent
    16-lane FMA chains per thread (the machine's ceiling for the kernels here)."""
    from benchmarks._peak import fma_peak
    import numba
    numba.set_num_threads(THREADS)
    fma_peak(1000, THREADS)
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        iters = 200000
        t = time.perf_counter()
        fma_peak(iters, THREADS)
        dt = time.perf_counter() - t
        best = max(best, THREADS * iters * 12 * 16 * 2 / dt / 1e9)
    return best


def main():
    fw = make()
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.get("cmd")
        try:
            if cmd == "info":
                reply(info(fw))
            elif cmd == "steps":
                reply({"times": timed_steps(fw, msg["n"], msg["batch"])})
            elif cmd == "profile":
                reply({"stages": fused_profile(fw, msg["n"], msg["batch"])})
            elif cmd == "layers":
                from benchmarks._layer_ops import time_layers
                reply({"layers": time_layers(FRAMEWORK, fw, msg["n"], msg["batch"])})
            elif cmd == "peak":
                reply({"gflops": peak()})
            elif cmd == "memory":
                timed_steps(fw, msg["n"], msg["batch"])
                reply({"maxrss_mib": maxrss_mib()})
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
