"""Bridges between a dense model and a weight-sparse one (`../shared/PAPER.md` section 11).

At every residual location (before each sublayer's RMSNorm, `GPT.resid_names`) an encoder maps
the dense model's residual stream into the sparse model's (Linear, then AbsTopK) and a decoder
maps back (Linear). Trained well, a circuit found in the sparse model names a direction in the
dense one that can be read and pushed (`steer`).

The loss (all weights 1 by default, as in the paper, which does not state them):

    CE(sparse)                                       the sparse model's own next-token loss
  + w_nmse * sum_i NMSE(enc_i(h_dense_i), h_sparse_i) + NMSE(dec_i(h_sparse_i), h_dense_i)
  + w_kl   * sum_i KL(p_dense || sparse suffix from i of enc_i(h_dense_i))
                 + KL(p_dense || dense suffix from i of dec_i(h_sparse_i))

NMSE is sum over tokens of |pred - target|^2 over sum of |target - mean over tokens(target)|^2,
the denominator detached: 1 means "no better than predicting the target's mean", whatever
the two streams' scales (a residual stream's norm grows with depth and differs between the
models, so an unnormalised MSE would weight the sites by their scale). KL is per token,
averaged, from the dense model's distribution (the behaviour to carry across) to each
single-switch hybrid pass. Each hybrid pass starts at its location (`GPT.forward(start=...)`),
so the prefix it replaces is not computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..sparsity import abstopk

BRIDGES_FILE, BRIDGES_META = "bridges.safetensors", "bridges.json"
BRIDGES_OPTIM = "bridges.optimizer.safetensors"


@dataclass
class BridgeConfig:
    """How a run's bridges were made: saved as `bridges.json` beside the model."""
    dense_run: str                 # the dense run's folder (on disk: relative to this run's)
    dense_hash: str                # its weights' content hash, checked on every load
    frozen: bool = False           # True: both models frozen (`bridge`); False: joint training
    afrac: float = 0.25            # the encoders' AbsTopK keep fraction
    nmse_weight: float = 1.0
    kl_weight: float = 1.0
    kl_sites: int = 0              # hybrid passes per step and direction: 0 = every location
    sparse_hash: str = ""          # the sparse weights the bridges were saved with
    step: int = 0
    rms: dict = field(default_factory=dict)   # {"sparse": {location: rms}, "dense": {...}}
    eval: dict = field(default_factory=dict)  # the last `evaluate_bridges` on the val split

    @classmethod
    def from_dict(cls, d: dict) -> BridgeConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class Bridges(nn.Module):
    """One encoder (dense -> sparse) and one decoder (sparse -> dense) per residual location."""

    def __init__(self, locations: list[str], d_sparse: int, d_dense: int, afrac: float = 0.25):
        super().__init__()
        if not 0 < afrac <= 1:
            raise UserError(f"the bridges' afrac={afrac} must be in (0, 1].")
        self.locations = list(locations)
        self.d_sparse, self.d_dense, self.afrac = d_sparse, d_dense, afrac
        self.enc = nn.ModuleList(nn.Linear(d_dense, d_sparse) for _ in self.locations)
        self.dec = nn.ModuleList(nn.Linear(d_sparse, d_dense) for _ in self.locations)
        self.k = max(1, int(afrac * d_sparse)) if afrac < 1 else None

    def encode(self, i: int, h_dense: torch.Tensor) -> torch.Tensor:
        e = self.enc[i](h_dense)
        return e if self.k is None else abstopk(e, self.k)

    def decode(self, i: int, h_sparse: torch.Tensor) -> torch.Tensor:
        return self.dec[i](h_sparse)


def check_pair(sparse, dense) -> None:
    """The two models can be bridged: the same depth (locations pair one to one), the same
    vocabulary (the KL compares their next-token distributions)."""
    if sparse.resid_names() != dense.resid_names():
        raise UserError(f"the sparse model has {sparse.cfg.n_layer} layers and the dense one "
                        f"{dense.cfg.n_layer}; bridges pair the layers one to one, so bridge "
                        "models of the same depth.")
    if sparse.cfg.vocab_size != dense.cfg.vocab_size:
        raise UserError(f"the sparse model has {sparse.cfg.vocab_size} tokens and the dense one "
                        f"{dense.cfg.vocab_size}; bridged models must share their tokenizer.")


def weight_density(model) -> float:
    """The fraction of nonzero entries of the model's weight matrices (the budgeted ones)."""
    ts = [t.param for t in model.sparse_tensors() if t.group == "matrix"]
    return sum(int((p != 0).sum()) for p in ts) / max(1, sum(p.numel() for p in ts))


def check_roles(sparse_density: float, dense_density: float, sparse_name: str,
                dense_name: str) -> None:
    """Refuse a pair whose "sparse" side is not the sparser: swapped runs would train bridges
    for minutes into nonsense."""
    if sparse_density < dense_density:
        return
    why = ("the two look swapped: pass the sparse run first, then the dense one"
           if sparse_density > dense_density else
           "neither is sparser: bridges pair a weight-sparse model with a dense one")
    raise UserError(f"{sparse_name} (given as the sparse model) has weight density "
                    f"{sparse_density:.3g} and {dense_name} (given as the dense model) "
                    f"{dense_density:.3g}; {why}.")


def nmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum |pred - target|^2 / sum |target - mean(target)|^2 over all tokens (denominator
    detached): 0 is exact, 1 is as good as predicting the target's mean vector."""
    t = target.reshape(-1, target.shape[-1]).float()
    p = pred.reshape(-1, pred.shape[-1]).float()
    denom = (t - t.mean(0)).pow(2).sum().detach().clamp_min(1e-12)
    return (p - t).pow(2).sum() / denom


def kl_from(ref_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(ref || softmax(logits)) per token, averaged over tokens."""
    logp = F.log_softmax(logits.float(), dim=-1).flatten(0, -2)
    return F.kl_div(logp, ref_logp.flatten(0, -2), log_target=True, reduction="batchmean")


def residuals(model, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and the residual stream at every location (kept in the autograd graph)."""
    res: dict[str, torch.Tensor] = {}

    def record(name, x):
        res[name] = x
        return x

    with model.resid_hooks(record):
        logits = model(idx)
    return logits, res


def kl_locations(n: int, cfg: BridgeConfig, seed: int, step: int) -> list[int]:
    """The locations whose hybrid passes run at `step`: all, or `cfg.kl_sites` of them drawn
    as a pure function of (seed, step), so a resumed run draws the same ones."""
    if not cfg.kl_sites or cfg.kl_sites >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed * 1_000_003 + step + 7)  # + 7: not the batch stream
    return sorted(torch.randperm(n, generator=g)[:cfg.kl_sites].tolist())


def bridged_loss(sparse, dense, bridges: Bridges, x: torch.Tensor, y: torch.Tensor,
                 cfg: BridgeConfig, kl_at: list[int] | None = None) -> tuple[torch.Tensor, dict]:
    """The bridged training loss on one batch, and its parts (for the log).

    `kl_at`: the locations whose hybrid passes run (default all); their KL sum is scaled by
    (all locations / those run), an unbiased estimate of the full sum. NMSE, which costs no
    extra pass, is always taken at every location.
    """
    n = len(bridges.locations)
    kl_at = range(n) if kl_at is None else kl_at
    with torch.no_grad():
        d_logits, d_res = residuals(dense, x)
        d_logp = F.log_softmax(d_logits.float(), dim=-1)
    s_logits, s_res = residuals(sparse, x)
    ce = F.cross_entropy(s_logits.flatten(0, 1).float(), y.flatten())
    nmse_enc, nmse_dec, kl_enc, kl_dec = [], [], [], []
    for i, loc in enumerate(bridges.locations):
        enc, dec = bridges.encode(i, d_res[loc]), bridges.decode(i, s_res[loc])
        nmse_enc.append(nmse(enc, s_res[loc]))
        nmse_dec.append(nmse(dec, d_res[loc]))
        if i in kl_at:
            kl_enc.append(kl_from(d_logp, sparse(x, start=(loc, enc))))
            kl_dec.append(kl_from(d_logp, dense(x, start=(loc, dec))))
    scale = n / len(kl_enc)
    parts = {name: torch.stack(v).sum() * (scale if name.startswith("kl") else 1) for name, v in
             (("nmse_enc", nmse_enc), ("nmse_dec", nmse_dec), ("kl_enc", kl_enc), ("kl_dec", kl_dec))}
    loss = (ce + cfg.nmse_weight * (parts["nmse_enc"] + parts["nmse_dec"])
            + cfg.kl_weight * (parts["kl_enc"] + parts["kl_dec"]))
    return loss, {"ce": ce.item(), **{k: v.item() for k, v in parts.items()}}


@torch.no_grad()
def evaluate_bridges(sparse, dense, bridges: Bridges, windows: torch.Tensor,
                     batch: int = 16) -> dict:
    """Per location: NMSE both ways; the CE of both hybrid paths; the CE of each suffix with
    its residual mean-ablated there; and the fraction of loss recovered through each path:
    (CE ablated - CE hybrid) / (CE ablated - CE of the suffix model's own pass), 1 when the
    bridged residual serves the suffix as well as its own, 0 when no better than its mean."""
    sums: dict[str, float] = {}
    n_batches = 0
    for i0 in range(0, len(windows), batch):
        w = windows[i0:i0 + batch]
        x, y = w[:, :-1], w[:, 1:]

        def ce(logits, y=y):
            return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()).item()

        def add(key, v):
            sums[key] = sums.get(key, 0.0) + v

        d_logits, d_res = residuals(dense, x)
        s_logits, s_res = residuals(sparse, x)
        add("ce_dense", ce(d_logits))
        add("ce_sparse", ce(s_logits))
        for i, loc in enumerate(bridges.locations):
            enc, dec = bridges.encode(i, d_res[loc]), bridges.decode(i, s_res[loc])
            add(f"{loc}/nmse_enc", nmse(enc, s_res[loc]).item())
            add(f"{loc}/nmse_dec", nmse(dec, d_res[loc]).item())
            add(f"{loc}/ce_enc", ce(sparse(x, start=(loc, enc))))
            add(f"{loc}/ce_dec", ce(dense(x, start=(loc, dec))))
            s_mean = s_res[loc].mean((0, 1), keepdim=True).expand_as(s_res[loc])
            d_mean = d_res[loc].mean((0, 1), keepdim=True).expand_as(d_res[loc])
            add(f"{loc}/ce_sparse_ablated", ce(sparse(x, start=(loc, s_mean))))
            add(f"{loc}/ce_dense_ablated", ce(dense(x, start=(loc, d_mean))))
        n_batches += 1
    m = {k: v / n_batches for k, v in sums.items()}
    out = dict(ce_dense=m["ce_dense"], ce_sparse=m["ce_sparse"], locations={})
    for loc in bridges.locations:
        r = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith(loc + "/")}
        r["recovered_enc"] = _recovered(r["ce_sparse_ablated"], r["ce_enc"], m["ce_sparse"])
        r["recovered_dec"] = _recovered(r["ce_dense_ablated"], r["ce_dec"], m["ce_dense"])
        out["locations"][loc] = r
    return out


def _recovered(ablated: float, hybrid: float, own: float) -> float | None:
    gap = ablated - own
    return None if abs(gap) < 1e-9 else (ablated - hybrid) / gap


@torch.no_grad()
def ridge_init(bridges: Bridges, sparse, dense, windows: torch.Tensor, batch: int = 16,
               ridge: float = 1e-3) -> None:
    """Set every encoder and decoder to the ridge regression between the two models' residual
    streams on `windows` (before the encoders' AbsTopK): a start for bridges between trained
    models that gradient descent then refines. `ridge` is relative to the mean input variance."""
    d_all, s_all = {}, {}
    for i0 in range(0, len(windows), batch):
        _, d_res = residuals(dense, windows[i0:i0 + batch, :-1])
        _, s_res = residuals(sparse, windows[i0:i0 + batch, :-1])
        for loc in bridges.locations:
            d_all.setdefault(loc, []).append(d_res[loc].flatten(0, 1).float())
            s_all.setdefault(loc, []).append(s_res[loc].flatten(0, 1).float())
    for i, loc in enumerate(bridges.locations):
        h_d, h_s = torch.cat(d_all[loc]), torch.cat(s_all[loc])
        for lin, x, y in ((bridges.enc[i], h_d, h_s), (bridges.dec[i], h_s, h_d)):
            mx, my = x.mean(0), y.mean(0)
            xc, yc = (x - mx).double(), (y - my).double()
            gram = xc.T @ xc
            lam = ridge * gram.diagonal().mean()
            w = torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=gram.dtype), xc.T @ yc)
            lin.weight.copy_(w.T.float())
            lin.bias.copy_(my - mx @ w.float())


@torch.no_grad()
def residual_rms(model, windows: torch.Tensor, batch: int = 16) -> dict[str, float]:
    """Mean RMS of the residual stream at every location (what steering rescales by)."""
    sums: dict[str, float] = {}
    n = 0
    for i0 in range(0, len(windows), batch):
        _, res = residuals(model, windows[i0:i0 + batch, :-1])
        for loc, x in res.items():
            sums[loc] = sums.get(loc, 0.0) + x.float().pow(2).mean(-1).sqrt().mean().item()
        n += 1
    return {loc: v / n for loc, v in sums.items()}
