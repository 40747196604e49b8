"""Shared plumbing for the benchmarks: the quiet-machine check, worker processes,
machine description, and writing results (Markdown + JSON + PNG) to benchmarks/results/.

Each framework runs in its own worker process (``benchmarks._worker``), so
numba's OpenMP pool and PyTorch's never share a process; the parent sends the
workers commands in alternating rounds and only one works at a time.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._workload import MFLOP_PER_IMAGE

RESULTS = Path(__file__).resolve().parent / "results"
NOMINAL_PEAK_GFLOPS = {1: 270.0, 2: 540.0}   # Zen 5, 512-bit FMA loop (benchmarks/README.md); see measured_peak


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--force", action="store_true",
                   help="run even if another process is loading the CPU (recorded in the JSON)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke test)")
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
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "platform": platform.platform(),
            "python": platform.python_version(),
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                                   "NUMBA_THREADING_LAYER")}}


class LoadMonitor:
    """How much CPU OTHER processes used while a benchmark ran.

    ``start()`` before the run; ``stop(own_cpu_s)`` after it, given the CPU seconds
    of the benchmark's own processes; returns a record with ``others_cpu_share``,
    the fraction of the machine's CPU capacity (wall time x CPUs) used by anything
    else. Above ~5% the timings are disturbed, whatever the check before said.
    """

    def start(self):
        import psutil
        self.t0 = time.perf_counter()
        self.busy0 = self._busy(psutil.cpu_times())
        self.self0 = sum(psutil.Process().cpu_times()[:2])
        return self

    @staticmethod
    def _busy(ct):
        return sum(ct) - ct.idle - getattr(ct, "iowait", 0.0)

    def stop(self, workers_cpu_s):
        import psutil
        wall = time.perf_counter() - self.t0
        busy = self._busy(psutil.cpu_times()) - self.busy0
        own = workers_cpu_s + sum(psutil.Process().cpu_times()[:2]) - self.self0
        share = max(0.0, busy - own) / (wall * (os.cpu_count() or 1))
        rec = {"wall_s": wall, "system_busy_cpu_s": busy, "benchmark_cpu_s": own, "others_cpu_share": share,
               "disturbed": share > 0.05}
        if rec["disturbed"]:
            print(f"warning: other processes used {100 * share:.0f}% of the CPUs during the run; "
                  f"the results are marked disturbed", file=sys.stderr)
        return rec


class Worker:
    """A ``benchmarks._worker`` subprocess for one framework at a fixed thread count."""

    def __init__(self, framework, threads, env=None):
        e = dict(os.environ)
        for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            e[k] = str(threads)
        e.update(env or {})
        for k, v in list(e.items()):
            if v is None:
                del e[k]
        self.framework, self.threads = framework, threads
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks._worker", framework, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=e,
                                     cwd=str(RESULTS.parent.parent))
        self.info = self.call(cmd="info")

    def call(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.framework}/{self.threads} died (see its stderr above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.framework}: {reply['error']}")
        return reply

    def cpu_seconds(self):
        """User + system CPU seconds this worker has used so far."""
        import psutil
        try:
            return sum(psutil.Process(self.proc.pid).cpu_times()[:2])
        except psutil.Error:
            return 0.0

    def close(self):
        """Stop the worker; returns the CPU seconds it used."""
        cpu = self.cpu_seconds()
        try:
            self.call(cmd="quit")
        except Exception:
            pass
        self.proc.wait(timeout=30)
        return cpu


def stats(times_s, batch):
    """median / p10 / p90 / min in ms, images/s and GFLOP/s of a list of step times."""
    import numpy as np
    t = np.asarray(times_s) * 1e3
    med = float(np.median(t))
    return {"median_ms": med, "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)),
            "min_ms": float(t.min()), "n": int(t.size), "images_per_s": batch / med * 1e3,
            "gflops": MFLOP_PER_IMAGE * batch / med}


def save(name, markdown, data, plot=None):
    """Write results/<name>.md, .json and (plot(path) draws it) .png; print the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    header = f"# benchmark: {name}\n\n{data['date']}, {data['machine']['cpu']}, {data['machine']['logical_cpus']} CPUs"
    if data.get("quiet_check", {}).get("forced"):
        header += "  \n**FORCED: the machine was busy; timings include other processes' load.**"
    if data.get("load_during_run", {}).get("disturbed"):
        header += (f"  \n**DISTURBED: other processes used "
                   f"{100 * data['load_during_run']['others_cpu_share']:.0f}% of the CPUs during the run.**")
    (RESULTS / f"{name}.md").write_text(header + "\n\n" + markdown + "\n")
    if plot is not None:
        import matplotlib
        matplotlib.use("Agg")
        plot(RESULTS / f"{name}.png")
    print(markdown)
    print(f"\nwrote {RESULTS / name}.md / .json" + (" / .png" if plot else ""))


def versions_line(info):
    """'numpy 2.x, numba 0.x, BLAS openblas 0.3 (SkylakeX)' from a worker's info reply."""
    libs = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture', '?')}, "
                     f"{b.get('num_threads')} threads)" for b in info.get("threadpools", []))
    return f"{libs}; pools: {blas}"
