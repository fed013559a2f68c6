"""Wall time of the main job, `sparsecircuits demo`, on the shipped models.

    python bench/bench_demo.py [--out DIR]

Runs the demo once with the default corpus and node statistics already cached (run it twice
on a fresh machine: the first run builds the corpus, ~30 s more) and prints the seconds taken
and how many tasks and circuits it covered.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from sparsecircuits.demo import demo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="demo-bench-"))
    t = time.perf_counter()
    demo(out, log=lambda *x: None)
    dt = time.perf_counter() - t
    result = json.loads((out / "compare.json").read_text())
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"demo: {dt:.0f} s for {len(result['tasks'])} tasks x 2 models (budget 5 min); "
          f"output in {out}")


if __name__ == "__main__":
    main()
