"""Sparse-step overhead and projection speed, measured side by side in one run.

For each preset pair (tiny, small, and the paper's 1x shapes at a small batch) this times one
full training step of the sparse preset (AbsTopK at the eight sites + weight projection +
optimizer) and of a dense model of the same shapes (no AbsTopK, density 1), interleaving them
so machine noise hits all alike, and prints the ratio of medians. The sparse step is timed
three times: with the fused CPU AbsTopK kernel (what training uses), with AbsTopK in tensor
operations (the accelerator path), and with a fixed mask in place of the selection (a control:
the same step minus the cost of selecting). It also times the weight projection three ways on the same
weights: the fused CPU kernel training uses, a k-th-value threshold in tensor operations (the
accelerator path), and a plain per-tensor `torch.topk`. Like `train` on the CPU, it keeps freed
memory for reuse (`sparsecircuits/memory.py`), for the dense and the sparse step alike.

    python bench/bench_sparse_step.py [--rounds 15] [--steps 5] [--presets tiny small paper-1x]
                                      [--system-malloc]
"""

from __future__ import annotations

import argparse
import copy
import platform
import resource
import statistics
import time

import torch

from sparsecircuits import sparsity
from sparsecircuits.config import preset
from sparsecircuits.memory import keep_freed_memory
from sparsecircuits.model import GPT
from sparsecircuits.sparsity import WeightSparsifier, topk_mask, topk_mask_sort
from sparsecircuits.train import training_step


def make(cfg, seed=0):
    torch.manual_seed(seed)
    model = GPT(cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=(0.9, 0.95), eps=0.1)
    sp = WeightSparsifier(model.sparse_tensors(), cfg.sparsity)
    sp.project(1.0)  # start at the target density, where projection does the most work
    return model, opt, sp


_MASKS: dict[torch.Size, torch.Tensor] = {}


def _fixed_mask(x, k):
    """A stand-in for the AbsTopK kernel with no selection: x times a fixed 0/1 mask keeping
    the first k of each row. Same outputs to save and multiply, so the step differs from the
    real one only by the cost of selecting."""
    if x.shape not in _MASKS:
        _MASKS[x.shape] = torch.zeros(x.shape).index_fill_(-1, torch.arange(k), 1.0)
    mask = _MASKS[x.shape]
    return x * mask, mask


ABSTOPK = {"fused": None, "tensor": lambda: None, "fixed": lambda: _fixed_mask}


def time_steps(model, opt, sp, cfg, x, y, n, abstopk="fused"):
    """Seconds per step over n steps, and minor page faults per step."""
    kernel = sparsity._cpu_kernel
    if ABSTOPK[abstopk] is not None:
        sparsity._cpu_kernel = ABSTOPK[abstopk]
    try:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        for _ in range(n):
            training_step(model, opt, sp, model.decay_params(), x, y, lr=1e-3, next_frac=1.0,
                          tc=cfg.train)
        dt = (time.perf_counter() - t) / n
        return dt, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / n
    finally:
        sparsity._cpu_kernel = kernel


def bench_pair(name: str, rounds: int, steps: int):
    if name == "paper-1x":  # the paper's 1x shapes, at a CPU-sized batch of 4 x 256 tokens
        sparse_cfg = preset("paper-1x")
        sparse_cfg.train.batch_size = 4
    else:
        sparse_cfg = preset(f"{name}-sparse")
    dense_cfg = copy.deepcopy(sparse_cfg)
    dense_cfg.model.afrac = 1.0
    dense_cfg.sparsity.weight_density = dense_cfg.sparsity.other_density = 1.0
    B, T = sparse_cfg.train.batch_size, sparse_cfg.model.block_size
    g = torch.Generator().manual_seed(0)
    data = torch.randint(sparse_cfg.model.vocab_size, (B, T + 1), generator=g)
    x, y = data[:, :-1], data[:, 1:]
    runs = {"sparse": (*make(sparse_cfg), sparse_cfg), "dense": (*make(dense_cfg), dense_cfg)}
    variants = {"sparse": ("sparse", "fused"), "sparse, tensor AbsTopK": ("sparse", "tensor"),
                "sparse, fixed mask": ("sparse", "fixed"), "dense": ("dense", "fused")}
    times = {k: [] for k in variants}
    faults = {k: [] for k in variants}
    for r, abstopk in variants.values():  # warm-up (and the kernel's compilation)
        time_steps(*runs[r], x, y, 2, abstopk)
    for _ in range(rounds):
        for k, (r, abstopk) in variants.items():
            dt, pf = time_steps(*runs[r], x, y, steps, abstopk)
            times[k].append(dt)
            faults[k].append(pf)
    med = {k: statistics.median(v) for k, v in times.items()}
    ms = {k: f"{v * 1e3:.1f} ms ({B * T / v:,.0f} tok/s)" for k, v in med.items()}
    print(f"{name}: {B}x{T} tokens/step | sparse step {ms['sparse']} | dense step "
          f"{ms['dense']} | sparse/dense = {med['sparse'] / med['dense']:.3f} | with AbsTopK "
          f"in tensor operations: {ms['sparse, tensor AbsTopK']}, "
          f"{med['sparse, tensor AbsTopK'] / med['dense']:.3f} | with a fixed mask instead of "
          f"selecting: {ms['sparse, fixed mask']}, {med['sparse, fixed mask'] / med['dense']:.3f}"
          f" | page faults per step: sparse {statistics.median(faults['sparse']):,.0f}, dense "
          f"{statistics.median(faults['dense']):,.0f}")

    # Projection alone, same weights: the fused CPU kernel training uses, the same projection in
    # tensor operations with a k-th-value threshold, and with a plain per-tensor torch.topk.
    model, _, sp, _ = runs["sparse"]
    saved = {t.name: t.param.detach().clone() for t in sp.tensors}
    noise = torch.Generator().manual_seed(1)
    selections = {"fused": None, "threshold": topk_mask, "torch.topk": topk_mask_sort}
    proj = {k: [] for k in selections}
    for _ in range(rounds):
        for label, select in selections.items():
            with torch.no_grad():  # dense perturbation, as after an Adam step
                for t in sp.tensors:
                    t.param.copy_(saved[t.name] + 1e-3 * torch.randn(t.param.shape, generator=noise))
            t0 = time.perf_counter()
            sp.project(1.0, select=select)
            proj[label].append(time.perf_counter() - t0)
    pm = {k: statistics.median(v) for k, v in proj.items()}
    print(f"{name}: projection of {sum(t.param.numel() for t in sp.tensors):,} weights | fused "
          f"kernel {pm['fused'] * 1e3:.2f} ms | threshold in tensor ops "
          f"{pm['threshold'] * 1e3:.2f} ms | torch.topk {pm['torch.topk'] * 1e3:.2f} ms | "
          f"topk/fused = {pm['torch.topk'] / pm['fused']:.2f} | projection is "
          f"{pm['fused'] / med['sparse']:.1%} of the sparse step")


def bench_large_tensor(rounds: int):
    """One paper-sized matrix (d_model 1024 MLP: 4096 x 1024), where selection cost matters."""
    w = torch.randn(4096, 1024)
    s = w.abs()
    k = w.numel() // 64
    assert torch.equal(topk_mask(s, k).sum(), topk_mask_sort(s, k).sum())
    out = {}
    for label, select in (("threshold", topk_mask), ("torch.topk", topk_mask_sort)):
        select(s, k)
        ts = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            select(s, k)
            ts.append(time.perf_counter() - t0)
        out[label] = statistics.median(ts)
    print(f"4096x1024 matrix at density 1/64 | threshold {out['threshold'] * 1e3:.1f} ms | "
          f"torch.topk {out['torch.topk'] * 1e3:.1f} ms | topk/threshold = "
          f"{out['torch.topk'] / out['threshold']:.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "paper-1x"])
    ap.add_argument("--system-malloc", action="store_true",
                    help="leave glibc's allocator as it is (train keeps freed memory on the CPU)")
    a = ap.parse_args()
    kept = False if a.system_malloc else keep_freed_memory()  # as `train` does on the CPU
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"{platform.processor() or platform.platform()}, freed memory kept for reuse: {kept}")
    for name in a.presets:
        bench_pair(name, a.rounds, a.steps)
    bench_large_tensor(a.rounds)


if __name__ == "__main__":
    main()
