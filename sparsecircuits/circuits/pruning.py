"""Circuit extraction by pruning (PAPER.md section 7).

One mask score tau per node, drawn from N(init_bias, init_scale^2) and clamped to [-1, 1]. The
forward pass keeps node i where tau_i >= 0 (a Heaviside step) and holds the others at their
ablation value; the backward pass uses the sigmoid-derivative surrogate sigma'(tau/T)/T. The
objective is task loss + k_coef * (number of kept nodes), minimised by AdamW over tau only: the
model's weights never change. Then the nodes are ranked (the kept ones by tau; the others
twice, by how much switching each one back on would lower the train loss and by mean tau) and
a bisection of each ranking finds the smallest k whose top-k set reaches the target loss on
the val pairs (words and templates the masks never saw) after a bounded temperature
calibration (`taskdata.calibrate`), and is no worse than the empty circuit before it.
`search.py` runs this for a list of targets over a set of trials; it is the one place circuits
are found.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch

from ..errors import UserError
from ..tasks.core import Task
from ..tasks.metrics import TARGET_LOSS
from .ablation import Ablation, PretrainingStats, ablation_values
from .nodes import NodeLayout
from .taskdata import (Resample, TaskData, all_activations, calibrate, logit_diffs, losses,
                       scale_bound)


@dataclass
class PruneConfig:
    """How one circuit is found: ablation, mask training, the pairs, the target. A `Circuit`
    carries the one it was found with."""
    target_loss: float = TARGET_LOSS
    ablation: Ablation = Ablation.MEAN
    freeze_norm: bool = False      # replay the clean pass's RMSNorm scales in the pruned pass
    seed: int = 0
    # Mask training long enough to converge on a CPU budget (docs/CIRCUITS.md, "Pruning"): at
    # the paper's Table-2 centres (k_coef 1e-4, lr 3e-3) 100 steps let tau travel about 0.15,
    # so the kept count was still falling; here tau can cross its whole range [-1, 1].
    steps: int = 150
    batch_pairs: int = 16          # the paper uses 64; more steps of fewer pairs, same cost
    k_coef: float = 1e-3
    lr: float = 0.1
    # the rest at the paper's Table-2 centres:
    init_bias: float = 0.1
    init_scale: float = 0.01
    weight_decay: float = 1e-3
    inv_beta2: float = 0.05
    warmup_frac: float = 0.05
    temperature: float = 1.0
    grad_clip: float = 1.0
    train_pairs: int = 256         # pairs the masks are trained on (the train split)
    val_pairs: int = 256           # pairs the bisection judges on (the val split)
    calibrate: bool = True         # fit a bounded temperature (taskdata.calibrate)

    def __post_init__(self):
        self.ablation = Ablation.parse(self.ablation)

    def validate(self) -> PruneConfig:
        if not 0 < self.target_loss < math.log(2):
            raise UserError(f"target loss {self.target_loss} must be above 0 and below chance, "
                            f"ln 2 = {math.log(2):.3f} (the paper uses {TARGET_LOSS}).")
        for name in ("steps", "batch_pairs", "train_pairs", "val_pairs"):
            if getattr(self, name) < 1:
                raise UserError(f"pruning setting {name}={getattr(self, name)} must be at least 1.")
        return self

    def to_dict(self) -> dict:
        return {**asdict(self), "ablation": self.ablation.value}

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        unknown = set(d) - set(cls.field_names())
        if unknown:
            raise UserError(f"unknown pruning settings {sorted(unknown)}; valid: "
                            f"{', '.join(cls.field_names())}.")
        return cls(**d)

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


def bisect_smallest(passes: Callable[[int], bool], lo: int, hi: int, slack: int = 0) -> int:
    """The smallest k in [lo, hi] with passes(k), assuming passes is monotone and passes(hi);
    with `slack`, a passing k at most `slack` above it. Probes O(log((hi - lo) / (slack + 1)))
    values."""
    while hi - lo > slack:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


class TaskSplit:
    """The two pair sets pruning sees, from disjoint words and templates: `train` for the
    masks, `val` for the bisection. The test split is for validation and every reported
    figure, and pruning never sees it."""

    MIN_PAIRS = 12

    def __init__(self, model, tok, task: Task, cfg: PruneConfig):
        bs = model.cfg.block_size
        for split, n in (("train", cfg.train_pairs), ("val", cfg.val_pairs)):
            pairs = task.pairs(n, split, seed=0, at_most=True)
            if len(pairs) < self.MIN_PAIRS:
                raise UserError(f"task '{task.name}' makes only {len(pairs)} distinct {split} "
                                f"pairs; pruning needs at least {self.MIN_PAIRS}: add templates "
                                "or slot values.")
            setattr(self, split, TaskData.from_pairs(tok, task.name, pairs, bs))


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


@dataclass
class MaskTraining:
    scores: torch.Tensor                        # (total,) final tau
    curve: list[tuple[int, float, int]]         # (step, task loss, nodes on), 20 points
    mean_scores: torch.Tensor | None = None     # (total,) tau averaged over the steps
    gain: torch.Tensor | None = None            # (total,) `switch_gain` at the trained set

    def order(self, by_gain: bool = True) -> torch.Tensor:
        """Nodes from most to least kept: the trained set (tau >= 0) by final tau, then the
        nodes it switched off. Those come by mean tau over training (the nodes switched off
        last first) or, `by_gain`, the ones whose return would lower the train loss most
        first (`gain`, to first order), ties by mean tau. The bisection reads this order past
        the trained set whenever that set falls short on the val pairs (docs/CIRCUITS.md,
        "Bisection")."""
        order = torch.arange(len(self.scores))
        if self.mean_scores is not None:
            order = torch.argsort(-self.mean_scores, stable=True)
        order = order[torch.argsort(-self.scores[order], stable=True)]
        if self.gain is None or not by_gain:
            return order
        off = self.scores[order] < 0
        tail = order[off]
        return torch.cat([order[~off], tail[torch.argsort(self.gain[tail], stable=True)]])

    def orders(self) -> list[torch.Tensor]:
        """The rankings the bisection tries, by gain first. They differ only past the trained
        set, and each fails where the other serves: the gain is a first-order estimate at the
        trained set, good when the set is a little short and blind when it is far short (the
        nodes of a path in series each gain nothing alone), where the training history in
        mean tau still ranks them."""
        return [self.order()] if self.gain is None else [self.order(True), self.order(False)]

    @property
    def kept(self) -> int:
        """The size of the trained set (tau >= 0)."""
        return int((self.scores >= 0).sum())

    @property
    def still_falling(self) -> bool:
        """The kept count fell by more than 5% over the last quarter of training: more steps
        would have made the circuit smaller."""
        last = self.curve[-1]
        before = next((c for c in self.curve if c[0] >= 0.75 * last[0]), last)
        return last[2] < 0.95 * before[2]


def train_masks(model, data: TaskData, values, cfg: PruneConfig, layout: NodeLayout,
                log=print) -> MaskTraining:
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
    every = max(1, cfg.steps // 20)
    curve = []
    total = torch.zeros(layout.total)
    for step in range(cfg.steps):
        bucket = buckets[int(torch.multinomial(sizes, 1, generator=g))]
        pick = bucket[torch.randint(len(bucket), (min(cfg.batch_pairs, len(bucket)),), generator=g)]
        rows = torch.stack([2 * pick, 2 * pick + 1], 1).reshape(-1)
        batch = data.rows(rows)
        m = heaviside(tau, cfg.temperature)
        vals = values.step(step) if isinstance(values, Resample) else values  # a new draw
        d = logit_diffs(model, batch, layout.split(m), vals, cfg.freeze_norm, batch=len(batch))
        task_loss = losses(d, batch.sign).mean()
        loss = task_loss + cfg.k_coef * m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([tau], cfg.grad_clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            tau.clamp_(-1, 1)
            total += tau
        if (step + 1) % every == 0 or step + 1 == cfg.steps:
            curve.append((step + 1, round(task_loss.item(), 4), int(m.sum())))
            if log and (step + 1) % max(1, cfg.steps // 5) == 0:
                log(f"  step {step + 1}/{cfg.steps}: task loss {task_loss.item():.3f}, "
                    f"{int(m.sum())} nodes on")
    return MaskTraining(tau.detach(), curve, total / cfg.steps)


def switch_gain(model, data: TaskData, values, on: torch.Tensor, cfg: PruneConfig,
                layout: NodeLayout, pairs: int = 64) -> torch.Tensor:
    """d(mean task loss) / d(mask) at the 0/1 mask `on`, over every pair of `data`: to first
    order, the change in loss from switching each node that is off on (negative: it helps)."""
    gain = torch.zeros(layout.total)
    with torch.enable_grad():
        for i in range(0, len(data) // 2, pairs):
            rows = torch.arange(2 * i, min(2 * (i + pairs), len(data)))
            part = data.rows(rows)
            m = on.clone().requires_grad_(True)
            d = logit_diffs(model, part, layout.split(m), values, cfg.freeze_norm,
                            batch=len(part))
            (g,) = torch.autograd.grad(losses(d, part.sign).sum() / len(data), m)
            gain += g
    return gain


@dataclass
class Probe:
    """A top-k set judged on the val pairs."""
    loss: float               # calibrated
    loss_uncalibrated: float
    scale: float

    def passes(self, target: float, empty_uncalibrated: float) -> bool:
        """At the target after calibration, and no worse than the empty circuit before it: a
        circuit that does worse than no circuit at all is never a pass, whatever its scale."""
        return self.loss <= target and self.loss_uncalibrated <= empty_uncalibrated + 1e-9


COLLAPSED = 0.25   # a trial whose circuit keeps more than this share of all nodes collapsed


class Judge:
    """Measures top-k sets of one ranking on the val pairs, caching every size: bisecting the
    same ranking for several targets reuses each probe."""

    def __init__(self, model, data: TaskData, values, order: torch.Tensor, cfg: PruneConfig,
                 layout: NodeLayout, bound: float, seen: dict[bytes, Probe] | None = None):
        """`order`: node indices from most to least kept (`MaskTraining.order`). `seen`: the
        probes of judges of other rankings on the same data and values, by node set, to share:
        two rankings of one trained set agree up to its size."""
        if isinstance(values, Resample):  # one pairing for every probe, its sources run once
            values = values.on(data, all_activations(model, data))
        self.model, self.data, self.values, self.cfg, self.layout = model, data, values, cfg, layout
        self.bound = bound
        self.order = order
        self.probes: dict[int, Probe] = {}
        self.seen = {} if seen is None else seen

    def keep(self, k: int) -> torch.Tensor:
        keep = torch.zeros(self.layout.total, dtype=torch.bool)
        keep[self.order[:k]] = True
        return keep

    @torch.no_grad()
    def __call__(self, k: int) -> Probe:
        if k not in self.probes:
            keep = self.keep(k)
            key = keep.numpy().tobytes()
            if key not in self.seen:
                d = logit_diffs(self.model, self.data, self.layout.split(keep.float()),
                                self.values, self.cfg.freeze_norm)
                sign = self.data.sign
                scale = calibrate(d, sign, self.bound) if self.cfg.calibrate else 1.0
                self.seen[key] = Probe(float(losses(d, sign, scale).mean()),
                                       float(losses(d, sign).mean()), scale)
            self.probes[k] = self.seen[key]
        return self.probes[k]

    def passes(self, k: int, target: float) -> bool:
        return self(k).passes(target, self(0).loss_uncalibrated)

    def smallest(self, target: float, start: int = 1) -> int | None:
        """The smallest k whose top-k set passes, or None.

        Probes `start` (the trained set's size) first: if it passes, bisects below it; if not,
        doubles from it up to the first passing size, then bisects between. The full set may
        fail where a subset passes (a control task the model never learnt), so a failing full
        model does not end the search. Past `COLLAPSED` of all nodes (a collapsed trial, which
        wins only when every trial collapses) the bisection stops within 1% of all nodes."""
        hi = total = self.layout.total
        if self.passes(0, target):
            return 0
        lo = k = min(max(start, 1), hi)
        if not self.passes(k, target):
            while True:
                lo, k = k + 1, min(2 * k, hi)
                if self.passes(k, target):
                    break
                if k == hi:
                    return None
        else:
            lo = 1
        slack = total // 100 if k > COLLAPSED * total else 0
        return bisect_smallest(lambda j: self.passes(j, target), lo, k, slack)


@torch.no_grad()
def empty_circuit_loss(model, split: TaskSplit, values, cfg: PruneConfig) -> float:
    """The val loss with every node ablated, judged as the bisection judges a circuit (with
    the same bounded calibration): what the embeddings, the bigram table and the unembedding
    do alone. At or below the target, the task's circuit is empty: the last token gives the
    answer away."""
    layout = NodeLayout(model)
    bound = scale_bound(logit_diffs(model, split.val), split.val.sign)
    return Judge(model, split.val, values, torch.arange(layout.total), cfg, layout, bound)(0).loss
