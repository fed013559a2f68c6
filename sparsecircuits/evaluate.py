"""What a trained run is and does: val loss, weight and activation sparsity, L0, neuron floors,
the training summary, and per-task loss and accuracy."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .bridges import evaluate_bridges, has_bridges, load_bridges, load_dense
from .checkpoint import load, read_metrics, read_run_config
from .config import SITE_KINDS
from .corpus import corpus_for_run
from .errors import UserError
from .tasks import TARGET_LOSS, TaskResult, get_tasks, task_metrics
from .train import val_loss, val_windows


@dataclass
class TensorStats:
    name: str
    shape: tuple
    nonzero: int
    density: float
    min_per_neuron: int | None   # fewest nonzeros of any neuron along the floor axis


@dataclass
class EvalReport:
    run: str
    val_loss: float
    val_tokens: int
    l0: int                      # nonzero weights under the budget (bigram, norms, sinks excluded)
    budget_params: int           # all parameters under the budget
    total_params: int
    tensors: list[TensorStats] = field(default_factory=list)
    activation_density: dict[str, float] = field(default_factory=dict)  # per site kind
    training: dict = field(default_factory=dict)  # steps, tokens, wall time, tokens/s (metrics.jsonl)
    bridges: dict = field(default_factory=dict)   # a bridged run: its bridges, measured here

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [f"run            {self.run}",
                 f"val loss       {self.val_loss:.4f} nats/token ({self.val_tokens:,} tokens)",
                 f"L0             {self.l0:,} nonzero of {self.budget_params:,} budgeted weights "
                 f"({self.l0 / self.budget_params:.4f}); {self.total_params:,} parameters in all",
                 "", f"{'tensor':<28} {'shape':>12} {'nonzero':>9} {'density':>8} {'min/neuron':>10}"]
        for t in self.tensors:
            shape = "x".join(map(str, t.shape))
            floor = "-" if t.min_per_neuron is None else str(t.min_per_neuron)
            lines.append(f"{t.name:<28} {shape:>12} {t.nonzero:>9,} {t.density:>8.4f} {floor:>10}")
        lines += ["", "activation density (fraction of nonzero entries per token vector)"]
        lines += [f"  {k:<12} {v:.4f}" for k, v in self.activation_density.items()]
        if self.bridges:
            lines += ["", *format_bridges(self.bridges)]
        if self.training:
            t = self.training
            lines.insert(3, f"training       {t['steps']:,} steps, {t['tokens']:,} tokens in "
                            f"{t['elapsed_s'] / 60:.1f} min; median {t['median_tokens_per_s']:,.0f} "
                            "tokens/s")
        return "\n".join(lines)


def format_bridges(b: dict) -> list[str]:
    """The bridges' table: per residual location, NMSE both ways, the CE of both hybrid paths
    (dense prefix -> encoder -> sparse suffix, and sparse prefix -> decoder -> dense suffix)
    and the fraction of loss each recovers (see `bridges.evaluate_bridges`)."""
    m = b["eval"]
    lines = [f"bridges        to {b['dense_run']} ({b['dense_hash']}); "
             + ("both models frozen" if b["frozen"] else "trained with the model")
             + f", {b['step']:,} steps",
             f"               CE on these windows: sparse {m['ce_sparse']:.4f}, dense "
             f"{m['ce_dense']:.4f}",
             f"  {'location':<20} {'NMSE d->s':>9} {'NMSE s->d':>9} {'CE d->s':>8} "
             f"{'CE s->d':>8} {'rec d->s':>8} {'rec s->d':>8}"]

    def pct(v):
        return "-" if v is None else f"{v:.1%}"
    for loc, r in m["locations"].items():
        lines.append(f"  {loc:<20} {r['nmse_enc']:>9.3f} {r['nmse_dec']:>9.3f} {r['ce_enc']:>8.4f} "
                     f"{r['ce_dec']:>8.4f} {pct(r['recovered_enc']):>8} "
                     f"{pct(r['recovered_dec']):>8}")
    lines += ["  d->s: the dense model's residual, encoded, runs the sparse model's rest; s->d: "
              "the reverse.",
              "  rec: the fraction of the loss gap between that suffix with its residual "
              "mean-ablated",
              "  and its own pass that the bridged residual closes."]
    return lines


def tensor_stats(model) -> list[TensorStats]:
    out = []
    for t in model.sparse_tensors():
        p = t.param.detach()
        nz = p != 0
        floor = None
        if t.floor_axis is not None:
            floor = int(nz.sum(dim=t.floor_axis).min())
        out.append(TensorStats(t.name, tuple(p.shape), int(nz.sum()), float(nz.float().mean()),
                               floor))
    return out


@torch.no_grad()
def activation_density(model, windows: torch.Tensor, batch: int = 16) -> dict[str, float]:
    """Mean fraction of nonzero entries at each site kind, over the given windows."""
    counts = {k: [0, 0] for k in SITE_KINDS}

    def count(name, x):
        kind = name.split(".", 2)[2]
        counts[kind][0] += int((x != 0).sum())
        counts[kind][1] += x.numel()
        return x

    with model.hooks(count):
        for i in range(0, len(windows), batch):
            model(windows[i:i + batch, :-1])
    return {k: nz / max(1, n) for k, (nz, n) in counts.items()}


@dataclass
class TaskTable:
    run: str
    results: list[TaskResult]

    def to_dict(self) -> dict:
        return dict(run=self.run, target_loss=TARGET_LOSS,
                    results=[r.to_dict() for r in self.results])

    def format(self) -> str:
        r0 = self.results[0]
        lines = [f"{self.run}: {r0.pairs} {r0.split} pairs per task; loss is the per-sequence "
                 f"two-token cross-entropy (chance {math.log(2):.2f}, target {TARGET_LOSS})",
                 "", f"{'task':<32} {'loss':>7} {'acc':>6}  {'<= target':>9}"]
        for r in self.results:
            lines.append(f"{r.task:<32} {r.loss:>7.3f} {r.accuracy:>6.1%}  "
                         f"{'yes' if r.meets_target else '-':>9}")
        met = sum(r.meets_target for r in self.results)
        lines += ["", f"{met} of {len(self.results)} tasks at or below the target loss"]
        return "\n".join(lines)


def evaluate_tasks(run_dir: str | Path, tasks=("all",), *, n: int = 64, split: str = "test",
                   seed: int = 0) -> TaskTable:
    """Per-task loss and accuracy of a run on `n` pairs of each task's `split`."""
    model, tok = load(run_dir)
    return TaskTable(str(run_dir), [task_metrics(model, tok, t, n, split, seed)
                                    for t in get_tasks(tasks)])


def training_summary(run_dir: Path) -> dict:
    """Steps, tokens, wall time and median throughput from a run's metrics.jsonl ({} if none).

    Wall time adds up the logged intervals, so a resumed run counts only time spent training.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return {}
    rows = [r for r in read_metrics(path) if "tokens_per_s" in r]
    if not rows:
        return {}
    elapsed, prev = 0.0, 0.0
    for r in rows:  # elapsed_s restarts from 0 when a run is resumed
        elapsed += r["elapsed_s"] - prev if r["elapsed_s"] >= prev else r["elapsed_s"]
        prev = r["elapsed_s"]
    return dict(steps=rows[-1]["step"], tokens=rows[-1]["tokens"], elapsed_s=elapsed,
                median_tokens_per_s=statistics.median(r["tokens_per_s"] for r in rows))


def evaluate(run_dir: str | Path, *, batches: int | None = None,
             corpus: str | Path | None = None) -> EvalReport:
    """Evaluate a run folder on the val split of its corpus (or of `corpus`)."""
    cfg = read_run_config(run_dir)
    if batches is not None and batches < 1:
        raise UserError(f"--batches {batches} must be at least 1 (or left out: the run's "
                        f"{cfg.train.eval_batches}).")
    model, _ = load(run_dir)
    corpus = corpus_for_run(corpus or cfg.data.corpus, Path(run_dir) / "tokenizer.json",
                            log=lambda *a: None)
    n = (batches or cfg.train.eval_batches) * cfg.train.batch_size
    windows = val_windows(corpus.val, n, cfg.model.block_size)
    stats = tensor_stats(model)
    bridged = {}
    if has_bridges(run_dir):
        bridges, bcfg = load_bridges(run_dir, model)
        dense = load_dense(bcfg, model)
        bridged = dict(dense_run=bcfg.dense_run, dense_hash=bcfg.dense_hash, frozen=bcfg.frozen,
                       step=bcfg.step,
                       eval=evaluate_bridges(model, dense, bridges, windows, cfg.train.batch_size))
    return EvalReport(
        run=str(run_dir),
        val_loss=val_loss(model, windows, cfg.train.batch_size, "cpu"),
        val_tokens=windows[:, 1:].numel(),
        l0=sum(t.nonzero for t in stats),
        budget_params=sum(t.param.numel() for t in model.sparse_tensors()),
        total_params=model.num_params(),
        tensors=stats,
        activation_density=activation_density(model, windows[: 4 * cfg.train.batch_size]),
        training=training_summary(run_dir),
        bridges=bridged,
    )
