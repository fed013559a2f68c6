"""Is the default circuit search converged? The same search with twice the mask-training
steps, on every demo task of a model (default: the shipped sparse one), side by side.

    python bench/bench_prune_steps.py [--run RUN_DIR] [--tasks TASK ...] [--factor 2]
                                      [--budget 8] [--jobs 2] [--set KEY=VALUE ...]

For each task, the default search (`prune`'s: `--budget` trials of `PruneConfig`) runs at its
default steps and at `--factor` times as many; prints nodes, edges, the val loss calibrated and
uncalibrated, the test-split loss of the circuit (what validation reports), the wall time of
each search, the edges each trial's circuit has (the search keeps the smallest) and the
relative change in edges. Converged means a change of at most 15%. `--set` changes a pruning
setting of both searches (e.g. `--set train_pairs=1024`), to measure a lever.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import torch

from sparsecircuits.circuits import PretrainingStats, PruneConfig, open_run
from sparsecircuits.circuits.search import DEFAULT_BUDGET, search, test_losses
from sparsecircuits.demo import shipped_runs
from sparsecircuits.errors import UserError

# the tasks the demo prunes on the shipped pair: both models reach 0.15 on the test split and
# neither model's empty circuit does (docs/RESULTS.md, "Circuits with the trusted search")
DEMO_TASKS = ("indent_for", "lambda_func", "var_if", "while_return_true")
CONVERGED = 0.15


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None, help="a run folder (default: the shipped sparse model)")
    ap.add_argument("--tasks", nargs="+", default=list(DEMO_TASKS))
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="a pruning setting for both searches, e.g. train_pairs=1024")
    a = ap.parse_args()
    run = a.run or shipped_runs()[0]
    model, tok, corpus = open_run(run)
    stats = PretrainingStats.cached(model, corpus)
    try:
        base = PruneConfig.from_dict({k: float(v) if "." in v else int(v)
                                      for k, v in (kv.split("=", 1) for kv in a.set)})
    except (ValueError, UserError) as e:
        ap.error(f"--set takes KEY=NUMBER pairs of pruning settings ({e})")
    print(f"{run}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}; search: {a.budget} trials, {a.jobs or 'default'} jobs"
          + (f"; settings {' '.join(a.set)}" if a.set else ""))
    print(f"{'task':<20} {'steps':>5} {'nodes':>6} {'edges':>6} {'val':>6} {'val unc.':>8} "
          f"{'test':>6} {'test unc.':>9} {'seconds':>8}")
    for name in a.tasks:
        edges = []
        for steps in (base.steps, round(base.steps * a.factor)):
            t0 = time.perf_counter()
            found = search(model, tok, name, (base.target_loss,), replace(base, steps=steps),
                           budget=a.budget, jobs=a.jobs, stats=stats, log=None)
            dt = time.perf_counter() - t0
            c = found.circuits[base.target_loss]
            per_trial = [(r["targets"][str(base.target_loss)] or {}).get("edges", "-")
                         for r in found.trials]
            print(f"{'':<20} {steps:>5} edges per trial: {per_trial}", flush=True)
            if c is None:
                print(f"{name:<20} {steps:>5} no circuit reaches {base.target_loss} "
                      f"({dt:.0f} s)", flush=True)
                edges.append(None)
                continue
            held = test_losses(c, model, tok, stats)
            test, test_raw = held["test_loss"], held["test_loss_uncalibrated"]
            print(f"{name:<20} {steps:>5} {c.num_nodes:>6} {c.num_edges:>6} {c.loss:>6.3f} "
                  f"{c.loss_uncalibrated:>8.3f} {test:>6.3f} {test_raw:>9.3f} {dt:>8.0f}",
                  flush=True)
            edges.append(c.num_edges)
        if None not in edges:
            change = abs(edges[1] - edges[0]) / max(edges[0], 1)
            print(f"{name:<20} edges change {change:.0%} with {a.factor:g}x the steps: "
                  f"{'converged' if change <= CONVERGED else 'NOT converged'}", flush=True)


if __name__ == "__main__":
    main()
