"""What a pruned node is replaced by, and the hooks that do the replacing.

A node outside the circuit is held at its ablation value: its mean over pretraining tokens
(`mean`, one scalar per node over all tokens and positions of the train split), zero (`zero`),
its mean over the task's own prompts (`task-mean`), or, in distribution, its value on another
prompt of the task (`resample`: `taskdata.Resample`). Pretraining means are computed once per
(model, corpus) and cached on disk, together with a bank of activations of random pretraining
tokens that stochastic ablation resamples from.

Masks and ablations are node-site hooks on the one forward pass (`model.hooks`): nothing here
copies the model's forward.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError
from .nodes import NodeLayout



class Ablation(StrEnum):
    """What a pruned node is held at."""
    MEAN = "mean"              # its mean over pretraining tokens (the paper's choice)
    ZERO = "zero"
    TASK_MEAN = "task-mean"    # its mean over the task's own prompts
    RESAMPLE = "resample"      # its value on another prompt of the task, position by position

    @classmethod
    def parse(cls, kind: str | Ablation) -> Ablation:
        try:
            return cls(kind)
        except ValueError:
            raise UserError(f"unknown ablation '{kind}'; use one of "
                            f"{', '.join(a.value for a in cls)}.") from None


ABLATIONS = tuple(a.value for a in Ablation)
STATS_VERSION = 1


def model_hash(model) -> str:
    """A short content hash of a model's weights and config: circuits are bound to it."""
    h = hashlib.sha256(json.dumps(model.cfg.hashed(), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()  # a pass that builds no graph: it would hold every layer's activations
def site_batches(model, idx: torch.Tensor, names=None, batch: int = 16,
                 channels: dict[str, list[int]] | None = None):
    """(first row, {site: (b, T, dim) float32 activations on the CPU}) for each batch of the
    token windows `idx`, at `names` (default: every site; with `channels`, site -> indices,
    only those channels of those sites). Statistics are summed batch by batch: a wide model's
    activations of thousands of tokens at every site do not fit in memory at once."""
    device = next(model.parameters()).device
    if channels is not None and names is None:
        names = list(channels)
    for i in range(0, len(idx), batch):
        _, cache = model.run_with_cache(idx[i:i + batch].to(device), names=names)
        yield i, {k: (v if channels is None else v[..., channels[k]]).float().cpu()
                  for k, v in cache.items()}


def site_activations(model, idx: torch.Tensor, names=None, flatten: bool = True,
                     batch: int = 16, channels: dict[str, list[int]] | None = None
                     ) -> dict[str, torch.Tensor]:
    """Full-model activations at `names` (default: every site) on token windows `idx` (N, T):
    (N*T, dim) per site, or (N, T, dim) with flatten=False; `channels` as for `site_batches`."""
    out: dict[str, list[torch.Tensor]] = {}
    for _, acts in site_batches(model, idx, names, batch, channels):
        for name, x in acts.items():
            out.setdefault(name, []).append(x.reshape(-1, x.shape[-1]) if flatten else x)
    return {k: torch.cat(v) for k, v in out.items()}


class PretrainingStats:
    """Per-node means over pretraining tokens, and a bank of activations of random tokens."""

    def __init__(self, means: dict[str, torch.Tensor], bank: dict[str, torch.Tensor]):
        self.means, self.bank = means, bank

    @classmethod
    def compute(cls, model, data: np.ndarray, windows: int = 64, bank_size: int = 512,
                seed: int = 0) -> PretrainingStats:
        block = model.cfg.block_size
        if len(data) < block + 1:
            raise UserError(f"the corpus has only {len(data)} training tokens, fewer than one "
                            f"context of {block}; build a larger corpus.")
        from ..train import val_windows
        idx = val_windows(data, windows, block)[:, :-1]  # evenly spaced contexts of `block`
        g = torch.Generator().manual_seed(seed)
        T, n_tok = idx.shape[1], idx.numel()
        pick = torch.randperm(n_tok, generator=g)[:bank_size]  # the bank's tokens, in order
        sums: dict[str, torch.Tensor] = {}
        bank: dict[str, torch.Tensor] = {}
        for i, acts in site_batches(model, idx):
            lo, hi = i * T, i * T + next(iter(acts.values())).shape[0] * T
            here = (pick >= lo) & (pick < hi)
            for k, v in acts.items():
                flat = v.reshape(-1, v.shape[-1])
                sums[k] = sums.get(k, 0) + flat.sum(0, dtype=torch.float64)
                bank.setdefault(k, torch.empty(len(pick), flat.shape[-1]))[here] = flat[pick[here] - lo]
        return cls({k: (v / n_tok).float() for k, v in sums.items()}, bank)

    @classmethod
    def cached(cls, model, corpus, log=print) -> PretrainingStats:
        """Compute once per (model, corpus) and keep under the cache home."""
        from ..corpus import cache_home
        log = log or (lambda *a: None)
        key = f"{model_hash(model)}-{_corpus_key(corpus)}-v{STATS_VERSION}"
        path = cache_home() / "node-stats" / f"{key}.safetensors"
        if path.is_file():
            try:
                t = load_file(str(path))
                return cls({k[5:]: v for k, v in t.items() if k.startswith("mean:")},
                           {k[5:]: v for k, v in t.items() if k.startswith("bank:")})
            except Exception:  # a damaged cache entry is recomputed, not fatal
                log(f"recomputing the damaged node statistics at {path}")
        log("computing node means over pretraining tokens (once per model) ...")
        stats = cls.compute(model, corpus.train)
        from ..checkpoint import atomic_write
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {**{f"mean:{k}": v.contiguous() for k, v in stats.means.items()},
                   **{f"bank:{k}": v.contiguous() for k, v in stats.bank.items()}}
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
        return stats


def _corpus_key(corpus) -> str:
    text = json.dumps(corpus.manifest.get("totals", {}), sort_keys=True) + str(len(corpus.train))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def task_means(model, idx: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-node means over every real (unpadded) token of the task prompts `idx`."""
    real = torch.arange(idx.shape[1])[None, :] < lengths[:, None]
    sums: dict[str, torch.Tensor] = {}
    for i, acts in site_batches(model, idx):
        for k, v in acts.items():
            r = real[i:i + len(v)]
            sums[k] = sums.get(k, 0) + v[r].sum(0, dtype=torch.float64)
    n = int(real.sum())
    return {k: (v / n).float() for k, v in sums.items()}


def ablation_values(kind: Ablation | str, model, *, stats: PretrainingStats | None = None,
                    task_idx: torch.Tensor | None = None, task_lengths: torch.Tensor | None = None):
    """The values ablated nodes are held at: one per node (a dict of (dim,) tensors), or for
    `resample` a `taskdata.Resample`, which takes them from other prompts of whatever data it
    is run on."""
    kind = Ablation.parse(kind)
    if kind is Ablation.RESAMPLE:
        from .taskdata import Resample
        return Resample()
    if kind is Ablation.ZERO:
        layout = NodeLayout(model)
        return {s: torch.zeros(n) for s, n in zip(layout.sites, layout.sizes)}
    if kind is Ablation.MEAN:
        if stats is None:
            raise ValueError("mean ablation needs pretraining statistics")
        return stats.means
    return task_means(model, task_idx, task_lengths)


# ----------------------------------------------------------------------------- hooks

def mask_hook(masks: dict[str, torch.Tensor], values: dict[str, torch.Tensor]):
    """x <- m * x + (1 - m) * v at every site: m = 1 keeps a node, m = 0 ablates it.

    `values[site]` is (dim,) for a constant ablation, (B, 1, dim) for one value per sequence,
    or (B, T, dim) for one value per sequence and position (interchange and resampling).
    """
    def hook(name, x):
        m = masks.get(name)
        if m is None:
            return x
        m, v = m.to(x.dtype), values[name].to(x.dtype)
        if torch.is_grad_enabled():  # mask training: the plain form's backward is as fast
            return x * m + v * (1 - m)
        # Without autograd (bisection, validation) addcmul adds x * m to the one row (or one
        # row per sequence) v * (1 - m) in a single pass, many times faster than a broadcast
        # add. Both forms are exact at m in {0, 1}: x*1 + v*0 == x, x*0 + v*1 == v.
        return torch.addcmul(v * (1 - m), x, m)
    return hook


class FrozenNorms:
    """Records every RMSNorm scale on a clean pass, then replays them on the ablated pass."""

    def __init__(self):
        self.scales: dict[str, torch.Tensor] = {}

    def record(self, name, scale):
        self.scales[name] = scale.detach()
        return scale

    def replay(self, name, scale):
        return self.scales[name]
