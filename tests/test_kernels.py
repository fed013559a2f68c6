import os
import subprocess
import sys

import pytest

# Call one AbsTopK build (compiled, or loaded from the on-disk cache) and report how many
# threads the process gained: numba's thread pool starts only when the parallel build runs.
_PROBE = """
import os, sys
import numpy as np
from sparsecircuits import kernels
x = np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)
out, mask = np.empty_like(x), np.empty_like(x)
before = len(os.listdir("/proc/self/task"))
getattr(kernels, "_abstopk_rows_" + sys.argv[1])(x.view(np.int32), 16, out.view(np.int32), mask)
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_each_kernel_build_loads_itself_from_the_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_NUM_THREADS="2")

    def new_threads(build):
        out = subprocess.run([sys.executable, "-c", _PROBE, build], env=env, check=True,
                             capture_output=True, text=True).stdout
        return int(out.split()[-1])

    # The serial build is cached first; the parallel one must not load it, nor it the other.
    assert new_threads("serial") == 0
    assert new_threads("parallel") > 0
    assert new_threads("serial") == 0
    assert new_threads("parallel") > 0
