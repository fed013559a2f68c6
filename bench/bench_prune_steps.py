"""Circuit size against mask-training length, in a sparse and a dense model (default: the
shipped ones): how much of the sparse vs dense gap is the short (CPU-sized) pruning runs?

    python bench/bench_prune_steps.py [--task while_return_true] [--steps 100 400]
                                      [--targets 0.3 0.15] [--threads 1]
                                      [--runs SPARSE_RUN DENSE_RUN]

For each model and step count, one pruning run (the paper's centre settings, `--budget 1` in
`prune` and `compare`) is bisected at every target; prints nodes and edges per target, the
seconds taken, and the dense/sparse edge ratio per step count.
"""

from __future__ import annotations

import argparse
import time

import torch

from sparsecircuits.circuits import open_run
from sparsecircuits.circuits.ablation import PretrainingStats
from sparsecircuits.circuits.pruning import PruneConfig
from sparsecircuits.demo import shipped_runs
from sparsecircuits.study.compare import task_frontier
from sparsecircuits.tasks import get_task


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="while_return_true")
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.15])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", nargs=2, metavar=("SPARSE_RUN", "DENSE_RUN"), default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    task = get_task(a.task)
    edges = {}
    print(f"{'model':<7} {'steps':>5} " + " ".join(f"{'at ' + str(t):>18}" for t in a.targets)
          + f" {'seconds':>8}")
    for name, run in zip(("sparse", "dense"), a.runs or shipped_runs()):
        model, tok, corpus = open_run(run)
        stats = PretrainingStats.cached(model, corpus, log=None)
        for steps in a.steps:
            t0 = time.perf_counter()
            r = task_frontier(model, tok, task, stats, tuple(a.targets), PruneConfig(steps=steps),
                              log=None)
            cells = []
            for t in a.targets:
                c = r["targets"][str(t)]
                cells.append(f"{c['nodes']} n, {c['edges']} e" if c else "not reached")
                edges[(name, steps, t)] = c and c["edges"]
            print(f"{name:<7} {steps:>5} " + " ".join(f"{x:>18}" for x in cells)
                  + f" {time.perf_counter() - t0:>8.0f}", flush=True)
    for steps in a.steps:
        ratios = [f"{edges[('dense', steps, t)] / edges[('sparse', steps, t)]:.1f}x at {t}"
                  for t in a.targets if edges[("dense", steps, t)] and edges[("sparse", steps, t)]]
        print(f"dense/sparse edges, {steps} steps: {', '.join(ratios) or 'none'}")


if __name__ == "__main__":
    main()
