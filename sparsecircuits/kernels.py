"""Fused CPU kernels for AbsTopK and the weight projection, compiled by numba on first use
(and cached on disk).

AbsTopK: one pass per row does what takes five memory-bound tensor passes in torch (|x|, the
k-th largest, the comparison, the tie check, x * mask): the row's |x| bit patterns are copied
to a buffer in L1 cache, the k-th largest is found bit by bit from the top (a non-negative IEEE
float orders as its bit pattern read as an int, so 31 counting passes over the row find it
exactly, and they stop as soon as exactly k entries lie at or above the candidate), and the
kept entries and the 0/1 mask are written out.

Projection: one call per tensor marks each neuron's floor, finds the k-th largest |w| by radix
selection and zeroes the rest in place (see `_project`).

Both run on the calling thread. Inside a training step, torch's OpenMP workers keep spinning on
the other cores between torch operations, and a second numba thread competing with them made
the step slower, not faster (docs/RESULTS.md); no thread pool is ever started here.
"""

from __future__ import annotations

import numpy as np
import numba
import torch

_ABS = 0x7FFFFFFF


def _kernel(xb, k, out, mask):
    """xb: (n, d) int32 view of float32 x (any strides); writes out (int32 view) and mask."""
    n, d = xb.shape
    raw = np.empty(d, np.int32)
    mag = np.empty(d, np.int32)
    for r in range(n):
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


def _compile(fn):
    # fastmath lets the float32 count reductions vectorise; every other value is an integer.
    options = dict(nogil=True, boundscheck=False, fastmath=True)
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # no writable cache location: compile in every process instead
        return numba.njit(**options)(fn)


_abstopk_rows = _compile(_kernel)


def abstopk_cpu(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x with all but the k largest-|x| entries of each row zeroed, the float 0/1 mask).

    `x` is a float32 CPU tensor, 1 <= k < x.shape[-1]; ties at the k-th value are kept first
    by position, zeros are never kept.
    """
    d = x.shape[-1]
    rows = x.reshape(-1, d)  # a view for the strided slices the model makes (q, k, v)
    out = torch.empty(rows.shape, dtype=torch.float32)
    mask = torch.empty(rows.shape, dtype=torch.float32)
    args = (rows.numpy().view(np.int32), k, out.numpy().view(np.int32), mask.numpy())
    _abstopk_rows(*args)
    return out.view(x.shape), mask.view(x.shape)


# ----------------------------------------------------------------------------- projection

_FLOOR = np.int32(0x7FFFFFFF)  # ranks a floor entry above every finite |w|


def _mark_floor(score, j, axis):
    """Give each neuron's j largest entries the top rank, first by position among equals:
    neurons are rows for axis 1, columns for axis 0. One row-major pass keeps each neuron's
    best j so far in a small sorted buffer."""
    n, m = score.shape
    neurons = n if axis == 1 else m
    best = np.full((neurons, j), -1, np.int32)
    at = np.zeros((neurons, j), np.int64)  # position along the floor axis
    for r in range(n):
        for c in range(m):
            s = score[r, c]
            u, pos = (r, c) if axis == 1 else (c, r)
            if s > best[u, j - 1]:  # strictly: an equal later entry does not displace
                q = j - 1
                while q > 0 and s > best[u, q - 1]:
                    best[u, q], at[u, q] = best[u, q - 1], at[u, q - 1]
                    q -= 1
                best[u, q], at[u, q] = s, pos
    for u in range(neurons):
        for q in range(j):
            if axis == 1:
                score[u, at[u, q]] = _FLOOR
            else:
                score[at[u, q], u] = _FLOOR


def _project(wb, k, j, axis):
    """Zero, in place, all but the k largest |w| of `wb` (a C-contiguous 2-D int32 view of
    float32 weights), each neuron first keeping its j largest: neurons are rows for axis 1,
    columns for axis 0. Ties at the k-th value are kept first by position (row-major)."""
    n, m = wb.shape
    score = np.empty((n, m), np.int32)
    for r in range(n):
        for c in range(m):
            score[r, c] = wb[r, c] & _ABS
    if j > 0:
        _mark_floor_jit(score, j, axis)
    # Radix selection of the k-th largest score on digits of 11, 11 and 9 bits: the first
    # digit's histogram over all entries finds the bucket holding it; the entries in that
    # bucket (a few percent) are gathered, and two more digits over them find it exactly.
    flat = score.reshape(-1)
    hist = np.zeros(2048, np.int64)
    for s in flat:
        hist[s >> 20] += 1
    want = k  # how many of the entries sharing the digits found so far are kept
    b = 2047
    while hist[b] < want:
        want -= hist[b]
        b -= 1
    kth = b << 20
    near = np.empty(hist[b], np.int32)
    i = 0
    for s in flat:
        if (s >> 20) == b:
            near[i] = s
            i += 1
    ties = 0  # entries equal to the k-th largest
    for shift, digit, found in ((9, 0x7FF, 20), (0, 0x1FF, 9)):  # found: bits known above
        hist[:] = 0
        for s in near:
            if (s >> found) == (kth >> found):
                hist[(s >> shift) & digit] += 1
        b = digit
        while hist[b] < want:
            want -= hist[b]
            b -= 1
        kth |= b << shift
        ties = hist[b]
    # Keep every entry above the k-th largest and the first `want` equal to it.
    if ties == want:  # all of them: no tie to break
        for r in range(n):
            for c in range(m):
                wb[r, c] = wb[r, c] if score[r, c] >= kth else 0
    else:
        for r in range(n):
            for c in range(m):
                s = score[r, c]
                if s == kth and want > 0:
                    want -= 1
                elif s <= kth:
                    wb[r, c] = 0


_mark_floor_jit = _compile(_mark_floor)
_project_jit = _compile(_project)


def project_cpu(w: torch.Tensor, k: int, floor: int, axis: int | None) -> None:
    """In place: zero all but the k largest-|w| entries of the float32 CPU tensor `w`
    (1 <= k < w.numel()), each neuron along `axis` (for a matrix) first keeping its `floor`
    largest. Ties at the k-th value are kept first by position."""
    w2 = w.detach().view(-1, w.shape[-1]) if w.ndim > 1 else w.detach().view(1, -1)
    _project_jit(w2.numpy().view(np.int32), k, 0 if axis is None else floor,
                    1 if axis is None else axis)
