"""Sparse vs dense: circuit size at a sweep of target losses, the paper's central comparison.

For every task and model, `circuits.search` (the search `prune` runs) finds the smallest
circuit at every target loss. At each target, the geometric mean of edge counts is taken over
the tasks that *both* models reach there, and the dense/sparse ratio of those means is the
figure the paper reports (about 16x at 0.15). A task is admitted only where both full models
reach the paper's target on the test split, which pruning never sees. The circuits the
headline counts (each task's in each model at that target) are written beside the figures, so
that a reader can open, validate and view what was counted.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ..checkpoint import (STATE_FILE, atomic_write, atomic_write_text, output_dir, read_run_config,
                          read_trainer_state, staged_dir, versions)
from ..circuits.ablation import PretrainingStats, model_hash
from ..circuits.pruning import PruneConfig
from ..circuits.search import DEFAULT_BUDGET, open_run, search, test_losses
from ..errors import UserError
from ..parallel import default_jobs, run_jobs
from ..tasks import PAPER_TASKS, get_task
from ..tasks.metrics import TARGET_LOSS

DEFAULT_TARGETS = (0.5, 0.3, 0.2, TARGET_LOSS, 0.1, 0.05, 0.02)


def geomean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _model_info(run_dir, model) -> dict:
    info = dict(run=str(Path(run_dir).resolve()), model_hash=model_hash(model))
    if (Path(run_dir) / STATE_FILE).is_file():
        info["val_loss"] = read_trainer_state(run_dir).get("val_loss")
    cfg = read_run_config(run_dir)
    info["weight_density"] = cfg.sparsity.weight_density
    info["afrac"] = cfg.model.afrac
    info["nonzero_params"] = sum(int((p != 0).sum()) for p in model.parameters())
    return info


BOOTSTRAP_DRAWS = 10_000


def ratio_interval(ratios, draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float] | None:
    """A percentile bootstrap interval over tasks for the geometric mean of per-task ratios:
    tasks are drawn with replacement `draws` times (seeded, so a report is reproducible). With
    one task there is nothing to resample: None."""
    logs = torch.tensor([math.log(r) for r in ratios], dtype=torch.float64)
    if len(logs) < 2:
        return None
    g = torch.Generator().manual_seed(seed)
    means = logs[torch.randint(len(logs), (draws, len(logs)), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2],
                                                dtype=torch.float64))
    return math.exp(float(lo)), math.exp(float(hi))


def summarize(per_task: dict, targets) -> list[dict]:
    """Per target: the tasks both models reach, and over those whose circuits both have edges,
    the geometric-mean edge and node counts, the dense/sparse ratios of each task and their
    geometric mean (the same as the ratio of the geometric means) with a bootstrap 95%
    interval over tasks. A task one model does with no edge at all (its last token gives the
    answer away) has no logarithm: it is listed apart."""
    rows = []
    for t in targets:
        key = str(t)
        both = [name for name, r in per_task.items()
                if r["sparse"]["targets"][key] and r["dense"]["targets"][key]]
        counted = [n for n in both if min(per_task[n][m]["targets"][key]["edges"]
                                          for m in ("sparse", "dense")) > 0]
        row = dict(target=t, tasks=counted, zero_edge_tasks=sorted(set(both) - set(counted)))
        ratios = {n: {} for n in counted}
        for unit, prefix in (("edges", ""), ("nodes", "node_")):
            at = {n: {m: per_task[n][m]["targets"][key][unit] for m in ("sparse", "dense")}
                  for n in counted}
            gs, gd = (geomean(at[n][m] for n in counted) for m in ("sparse", "dense"))
            for n in counted:
                ratios[n][unit] = _r(at[n]["dense"] / at[n]["sparse"])
            interval = ratio_interval([at[n]["dense"] / at[n]["sparse"] for n in counted])
            row.update({f"sparse_{unit}": _r(gs), f"dense_{unit}": _r(gd),
                        f"{prefix}ratio": _r(gd / gs) if gs and gd else None,
                        f"{prefix}ratio_interval": [_r(x) for x in interval] if interval else None})
        row["per_task_ratios"] = ratios
        rows.append(row)
    return rows


def _r(x):
    return None if x is None else round(float(x), 2)


def compare(sparse_run, dense_run, tasks=None, targets=DEFAULT_TARGETS, out=None, *,
            budget: int = DEFAULT_BUDGET, steps: int = PruneConfig.steps, n_check: int = 64,
            ablation: str = "mean", freeze_norm: bool = False, jobs: int | None = None,
            log=print) -> dict:
    """Prune every task at every target in both models; write JSON and the frontier plot.
    `ablation` and `freeze_norm` are the pruning settings of both searches (as for `prune`);
    `jobs` (default: one per core) is how many (task, model) searches run at once, each in
    its own process."""
    from ..tasks.metrics import task_metrics
    targets = tuple(sorted({float(t) for t in targets}, reverse=True))
    if not targets or any(not 0 < t < math.log(2) for t in targets):
        raise UserError(f"targets {targets} must be losses between 0 and chance, ln 2 = "
                        f"{math.log(2):.3f} (e.g. 0.5 0.15 0.02).")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs {jobs} must be at least 1.")
    if budget < 1:
        raise UserError(f"--budget {budget} must be at least 1 pruning run per task and model.")
    cfg = PruneConfig(steps=steps, ablation=ablation, freeze_norm=freeze_norm).validate()
    t0 = time.perf_counter()
    models = {}
    for name, run in (("sparse", sparse_run), ("dense", dense_run)):
        model, tok, corpus = open_run(run)
        models[name] = (model, tok, PretrainingStats.cached(model, corpus, log=log), run)
    if models["sparse"][1].to_str() != models["dense"][1].to_str():
        raise UserError("the two runs use different tokenizers, so the same task is a different "
                        "question to each; compare runs trained on the same corpus.")
    names = list(tasks) if tasks else list(PAPER_TASKS)
    if names == ["all"]:
        names = list(PAPER_TASKS)
    included, skipped = [], {}
    for name in names:
        task = get_task(name)
        full = {}
        for m, (model, tok, _, _) in models.items():
            with torch.no_grad():
                full[m] = task_metrics(model, tok, task, n=n_check, split="test").loss
        if max(full.values()) > TARGET_LOSS:
            skipped[name] = {m: round(v, 3) for m, v in full.items()}
            if log:
                log(f"{name}: skipped (full-model test loss sparse {full['sparse']:.3f}, dense "
                    f"{full['dense']:.3f}; both must reach {TARGET_LOSS})")
        else:
            included.append(name)
    work = [dict(task=n, model=m, run=str(models[m][3]), targets=targets, cfg=cfg, budget=budget)
            for n in included for m in models]
    jobs = default_jobs(len(work), jobs)
    if log and work:
        log(f"pruning {len(work)} (task, model) pairs at {len(targets)} targets, "
            f"{jobs} at a time ...")
    per_task = {n: {} for n in included}
    local = lambda a: _frontier_job(a, *models[a["model"]][:3])  # noqa: E731
    started = (lambda a: log(f"{a['task']}: pruning the {a['model']} model ...")) if log \
        else (lambda a: None)
    counted = {}
    for r in run_jobs(work, jobs, local, _frontier_in_worker, started):
        per_task[r["task"]][r["model"]] = r["frontier"]
        if r["circuit"] is not None:
            counted[(r["task"], r["model"])] = r["circuit"]
        if log:
            at = r["frontier"]["targets"].get(str(TARGET_LOSS))
            log(f"{r['task']}, {r['model']} model: done in {r['seconds']:.0f}s"
                + (f" ({at['edges']} edges at {TARGET_LOSS})" if at else ""))
    per_task = {n: {m: per_task[n][m] for m in models} for n in included}  # finishing order aside
    rows = summarize(per_task, targets)
    result = dict(
        sparse=_model_info(sparse_run, models["sparse"][0]),
        dense=_model_info(dense_run, models["dense"][0]),
        targets=list(targets), budget=budget, steps=steps, ablation=cfg.ablation.value,
        freeze_norm=cfg.freeze_norm, tasks=per_task, skipped=skipped,
        summary=rows, seconds=round(time.perf_counter() - t0, 1), versions=versions())
    result["command"] = command_line(result, sparse_run, dense_run, tasks)
    if out is not None:
        out = output_dir(out)
        save_circuits(counted, out / "circuits")
        atomic_write_text(out / "compare.json", json.dumps(result, indent=1))
        plot_frontier(result, out / "frontier")
    return result


def save_circuits(counted: dict, folder: Path) -> None:
    """Write {(task, model): Circuit} as folder/TASK/MODEL.json, replacing what an earlier run
    left there in one rename: no stale or half-written circuit sits beside a new result."""
    with staged_dir(folder, replace=True) as tmp:
        for (n, m), c in counted.items():
            c.save(tmp / task_folder(n) / f"{m}.json")


def task_folder(task_name: str) -> str:
    """A task's sub-folder in a report (a task file's path and control suffixes made safe)."""
    return task_name.replace(":", "-").replace("/", "-")


def command_line(result: dict, sparse_run, dense_run, tasks=None) -> str:
    """The `compare` command that gives `result` (every setting that differs from the default)."""
    parts = ["sparsecircuits compare", str(sparse_run), str(dense_run)]
    if tasks:
        parts += ["--tasks", *map(str, tasks)]
    if tuple(result["targets"]) != DEFAULT_TARGETS:
        parts += ["--targets", *(f"{t:g}" for t in result["targets"])]
    if result["budget"] != DEFAULT_BUDGET:
        parts += ["--budget", str(result["budget"])]
    if result["steps"] != PruneConfig.steps:
        parts += ["--steps", str(result["steps"])]
    if result["ablation"] != "mean":
        parts += ["--ablation", result["ablation"]]
    if result["freeze_norm"]:
        parts.append("--freeze-norm")
    return " ".join(parts)


def _frontier_job(a: dict, model, tok, stats) -> dict:
    """One task in one model: its frontier over the targets, and its circuit at the headline
    target (None where it has none)."""
    t0 = time.perf_counter()
    found = search(model, tok, a["task"], a["targets"], a["cfg"], budget=a["budget"], jobs=1,
                   stats=stats, provenance=dict(run_dir=str(Path(a["run"]).resolve())),
                   log=None)
    frontier = found.frontier()
    for t, c in found.circuits.items():   # reported on the test split, chosen on val
        if c is not None:
            frontier["targets"][str(t)].update(test_losses(c, model, tok, stats))
    return dict(task=a["task"], model=a["model"], frontier=frontier,
                circuit=found.circuits.get(TARGET_LOSS), seconds=time.perf_counter() - t0)


def _frontier_in_worker(a: dict, threads: int) -> dict:
    torch.set_num_threads(threads)
    model, tok, corpus = open_run(a["run"])
    stats = PretrainingStats.cached(model, corpus, log=None)  # the parent computed it
    return _frontier_job(a, model, tok, stats)


def with_interval(ratio, interval) -> str:
    """'34.1x [13.2-88.0]', or '-' where no ratio could be taken."""
    if ratio is None:
        return "-"
    return f"{ratio:.1f}x" + (f" [{interval[0]:.1f}-{interval[1]:.1f}]" if interval else "")


def headline(result: dict, target: float = TARGET_LOSS) -> str | None:
    """The comparison at `target` in one sentence, or None where no task is counted there."""
    row = next((r for r in result["summary"] if r["target"] == target), None)
    if row is None or row["ratio"] is None:
        return None
    n = len(row["tasks"])
    edges = with_interval(row["ratio"], row["ratio_interval"])
    nodes = with_interval(row["node_ratio"], row["node_ratio_interval"])
    return (f"at task loss {target:g}, dense circuits have {edges} the edges and {nodes} the "
            f"nodes of sparse ones (geometric mean over {n} task{'s' * (n != 1)}, bootstrap 95% "
            "interval over tasks in brackets)")


def format_summary(result: dict) -> str:
    how = f"pruned nodes held at the {result.get('ablation', 'mean')} value" + (
        ", norms frozen" if result.get("freeze_norm") else "")
    lines = [how, f"{'target':>7} {'tasks':>5} {'sparse edges':>13} {'dense edges':>12} "
             f"{'edges dense/sparse [95%]':>26} {'nodes dense/sparse [95%]':>26}"]
    for r in result["summary"]:
        def f(x, spec):
            return format(x, spec) if x is not None else "-"
        lines.append(f"{r['target']:>7g} {len(r['tasks']):>5} {f(r['sparse_edges'], '>13.1f')} "
                     f"{f(r['dense_edges'], '>12.1f')} "
                     f"{with_interval(r['ratio'], r['ratio_interval']):>26} "
                     f"{with_interval(r['node_ratio'], r['node_ratio_interval']):>26}")
    lines.append("sizes: geometric means over the tasks both models reach at that target; the "
                 "interval: tasks drawn with replacement")
    for r in result["summary"]:
        if r.get("zero_edge_tasks"):
            lines.append(f"left out at {r['target']:g} (a circuit with no edge: the last token "
                         f"gives the answer away): {', '.join(r['zero_edge_tasks'])}")
    key = str(TARGET_LOSS)
    row = next((r for r in result["summary"] if r["target"] == TARGET_LOSS), None)
    if any(key in r[m]["targets"] for r in result["tasks"].values() for m in ("sparse", "dense")):
        lines += ["", f"per task at {key} (loss on the val pairs it was bisected on, and on the "
                  "test split; calibrated / uncalibrated; dense / sparse ratios):",
                  f"{'task':<28} {'model':<7} {'nodes':>6} {'edges':>8} {'val':>6} {'uncal.':>7} "
                  f"{'test':>6} {'uncal.':>7} {'nodes x':>8} {'edges x':>8}"]
        for name, r in result["tasks"].items():
            ratio = (row or {}).get("per_task_ratios", {}).get(name)
            for m in ("sparse", "dense"):
                c = r[m]["targets"].get(key)
                tail = (f" {ratio['nodes']:>8.1f} {ratio['edges']:>8.1f}"
                        if ratio and m == "dense" else "")
                lines.append(f"{name:<28} {m:<7} " + (
                    f"{c['nodes']:>6} {c['edges']:>8} {c['loss']:>6.3f} "
                    f"{c['loss_uncalibrated']:>7.3f} {c['test_loss']:>6.3f} "
                    f"{c['test_loss_uncalibrated']:>7.3f}" + tail if c else
                    "no circuit reaches the target"))
    if (h := headline(result)):
        lines += ["", h[0].upper() + h[1:] + "."]
    return "\n".join(lines)


def plot_frontier(result: dict, stem: Path) -> list[Path]:
    """Left, Figure-2 style: task loss target against circuit edges, each task's line (faint)
    and the geometric means. Right: the dense/sparse ratio at each target, in edges and in
    nodes, each task's ratio as a dot and the geometric mean with its bootstrap 95% interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ar) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    colors = {"sparse": "#2262c6", "dense": "#e08a2c"}
    for m in ("sparse", "dense"):
        for r in result["tasks"].values():  # each task, faint; an edgeless circuit has no log
            pts = sorted((float(t), v["edges"]) for t, v in r[m]["targets"].items()
                         if v and v["edges"] > 0)
            if pts:
                ax.plot([e for _, e in pts], [t for t, _ in pts], color=colors[m], alpha=0.25,
                        lw=1)
        pts = sorted((r["target"], r[f"{m}_edges"]) for r in result["summary"] if r[f"{m}_edges"])
        if pts:
            ax.plot([e for _, e in pts], [t for t, _ in pts], "o-", color=colors[m], lw=2,
                    label=f"{m} (val loss {result[m].get('val_loss') or float('nan'):.3f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_yticks(result["targets"], [f"{t:g}" for t in result["targets"]])
    ax.minorticks_off()
    ax.set_xlabel("circuit edges (faint: each task; line: geometric mean)")
    ax.set_ylabel("task loss target")
    ax.invert_yaxis()
    ax.grid(True, which="both", alpha=0.25)
    ax.legend()
    ax.set_title("Circuit size vs task loss")

    for unit, prefix, color, shift in (("edges", "", "#6a3d9a", 0.97), ("nodes", "node_",
                                                                          "#33a02c", 1.03)):
        rows = [r for r in result["summary"] if r.get(f"{prefix}ratio")]
        for r in rows:
            xs = [r["target"] * shift] * len(r["per_task_ratios"])
            ar.scatter(xs, [v[unit] for v in r["per_task_ratios"].values()], s=12,
                       color=color, alpha=0.35, lw=0)
        if rows:
            xs = [r["target"] * shift for r in rows]
            ys = [r[f"{prefix}ratio"] for r in rows]
            lo = [y - (r[f"{prefix}ratio_interval"] or [y, y])[0] for y, r in zip(ys, rows)]
            hi = [(r[f"{prefix}ratio_interval"] or [y, y])[1] - y for y, r in zip(ys, rows)]
            ar.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", color=color, lw=2, capsize=3,
                        label=f"{unit} (dots: each task; bars: 95% interval)")
    ar.axhline(1, color="#888", lw=1, ls=":")
    ar.set_xscale("log")
    ar.set_yscale("log")
    ar.set_xticks(result["targets"], [f"{t:g}" for t in result["targets"]])
    ar.minorticks_off()
    ar.invert_xaxis()
    ar.set_xlabel("task loss target")
    ar.set_ylabel("dense / sparse (geometric mean over tasks)")
    ar.grid(True, which="both", alpha=0.25)
    ar.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # off the bars
    ar.set_title("How much larger dense circuits are")
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix("." + ext)
        atomic_write(path, lambda tmp, ext=ext: fig.savefig(tmp, format=ext))
        paths.append(path)
    plt.close(fig)
    return paths
