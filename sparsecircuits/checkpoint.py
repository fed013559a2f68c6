"""Run folders: safetensors + JSON, written atomically, validated on load.

    config.json            the RunConfig (strictly loadable)
    tokenizer.json         the BPE the model was trained with
    trainer_state.json     step, tokens seen, last val loss, and which checkpoint is current
    checkpoint-000060/     the current checkpoint, one unit:
        model.safetensors      weights; metadata: step, config, versions
        optimizer.safetensors  Adam moments per parameter; metadata: step
        bridges.*              a bridged run's bridges and their moments
    metrics.jsonl          one JSON row per log / eval

A checkpoint is written whole into a hidden folder, renamed to `checkpoint-STEP`, and only then
made current by rewriting `trainer_state.json` (a temp file renamed over it: one atomic step);
the previous checkpoint is removed after that. A kill at any instant therefore leaves the last
complete checkpoint current, and `--resume` continues from it exactly. Readers find the current
weights through `checkpoint_dir`, which also reads the flat layout (model.safetensors beside
config.json) of exported and imported runs and of runs trained before checkpoints had folders.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

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


def write_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """A safetensors file, its bytes written by Python so that a full disk is an OSError like
    any other write error (safetensors' own writer raises its own error type)."""
    _write_bytes(Path(path), save(tensors, metadata=metadata))


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename that publishes it


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem can sync a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


CHECKPOINT_NAME = re.compile(r"checkpoint-\d+")


def save_checkpoint(run_dir: Path, model: GPT, optimizer: torch.optim.Optimizer, state: dict,
                    cfg: RunConfig, extra=None) -> None:
    """Write model, optimizer (and `extra(folder)`'s files: a bridged run's bridges) as one
    checkpoint, made current by the trainer state that names it (see the module's docstring).
    A write error (a full disk) removes the partial checkpoint, keeps the last good one, and
    stops with one line saying what the folder needs."""
    run_dir = Path(run_dir)
    step = int(state["step"])
    name = f"checkpoint-{step:06d}"
    final, staged = run_dir / name, run_dir / f".{name}.partial"
    previous = _read_state(run_dir).get("step") if (run_dir / STATE_FILE).is_file() else None
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(format="sparsecircuits", step=str(step), config=json.dumps(cfg.to_dict()),
                versions=json.dumps(versions()))
    moments = adam_moments(model, optimizer)
    size = sum(t.numel() * t.element_size() for d in (weights, moments) for t in d.values())
    try:
        for leftover in (staged, final):  # from a write killed before it was made current
            if leftover.exists():
                shutil.rmtree(leftover)
        staged.mkdir()
        write_tensors(staged / OPTIM_FILE, moments, dict(step=str(step)))
        write_tensors(staged / MODEL_FILE, weights, meta)
        if extra is not None:
            extra(staged)
        _fsync_dir(staged)
        os.rename(staged, final)  # complete, though not yet current
        _write_state(run_dir, dict(state, checkpoint=name))  # the commit
    except OSError as e:
        for partial in (staged, final):  # the commit is the last step: neither is current
            shutil.rmtree(partial, ignore_errors=True)
        fix = "free space (or fix the folder's permissions)"
        then = (f"the last good checkpoint (step {previous}) is kept: {fix} and continue with "
                f"`sparsecircuits train --out {run_dir} --resume`" if previous is not None else
                f"no checkpoint was written yet: {fix}, delete {run_dir} and train again")
        raise UserError(f"could not write the checkpoint of step {step} into {run_dir} "
                        f"({e.strerror or e}); a checkpoint needs about {_megabytes(size)} free "
                        f"there; {then}.") from None
    _remove_stale(run_dir, name)


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**20:.2f} MB"


def _write_state(run_dir: Path, state: dict) -> None:
    """trainer_state.json replaced in one rename: the step at which a checkpoint commits."""
    path = run_dir / STATE_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", suffix=".tmp", dir=run_dir)
    os.close(fd)
    try:
        _write_bytes(Path(tmp), json.dumps(state, indent=1).encode())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(run_dir)


def _remove_stale(run_dir: Path, current: str) -> None:
    """Everything a new checkpoint supersedes: older checkpoint folders, partial ones and temp
    files left by a killed write, and the flat files of a run written before folders."""
    for f in run_dir.iterdir():
        stale = ((CHECKPOINT_NAME.fullmatch(f.name) and f.name != current)
                 or (f.name.startswith(".checkpoint-") and f.name.endswith(".partial"))
                 or (f.name.startswith(f".{STATE_FILE}.") and f.name.endswith(".tmp"))
                 or (f.is_file() and (run_dir / current / f.name).is_file()))
        if stale:  # a leftover that cannot go now goes with the next checkpoint
            with contextlib.suppress(OSError):
                shutil.rmtree(f) if f.is_dir() else f.unlink()


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
        raise UserError(f"{path} is missing; restore it, or train the run again.")
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
    run_dir = Path(run_dir)
    path = checkpoint_dir(run_dir) / MODEL_FILE
    if not path.is_file() and not (run_dir / STATE_FILE).is_file():
        raise no_checkpoint(run_dir)
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
    path = checkpoint_dir(run_dir) / OPTIM_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} holds no optimizer state (an exported or imported run keeps "
                        "only its weights), so its training cannot resume; train a new run.")
    tensors, meta = _read_safetensors(path)
    restore_adam_moments(model, optimizer, tensors)
    return int(meta.get("step", -1))


def checkpoint_dir(run_dir: str | Path) -> Path:
    """The folder holding a run's current weights (and, for a run trained here, its optimizer
    state and bridges): the checkpoint that trainer_state.json names, or the run folder itself
    in the flat layout. Every reader of a run's weights finds them through this function."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE_FILE).is_file():
        return run_dir
    name = _read_state(run_dir).get("checkpoint")
    return run_dir / name if name else run_dir


def no_checkpoint(run_dir: Path) -> UserError:
    """The one description of a run folder whose training stopped before its first checkpoint
    (`train`, `train --resume` and `load` all say this)."""
    return UserError(f"{run_dir} holds a run that stopped before its first checkpoint, so there "
                     f"is nothing to load or resume; delete {run_dir} and train again (or train "
                     "into another --out).")


def read_trainer_state(run_dir: str | Path) -> dict:
    """Step, tokens and last val loss of the run's current checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE_FILE).is_file():
        if (run_dir / MODEL_FILE).is_file():
            raise UserError(f"{run_dir} holds a model that was not trained here (it has no "
                            f"{STATE_FILE}), so there is no training to resume; train a new "
                            "run into another --out.")
        raise no_checkpoint(run_dir)
    return {k: v for k, v in _read_state(run_dir).items() if k != "checkpoint"}


def _read_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupt; restore it or start a new run.") from None

    def bad(key: str, expected: str):
        raise UserError(f"{path}: {key} = {state.get(key)!r} should be {expected}; the file is "
                        "damaged, restore it or start a new run.")
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a JSON object; restore it or start a new run.")
    for key in ("step", "tokens"):
        v = state.get(key)
        if type(v) is not int or v < 0:  # bool is not a count
            bad(key, "a whole number >= 0")
    v = state.get("val_loss")
    if v is not None and (type(v) not in (int, float) or not math.isfinite(v)):
        bad("val_loss", "a finite number or null")
    name = state.get("checkpoint")
    if name is not None:
        if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
            bad("checkpoint", "the name of a checkpoint folder, like 'checkpoint-000060'")
        if not (run_dir / name).is_dir():
            raise UserError(f"{path} names the checkpoint folder {name}, which is missing from "
                            f"{run_dir}; restore it, or start a new run.")
    return state


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl. Rows are appended as training goes, so a kill can cut the
    last one short: a line that is not a JSON object is skipped, not fatal."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and type(row.get("step")) is int:
            rows.append(row)
    return rows


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
