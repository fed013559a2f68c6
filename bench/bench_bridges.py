"""What bridges cost: a bridged training step against the unbridged sparse step of the same
shapes, side by side in one run (interleaved rounds, ratio of medians).

Timed, on a sparse and a dense model of the shipped pair's shapes (random weights: the cost
does not depend on the values) at one batch:

  plain        the sparse model's training step (CE, backward, Adam, projection)
  bridged      the joint step: CE + NMSE both ways + KL of every single-switch hybrid pass
  kl_sites=K   the joint step drawing K locations per step for the hybrid passes
  frozen       the `bridge` step: both models frozen, only the bridges train

and the cost per location: (bridged - plain) / locations. The hybrid passes start at their
location (`GPT.forward(start=...)`), so the one at location i runs only the sublayers after it.

    python bench/bench_bridges.py [--rounds 5] [--batch 8] [--preset small]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from sparsecircuits.bridges.core import BridgeConfig, Bridges, bridged_loss, kl_locations
from sparsecircuits.config import preset
from sparsecircuits.memory import keep_freed_memory
from sparsecircuits.model import GPT
from sparsecircuits.sparsity import WeightSparsifier
from sparsecircuits.train import training_step


def build(preset_name: str, batch: int):
    sparse_cfg = preset(f"{preset_name}-sparse")
    sparse_cfg.train.batch_size = batch
    dense_cfg = copy.deepcopy(preset(f"{preset_name}-dense"))
    dense_cfg.model.d_model, dense_cfg.model.d_mlp = 32, 128   # the shipped dense baseline
    torch.manual_seed(0)
    sparse, dense = GPT(sparse_cfg.model), GPT(dense_cfg.model).requires_grad_(False)
    sp = WeightSparsifier(sparse.sparse_tensors(), sparse_cfg.sparsity)
    sp.project(1.0)
    bridges = Bridges(sparse.resid_names(), sparse.cfg.d_model, dense.cfg.d_model)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(sparse_cfg.model.vocab_size, (batch, sparse_cfg.model.block_size + 1),
                         generator=g)
    return sparse_cfg, sparse, dense, sp, bridges, data[:, :-1], data[:, 1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--kl-sites", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    keep_freed_memory()
    cfg, sparse, dense, sp, bridges, x, y = build(a.preset, a.batch)
    n = len(bridges.locations)
    tc = cfg.train

    def opt(params):
        return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.95), eps=0.1)

    joint_opt = opt([dict(params=list(sparse.parameters())), dict(params=list(bridges.parameters()))])
    plain_opt = opt(list(sparse.parameters()))
    frozen_opt = opt(list(bridges.parameters()))

    def bridged_fn(k, step=0):
        bcfg = BridgeConfig("bench", "", kl_sites=k)
        return lambda xx, yy: bridged_loss(sparse, dense, bridges, xx, yy, bcfg,
                                           kl_locations(n, bcfg, 0, step))

    cases = {"plain": lambda: training_step(sparse, plain_opt, sp, sparse.decay_params(), x, y,
                                            lr=1e-4, next_frac=1.0, tc=tc),
             "bridged": lambda: training_step(sparse, joint_opt, sp, sparse.decay_params(), x, y,
                                              lr=1e-4, next_frac=1.0, tc=tc, loss_fn=bridged_fn(0))}
    for k in a.kl_sites:
        cases[f"kl_sites={k}"] = (lambda k=k: training_step(
            sparse, joint_opt, sp, sparse.decay_params(), x, y, lr=1e-4, next_frac=1.0, tc=tc,
            loss_fn=bridged_fn(k)))

    def frozen():
        sparse.requires_grad_(False)
        try:
            training_step(sparse, frozen_opt, None, [], x, y, lr=1e-4, next_frac=1.0, tc=tc,
                          loss_fn=bridged_fn(0))
        finally:
            sparse.requires_grad_(True)
    cases["frozen"] = frozen

    for fn in cases.values():  # warm up
        fn()
    times = {name: [] for name in cases}
    for _ in range(a.rounds):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{a.preset} shapes: sparse d_model {sparse.cfg.d_model}, dense d_model "
          f"{dense.cfg.d_model}, {sparse.cfg.n_layer} layers, {n} bridged locations; batch "
          f"{a.batch} x {cfg.model.block_size} tokens; {a.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads, {platform.machine()}")
    print(f"{'step':<14} {'median s':>9} {'x plain':>8}")
    for name, t in med.items():
        print(f"{name:<14} {t:>9.3f} {t / med['plain']:>8.2f}")
    print(f"cost per bridged location (all hybrid passes): "
          f"{(med['bridged'] - med['plain']) / n:.3f} s, "
          f"{(med['bridged'] - med['plain']) / n / med['plain']:.2f} x plain")


if __name__ == "__main__":
    main()
