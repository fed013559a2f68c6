"""The measurements behind validation's checks: plain functions on the one forward pass and its
node-site hooks (`validate.py` runs them and judges the figures).

    random_matched_edges   a random circuit with the circuit's edge count on every link
    attribution_scores     per node, the summed |gradient x (activation - ablation value)|
    swapped_diffs          logit differences with some nodes taking another prompt's values
    stochastic_values      the harsh test's per-sequence values from random pretraining tokens
"""

from __future__ import annotations

import torch

from .ablation import PretrainingStats
from .circuit import weight_links
from .nodes import NodeLayout
from .search import frozen
from .taskdata import Swapped, TaskData, logit_diffs, losses


def random_matched_edges(model, keep: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random circuit (a keep vector) with as many edges as `keep` on every counted link
    (in->q, in->k, in->v, v->out, in->neuron, neuron->out of every layer), and as close to its
    node count at every site as that allows.

    The rule. Edges are drawn one at a time, uniformly among the model's nonzero weights of one
    link that has fewer edges than the circuit there (links picked in proportion to what they
    lack), and only among edges whose endpoints take no link past the circuit's count (a new
    node also meets the kept nodes of the other links it touches). An edge that would add a
    node to a site already holding the circuit's node count there is drawn only when no other
    fits, so draws reuse their own nodes the way a circuit's paths do. When no link can grow,
    sites with fewer nodes than the circuit's get random nodes that take no link past the
    circuit's count. Nodes are never trimmed, since each is the endpoint of a drawn edge. So
    no link ever has more edges than the circuit's, and every link has as many wherever the
    model's weights allow; a site can end with more nodes than the circuit's (when its edges
    need more distinct endpoints) or fewer (when every node left would add an edge).

    Random sets of as many *nodes* per site are no control in a sparse model: they have almost
    no edges between them, so every draw is the empty circuit.
    """
    layout = NodeLayout(model)
    links = [(s, d, W != 0) for s, d, W in weight_links(model)]
    circuit = layout.split(keep.bool())
    want = [int(P[circuit[d]][:, circuit[s]].sum()) for s, d, P in links]
    want_nodes = {s: int(k.sum()) for s, k in circuit.items()}
    out = {s: torch.zeros(n, dtype=torch.bool) for s, n in zip(layout.sites, layout.sizes)}
    have = [0] * len(links)
    touching: dict[str, list[tuple[int, bool]]] = {}   # site -> [(link, site is its source)]
    for i, (s, d, _) in enumerate(links):
        touching.setdefault(s, []).append((i, True))
        touching.setdefault(d, []).append((i, False))

    def gain(site, i, is_src):
        """Per node of `site`: the edges it would add to link i now (0 if already kept)."""
        s, d, P = links[i]
        new = (P & out[d][:, None]).sum(0) if is_src else (P & out[s][None, :]).sum(1)
        return new * ~out[site]

    def room(site, skip=None):
        """Per node of `site`: adding it keeps every link it touches (but `skip`) in bounds."""
        ok = torch.ones(len(out[site]), dtype=torch.bool)
        for i, is_src in touching.get(site, ()):
            if i != skip:
                ok &= have[i] + gain(site, i, is_src) <= want[i]
        return ok

    def add(site, j):
        out[site][j] = True
        for i, _ in touching.get(site, ()):
            s, d, P = links[i]
            have[i] = int(P[out[d]][:, out[s]].sum())

    def pick(mask):
        at = mask.nonzero()
        return at[int(torch.randint(len(at), (1,), generator=g))].tolist()

    stuck: set[int] = set()   # links with no edge that fits, until another edge is added
    while True:
        short = [i for i in range(len(links)) if have[i] < want[i] and i not in stuck]
        if not short:
            break
        lack = torch.tensor([float(want[i] - have[i]) for i in short])
        i = short[int(torch.multinomial(lack, 1, generator=g))]
        s, d, P = links[i]
        new_s, new_d = ~out[s], ~out[d]
        adds = (gain(s, i, True)[None, :] + gain(d, i, False)[:, None]
                + (new_d[:, None] & new_s[None, :]))
        fit = (P & (new_d[:, None] | new_s[None, :]) & (have[i] + adds <= want[i])
               & room(s, i)[None, :] & room(d, i)[:, None])
        if not fit.any():
            stuck.add(i)
            continue
        open_s = out[s] | (int(out[s].sum()) < want_nodes[s])
        open_d = out[d] | (int(out[d].sum()) < want_nodes[d])
        tidy = fit & open_d[:, None] & open_s[None, :]
        r, c = pick(tidy if tidy.any() else fit)
        add(s, c)
        add(d, r)
        stuck.clear()
    for k in torch.randperm(len(layout.sites), generator=g).tolist():
        site = layout.sites[k]
        while int(out[site].sum()) < want_nodes[site]:
            free = room(site) & ~out[site]
            if not free.any():
                break
            add(site, pick(free)[0])
    return layout.join(out)


def attribution_scores(model, data: TaskData, values, freeze_norm: bool = False,
                       batch: int = 32) -> torch.Tensor:
    """Per node (flat, in `NodeLayout` order): |dL/dx * (x - v)| summed over every sequence
    and position of `data`, at the full model, L the summed contrast loss, x the activation and
    v the node's ablation value. The paper's attribution baseline ranks nodes by it.

    Read off the one forward pass: an all-ones mask of one entry per sequence and position at
    every site (`mask_hook`: x * m + v * (1 - m)) changes nothing, and its gradient is
    dL/dm = dL/dx * (x - v) at each position. Positions after a prompt's last token get none
    (the attention is causal), so padding adds nothing."""
    layout = NodeLayout(model)
    total = {s: torch.zeros(n) for s, n in zip(layout.sites, layout.sizes)}
    with frozen(model), torch.enable_grad():
        for i in range(0, len(data), batch):
            part = data.rows(torch.arange(i, min(i + batch, len(data))))
            B, T = part.idx.shape
            masks = {s: torch.ones(B, T, n, requires_grad=True)
                     for s, n in zip(layout.sites, layout.sizes)}
            d = logit_diffs(model, part, masks, values, freeze_norm, batch=B)
            grads = torch.autograd.grad(losses(d, part.sign).sum(), list(masks.values()))
            for s, gr in zip(masks, grads):
                total[s] += gr.abs().sum((0, 1))
    return layout.join(total)


@torch.no_grad()
def swapped_diffs(model, data: TaskData, masks: dict[str, torch.Tensor], src: torch.Tensor,
                  freeze_norm: bool = False, acts: dict[str, torch.Tensor] | None = None,
                  chunk: int = 64) -> torch.Tensor:
    """Logit differences on `data` with every node where `masks` is 0 taking, at every
    position, its full-model activation on another sequence of `data`: sequence i takes those
    of sequence src[i] (`taskdata.Swapped`). Nodes where `masks` is 1 run as the model computes
    them. `acts`: `all_activations(model, data)`, if already at hand."""
    return logit_diffs(model, data, masks, Swapped(src, acts), freeze_norm, batch=chunk)


def stochastic_values(layout, keep, stats: PretrainingStats, means, n_seq, g):
    """Per-sequence ablation values: a random half of the non-circuit nodes take the activation
    of one random pretraining token (per sequence), the rest keep their mean."""
    vals = {}
    for site, sl in layout.slices().items():
        bank = stats.bank[site]
        resample = torch.rand(sl.stop - sl.start, generator=g) < 0.5
        tok = bank[torch.randint(len(bank), (n_seq,), generator=g)]          # (n_seq, dim)
        v = torch.where(resample & ~keep[sl], tok, means[site].expand_as(tok))
        vals[site] = v.unsqueeze(1)                                          # (n_seq, 1, dim)
    return vals
