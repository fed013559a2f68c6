"""Import each released model's real config at its real size, and run the commands on it.

For every `beeg_config.json` in tests/fixtures/release-configs/ (the release's files, byte for
byte): a synthetic `final_model.pt` of the config's real shape (random weights, each weight
matrix at the density its `pfrac` gives, every key of the config as released) and the
shipped tokenizer written as the release's `vocab.bpe` / `encoder.json`; then, each a process
of its own, timed with its peak resident memory:

    sparsecircuits import circuit-sparsity DIR --out RUN
    sparsecircuits eval RUN --batches 1                                      (with --commands)
    sparsecircuits prune RUN --task TASK --out C.json --budget 1              (with --commands)
    sparsecircuits view C.json --out C.html                                  (with --commands)

    python bench/bench_import.py [--models csp_yolo2 ...] [--commands] [--steps 150] [--work DIR]

The weights carry the planted mechanism of the import tests (three nodes in layer 0 decide
between two answers) so that `prune` has a task the model does; the point is that each
command takes a run of that size, and what it costs. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "tests" / "fixtures" / "release-configs"


def synthetic_release(name: str, folder: Path, task: Path) -> dict:
    """The release folder of `name` at its real size, with the shipped tokenizer, and the
    planted task written to `task`."""
    import torch

    from sparsecircuits.demo import shipped_runs
    from sparsecircuits.tokenizer import load_tokenizer
    from tests.test_circuits_cli import write_planted_task
    from tests.test_import import plant, release_tensors, write_tokenizer_files
    raw = (CONFIGS / name / "beeg_config.json").read_bytes()
    c = json.loads(raw)
    tok = load_tokenizer(Path(shipped_runs()[0]) / "tokenizer.json")
    sd = release_tensors(c)
    ef = c.get("expansion_factor") or 1
    density = min(1.0, c["pfrac"] / ef ** 2)  # the paper's budget: pfrac of the 1x matrix
    g = torch.Generator().manual_seed(0)
    for k, t in sd.items():
        if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            t.mul_(torch.rand(t.shape, generator=g) < density)
    words, sd = plant(c, sd, tok)
    write_planted_task(task, words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "beeg_config.json").write_bytes(raw)  # byte for byte
    torch.save(sd, folder / "final_model.pt")
    write_tokenizer_files(tok, folder)
    return c


def timed(*args) -> tuple[float, float, str]:
    """Wall seconds, peak resident GiB and the output of one command in a process of its own."""
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "sparsecircuits", *args],
                       capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode:
        raise SystemExit(f"error: sparsecircuits {' '.join(args)} failed:\n{p.stdout}{p.stderr}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return wall, peak / 2 ** 20, p.stdout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=sorted(p.name for p in CONFIGS.iterdir()
                                                          if p.is_dir()))
    ap.add_argument("--commands", action="store_true", help="also eval, prune and view")
    ap.add_argument("--steps", type=int, default=150, help="prune's mask-training steps")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-import")
    a = ap.parse_args(argv)
    rows = []
    for name in a.models:
        work = a.work / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        task = work / "planted.toml"
        c = synthetic_release(name, work / "release", task)
        wall, peak, out = timed("import", "circuit-sparsity", str(work / "release"), "--out",
                                str(work / "run"))
        print(out.strip().splitlines()[-1], flush=True)
        row = dict(model=name, layers=c["n_layer"], d_model=c["d_model"],
                   checkpoint_gib=(work / "release" / "final_model.pt").stat().st_size / 2 ** 30,
                   import_s=wall, import_gib=peak)
        if a.commands:
            for key, args in (
                    ("eval", ("eval", str(work / "run"), "--batches", "1")),
                    ("prune", ("prune", str(work / "run"), "--task", str(task), "--out",
                               str(work / "c.json"),
                               "--budget", "1", "--steps", str(a.steps))),
                    ("view", ("view", str(work / "c.json"), "--out", str(work / "c.html")))):
                row[f"{key}_s"], row[f"{key}_gib"], _ = timed(*args)
                print(f"  {key}: {row[f'{key}_s']:.0f} s, {row[f'{key}_gib']:.1f} GiB", flush=True)
        rows.append(row)
        shutil.rmtree(work / "release")  # the synthetic checkpoint is large; the run stays
    cmds = ("import", "eval", "prune", "view") if a.commands else ("import",)
    print("\n| model | layers | d_model | final_model.pt | "
          + " | ".join(f"{c} (wall, peak RSS)" for c in cmds) + " |")
    print("| --- | --- | --- | --- |" + " --- |" * len(cmds))
    for r in rows:
        print(f"| `{r['model']}` | {r['layers']} | {r['d_model']} | {r['checkpoint_gib']:.2f} GiB | "
              + " | ".join(f"{r[c + '_s']:.0f} s, {r[c + '_gib']:.1f} GiB" for c in cmds) + " |")


if __name__ == "__main__":
    main()
