"""A task's pairs as tensors, and the circuit's logit difference on them.

Every sequence is scored by the difference `d = z[target] - z[alt]` of the pair's two answer
logits at its last token. The right answer's margin is `sign * d` (sign +1 where the right
answer is `target`), and the per-sequence loss is `softplus(-margin)`: the two-token contrast
cross-entropy of `tasks.metrics`.

Calibration is a temperature only: `scale * d` with 0 < scale <= a bound. The paper fits a
logit scale and shift; a shift shared by every logit cancels in a two-way softmax, so only the
scale acts on a two-token loss. An offset on `d` itself would be a free per-task bias: it
solves any constant-answer control with an empty circuit and passes circuits worse than the
empty one, so there is none. The bound (`scale_bound`) is the scale the full model itself
needs on the same pairs, at least 1: a circuit may be made as confident as the calibrated
model, never more, so a faint signal cannot be amplified into a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..tasks.core import Pair, answer_ids
from ..tasks.metrics import encode_prompts
from .ablation import FrozenNorms, mask_hook, site_activations
from .nodes import NodeLayout


@dataclass
class TaskData:
    idx: torch.Tensor       # (N, T) right-padded token ids
    lengths: torch.Tensor   # (N,)
    target: torch.Tensor    # (N,) id of the pair's first answer
    alt: torch.Tensor       # (N,) id of the pair's second answer
    sign: torch.Tensor      # (N,) +1 where the right answer is `target`, -1 where it is `alt`

    @classmethod
    def from_pairs(cls, tok, task_name: str, pairs: list[Pair], block_size: int) -> TaskData:
        prompts, target, alt, sign = [], [], [], []
        for p in pairs:
            t_id, a_id = answer_ids(tok, task_name, p.target, p.alt)
            for prompt, right, _ in p.sequences():
                prompts.append(prompt)
                target.append(t_id)
                alt.append(a_id)
                sign.append(1.0 if right == p.target else -1.0)
        idx, lengths = encode_prompts(tok, prompts, block_size)
        return cls(idx, lengths, torch.tensor(target), torch.tensor(alt), torch.tensor(sign))

    def __len__(self) -> int:
        return len(self.idx)

    def rows(self, rows: torch.Tensor) -> TaskData:
        n = int(self.lengths[rows].max())
        return TaskData(self.idx[rows, :n], self.lengths[rows], self.target[rows],
                        self.alt[rows], self.sign[rows])


def aligned_positions(data: TaskData, source: TaskData) -> torch.Tensor:
    """(len(data), T): for each position t of sequence i of `data`, the position of sequence i
    of `source` whose activations it takes.

    The rule: t itself while the two prompts agree token for token from the start (there their
    activations are equal anyway: the model is causal); after that, the same distance from the
    last token, since the answer is read at the last token and last must take last; never
    before the first position where the prompts differ, never past the source's end."""
    n, n2 = data.lengths[:, None], source.lengths[:, None]
    T = data.idx.shape[1]
    m = min(T, source.idx.shape[1])
    same = (data.idx[:, :m] == source.idx[:, :m]) & (torch.arange(m) < torch.minimum(n, n2))
    prefix = same.long().cumprod(1).sum(1, keepdim=True)
    t = torch.arange(T)[None, :]
    tail = torch.minimum(torch.maximum(t - n + n2, prefix), n2 - 1)
    return torch.where(t < prefix, t, tail)


ACTS_BUDGET = 256 * 2**20   # bytes of activations `all_activations` may hold at once


def all_activations(model, data: TaskData) -> dict[str, torch.Tensor] | None:
    """Full-model activations of every sequence of `data` at every site, (N, T, dim) each, for
    `Swapped` values to share between calls; None where they would take more than `ACTS_BUDGET`
    (then each call recomputes what it needs, a chunk at a time)."""
    layout = NodeLayout(model)
    if len(data) * data.idx.shape[1] * layout.total * 4 > ACTS_BUDGET:
        return None
    return site_activations(model, data.idx, flatten=False, batch=64)


@dataclass
class Swapped:
    """Ablation values taken from other sequences of the same data: sequence i's ablated nodes
    take, at every position, their full-model activations on sequence `src[i]`, position by
    position as `aligned_positions` maps them. `acts`: the data's full-model activations
    (`all_activations`), if already at hand; else each batch computes its sources'."""
    src: torch.Tensor
    acts: dict[str, torch.Tensor] | None = None

    def values(self, model, data: TaskData, rows: torch.Tensor, part: TaskData,
               names: list[str]) -> dict[str, torch.Tensor]:
        """The values of `part` (= data.rows(rows)) at the sites `names`."""
        if not names:
            return {}
        source = data.rows(self.src[rows])
        if self.acts is None:
            with torch.no_grad():
                theirs = site_activations(model, source.idx, names, flatten=False,
                                          batch=len(rows))
        else:
            theirs = {s: self.acts[s][self.src[rows]] for s in names}
        at = aligned_positions(part, source)[..., None]
        return {s: theirs[s].gather(1, at.expand(-1, -1, theirs[s].shape[-1])) for s in names}


@dataclass(frozen=True)
class Resample:
    """The in-distribution ablation (`Ablation.RESAMPLE`): on any data, each sequence's ablated
    nodes take their values on another sequence of the same data (`Swapped`), the other one
    drawn with `seed`. The same seed on the same data gives the same pairing, so a bisection
    compares its sizes on one draw; mask training draws a new pairing every step (`step`)."""
    seed: int = 0

    def on(self, data: TaskData, acts: dict[str, torch.Tensor] | None = None) -> Swapped:
        """The pairing on `data`; `acts`: its `all_activations`, to share between calls."""
        n = len(data)
        if n < 2:
            raise ValueError("resample ablation needs at least two sequences to take values from")
        g = torch.Generator().manual_seed(self.seed)
        return Swapped((torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n, acts)

    def step(self, i: int) -> Resample:
        return Resample(self.seed * 1_000_003 + i + 1)


Values = dict[str, torch.Tensor] | Swapped | Resample


def logit_diffs(model, data: TaskData, masks: dict[str, torch.Tensor] | None = None,
                values: Values | None = None, freeze_norm: bool = False,
                batch: int = 64) -> torch.Tensor:
    """`z[target] - z[alt]` at each sequence's last token, with the nodes where `masks` is 0 held
    at `values` (no masks: the full model). Differentiable in the masks. A value of shape
    (len(data), 1, dim) gives each sequence its own ablation value; (len(data), T, dim), T at
    least `data`'s padded length, one per sequence and position; `Swapped` or `Resample`, each
    sequence the values of another sequence of `data`.

    Sequences run in batches of similar length (a task's prompt lengths often vary twofold, and
    a batch pads to its longest); the result is in `data`'s order."""
    device = next(model.parameters()).device
    order = torch.argsort(data.lengths, stable=True)
    if isinstance(values, Resample):
        values = values.on(data)
    if isinstance(values, Swapped) and masks is not None:
        # only sites with an ablated node need their sources' activations, unless the masks
        # are differentiated (mask training, attribution), when every site does
        swap = [s for s, m in masks.items() if m.requires_grad or not bool((m == 1).all())]
    out = []
    for i in range(0, len(data), batch):
        rows = order[i:i + batch]
        part = data.rows(rows)
        x = part.idx.to(device)
        at = part.lengths.to(device) - 1
        hooks = []
        if masks is not None:
            if isinstance(values, Swapped):
                own = values.values(model, data, rows, part, swap)
                hooks = [mask_hook({s: masks[s] for s in swap}, own)]
            else:
                # a batch pads only to its own longest prompt: per-position values are cut to it
                own = {k: v[rows, :x.shape[1]] if v.dim() == 3 else v for k, v in values.items()}
                hooks = [mask_hook(masks, own)]
        norms = []
        if freeze_norm and masks is not None:
            frozen = FrozenNorms()
            with torch.no_grad(), model.norm_hooks(frozen.record):
                model(x, at=at)
            norms = [frozen.replay]
        with model.hooks(*hooks), model.norm_hooks(*norms):
            last = model(x, at=at).float()
        r = torch.arange(len(part), device=device)
        out.append(last[r, part.target.to(device)] - last[r, part.alt.to(device)])
    return torch.cat(out).cpu()[torch.argsort(order)]


def losses(d: torch.Tensor, sign: torch.Tensor, scale: float = 1.0):
    """Per-sequence contrast loss of logit differences `d` at temperature 1 / `scale`."""
    return F.softplus(-sign * (scale * d))


def accuracy(d: torch.Tensor, sign: torch.Tensor) -> float:
    """Fraction of sequences whose right answer out-scores the other (no scale changes it)."""
    return float((sign * d > 0).float().mean())


def calibrate(d: torch.Tensor, sign: torch.Tensor, max_scale: float = math.inf,
              steps: int = 16) -> float:
    """The scale in (0, max_scale] minimising the mean loss of `scale * d`: 16 LBFGS steps on
    its logarithm (as the paper fits its calibration), then clipped to the bound. The mean loss
    is convex in the scale, so the clipped optimum is the best scale within the bound. Keeps 1
    (or the bound, if below 1) when the fit does not lower the loss.
    """
    d, sign = d.detach().double(), sign.double()
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_scale], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.softplus(-sign * (log_scale.exp() * d)).mean()
        loss.backward()
        return loss

    with torch.enable_grad():  # callers probe circuits under no_grad
        opt.step(closure)
    start = min(1.0, max_scale)
    scale = min(float(log_scale.detach().exp()), max_scale)
    if not (math.isfinite(scale) and scale > 0
            and float(losses(d, sign, scale).mean()) <= float(losses(d, sign, start).mean())):
        return start
    return scale


def scale_bound(d_full: torch.Tensor, sign: torch.Tensor, cap: float = 100.0) -> float:
    """The largest calibration scale a circuit may get on these pairs: the full model's own
    fitted scale on them, at least 1 (and at most `cap`, for a model that separates them
    perfectly, whose fitted scale grows without end)."""
    return max(1.0, calibrate(d_full, sign, cap))
