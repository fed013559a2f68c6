"""Watch validated circuits while a model runs, and flag where the model leaves them.

    with sc.monitor(model, [circuit], tok=tok, corpus=corpus) as mon:
        logits = model(ids)            # unchanged: the monitor only reads
    mon.records                         # one dict per (sequence, position, circuit)

For each circuit, at the watched positions (the last token by default, or every token):

- `engagement`: the fraction of the circuit's nodes active (|activation| at least `ACTIVE` of the
  node's largest on the task's test prompts), beside the same fraction on those prompts;
- `agree`: whether the circuit alone (every other node at its ablation value, one extra forward
  pass) picks the same one of the task's two answers as the full model, with both logit
  differences `diff_model` and `diff_circuit`;
- `share`: `diff_circuit / diff_model`, how much of the model's difference the circuit carries;
- `anomaly`: how far the circuit's node activations lie from their distribution on the task's
  test prompts: a robust z-score per node (median, and MAD or the standard deviation, the larger:
  AbsTopK leaves most nodes' MAD at 0) and one combined score, the squared
  Mahalanobis distance (shrunk covariance) in units of its 99th percentile on those prompts, so
  1 is the edge of what validation saw;
- `alerts`: the measures that cross the policy's thresholds (`Policy`, a small TOML file).

A task whose answers vary between pairs (indentation widths) is watched for its most common
pair of answers. The reference statistics are measured once on the task's test pairs (of that
answer pair) and kept beside the circuit file (`NAME.reference.json`, bound to the circuit and
the model). The cheap mode (`full=False`) skips the circuit-alone pass: no `agree` or
`share`. The monitor plugs into the one forward pass through the node-site hooks; the logits
it returns are the model's own.
"""

from __future__ import annotations

import contextlib
from collections import Counter
import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .circuits.circuit import Circuit
from .circuits.taskdata import TaskData
from .errors import UserError, closest, json_type
from .tasks import get_task
from .tasks.core import answer_ids

ACTIVE = 0.1       # a node is active at >= this fraction of its largest |activation| on the task
SHRINK = 0.1       # covariance shrinkage towards its diagonal mean, for the combined score
REF_PAIRS = 128


# ---------------------------------------------------------------------------- policy

@dataclass
class Thresholds:
    disagree: bool = True          # alert when the circuit alone picks the other answer
    min_share: float = 0.25        # alert below this share of the model's logit difference
    max_anomaly: float = 4.0       # alert above this combined score (1 = reference 99th pct.)
    max_node_z: float = 8.0        # alert when any node's robust z-score exceeds this
    min_engagement: float = 0.5    # alert below this fraction of the reference engagement


# The values a threshold can meaningfully take (a file's value outside is refused): the two
# fractions in [0, 1] (0 never alerts, 1 alerts below the full share or the reference's
# engagement), the two scores above 0 (an alert that can always fire is no threshold). Every
# value must be finite: NaN never compares, so its alert could never fire.
def _fraction(v):
    return 0 <= v <= 1


def _positive(v):
    return v > 0


RANGES = {"min_share": (_fraction, "in [0, 1]"), "min_engagement": (_fraction, "in [0, 1]"),
          "max_anomaly": (_positive, "above 0"), "max_node_z": (_positive, "above 0")}


@dataclass
class Policy:
    """Alert thresholds: `default`, and per circuit (by its task name) overrides."""
    default: Thresholds = field(default_factory=Thresholds)
    circuits: dict[str, Thresholds] = field(default_factory=dict)
    source: str = ""               # the file it was read from, for messages

    def for_circuit(self, name: str) -> Thresholds:
        return self.circuits.get(name, self.default)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """A TOML file: `[default]` and `[circuit.TASK]` tables of `Thresholds` fields."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"policy file {path} does not exist; pass a TOML file or leave "
                            "--policy out for the default policy.")
        try:
            d = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"policy file {path} is not valid TOML ({e}).") from None
        unknown = set(d) - {"default", "circuit"}
        if unknown:
            raise UserError(f"policy file {path} has the table [{sorted(unknown)[0]}]; use "
                            "[default] and [circuit.TASK].")
        default = _thresholds(d.get("default", {}), Thresholds(), path, "default")
        circuits = d.get("circuit", {})
        if not isinstance(circuits, dict):
            raise UserError(f"policy file {path}: 'circuit' must be tables [circuit.TASK], one "
                            "per watched circuit.")
        per = {name: _thresholds(t, default, path, f"circuit.{name}")
               for name, t in circuits.items()}
        return cls(default, per, str(path))

    def check_names(self, watched: list[str]) -> None:
        """Refuse a [circuit.NAME] table for a circuit not being watched: a misspelt task
        name would otherwise leave that circuit on the default thresholds without a word."""
        for name in self.circuits:
            if name not in watched:
                raise UserError(f"policy file {self.source or 'policy'}: [circuit.{name}] names "
                                f"no circuit being watched (watched: {', '.join(watched)})"
                                f"{closest(name, watched)}; name a watched circuit's task or "
                                "remove the table.")


def _thresholds(d, base: Thresholds, path: Path, where: str) -> Thresholds:
    if not isinstance(d, dict):
        raise UserError(f"policy file {path}: [{where}] must be a table of thresholds.")
    known = set(Thresholds.__dataclass_fields__)
    for k, v in d.items():
        if k not in known:
            raise UserError(f"policy file {path}, [{where}]: unknown key '{k}'"
                            f"{closest(k, known)}; known: {', '.join(sorted(known))}.")
        want = type(getattr(base, k))
        if not (type(v) is want or (want is float and type(v) is int)):  # bool is no number
            raise UserError(f"policy file {path}, [{where}]: {k} = {v!r} should be a "
                            f"{'true or false' if want is bool else 'number'}.")
        if k in RANGES:
            ok, text = RANGES[k]
            if not (math.isfinite(v) and ok(v)):
                raise UserError(f"policy file {path}, [{where}]: {k} = {v!r} must be finite and "
                                f"{text}.")
    return Thresholds(**{**asdict(base), **d})


# ---------------------------------------------------------------------------- reference

@dataclass
class Reference:
    """A circuit's nodes on its task's test prompts, at the answer position."""
    key: str                       # the circuit and model it belongs to
    nodes: list[str]               # "site[index]", in the circuit's order
    target: str                    # the task's two answers
    alt: str
    active_at: list[float]         # per node: ACTIVE x its largest |activation|
    median: list[float]
    scale: list[float]             # 1.4826 x MAD, or the standard deviation if larger
    mean: list[float]
    precision: list[list[float]]   # inverse of the shrunk covariance
    d2_q99: float                  # 99th percentile of the squared distance on these prompts
    engagement: float              # mean fraction of nodes active
    share: float                   # median share of the logit difference
    agreement: float               # fraction of prompts where circuit and model agree
    prompts: int


def reference_path(circuit_path: str | Path) -> Path:
    """Where a circuit file's reference statistics live: NAME.reference.json beside it, or,
    for a circuit shipped inside the package, under the cache home."""
    p = Path(circuit_path).resolve()
    package = Path(__file__).resolve().parent
    if package in p.parents:
        from .corpus import cache_home
        rel = p.relative_to(package).with_suffix("")
        return cache_home() / "references" / ("-".join(rel.parts) + ".reference.json")
    return p.with_name(p.stem + ".reference.json")


REFERENCE_VERSION = 1  # raised whenever the reference statistics are measured differently


def circuit_key(circuit: Circuit) -> str:
    """What a reference is bound to: the circuit, its model, and how references are measured."""
    text = json.dumps([circuit.model_hash, circuit.nodes, circuit.task_ref, str(circuit.ablation),
                       REFERENCE_VERSION], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _node_list(circuit: Circuit) -> list[tuple[str, int]]:
    return [(n.site, n.index) for n in circuit.node_ids()]


@torch.no_grad()
def measure_reference(circuit: Circuit, model, tok, values, n: int = REF_PAIRS) -> Reference:
    """The reference statistics of `circuit` on up to `n` pairs of its task's test split."""
    task = get_task(circuit.task_ref)
    pairs = task.pairs(n, "test", seed=0, at_most=True)
    if not pairs:
        raise UserError(f"task '{task.name}' makes no test pairs to measure the circuit on.")
    # a task whose answers vary (indentation widths) is watched for its most common pair
    common = Counter(frozenset((p.target, p.alt)) for p in pairs).most_common(1)[0][0]
    pairs = [p for p in pairs if frozenset((p.target, p.alt)) == common]
    target, alt = pairs[0].target, pairs[0].alt
    data = TaskData.from_pairs(tok, task.name, pairs, model.cfg.block_size)
    t_id, a_id = answer_ids(tok, task.name, target, alt)
    nodes = _node_list(circuit)
    device = next(model.parameters()).device
    acts, d_model, d_circ = [], [], []
    for i in range(0, len(data), 64):
        part = data.rows(torch.arange(i, min(i + 64, len(data))))
        x, at = part.idx.to(device), (part.lengths - 1).to(device)
        rec = _Recorder(nodes)
        with model.hooks(rec):
            z = model(x, at=at).float().cpu()
        acts.append(rec.take(at.cpu()))
        d_model.append(z[:, t_id] - z[:, a_id])
        with circuit.applied(model, values):
            zc = model(x, at=at).float().cpu()
        d_circ.append(zc[:, t_id] - zc[:, a_id])
    X = torch.cat(acts).double()
    dm, dc = torch.cat(d_model).double(), torch.cat(d_circ).double()
    peak = X.abs().max(0).values
    active_at = ACTIVE * peak
    median = X.median(0).values
    mad = (X - median).abs().median(0).values * 1.4826
    # AbsTopK leaves most nodes at 0 on most prompts, so their MAD is 0: the spread then comes
    # from the standard deviation (never below a trace of the node's scale)
    scale = torch.maximum(torch.maximum(mad, X.std(0) if len(X) > 1 else mad), 1e-6 * (peak + 1))
    mean = X.mean(0)
    precision = _precision(X)
    d2 = _mahalanobis(X, mean, precision)
    engaged = (X.abs() >= active_at).double().mean(1)
    share = (dc / dm).median()
    return Reference(
        key=circuit_key(circuit), nodes=[f"{s}[{i}]" for s, i in nodes], target=target, alt=alt,
        active_at=active_at.tolist(), median=median.tolist(), scale=scale.tolist(),
        mean=mean.tolist(), precision=precision.tolist(),
        d2_q99=max(float(torch.quantile(d2, 0.99)), 1e-9), engagement=float(engaged.mean()),
        share=float(share), agreement=float((torch.sign(dc) == torch.sign(dm)).double().mean()),
        prompts=len(X))


def _precision(X: torch.Tensor) -> torch.Tensor:
    n = X.shape[1]
    S = torch.cov(X.T).reshape(n, n) if len(X) > 1 else torch.zeros(n, n, dtype=X.dtype)
    avg = float(S.diagonal().mean()) if n else 0.0
    floor = max(avg, 1e-12)
    shrunk = (1 - SHRINK) * S + SHRINK * floor * torch.eye(n, dtype=X.dtype)
    return torch.linalg.pinv(shrunk, hermitian=True)


def _mahalanobis(X: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    D = X - mean
    return ((D @ precision) * D).sum(1)


def load_reference(circuit: Circuit, path: Path) -> Reference | None:
    """The reference statistics kept at `path`, or None when there are none for this circuit
    (none yet, or of an earlier version of it: measured again). A file that is not what the
    monitor wrote is refused, not overwritten: it may be someone's edit."""
    if not path.is_file():
        return None
    fix = "delete it, and the monitor measures the statistics again."
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON, so it holds no reference statistics; "
                        f"{fix}") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} does not hold a JSON object of reference statistics; {fix}")
    if d.get("key") != circuit_key(circuit):
        return None  # of another circuit, model or way of measuring: measured again
    if set(d) != set(Reference.__dataclass_fields__):
        raise UserError(f"{path} does not hold the reference statistics the monitor writes; "
                        f"{fix}")
    problem = _reference_problem(d, [f"{s}[{i}]" for s, i in _node_list(circuit)])
    if problem:
        raise UserError(f"{path}: {problem}; {fix}")
    return Reference(**d)


def _reference_problem(d: dict, nodes: list[str]) -> str | None:
    """What is wrong with reference statistics `d` of a circuit with `nodes`, if anything."""
    def finite(v):
        return type(v) in (int, float) and math.isfinite(v)

    def vector(v):
        return isinstance(v, list) and len(v) == n and all(map(finite, v))
    n = len(nodes)
    if d["nodes"] != nodes:
        return "its nodes are not the circuit's"
    for k in ("target", "alt"):
        if not isinstance(d[k], str):
            return f"'{k}' is not an answer string"
    for k in ("active_at", "median", "scale", "mean"):
        if not vector(d[k]):
            return f"'{k}' is not {n} finite numbers, one per node"
    if any(v <= 0 for v in d["scale"]):
        return "'scale' has a value <= 0, by which a z-score would divide"
    if not (isinstance(d["precision"], list) and len(d["precision"]) == n
            and all(map(vector, d["precision"]))):
        return f"'precision' is not a {n} x {n} matrix of finite numbers"
    if not (finite(d["d2_q99"]) and d["d2_q99"] > 0):
        return "'d2_q99' is not a number above 0"
    for k in ("engagement", "agreement"):
        if not (finite(d[k]) and 0 <= d[k] <= 1):
            return f"'{k}' is not a fraction in [0, 1]"
    if not finite(d["share"]):
        return "'share' is not a finite number"
    if not (type(d["prompts"]) is int and d["prompts"] > 0):
        return "'prompts' is not a count above 0"
    return None


# ---------------------------------------------------------------------------- monitor

class _Recorder:
    """A node-site hook keeping the circuit's channels of every site it watches."""

    def __init__(self, nodes: list[tuple[str, int]]):
        self.channels: dict[str, list[int]] = {}
        for s, i in nodes:
            self.channels.setdefault(s, []).append(i)
        self.order = nodes
        self.seen: dict[str, torch.Tensor] = {}

    def __call__(self, name, x):
        if name in self.channels:
            self.seen[name] = x.detach()[..., self.channels[name]].float().cpu()
        return x

    def take(self, at: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_nodes) at positions `at` (B,), or (B, T, n_nodes) for every position."""
        cols = []
        pos = {s: 0 for s in self.channels}
        for s, _ in self.order:
            t = self.seen[s][..., pos[s]]
            pos[s] += 1
            cols.append(t if at is None else t[torch.arange(len(t)), at])
        self.seen = {}
        return torch.stack(cols, -1)


@dataclass
class Watched:
    name: str
    circuit: Circuit
    values: object
    reference: Reference
    thresholds: Thresholds
    t_id: int
    a_id: int


class Monitor:
    """Records the measures of every watched circuit on every forward pass of `model` inside
    the `with` block (see the module's docstring). `records` holds one dict per sequence,
    position and circuit; `positions="all"` watches every token instead of the last."""

    def __init__(self, model, watched: list[Watched], full: bool = True,
                 positions: str = "last"):
        if positions not in ("last", "all"):
            raise UserError(f"positions='{positions}' is unknown; use 'last' or 'all'.")
        self.model, self.watched, self.full, self.positions = model, watched, full, positions
        self.records: list[dict] = []
        self.sequences = 0
        self._inner = False

    def __enter__(self) -> Monitor:
        self._forward = self.model.forward
        self.model.forward = self._watched_forward  # the instance's own: every call comes here
        return self

    def __exit__(self, *exc):
        del self.model.forward  # back to the class's forward
        return False

    def _watched_forward(self, idx, at=None, start=None):
        if self._inner or start is not None:
            return self._forward(idx, at=at, start=start)
        nodes = [(s, i) for w in self.watched for s, i in _node_list(w.circuit)]
        rec = _Recorder(nodes)
        with self.model.hooks(rec):
            logits = self._forward(idx, at=at)
        with torch.no_grad():
            self._measure(idx, at, logits.detach().float().cpu(), rec)
        return logits

    @torch.no_grad()
    def _measure(self, idx, at, logits, rec: _Recorder) -> None:
        B, T = idx.shape
        if at is not None:
            pos = at.view(-1, 1).cpu()
            z = logits.unsqueeze(1)
        elif self.positions == "last":
            pos = torch.full((B, 1), T - 1)
            z = logits[:, -1:]
        else:
            pos = torch.arange(T).expand(B, T)
            z = logits
        acts = rec.take()  # (B, T or 1, all watched nodes)
        if acts.shape[1] == T:
            acts = acts.gather(1, pos.unsqueeze(-1).expand(-1, -1, acts.shape[-1]))
        zc = {}
        if self.full:
            self._inner = True
            try:
                for w in self.watched:
                    with w.circuit.applied(self.model, w.values):
                        out = self._forward(idx, at=at).detach().float().cpu()
                    zc[w.name] = (out.unsqueeze(1) if at is not None
                                  else out[:, -1:] if self.positions == "last" else out)
            finally:
                self._inner = False
        col = 0
        for w in self.watched:
            n = len(w.reference.nodes)
            x = acts[..., col:col + n].double()
            col += n
            self._records(w, pos, x, z, zc.get(w.name))
        self.sequences += B

    def _records(self, w: Watched, pos, x, z, zc) -> None:
        ref = w.reference
        median, scale, mean, precision, active_at = (
            torch.tensor(v, dtype=torch.float64)
            for v in (ref.median, ref.scale, ref.mean, ref.precision, ref.active_at))
        B, P, n = x.shape
        flat = x.reshape(-1, n)
        zs = ((flat - median) / scale).reshape(B, P, n)
        d2 = (_mahalanobis(flat, mean, precision) / ref.d2_q99).reshape(B, P)
        engaged = (x.abs() >= active_at).double().mean(-1) if n else torch.zeros(B, P)
        dm = (z[..., w.t_id] - z[..., w.a_id]).double()
        dc = None if zc is None else (zc[..., w.t_id] - zc[..., w.a_id]).double()
        th = w.thresholds
        for b in range(B):
            for p in range(P):
                r = dict(sequence=self.sequences + b, position=int(pos[b, p]), circuit=w.name,
                         engagement=round(float(engaged[b, p]), 4),
                         engagement_reference=round(ref.engagement, 4),
                         diff_model=round(float(dm[b, p]), 4),
                         anomaly=round(float(d2[b, p]), 4),
                         node_z_max=round(float(zs[b, p].abs().max()), 3) if n else 0.0,
                         node_z={node: round(float(v), 3)
                                 for node, v in zip(ref.nodes, zs[b, p].tolist())})
                if dc is not None:
                    d = float(dc[b, p])
                    m = float(dm[b, p])
                    r.update(diff_circuit=round(d, 4), agree=(d > 0) == (m > 0),
                             share=round(d / m, 4) if m != 0 else None)
                r["alerts"] = alerts(r, th, ref)
                self.records.append(r)


def alerts(r: dict, th: Thresholds, ref: Reference) -> list[str]:
    """The measures of record `r` that cross the thresholds."""
    out = []
    if th.disagree and r.get("agree") is False:
        out.append("disagree")
    share = r.get("share")
    if share is not None and share < th.min_share:
        out.append("low share")
    if r["anomaly"] > th.max_anomaly:
        out.append("anomaly")
    if r["node_z_max"] > th.max_node_z:
        out.append("node out of range")
    if ref.engagement > 0 and r["engagement"] < th.min_engagement * ref.engagement:
        out.append("disengaged")
    return out


def watch(circuit: Circuit, model, tok, stats, *, path: str | Path | None = None,
          policy: Policy | None = None, log=print) -> Watched:
    """A circuit ready to monitor: its ablation values, its reference statistics (measured on
    its task's test pairs, or read from `NAME.reference.json` beside `path`), its thresholds."""
    from .checkpoint import atomic_write_text
    from .circuits.search import circuit_values
    circuit.check_model(model)
    if not circuit.num_nodes:
        raise UserError(f"circuit '{circuit.task}' has no nodes (the model answers the task "
                        "without any: its embeddings and bigram table do); there is nothing to "
                        "watch.")
    values = circuit_values(circuit, model, tok, stats)
    if not isinstance(values, dict):
        raise UserError(f"circuit '{circuit.task}' was found with resample ablation, whose "
                        "values come from other prompts of a task; the monitor needs fixed "
                        "values: prune it with --ablation mean.")
    ref_path = reference_path(path) if path else None
    ref = load_reference(circuit, ref_path) if ref_path else None
    if ref is None:
        if log:
            log(f"measuring the reference of circuit '{circuit.task}' on its test pairs ...")
        ref = measure_reference(circuit, model, tok, values)
        if ref_path:
            ref_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(ref_path, json.dumps(asdict(ref)))
    t_id, a_id = answer_ids(tok, circuit.task, ref.target, ref.alt)
    name = circuit.task
    return Watched(name, circuit, values, ref, (policy or Policy()).for_circuit(name), t_id,
                   a_id)


@contextlib.contextmanager
def monitor(model, circuits, policy: Policy | str | Path | None = None, *, tok=None,
            corpus=None, full: bool = True, positions: str = "last", log=print):
    """`with monitor(model, circuits) as mon: model(ids)`: see the module's docstring.

    `circuits`: `Circuit`s or circuit files. The tokenizer and corpus (for the ablation values)
    default to those of the run each circuit was found in."""
    from .circuits.ablation import PretrainingStats
    from .circuits.search import open_run
    if isinstance(policy, (str, Path)):
        policy = Policy.load(policy)
    loaded = []  # every circuit read and checked before the model runs
    for c in circuits:
        if isinstance(c, (str, Path)):
            loaded.append((Path(c), Circuit.load(c, model)))
        else:
            c.check_model(model)
            loaded.append((None, c))
    names = [c.task for _, c in loaded]
    if len(set(names)) != len(names):
        raise UserError("two of the circuits watch the same task; monitor one circuit per task.")
    if policy is not None:
        policy.check_names(names)
    watched = []
    for path, c in loaded:
        t, cp = tok, corpus
        if t is None or cp is None:
            run = c.provenance.get("run_dir")
            if not run:
                raise UserError(f"circuit '{c.task}' does not record its run; pass tok= and "
                                "corpus=.")
            _, t2, c2 = open_run(run)
            t, cp = t or t2, cp or c2
        stats = PretrainingStats.cached(model, cp, log=log)
        watched.append(watch(c, model, t, stats, path=path, policy=policy, log=log))
    with Monitor(model, watched, full=full, positions=positions) as mon:
        yield mon


def auroc(scores, labels) -> float | None:
    """The probability that a positive scores above a negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


__all__ = ["Monitor", "Policy", "Reference", "Thresholds", "alerts", "auroc",
           "measure_reference", "monitor", "reference_path", "watch"]


# ---------------------------------------------------------------------------- the command

ALERT_NAMES = ("disagree", "low share", "anomaly", "node out of range", "disengaged")
FLAGGED_SHOWN = 500   # the page lists at most this many flagged records, the most anomalous


def read_inputs(path: str | Path, tok, block_size: int) -> list[tuple[str, list[int]]]:
    """(name, token ids) of each input: a folder's `.py` files in windows of `block_size`
    tokens; a `.jsonl` file's objects (`text`, optional `id`); otherwise one prompt per line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input {path} does not exist; pass a text file (one prompt a line), a "
                        "JSONL file or a folder of .py files.")
    out: list[tuple[str, list[int]]] = []
    if path.is_dir():
        for f in sorted(path.rglob("*.py")):
            try:
                ids = tok.encode(f.read_text(encoding="utf-8"), add_special_tokens=False).ids
            except (UnicodeDecodeError, OSError):
                continue
            rel = f.relative_to(path)
            out += [(f"{rel}:{i // block_size}", ids[i:i + block_size])
                    for i in range(0, len(ids), block_size) if ids[i:i + block_size]]
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UserError(f"input {path} is not UTF-8 text.") from None
        for n, line in enumerate(lines, 1):
            if "\0" in line:  # a binary file can be valid UTF-8; no prompt holds a NUL
                raise UserError(f"input {path}, line {n}: holds a NUL byte, so the file is not "
                                "text; pass a text file (one prompt a line), a JSONL file or a "
                                "folder of .py files.")
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    obj = json.loads(line)
                    text, name = obj["text"], str(obj.get("id", f"line {n}"))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f"{path}, line {n}: expected a JSON object with a \"text\" "
                                    "field.") from None
                if not isinstance(text, str):
                    raise UserError(f"{path}, line {n}: \"text\" is a JSON "
                                    f"{json_type(text)}, but must be a string holding the "
                                    "prompt; quote it.")
            else:
                text, name = line, f"line {n}"
            ids = tok.encode(text, add_special_tokens=False).ids[-block_size:]
            if ids:
                out.append((name, ids))
    if not out:
        raise UserError(f"input {path} holds no prompts (or no .py files); give it some.")
    return out


@torch.no_grad()
def active_nodes(model, w: Watched, ids: list[int]) -> list[list[str]]:
    """For each token of `ids`, the circuit's nodes active there (at least `ACTIVE` of their
    largest |activation| on the task): the token view lights them."""
    nodes = _node_list(w.circuit)
    rec = _Recorder(nodes)
    with model.hooks(rec):
        model(torch.tensor([ids]))
    acts = rec.take()[0]  # (T, n)
    on = acts.abs() >= torch.tensor(w.reference.active_at, dtype=acts.dtype)
    return [[w.reference.nodes[j] for j in torch.nonzero(row).flatten().tolist()] for row in on]


def monitor_run(run_dir: str | Path, circuit_files: list[str | Path], input_path: str | Path,
                out: str | Path, *, policy: str | Path | None = None, positions: str | None = None,
                full: bool = True, log=print) -> Path:
    """The `monitor` command: watch the circuits over every input; write `records.jsonl` and
    `monitor.html` into `out`."""
    import shlex
    import time

    from .checkpoint import atomic_write_text, output_dir
    from .circuits.search import open_run
    from .explain.monitor_page import render_monitor
    policy = Policy.load(policy) if policy is not None else None
    model, tok, corpus = open_run(run_dir)
    inputs = read_inputs(input_path, tok, model.cfg.block_size)
    positions = positions or ("all" if Path(input_path).is_dir() else "last")
    files = {}  # task -> circuit file (for the trace commands); `monitor` refuses a repeat
    for f in circuit_files:
        files.setdefault(Circuit.load(f, model).task, str(f))
    if policy is not None:
        policy.check_names(list(files))
    log(f"monitoring {len(files)} circuit(s) over {len(inputs)} inputs of {input_path} "
        f"({positions} positions, {'full' if full else 'cheap'} mode)")
    by_name = dict(inputs)
    t0 = last = time.time()
    with monitor(model, [str(f) for f in circuit_files], policy, tok=tok, corpus=corpus, full=full,
                 positions=positions, log=log) as mon:
        output_dir(out)  # every circuit and its reference checked: only the inputs are left
        for i, (name, ids) in enumerate(inputs):
            start = len(mon.records)
            with torch.no_grad():
                model(torch.tensor([ids]))
            for r in mon.records[start:]:
                r["input"] = name
            if time.time() - last > 10 and log:
                last = time.time()
                log(f"  {i + 1}/{len(inputs)} inputs, {time.time() - t0:.0f} s")
    records = mon.records
    atomic_write_text(Path(out) / "records.jsonl",
                      "".join(json.dumps(r) + "\n" for r in records))
    flagged = sorted((r for r in records if r["alerts"]), key=lambda r: -r["anomaly"])
    counts = {c: dict(records=0) for c in files}
    for r in records:
        counts[r["circuit"]]["records"] += 1
        for a in r["alerts"]:
            counts[r["circuit"]][a] = counts[r["circuit"]].get(a, 0) + 1
    shown = []
    watched = {w.name: w for w in mon.watched}
    for r in flagged[:FLAGGED_SHOWN]:
        ids = by_name[r["input"]][:r["position"] + 1]
        prompt = tok.decode(ids)
        lit = active_nodes(model, watched[r["circuit"]], ids[-40:])
        shown.append(dict(r, tokens=[tok.decode([t]) for t in ids[-40:]], lit=lit,
                          trace=(f"sparsecircuits trace {shlex.quote(str(run_dir))} --circuit "
                                 f"{shlex.quote(files[r['circuit']])} --prompt "
                                 f"{shlex.quote(prompt)}")))
    data = dict(meta=dict(run=str(run_dir), circuits=list(files), inputs=len(inputs),
                          records=len(records), full=full, positions=positions,
                          alert_names=list(ALERT_NAMES), flagged_shown=len(shown)),
                counts=counts, flagged=shown, flagged_total=len(flagged))
    atomic_write_text(Path(out) / "monitor.html", render_monitor(data))
    for c, n in counts.items():
        alerts_here = {a: v for a, v in n.items() if a != "records"}
        log(f"{c}: {n['records']} records, alerts " + (", ".join(
            f"{a} {v}" for a, v in alerts_here.items()) or "none"))
    log(f"wrote {out}/records.jsonl and {out}/monitor.html")
    return Path(out)
