"""Task loss and accuracy of a model: the two-token contrast at the last position."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..tokenizer import eot_id
from .core import Pair, Task, answer_ids

TARGET_LOSS = 0.15  # the paper's per-sequence target: about 86% on the right token


@dataclass
class TaskResult:
    task: str
    split: str
    pairs: int
    loss: float        # mean per-sequence contrast cross-entropy (nats); chance is ln 2
    accuracy: float    # fraction of sequences whose right answer out-scores the other

    @property
    def meets_target(self) -> bool:
        return self.loss <= TARGET_LOSS

    def to_dict(self) -> dict:
        return {**asdict(self), "meets_target": self.meets_target}


def encode_prompts(tok, prompts: list[str], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids (B, T) and each prompt's length. A prompt longer than the context
    keeps its last `block_size` tokens: the model reads what fits, as it would in a long file."""
    ids = [e.ids[-block_size:] for e in tok.encode_batch(prompts, add_special_tokens=False)]
    if not all(ids):
        raise UserError("a task prompt is empty, so there is no last token to predict from; "
                        "give every template some text before the answer.")
    lengths = torch.tensor([len(x) for x in ids])
    out = torch.full((len(ids), int(lengths.max())), eot_id(tok), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, :len(x)] = torch.tensor(x)
    return out, lengths


@torch.no_grad()
def last_logits(model, tok, prompts: list[str], batch: int = 64) -> torch.Tensor:
    """Logits at each prompt's last token, (N, vocab). Right padding cannot change them: the
    attention is causal."""
    device = next(model.parameters()).device
    rows = []
    for i in range(0, len(prompts), batch):
        x, n = encode_prompts(tok, prompts[i:i + batch], model.cfg.block_size)
        logits = model(x.to(device))
        rows.append(logits[torch.arange(len(n)), n.to(device) - 1].float().cpu())
    return torch.cat(rows)


def sequence_losses(logits: torch.Tensor, right: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """softplus(z[wrong] - z[right]) per row: the two-way cross-entropy of the right answer."""
    idx = torch.arange(len(logits))
    return F.softplus(logits[idx, wrong] - logits[idx, right])


def score_pairs(model, tok, task_name: str, pairs: list[Pair], batch: int = 64):
    """Per-sequence losses and correctness for the 2 * len(pairs) sequences of `pairs`."""
    prompts, right, wrong = [], [], []
    for p in pairs:
        for prompt, r, w in p.sequences():
            r_id, w_id = answer_ids(tok, task_name, r, w)
            prompts.append(prompt)
            right.append(r_id)
            wrong.append(w_id)
    logits = last_logits(model, tok, prompts, batch)
    right, wrong = torch.tensor(right), torch.tensor(wrong)
    idx = torch.arange(len(logits))
    return sequence_losses(logits, right, wrong), logits[idx, right] > logits[idx, wrong]


def task_metrics(model, tok, task: Task, n: int = 64, split: str = "test", seed: int = 0,
                 batch: int = 64) -> TaskResult:
    """Loss and accuracy of `model` on n pairs of `task` (the test split by default)."""
    losses, correct = score_pairs(model, tok, task.name, task.pairs(n, split, seed), batch)
    return TaskResult(task.name, split, n, float(losses.mean()), float(correct.float().mean()))
