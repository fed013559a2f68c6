"""Train a grid of sparse and dense models side by side on one machine, at one token budget.

Used for the shipped pair when a GPU is lent for a few minutes (docs/RESULTS.md, "Capable
models on a lent GPU"): every run of the grid trains at once, all with the same batch and the
same number of steps, so the dense family and the sparse variants see exactly the same tokens
(or, with `--tokens`, the same number of tokens at a batch chosen to fit). The number of
steps is chosen from a short probe of the whole grid running together (its slowest run), to fit
a wall budget:

    python bench/train_grid.py --grid gpu --corpus DIR --out DIR --budget-s 420 --batch 256

Then each run is evaluated (val loss; the suite on the test split), a summary is written, and
the chosen runs are exported to half precision, one tar file each, for carrying back:

    summary.json          per run: its settings, steps, tokens, wall, val loss, tasks met
    bring/NAME.tar        the export of each chosen run (sparse: best by tasks met, then
                          val loss; dense: the runs whose val loss brackets the best sparse's)

A run still training at `--grace` x the budget is stopped and neither evaluated nor
exported (its metrics come back in logs.tar.gz). Runs in separate processes take turns on one
GPU, and a probe of a whole grid barely overlaps (the fast runs finish their 40 steps first):
on the H200 it underestimated the sparse runs' steps about twofold while dense runs trained
beside them (docs/RESULTS.md). A grid of one run probes truly; for a larger one, give
`--budget-s` half the time there is. With several `--batch` values the run's batch is chosen
from their probes (see `plan`); `--tokens` trains every run on a given token budget instead.
`--grid tiny` runs the same pipeline on the tiny presets in a minute on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(preset: str, **sets) -> dict:
    return dict(preset=preset, sets={k.replace("__", "."): v for k, v in sets.items()})


def _sparse(d: int, density: float, **extra) -> dict:
    return _run("small-sparse", model__d_model=d, model__d_mlp=4 * d,
                sparsity__weight_density=density, **extra)


def _dense(d: int, afrac: float = 1.0) -> dict:
    return _run("small-dense", model__d_model=d, model__d_mlp=4 * d, model__afrac=afrac)


GRIDS = {
    "gpu": {
        "s128-16": _sparse(128, 1 / 16),                # the shipped recipe
        "s128-8": _sparse(128, 1 / 8),                  # twice the nonzeros
        "s256-32": _sparse(256, 1 / 32),                # twice as wide, twice the nonzeros
        "d32": _dense(32),
        "d40": _run("small-dense", model__d_model=40, model__d_mlp=160, model__d_head=20),
        "d48": _dense(48),
        "d64": _dense(64),
        "t80": _dense(80, afrac=0.25),                  # dense with AbsTopK 1/4
        "s256-64": _sparse(256, 1 / 64),                # twice as wide, the same nonzeros
        "t112": _dense(112, afrac=0.25),
        "d96": _dense(96),
    },
    "tiny": {
        "s64-8": _run("tiny-sparse"),
        "d16": _run("tiny-dense", model__d_model=16, model__d_mlp=64),
        "d32": _run("tiny-dense", model__d_model=32, model__d_mlp=128),
    },
}


def launch(name: str, spec: dict, out: Path, corpus: str, batch: int, steps: int,
           eval_every: int, log_dir: Path) -> subprocess.Popen:
    sets = dict(spec["sets"], **{"train.batch_size": batch, "train.max_steps": steps,
                                 "train.eval_every": eval_every,
                                 "train.log_every": max(1, min(10, steps // 8)),
                                 "train.checkpoint_every": max(eval_every, steps // 4)})
    cmd = [sys.executable, "-m", "sparsecircuits", "train", "--preset", spec["preset"],
           "--corpus", corpus, "--out", str(out / name)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log_dir / f"{name}.log", "w"),
                            stderr=subprocess.STDOUT)


def wait_all(procs: dict[str, subprocess.Popen], deadline: float | None = None) -> dict:
    codes = {}
    for name, p in procs.items():
        left = None if deadline is None else max(1.0, deadline - time.time())
        try:
            codes[name] = p.wait(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            codes[name] = "killed at the deadline"
    return codes


def step_time(run: Path) -> float:
    """Seconds per step over the second half of a run's logged steps."""
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    rows = [r for r in rows if "elapsed_s" in r]
    a, b = rows[len(rows) // 2 - 1], rows[-1]
    return (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])


def evaluate(run: Path, n: int) -> dict:
    def sc(*args):
        r = subprocess.run([sys.executable, "-m", "sparsecircuits", "eval", str(run), "--json",
                            *args], cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="2"))
        if r.returncode:
            return dict(error=r.stderr.strip()[-500:])
        return json.loads(r.stdout)
    val, suite = sc(), sc("--tasks", "all", "--n", str(n), "--split", "test")
    met = [t["task"] for t in suite.get("results", []) if t["meets_target"]]
    return dict(val=val, tasks_met=met, n_met=len(met),
                task_loss={t["task"]: round(t["loss"], 4) for t in suite.get("results", [])})


def choose(summary: dict, n_sparse: int) -> list[str]:
    done = {k: v for k, v in summary.items() if isinstance(v.get("val_loss"), float)}
    sparse = sorted((k for k, v in done.items() if v["sparse"]),
                    key=lambda k: (-done[k]["n_met"], done[k]["val_loss"]))[:n_sparse]
    if not sparse:
        return []
    target = done[sparse[0]]["val_loss"]
    picked = list(sparse)
    for topk in (False, True):
        fam = [k for k, v in done.items() if not v["sparse"] and v["topk"] == topk]
        above = [k for k in fam if done[k]["val_loss"] >= target]
        below = [k for k in fam if done[k]["val_loss"] < target]
        if above:
            picked.append(min(above, key=lambda k: done[k]["val_loss"]))
        if below and (not topk or not above):
            picked.append(max(below, key=lambda k: done[k]["val_loss"]))
    return picked


def plan(per_step: dict, budget_s: float, min_steps: int, tokens: float | None) -> tuple:
    """(batch, steps) from the probes: with a token budget, the smallest batch whose steps fit
    the wall budget (more steps for the same tokens), else the largest probed; otherwise the
    largest batch that still fits `min_steps` steps (more tokens at no fewer steps), else the
    smallest probed."""
    def fits(b):  # steps of batch b in the budget, at the slowest run's pace
        return int(budget_s / max(per_step[b].values())) // 100 * 100
    batches = sorted(per_step)
    if tokens:
        need = {b: max(100, round(tokens / (b * 128) / 100) * 100) for b in batches}
        b = next((b for b in batches if need[b] <= fits(b)), batches[-1])
        return b, need[b]
    b = max((b for b in batches if fits(b) >= min_steps), default=batches[0])
    return b, fits(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="gpu")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, required=True,
                    help="wall seconds for the main trainings, all at once")
    ap.add_argument("--batch", type=int, nargs="+", default=[256],
                    help="batch sizes to probe; with several, the run takes the largest that "
                         "still fits --min-steps steps in the budget (or, with --tokens, the "
                         "smallest that fits the tokens)")
    ap.add_argument("--min-steps", type=int, default=8000)
    ap.add_argument("--tokens", type=float,
                    help="train every run on this many tokens (steps = tokens / batch / 128) "
                         "instead of as many steps as the budget allows")
    ap.add_argument("--probe-steps", type=int, default=40)
    ap.add_argument("--runs", nargs="+", help="only these runs of the grid")
    ap.add_argument("--grace", type=float, default=1.25,
                    help="runs still training at grace x budget are stopped")
    ap.add_argument("--max-steps", type=int, default=40000)
    ap.add_argument("--n", type=int, default=64, help="pairs per task in the suite eval")
    ap.add_argument("--bring", type=int, default=2, help="sparse runs to export")
    ap.add_argument("--bring-all", action="store_true", help="export every finished run")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = {n: s for n, s in GRIDS[a.grid].items() if not a.runs or n in a.runs}
    t0 = time.time()

    per_step = {}  # batch -> run -> seconds per step, all runs of the grid at once
    for b in a.batch:
        print(f"probe: {len(grid)} runs x {a.probe_steps} steps at batch {b}", flush=True)
        pdir = out / "probe" / f"b{b}"
        probes = {n: launch(n, s, pdir, a.corpus, b, a.probe_steps, a.probe_steps,
                            out / "logs" / "probe" / f"b{b}") for n, s in grid.items()}
        codes = wait_all(probes)
        bad = {n: c for n, c in codes.items() if c}
        if bad:
            for n in bad:
                print(open(out / "logs" / "probe" / f"b{b}" / f"{n}.log").read()[-2000:])
            raise SystemExit(f"probe failed: {bad}")
        per_step[b] = {n: step_time(pdir / n) for n in grid}
        print("probe s/step: " + ", ".join(f"{n} {t * 1e3:.1f} ms"
                                           for n, t in per_step[b].items()), flush=True)
    batch, steps = plan(per_step, a.budget_s, a.min_steps, a.tokens)
    steps = max(min(steps, a.max_steps), a.probe_steps)
    eval_every = max(50, steps // 20)
    print(f"main: {len(grid)} runs x {steps} steps x {batch * 128} tokens "
          f"(after {time.time() - t0:.0f} s)", flush=True)

    t1 = time.time()
    procs = {n: launch(n, s, out / "runs", a.corpus, batch, steps, eval_every,
                       out / "logs") for n, s in grid.items()}
    codes = wait_all(procs, deadline=t1 + a.grace * a.budget_s)
    wall = time.time() - t1
    print(f"trained in {wall:.0f} s: {codes}", flush=True)

    with ThreadPoolExecutor(len(grid)) as pool:  # each eval is a subprocess
        evals = {n: pool.submit(evaluate, out / "runs" / n, a.n)
                 for n in grid if codes[n] == 0}
    summary = {}
    for n, s in grid.items():
        sets = s["sets"]
        row = dict(preset=s["preset"], sets=sets, steps=steps, batch=batch,
                   tokens=steps * batch * 128, exit=codes[n], wall_s=round(wall, 1),
                   sparse=s["preset"].endswith("-sparse"),
                   topk=float(sets.get("model.afrac", 1.0)) < 1.0)
        if codes[n] == 0:
            row.update(evals[n].result())
            row["val_loss"] = row["val"].get("val_loss")
        summary[n] = row
        print(n, row.get("val_loss"), row.get("n_met"), row.get("tasks_met"), flush=True)
    picked = ([n for n, r in summary.items() if r["exit"] == 0] if a.bring_all
              else choose(summary, a.bring))
    json.dump(dict(grid=a.grid, steps=steps, batch=batch, probe_s=per_step, picked=picked,
                   runs=summary), open(out / "summary.json", "w"), indent=1)
    bring = out / "bring"
    bring.mkdir(exist_ok=True)
    for n in picked:
        exp = out / "export" / n
        subprocess.run([sys.executable, "-m", "sparsecircuits", "export", str(out / "runs" / n),
                        "--out", str(exp)], cwd=ROOT, check=True, capture_output=True)
        with tarfile.open(bring / f"{n}.tar", "w") as tar:
            tar.add(exp, arcname=n)
    with tarfile.open(bring / "logs.tar.gz", "w:gz") as tar:
        tar.add(out / "logs", arcname="logs")
        tar.add(out / "summary.json", arcname="summary.json")
        for n in grid:
            m = out / "runs" / n / "metrics.jsonl"
            if m.exists():
                tar.add(m, arcname=f"metrics/{n}.jsonl")
    print(f"picked {picked}; done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
