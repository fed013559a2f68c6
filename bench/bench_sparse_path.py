"""The sparse execution path against the dense one, side by side in one run: a forward pass and
a mask-training step, on the shipped sparse model and on a synthetic release-format model of
one of the paper's shapes (default: d_model 2048 with matrices at 1/1024; the paper's other,
d_model 256 at 1/8; d_mlp 4 x d_model, heads of 16, AbsTopK 1/4).

    python bench/bench_sparse_path.py [--layers 2] [--d-model 2048] [--density 0.0009765625]
                                      [--rounds 3] [--no-shipped]

Each model runs with every linear layer dense, every one sparse, and `auto` (`GPT.auto_path`'s
rule per layer), in interleaved rounds after one uncounted warm-up round; medians. Also the
multiply-adds of the linear layers per token: dense, and the nonzeros' minimum (what the
sparse path does).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sparsecircuits.circuits import NodeLayout, PretrainingStats, PruneConfig
from sparsecircuits.circuits.pruning import TaskSplit, resolve_values, train_masks
from sparsecircuits.circuits.search import frozen, open_run
from sparsecircuits.demo import shipped_runs
from sparsecircuits.importers import import_circuit_sparsity
from sparsecircuits.model import Linear
from sparsecircuits.tasks import get_task

sys.path.insert(0, str(Path(__file__).parent))
from bench_wide import synthetic_release  # noqa: E402


def macs(model) -> tuple[int, int]:
    lins = [m for m in model.modules() if isinstance(m, Linear)]
    return (sum(m.weight.numel() for m in lins), sum(int((m.weight != 0).sum()) for m in lins))


def measure(name, model, tok, corpus, rounds):
    stats = PretrainingStats.compute(model, corpus.train, windows=8)
    task = get_task("single_double_quote")
    cfg = PruneConfig(steps=2, train_pairs=64, val_pairs=64).validate()
    split = TaskSplit(model, tok, task, cfg)
    values = resolve_values(model, cfg, split, stats)
    x = torch.randint(0, model.cfg.vocab_size, (16, model.cfg.block_size))
    times = {}
    for i in range(rounds + 1):  # round 0 warms every path and is not counted
        for path in ("dense", "sparse", "auto"):
            model.set_path(path)
            with torch.no_grad():
                t = time.perf_counter()
                model(x)
                if i:
                    times.setdefault((path, "forward"), []).append(time.perf_counter() - t)
            with frozen(model):
                t = time.perf_counter()
                train_masks(model, split.train, values, cfg, NodeLayout(model), log=None)
                if i:
                    times.setdefault((path, "mask step"), []).append((time.perf_counter() - t) / 2)
    dense, nz = macs(model)
    print(f"\n{name}: linear multiply-adds per token {dense:,} dense, {nz:,} nonzero "
          f"({dense / max(nz, 1):.0f}x fewer)")
    for what in ("forward", "mask step"):
        base = statistics.median(times[("dense", what)])
        row = "  ".join(f"{p} {statistics.median(times[(p, what)]) * 1000:9.1f} ms "
                        f"({base / statistics.median(times[(p, what)]):5.1f}x)"
                        for p in ("dense", "sparse", "auto"))
        print(f"  {what:<10} {row}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--density", type=float, default=1 / 1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-shipped", action="store_true", help="skip the shipped model")
    a = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; forward: 16 x block_size "
          f"tokens; mask step: 16 pairs; speed-up against dense in brackets")
    shipped = Path(shipped_runs()[0])
    model, tok, corpus = open_run(shipped)
    if not a.no_shipped:
        measure("shipped sparse model (4 layers, d_model 128, 1/16)", model, tok, corpus,
                a.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic_release(tmp / "r", a.layers, a.d_model, a.density, 2048, 128,
                          shipped / "tokenizer.json")
        run = import_circuit_sparsity(tmp / "r", tmp / "run", corpus=corpus.path,
                                      log=lambda *x: None)
        model, tok, corpus = open_run(run)
        measure(f"synthetic ({a.layers} layers, d_model {a.d_model}, density {a.density:.4g})",
                model, tok, corpus, a.rounds)


if __name__ == "__main__":
    main()
