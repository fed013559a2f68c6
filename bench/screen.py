"""Screen training recipes by what the trained model does on the task suite.

A recipe is the shipped model's (`small-sparse`: 4 layers, d_model 128, matrices at 1/16,
AbsTopK 1/4) with levers applied, written as names joined by `+`:

    python bench/screen.py shipped pos32+sink deep8+pos32+sink --steps 2500 --out runs/screen
    python bench/screen.py --table runs/screen            # the markdown tables of every row

Each recipe trains into OUT/RECIPE (resumed if a run is already there), then is measured on
the test split with fixed seeds: per task the two-token loss on `--n` pairs, the score (the
mean over the twenty paper tasks of min(loss, ln 2): a task at chance or worse counts ln 2, so
a confident wrong answer cannot pull the mean down further than not knowing), the count of
tasks at 0.15 and at 0.3, how many of those at 0.15 need a real circuit (the empty circuit,
every node at its pretraining mean, misses the target), the val loss on the standard
library's val split (comparable across corpora: every corpus here shares its tokenizer) and
the training wall time. `--curve K` measures the suite at every K steps as the run goes, on
the checkpoint just written (the run resumes exactly, so this changes nothing in training).

`--jobs N` trains N recipes at once, one process each, with the cores divided between them.
Wall times of runs that shared the machine are comparable only with each other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHANCE = math.log(2)


def _scale(cfg, **k):
    for key, factor in k.items():
        section, name = key.split("__")
        obj = getattr(cfg, section)
        value = getattr(obj, name) * factor
        setattr(obj, name, type(getattr(obj, name))(value))


def _set(cfg, **k):
    for key, value in k.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)


# Each lever edits the config; levers compose in the order written. Density levers halve
# rather than set, so that depth and width compose (deep8+wide2x keeps 1/64 of the matrices).
LEVERS = {
    "shipped": lambda c: None,
    "pos16": lambda c: _set(c, model__d_pos_emb=16),
    "pos32": lambda c: _set(c, model__d_pos_emb=32),
    "sink": lambda c: _set(c, model__sink=True),
    # twice the layers, matrices at half the density: the shipped model's count of nonzeros
    "deep8": lambda c: (_scale(c, model__n_layer=2, sparsity__weight_density=0.5)),
    # twice the layers at the same density (twice the matrices' nonzeros)
    "deep8d": lambda c: _scale(c, model__n_layer=2),
    # twice the width at half the density (matrices and embeddings: each keeps 2x the nonzeros
    # of the shipped one's matrices and the same of its embeddings)
    "wide2x": lambda c: _scale(c, model__d_model=2, model__d_mlp=2,
                               sparsity__weight_density=0.5, sparsity__other_density=0.5),
    "dens8": lambda c: _scale(c, sparsity__weight_density=2),   # matrices at twice the density
    "lr0.5": lambda c: _scale(c, train__lr=0.5),
    "lr2": lambda c: _scale(c, train__lr=2),
    "nobigram": lambda c: _set(c, model__bigram=False),
    "afrac0.5": lambda c: _set(c, model__afrac=0.5),
    "gen": lambda c: _set(c, data__corpus="GENERATED"),        # resolved in `config_for`
}
# Dense baselines of a recipe's architecture: `denseD` is the small-dense preset's training
# (no weight or activation sparsity, its learning rate) at d_model D; `topkD` the same with
# AbsTopK at the sparse model's keep fraction. They apply after every other lever, wherever
# they are written: `deep8+pos32+sink+dense32`.
DENSE = {"dense": dict(afrac=1.0), "topk": dict(afrac=0.25)}


def _dense(c, d: int, afrac: float):
    _set(c, model__d_model=d, model__d_mlp=4 * d, model__afrac=afrac,
         sparsity__weight_density=1.0, sparsity__other_density=1.0, train__lr=3e-3)


def lever(name: str):
    """The config edit of one lever, and whether it is a dense baseline's (applied last)."""
    if name in LEVERS:
        return LEVERS[name], False
    for prefix, model in DENSE.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return (lambda c, d=int(name[len(prefix):]): _dense(c, d, model["afrac"])), True
    raise SystemExit(f"error: unknown lever '{name}'; levers: {', '.join(LEVERS)}, denseD, "
                     "topkD (a dense baseline at d_model D).")

GENERATED = 60000    # programs of the seeded generator mixed into the generated corpus


def config_for(recipe: str, steps: int, out: Path, curve: int = 0):
    from sparsecircuits.config import preset
    cfg = preset("small-sparse")
    edits = [lever(name) for name in recipe.split("+")]
    for edit, _ in sorted(edits, key=lambda e: e[1]):  # dense baselines last (a stable sort)
        edit(cfg)
    cfg.train.max_steps = steps
    cfg.train.eval_every = max(1, steps // 10)
    cfg.train.checkpoint_every = curve or max(1, steps // 5)  # the curve reads checkpoints
    if cfg.data.corpus == "GENERATED":
        cfg.data.corpus = str(generated_corpus(out))
    return cfg.validate()


def generated_corpus(out: Path) -> Path:
    """The standard library plus GENERATED programs, tokenized with the default corpus's own
    tokenizer (so the suite's answers are the same tokens, and val losses compare)."""
    from sparsecircuits.corpus import build_corpus, open_corpus
    path = out / f"corpus-gen{GENERATED}"
    if not (path / "manifest.json").is_file():
        build_corpus(path, generated=GENERATED, tokenizer=open_corpus(None).tokenizer_path,
                     force=True)
    return path


def measure(run: Path, n: int) -> dict:
    """The suite on the test split, the empty circuit where a task meets the target, and the
    val loss on the standard library."""
    from sparsecircuits.circuits import open_run
    from sparsecircuits.circuits.ablation import PretrainingStats
    from sparsecircuits.circuits.pruning import (PruneConfig, TaskSplit, empty_circuit_loss,
                                                 resolve_values)
    from sparsecircuits.evaluate import evaluate
    from sparsecircuits.tasks import PAPER_TASKS, TARGET_LOSS, get_task, task_metrics

    model, tok, corpus = open_run(run)
    losses, empty = {}, {}
    stats, cfg = None, PruneConfig()
    for name in PAPER_TASKS:
        task = get_task(name)
        losses[name] = task_metrics(model, tok, task, n, "test", seed=0).loss
        if losses[name] <= TARGET_LOSS:
            stats = stats or PretrainingStats.cached(model, corpus, log=lambda *a: None)
            split = TaskSplit(model, tok, task, cfg)
            empty[name] = empty_circuit_loss(model, split, resolve_values(model, cfg, split, stats),
                                             cfg)
    capped = [min(v, CHANCE) for v in losses.values()]
    return dict(score=sum(capped) / len(capped),
                met_15=sum(v <= 0.15 for v in losses.values()),
                met_30=sum(v <= 0.3 for v in losses.values()),
                real_15=sum(e > TARGET_LOSS for e in empty.values()),
                val_stdlib=evaluate(run, corpus=_default_corpus()).val_loss,
                losses=losses, empty=empty)


def _default_corpus() -> Path:
    from sparsecircuits.corpus import open_corpus
    return open_corpus(None).path


def screen(recipe: str, steps: int, out: Path, n: int, curve: int) -> dict:
    from sparsecircuits.checkpoint import read_trainer_state
    from sparsecircuits.evaluate import training_summary
    from sparsecircuits.train import train

    run = out / recipe
    result_file = run / "screen.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    cfg = config_for(recipe, steps, out, curve)
    curve_file = run / "curve.jsonl"
    keys = ("score", "met_15", "met_30", "real_15", "val_stdlib", "losses")

    def on_step(step):  # after the checkpoint of `step` is written
        if curve and step % curve == 0 and step < steps:
            t = time.time()
            m = measure(run, n)
            with open(curve_file, "a") as fh:
                fh.write(json.dumps(dict(step=step, **{k: m[k] for k in keys},
                                         eval_s=time.time() - t)) + "\n")

    resume = (run / "trainer_state.json").is_file()
    if not resume and run.exists():
        import shutil
        shutil.rmtree(run)  # a run killed before its first checkpoint: start it again
    if not resume or read_trainer_state(run)["step"] < steps:
        train(None if resume else cfg, run, resume=resume, on_step=on_step, log=lambda *a: None)
    t = time.time()
    m = measure(run, n)
    # a row per checkpoint measured; a resumed run may have measured one twice: keep the last
    rows = {r["step"]: r for r in map(json.loads, curve_file.read_text().splitlines())} \
        if curve_file.is_file() else {}
    eval_s = sum(r["eval_s"] for r in rows.values())  # inside the training's logged wall
    result = dict(recipe=recipe, steps=steps, n=n, **m,
                  train_wall_s=training_summary(run)["elapsed_s"] - eval_s, curve_eval_s=eval_s,
                  measure_s=time.time() - t, nonzeros=_l0(run), config=cfg.to_dict())
    if curve:
        result["curve"] = [rows[s] for s in sorted(rows)] + [
            dict(step=steps, **{k: m[k] for k in keys}, eval_s=result["measure_s"])]
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.rename(result_file)
    return result


def _l0(run: Path) -> int:
    from sparsecircuits.checkpoint import load
    model, _ = load(run)
    return sum(int((t.param != 0).sum()) for t in model.sparse_tensors())


def line(r: dict) -> str:
    return (f"{r['recipe']:<28} score {r['score']:.3f}  at 0.15: {r['met_15']:>2} "
            f"({r['real_15']} need a circuit)  at 0.3: {r['met_30']:>2}  val {r['val_stdlib']:.4f}  "
            f"train {r['train_wall_s'] / 60:.1f} min")


def table(out: Path) -> str:
    from sparsecircuits.tasks import PAPER_TASKS
    rows = sorted((json.loads(p.read_text()) for p in out.glob("*/screen.json")),
                  key=lambda r: (r["steps"], r["recipe"] != "shipped", r["recipe"]))
    if not rows:
        raise SystemExit(f"error: no screened recipe under {out}; run a recipe first.")
    lines = ["| recipe | steps | nonzeros | score | at 0.15 (need a circuit) | at 0.3 | "
             "val loss (stdlib) | train wall |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| `{r['recipe']}` | {r['steps']:,} | {r['nonzeros']:,} | {r['score']:.3f} | "
                     f"{r['met_15']} ({r['real_15']}) | {r['met_30']} | {r['val_stdlib']:.4f} | "
                     f"{r['train_wall_s'] / 60:.1f} min |")
    lines += ["", "| task | " + " | ".join(f"`{r['recipe']}`" for r in rows) + " |",
              "| --- |" + " --- |" * len(rows)]
    for t in PAPER_TASKS:
        cells = []
        for r in rows:
            v = r["losses"][t]
            cell = f"{v:.3f}"
            if v <= 0.15:
                cell = f"**{cell}**" + ("" if t in r["empty"] and r["empty"][t] > 0.15 else " (e)")
            cells.append(cell)
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", help="levers joined by '+': " + ", ".join(LEVERS)
                    + ", denseD, topkD")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "screen")
    ap.add_argument("--n", type=int, default=128, help="test pairs per task")
    ap.add_argument("--curve", type=int, default=0, help="measure the suite every K steps")
    ap.add_argument("--jobs", type=int, default=1, help="recipes trained at once")
    ap.add_argument("--table", action="store_true", help="print the tables of OUT and exit")
    a = ap.parse_args(argv)
    if a.table:
        print(table(a.out))
        return
    if not a.recipes:
        ap.error("name at least one recipe (or pass --table)")
    for r in a.recipes:  # every recipe checked before any trains
        for name in r.split("+"):
            lever(name)
    a.out.mkdir(parents=True, exist_ok=True)
    if "gen" in "+".join(a.recipes).split("+"):
        generated_corpus(a.out)  # once, before parallel runs could race to build it
    if a.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // a.jobs)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
        queue, running = list(a.recipes), []
        while queue or running:
            while queue and len(running) < a.jobs:
                r = queue.pop(0)
                cmd = [sys.executable, __file__, r, "--steps", str(a.steps), "--out", str(a.out),
                       "--n", str(a.n), "--curve", str(a.curve)]
                log = open(a.out / f"{r}.log", "a")
                running.append((r, subprocess.Popen(cmd, env=env, stdout=log, stderr=log)))
            time.sleep(5)
            for r, p in list(running):
                if p.poll() is not None:
                    running.remove((r, p))
                    result = a.out / r / "screen.json"
                    print(line(json.loads(result.read_text())) if p.returncode == 0 and
                          result.is_file() else f"{r}: failed ({p.returncode}); see "
                          f"{a.out / (r + '.log')}", flush=True)
        return
    for r in a.recipes:
        print(line(screen(r, a.steps, a.out, a.n, a.curve)), flush=True)


if __name__ == "__main__":
    main()
