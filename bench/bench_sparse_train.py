"""What a training step costs as the model widens at a fixed nonzero count, and what of it a
step on the weights' nonzeros could save: side by side in one run.

    python bench/bench_sparse_train.py [--widths 1 2 4 8] [--batch 32] [--rounds 3]

The small preset's model (4 layers, d_model 128, d_mlp 512, matrices at 1/16) is widened by
each factor w with the matrix density divided by w^2, so every matrix keeps the same number
of nonzeros (min_per_neuron 0 throughout: at 8x there is less than one weight per neuron).
For each width:

- the masked-dense training step the trainer runs today (forward, backward, Adam, projection);
- the part of it spent in the linear layers' three products (output, input gradient, weight
  gradient), timed alone at the model's shapes;
- the same three products on the nonzeros: the output and the input gradient through a CSR
  copy (`torch.sparse.mm`), the weight gradient only at the kept weights
  (`torch.sparse.sampled_addmm`), as a step that keeps no dense weight would compute them.

The last column, the masked-dense step with its linear products swapped for the sparse ones,
is an estimate of a sparse step (it is not a step the trainer can take); everything else in
the step (embeddings, norms, AbsTopK over the wider activations, attention, Adam) is left at
its measured cost, which grows with width whatever the weights' format.
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


def linear_products(model: GPT, tokens: int, rounds: int) -> tuple[float, float]:
    """(dense, sparse) ms of every linear layer's output, input gradient and weight gradient."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            w = m.weight.detach()
            x = torch.randn(tokens, w.shape[1], generator=g)
            gy = torch.randn(tokens, w.shape[0], generator=g)
            cases.append((w, w.to_sparse_csr(), w.t().contiguous().to_sparse_csr(), x, gy))

    def dense():
        for w, _, _, x, gy in cases:
            x @ w.t(), gy @ w, gy.t() @ x

    def sparse():
        for _, csr, csr_t, x, gy in cases:
            torch.sparse.mm(csr, x.t())                      # output, (out, tokens)
            torch.sparse.mm(csr_t, gy.t())                   # input gradient, (in, tokens)
            torch.sparse.sampled_addmm(csr, gy.t(), x, beta=0.0)  # kept weights' gradient
    return median_ms(dense, rounds), median_ms(sparse, rounds)


def measure_width(w: int, batch: int, rounds: int) -> None:
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
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=0.1)
    tc = TrainConfig(batch_size=batch)
    x = torch.randint(0, 2048, (batch, 128))
    y = torch.randint(0, 2048, (batch, 128))
    model.train()
    step = median_ms(lambda: training_step(model, opt, sp, model.decay_params(), x, y,
                                           lr=1e-3, next_frac=1.0, tc=tc), rounds)
    dense, sparse = linear_products(model, batch * 128, rounds)
    est = step - dense + sparse
    print(f"{w:>5}x {d:>8} {sp_cfg.weight_density:>9.3g} {nonzeros:>9,} | "
          f"{step:>15.0f} ms {dense:>17.0f} ms {sparse:>13.0f} ms | "
          f"{est:>19.0f} ms ({step / est:.2f}x)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; a step of {a.batch} x 128 "
          f"tokens; medians of {a.rounds}")
    print(f"{'width':>6} {'d_model':>8} {'density':>9} {'nonzeros':>9} | {'masked-dense step':>18} "
          f"{'its linear products':>20} {'sparse products':>16} | {'estimated sparse step':>22}")
    for w in a.widths:
        measure_width(w, a.batch, a.rounds)

if __name__ == "__main__":
    main()
