"""Bridges on disk, beside the sparse model in its run folder:

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
import os
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import save_file

from ..checkpoint import (_read_safetensors, adam_moments, atomic_write, atomic_write_text, load,
                          restore_adam_moments)
from ..circuits.ablation import model_hash
from ..errors import UserError
from .core import BRIDGES_FILE, BRIDGES_META, BRIDGES_OPTIM, BridgeConfig, Bridges


def has_bridges(run_dir: str | Path) -> bool:
    return (Path(run_dir) / BRIDGES_META).is_file()


def read_bridge_config(run_dir: str | Path) -> BridgeConfig:
    path = Path(run_dir) / BRIDGES_META
    if not path.is_file():
        raise UserError(f"{run_dir} has no bridges ({BRIDGES_META} is missing); train it with "
                        "`sparsecircuits train --bridge-to DENSE_RUN` or make bridges with "
                        "`sparsecircuits bridge SPARSE_RUN DENSE_RUN --out DIR`.")
    try:
        cfg = BridgeConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        raise UserError(f"{path} is corrupt; restore it or make the bridges again.") from None
    cfg.dense_run = str((Path(run_dir) / cfg.dense_run).resolve())  # an absolute one stays
    return cfg


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


def save_bridges(run_dir: Path, bridges: Bridges, optimizer, cfg: BridgeConfig, sparse) -> None:
    """Write the bridges (and their Adam moments, if `optimizer`) beside the sparse model."""
    step = str(cfg.step)
    cfg.sparse_hash = model_hash(sparse)
    meta = dict(format="sparsecircuits-bridges", step=step, locations=json.dumps(bridges.locations),
                d_sparse=str(bridges.d_sparse), d_dense=str(bridges.d_dense),
                afrac=repr(bridges.afrac))
    weights = {k: v.detach().cpu().contiguous() for k, v in bridges.state_dict().items()}
    if optimizer is not None:
        moments = adam_moments(bridges, optimizer)
        atomic_write(run_dir / BRIDGES_OPTIM,
                     lambda t: save_file(moments, t, metadata=dict(step=step)))
    atomic_write(run_dir / BRIDGES_FILE, lambda t: save_file(weights, t, metadata=meta))
    write_bridge_config(run_dir, cfg)


def write_bridge_config(run_dir: Path, cfg: BridgeConfig) -> None:
    """`bridges.json`, with the dense run's path relative to `run_dir`."""
    d = asdict(cfg)
    d["dense_run"] = os.path.relpath(Path(cfg.dense_run).resolve(), Path(run_dir).resolve())
    atomic_write_text(Path(run_dir) / BRIDGES_META, json.dumps(d, indent=1))


def load_bridges(run_dir: str | Path, sparse) -> tuple[Bridges, BridgeConfig]:
    """The bridges saved in `run_dir`, for the sparse model `sparse` loaded from it."""
    run_dir = Path(run_dir)
    cfg = read_bridge_config(run_dir)
    path = run_dir / BRIDGES_FILE
    tensors, meta = _read_safetensors(path)
    if meta.get("step") != str(cfg.step):
        raise UserError(f"{path} (step {meta.get('step')}) and {BRIDGES_META} (step {cfg.step}) "
                        "disagree, probably from an interrupted write; make the bridges again.")
    locations = json.loads(meta.get("locations", "[]"))
    if (locations != sparse.resid_names() or int(meta.get("d_sparse", -1)) != sparse.cfg.d_model
            or (cfg.sparse_hash and model_hash(sparse) != cfg.sparse_hash)):
        raise UserError(f"{path} belongs to another pair of models (it was saved with a sparse "
                        f"model of hash {cfg.sparse_hash or '?'}); make bridges for this pair "
                        "with `sparsecircuits bridge SPARSE_RUN DENSE_RUN --out DIR`.")
    bridges = Bridges(locations, int(meta["d_sparse"]), int(meta["d_dense"]), float(meta["afrac"]))
    own = bridges.state_dict()
    if set(own) != set(tensors) or any(own[k].shape != v.shape for k, v in tensors.items()):
        raise UserError(f"{path} does not hold the bridges its metadata describes; it is damaged, "
                        "make the bridges again.")
    bridges.load_state_dict(tensors)
    bridges.to(next(sparse.parameters()).device)
    return bridges, cfg


def load_bridge_moments(run_dir: Path, bridges: Bridges, optimizer, step: int) -> None:
    """Restore the bridges' Adam moments saved at `step` (resuming a bridged run)."""
    path = Path(run_dir) / BRIDGES_OPTIM
    moments, meta = _read_safetensors(path)
    if meta.get("step") != str(step):
        raise UserError(f"{path} is from step {meta.get('step')}, the run from step {step}; "
                        "the checkpoint is inconsistent, probably from an interrupted write; "
                        "start a new run.")
    restore_adam_moments(bridges, optimizer, moments)
