"""Shared plumbing for the benchmarks: the quiet-machine check, worker processes,
machine description, and writing results (Markdown + JSON + PNG) to benchmarks/results/.

Each configuration runs in its own worker process (``benchmarks._worker``), so
numba's OpenMP pool and PyTorch's never share a process; the parent sends the
workers commands in rounds (``run_rounds``: a random order each round), only
one works at a time, and the next starts once the last one's idle threads
have stopped spinning (``Worker.settle``). The FMA peak and the memory
bandwidth are measured in a worker of their own (``probe_machine``).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import _report as R


RESULTS = Path(__file__).resolve().parent / "results"


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--force", action="store_true",
                   help="run even if another process is loading the CPU (recorded in the JSON)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS,
                   help="folder for the .md/.json/.png results (default: benchmarks/results)")
    return p


def cpu_busy(seconds=2.0):
    """(max per-CPU busy %, 1-min load average) sampled over ``seconds`` before a run."""
    import psutil
    per_cpu = psutil.cpu_percent(interval=seconds, percpu=True)
    return max(per_cpu), os.getloadavg()[0]


def check_quiet(force, busy_limit=15.0):
    """Refuse (exit 3) when the machine is busy, unless ``force``; returns a record for the JSON.

    Busy = some CPU more than ``busy_limit`` % busy over a 2 s sample. The load
    average is recorded but does not decide: it lags by minutes, so it would
    still count the previous benchmark of ``benchmarks.all``.
    """
    busy, load = cpu_busy()
    quiet = busy < busy_limit
    record = {"max_cpu_busy_percent": busy, "loadavg_1min": load, "quiet": quiet, "forced": bool(force and not quiet)}
    if not quiet and not force:
        print(f"error: the machine is busy (a CPU was {busy:.0f}% busy, 1-min load average {load:.2f}); "
              f"timings would measure the other processes too. Stop them and rerun, "
              f"or pass --force to measure anyway (the results are then marked forced).", file=sys.stderr)
        sys.exit(3)
    if not quiet:
        print(f"warning: machine busy (CPU {busy:.0f}% busy, load {load:.2f}); --force given, results marked forced",
              file=sys.stderr)
    return record


def machine_info():
    """The CPU (model name, family/model, the vector-FMA flags, the clock /proc/cpuinfo reports), memory,
    platform and the environment variables that change the kernels' speed."""
    cpu, fields = platform.processor() or "unknown", {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break                                   # the first CPU's block is enough
        cpu = fields.get("model name", cpu)
    except OSError:
        pass
    flags = fields.get("flags", "").split()
    import psutil
    return {"cpu": cpu, "cpu_family": fields.get("cpu family"), "cpu_model": fields.get("model"),
            "cpu_mhz": cpu_mhz(), "fma_flags": [f for f in ("fma", "avx2", "avx512f") if f in flags],
            "logical_cpus": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "platform": platform.platform(),
            "python": platform.python_version(),
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                                   "NUMBA_THREADING_LAYER")}}


class LoadMonitor:
    """How much CPU OTHER processes used while a benchmark ran.

    ``start()`` before the run; ``stop(own_cpu_s)`` after it, given the CPU seconds
    of the benchmark's own processes (the larger of that and the CPU of the children
    reaped since ``start()`` counts as the benchmark's); returns a record with ``others_cpu_share``,
    the fraction of the machine's CPU capacity (wall time x CPUs) used by anything
    else. Above ~5% the timings are disturbed, whatever the check before said.
    """

    def start(self):
        import psutil
        self.t0 = time.perf_counter()
        self.busy0 = self._busy(psutil.cpu_times())
        self.self0 = sum(psutil.Process().cpu_times()[:2])
        self.children0 = _reaped_children_cpu_s()
        return self

    @staticmethod
    def _busy(ct):
        return sum(ct) - ct.idle - getattr(ct, "iowait", 0.0)

    def stop(self, workers_cpu_s):
        import psutil
        wall = time.perf_counter() - self.t0
        busy = self._busy(psutil.cpu_times()) - self.busy0
        # a worker's CPU is read before it is told to quit, so its exit (unloading torch, freeing
        # memory: about 0.4 s each) would count as another process's load; once the workers have
        # been waited for, the kernel's total for reaped children includes it
        children = max(workers_cpu_s, _reaped_children_cpu_s() - self.children0)
        own = children + sum(psutil.Process().cpu_times()[:2]) - self.self0
        share = max(0.0, busy - own) / (wall * (os.cpu_count() or 1))
        rec = {"wall_s": wall, "system_busy_cpu_s": busy, "benchmark_cpu_s": own, "others_cpu_share": share,
               "disturbed": share > 0.05}
        if rec["disturbed"]:
            print(f"warning: other processes used {100 * share:.0f}% of the CPUs during the run; "
                  f"the results are marked disturbed", file=sys.stderr)
        return rec


def _reaped_children_cpu_s():
    """CPU seconds of this process's children that have ended and been waited for (and of their own
    waited-for children)."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _process_cpu_ns(pid):
    """CPU time (ns) used so far by every thread of process ``pid``: the first field of each
    /proc/PID/task/*/schedstat (nanosecond resolution; psutil's is the 10 ms clock tick)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass                                   # a thread that just exited
    except OSError:
        import psutil
        try:
            return int(sum(psutil.Process(pid).cpu_times()[:2]) * 1e9)
        except psutil.Error:
            return 0
    return total


# glibc's allocator, told to keep freed memory for reuse: PyTorch's CPU step allocates and frees
# buffers of up to 16 MiB (fc3's gradient) every step. By default glibc serves some of them with
# fresh mmap()s and hands freed heap tops back to the kernel, so the next step page-faults them in
# again; measured on a Zen 5 (2 threads, the tutorial's loop, 60 steps each): steps of either about
# 29 or about 43 ms, median 39-43 ms, and 27.6-28.4 ms with these two settings. The "+malloc" torch
# configurations run with them. (PyTorch's CPU tuning guides suggest swapping in jemalloc or tcmalloc
# against this kind of cost; these two glibc settings need no extra library.)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


class Worker:
    """A ``benchmarks._worker`` subprocess for one configuration at a fixed thread count.

    ``settle()``, called by the parent after each command, waits until the
    worker's threads have stopped using the CPU: an OpenMP runtime lets its idle
    threads spin for a while after a parallel region (libgomp: GOMP_SPINCOUNT;
    Intel's and LLVM's: KMP_BLOCKTIME, 200 ms by default), and a spinning idle
    worker would steal a core from the next worker in the round. The CPU the
    worker burned after its reply is added to ``spin_cpu_s`` and the time waited
    to ``settle_s``; both go into the JSON (benchmarks/README.md: "Idle threads").
    """

    def __init__(self, config, threads, env=None):
        e = dict(os.environ)
        for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            e[k] = str(threads)
        if "malloc" in config.split("+"):
            e.update(MALLOC_ENV)
        e.update(env or {})
        for k, v in list(e.items()):
            if v is None:
                del e[k]
        self.config, self.threads = config, threads
        self.spin_cpu_s, self.settle_s, self.settles = 0.0, 0.0, 0
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks._worker", config, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=e,
                                     cwd=str(RESULTS.parent.parent))
        self.info = self.call(cmd="info")

    def call(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self._replied_ns = _process_cpu_ns(self.proc.pid)
        if not line:
            raise RuntimeError(f"worker {self.config}/{self.threads} died (see its stderr above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.config}: {reply['error']}")
        return reply

    def settle(self, window_s=0.005, idle_share=0.05, timeout_s=2.0):
        """Wait until the worker used less than ``idle_share`` of one CPU over ``window_s``."""
        t0 = time.perf_counter()
        prev = _process_cpu_ns(self.proc.pid)
        while time.perf_counter() - t0 < timeout_s:
            time.sleep(window_s)
            now = _process_cpu_ns(self.proc.pid)
            if now - prev < idle_share * window_s * 1e9:
                break
            prev = now
        self.spin_cpu_s += max(0, prev - self._replied_ns) / 1e9
        self.settle_s += time.perf_counter() - t0
        self.settles += 1

    def cpu_seconds(self):
        """CPU seconds used so far by this worker and every process it started (torch.compile's
        compiler workers and their C++ compilers included), so LoadMonitor does not count them
        as another process's load."""
        import psutil
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            return _process_cpu_ns(self.proc.pid) / 1e9
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
            except psutil.Error:
                pass
        return total

    def close(self):
        """Stop the worker; returns the CPU seconds it used."""
        cpu = self.cpu_seconds()
        try:
            self.call(cmd="quit")
        except Exception:
            pass
        self.proc.wait(timeout=30)
        return cpu


def run_rounds(workers, rounds, message, seed, settle=True):
    """Interleaved rounds: in each round every worker runs ``message(key)`` once, in a random order.

    workers: {key: Worker}; message(key) -> the command dict (it must reply with
    "times"). Returns ({key: [round 0 times, round 1 times, ...]}, [order of
    each round]). The order is a fresh permutation each round (seeded: the
    run's seed is in its JSON), so no configuration always follows the same
    neighbour or always runs first after the parent's bookkeeping. With
    ``settle``, each worker's idle threads are allowed to stop spinning before
    the next one starts (``Worker.settle``).
    """
    import numpy as np
    rng = np.random.default_rng(seed)
    keys = list(workers)
    times, orders = {k: [] for k in keys}, []
    for _ in range(rounds):
        order = [keys[i] for i in rng.permutation(len(keys))]
        orders.append(order)
        for k in order:
            times[k].append(workers[k].call(**message(k))["times"])
            if settle:
                workers[k].settle()
    return times, orders


def spin_record(workers):
    """{key: {spin_cpu_s, settle_s, settles}}: what settling found, per worker."""
    return {k: {"spin_cpu_s": w.spin_cpu_s, "settle_s": w.settle_s, "settles": w.settles} for k, w in workers.items()}


def thread_counts(all_cores=None):
    """The thread counts to measure, largest first: every count 1..all cores up to 8 cores,
    beyond that all cores and the powers of two below it."""
    n = all_cores
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if n <= 8:
        return list(range(n, 0, -1))
    return [n] + [2 ** k for k in range(n.bit_length() - 1, -1, -1) if 2 ** k < n]


def probe_machine(threads, quick=False):
    """The FMA peak (GFLOP/s) and STREAM bandwidth (GB/s) at ``threads`` threads, bound to cores,
    measured in a fresh ``machine`` worker (benchmarks._peak); ``cpu_s`` is the CPU the probe used."""
    w = Worker("machine", threads, env={"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"})
    try:
        peak = w.call(cmd="peak", seconds=0.3 if quick else 1.0)
        bw = w.call(cmd="bandwidth", mib=64 if quick else 128)
    finally:
        cpu_s = w.close()
    return {"fma_gflops": peak["gflops"], "fma_instructions": peak["fma"], **bw,
            "threading_layer": w.info["versions"].get("numba_threading_layer"),
            "cpu_s": cpu_s}              # for LoadMonitor: the probe's own CPU is not another process's load


def nominal_peak(threads, ghz, pipes=2, lanes=16):
    """threads x pipes x lanes x 2 FLOP x GHz: the FP32 FMA peak at clock ``ghz`` (GFLOP/s)."""
    return threads * pipes * lanes * 2 * ghz


def cpu_mhz():
    """The clock /proc/cpuinfo reports (MHz; on a VM usually the base clock, not the boost clock)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def save(name, markdown, data, plot=None, out=RESULTS):
    """Write <out>/<name>.md, .json and (plot(path) draws it) .png; print the table; return the data
    as written to the JSON (with the date and the machine added)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(), **data}
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    header = f"# benchmark: {name}\n\n{data['date']}, {R.cpu_name(data['machine'])}, {data['machine']['logical_cpus']} CPUs"
    if data.get("quiet_check", {}).get("forced"):
        header += "  \n**FORCED: the machine was busy; timings include other processes' load.**"
    if data.get("load_during_run", {}).get("disturbed"):
        header += (f"  \n**DISTURBED: other processes used "
                   f"{100 * data['load_during_run']['others_cpu_share']:.0f}% of the CPUs during the run.**")
    (out / f"{name}.md").write_text(header + "\n\n" + markdown + "\n")
    if plot is not None:
        import matplotlib
        matplotlib.use("Agg")
        plot(out / f"{name}.png")
    print(markdown)
    print(f"\nwrote {out / name}.md / .json" + (" / .png" if plot else ""))
    return data


def versions_line(info):
    """'numpy 2.x, numba 0.x, BLAS openblas 0.3 (SkylakeX)' from a worker's info reply."""
    libs = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture', '?')}, "
                     f"{b.get('num_threads')} threads)" for b in info.get("threadpools", []))
    return f"{libs}; pools: {blas}"
