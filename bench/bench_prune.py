"""Pruning time and circuit size on a trained model: one default run vs the built-in search,
side by side in one process.

    python bench/bench_prune.py RUN_DIR [--task single_double_quote] [--budget 8]

Prints, for `--budget 1` (the paper's Table-2 centres, one run) and for the default search,
the wall time (node statistics cached first, as after a model's first pruning), the circuit's
nodes and edges, and its held-out loss before and after calibration.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from sparsecircuits.circuits import PretrainingStats, PruneConfig, find_circuit, open_run
from sparsecircuits.circuits.search import DEFAULT_BUDGET


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--task", default="single_double_quote")
    ap.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    a = ap.parse_args()
    model, tok, corpus = open_run(a.run_dir)
    stats = PretrainingStats.cached(model, corpus)
    print(f"{a.run_dir}, task {a.task}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'setting':<28} {'seconds':>8} {'nodes':>6} {'edges':>6} {'loss':>6} {'uncal.':>7}")
    for name, budget in (("single default run", 1), (f"search, budget {a.budget}", a.budget)):
        t = time.perf_counter()
        c = find_circuit(model, tok, a.task, PruneConfig(), budget=budget, stats=stats, log=None)
        dt = time.perf_counter() - t
        print(f"{name:<28} {dt:>8.1f} {c.num_nodes:>6} {c.num_edges:>6} {c.loss:>6.3f} "
              f"{c.loss_uncalibrated:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
