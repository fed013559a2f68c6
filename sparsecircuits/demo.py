"""`sparsecircuits demo`: the main job. On the two shipped models (one weight-sparse, one dense
baseline at matched pretraining loss), find and test circuits for every task both can do, and
write a report folder a person can open.

The full search takes longer than a first look should, so the models ship with the `compare`
study made on them (`shipped/study/`: its figures and the circuits it counted). By default the
demo measures both models on the tasks, validates the study's circuits and writes their viewers,
labelling every figure it did not measure itself with the study's command and the models'
hashes; `live=True` (`demo --live`) runs the search itself. The study is used only for the very
models and pruning settings it was made with.

    DIR/index.html, summary.md     what was found, sparse vs dense, where to click next
    DIR/frontier.png, .svg         task loss vs circuit edges, both models (the paper's Fig. 2)
    DIR/compare.json               every figure
    DIR/tasks.txt                  both models on the twenty tasks
    DIR/<task>/sparse.json, dense.json, validation-*.json, viewer.html, report.md, report.html
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .checkpoint import atomic_write_text, output_dir
from .circuits.search import DEFAULT_BUDGET
from .doc import Doc
from .errors import UserError
from .parallel import default_jobs, run_jobs
from .study.compare import task_folder
from .tasks.metrics import TARGET_LOSS

SHIPPED = Path(__file__).parent / "shipped"
ABLATION_WORDS = {"mean": "their mean over pretraining tokens (the paper's choice)",
                  "zero": "zero", "task-mean": "their mean over the task's prompts",
                  "resample": "their values on another prompt of the task (resample ablation)"}
DEMO_TARGETS = (0.5, 0.3, TARGET_LOSS, 0.05)
TARGET = TARGET_LOSS   # a model does a task at this loss or below; the circuit at it is the one
                       # shown, validated and reported


def shipped_runs() -> tuple[Path, Path]:
    from .checkpoint import MODEL_FILE, checkpoint_dir
    runs = SHIPPED / "sparse", SHIPPED / "dense"
    for r in runs:
        if not (r.is_dir() and (checkpoint_dir(r) / MODEL_FILE).is_file()):
            raise UserError(f"the shipped model {r} is missing from this installation; install "
                            "sparsecircuits from its repository (`pip install -e .`), which "
                            "carries the models.")
    return runs


class Progress:
    """One line per step, with the elapsed time: the demo takes minutes, never silently."""

    def __init__(self, log):
        self.total, self.i, self.log, self.t0 = None, 0, log, time.perf_counter()

    def step(self, what: str):
        self.i += 1
        total = self.total or "?"  # known once the task table says which tasks are in
        self.log(f"[{self.i}/{total} {time.perf_counter() - self.t0:5.0f}s] {what}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def demo(out: str | Path = "sparsecircuits-demo", *, runs: tuple | None = None, tasks=None,
         targets=DEMO_TARGETS, jobs: int | None = None, budget: int = DEFAULT_BUDGET,
         ablation: str = "mean", study: str | Path | None = None, live: bool = False,
         log=print) -> Path:
    """Run the demo into `out`. `jobs` (default: one per core, each on its own thread) is how
    many (task, model) circuits are worked on at once, in separate processes; `budget` is the
    number of trials of the circuit search (`circuits.search`) for each; `ablation` what the
    pruned nodes are held at (`circuits.Ablation`; the paper's is the pretraining mean).
    `study` is a `compare` output folder made on these models (default: the shipped one, for
    the shipped models); its circuits are validated instead of searched for, unless `live`."""
    from .circuits import open_run
    from .circuits.ablation import PretrainingStats
    from .circuits.pruning import PruneConfig, TaskSplit, empty_circuit_loss, resolve_values
    from .circuits.search import task_reference
    from .study.compare import _model_info, headline, plot_frontier, summarize
    from .tasks import PAPER_TASKS, get_task

    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs {jobs} must be at least 1.")
    if budget < 1:
        raise UserError(f"--budget {budget} must be at least 1 trial.")
    cfg = PruneConfig(ablation=ablation)   # an unknown ablation is refused before any work
    out = output_dir(out)
    if study is None and runs is None:
        study = SHIPPED / "study"
    sparse_run, dense_run = runs or shipped_runs()
    log(f"sparsecircuits demo: circuits in a weight-sparse and a dense model, written to {out}")
    models = {}
    for name, run in (("sparse", sparse_run), ("dense", dense_run)):
        model, tok, corpus = open_run(run)
        models[name] = dict(model=model, tok=tok, corpus=corpus, run=Path(run),
                            stats=PretrainingStats.cached(model, corpus, log=log))
    shipped = None if live or study is None else usable_study(study, models, cfg, budget, log)

    refs = {get_task(n).name: task_reference(n) for n in (tasks or PAPER_TASKS)}
    by_name = {name: get_task(ref) for name, ref in refs.items()}
    names = list(by_name)
    # steps: the task table, then one per (task, model) circuit, then the summary
    progress = Progress(log)
    progress.step(f"measuring both models on {len(names)} tasks")
    table, both, given_away = [], [], {}
    for n in names:
        task = by_name[n]
        pairs = task.pairs(64, "test", at_most=True)
        row = {m: _loss(d["model"], d["tok"], task, pairs) for m, d in models.items()}
        table.append((n, row))
        if all(loss <= TARGET for loss in row.values()):
            # A model whose empty circuit already does the task has no circuit to find, and
            # the task no place in a geometric mean of edges: say so instead of pruning it.
            empty = {}
            for m, d in models.items():
                split = TaskSplit(d["model"], d["tok"], task, cfg)
                empty[m] = empty_circuit_loss(d["model"], split,
                                              resolve_values(d["model"], cfg, split, d["stats"]),
                                              cfg)
            if min(empty.values()) <= TARGET:
                given_away[n] = empty
            else:
                both.append(n)

    def mark(n):
        if n in given_away:
            e = given_away[n]
            who = " and ".join(m for m in e if e[m] <= TARGET)
            return (f"   both at or below {TARGET}; the {who} model's empty circuit does it "
                    f"(sparse {e['sparse']:.3f}, dense {e['dense']:.3f}): the last token gives "
                    "it away")
        return f"   both at or below {TARGET}" if n in both else ""

    lines = [f"{'task':<28} {'sparse loss':>11} {'dense loss':>10}"]
    lines += [f"{n:<28} {r['sparse']:>11.3f} {r['dense']:>10.3f}" + mark(n) for n, r in table]
    atomic_write_text(out / "tasks.txt", "\n".join(lines) + "\n")
    log("\n".join("    " + line for line in lines))
    if not both:
        raise UserError(f"no task is done by both models at loss {TARGET} or below with a "
                        f"circuit to find; nothing to compare (see {out / 'tasks.txt'}).")
    if shipped is not None:
        targets = tuple(shipped["targets"])
        keys = {get_task(k).name: k for k in shipped["tasks"]}  # as given to compare: a file's path
        missing = [n for n in both if n not in keys]
        if missing:   # the models are the study's, so this is a damaged installation
            raise UserError(f"the study in {study} has no circuits for {', '.join(missing)}, "
                            "which both models do; run `sparsecircuits demo --live`.")
    work = [(n, m) for n in both for m in models]
    jobs = default_jobs(len(work), jobs)
    progress.total = 1 + len(work) + 1
    if shipped is None:
        log(f"    pruning at targets {', '.join(map(str, targets))}, validating and reporting "
            f"{len(work)} circuits ({len(both)} tasks x 2 models), {jobs} at a time")
    else:
        log(f"    validating and reporting the study's {len(work)} circuits ({len(both)} tasks x "
            f"2 models), {jobs} at a time; `--live` searches for them instead")
    args = [dict(task=n, ref=refs[n], model=m, run=str(models[m]["run"]), targets=tuple(targets),
                 cfg=cfg, budget=budget, folder=str(out / task_folder(n)), report=(m == "sparse"),
                 study=None if shipped is None else dict(
                     frontier=shipped["tasks"][keys[n]][m],
                     circuit=str(Path(study) / "circuits" / task_folder(keys[n]) / f"{m}.json")))
            for n, m in work]
    per_task, found, validations = {n: {} for n in both}, {}, {}
    started = lambda a: log(f"    working on {a['task']}, {a['model']} model")  # noqa: E731
    local = lambda a: _circuit_job(a, models[a["model"]])  # noqa: E731
    for r in run_jobs(args, jobs, local, _circuit_in_worker, started):
        n, m = r["task"], r["model"]
        per_task[n][m] = r["frontier"]
        c, v = r["circuit"], r["validation"]
        if c is not None:
            found[(n, m)], validations[(n, m)] = c, v
        what = (f"{c.num_nodes} nodes, {c.num_edges} edges at {c.target_loss:g}; sufficiency "
                f"{v.sufficiency['loss']:.3f}, necessity {v.necessity['loss_calibrated']:.3f}"
                if c is not None else f"no circuit at {TARGET}")
        progress.step(f"{n}, {m} model: {what} ({r['seconds']:.0f}s)")
    per_task = {n: {m: per_task[n][m] for m in models} for n in both}  # finishing order aside

    progress.step("summary and the frontier plot")
    rows = summarize(per_task, targets)
    result = dict(sparse=_model_info(sparse_run, models["sparse"]["model"]),
                  dense=_model_info(dense_run, models["dense"]["model"]),
                  targets=list(targets), budget=budget, steps=cfg.steps,
                  ablation=cfg.ablation.value, tasks=per_task, summary=rows,
                  given_away={n: {m: round(v, 4) for m, v in e.items()}
                              for n, e in given_away.items()},
                  seconds=round(progress.elapsed(), 1))
    if shipped is not None:
        result["study"] = dict(folder=str(Path(study).resolve()), command=shipped["command"],
                               seconds=shipped["seconds"], versions=shipped.get("versions"))
    atomic_write_text(out / "compare.json", json.dumps(result, indent=1))
    plot_frontier(result, out / "frontier")
    doc = summary_doc(result, both, found, validations, given_away, plot=out / "frontier.png")
    atomic_write_text(out / "summary.md", doc.markdown())
    atomic_write_text(out / "index.html", doc.html("sparsecircuits demo"))
    log("")
    for n in both:
        s, dn = found.get((n, "sparse")), found.get((n, "dense"))
        log(f"  {n:<24} sparse: {_size(s):<34} dense: {_size(dn)}")
    if (h := headline(result, TARGET)):
        log(f"  {h}; the paper: ~16x in edges at {TARGET}")
    log(f"\ndone in {progress.elapsed():.0f}s; open {out / 'index.html'}")
    return out


def _circuit_in_worker(a: dict, threads: int) -> dict:
    import torch
    from .circuits import open_run
    from .circuits.ablation import PretrainingStats
    torch.set_num_threads(threads)
    model, tok, corpus = open_run(a["run"])
    stats = PretrainingStats.cached(model, corpus, log=None)  # the parent computed it
    return _circuit_job(a, dict(model=model, tok=tok, corpus=corpus, run=Path(a["run"]),
                                stats=stats))


def _circuit_job(a: dict, d: dict) -> dict:
    """One task in one model: prune at every target and keep the circuit at TARGET (or take
    the study's, a["study"]), validate it (without the controls, which take minutes) and, for
    the sparse model, write its viewer and audit report. Files go to a["folder"]; the figures
    come back."""
    from .circuits import Circuit, validate
    from .explain import gather, write_viewer
    from .explain import run_info as describe_run
    from .explain.report import build_report
    from .circuits.search import search
    t0 = time.perf_counter()
    n, m, where = a["task"], a["model"], Path(a["folder"])
    if a["study"] is not None:
        at = a["study"]["frontier"]["targets"].get(str(TARGET))
        frontier = a["study"]["frontier"]
        c = Circuit.load(a["study"]["circuit"], d["model"]) if at else None
        if c is not None:   # the same weights (by hash) wherever the study found them
            c.provenance["run_dir"] = str(d["run"].resolve())
    else:
        found = search(d["model"], d["tok"], a["ref"], a["targets"], a["cfg"],
                       budget=a["budget"], jobs=1, stats=d["stats"],
                       provenance=dict(run_dir=str(d["run"].resolve())), log=None)
        frontier, c = found.frontier(), found.circuits.get(TARGET)
    v = None
    if c is not None:
        c.save(where / f"{m}.json")
        v = validate(c, d["model"], d["tok"], stats=d["stats"], corpus=d["corpus"], n=64,
                     draws=10, controls=False, log=None)
        atomic_write_text(where / f"validation-{m}.json", json.dumps(v.to_dict(), indent=1))
        if a["report"]:
            data = gather(c, d["model"], d["tok"], d["corpus"], ablate_max=64, log=None)
            write_viewer(data, where / "viewer.html")
            doc = build_report(c, v.to_dict(), data, describe_run(d["run"], d["model"]),
                               viewer_file="viewer.html")
            atomic_write_text(where / "report.md", doc.markdown())
            atomic_write_text(where / "report.html", doc.html(f"{n} circuit: audit report"))
    return dict(task=n, model=m, frontier=frontier, circuit=c, validation=v,
                seconds=time.perf_counter() - t0)


def usable_study(study: str | Path, models: dict, cfg, budget: int, log) -> dict | None:
    """The `compare` result in `study` if it was made on these very models (by weight hash)
    with this search (pruning settings, trials, steps); otherwise None: the demo searches live."""
    from .circuits.ablation import model_hash
    path = Path(study) / "compare.json"
    if not path.is_file():
        log(f"    no study at {study}; searching for every circuit live")
        return None
    try:
        result = json.loads(path.read_text())
        made_on = {m: result[m]["model_hash"] for m in models}
        made_with = (result["ablation"], result["freeze_norm"], result["budget"], result["steps"])
        for key in ("command", "tasks", "targets", "seconds"):   # what the demo reads besides
            if key not in result:
                raise KeyError(key)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a compare result ({e}); run the demo with --live, or "
                        "make the study again with `sparsecircuits compare`.") from None
    now = {m: model_hash(d["model"]) for m, d in models.items()}
    if made_on != now or made_with != (cfg.ablation.value, cfg.freeze_norm, budget, cfg.steps):
        log(f"    the study in {study} was made on other models or with another search; "
            "searching for every circuit live")
        return None
    return result


def _loss(model, tok, task, pairs) -> float:
    from .tasks.metrics import score_pairs
    losses, _ = score_pairs(model, tok, task.name, pairs)
    return float(losses.mean())


def _size(c) -> str:
    if c is None:
        return f"no circuit at {TARGET}"
    return f"{c.num_nodes} nodes, {c.num_edges} edges at {c.target_loss:g}"


def summary_doc(result, both, found, validations, given_away=None, plot=None) -> Doc:
    from .study.compare import headline, with_interval
    doc = Doc().h(1, "sparsecircuits demo: circuits in a sparse and a dense model")
    s, d = result["sparse"], result["dense"]
    convincing = [f"{n} ({m})" for (n, m), v in validations.items() if v.convincing]
    h = headline(result, TARGET)
    doc.p("What was found: " + (h[0].upper() + h[1:] + "; the paper reports about 16x in edges. "
                                if h else f"no task was counted at loss {TARGET}. ")
          + (f"The validation battery calls {len(convincing)} of {len(validations)} circuits "
             f"convincing: {', '.join(convincing)}." if convincing else
             f"The validation battery calls none of the {len(validations)} circuits convincing; "
             "the reasons are below."))
    if (st := result.get("study")):
        doc.p("The circuits and sizes below come from the study shipped with these models, not "
              f"searched for now: `{st['command']}`, which took {st['seconds'] / 60:.0f} min on "
              "the machine it ran on (docs/RESULTS.md), on the sparse model "
              f"{s['model_hash'][:12]} and the dense model {d['model_hash'][:12]} (weight "
              "hashes, the same as the models loaded now). This demo measured both models on "
              "the tasks, validated those circuits and wrote their viewers; "
              "`sparsecircuits demo --live` searches for every circuit itself.")
    doc.p(f"Sparse model: val loss {s.get('val_loss', float('nan')):.3f}, weight density "
          f"{s['weight_density']:g}, activation keep fraction {s['afrac']:g}. Dense baseline: val "
          f"loss {d.get('val_loss', float('nan')):.3f}. Tasks both do at loss {TARGET} or below, "
          f"with a circuit to find: {', '.join(both)}. Pruned nodes are held at: "
          f"{ABLATION_WORDS[result.get('ablation', 'mean')]}.")
    if given_away:
        doc.p("Tasks both do where one model's empty circuit (every node ablated) already "
              f"reaches {TARGET}, so the last token gives the answer away and there is no "
              "circuit to find: " + "; ".join(
                  f"{n} (empty-circuit loss sparse {e['sparse']:.3f}, dense {e['dense']:.3f})"
                  for n, e in given_away.items()) + ".")
    rows = []
    for n in both:
        for m in ("sparse", "dense"):
            c, v = found.get((n, m)), validations.get((n, m))
            rows.append([n, m, c.target_loss if c else "-", c.num_nodes if c else "-",
                         c.num_edges if c else "-",
                         v.sufficiency["loss"] if v else "-",
                         v.necessity["loss_calibrated"] if v else "-",
                         ("convincing" if v.convincing else "not convincing") if v else "-"])
    doc.h(2, "Circuits")
    doc.p(f"Each model's circuit at loss {TARGET}.")
    doc.table(["task", "model", "target", "nodes", "edges", "sufficiency (test)",
               "necessity (test)", "checks"], rows)
    doc.p("Checks run without the controls here (they take minutes per circuit); run "
          "`sparsecircuits validate DIR/TASK/sparse.json` for the full battery.")
    doc.h(2, "Why each circuit is or is not convincing")
    doc.ul([f"{n}, {m} model: {validations[(n, m)].summary}" for n in both
            for m in ("sparse", "dense") if (n, m) in validations])
    broken = [f"{n} ({m})" for (n, m), v in validations.items() if "resampling" in v.failed()]
    if broken and result.get("ablation", "mean") != "resample":
        doc.p(f"Resampling breaks {len(broken)} of {len(validations)} circuits here ("
              f"{', '.join(broken)}): pruned with the other nodes held at one value, a circuit "
              "may lean on them staying there. `sparsecircuits demo --ablation resample` (or "
              "`prune --ablation resample`) prunes with the other nodes taking their values on "
              "other prompts of the task, so that a circuit must carry the answer whatever the "
              "rest of the model says (docs/RESULTS.md, \"Resample ablation with the default "
              "search\").")
    doc.h(2, "Circuit size against task loss")
    if plot is not None:
        doc.image("Left: circuit edges against task loss for both models. Right: dense / sparse "
                  "ratios in edges and nodes with their 95% intervals.", plot)
    doc.table(["target", "tasks", "sparse edges", "dense edges", "edges dense / sparse [95%]",
               "sparse nodes", "dense nodes", "nodes dense / sparse [95%]"],
              [[r["target"], len(r["tasks"]), r["sparse_edges"], r["dense_edges"],
                with_interval(r["ratio"], r["ratio_interval"]), r["sparse_nodes"],
                r["dense_nodes"], with_interval(r["node_ratio"], r["node_ratio_interval"])]
               for r in result["summary"]])
    doc.p("Sizes are geometric means over the tasks both models reach at that target; the "
          "interval is a bootstrap over tasks (drawn with replacement), so with few tasks it is "
          "wide. A task whose circuit has no edge in one model (its last token gives the answer "
          "away) has no logarithm and is left out: "
          + ("; ".join(f"{r['target']}: {', '.join(r['zero_edge_tasks'])}"
                       for r in result["summary"] if r.get("zero_edge_tasks")) or "none")
          + ". The plot is also in frontier.png / frontier.svg.")
    doc.h(2, "Open next")
    doc.ul([f"{task_folder(n)}/viewer.html: the sparse circuit, clickable; "
            f"{task_folder(n)}/report.html: its audit report"
            for n in both if (n, "sparse") in found])
    for n in both:
        if (n, "sparse") in found:
            doc.link(f"{n}: the sparse circuit", f"{task_folder(n)}/viewer.html")
    return doc
