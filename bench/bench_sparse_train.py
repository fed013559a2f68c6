"""What a training step costs as the model widens at a fixed nonzero count, on the dense
weights and on the kept weights alone (`train.path = "sparse"`): side by side in one run.

    python bench/bench_sparse_train.py [--widths 1 2 4 8] [--batch 32] [--rounds 3]

The small preset's model (4 layers, d_model 128, d_mlp 512, matrices at 1/16) is widened by
each factor w with the matrix density divided by w^2, so every matrix keeps the same number
of nonzeros (min_per_neuron 0 throughout: at 8x there is less than one weight per neuron).
For each width, after the anneal:

- the paper's step (`regrow_every` 1): forward, backward, Adam and projection over the dense
  weights, the pruned ones free to come back;
- the same step with only the kept weights learning (`regrow=False`), still over the dense
  weights: what the trainer computes between regrowth steps on `train.path = "dense"`;
- that step on the kept weights alone (`train.path = "sparse"`, `pattern.KeptWeights`): the
  linear layers' products on CSR copies, Adam on the values, no projection of the matrices;
- the one-off cost of taking up the pattern after a regrowth step;
- the mean step with regrowth every N steps (`--regrow-every`, default 100): N - 1 steps on the
  kept weights, one paper's step, one take-up, against the masked-dense run of the same rule.

Everything the weights' format does not touch (embeddings, norms, AbsTopK over the wider
activations, attention) is in every column at its measured cost.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch

from sparsecircuits.config import ModelConfig, SparsityConfig, TrainConfig
from sparsecircuits.model import GPT
from sparsecircuits.pattern import KeptWeights
from sparsecircuits.sparsity import WeightSparsifier
from sparsecircuits.train import training_step

warnings.simplefilter("ignore", UserWarning)  # torch calls its CSR support beta


def median_ms(fn, rounds: int) -> float:
    fn()  # warm
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure_width(w: int, batch: int, rounds: int, regrow_every: int) -> None:
    d = 128 * w
    cfg = ModelConfig(n_layer=4, d_model=d, d_head=16, d_mlp=4 * d, vocab_size=2048,
                      block_size=128)
    sp_cfg = SparsityConfig(weight_density=1 / 16 / w ** 2, other_density=1 / 4,
                            min_per_neuron=0, anneal_start=0.0, anneal_end=0.0)
    torch.manual_seed(0)
    model = GPT(cfg)
    sp = WeightSparsifier(model.sparse_tensors(), sp_cfg)
    sp.project(1.0)
    nonzeros = sum(int((t.param != 0).sum()) for t in sp.tensors if t.group == "matrix")
    tc = TrainConfig(batch_size=batch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(tc.beta1, tc.beta2), eps=tc.eps)
    x = torch.randint(0, 2048, (batch, 128))
    y = torch.randint(0, 2048, (batch, 128))
    model.train()

    def step(regrow=True, kept=None):
        training_step(model, opt, sp, model.decay_params(), x, y, lr=1e-3, next_frac=1.0,
                      tc=tc, regrow=regrow, kept_weights=kept)

    paper = median_ms(step, rounds)
    masked = median_ms(lambda: step(regrow=False), rounds)
    takeups = []

    def take_up():
        t = time.perf_counter()
        kw = KeptWeights(model, opt, sp.tensors, (tc.beta1, tc.beta2), tc.eps)
        takeups.append(time.perf_counter() - t)
        return kw
    kept = take_up()
    sparse = median_ms(lambda: step(regrow=False, kept=kept), rounds)
    kept.release()
    for _ in range(rounds - 1):
        take_up().release()
    take = statistics.median(takeups) * 1e3
    n = regrow_every
    mean_masked = ((n - 1) * masked + paper) / n
    mean_sparse = ((n - 1) * sparse + paper + take) / n
    print(f"{w:>5}x {d:>8} {sp_cfg.weight_density:>9.3g} {nonzeros:>9,} | {paper:>8.0f} ms "
          f"{masked:>10.0f} ms {sparse:>10.0f} ms ({masked / sparse:>5.2f}x) {take:>8.0f} ms | "
          f"{mean_masked:>9.0f} ms {mean_sparse:>9.0f} ms ({mean_masked / mean_sparse:.2f}x)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--regrow-every", type=int, default=100)
    a = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; a step of {a.batch} x 128 "
          f"tokens; medians of {a.rounds}")
    print(f"{'':>35} | {'paper':>11} {'kept weights learn':>30} {'take-up':>11} | "
          f"mean step, regrowth every {a.regrow_every}")
    print(f"{'width':>6} {'d_model':>8} {'density':>9} {'nonzeros':>9} | {'step':>11} "
          f"{'masked':>13} {'sparse':>13} {'':>8} {'':>11} | {'masked':>12} {'sparse':>12}")
    for w in a.widths:
        measure_width(w, a.batch, a.rounds, a.regrow_every)


if __name__ == "__main__":
    main()
