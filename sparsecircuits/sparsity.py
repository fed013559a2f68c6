"""Weight sparsity (top-|w| projection with a per-neuron floor, L0 annealing) and AbsTopK.

After every optimizer step each weight matrix, bias and embedding keeps only its largest-|w|
entries at the scheduled density; gradients and Adam moments stay dense, so pruned weights can
come back. On the CPU the selection is a k-th-value threshold rather than a sort: a fused
kernel (`kernels.py`) marks each neuron's floor, finds the k-th largest |w| by radix selection
and zeroes the rest in one call per tensor. On an accelerator it is one stable sort per tensor,
which reads nothing back to the host. Both are exact: exactly k entries are kept, ties at the
k-th value broken by position. They differ only in which of several equal entries a neuron's
floor takes (the kernel: the first; elsewhere: `torch.topk`'s choice); a test holds them equal
on weights without such ties.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import SparsityConfig
from .errors import UserError


# ----------------------------------------------------------------------------- selection

def kth_largest(s: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of the 1-D tensor `s` (1 <= k <= s.numel())."""
    n = s.numel()
    if s.device.type == "cpu" and s.dtype == torch.float32:
        return torch.as_tensor(_np_partition_nonneg(s.numpy(), n - k)[n - k])
    return s.kthvalue(n - k + 1).values


def topk_mask(s: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly k largest entries of `s` (any shape); ties broken by position."""
    flat = s.reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(s, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(s, dtype=torch.bool)
    if s.device.type != "cpu":
        return _topk_mask_sorted(flat, k).view_as(s)
    thr = kth_largest(flat, k)
    mask = flat > thr
    short = k - int(mask.sum())
    if short > 0:
        ties = (flat == thr).nonzero().squeeze(1)[:short]
        mask[ties] = True
    return mask.view_as(s)


def _topk_mask_sorted(flat: torch.Tensor, k: int) -> torch.Tensor:
    """`topk_mask` of a 1-D tensor by one stable sort, for accelerators: the same selection
    (ties to the earlier position) with no host synchronisation, where the threshold path
    reads a count back for its ties, once per tensor per step."""
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[flat.argsort(descending=True, stable=True)[:k]] = True
    return mask


def topk_mask_sort(s: torch.Tensor, k: int) -> torch.Tensor:
    """Reference selection with `torch.topk` (the sort-based baseline the benchmark compares)."""
    mask = torch.zeros(s.numel(), dtype=torch.bool, device=s.device)
    if k > 0:
        mask[s.reshape(-1).topk(min(k, s.numel()), sorted=False).indices] = True
    return mask.view_as(s)


# ----------------------------------------------------------------------------- AbsTopK

def abstopk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest-|x| entries of every vector along the last dim; zero the rest.

    Exactly k entries survive per vector (all of its nonzeros if it has fewer than k); ties at
    the threshold are broken by position. The gradient flows to the kept entries only.
    """
    if k >= x.shape[-1]:
        return x
    return _AbsTopK.apply(x, k)


class _AbsTopK(torch.autograd.Function):
    """x * mask, with the mask saved for the backward pass. On the CPU in float32 a fused
    kernel (`kernels.py`) selects, masks and writes each row in one pass."""

    @staticmethod
    def forward(ctx, x, k):
        x = x.detach()
        if x.device.type == "cpu" and x.dtype == torch.float32 and _cpu_kernel() is not None:
            out, mask = _cpu_kernel()(x, k)
        else:
            out, mask = _abstopk_torch(x, k)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def _abstopk_torch(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AbsTopK in tensor operations (accelerators, other dtypes): (x * mask, float mask).

    One stable sort per row ranks |x| with ties to the earlier position, the fused kernel's
    rule; zeros are never kept (a row with fewer than k nonzeros keeps just those). Nothing is
    read back to the host, so an accelerator's queue never drains here.
    """
    a = x.abs()
    top = a.argsort(dim=-1, descending=True, stable=True)[..., :k]
    mask = torch.zeros_like(a).scatter_(-1, top, 1.0).mul_(a > 0)
    return x * mask, mask


@functools.cache
def _kernels():
    """The fused CPU kernels module (numba, compiled on first use), or None without numba."""
    try:
        from . import kernels
    except ImportError:
        return None
    return kernels


def _cpu_projection():
    """The fused CPU weight projection, or None without numba."""
    return _kernels() and _kernels().project_cpu


def _cpu_kernel():
    """The fused CPU AbsTopK, or None without numba."""
    return _kernels() and _kernels().abstopk_cpu


def _np_partition_nonneg(a: np.ndarray, kth: int) -> np.ndarray:
    """np.partition along the last axis for non-negative float32 values.

    Non-negative IEEE floats order exactly as their bit patterns read as int32, and numpy's
    selection on int32 (SIMD where the CPU has it) is 2-3x faster than on float32, itself
    5-10x faster than torch.kthvalue/topk on the CPU.
    """
    return np.partition(a.view(np.int32), kth, axis=-1).view(np.float32)


# ----------------------------------------------------------------------------- schedule

def anneal_progress(frac: float, cfg: SparsityConfig) -> float:
    """0 before the anneal window, 1 after it, linear inside. `frac` = step / total steps."""
    if frac >= cfg.anneal_end:
        return 1.0
    if frac <= cfg.anneal_start:
        return 0.0
    return (frac - cfg.anneal_start) / (cfg.anneal_end - cfg.anneal_start)


def scheduled_density(frac: float, final: float, cfg: SparsityConfig) -> float:
    """Density at training fraction `frac`: 1 (dense) before the window, `final` after it."""
    p = anneal_progress(frac, cfg)
    if p >= 1.0:
        return final
    if cfg.anneal == "exponential":
        return final ** p
    return 1.0 + (final - 1.0) * p


def lr_at(step: int, total: int, lr: float, warmup_frac: float, sharkfin_factor: float = 1.0):
    """Linear warmup then linear decay to zero, times the sharkfin factor."""
    warm = max(1, round(warmup_frac * total))
    base = (step + 1) / warm if step < warm else 1.0 - (step - warm) / max(1, total - warm)
    return lr * max(0.0, base) * sharkfin_factor


def sharkfin_factor(frac: float, cfg: SparsityConfig) -> float:
    """sqrt(target density / current density) of the matrices: 1 once the anneal has ended.

    Convention: normalised to 1 at the *target* density (as the reference implementation does),
    so `train.lr` is the peak LR of the sparse phase and the dense start runs lower.
    """
    return math.sqrt(cfg.weight_density / scheduled_density(frac, cfg.weight_density, cfg))


# ----------------------------------------------------------------------------- projection

@dataclass
class SparseTensor:
    """One parameter under the weight budget."""
    name: str
    param: torch.nn.Parameter
    group: str               # "matrix" or "other" (embeddings, unembedding, biases)
    floor_axis: int | None   # dim along which each neuron keeps >= min_per_neuron entries

    def k_at(self, density: float) -> int:
        return int(math.floor(density * self.param.numel() + 1e-6))  # 0.1 * 3840 is 384

    def n_neurons(self) -> int:
        return 0 if self.floor_axis is None else self.param.numel() // self.param.shape[self.floor_axis]


class WeightSparsifier:
    """Projects a model's weights onto the scheduled budget after every optimizer step."""

    def __init__(self, tensors: list[SparseTensor], cfg: SparsityConfig):
        self.tensors = tensors
        self.cfg = cfg
        for t in tensors:
            j = self._floor(t)
            final = self.final_density(t)
            if j and t.k_at(final) < j * t.n_neurons():
                need = j * t.n_neurons() / t.param.numel()
                raise UserError(
                    f"sparsity: {t.name} would keep {t.k_at(final)} weights at density {final:g}, "
                    f"fewer than min_per_neuron={j} for each of its {t.n_neurons()} neurons; "
                    f"raise the density to at least {need:g} or lower min_per_neuron.")

    def final_density(self, t: SparseTensor) -> float:
        return self.cfg.weight_density if t.group == "matrix" else self.cfg.other_density

    def densities(self, frac: float) -> dict[str, float]:
        return {g: scheduled_density(frac, d, self.cfg)
                for g, d in (("matrix", self.cfg.weight_density), ("other", self.cfg.other_density))}

    def _floor(self, t: SparseTensor) -> int:
        if t.floor_axis is None:
            return 0
        return min(self.cfg.min_per_neuron, t.param.shape[t.floor_axis])

    @torch.no_grad()
    def project(self, frac: float, select=None, skip=None) -> None:
        """Zero all but each tensor's top-k at the density of training fraction `frac`.

        By default a CPU float32 tensor goes through the fused kernel (`kernels.py`: floor,
        radix selection and zeroing in one call) and any other through `mask` with
        `topk_mask`; `select` forces `mask` with that selection (the benchmark compares them).
        Parameters for which `skip(param)` is true are left alone.
        """
        dens = self.densities(frac)
        fused = _cpu_projection() if select is None else None
        for t in self.tensors:
            k = t.k_at(dens[t.group])
            if k >= t.param.numel() or (skip is not None and skip(t.param)):
                continue
            p = t.param
            if fused and p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous():
                fused(p, k, self._floor(t), t.floor_axis)
                torch.autograd.graph.increment_version(p)  # written in place, as masked_fill_ would
            else:
                p.masked_fill_(~self.mask(t, k, select or topk_mask), 0.0)

    def mask(self, t: SparseTensor, k: int, select=topk_mask) -> torch.Tensor:
        score = t.param.detach().abs()
        j = self._floor(t)
        if j:
            score = score.clone()
            top = score.topk(j, dim=t.floor_axis).indices
            score.scatter_(t.floor_axis, top, math.inf)
        return select(score, k)
