"""Circuit extraction by pruning (PAPER.md section 7).

One mask score tau per node, drawn from N(init_bias, init_scale^2) and clamped to [-1, 1]. The
forward pass keeps node i where tau_i >= 0 (a Heaviside step) and holds the others at their
ablation value; the backward pass uses the sigmoid-derivative surrogate sigma'(tau/T)/T. The
objective is task loss + k_coef * (number of kept nodes), minimised by AdamW over tau only: the
model's weights never change. Then the nodes are ranked by tau and a bisection finds the
smallest k whose top-k set, after a 16-step LBFGS logit scale-and-shift calibration, reaches the
target loss on held-out pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch

from ..errors import UserError
from ..tasks.core import Task
from ..tasks.metrics import TARGET_LOSS
from .ablation import ABLATIONS, PretrainingStats, ablation_values
from .nodes import NodeLayout
from .taskdata import TaskData, calibrate, logit_diffs, losses


@dataclass
class PruneConfig:
    target_loss: float = TARGET_LOSS
    ablation: str = "mean"         # "mean" (pretraining), "zero" or "task-mean"
    freeze_norm: bool = False      # replay the clean pass's RMSNorm scales in the pruned pass
    seed: int = 0
    steps: int = 100               # short runs for a CPU budget (replications use 500-2000)
    batch_pairs: int = 32          # the paper uses 64
    # Table 2 centres of the paper's hyperparameter search:
    k_coef: float = 1e-4
    init_bias: float = 0.1
    init_scale: float = 0.01
    lr: float = 3e-3
    weight_decay: float = 1e-3
    inv_beta2: float = 0.05
    warmup_frac: float = 0.05
    temperature: float = 1.0
    grad_clip: float = 1.0
    train_pairs: int = 256         # pairs the masks are trained on (train split)
    heldout_pairs: int = 128       # further train-split pairs the bisection is judged on
    calibrate: bool = True

    def validate(self) -> PruneConfig:
        if self.ablation not in ABLATIONS:
            raise UserError(f"unknown ablation '{self.ablation}'; use one of "
                            f"{', '.join(ABLATIONS)}.")
        if not self.target_loss > 0:
            raise UserError(f"target loss {self.target_loss} must be positive (the paper uses "
                            f"{TARGET_LOSS}).")
        for name in ("steps", "batch_pairs", "train_pairs", "heldout_pairs"):
            if getattr(self, name) < 1:
                raise UserError(f"pruning setting {name}={getattr(self, name)} must be at least 1.")
        return self

    def hyperparameters(self) -> dict:
        keep = {"k_coef", "init_bias", "init_scale", "lr", "weight_decay", "inv_beta2",
                "warmup_frac", "temperature", "grad_clip", "steps", "batch_pairs", "seed"}
        return {k: v for k, v in asdict(self).items() if k in keep}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class _Heaviside(torch.autograd.Function):
    """m = 1[tau >= 0]; dm/dtau = sigma'(tau / T) / T."""

    @staticmethod
    def forward(ctx, tau, temperature):
        ctx.save_for_backward(tau)
        ctx.temperature = temperature
        return (tau >= 0).to(tau.dtype)

    @staticmethod
    def backward(ctx, grad):
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau / ctx.temperature)
        return grad * s * (1 - s) / ctx.temperature, None


def heaviside(tau: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return _Heaviside.apply(tau, temperature)


def bisect_smallest(passes: Callable[[int], bool], lo: int, hi: int) -> int:
    """The smallest k in [lo, hi] with passes(k), assuming passes is monotone and passes(hi).
    Probes O(log(hi - lo)) values."""
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass
class PruneRun:
    """What one pruning run found: the ranking, the bisected size and its losses."""
    keep: torch.Tensor           # (total,) bool: the circuit
    scores: torch.Tensor         # (total,) final tau
    k: int                       # kept nodes
    trained_k: int               # nodes on at the end of mask training
    loss: float                  # held-out loss of the circuit, calibrated
    loss_uncalibrated: float
    scale: float
    shift: float
    full_loss: float             # held-out loss of the full model
    probes: list[tuple[int, float]]  # (k, calibrated loss) at every bisection probe
    seconds: float
    reached: bool                # False: no probed size reaches the target


class TaskSplit:
    """Train pairs for the masks, held-out pairs for the bisection; both from the train split."""

    MIN_PAIRS = 12

    def __init__(self, model, tok, task: Task, cfg: PruneConfig):
        n = cfg.train_pairs + cfg.heldout_pairs
        pairs = task.pairs(n, "train", seed=0, at_most=True)
        if len(pairs) < self.MIN_PAIRS:
            raise UserError(f"task '{task.name}' makes only {len(pairs)} distinct train pairs; "
                            f"pruning needs at least {self.MIN_PAIRS}: add templates or slot "
                            "values.")
        # a task with fewer pairs than asked keeps the asked-for train : held-out proportion
        n_train = round(len(pairs) * cfg.train_pairs / n)
        bs = model.cfg.block_size
        self.train = TaskData.from_pairs(tok, task.name, pairs[:n_train], bs)
        self.heldout = TaskData.from_pairs(tok, task.name, pairs[n_train:], bs)


def resolve_values(model, cfg: PruneConfig, split: TaskSplit,
                   stats: PretrainingStats | None) -> dict[str, torch.Tensor]:
    return ablation_values(cfg.ablation, model, stats=stats, task_idx=split.train.idx,
                           task_lengths=split.train.lengths)


def length_buckets(data: TaskData, batch_pairs: int, n: int = 4) -> list[torch.Tensor]:
    """Pair indices in up to n groups of similar length, each at least a batch: a batch drawn
    from one group pads little (prompt lengths of a task often vary twofold)."""
    pair_len = data.lengths.view(-1, 2).max(1).values
    order = torch.argsort(pair_len, stable=True)
    n = max(1, min(n, len(order) // max(1, batch_pairs)))
    return list(order.tensor_split(n))


def train_masks(model, data: TaskData, values, cfg: PruneConfig, layout: NodeLayout,
                log=print) -> torch.Tensor:
    """Mask training: returns the final scores tau (total,)."""
    g = torch.Generator().manual_seed(cfg.seed)
    tau = (cfg.init_bias + cfg.init_scale * torch.randn(layout.total, generator=g)).clamp_(-1, 1)
    tau.requires_grad_(True)
    opt = torch.optim.AdamW([tau], lr=cfg.lr, betas=(0.9, 1 - cfg.inv_beta2),
                            weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup_frac * cfg.steps))

    def lr_factor(step):  # linear warmup, then linear decay to zero
        return (step + 1) / warm if step < warm else max(0.0, (cfg.steps - step) / (cfg.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    buckets = length_buckets(data, cfg.batch_pairs)
    sizes = torch.tensor([len(b) for b in buckets], dtype=torch.float)
    for step in range(cfg.steps):
        bucket = buckets[int(torch.multinomial(sizes, 1, generator=g))]
        pick = bucket[torch.randint(len(bucket), (min(cfg.batch_pairs, len(bucket)),), generator=g)]
        rows = torch.stack([2 * pick, 2 * pick + 1], 1).reshape(-1)
        batch = data.rows(rows)
        m = heaviside(tau, cfg.temperature)
        d = logit_diffs(model, batch, layout.split(m), values, cfg.freeze_norm, batch=len(batch))
        task_loss = losses(d, batch.sign).mean()
        loss = task_loss + cfg.k_coef * m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([tau], cfg.grad_clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            tau.clamp_(-1, 1)
        if log and (step + 1) % max(1, cfg.steps // 5) == 0:
            log(f"  step {step + 1}/{cfg.steps}: task loss {task_loss.item():.3f}, "
                f"{int(m.sum())} nodes on")
    return tau.detach()


@torch.no_grad()
def bisect_circuit(model, data: TaskData, values, scores: torch.Tensor, cfg: PruneConfig,
                   layout: NodeLayout, probes: dict | None = None):
    """Smallest top-k-by-score set reaching the target after calibration on `data`.

    `probes` caches (k -> losses) for one ranking: pass the same dict to bisect the same scores
    for several targets, and every size already measured is reused.
    """
    order = torch.argsort(-scores, stable=True)
    probes = {} if probes is None else probes

    def measure(k):
        if k not in probes:
            keep = torch.zeros(layout.total)
            keep[order[:k]] = 1.0
            d = logit_diffs(model, data, layout.split(keep), values, cfg.freeze_norm)
            raw = float(losses(d, data.sign).mean())
            scale, shift = calibrate(d, data.sign) if cfg.calibrate else (1.0, 0.0)
            probes[k] = (float(losses(d, data.sign, scale, shift).mean()), raw, scale, shift)
        return probes[k]

    # Probe a doubling grid up to the first passing size, then bisect below it. The full set
    # may fail where a subset passes (a control task the model never learnt), so a failing
    # full model does not end the search.
    passes = lambda k: measure(k)[0] <= cfg.target_loss  # noqa: E731
    prev, k = 0, 1
    while not passes(min(k, layout.total)) and k < layout.total:
        prev, k = k, 2 * k
    k = min(k, layout.total)
    reached = passes(k)
    if reached:
        k = 0 if passes(0) else bisect_smallest(passes, prev + 1, k)
    keep = torch.zeros(layout.total, dtype=torch.bool)
    keep[order[:k]] = True
    return keep, k, measure(k), sorted((k_, v[0]) for k_, v in probes.items()), reached


@torch.no_grad()
def empty_circuit_loss(model, split: TaskSplit, values, cfg: PruneConfig) -> float:
    """The held-out loss with every node ablated, judged as the bisection judges a circuit:
    what the embeddings, the bigram table and the unembedding do alone. At or below the
    target, the task's circuit is empty: the last token gives the answer away."""
    layout = NodeLayout(model)
    d = logit_diffs(model, split.heldout, layout.split(torch.zeros(layout.total)), values,
                    cfg.freeze_norm)
    scale, shift = calibrate(d, split.heldout.sign) if cfg.calibrate else (1.0, 0.0)
    return float(losses(d, split.heldout.sign, scale, shift).mean())


def prune_run(model, split: TaskSplit, values, cfg: PruneConfig, log=print) -> PruneRun:
    t0 = time.perf_counter()
    layout = NodeLayout(model)
    scores = train_masks(model, split.train, values, cfg, layout, log)
    t1 = time.perf_counter()
    keep, k, (loss, raw, scale, shift), probes, reached = bisect_circuit(
        model, split.heldout, values, scores, cfg, layout)
    full = float(losses(logit_diffs(model, split.heldout), split.heldout.sign).mean())
    if log:
        log(f"  masks {t1 - t0:.1f}s, bisection {time.perf_counter() - t1:.1f}s "
            f"({len(probes)} probes)")
    return PruneRun(keep, scores, k, int((scores >= 0).sum()), loss, raw, scale, shift, full,
                    probes, time.perf_counter() - t0, reached)
