"""Does the monitor tell? Labelled inputs for each task of the shipped study, on the shipped
sparse model and its circuit for the task (`sparsecircuits/shipped/study/circuits/TASK/`).

    python bench/monitor_study.py [--pairs 64] [--val-windows 32]

For each task: its test pairs (both prompts: on task; for a task whose answers vary, the pairs
of its most common answer pair, which the monitor watches), the same prompts with a distractor line
inserted before the last line (the other prompt's last line as a comment, at the same
indentation: the construct the answer must not follow), and off-task code (windows of the
standard library's val split, every position). Prints, per task and measure, the AUROC for
telling the model's wrong answers from its right ones (on-task and distracted prompts
together) and distracted prompts from clean ones, and the alert rate of the default policy on
each set. Scores: `anomaly` as it is; `node out of range` the largest |z| of a node;
`disagree` 1 or 0; `low share` the negative share; `disengaged` the negative engagement. An
AUROC below 0.5 separates the other way round.
"""

from __future__ import annotations

import argparse
import os
import platform
from collections import Counter
from pathlib import Path

import torch

from sparsecircuits.circuits import Circuit
from sparsecircuits.circuits.search import open_run
from sparsecircuits.demo import shipped_runs
from sparsecircuits.monitor import auroc, monitor
from sparsecircuits.tasks import get_task
from sparsecircuits.train import val_windows

STUDY = Path(shipped_runs()[0]).parent / "study" / "circuits"
# alert name -> the score it thresholds (higher: more suspect)
MEASURES = {"anomaly": lambda r: r["anomaly"], "node out of range": lambda r: r["node_z_max"],
            "disagree": lambda r: float(not r["agree"]), "low share": lambda r: -(r["share"] or 0),
            "disengaged": lambda r: -r["engagement"]}


def distracted(prompt: str, other: str) -> str:
    """`prompt` with `other`'s last line inserted before its own last line, as a comment."""
    head, _, last = prompt.rpartition("\n")
    other_last = other.rpartition("\n")[2]
    indent = last[:len(last) - len(last.lstrip())]
    return f"{head}\n{indent}# {other_last.strip()}\n{last}"


def alert_rate(records, name: str | None = None) -> float:
    """The fraction of records with alert `name` (any alert if None)."""
    hit = [(name in r["alerts"]) if name else bool(r["alerts"]) for r in records]
    return sum(hit) / max(1, len(hit))


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--val-windows", type=int, default=32)
    a = ap.parse_args()
    run = shipped_runs()[0]
    model, tok, corpus = open_run(run)
    print(f"{run}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}; {a.pairs} test pairs per task, {a.val_windows} val windows")
    windows = val_windows(corpus.val, a.val_windows, model.cfg.block_size)[:, :-1]
    for task_dir in sorted(STUDY.iterdir()):
        circuit = task_dir / "sparse.json"
        task = get_task(task_dir.name)
        if not Circuit.load(circuit).num_nodes:
            print(f"\n{task.name}: the circuit has no nodes (the last token gives the answer "
                  "away); nothing to watch")
            continue
        pairs = task.pairs(a.pairs, "test", seed=0, at_most=True)
        common = Counter(frozenset((p.target, p.alt)) for p in pairs).most_common(1)[0][0]
        pairs = [p for p in pairs if frozenset((p.target, p.alt)) == common]  # as the monitor
        items = []  # (kind, prompt, right answer)
        for p in pairs:
            items += [("clean", p.clean, p.target), ("clean", p.corrupt, p.alt),
                      ("distracted", distracted(p.clean, p.corrupt), p.target),
                      ("distracted", distracted(p.corrupt, p.clean), p.alt)]
        with monitor(model, [circuit], tok=tok, corpus=corpus, log=None) as mon:
            with torch.no_grad():
                for _, prompt, _ in items:
                    model(torch.tensor([tok.encode(prompt, add_special_tokens=False).ids]))
        ref = mon.watched[0].reference
        recs = mon.records
        right = [(r["diff_model"] > 0) == (answer == ref.target)
                 for r, (_, _, answer) in zip(recs, items)]
        kind = [k for k, _, _ in items]
        with monitor(model, [circuit], tok=tok, corpus=corpus, positions="all", log=None) as off:
            with torch.no_grad():
                for w in windows:
                    model(w.unsqueeze(0))
        print(f"\n{task.name}: circuit of {len(ref.nodes)} nodes; model right on "
              f"{sum(r for r, k in zip(right, kind) if k == 'clean')}/{kind.count('clean')} "
              f"clean and {sum(r for r, k in zip(right, kind) if k != 'clean')}/"
              f"{kind.count('distracted')} distracted prompts")
        print(f"  {'alert':<18} {'AUROC wrong/right':>18} {'AUROC distracted/clean':>23} "
              f"{'alerts clean':>13} {'distracted':>11} {'off-task':>9}")
        clean_r = [r for r, k in zip(recs, kind) if k == "clean"]
        dist_r = [r for r, k in zip(recs, kind) if k != "clean"]
        for name, score in MEASURES.items():
            s = [score(r) for r in recs]
            wrong = auroc(s, [not x for x in right])
            dist = auroc(s, [k == "distracted" for k in kind])
            rates = [alert_rate(rs, name) for rs in (clean_r, dist_r, off.records)]
            print(f"  {name:<18} {fmt(wrong):>18} {fmt(dist):>23} {rates[0]:>13.3f} "
                  f"{rates[1]:>11.3f} {rates[2]:>9.3f}")
        any_rate = [alert_rate(rs) for rs in (clean_r, dist_r, off.records)]
        print(f"  {'any alert':<18} {'':>18} {'':>23} {any_rate[0]:>13.3f} {any_rate[1]:>11.3f} "
              f"{any_rate[2]:>9.3f}")


if __name__ == "__main__":
    main()
