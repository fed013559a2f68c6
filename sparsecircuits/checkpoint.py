"""Run folders: safetensors + JSON, written atomically, validated on load.

    config.json            the RunConfig (strictly loadable)
    tokenizer.json         the BPE the model was trained with
    model.safetensors      weights; metadata: step, config, versions
    optimizer.safetensors  Adam moments per parameter; metadata: step
    trainer_state.json     step, tokens seen, last val loss
    metrics.jsonl          one JSON row per log / eval

Every file is written to a temp file and renamed, so a crash never leaves a half-written file
that looks complete; model, optimizer and trainer state each record their step, and resuming
refuses a set whose steps disagree.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import RunConfig, load_config
from .errors import UserError
from .model import GPT
from .tokenizer import load_tokenizer

MODEL_FILE, OPTIM_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "trainer_state.json"


def versions() -> dict:
    import numpy
    import safetensors
    import tokenizers

    from . import __version__
    return dict(sparsecircuits=__version__, torch=torch.__version__, numpy=numpy.__version__,
                tokenizers=tokenizers.__version__, safetensors=safetensors.__version__,
                python=platform.python_version())


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`; the temp file is removed on failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def output_dir(path: str | Path) -> Path:
    """Create an output folder (and its parents), or say in one line why it cannot be one."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{path} is (or lies under) a file, not a folder; choose another "
                        "--out.") from None
    except PermissionError:
        raise UserError(f"no permission to write {path}; choose another --out.") from None
    return path


@contextlib.contextmanager
def staged_dir(out: str | Path, replace: bool = False):
    """Build the folder `out` under a temporary name beside it, renamed to `out` only when the
    block ends without error (removed otherwise), so nobody ever sees it half-written. Without
    `replace`, `out` must not exist or be an empty folder; with it, an old `out` is replaced."""
    out = Path(out)
    if not replace and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty folder; choose another --out.")
    output_dir(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a result is for others to read
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, 0o666 & ~_umask())
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            shutil.rmtree(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_checkpoint(run_dir: Path, model: GPT, optimizer: torch.optim.Optimizer, state: dict,
                    cfg: RunConfig) -> None:
    step = str(state["step"])
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(format="sparsecircuits", step=step, config=json.dumps(cfg.to_dict()),
                versions=json.dumps(versions()))
    moments = adam_moments(model, optimizer)
    atomic_write(run_dir / OPTIM_FILE, lambda t: save_file(moments, t, metadata=dict(step=step)))
    atomic_write(run_dir / MODEL_FILE, lambda t: save_file(weights, t, metadata=meta))
    atomic_write_text(run_dir / STATE_FILE, json.dumps(state, indent=1))


def adam_moments(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The Adam state of `module`'s parameters, by parameter name (what a checkpoint saves)."""
    moments = {}
    for name, p in module.named_parameters():
        st = optimizer.state.get(p)
        if st:
            moments[f"{name}.exp_avg"] = st["exp_avg"].detach().cpu().contiguous()
            moments[f"{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().contiguous()
            moments[f"{name}.step"] = torch.as_tensor(st["step"]).detach().cpu().reshape(1)
    return moments


def restore_adam_moments(module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         moments: dict) -> None:
    """The inverse of `adam_moments`: put saved state back on `module`'s parameters."""
    for name, p in module.named_parameters():
        if f"{name}.exp_avg" in moments:
            optimizer.state[p] = dict(step=moments[f"{name}.step"].reshape(()).clone(),
                                      exp_avg=moments[f"{name}.exp_avg"].to(p.device),
                                      exp_avg_sq=moments[f"{name}.exp_avg_sq"].to(p.device))


def read_run_config(run_dir: str | Path) -> RunConfig:
    run_dir = _run_dir(run_dir)
    return load_config(run_dir / "config.json")


def _run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist; pass a folder made by "
                        "`sparsecircuits train --out`.")
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} has no config.json, so it is not a run folder; pass a folder "
                        "made by `sparsecircuits train --out`.")
    return run_dir


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise UserError(f"{path} is missing; the run has no checkpoint yet (train it, or restore "
                        "the file).")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return densify(load_file(str(path)), meta), meta
    except (SafetensorError, OSError, ValueError, RuntimeError, IndexError, KeyError,
            TypeError) as e:
        raise UserError(f"{path} is corrupt or truncated ({e}); restore it or retrain the "
                        "run.") from None


# A released sparse model may store a tensor as its nonzeros alone: NAME.nz_index (int32 flat
# positions) and NAME.nz_value, with the shapes in the metadata entry "sparse" (JSON).
NZ_INDEX, NZ_VALUE = ".nz_index", ".nz_value"


def sparsify(tensors: dict[str, torch.Tensor], names) -> tuple[dict, dict]:
    """Store each tensor of `names` as its nonzeros where that is smaller; returns the tensors
    and {name: shape} of those stored so."""
    out, shapes = dict(tensors), {}
    for name in names:
        t = tensors[name]
        flat = t.reshape(-1)
        index = flat.nonzero().squeeze(1).to(torch.int32)
        if index.numel() * (4 + t.element_size()) >= flat.numel() * t.element_size():
            continue
        del out[name]
        out[name + NZ_INDEX], out[name + NZ_VALUE] = index, flat[index.long()].contiguous()
        shapes[name] = list(t.shape)
    return out, shapes


def densify(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, torch.Tensor]:
    """The inverse of `sparsify`, reading the shapes from the file's metadata."""
    if "sparse" not in meta:
        return tensors
    out = dict(tensors)
    for name, shape in json.loads(meta["sparse"]).items():
        index, value = out.pop(name + NZ_INDEX).long(), out.pop(name + NZ_VALUE)
        dense = torch.zeros(math.prod(shape), dtype=value.dtype)
        if index.numel() and int(index.min()) < 0:
            raise ValueError(f"{name} has a negative index")
        dense[index] = value  # an index past the end raises IndexError
        out[name] = dense.reshape(shape)
    return out


def load_weights(run_dir: Path, model: GPT) -> dict:
    """Load model.safetensors into `model`, checking names and shapes; returns its metadata."""
    path = run_dir / MODEL_FILE
    tensors, meta = _read_safetensors(path)
    own = model.state_dict()
    missing, extra = set(own) - set(tensors), set(tensors) - set(own)
    if missing or extra:
        raise UserError(f"{path} does not match config.json (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(extra)[:3]}); the files come from different runs.")
    for k, v in tensors.items():
        if v.shape != own[k].shape:
            raise UserError(f"{path}: {k} has shape {tuple(v.shape)} but config.json implies "
                            f"{tuple(own[k].shape)}; the files come from different runs.")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise UserError(f"{path}: {k} has {bad} non-finite value(s) (NaN or inf), so the run "
                            "diverged or the file is damaged; retrain it (with a lower "
                            "train.lr if it diverged) or restore the file.")
    model.load_state_dict(tensors)
    return meta


def load_optimizer(run_dir: Path, model: GPT, optimizer: torch.optim.Optimizer) -> int:
    tensors, meta = _read_safetensors(run_dir / OPTIM_FILE)
    restore_adam_moments(model, optimizer, tensors)
    return int(meta.get("step", -1))


def read_trainer_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: the run stopped before its first checkpoint, so "
                        f"there is nothing to resume; delete {run_dir} and start again.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupt; restore it or start a new run.") from None


def load(run_dir: str | Path, device: str | torch.device = "cpu"):
    """Load a trained run: returns `(model, tokenizer)`, the model in eval mode."""
    run_dir = _run_dir(run_dir)
    cfg = read_run_config(run_dir)
    model = GPT(cfg.model)
    load_weights(run_dir, model)
    model.set_path(os.environ.get("SPARSECIRCUITS_PATH", "auto"))  # frozen use: see GPT.set_path
    tok = load_tokenizer(run_dir / "tokenizer.json")
    if tok.get_vocab_size() != cfg.model.vocab_size:
        raise UserError(f"{run_dir}/tokenizer.json has {tok.get_vocab_size()} tokens but the model "
                        f"has vocab_size={cfg.model.vocab_size}; the files come from different runs.")
    return model.to(device).eval(), tok
