"""A task's pairs as tensors, and the circuit's logit difference on them.

Every sequence is scored by the difference `d = z[target] - z[alt]` of the pair's two answer
logits at its last token. The right answer's margin is `sign * d` (sign +1 where the right
answer is `target`), and the per-sequence loss is `softplus(-margin)`: the two-token contrast
cross-entropy of `tasks.metrics`. Calibration (a logit scale and shift fitted by LBFGS) acts on
`d` as `scale * d + shift`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..tasks.core import Pair, answer_ids
from ..tasks.metrics import encode_prompts
from .ablation import FrozenNorms, mask_hook


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


def logit_diffs(model, data: TaskData, masks: dict[str, torch.Tensor] | None = None,
                values: dict[str, torch.Tensor] | None = None, freeze_norm: bool = False,
                batch: int = 64) -> torch.Tensor:
    """`z[target] - z[alt]` at each sequence's last token, with the nodes where `masks` is 0 held
    at `values` (no masks: the full model). Differentiable in the masks. A value of shape
    (len(data), 1, dim) gives each sequence its own ablation value.

    Sequences run in batches of similar length (a task's prompt lengths often vary twofold, and
    a batch pads to its longest); the result is in `data`'s order."""
    device = next(model.parameters()).device
    order = torch.argsort(data.lengths, stable=True)
    out = []
    for i in range(0, len(data), batch):
        rows = order[i:i + batch]
        part = data.rows(rows)
        x = part.idx.to(device)
        at = part.lengths.to(device) - 1
        hooks = []
        if masks is not None:
            own = {k: v[rows] if v.dim() == 3 else v for k, v in values.items()}
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


def losses(d: torch.Tensor, sign: torch.Tensor, scale: float = 1.0, shift: float = 0.0):
    """Per-sequence contrast loss of logit differences `d` after calibration."""
    return F.softplus(-sign * (scale * d + shift))


def accuracy(d: torch.Tensor, sign: torch.Tensor, scale: float = 1.0, shift: float = 0.0) -> float:
    return float((sign * (scale * d + shift) > 0).float().mean())


def calibrate(d: torch.Tensor, sign: torch.Tensor, steps: int = 16) -> tuple[float, float]:
    """The logit scale and shift minimising the mean loss: 16 LBFGS steps, as in the paper.

    A shift shared by both answer logits cancels in a two-way softmax, so the shift acts on
    their difference. The scale is a temperature, kept positive (fitted as its log): a negative
    one would flip the circuit's answers and let it "do" the inverted task for free. Starts at
    (1, 0), and keeps that start if the fit does not lower the loss.
    """
    d, sign = d.detach().double(), sign.double()
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # log scale, shift
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.softplus(-sign * (params[0].exp() * d + params[1])).mean()
        loss.backward()
        return loss

    with torch.enable_grad():  # callers probe circuits under no_grad
        start = float(closure().detach())
        opt.step(closure)
    scale, shift = float(params[0].detach().exp()), float(params[1].detach())
    if not (math.isfinite(scale) and math.isfinite(shift)
            and float(losses(d, sign, scale, shift).mean()) <= start):
        return 1.0, 0.0
    return scale, shift
