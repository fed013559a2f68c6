"""Node cards: what each circuit node does, measured, for a person to read.

For every node of a circuit:

- `top_tokens`: the current tokens at its strongest activations on the validation corpus, with
  counts: the automatic description ("fires on ...").
- `contexts`: its top-activating contexts (by |activation|), each a window of tokens with the
  node's activation on every token, for per-token highlighting.
- `task`: its mean activation at the last token of the task's clean and corrupt test prompts.
- `ablation_delta`: how much the circuit's test loss rises when this node alone is also ablated.
- `edges_in` / `edges_out`: its weight edges within the circuit.

Activations are the full model's (no ablation), so a card says what the node does in the model;
the ablation delta says what the circuit needs it for.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from ..circuits.ablation import site_activations
from ..circuits.circuit import Circuit
from ..circuits.nodes import NodeLayout
from ..circuits.taskdata import TaskData, logit_diffs, losses
from ..train import val_windows

ACTIVE = 0.1   # a node is "active" on a token at >= this fraction of its largest |activation|


def token_text(tok, ids) -> list[str]:
    return [tok.decode([int(i)]) for i in ids]


def node_cards(circuit: Circuit, model, tok, *, val_tokens: np.ndarray, test: TaskData,
               values: dict[str, torch.Tensor], windows: int = 128, contexts: int = 6,
               before: int = 14, after: int = 4, ablate_max: int = 300) -> list[dict]:
    """One card per circuit node, in model order."""
    nodes = circuit.node_ids()
    if not nodes:
        return []
    sites = sorted({n.site for n in nodes}, key=model.site_names().index)
    idx = val_windows(val_tokens, windows, model.cfg.block_size)[:, :-1]
    channels = {s: sorted(n.index for n in nodes if n.site == s) for s in sites}
    col = {n: channels[n.site].index(n.index) for n in nodes}  # the node's column in `acts`
    acts = site_activations(model, idx, flatten=False, channels=channels)
    flat_ids = idx.reshape(-1)
    T = idx.shape[1]

    # task activations at the last token, clean (even rows) and corrupt (odd rows)
    task_acts = _last_token_acts(model, test, sites)
    base = _circuit_loss(circuit, model, test, values)
    layout = NodeLayout(model)
    keep = circuit.keep_vector(model)

    edges_in: dict[str, list] = {}
    edges_out: dict[str, list] = {}
    for e in circuit.edges:
        if e.kind == "weight":
            edges_out.setdefault(str(e.src), []).append([str(e.dst), round(e.weight, 4)])
            edges_in.setdefault(str(e.dst), []).append([str(e.src), round(e.weight, 4)])

    cards = []
    for i, node in enumerate(nodes):
        a = acts[node.site][..., col[node]].reshape(-1)
        mag = a.abs()
        peak = float(mag.max())
        order = torch.argsort(mag, descending=True)
        top_tokens = Counter(tok.decode([int(flat_ids[j])]) for j in order[:50].tolist()
                             if mag[j] > 0)
        ctxs, used = [], set()
        for j in order.tolist():
            if len(ctxs) == contexts or mag[j] == 0:
                break
            w, t = divmod(j, T)
            if (w, t // (before + after)) in used:  # one context per stretch of text
                continue
            used.add((w, t // (before + after)))
            lo, hi = max(0, t - before), min(T, t + after + 1)
            ctxs.append(dict(tokens=token_text(tok, idx[w, lo:hi]),
                             acts=[round(float(x), 4) for x in acts[node.site][w, lo:hi, col[node]]],
                             at=t - lo))
        ta = task_acts[node.site][:, node.index]
        delta = None
        if i < ablate_max:
            k2 = keep.clone()
            k2[layout.flat_index(node)] = False
            delta = _circuit_loss(circuit, model, test, values, k2) - base
        kind = node.site.split(".", 2)[2]
        cards.append(dict(
            id=str(node), site=node.site, layer=int(node.site.split(".")[1]), kind=kind,
            index=node.index,
            description=_describe(kind, top_tokens, float((mag > ACTIVE * peak).float().mean())
                                  if peak > 0 else 0.0),
            top_tokens=top_tokens.most_common(8),
            active_frac=round(float((mag > ACTIVE * peak).float().mean()) if peak > 0 else 0.0, 4),
            max_abs=round(peak, 4), contexts=ctxs,
            task=dict(clean=round(float(ta[0::2].mean()), 4), corrupt=round(float(ta[1::2].mean()), 4)),
            ablation_delta=None if delta is None else round(delta, 4),
            edges_in=edges_in.get(str(node), []), edges_out=edges_out.get(str(node), [])))
    return cards


KIND_WORDS = {"attn.in": "residual channel read by attention",
              "attn.q": "query channel", "attn.k": "key channel", "attn.v": "value channel",
              "attn.out": "residual channel written by attention",
              "mlp.in": "residual channel read by the MLP", "mlp.neuron": "MLP neuron",
              "mlp.out": "residual channel written by the MLP"}


def _describe(kind: str, top: Counter, active_frac: float) -> str:
    what = KIND_WORDS.get(kind, kind)
    if not top:
        return f"{what}; never active on the sampled text"
    toks = ", ".join(repr(t) for t, _ in top.most_common(3))
    return f"{what}; strongest on {toks}; active on {100 * active_frac:.1f}% of tokens"


@torch.no_grad()
def _last_token_acts(model, data: TaskData, sites: list[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}

    def record(name, x):
        if name in sites:
            out[name] = x[torch.arange(len(data)), data.lengths - 1].float()
        return x

    with model.hooks(record):
        model(data.idx, at=data.lengths - 1)
    return out


@torch.no_grad()
def _circuit_loss(circuit, model, data, values, keep=None) -> float:
    layout = NodeLayout(model)
    keep = circuit.keep_vector(model) if keep is None else keep
    d = logit_diffs(model, data, layout.split(keep.float()), values, circuit.freeze_norm)
    return float(losses(d, data.sign, circuit.calibration["scale"]).mean())


@torch.no_grad()
def prompt_activations(circuit: Circuit, model, tok, data: TaskData, pairs: int = 6) -> list[dict]:
    """For the prompt browser: each prompt's tokens and, per token, the circuit nodes active
    there (|activation| >= ACTIVE x the node's largest on these prompts) with their values."""
    nodes = circuit.node_ids()
    sites = sorted({n.site for n in nodes}, key=model.site_names().index)
    rows = torch.arange(min(len(data), 2 * pairs))
    part = data.rows(rows)
    acts = site_activations(model, part.idx, names=sites, flatten=False) if sites else {}
    out = []
    peaks = {str(n): float(acts[n.site][..., n.index].abs().max()) for n in nodes}
    for r in range(len(part)):
        n_tok = int(part.lengths[r])
        active = []
        for ni, n in enumerate(nodes):
            a = acts[n.site][r, :n_tok, n.index]
            peak = peaks[str(n)]
            for t in torch.nonzero(a.abs() >= ACTIVE * peak).flatten().tolist() if peak > 0 else []:
                active.append([ni, t, round(float(a[t]), 4)])
        right = part.target[r] if part.sign[r] > 0 else part.alt[r]
        wrong = part.alt[r] if part.sign[r] > 0 else part.target[r]
        out.append(dict(kind="clean" if r % 2 == 0 else "corrupt", pair=r // 2,
                        tokens=token_text(tok, part.idx[r, :n_tok]),
                        right=tok.decode([int(right)]), wrong=tok.decode([int(wrong)]),
                        active=active))
    return out
