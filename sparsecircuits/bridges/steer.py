"""Steer a dense model through a node of a sparse model's circuit (PAPER.md section 11).

A circuit node at a residual read (`blocks.{l}.attn.in` or `blocks.{l}.mlp.in`, channel c) is a
channel of the sparse model's residual stream. The decoder at that location maps it to a
direction in the dense model's residual stream. The intervention acts on the dense model's
next post-norm read, the same site: at every token t it adds

    s * delta_t * v,   delta_t = act_c(counterfactual)_t - act_c(prompt)_t  (sparse model)
                       v = dec[:, c] * (rms_sparse / rms_dense) * gain_dense / gain_sparse[c]

for strengths s in [0, 1]. A post-norm value is the residual over its RMS times the norm's
gain, so v carries a change of the sparse post-norm channel into the dense post-norm read
(rms: the mean RMS of each model's residual there on the val split, stored with the bridges).
The same sweep along random directions of the same norm is the control: a node that matters
moves the answer further than almost all of them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoint import atomic_write, atomic_write_text, load, output_dir
from ..circuits.circuit import Circuit
from ..circuits.nodes import NodeId
from ..errors import UserError
from ..tasks import get_task
from ..tasks.core import answer_ids
from .store import load_bridges, load_dense

STEERABLE = {"attn.in": ("resid_pre", "ln_1"), "mlp.in": ("resid_mid", "ln_2")}
DEFAULT_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Steering:
    node: str
    prompt: str
    counterfactual: str
    answers: tuple[str, str]
    target: str                      # the answer the dense model gives on the counterfactual
    strengths: list[float]
    p_steered: dict[str, list[float]]        # answer -> P(answer) at each strength
    p_random: list[dict[str, list[float]]]   # the same, for each random direction
    p_counterfactual: dict[str, float]       # the dense model's own P on the counterfactual
    direction_norm: float
    moved: float                     # P(target) at the largest strength minus at 0
    random_as_far: int               # random directions that move P(target) at least as far
    dense_run: str
    dense_hash: str
    sparse_hash: str
    seed: int

    @property
    def n_random(self) -> int:
        return len(self.p_random)

    @property
    def other(self) -> str:
        return self.answers[1] if self.target == self.answers[0] else self.answers[0]

    def log_odds(self, curve: dict[str, list[float]]) -> list[float]:
        """log P(target) - log P(other) at each strength: what the task's loss reads."""
        return [math.log(max(t, 1e-12)) - math.log(max(o, 1e-12))
                for t, o in zip(curve[self.target], curve[self.other])]

    @property
    def moved_log_odds(self) -> float:
        lo = self.log_odds(self.p_steered)
        return lo[-1] - lo[0]

    @property
    def random_moved_log_odds(self) -> list[float]:
        return [lo[-1] - lo[0] for lo in map(self.log_odds, self.p_random)]

    def to_dict(self) -> dict:
        return {**asdict(self), "moved_log_odds": self.moved_log_odds,
                "random_moved_log_odds": self.random_moved_log_odds}

    def summary(self) -> str:
        s = self.strengths[-1]
        p0, p1 = self.p_steered[self.target][0], self.p_steered[self.target][-1]
        band = sorted(r[self.target][-1] for r in self.p_random)
        return (f"steering {self.node} at strength {s:g} moves the dense model's P({self.target!r}) "
                f"from {p0:.3g} to {p1:.3g} ({self.moved:+.3g}; on the counterfactual itself it is "
                f"{self.p_counterfactual[self.target]:.3g}); random directions of the same "
                f"norm end between {band[0]:.3g} and {band[-1]:.3g}, and {self.random_as_far} of "
                f"{self.n_random} move it as far.")

    def format(self) -> str:
        a, b = self.answers
        lines = [f"node {self.node}; prompt {self.prompt!r}; counterfactual "
                 f"{self.counterfactual!r}", "",
                 f"  {'strength':>8} {'P(' + repr(a) + ')':>10} {'P(' + repr(b) + ')':>10} "
                 f"{'random P(' + repr(self.target) + ')':>24}"]
        for j, s in enumerate(self.strengths):
            rnd = sorted(r[self.target][j] for r in self.p_random)
            lines.append(f"  {s:>8.2f} {self.p_steered[a][j]:>10.4f} {self.p_steered[b][j]:>10.4f} "
                         f"{rnd[0]:>11.4f} .. {rnd[-1]:.4f}")
        return "\n".join(lines + ["", self.summary()])

    def markdown(self, image: str | None = None) -> str:
        """A report section."""
        a, b = self.answers
        rows = "\n".join(
            f"| {s:g} | {self.p_steered[a][j]:.4f} | {self.p_steered[b][j]:.4f} | "
            f"{min(r[self.target][j] for r in self.p_random):.4f} - "
            f"{max(r[self.target][j] for r in self.p_random):.4f} |"
            for j, s in enumerate(self.strengths))
        return "\n".join([
            f"## Steering the dense model through {self.node}", "",
            f"Prompt `{self.prompt!r}`, counterfactual `{self.counterfactual!r}`; dense run "
            f"`{self.dense_run}` ({self.dense_hash}), sparse model {self.sparse_hash}, "
            f"{self.n_random} random directions (seed {self.seed}).", "",
            self.summary(), "",
            f"| strength | P({a!r}) | P({b!r}) | random directions: P({self.target!r}) |",
            "| --- | --- | --- | --- |", rows, ""]
            + ([f"![steering sweep]({image})", ""] if image else []))

    def plot(self, path: str | Path) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for r in self.p_random:
            ax.plot(self.strengths, r[self.target], color="0.75", lw=0.8, zorder=1)
        ax.plot([], [], color="0.75", lw=0.8, label=f"{self.n_random} random directions")
        ax.plot(self.strengths, self.p_steered[self.target], "o-", color="C3", lw=2, zorder=2,
                label=f"along {self.node}")
        ax.set_xlabel("strength s")
        ax.set_ylabel(f"dense P({self.target!r})")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="best", fontsize=8, frameon=False)
        ax.set_title("steering the dense model through the bridge", fontsize=9)
        fig.tight_layout()
        path = Path(path)
        atomic_write(path, lambda t: fig.savefig(t, format=path.suffix[1:] or "png", dpi=150))
        plt.close(fig)


def parse_node(text: str) -> NodeId:
    m = re.fullmatch(r"(blocks\.\d+\.[a-z]+\.[a-z]+)\[(\d+)\]", text.strip())
    if not m:
        raise UserError(f"--node {text!r} is not a node name; write it as the circuit names it, "
                        "e.g. 'blocks.1.mlp.in[17]'.")
    return NodeId(m.group(1), int(m.group(2)))


def steering_vector(model, dense, bridges, cfg, node: NodeId) -> torch.Tensor:
    """The dense post-norm direction that one unit of the sparse node's activation maps to."""
    layer, kind = node.site.split(".", 2)[1], node.site.split(".", 2)[2]
    half, ln = STEERABLE[kind]
    loc = f"blocks.{layer}.{half}"
    if not cfg.rms:
        raise UserError("the bridges have no RMS calibration (their training did not finish); "
                        "resume it with `sparsecircuits train --out RUN --resume`.")
    i = bridges.locations.index(loc)
    gain_s = getattr(model.blocks[int(layer)], ln).weight[node.index].item()
    if gain_s == 0:
        raise UserError(f"{node} has a norm gain of 0 in the sparse model, so it never carries a "
                        "value; choose another node.")
    gain_d = getattr(dense.blocks[int(layer)], ln).weight
    scale = cfg.rms["sparse"][loc] / cfg.rms["dense"][loc]
    return (bridges.dec[i].weight[:, node.index] * scale * gain_d / gain_s).detach()


def steered_logits(dense, idx: torch.Tensor, pushes: list[tuple[str, torch.Tensor, torch.Tensor]],
                   s: float) -> torch.Tensor:
    """The dense model's last-token logits with s * delta_t * v added at every token, for each
    (site, delta, v) of `pushes` (several nodes: their pushes add up)."""
    by_site: dict[str, torch.Tensor] = {}
    for site, delta, v in pushes:
        push = (s * delta)[None, :, None] * v[None, None, :]
        by_site[site] = by_site[site] + push if site in by_site else push

    def add(name, x):
        return x + by_site[name] if name in by_site else x

    with dense.hooks(add):
        return dense(idx)[0, -1].float()


@dataclass
class _Bridged:
    """What every sweep through the chosen nodes needs, loaded once."""
    model: object
    tok: object
    dense: object
    cfg: object
    circuit: Circuit
    nodes: list[NodeId]
    vs: list[torch.Tensor]          # each node's steering vector

    @property
    def name(self) -> str:
        return " + ".join(map(str, self.nodes))


def _open(run_dir, circuit: str | Path, nodes: str | list[str]) -> _Bridged:
    model, tok = load(run_dir)
    bridges, cfg = load_bridges(run_dir, model)
    dense = load_dense(cfg, model)
    circ = Circuit.load(circuit, model)
    options = [str(n) for n in circ.node_ids() if n.site.split(".", 2)[2] in STEERABLE]
    nids = []
    for node in [nodes] if isinstance(nodes, str) else nodes:
        nid = parse_node(node)
        kind = nid.site.split(".", 2)[2] if nid.site.count(".") >= 2 else ""
        if kind not in STEERABLE:
            raise UserError(f"{nid} is not at a residual read; steer a node at attn.in or "
                            "mlp.in, whose channel the bridges map into the dense model.")
        if nid.index not in circ.nodes.get(nid.site, []):
            raise UserError(f"{nid} is not in the circuit {circuit}; its steerable nodes are "
                            f"{', '.join(options[:8]) or 'none'}"
                            f"{' ...' if len(options) > 8 else ''}.")
        if nid not in nids:
            nids.append(nid)
    if not nids:
        raise UserError(f"no --node given; the circuit's steerable nodes are "
                        f"{', '.join(options[:8]) or 'none'}{' ...' if len(options) > 8 else ''}.")
    return _Bridged(model, tok, dense, cfg, circ, nids,
                    [steering_vector(model, dense, bridges, cfg, nid) for nid in nids])


def _check_sweep(strengths, n_random) -> list[float]:
    strengths = [float(s) for s in strengths]
    bad = [s for s in strengths if not (math.isfinite(s) and 0 <= s <= 1)]  # NaN fails too
    if not strengths or bad:
        raise UserError(f"--strengths {' '.join(f'{s:g}' for s in strengths) or '(none)'}: "
                        "each must be a finite number in [0, 1], e.g. 0 0.5 1.")
    if type(n_random) is not int or n_random < 1:
        raise UserError(f"--random {n_random} must be a whole number, at least 1.")
    return sorted(strengths)


def _sweep(b: _Bridged, prompt: str, counterfactual: str, answers, strengths, n_random: int,
           seed: int) -> Steering:
    ids = answer_ids(b.tok, b.circuit.task, *answers)
    if not prompt or not counterfactual:
        raise UserError("--prompt and --counterfactual must both be non-empty.")
    enc = [b.tok.encode(t, add_special_tokens=False).ids for t in (prompt, counterfactual)]
    if len(enc[0]) != len(enc[1]):
        raise UserError(f"the prompt is {len(enc[0])} tokens and the counterfactual "
                        f"{len(enc[1])}; the intervention pairs them token by token, so give a "
                        "counterfactual of the same length in tokens.")
    if len(enc[0]) > b.model.cfg.block_size:
        raise UserError(f"the prompt is {len(enc[0])} tokens, over the model's block size "
                        f"{b.model.cfg.block_size}; shorten it.")
    idx, idx_cf = (torch.tensor([e]) for e in enc)
    sites = sorted({n.site for n in b.nodes})
    _, c0 = b.model.run_with_cache(idx, names=sites)
    _, c1 = b.model.run_with_cache(idx_cf, names=sites)
    deltas = [(c1[site][0, :, c] - c0[site][0, :, c]).float() for site, c in b.nodes]
    z_cf = b.dense(idx_cf)[0, -1].float()
    target = answers[0] if z_cf[ids[0]] >= z_cf[ids[1]] else answers[1]
    p_cf = {a: round(float(z_cf.softmax(-1)[i]), 6) for a, i in zip(answers, ids)}

    def sweep(directions):
        pushes = [(n.site, d, v) for n, d, v in zip(b.nodes, deltas, directions)]
        ps = [steered_logits(b.dense, idx, pushes, s).softmax(-1) for s in strengths]
        return {a: [round(float(p[i]), 6) for p in ps] for a, i in zip(answers, ids)}

    steered = sweep(b.vs)
    g = torch.Generator().manual_seed(seed)
    randoms = []
    for _ in range(n_random):  # one random vector per node, each of that node's norm
        us = [torch.randn(v.shape, generator=g) for v in b.vs]
        randoms.append(sweep([u * (v.norm() / u.norm()) for u, v in zip(us, b.vs)]))
    moved = steered[target][-1] - steered[target][0]
    as_far = sum(r[target][-1] - r[target][0] >= moved for r in randoms)
    norm = float(torch.stack([v.norm() for v in b.vs]).norm())
    return Steering(b.name, prompt, counterfactual, tuple(answers), target, strengths,
                    steered, randoms, p_cf, round(norm, 6), round(moved, 6),
                    int(as_far), b.cfg.dense_run, b.cfg.dense_hash, b.cfg.sparse_hash, seed)


def _write(out, data: dict, plot, markdown: str) -> None:
    out = output_dir(out)
    atomic_write_text(out / "steer.json", json.dumps(data, indent=1))
    plot(out / "steer.png")
    plot(out / "steer.svg")
    atomic_write_text(out / "steer.md", markdown)


@torch.no_grad()
def steer(run_dir: str | Path, circuit: str | Path, node: str | list[str], prompt: str,
          counterfactual: str,
          *, strengths=DEFAULT_STRENGTHS, answers: tuple[str, str] | None = None,
          n_random: int = 20, seed: int = 0, out: str | Path | None = None) -> Steering:
    """Sweep the strength of the intervention through `node` of `circuit` (a circuit of the
    bridged run's sparse model; a list of nodes pushes them all at once) on the dense model;
    writes steer.json/.png/.svg/.md to `out`."""
    strengths = _check_sweep(strengths, n_random)
    b = _open(run_dir, circuit, node)
    if answers is None:
        pair = get_task(b.circuit.task_ref).pairs(1, "test", seed=0)[0]
        answers = (pair.target, pair.alt)
    result = _sweep(b, prompt, counterfactual, answers, strengths, n_random, seed)
    if out is not None:
        _write(out, result.to_dict(), result.plot, result.markdown("steer.png"))
    return result


@dataclass
class SteeringOnPairs:
    """One node steered on a task's held-out pairs: each pair's corrupt prompt pushed toward
    its clean prompt (the counterfactual), and the same along random directions."""
    node: str
    task: str
    split: str
    skipped: int                     # pairs whose two prompts differ in token count
    results: list[Steering]

    @property
    def moved(self) -> list[float]:
        return [r.moved for r in self.results]

    @property
    def random_moved(self) -> list[float]:
        return [r_[r.target][-1] - r_[r.target][0] for r in self.results for r_ in r.p_random]

    @property
    def beats_every_random(self) -> int:
        """Pairs where the node moves P(target) further than every random direction."""
        return sum(r.random_as_far == 0 for r in self.results)

    def summary(self) -> str:
        n = len(self.results)
        mean = sum(self.moved) / n
        rnd = self.random_moved
        rmean = sum(rnd) / len(rnd)
        as_far = sum(m >= mean for m in rnd)
        return (f"over {n} {self.split} pairs of {self.task}, steering {self.node} at strength "
                f"{self.results[0].strengths[-1]:g} moves the dense model's probability of the "
                f"counterfactual's answer by {mean:+.4f} on average (random directions of the "
                f"same norm: {rmean:+.4f}; {as_far} of {len(rnd)} random sweeps move it as far); "
                f"on {self.beats_every_random} of {n} pairs it moves further than all "
                f"{self.results[0].n_random} random directions. In log-odds of the two answers "
                f"it moves {self.mean_log_odds:+.3f} on average (random: "
                f"{self.mean_random_log_odds:+.3f}), further than every random direction on "
                f"{self.beats_every_random_log_odds} of {n} pairs; averaged over the pairs, "
                f"{self.random_as_far_log_odds} of {self.results[0].n_random} random directions "
                "move it as far.")

    @property
    def random_as_far_log_odds(self) -> int:
        """Random directions (the same vector on every pair: one seed) whose mean log-odds
        change over the pairs is at least the node's: the test at the level of the mean."""
        n = len(self.results)
        means = [sum(r.random_moved_log_odds[k] for r in self.results) / n
                 for k in range(self.results[0].n_random)]
        return sum(m >= self.mean_log_odds for m in means)

    @property
    def mean_log_odds(self) -> float:
        return sum(r.moved_log_odds for r in self.results) / len(self.results)

    @property
    def mean_random_log_odds(self) -> float:
        rnd = [m for r in self.results for m in r.random_moved_log_odds]
        return sum(rnd) / len(rnd)

    @property
    def beats_every_random_log_odds(self) -> int:
        return sum(r.moved_log_odds > max(r.random_moved_log_odds) for r in self.results)

    def to_dict(self) -> dict:
        return dict(node=self.node, task=self.task, split=self.split, skipped=self.skipped,
                    mean_moved=sum(self.moved) / len(self.moved),
                    mean_random_moved=sum(self.random_moved) / len(self.random_moved),
                    beats_every_random=self.beats_every_random,
                    mean_log_odds=self.mean_log_odds, mean_random_log_odds=self.mean_random_log_odds,
                    beats_every_random_log_odds=self.beats_every_random_log_odds,
                    random_as_far_log_odds=self.random_as_far_log_odds,
                    summary=self.summary(),
                    results=[r.to_dict() for r in self.results])

    def format(self) -> str:
        lines = [f"  {'pair':>4} {'target':>8} {'P at 0':>8} {'P at max':>9} {'moved':>8} "
                 f"{'random as far':>13}"]
        for i, r in enumerate(self.results):
            p = r.p_steered[r.target]
            lines.append(f"  {i:>4} {r.target!r:>8} {p[0]:>8.4f} {p[-1]:>9.4f} {r.moved:>+8.4f} "
                         f"{r.random_as_far:>6} of {r.n_random}")
        return "\n".join(lines + ["", self.summary()])

    def markdown(self, image: str | None = None) -> str:
        r0 = self.results[0]
        return "\n".join([
            f"## Steering the dense model through {self.node} on {self.task}", "",
            f"Dense run `{r0.dense_run}` ({r0.dense_hash}), sparse model {r0.sparse_hash}; "
            f"{len(self.results)} {self.split} pairs ({self.skipped} skipped: their prompts "
            f"differ in token count), {r0.n_random} random directions each (seed {r0.seed}).",
            "", self.summary(), ""] + ([f"![steering sweep]({image})", ""] if image else []))

    def plot(self, path: str | Path) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        s = self.results[0].strengths

        def change(r, curve):
            lo = r.log_odds(curve)
            return [v - lo[0] for v in lo]
        steered = [change(r, r.p_steered) for r in self.results]
        # random direction k is the same vector on every pair (one seed): its mean over the
        # pairs is what a random node would give, comparable with the node's mean
        n_pairs, n_random = len(self.results), self.results[0].n_random
        randoms = [[sum(change(r, r.p_random[k])[j] for r in self.results) / n_pairs
                    for j in range(len(s))] for k in range(n_random)]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.fill_between(s, [min(c[j] for c in randoms) for j in range(len(s))],
                        [max(c[j] for c in randoms) for j in range(len(s))], color="0.85",
                        label=f"{n_random} random directions (range of their means)")
        ax.plot(s, [sum(c[j] for c in steered) / len(steered) for j in range(len(s))], "o-",
                color="C3", lw=2, label=f"along {self.node} (mean)")
        ax.set_xlabel("strength s")
        ax.set_ylabel("change in dense log-odds\nof the counterfactual's answer")
        ax.legend(loc="best", fontsize=8, frameon=False)
        ax.set_title(f"{self.task}: {len(self.results)} {self.split} pairs", fontsize=9)
        fig.tight_layout()
        path = Path(path)
        atomic_write(path, lambda t: fig.savefig(t, format=path.suffix[1:] or "png", dpi=150))
        plt.close(fig)


@torch.no_grad()
def steer_pairs(run_dir: str | Path, circuit: str | Path, node: str | list[str], *, n: int = 32,
                split: str = "test", strengths=DEFAULT_STRENGTHS, n_random: int = 20,
                seed: int = 0, out: str | Path | None = None) -> SteeringOnPairs:
    """`steer` on `n` pairs of the circuit's task: each corrupt prompt toward its clean one."""
    strengths = _check_sweep(strengths, n_random)
    if n < 1:
        raise UserError(f"--pairs {n} must be at least 1.")
    b = _open(run_dir, circuit, node)
    results, skipped = [], 0
    for pair in get_task(b.circuit.task_ref).pairs(n, split, seed=seed):
        enc = [b.tok.encode(t, add_special_tokens=False).ids for t in (pair.corrupt, pair.clean)]
        if len(enc[0]) != len(enc[1]) or len(enc[0]) > b.model.cfg.block_size:
            skipped += 1
            continue
        results.append(_sweep(b, pair.corrupt, pair.clean, (pair.target, pair.alt), strengths,
                              n_random, seed))
    if not results:
        raise UserError(f"none of the {n} {split} pairs of {b.circuit.task} has prompts of equal "
                        "token count, which steering pairs token by token; steer one prompt "
                        "with --prompt and --counterfactual.")
    result = SteeringOnPairs(b.name, b.circuit.task, split, skipped, results)
    if out is not None:
        _write(out, result.to_dict(), result.plot, result.markdown("steer.png"))
    return result
