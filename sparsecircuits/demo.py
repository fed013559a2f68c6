"""`sparsecircuits demo`: the main job, start to end on a CPU in a few minutes.

For now: build the default corpus (once), train the `tiny-sparse` preset, evaluate it, and
measure it on the paper's twenty tasks. A run already finished in the demo folder is reused;
an interrupted one is resumed.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import atomic_write_text, read_trainer_state
from .config import preset
from .evaluate import evaluate, evaluate_tasks
from .train import train


def demo(out: str | Path = "sparsecircuits-demo", log=print) -> Path:
    out = Path(out)
    run = out / "tiny-sparse"
    cfg = preset("tiny-sparse")
    if (run / "trainer_state.json").exists():
        if read_trainer_state(run)["step"] < cfg.train.max_steps:
            train(None, run, resume=True, log=log)
        else:
            log(f"reusing the finished run in {run}")
    else:
        if run.exists() and any(run.iterdir()):
            # A folder from a run that died before its first checkpoint: start it again.
            for f in run.iterdir():
                f.unlink()
        train(cfg, run, log=log)
    report = evaluate(run)
    tasks = evaluate_tasks(run, ["all"], n=32)
    text = report.format() + "\n\n" + tasks.format() + "\n"
    atomic_write_text(out / "eval.txt", text)
    log("\n" + text)
    log(f"The run (weights, config, tokenizer, metrics.jsonl) is in {run}; these tables are in "
        f"{out / 'eval.txt'}. A model this small learns few behaviours; the small presets and a "
        "GPU-sized one learn more (docs/RESULTS.md).")
    return out
