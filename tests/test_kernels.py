import os
import subprocess
import sys

import pytest

# Run both fused kernels in a fresh process (compiling them or loading them from the on-disk
# cache) and report how many threads the process gained.
_PROBE = """
import os
import torch
from sparsecircuits import kernels
torch.set_num_threads(1)  # so torch starts no threads of its own
before = len(os.listdir("/proc/self/task"))
kernels.abstopk_cpu(torch.randn(256, 64), 16)
kernels.project_cpu(torch.randn(64, 32), 200, 4, 1)
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_kernels_start_no_thread_pool(tmp_path):
    # A numba thread pool beside torch's spinning OpenMP workers slowed the training step, and
    # in single-thread worker processes it oversubscribes the cores.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_NUM_THREADS="2")
    for _ in ("compiled", "loaded from the cache"):
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, check=True,
                             capture_output=True, text=True).stdout
        assert int(out.split()[-1]) == 0
