"""Export a trained run as a compact release: half-precision weights, no optimizer state.

The exported folder is an ordinary run folder (`load`, `eval`, `prune` read it); its weights
are stored in float16 or bfloat16 and upcast on load, so the released model *is* the rounded
one. A sparse model's weight tensors are stored as their nonzeros (positions and values) where
that is smaller. Its `trainer_state.json` records the val loss of those rounded weights (and
the full-precision one beside it). A bridged run's bridges come along (without their optimizer
state), bound to the rounded sparse model and measured again with it. Rounding must not change
the sparsity pattern: a nonzero weight under the weight budget too small for the chosen format
is an error, not a silent zero.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from .bridges.store import has_bridges, load_bridges, save_bridges, write_bridge_config
from .importers import PROVENANCE_FILE
from .checkpoint import (MODEL_FILE, STATE_FILE, load, read_run_config, staged_dir,
                         read_trainer_state, sparsify, versions, write_tensors)
from .errors import UserError

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def export_run(run_dir: str | Path, out: str | Path, dtype: str = "float16", log=print) -> Path:
    from .evaluate import evaluate
    run_dir, out = Path(run_dir), Path(out)
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use float16 or bfloat16.")
    model, _ = load(run_dir)
    imported = (run_dir / PROVENANCE_FILE).is_file()  # nothing trained here: no trainer state
    state = {} if imported else read_trainer_state(run_dir)
    dense = read_run_config(run_dir).sparsity.is_dense  # no pattern to keep
    patterned = set() if dense else {st.name for st in model.sparse_tensors()}
    tensors = {}
    for name, t in model.state_dict().items():
        half = t.to(DTYPES[dtype])
        lost = int(((t != 0) & (half == 0)).sum())
        if lost and name in patterned:  # elsewhere (the dense bigram table) it is only rounding
            raise UserError(f"{name} has {lost} nonzero weights too small for {dtype}; export "
                            "with --dtype bfloat16, which keeps float32's range.")
        tensors[name] = half.contiguous()
    with staged_dir(out) as tmp:
        for f in ("config.json", "tokenizer.json", "metrics.jsonl", PROVENANCE_FILE):
            if (run_dir / f).is_file():
                shutil.copy(run_dir / f, tmp / f)
        meta = dict(format="sparsecircuits", step=str(state.get("step", 0)), dtype=dtype,
                    exported_from=str(run_dir.resolve()), versions=json.dumps(versions()))
        tensors, shapes = sparsify(tensors, patterned)
        if shapes:
            meta["sparse"] = json.dumps(shapes)
        write_tensors(tmp / MODEL_FILE, tensors, meta)  # flat: the folder is one unit already
        if has_bridges(run_dir):
            bridges, bcfg = load_bridges(run_dir, model)
            exported, _ = load(tmp)
            save_bridges(tmp, bridges, None, bcfg, exported)  # bound to the rounded weights
        report = evaluate(tmp)
        val = report.val_loss
        if report.bridges:
            bcfg.eval = report.bridges["eval"]
            write_bridge_config(tmp, bcfg)
        state = dict(state, val_loss=val, val_loss_float32=state.get("val_loss"), dtype=dtype)
        if not imported:
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    full = state["val_loss_float32"]
    log(f"exported {run_dir} to {out} in {dtype}: val loss {val:.4f}"
        + (f" (float32: {full:.4f})" if full is not None else ""))
    return out
