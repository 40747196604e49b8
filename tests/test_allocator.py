"""scratchcnn.allocator: glibc kept from handing large freed blocks back, for both backends."""
import subprocess
import sys

import pytest

from scratchcnn import allocator

GLIBC = sys.platform.startswith("linux")


def _run(code, **env):
    import os
    e = {k: v for k, v in os.environ.items() if k != "SCRATCHCNN_MALLOC"}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)


PROBE = """
import time, numpy as np
from scratchcnn import allocator
print(allocator.keep_freed_memory())
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_it_sets_the_thresholds_once_and_an_environment_variable_opts_out():
    assert _run(PROBE).stdout.split() == ["True"]
    assert _run(PROBE, SCRATCHCNN_MALLOC="default").stdout.split() == ["False"]


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_a_freed_large_block_is_reused_so_the_next_one_needs_no_fresh_pages():
    # glibc's default: a 64 MiB block is a fresh mmap each time, so touching it page-faults it in
    # again (hundreds of faults per block where NumPy gets huge pages, 16,384 where not); with the
    # thresholds set the freed block is reused and its pages stay mapped (measured: 2720 vs 0)
    code = """
import resource, sys, numpy as np
from scratchcnn import allocator
if sys.argv[1] == "tuned":
    allocator.keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(16 << 20, np.float32); del a          # 64 MiB, touched, freed
before = faults()
for _ in range(5):
    a = np.ones(16 << 20, np.float32); del a
print(faults() - before)
"""
    default = int(subprocess.run([sys.executable, "-c", code, "default"], capture_output=True, text=True,
                                 check=True).stdout)
    tuned = int(subprocess.run([sys.executable, "-c", code, "tuned"], capture_output=True, text=True,
                               check=True).stdout)
    assert tuned * 10 < default, (tuned, default)   # the same pages reused, not faulted in again


def test_both_backends_set_it_before_training(monkeypatch):
    from scratchcnn import backends
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    for name in ("scratch", "torch"):
        backends.make_backend(name, seed=0)
    assert len(calls) == 2
