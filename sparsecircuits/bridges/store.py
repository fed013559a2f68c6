"""Bridges on disk, beside the sparse model in its checkpoint (`checkpoint.checkpoint_dir`):

    bridges.json                     BridgeConfig: the dense run and its hash, weights, step, eval
    bridges.safetensors              encoder and decoder weights; metadata: step, shapes
    bridges.optimizer.safetensors    their Adam moments (resuming); metadata: step

A bridge file is bound to one pair of models: the dense run's weights hash is checked on every
load, and so is the sparse model's (recorded when the bridges were saved with it). The dense run
is recorded relative to the bridged run's folder, so the two can move together (a release ships
both); in memory `BridgeConfig.dense_run` is always an absolute path.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from ..checkpoint import (_read_safetensors, adam_moments, atomic_write_text, checkpoint_dir,
                          load, restore_adam_moments, write_tensors)
from ..circuits.ablation import model_hash
from ..errors import UserError
from .core import BRIDGES_FILE, BRIDGES_META, BRIDGES_OPTIM, BridgeConfig, Bridges


def has_bridges(run_dir: str | Path) -> bool:
    return (checkpoint_dir(run_dir) / BRIDGES_META).is_file()


def read_bridge_config(run_dir: str | Path) -> BridgeConfig:
    path = checkpoint_dir(run_dir) / BRIDGES_META
    if not path.is_file():
        raise UserError(f"{run_dir} has no bridges ({BRIDGES_META} is missing); train it with "
                        "`sparsecircuits train --bridge-to DENSE_RUN` or make bridges with "
                        "`sparsecircuits bridge SPARSE_RUN DENSE_RUN --out DIR`.")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupt; restore it or make the bridges again.") from None
    _check_bridge_config(d, path)
    cfg = BridgeConfig.from_dict(d)
    cfg.dense_run = str((Path(run_dir) / cfg.dense_run).resolve())  # an absolute one stays
    return cfg


def _number(v, lo: float, hi: float) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and lo <= v <= hi


def _rms_ok(v) -> bool:
    """Empty (the bridges' training has not finished) or the two models' residual RMS at the
    same locations, each above 0 (steering divides by them)."""
    if not isinstance(v, dict) or not v:
        return isinstance(v, dict)
    return (set(v) == {"sparse", "dense"} and all(isinstance(r, dict) for r in v.values())
            and set(v["sparse"]) == set(v["dense"])
            and all(_number(x, 1e-30, math.inf) for r in v.values() for x in r.values()))


# bridges.json's fields: the test each value must pass, and what it should be
FIELDS = {"dense_run": (lambda v: isinstance(v, str) and v != "", "a folder path"),
          "dense_hash": (lambda v: isinstance(v, str), "a string"),
          "sparse_hash": (lambda v: isinstance(v, str), "a string"),
          "frozen": (lambda v: isinstance(v, bool), "true or false"),
          "afrac": (lambda v: _number(v, 1e-9, 1), "a number in (0, 1]"),
          "nmse_weight": (lambda v: _number(v, 0, math.inf), "a finite number >= 0"),
          "kl_weight": (lambda v: _number(v, 0, math.inf), "a finite number >= 0"),
          "kl_sites": (lambda v: type(v) is int and v >= 0, "a whole number >= 0"),
          "step": (lambda v: type(v) is int and v >= 0, "a whole number >= 0"),
          "rms": (_rms_ok, '{"sparse": {location: rms}, "dense": {location: rms}}, each above 0'),
          "eval": (lambda v: isinstance(v, dict), "an object")}


def _check_bridge_config(d, path: Path) -> None:
    """Every field of bridges.json of the type and range its readers rely on."""
    if not isinstance(d, dict):
        raise UserError(f"{path} does not hold a JSON object; restore it or make the bridges "
                        "again.")
    for key in ("dense_run", "dense_hash"):
        if key not in d:
            raise UserError(f"{path} has no '{key}'; restore it or make the bridges again.")
    for key, (ok, expected) in FIELDS.items():
        if key in d and not ok(d[key]):
            raise UserError(f"{path}: {key} = {json.dumps(d[key])[:60]} should be {expected}; "
                            "restore the file or make the bridges again.")


def load_dense(cfg: BridgeConfig, sparse=None):
    """The dense run the bridges were made for, checked against the recorded hash."""
    dense_run = Path(cfg.dense_run)
    if not dense_run.is_dir():
        raise UserError(f"the bridges' dense run {dense_run} does not exist; restore it there "
                        "(bridges are bound to that exact dense model).")
    dense, _ = load(dense_run)
    dense.requires_grad_(False)
    if sparse is not None:
        dense.to(next(sparse.parameters()).device)
    h = model_hash(dense)
    if h != cfg.dense_hash:
        raise UserError(f"the bridges were made for a dense model with hash {cfg.dense_hash}, but "
                        f"{dense_run} now holds one with hash {h}; restore that dense run or make "
                        "the bridges again.")
    return dense


def save_bridges(run_dir: Path, bridges: Bridges, optimizer, cfg: BridgeConfig, sparse,
                 folder: Path | None = None) -> None:
    """Write the bridges (and their Adam moments, if `optimizer`) into `folder` (default: the
    run folder itself), a folder being written whole: a checkpoint or an export."""
    folder = Path(folder or run_dir)
    step = str(cfg.step)
    cfg.sparse_hash = model_hash(sparse)
    meta = dict(format="sparsecircuits-bridges", step=step, locations=json.dumps(bridges.locations),
                d_sparse=str(bridges.d_sparse), d_dense=str(bridges.d_dense),
                afrac=repr(bridges.afrac))
    weights = {k: v.detach().cpu().contiguous() for k, v in bridges.state_dict().items()}
    if optimizer is not None:
        write_tensors(folder / BRIDGES_OPTIM, adam_moments(bridges, optimizer), dict(step=step))
    write_tensors(folder / BRIDGES_FILE, weights, meta)
    write_bridge_config(run_dir, cfg, folder)


def write_bridge_config(run_dir: Path, cfg: BridgeConfig, folder: Path | None = None) -> None:
    """`bridges.json` into `folder` (default: the run folder), with the dense run's path
    relative to `run_dir`."""
    d = asdict(cfg)
    d["dense_run"] = os.path.relpath(Path(cfg.dense_run).resolve(), Path(run_dir).resolve())
    atomic_write_text(Path(folder or run_dir) / BRIDGES_META, json.dumps(d, indent=1))


def load_bridges(run_dir: str | Path, sparse) -> tuple[Bridges, BridgeConfig]:
    """The bridges saved in `run_dir`, for the sparse model `sparse` loaded from it."""
    run_dir = Path(run_dir)
    cfg = read_bridge_config(run_dir)
    path = checkpoint_dir(run_dir) / BRIDGES_FILE
    tensors, meta = _read_safetensors(path)
    if meta.get("step") != str(cfg.step):
        raise UserError(f"{path} (step {meta.get('step')}) and {BRIDGES_META} (step {cfg.step}) "
                        "disagree, probably from an interrupted write; make the bridges again.")
    damaged = UserError(f"{path} does not hold the bridges its metadata describes; it is "
                        "damaged, make the bridges again.")
    try:
        locations = json.loads(meta.get("locations", "[]"))
        d_sparse, d_dense, afrac = int(meta["d_sparse"]), int(meta["d_dense"]), float(meta["afrac"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise damaged from None
    if (locations != sparse.resid_names() or d_sparse != sparse.cfg.d_model
            or (cfg.sparse_hash and model_hash(sparse) != cfg.sparse_hash)):
        raise UserError(f"{path} belongs to another pair of models (it was saved with a sparse "
                        f"model of hash {cfg.sparse_hash or '?'}); make bridges for this pair "
                        "with `sparsecircuits bridge SPARSE_RUN DENSE_RUN --out DIR`.")
    if not (0 < afrac <= 1 and d_dense > 0):
        raise damaged
    bridges = Bridges(locations, d_sparse, d_dense, afrac)
    own = bridges.state_dict()
    if (set(own) != set(tensors) or any(own[k].shape != v.shape for k, v in tensors.items())
            or not all(bool(v.isfinite().all()) for v in tensors.values())):
        raise damaged
    bridges.load_state_dict(tensors)
    bridges.to(next(sparse.parameters()).device)
    return bridges, cfg


def load_bridge_moments(run_dir: Path, bridges: Bridges, optimizer, step: int) -> None:
    """Restore the bridges' Adam moments saved at `step` (resuming a bridged run)."""
    path = checkpoint_dir(run_dir) / BRIDGES_OPTIM
    moments, meta = _read_safetensors(path)
    if meta.get("step") != str(step):
        raise UserError(f"{path} is from step {meta.get('step')}, the run from step {step}; "
                        "the checkpoint is inconsistent, probably from an interrupted write; "
                        "start a new run.")
    restore_adam_moments(bridges, optimizer, moments)
