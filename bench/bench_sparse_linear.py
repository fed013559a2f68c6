"""Where the sparse product beats the dense one: a single linear layer of each shape and
weight density, 2,048 tokens, each path's best of 3 runs; prints sparse's speed-up.

    python bench/bench_sparse_linear.py

This sets `GPT.AUTO_DENSITY`, the density at or below which `auto` runs a layer sparse.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from sparsecircuits.model import Linear

SHAPES = [(512, 128), (128, 512), (2048, 2048), (8192, 2048)]
DENSITIES = [1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 256, 1 / 1024]


def best_of(lin, x, path: str, n: int = 3) -> float:
    lin.path = path
    lin(x)
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        lin(x)
        best = min(best, time.perf_counter() - t)
    return best


@torch.no_grad()
def main():
    torch.manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; 2,048 tokens; sparse speed-up")
    print(f"{'weight (out x in)':<18}" + "".join(f"{'1/' + str(round(1 / d)):>9}" for d in DENSITIES))
    for out_f, in_f in SHAPES:
        x = torch.randn(2048, in_f)
        row = []
        for d in DENSITIES:
            lin = Linear(in_f, out_f).requires_grad_(False)
            lin.weight.mul_(torch.rand_like(lin.weight) < d)
            row.append(f"{best_of(lin, x, 'dense') / best_of(lin, x, 'sparse'):8.1f}x")
        print(f"{f'{out_f} x {in_f}':<18}" + "".join(row))


if __name__ == "__main__":
    main()
