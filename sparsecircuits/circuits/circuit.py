"""The `Circuit`: kept nodes, the edges between them, how it was found, and a JSON file.

Edges (docs/CIRCUITS.md has the full definition). An edge is a nonzero weight between two kept
nodes, counted in the four weight matrices of every layer:

    attn.in[i]  -> attn.q/k/v[j]    c_attn.weight[part * d_attn + j, i]
    attn.v[j]   -> attn.out[i]      attn.c_proj.weight[i, j]   (j = head * d_head + channel)
    mlp.in[i]   -> mlp.neuron[j]    c_fc.weight[j, i]
    mlp.neuron[j] -> mlp.out[i]     mlp.c_proj.weight[i, j]

`edges` (the size the paper compares) counts only these. Two more kinds of link are listed
but never counted: `qk` (query channel j and key channel j of one layer both kept: they meet in
the attention score) and `residual` (a kept write channel c, attn.out or mlp.out, and a kept
read of channel c, attn.in or mlp.in, later in the forward pass: the identity path of the
residual stream).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import SITE_KINDS
from ..errors import UserError, closest, json_type
from .ablation import Ablation, mask_hook, model_hash
from .nodes import NodeId, NodeLayout
from .pruning import PruneConfig

FORMAT = "sparsecircuits.circuit"
VERSION = 2   # 2: a typed prune config and task reference; calibration is a bounded scale


@dataclass(frozen=True)
class Edge:
    src: NodeId
    dst: NodeId
    weight: float
    kind: str = "weight"   # "weight", "qk" or "residual" (the last two carry weight 0)

    def to_list(self) -> list:
        return [self.src.site, self.src.index, self.dst.site, self.dst.index,
                round(self.weight, 6), self.kind]

    @classmethod
    def from_list(cls, x) -> Edge:
        """From `to_list`'s form; the types are checked by `check_file` first."""
        return cls(NodeId(x[0], x[1]), NodeId(x[2], x[3]), float(x[4]), x[5])


def _layer_kind(site: str) -> tuple[int, str]:
    _, layer, kind = site.split(".", 2)
    return int(layer), kind


def layer_links(model, layer: int) -> list[tuple[str, str, torch.Tensor]]:
    """The counted links of one layer: (source site, destination site, W), W the weights
    between their nodes as (destination, source) on the CPU. The one definition of where an
    edge can be: `derive_edges`, `count_edges` and the random circuits of validation read it."""
    cfg, block, p = model.cfg, model.blocks[layer], f"blocks.{layer}."
    d, da = model.site_dim("attn.in"), cfg.d_attn  # with pos_norm, position channels are nodes
    with torch.no_grad():
        qkv = block.attn.c_attn.weight.detach().float().cpu()[:, :d]
        out = [(p + "attn.in", p + f"attn.{kind}", qkv[part * da:(part + 1) * da])
               for part, kind in enumerate(("q", "k", "v"))]
        out.append((p + "attn.v", p + "attn.out", block.attn.c_proj.weight.detach().float().cpu()))
        out.append((p + "mlp.in", p + "mlp.neuron", block.mlp.c_fc.weight.detach().float().cpu()[:, :d]))
        out.append((p + "mlp.neuron", p + "mlp.out", block.mlp.c_proj.weight.detach().float().cpu()))
    return out


def weight_links(model) -> list[tuple[str, str, torch.Tensor]]:
    """`layer_links` of every layer, in forward order."""
    return [link for l in range(model.cfg.n_layer) for link in layer_links(model, l)]


def derive_edges(model, nodes: dict[str, list[int]]) -> list[Edge]:
    """Weight edges, q-k links and residual links between the kept `nodes` of `model`."""
    kept = {s: torch.as_tensor(sorted(v), dtype=torch.long) for s, v in nodes.items() if v}
    out: list[Edge] = []
    for l in range(model.cfg.n_layer):
        for src_site, dst_site, W in layer_links(model, l):
            src, dst = kept.get(src_site), kept.get(dst_site)
            if src is None or dst is None:
                continue
            sub = W[dst][:, src]
            for r, c in torch.nonzero(sub).tolist():
                out.append(Edge(NodeId(src_site, int(src[c])), NodeId(dst_site, int(dst[r])),
                                float(sub[r, c])))
        p = f"blocks.{l}."
        q, k = set(nodes.get(p + "attn.q", ())), set(nodes.get(p + "attn.k", ()))
        out += [Edge(NodeId(p + "attn.q", j), NodeId(p + "attn.k", j), 0.0, "qk")
                for j in sorted(q & k)]

    # residual links: each kept write to every later kept read of the same channel
    order = model.site_names()
    writes = [s for s in order if s.endswith((".attn.out", ".mlp.out"))]
    reads = [s for s in order if s.endswith((".attn.in", ".mlp.in"))]
    for w in writes:
        for r in reads:
            if order.index(r) > order.index(w):
                for c in sorted(set(nodes.get(w, ())) & set(nodes.get(r, ()))):
                    out.append(Edge(NodeId(w, c), NodeId(r, c), 0.0, "residual"))
    return out


def link_counts(model, keep_sets: dict[str, list[int]]) -> dict[tuple[str, str], int]:
    """Weight edges between the kept nodes, per link (source site, destination site)."""
    kept = {s: torch.as_tensor(v, dtype=torch.long) for s, v in keep_sets.items() if len(v)}
    out = {}
    for src, dst, W in weight_links(model):
        a, b = kept.get(src), kept.get(dst)
        out[(src, dst)] = 0 if a is None or b is None else int((W[b][:, a] != 0).sum())
    return out


def count_edges(model, keep_sets: dict[str, list[int]]) -> int:
    """The weight-edge count of `derive_edges`, without listing the edges (fast for big sets)."""
    return sum(link_counts(model, keep_sets).values())


@dataclass
class Circuit:
    """A set of kept nodes of one model, the edges between them, and how it was found."""
    nodes: dict[str, list[int]]            # site -> sorted kept indices (empty sites omitted)
    edges: list[Edge]
    task: str                              # the task's name
    model_hash: str
    config: PruneConfig = field(default_factory=PruneConfig)  # what it was found with
    task_ref: str = ""                     # what `get_task` needs (a task file by its path)
    loss: float | None = None              # val loss, calibrated (what the bisection hit)
    loss_uncalibrated: float | None = None
    calibration: dict = field(default_factory=lambda: {"scale": 1.0, "bound": 1.0})
    provenance: dict = field(default_factory=dict)   # run, search records, versions

    def __post_init__(self):
        self.task_ref = self.task_ref or self.task

    @property
    def ablation(self) -> Ablation:
        return self.config.ablation

    @property
    def freeze_norm(self) -> bool:
        return self.config.freeze_norm

    @property
    def target_loss(self) -> float:
        return self.config.target_loss

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_keep(cls, model, keep: torch.Tensor, task: str, **kw) -> Circuit:
        nodes = {s: v for s, v in NodeLayout(model).to_sets(keep).items() if v}
        return cls(nodes, derive_edges(model, nodes), task, model_hash(model), **kw)

    @classmethod
    def from_nodes(cls, model, nodes: dict[str, list[int]], task: str, **kw) -> Circuit:
        check_nodes(nodes, model, "circuit")
        return cls.from_keep(model, NodeLayout(model).from_sets(nodes), task, **kw)

    # ---------------------------------------------------------------- counts

    @property
    def num_nodes(self) -> int:
        return sum(len(v) for v in self.nodes.values())

    @property
    def num_edges(self) -> int:
        """Weight edges: the size the paper compares across models."""
        return sum(e.kind == "weight" for e in self.edges)

    def node_ids(self) -> list[NodeId]:
        return [NodeId(s, i) for s, idx in self.nodes.items() for i in idx]

    def counts(self) -> dict:
        """Nodes by site kind and layer, edges by kind and by destination site kind."""
        by_kind = Counter()
        for s, idx in self.nodes.items():
            by_kind[_layer_kind(s)[1]] += len(idx)
        edges = Counter()
        links = Counter()
        for e in self.edges:
            if e.kind == "weight":
                edges[f"{_layer_kind(e.src.site)[1]}->{_layer_kind(e.dst.site)[1]}"] += 1
            else:
                links[e.kind] += 1
        return {"nodes": self.num_nodes, "edges": self.num_edges,
                "nodes_by_site": {k: by_kind[k] for k in SITE_KINDS if by_kind[k]},
                "nodes_by_layer": dict(sorted(Counter(
                    _layer_kind(s)[0] for s, idx in self.nodes.items() for _ in idx).items())),
                "edges_by_kind": dict(sorted(edges.items())),
                "links": dict(sorted(links.items()))}

    # ---------------------------------------------------------------- use

    def keep_vector(self, model) -> torch.Tensor:
        self.check_model(model)
        return NodeLayout(model).from_sets(self.nodes)

    def check_model(self, model, where: str = "this circuit") -> None:
        """Refuse another model than the one the circuit was found in, and nodes that model
        does not have (a file edited by hand keeps its model's hash)."""
        h = model_hash(model)
        if h != self.model_hash:
            raise UserError(f"{where} was found in model {self.model_hash} but is being "
                            f"applied to model {h}; load the run it came from "
                            f"({self.provenance.get('run_dir') or 'see its provenance'}).")
        check_nodes(self.nodes, model, where)

    @contextlib.contextmanager
    def applied(self, model, values: dict[str, torch.Tensor]):
        """Inside the block, `model` runs with every node outside the circuit held at `values`
        (its ablation values: see `circuits.ablation_values`)."""
        layout = NodeLayout(model)
        masks = layout.split(self.keep_vector(model).float())
        with model.hooks(mask_hook(masks, values)):
            yield model

    # ---------------------------------------------------------------- files

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "task": self.task,
                "task_ref": self.task_ref, "model_hash": self.model_hash,
                "counts": self.counts(), "loss": self.loss,
                "loss_uncalibrated": self.loss_uncalibrated, "calibration": self.calibration,
                "config": self.config.to_dict(), "nodes": self.nodes,
                "edges": [e.to_list() for e in self.edges], "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict, where: str = "circuit") -> Circuit:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(f"{where} is not a sparsecircuits circuit file (made by "
                            "`sparsecircuits prune`).")
        if d.get("version") != VERSION:
            raise UserError(f"{where} has circuit format version {d.get('version')}; this "
                            f"sparsecircuits reads version {VERSION} (older files were judged "
                            "with a calibration that could pass a bias): prune again.")
        check_file(d, where)
        try:
            return cls(nodes={s: list(v) for s, v in d["nodes"].items()},
                       edges=[Edge.from_list(e) for e in d["edges"]], task=d["task"],
                       model_hash=d["model_hash"], config=PruneConfig.from_dict(d["config"]),
                       task_ref=d.get("task_ref") or d["task"], loss=d.get("loss"),
                       loss_uncalibrated=d.get("loss_uncalibrated"),
                       calibration=dict(d["calibration"]), provenance=d.get("provenance", {}))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, UserError) as e:
            raise UserError(f"{where} is damaged ({type(e).__name__}: {e}); prune again.") from None

    def save(self, path: str | Path) -> Path:
        from ..checkpoint import atomic_write_text, output_dir
        path = Path(path)
        output_dir(path.parent)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, model=None) -> Circuit:
        """The one reader of circuit files: the file's structure is checked (`check_file`), and
        with `model`, that it is the model the circuit was found in and has every node it
        lists (`check_model`), so a command fails on a bad file before it runs anything."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"circuit file {path} does not exist; make one with "
                            "`sparsecircuits prune RUN_DIR --task NAME --out FILE`.")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"circuit file {path} is not valid JSON ({e}); prune again.") from None
        circuit = cls.from_dict(d, str(path))
        if model is not None:
            circuit.check_model(model, str(path))
        return circuit

    def summary(self) -> str:
        c = self.counts()
        loss = (f", val loss {self.loss:.3f} ({self.loss_uncalibrated:.3f} uncalibrated)"
                if self.loss is not None else "")
        return f"{self.task}: {c['nodes']} nodes, {c['edges']} edges{loss}"

    def __repr__(self) -> str:
        return f"Circuit({self.summary()})"

    def _repr_html_(self) -> str:
        from ..doc import Doc
        c = self.counts()
        doc = Doc().p(f"Circuit for {self.task}: {c['nodes']} nodes, {c['edges']} edges "
                      f"(model {self.model_hash}, {self.ablation} ablation)")
        rows = [[f"nodes at {k}", n] for k, n in c["nodes_by_site"].items()]
        rows += [[f"edges {k}", n] for k, n in c["edges_by_kind"].items()]
        if self.loss is not None:
            rows.append(["val loss (calibrated / uncalibrated)",
                         f"{self.loss:.3f} / {self.loss_uncalibrated:.3f}"])
            rows.append(["calibration scale (bound)", f"{self.calibration['scale']:.3f} "
                                                      f"({self.calibration['bound']:.3f})"])
        return doc.table(["", ""], rows).html_body()


# ---------------------------------------------------------------- checks of a circuit file

def _is_int(v) -> bool:
    return type(v) is int  # not a bool, not a float that happens to be whole


def _number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def check_file(d: dict, where: str) -> None:
    """The structure of a circuit file, before any of it is used: `nodes` a mapping of site
    names to lists of whole numbers >= 0 with no node twice, every edge between listed nodes,
    and the figures numbers. Each failure is one line naming the file, the node and the fix."""
    nodes = d.get("nodes")
    if not isinstance(nodes, dict):
        raise UserError(f"{where}: 'nodes' is a JSON {json_type(nodes)}, but it must be an "
                        "object mapping each site to its node indices, e.g. "
                        '{"blocks.0.mlp.neuron": [3, 17]}; fix the file or prune again.')
    for site, idx in nodes.items():
        if not isinstance(idx, list):
            raise UserError(f"{where}: the nodes of site '{site}' are a JSON {json_type(idx)}, "
                            "but must be a list of indices, e.g. [3, 17]; fix the file or "
                            "prune again.")
        seen = set()
        for i in idx:
            if not _is_int(i) or i < 0:
                raise UserError(f"{where}: node {site}[{json.dumps(i)}] has no valid index: an "
                                "index is a whole number from 0 (no sign, no decimal point); "
                                "fix the file or prune again.")
            if i in seen:
                raise UserError(f"{where}: node {site}[{i}] is listed twice; list each node "
                                "once (or prune again).")
            seen.add(i)
    edges = d.get("edges")
    if not isinstance(edges, list):
        raise UserError(f"{where}: 'edges' is a JSON {json_type(edges)}, but must be a list "
                        "of [site, index, site, index, weight, kind]; prune again.")
    kinds = ("weight", "qk", "residual")
    for e in edges:
        if not (isinstance(e, list) and len(e) == 6 and isinstance(e[0], str)
                and _is_int(e[1]) and isinstance(e[2], str) and _is_int(e[3])
                and _number(e[4]) and e[5] in kinds):
            raise UserError(f"{where}: edge {json.dumps(e)[:80]} is not [site, index, site, "
                            f"index, weight, kind] with kind one of {', '.join(kinds)}; fix "
                            "the file or prune again.")
        for site, i in ((e[0], e[1]), (e[2], e[3])):
            if i not in nodes.get(site, ()):
                raise UserError(f"{where}: edge {e[0]}[{e[1]}] -> {e[2]}[{e[3]}] joins "
                                f"{site}[{i}], which 'nodes' does not list; an edge runs "
                                "between kept nodes only: add the node, remove the edge, or "
                                "prune again.")
    for key in ("task", "model_hash"):
        if not isinstance(d.get(key), str) or not d.get(key):
            raise UserError(f"{where}: '{key}' must be a non-empty string; prune again.")
    for key in ("loss", "loss_uncalibrated"):
        if d.get(key) is not None and not _number(d[key]):
            raise UserError(f"{where}: '{key}' = {json.dumps(d[key])} must be a finite number "
                            "or null; prune again.")
    cal = d.get("calibration")
    if not (isinstance(cal, dict) and _number(cal.get("scale")) and cal["scale"] > 0
            and _number(cal.get("bound", 1.0)) and cal.get("bound", 1.0) > 0):
        raise UserError(f"{where}: 'calibration' must hold a 'scale' above 0 (and its 'bound', "
                        "above 0); prune again.")
    if not isinstance(d.get("provenance", {}), dict) or not isinstance(
            d.get("provenance", {}).get("run_dir", ""), str):
        raise UserError(f"{where}: 'provenance' must be an object whose run_dir is a folder "
                        "path; fix the file or prune again.")


def check_nodes(nodes: dict[str, list[int]], model, where: str) -> None:
    """Every site is one of `model`'s and every index within its width."""
    layout = NodeLayout(model)
    for site, idx in nodes.items():
        if site not in layout.sites:
            raise UserError(f"{where}: node site '{site}' does not exist in this model "
                            f"(blocks.0 to blocks.{model.cfg.n_layer - 1}, each with "
                            f"{', '.join(SITE_KINDS)}){closest(site, layout.sites)}; fix the "
                            "name or prune again.")
        n = layout.sizes[layout.sites.index(site)]
        for i in idx:
            if not _is_int(i) or not 0 <= i < n:
                raise UserError(f"{where}: node {site}[{i}] is out of range: {site} has {n} "
                                f"nodes, indices 0 to {n - 1}; fix the index or prune again.")


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
