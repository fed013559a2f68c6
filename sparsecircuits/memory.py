"""Keep freed memory in the process for reuse, so a training step's buffers are not page-faulted
in fresh every step.

glibc serves large allocations with mmap and returns them to the system when freed, so every
step of a training loop page-faults its activation buffers in again (tens of thousands of
faults per step on `small`; `bench/bench_sparse_step.py` counts them). With mmap off
and the heap never trimmed, a freed buffer is reused by the next step's allocation of the same
size. The process keeps its peak memory for its lifetime, as a caching allocator does.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# A user who tunes glibc's allocator through its environment variables keeps their settings.
_GLIBC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
              "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True if it took effect.

    A no-op (False) off Linux, with another C library, or when a MALLOC_* variable is set.
    """
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _GLIBC_ENV):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
