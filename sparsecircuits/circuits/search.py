"""The one circuit search: every command that finds circuits (`prune`, `compare`, `demo`, the
controls inside `validate`) calls `search`.

The paper tunes every (model, task) with CARBS. Here a fixed grid of trials around the
Table-2 centres (the sparsity penalty k_coef and the learning rate, then other seeds) is cut at
a budget. Each trial trains its masks once; its ranking is bisected for every target loss
(sharing every probe between targets), and at each target the circuit with the fewest edges
over the trials wins. Trials run in parallel processes when the machine has cores to spare.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import UserError
from ..tasks import get_task
from ..tasks.core import Task
from ..tasks.metrics import TARGET_LOSS
from .ablation import Ablation, PretrainingStats, model_hash
from .circuit import Circuit, count_edges, stamp
from .nodes import NodeLayout
from .pruning import (COLLAPSED, Judge, PruneConfig, TaskSplit, resolve_values, switch_gain,
                      train_masks)
from .taskdata import Resample, TaskData, all_activations, logit_diffs, losses, scale_bound

# (k_coef multiplier, lr multiplier) around the centres of `PruneConfig`, in the order a
# budget takes them. Past the grid, the same trials with new seeds.
TRIALS = [(1, 1), (3, 1), (0.3, 1), (1, 0.3), (3, 0.3), (10, 1), (0.3, 0.3), (1, 3)]
DEFAULT_BUDGET = 8


def search_trials(cfg: PruneConfig, budget: int) -> list[PruneConfig]:
    if budget < 1:
        raise UserError(f"search budget {budget} must be at least 1 pruning run.")
    out = []
    for i in range(budget):
        k, lr = TRIALS[i % len(TRIALS)]
        out.append(replace(cfg, k_coef=float(f"{cfg.k_coef * k:.6g}"),
                           lr=float(f"{cfg.lr * lr:.6g}"),
                           seed=cfg.seed + i // len(TRIALS)))
    return out


def default_jobs(budget: int) -> int:
    """Parallel trials: one per core, never more than the budget."""
    return max(1, min(budget, os.cpu_count() or 1))


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


@dataclass
class TrialResult:
    cfg: PruneConfig
    curve: list[tuple[int, float, int]]    # (step, task loss, nodes on) during mask training
    still_falling: bool
    found: dict[float, tuple]              # target -> (keep, Probe)
    edges: dict[float, int]                # target -> edges of the circuit found
    probes: list[list[tuple[int, float]]]  # per ranking, (k, calibrated val loss) per probe
    seconds: float


def run_trial(model, split: TaskSplit, values, cfg: PruneConfig, targets, bound: float,
              log=None, threads: int | None = None) -> TrialResult:
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    layout = NodeLayout(model)
    with frozen(model):
        masks = train_masks(model, split.train, values, cfg, layout, log)
        judged = values
        if isinstance(values, Resample):  # one pairing shared by both rankings' judges
            judged = values.on(split.val, all_activations(model, split.val))
        seen = {}
        judges = [Judge(model, split.val, judged, masks.order(), cfg, layout, bound, seen)]
        if not all(judges[0].passes(masks.kept, t) for t in targets):
            # the trained set falls short somewhere: the nodes past it are ranked by gain too
            drawn = values.step(cfg.steps) if isinstance(values, Resample) else values
            masks.gain = switch_gain(model, split.train, drawn, (masks.scores >= 0).float(),
                                     cfg, layout)
            judges = [Judge(model, split.val, judged, order, cfg, layout, bound, seen)
                      for order in masks.orders()]
        found, edges = {}, {}
        for t in sorted(targets, reverse=True):
            at = []   # the fewest edges wins, then the fewest nodes, as over trials
            for j in judges:
                if (k := j.smallest(t, masks.kept)) is not None:
                    keep = j.keep(k)
                    at.append((count_edges(model, layout.to_sets(keep)), k, j(k).loss, keep,
                               j(k)))
            if at:
                n, _, _, keep, probe = min(at, key=lambda a: a[:3])
                found[t], edges[t] = (keep, probe), n
    return TrialResult(cfg, masks.curve, masks.still_falling, found, edges,
                       [sorted((k, p.loss) for k, p in j.probes.items()) for j in judges],
                       time.perf_counter() - t0)


def _trial_in_worker(args) -> TrialResult:
    return run_trial(*args)


@dataclass
class Search:
    """What one search found: for each target, the smallest circuit over its trials."""
    task: str
    targets: tuple[float, ...]
    circuits: dict[float, Circuit | None]
    full_loss: float                # the full model on the val pairs
    empty_loss: float               # every node ablated, on the val pairs (uncalibrated)
    scale_bound: float
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def frontier(self) -> dict:
        """{full_loss, targets: {"0.15": {nodes, edges, loss, ...} or None}}."""
        out = {}
        for t in self.targets:
            c = self.circuits.get(t)
            out[str(t)] = None if c is None else dict(
                nodes=c.num_nodes, edges=c.num_edges, loss=round(c.loss, 4),
                loss_uncalibrated=round(c.loss_uncalibrated, 4),
                scale=round(c.calibration["scale"], 3), k_coef=c.config.k_coef, lr=c.config.lr,
                seed=c.config.seed)
        trials = [{k: v for k, v in t.items() if k != "seconds"} for t in self.trials]
        return dict(full_loss=round(self.full_loss, 4), empty_loss=round(self.empty_loss, 4),
                    scale_bound=round(self.scale_bound, 3), targets=out, trials=trials)


def search(model, tok, task: Task | str, targets=(TARGET_LOSS,), cfg: PruneConfig | None = None,
           *, budget: int = DEFAULT_BUDGET, jobs: int | None = None,
           stats: PretrainingStats | None = None, corpus=None, bound: float | None = None,
           provenance: dict | None = None, control: bool = False, log=print) -> Search:
    """Find the circuit of `task` in `model` at every loss in `targets`.

    `budget` mask-training trials (the grid `TRIALS`), `jobs` of them at a time in separate
    processes. Mean ablation needs `stats` or a `corpus`. `bound` overrides the calibration
    bound (a control on another model is held to the studied model's bound). A task the full
    model cannot do on the val pairs is an error at once, unless the search is a `control`
    (or the task is one): a control is expected to find nothing.
    """
    t0 = time.perf_counter()
    ref = task_reference(task) if isinstance(task, str) else task.name
    task = get_task(task) if isinstance(task, str) else task
    cfg = (cfg or PruneConfig()).validate()
    targets = tuple(sorted({float(t) for t in targets}, reverse=True))
    for t in targets:
        replace(cfg, target_loss=t).validate()
    if cfg.ablation is Ablation.MEAN and stats is None:
        if corpus is None:
            raise UserError("mean ablation needs pretraining statistics: pass a corpus (or "
                            "stats), or use ablation='zero' / 'task-mean'.")
        stats = PretrainingStats.cached(model, corpus, log=log)
    split = TaskSplit(model, tok, task, cfg)
    values = resolve_values(model, cfg, split, stats)
    layout = NodeLayout(model)
    with frozen(model), torch.no_grad():
        d_full = logit_diffs(model, split.val)
        d_empty = logit_diffs(model, split.val, layout.split(torch.zeros(layout.total)), values,
                              cfg.freeze_norm)
    sign = split.val.sign
    full_loss = float(losses(d_full, sign).mean())
    empty_loss = float(losses(d_empty, sign).mean())
    if not control and "control" not in task.tags and full_loss > max(targets):
        raise UserError(cannot_do(task.name, full_loss, max(targets)))
    bound = scale_bound(d_full, sign) if bound is None else bound

    trials = search_trials(cfg, budget)
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs {jobs} must be at least 1 (or left out: one per core).")
    jobs = default_jobs(budget) if jobs is None else min(jobs, budget)
    if jobs == 1:
        runs = []
        for i, t in enumerate(trials):
            if log:
                log(f"pruning run {i + 1}/{len(trials)}: k_coef {t.k_coef:g}, lr {t.lr:g}, "
                    f"seed {t.seed}")
            runs.append(run_trial(model, split, values, t, targets, bound, log))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        threads = max(1, (os.cpu_count() or 1) // jobs)
        if log:
            log(f"pruning {len(trials)} runs, {jobs} at a time ...")
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(_trial_in_worker, [(model, split, values, t, targets, bound,
                                                     None, threads) for t in trials]))

    from ..checkpoint import versions
    rows = [trial_row(r, layout.total, targets) for r in runs]
    if log:
        for i, row in enumerate(rows):
            if row["status"] != "ok":
                log(f"  trial {i + 1} (k_coef {row['k_coef']:g}, lr {row['lr']:g}): "
                    f"{row['status']}")
    circuits: dict[float, Circuit | None] = {}
    for t in targets:
        at = [i for i, r in enumerate(runs) if t in r.found]
        if not at:
            circuits[t] = None
            continue
        # the fewest edges, then the fewest nodes (a tie in edges can hide orphan nodes), then loss
        best = min(at, key=lambda i: (runs[i].edges[t], int(runs[i].found[t][0].sum()),
                                      runs[i].found[t][1].loss))
        keep, probe = runs[best].found[t]
        prov = dict(provenance or {})
        prov.update(model_hash=model_hash(model),
                    pairs=dict(train=len(split.train) // 2, val=len(split.val) // 2),
                    search=dict(budget=budget, jobs=jobs, trials=rows, chosen=best),
                    full_model_loss=round(full_loss, 4), empty_loss=round(empty_loss, 4),
                    mask_curve=runs[best].curve, still_falling=runs[best].still_falling,
                    bisection_probes=runs[best].probes,
                    seconds=round(time.perf_counter() - t0, 1), versions=versions(),
                    created=stamp())
        circuits[t] = Circuit.from_keep(
            model, keep, task.name, config=replace(runs[best].cfg, target_loss=t), task_ref=ref,
            loss=probe.loss, loss_uncalibrated=probe.loss_uncalibrated,
            calibration=dict(scale=probe.scale, bound=bound), provenance=prov)
    return Search(task.name, targets, circuits, full_loss, empty_loss, bound, rows,
                  time.perf_counter() - t0)


def circuit_values(circuit: Circuit, model, tok, stats: PretrainingStats | None = None):
    """The ablation values the circuit was found with (for `resample`, a `Resample`: they
    come from other prompts of the data they are run on)."""
    cfg = circuit.config
    return resolve_values(model, cfg, TaskSplit(model, tok, get_task(circuit.task_ref), cfg),
                          stats)


@torch.no_grad()
def test_losses(circuit: Circuit, model, tok, stats: PretrainingStats | None = None,
                n: int = 128) -> dict[str, float]:
    """The circuit's loss on up to `n` pairs of its task's test split, which pruning never
    sees: at its calibration scale, and uncalibrated. For reporting only, never for choosing."""
    circuit.check_model(model)
    task = get_task(circuit.task_ref)
    data = TaskData.from_pairs(tok, task.name, task.pairs(n, "test", at_most=True),
                               model.cfg.block_size)
    cfg = circuit.config
    values = circuit_values(circuit, model, tok, stats)
    with frozen(model):
        d = logit_diffs(model, data, NodeLayout(model).split(circuit.keep_vector(model).float()),
                        values, cfg.freeze_norm)
    return dict(test_loss=round(float(losses(d, data.sign, circuit.calibration["scale"]).mean()), 4),
                test_loss_uncalibrated=round(float(losses(d, data.sign).mean()), 4))


def trial_row(r: TrialResult, total: int, targets) -> dict:
    """One trial of a search as a plain record: its settings, what it found at each target,
    and whether it collapsed (kept a large share of the model) or never reached a target."""
    at = {str(t): (dict(nodes=int(r.found[t][0].sum()), edges=r.edges[t],
                        loss=round(r.found[t][1].loss, 4),
                        loss_uncalibrated=round(r.found[t][1].loss_uncalibrated, 4))
                   if t in r.found else None) for t in targets}
    sizes = [int(keep.sum()) for keep, _ in r.found.values()]
    status = ("not reached" if not sizes else
              "collapsed" if max(sizes) > COLLAPSED * total else "ok")
    return dict(k_coef=r.cfg.k_coef, lr=r.cfg.lr, seed=r.cfg.seed, status=status,
                nodes_on=r.curve[-1][2], still_falling=r.still_falling, targets=at,
                seconds=round(r.seconds, 1))


def cannot_do(task: str, full_loss: float, target: float) -> str:
    chance = math.log(2)
    msg = (f"the model cannot do task '{task}': its own loss on the task's val pairs is "
           f"{full_loss:.3f}, above the target {target:g} (chance is {chance:.3f}), so no "
           "circuit of it can reach the target; pick a task the model does (`sparsecircuits "
           "eval RUN --tasks all`)")
    looser = math.ceil(full_loss * 110) / 100
    if looser < 0.9 * chance:
        msg += f", or a looser target such as --target-loss {looser:g}"
    return msg + "."


def find_circuit(model, tok, task: Task | str, cfg: PruneConfig | None = None, *,
                 budget: int = DEFAULT_BUDGET, jobs: int | None = None,
                 stats: PretrainingStats | None = None, corpus=None,
                 provenance: dict | None = None, log=print) -> Circuit:
    """The circuit of `task` at `cfg.target_loss`: `search` for one target."""
    cfg = (cfg or PruneConfig()).validate()
    found = search(model, tok, task, (cfg.target_loss,), cfg, budget=budget, jobs=jobs,
                   stats=stats, corpus=corpus, provenance=provenance, log=log)
    circuit = found.circuits[cfg.target_loss]
    if circuit is None and found.full_loss > cfg.target_loss:  # a control the model never had
        raise UserError(
            f"the model cannot do task '{found.task}': its own val loss is "
            f"{found.full_loss:.3f}, and no circuit of it reaches the target "
            f"{cfg.target_loss:g} in {budget} pruning runs. For a control that is the expected "
            "result; otherwise pick a task the model does (`sparsecircuits eval RUN --tasks all`).")
    if circuit is None:
        raise UserError(
            f"no circuit of task '{found.task}' reaches the target {cfg.target_loss:g} in "
            f"{budget} pruning runs, though the full model does (val loss "
            f"{found.full_loss:.3f}); try a larger --budget or more --steps.")
    if log and circuit.provenance["still_falling"]:
        log(f"warning: the kept-node count was still falling when mask training ended "
            f"({circuit.provenance['mask_curve'][-1][2]} nodes on); more --steps would likely "
            "find a smaller circuit.")
    return circuit


def task_reference(name: str) -> str:
    """What `get_task` needs to find a task again: a task file by its absolute path."""
    base, _, control = name.partition(":")
    if base.endswith(".toml"):
        return str(Path(base).resolve()) + (f":{control}" if control else "")
    return name


def open_run(run_dir: str | Path, circuit: Circuit | None = None, where: str = ""):
    """(model, tokenizer, corpus) of a run folder; the corpus is the one it was trained on.
    A `circuit` (read from the file `where`) is checked against the model before the corpus
    is opened, which may take minutes the first time."""
    from ..checkpoint import load, read_run_config
    from ..corpus import corpus_for_run
    model, tok = load(run_dir)
    if circuit is not None:
        circuit.check_model(model, where)
    corpus = corpus_for_run(read_run_config(run_dir).data.corpus, Path(run_dir) / "tokenizer.json")
    return model, tok, corpus


def open_circuit(path: str | Path, run: str | Path | None = None):
    """(circuit, model, tokenizer, corpus): a circuit file (`Circuit.load`) and the run it
    records (or `run`), the file checked against that run's model before anything runs."""
    circuit = Circuit.load(path)
    run = run or circuit.provenance.get("run_dir")
    if not run:
        raise UserError(f"{path} does not say which run it came from; pass --run RUN_DIR.")
    return (circuit, *open_run(run, circuit, str(path)))


def prune(run_dir: str | Path, task: str, out: str | Path | None = None, *,
          budget: int = DEFAULT_BUDGET, jobs: int | None = None, log=print,
          **settings) -> Circuit:
    """Load a run, find the circuit for `task` (see `find_circuit`), and save it to `out`."""
    cfg = PruneConfig.from_dict(settings)
    model, tok, corpus = open_run(run_dir)
    circuit = find_circuit(model, tok, task, cfg, budget=budget, jobs=jobs, corpus=corpus,
                           provenance=dict(run_dir=str(Path(run_dir).resolve()),
                                           corpus=str(corpus.path)), log=log)
    if out is not None:
        circuit.save(out)
    return circuit
