"""What watching a circuit costs: a monitored forward pass against a plain one, side by side.

    python bench/bench_monitor.py [--task while_return_true] [--batch 32] [--rounds 7]

On the shipped sparse model with its study circuit for the task: a batch of the standard
library's val windows, last position watched (the default), in interleaved rounds: plain
forward, cheap mode (node activations, engagement, anomaly) and full mode (plus the
circuit-alone pass). Prints the median of each and its ratio to the plain pass; the target for
the cheap mode is 1.3x.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from sparsecircuits.circuits.search import open_run
from sparsecircuits.demo import shipped_runs
from sparsecircuits.monitor import monitor
from sparsecircuits.train import val_windows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="while_return_true")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    run = shipped_runs()[0]
    circuit = Path(run).parent / "study" / "circuits" / a.task / "sparse.json"
    model, tok, corpus = open_run(run)
    x = val_windows(corpus.val, a.batch, model.cfg.block_size)[:, :-1]
    print(f"{run}, circuit {circuit.parent.name}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"batch {tuple(x.shape)}, {a.rounds} interleaved rounds")
    times = {"plain": [], "cheap": [], "full": []}

    def timed(name):
        t = time.perf_counter()
        model(x)
        times[name].append(time.perf_counter() - t)

    with torch.no_grad():
        with monitor(model, [circuit], tok=tok, corpus=corpus, log=None):
            model(x)  # warm up; the circuit's reference is measured once and kept
        for _ in range(a.rounds):
            timed("plain")
            for name, full in (("cheap", False), ("full", True)):
                with monitor(model, [circuit], tok=tok, corpus=corpus, full=full, log=None):
                    timed(name)
    base = statistics.median(times["plain"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:<6} {m * 1000:8.1f} ms   {m / base:5.2f}x plain")


if __name__ == "__main__":
    main()
