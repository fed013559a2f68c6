import os
import subprocess
import sys

import pytest

from sparsecircuits.memory import keep_freed_memory

# Allocate and free a 64 MiB buffer ten times, touching every page, and count page faults.
_PROBE = """
import resource, sys
import torch
from sparsecircuits.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.ones(1 << 24)  # the first allocation faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(1 << 24)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_memory_is_reused_without_page_faults():
    kept, faults_kept = _faults("keep")
    if not kept:
        pytest.skip("not glibc")
    _, faults_default = _faults("default")
    buffer = (1 << 26) // 4096  # pages in one buffer
    assert faults_default > 8 * buffer   # each of the ten page-faulted in again
    assert faults_kept < 2 * buffer      # the freed buffer reused


def test_a_user_allocator_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    assert keep_freed_memory() is False
