"""A fused CPU kernel for AbsTopK, compiled by numba on first use (and cached on disk).

One pass per row does what takes five memory-bound tensor passes in torch (|x|, the k-th
largest, the comparison, the tie check, x * mask): the row's |x| bit patterns are copied to
a buffer in L1 cache, the k-th largest is found bit by bit from the top (a non-negative IEEE
float orders as its bit pattern read as an int, so 31 counting passes over the row find it
exactly, and they stop as soon as exactly k entries lie at or above the candidate), and the
kept entries and the 0/1 mask are written out. Rows are split across threads.
"""

from __future__ import annotations

import numpy as np
import numba
import torch

# numba's own thread pool, never its OpenMP one: a second OpenMP runtime in the process (the
# system's libgomp beside torch's) left torch running two-thread teams in workers set to one
# thread, and two such workers ran 4-5x slower side by side.
numba.config.THREADING_LAYER = "workqueue"

# Rows per parallel work item: enough to amortise scheduling, few enough to balance threads.
_ROWS_PER_ITEM = 64
_ABS = 0x7FFFFFFF


def _kernel(xb, k, out, mask):
    """xb: (n, d) int32 view of float32 x (any strides); writes out (int32 view) and mask."""
    n, d = xb.shape
    for item in numba.prange((n + _ROWS_PER_ITEM - 1) // _ROWS_PER_ITEM):
        raw = np.empty(d, np.int32)
        mag = np.empty(d, np.int32)
        for r in range(item * _ROWS_PER_ITEM, min(n, (item + 1) * _ROWS_PER_ITEM)):
            for j in range(d):
                raw[j] = xb[r, j]
            for j in range(d):
                mag[j] = raw[j] & _ABS
            # t: the largest bit pattern with at least k entries >= t, i.e. the k-th largest.
            t = np.int32(0)
            exact = False
            for bit in range(30, -1, -1):
                cand = np.int32(t | (1 << bit))
                count = np.float32(0)  # float32: counts below 2**24 are exact, and it vectorises
                for j in range(d):
                    count += np.float32(1) if mag[j] >= cand else np.float32(0)
                if count >= k:
                    t = cand
                    if count == k:  # exactly k at or above t: no tie to break
                        exact = True
                        break
            if t == 0:  # fewer than k nonzeros: keep them all, never a zero
                t = np.int32(1)
                exact = True
            if exact:
                for j in range(d):
                    keep = mag[j] >= t
                    out[r, j] = raw[j] if keep else 0
                    mask[r, j] = 1.0 if keep else 0.0
            else:  # entries equal to t fill the last places, first by position
                ties = k
                for j in range(d):
                    ties -= np.int32(mag[j] > t)
                for j in range(d):
                    keep = mag[j] > t
                    if mag[j] == t and ties > 0:
                        keep = True
                        ties -= 1
                    out[r, j] = raw[j] if keep else 0
                    mask[r, j] = 1.0 if keep else 0.0


def _compile(fn, parallel: bool):
    # fastmath lets the float32 count reductions vectorise; every other value is an integer.
    options = dict(parallel=parallel, nogil=True, boundscheck=False, fastmath=True)
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # no writable cache location: compile in every process instead
        return numba.njit(**options)(fn)


# On one thread the serial build runs, without starting any thread pool.
_abstopk_rows_parallel = _compile(_kernel, parallel=True)
_abstopk_rows_serial = _compile(_kernel, parallel=False)


def abstopk_cpu(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x with all but the k largest-|x| entries of each row zeroed, the float 0/1 mask).

    `x` is a float32 CPU tensor, 1 <= k < x.shape[-1]; ties at the k-th value are kept first
    by position, zeros are never kept. Uses as many threads as torch does.
    """
    d = x.shape[-1]
    rows = x.reshape(-1, d)  # a view for the strided slices the model makes (q, k, v)
    out = torch.empty(rows.shape, dtype=torch.float32)
    mask = torch.empty(rows.shape, dtype=torch.float32)
    args = (rows.numpy().view(np.int32), k, out.numpy().view(np.int32), mask.numpy())
    threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if threads == 1:
        _abstopk_rows_serial(*args)
    else:
        if numba.get_num_threads() != threads:
            numba.set_num_threads(threads)
        _abstopk_rows_parallel(*args)
    return out.view(x.shape), mask.view(x.shape)
