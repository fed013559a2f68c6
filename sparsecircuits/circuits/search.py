"""A small hyperparameter search over pruning runs, and the run-folder entry point `prune`.

The paper tunes every (model, task) with 256 CARBS runs. Here a fixed, ordered list of trials
around the Table-2 centres (first the centres themselves, then larger sparsity penalties and
learning rates, which short CPU runs need, then other seeds) is cut at a budget; the smallest
circuit (in edges) that reaches the target wins. Trials run in parallel processes when the
machine has cores to spare.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..errors import UserError
from ..tasks import get_task
from ..tasks.core import Task
from .ablation import PretrainingStats, model_hash
from .circuit import Circuit, stamp
from .pruning import PruneConfig, PruneRun, TaskSplit, prune_run, resolve_values

# (k_coef multiplier, lr multiplier, seed offset), in the order a budget takes them.
TRIALS = [(1, 1, 0), (10, 10 / 3, 0), (30, 10 / 3, 0), (10, 10 / 3, 1), (3, 10 / 3, 0),
          (100, 10 / 3, 0), (30, 10 / 3, 1), (10, 1, 0)]


def search_trials(cfg: PruneConfig, budget: int) -> list[PruneConfig]:
    if budget < 1:
        raise UserError(f"search budget {budget} must be at least 1 pruning run.")
    out = []
    for i in range(budget):
        k, lr, seed = TRIALS[i % len(TRIALS)]
        seed += 100 * (i // len(TRIALS))  # past the list: the same trials, new seeds
        out.append(replace(cfg, k_coef=cfg.k_coef * k, lr=cfg.lr * lr, seed=cfg.seed + seed))
    return out


def default_jobs(budget: int) -> int:
    """Parallel trials: one per two cores (two threads each), never more than the budget."""
    return max(1, min(budget, (os.cpu_count() or 1) // 2))


def _run_trial(model, split, values, cfg, log, threads=None) -> PruneRun:
    if threads:
        torch.set_num_threads(threads)
    with frozen(model):
        return prune_run(model, split, values, cfg, log=log)


def _trial_in_worker(args):
    model, split, values, cfg, threads = args
    return _run_trial(model, split, values, cfg, None, threads)


class frozen:
    """Model weights never change during pruning: no gradients for them (also faster)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for p, f in zip(self.model.parameters(), self.flags):
            p.requires_grad_(f)
        self.model.train(self.was_training)


def find_circuit(model, tok, task: Task | str, cfg: PruneConfig | None = None, *,
                 budget: int = 1, jobs: int | None = None, stats: PretrainingStats | None = None,
                 corpus=None, provenance: dict | None = None, log=print) -> Circuit:
    """Prune `model` for `task`: `budget` runs of the built-in search, the smallest circuit (in
    edges) that reaches the target wins. Mean ablation needs `stats` or a `corpus`."""
    ref = task_reference(task) if isinstance(task, str) else task.name
    task = get_task(task) if isinstance(task, str) else task
    cfg = (cfg or PruneConfig()).validate()
    if cfg.ablation == "mean" and stats is None:
        if corpus is None:
            raise UserError("mean ablation needs pretraining statistics: pass a corpus (or "
                            "stats), or use ablation='zero' / 'task-mean'.")
        stats = PretrainingStats.cached(model, corpus, log=log)
    t0 = time.perf_counter()
    split = TaskSplit(model, tok, task, cfg)
    values = resolve_values(model, cfg, split, stats)
    trials = search_trials(cfg, budget)
    jobs = default_jobs(budget) if jobs is None else max(1, min(jobs, budget))
    if jobs == 1:
        runs = []
        for i, t in enumerate(trials):
            if log:
                log(f"pruning run {i + 1}/{len(trials)}: k_coef {t.k_coef:g}, lr {t.lr:g}, "
                    f"seed {t.seed}")
            runs.append(_run_trial(model, split, values, t, log))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        threads = max(1, (os.cpu_count() or 1) // jobs)
        if log:
            log(f"pruning {len(trials)} runs, {jobs} at a time ...")
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(_trial_in_worker,
                                 [(model, split, values, t, threads) for t in trials]))
    reached = [i for i, r in enumerate(runs) if r.reached]
    if not reached:
        raise UserError(
            f"the model cannot do task '{task.name}': its own held-out loss is "
            f"{runs[0].full_loss:.3f}, above the target {cfg.target_loss}; pick a task the model "
            "can do (`sparsecircuits eval RUN --tasks all`) or raise --target-loss.")
    circuits = [Circuit.from_keep(model, r.keep, task.name) if r.reached else None for r in runs]
    best_i = min(reached, key=lambda i: (circuits[i].num_edges, runs[i].loss))
    best, best_cfg = runs[best_i], trials[best_i]
    trial_rows = [dict(k_coef=t.k_coef, lr=t.lr, seed=t.seed, nodes=r.k,
                       edges=c.num_edges if c else None, loss=round(r.loss, 4),
                       trained_nodes=r.trained_k, seconds=round(r.seconds, 1))
                  for t, r, c in zip(trials, runs, circuits)]
    from ..checkpoint import versions
    prov = dict(provenance or {})
    prov.update(model_hash=model_hash(model), task=ref, split="train",
                pairs=dict(train=cfg.train_pairs, heldout=cfg.heldout_pairs),
                hyperparameters=best_cfg.hyperparameters(), config=asdict(best_cfg),
                search=dict(budget=budget, jobs=jobs, trials=trial_rows, chosen=best_i),
                full_model_loss=round(best.full_loss, 4), bisection_probes=best.probes,
                trained_nodes=best.trained_k, seconds=round(time.perf_counter() - t0, 1),
                versions=versions(), created=stamp())
    return Circuit.from_keep(model, best.keep, task.name, loss=best.loss,
                             loss_uncalibrated=best.loss_uncalibrated,
                             calibration={"scale": best.scale, "shift": best.shift},
                             target_loss=cfg.target_loss, ablation=cfg.ablation,
                             freeze_norm=cfg.freeze_norm, provenance=prov)


def task_reference(name: str) -> str:
    """What `get_task` needs to find a task again: a task file by its absolute path."""
    base, _, control = name.partition(":")
    if base.endswith(".toml"):
        return str(Path(base).resolve()) + (f":{control}" if control else "")
    return name


def open_run(run_dir: str | Path):
    """(model, tokenizer, corpus) of a run folder; the corpus is the one it was trained on."""
    from ..checkpoint import load, read_run_config
    from ..corpus import corpus_for_run
    model, tok = load(run_dir)
    corpus = corpus_for_run(read_run_config(run_dir).data.corpus, Path(run_dir) / "tokenizer.json")
    return model, tok, corpus


def prune(run_dir: str | Path, task: str, out: str | Path | None = None, *,
          budget: int = 3, jobs: int | None = None, log=print, **settings) -> Circuit:
    """Load a run, find the circuit for `task` (see `find_circuit`), and save it to `out`."""
    unknown = set(settings) - set(PruneConfig.field_names())
    if unknown:
        raise UserError(f"unknown pruning settings {sorted(unknown)}; valid: "
                        f"{', '.join(PruneConfig.field_names())}.")
    model, tok, corpus = open_run(run_dir)
    cfg = PruneConfig(**settings)
    circuit = find_circuit(model, tok, task, cfg, budget=budget, jobs=jobs, corpus=corpus,
                           provenance=dict(run_dir=str(Path(run_dir).resolve()),
                                           corpus=str(corpus.path)), log=log)
    if out is not None:
        circuit.save(out)
    return circuit
