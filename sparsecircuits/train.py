"""The training loop: sharkfin LR, gradient-RMS normalisation, weight projection, checkpoints.

One step:   loss = CE(model(x), y); backward; g /= rms(g) + 1e-5; Adam step (dense)
            project every sparse tensor onto its scheduled top-k; p -= wd * lr * p (matrices)

A bridged run (`bridge_to`) adds the bridges' losses to a frozen dense model
(`bridges.core.bridged_loss`) and trains the bridges beside the model, in their own parameter
group (each group's gradient is RMS-normalised on its own); `frozen_from` trains the bridges
alone, between a finished sparse run (its weights, frozen) and the dense one.

The batch of step t is a pure function of (seed, t), so `--resume` replays the exact data
order with no RNG state to carry; with Adam moments restored, a resumed run reproduces the
uninterrupted one bit for bit on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .bridges.core import (BridgeConfig, Bridges, bridged_loss, check_pair, check_roles,
                           evaluate_bridges, kl_locations, residual_rms, ridge_init,
                           weight_density)
from .bridges.store import (has_bridges, load_bridge_moments, load_bridges, load_dense,
                            read_bridge_config, save_bridges)
from .checkpoint import (atomic_write, atomic_write_text, load, load_optimizer,
                         load_weights, read_metrics, read_run_config, read_trainer_state,
                         save_checkpoint)
from .circuits.ablation import model_hash
from .config import RunConfig, TrainConfig
from .corpus import corpus_for_run, open_corpus
from .errors import UserError
from .memory import keep_freed_memory
from .model import GPT
from .pattern import KeptWeights
from .sparsity import WeightSparsifier, lr_at, sharkfin_factor


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device='{name}' but no CUDA device is available; use 'cpu' or 'auto'.")
    return torch.device(name)


def batch_at(data: np.ndarray, step: int, seed: int, batch: int, block: int, rank: int = 0,
             world: int = 1):
    """This process's share of step `step`'s global batch of `batch` windows of `block + 1` tokens.

    The global batch is a pure function of (seed, step), so 1 or N processes see the same data.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(len(data) - block - 1, (batch,), generator=g).numpy()
    local = batch // world
    rows = np.stack([data[s:s + block + 1] for s in starts[rank * local:(rank + 1) * local]])
    t = torch.from_numpy(rows.astype(np.int64))
    return t[:, :-1], t[:, 1:]


def val_windows(data: np.ndarray, n: int, block: int) -> torch.Tensor:
    """n evenly spaced windows of the val split: the same every eval, every run."""
    starts = np.linspace(0, len(data) - block - 1, n).astype(np.int64)
    return torch.from_numpy(np.stack([data[s:s + block + 1] for s in starts]).astype(np.int64))


@torch.no_grad()
def val_loss(model: GPT, windows: torch.Tensor, batch: int, device) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch].to(device)
        logits = model(w[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1).float(), w[:, 1:].flatten(),
                                 reduction="sum").item()
        count += w[:, 1:].numel()
    model.train(was_training)
    return total / count


class Progress:
    """One status line: redrawn in place on a terminal, printed every log interval otherwise."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.tty = stream.isatty()

    def update(self, step: int, text: str, elapsed: float, done_steps: int):
        eta = elapsed / max(1, done_steps) * (self.total - step)
        line = f"step {step}/{self.total} | {text} | ETA {_hms(eta)}"
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank, int(os.environ.get("LOCAL_RANK", "0"))


def train(cfg: RunConfig | None, out: str | Path, *, resume: bool = False,
          bridge_to: str | Path | None = None, frozen_from: str | Path | None = None,
          kl_sites: int = 0, log=print, on_step=None) -> Path:
    """Train a model into the run folder `out`; returns the folder.

    `resume=True` continues the run saved in `out` (its own config; `cfg` must be None), its
    bridges too if it has them. `bridge_to` trains bridges to that dense run beside the model;
    with `frozen_from` (a sparse run of the same config) the model is that run's, frozen, and
    only the bridges train, from the ridge regression between the two models' residuals.
    `kl_sites` > 0 runs that many hybrid passes per step and direction instead of all.
    `on_step(step)` is called after every completed step (used by tests to interrupt a run).
    Launch with `torchrun --nproc_per_node N -m sparsecircuits train ...` for data parallelism.
    """
    out = Path(out)
    world, rank, local_rank = _dist_info()
    if resume:
        if cfg is not None:
            raise UserError("--resume continues the run saved in RUN_DIR with its own config; "
                            "do not pass --preset or --config with it.")
        cfg = read_run_config(out)
        state = read_trainer_state(out)
    else:
        if (out / "config.json").exists():
            read_trainer_state(out)  # a folder that could not resume says why, as --resume does
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose "
                            "another --out.")
        cfg.validate()
        state = dict(step=0, tokens=0)
    tc = cfg.train
    bridged = bridge_to is not None or (resume and has_bridges(out))
    if bridged and world > 1:
        raise UserError("bridged training runs in one process; launch it without torchrun.")
    if tc.path == "sparse" and (world > 1 or bridged):
        raise UserError("train.path='sparse' trains one model in one process; use "
                        "train.path='dense' with bridges or torchrun.")
    if tc.batch_size % world:
        raise UserError(f"train.batch_size={tc.batch_size} is not divisible by the "
                        f"{world} processes; choose a multiple of {world}.")

    device = resolve_device(tc.device)
    if device.type == "cpu":
        keep_freed_memory()  # each step's buffers reused, not page-faulted in again
    if world > 1:
        import torch.distributed as dist
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    say = log if main else (lambda *a, **k: None)

    corpus = open_corpus(cfg.data.corpus, log=say)
    if len(corpus.train) < cfg.model.block_size + 2 or len(corpus.val) < cfg.model.block_size + 2:
        raise UserError(f"the corpus at {corpus.path} has too few tokens "
                        f"({len(corpus.train)} train, {len(corpus.val)} val) for "
                        f"block_size={cfg.model.block_size}; add sources or lower block_size.")
    vocab = corpus.tokenizer.get_vocab_size()
    if not resume:
        cfg.model.vocab_size = vocab
        if cfg.data.corpus is not None:  # None stays None: the default corpus on any machine
            cfg.data.corpus = str(corpus.path.resolve())
    else:
        corpus.check_tokenizer(out / "tokenizer.json")

    torch.manual_seed(tc.seed)  # the initial weights are a function of the seed
    model = GPT(cfg.model).to(device)
    sparsifier = WeightSparsifier(model.sparse_tensors(), cfg.sparsity)  # checks the budget
    bridges = bcfg = dense = None
    if bridged:
        bridges, bcfg, dense = _open_bridges(out, resume, bridge_to, frozen_from, kl_sites,
                                             model, corpus, device, cfg.sparsity.weight_density)
    frozen = bcfg is not None and bcfg.frozen
    if frozen and not resume:
        corpus.check_tokenizer(Path(frozen_from) / "tokenizer.json")
        load_weights(Path(frozen_from), model)
        say("fitting the bridges by ridge regression ...")
        ridge_init(bridges, model, dense,
                   val_windows(corpus.train, 4 * tc.batch_size, cfg.model.block_size).to(device))
    groups = [] if frozen else [dict(params=list(model.parameters()))]
    if bridges is not None:
        groups.append(dict(params=list(bridges.parameters())))
    if frozen:
        model.requires_grad_(False)
        sparsifier = None
    optimizer = torch.optim.Adam(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=tc.eps,
                                 weight_decay=0.0)
    decay = [] if frozen else model.decay_params()
    if not resume and main:  # only once the config has proved buildable
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1))
        atomic_write(out / "tokenizer.json", lambda tmp: shutil.copyfile(corpus.tokenizer_path, tmp))
    if resume:
        meta = load_weights(out, model)
        opt_step = load_optimizer(out, model, optimizer)
        if not (int(meta.get("step", -1)) == opt_step == state["step"]):
            raise UserError(f"the checkpoint in {out} is inconsistent (model step {meta.get('step')},"
                            f" optimizer step {opt_step}, trainer step {state['step']}): its files "
                            "come from different checkpoints; restore them or start a new run.")
        if bridges is not None:
            loaded, _ = load_bridges(out, model)
            bridges.load_state_dict(loaded.state_dict())
            load_bridge_moments(out, bridges, optimizer, state["step"])
        _trim_metrics(out / "metrics.jsonl", state["step"])
        say(f"resuming {out} at step {state['step']}")
    elif not cfg.sparsity.is_dense and not frozen:
        sparsifier.project(0.0)  # a no-op unless the anneal starts at 0

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=(
            [device.index] if device.type == "cuda" else None))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if tc.autocast == "bf16" and device.type == "cuda" else None)
    val = val_windows(corpus.val, tc.eval_batches * tc.batch_size, cfg.model.block_size)
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = tc.batch_size * cfg.model.block_size

    say(f"model: {cfg.model.n_layer} layers, d_model {cfg.model.d_model}, "
        f"{n_params / 1e6:.2f}M parameters; target density {cfg.sparsity.weight_density:g} "
        f"(matrices) / {cfg.sparsity.other_density:g} (embeddings, biases); "
        f"afrac {cfg.model.afrac:g}; {tc.max_steps} steps of {tokens_per_step} tokens on {device}")
    if bridges is not None:
        say(f"bridged to {bcfg.dense_run} (d_model {dense.cfg.d_model}) at "
            f"{len(bridges.locations)} residual locations; "
            + ("the model is frozen, only the bridges train" if frozen else
               "the model and its bridges train together"))
    # reads `step` when called: the hybrid passes of the step being taken
    loss_fn = None if bridges is None else (lambda x, y: bridged_loss(
        model, dense, bridges, x, y, bcfg,
        kl_locations(len(bridges.locations), bcfg, tc.seed, step)))
    kept_weights = None  # engaged between regrowth steps with train.path = "sparse"
    metrics = open(out / "metrics.jsonl", "a") if main else None
    progress = Progress(tc.max_steps) if main else None
    step, t_start, last_val = state["step"], time.time(), state.get("val_loss")
    window_t, window_tokens, done = time.time(), 0, 0
    saved = state["step"]  # the step of the last checkpoint written
    try:
        model.train()
        while step < tc.max_steps:
            frac = step / tc.max_steps
            factor = sharkfin_factor(frac, cfg.sparsity) if tc.sharkfin and not frozen else 1.0
            lr = lr_at(step, tc.max_steps, tc.lr, tc.warmup_frac, factor)
            x, y = batch_at(corpus.train, step, tc.seed, tc.batch_size, cfg.model.block_size,
                            rank, world)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logging = main and ((step + 1) % tc.log_every == 0 or step + 1 == tc.max_steps)
            regrow = step % cfg.sparsity.regrow_every == 0
            # after the anneal the kept set is fixed from one regrowth step to the next
            on_pattern = tc.path == "sparse" and not regrow and frac >= cfg.sparsity.anneal_end
            if on_pattern and kept_weights is None:
                kept_weights = KeptWeights(model, optimizer, sparsifier.tensors,
                                           (tc.beta1, tc.beta2), tc.eps)
            elif not on_pattern and kept_weights is not None:
                kept_weights.release()
                kept_weights = None
            try:
                loss_value, parts = training_step(
                    net, optimizer, sparsifier, decay, x, y, lr=lr,
                    next_frac=(step + 1) / tc.max_steps, tc=tc, autocast=autocast, loss_fn=loss_fn,
                    regrow=regrow, measure=logging, kept_weights=kept_weights)
            except NonFiniteLoss as e:
                raise TrainingDiverged(
                    f"the loss became {e} at step {step}; stopped, and the last good "
                    f"checkpoint (step {state['step']}) is kept in {out}; lower train.lr and start "
                    "a new run, or resume from it.") from None
            step += 1
            done += 1
            window_tokens += tokens_per_step
            state.update(step=step, tokens=state["tokens"] + tokens_per_step)

            if main and (step % tc.log_every == 0 or step == tc.max_steps):
                now = time.time()
                tps = window_tokens / max(now - window_t, 1e-9)
                dens = (sparsifier.densities(step / tc.max_steps) if sparsifier is not None
                        else dict(matrix=cfg.sparsity.weight_density, other=cfg.sparsity.other_density))
                row = dict(step=step, tokens=state["tokens"], loss=loss_value, lr=lr,
                           density=dens["matrix"], density_other=dens["other"],
                           tokens_per_s=tps, elapsed_s=now - t_start, **parts)
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                progress.update(step, f"loss {loss_value:.3f} | {tps / 1e3:.1f}k tok/s | "
                                f"density {dens['matrix']:.3g}"
                                + (f" | val {last_val:.3f}" if last_val is not None else ""),
                                now - t_start, done)
                window_t, window_tokens = now, 0
            if step % tc.eval_every == 0 or step == tc.max_steps:
                last_val = val_loss(model, val, tc.batch_size, device)
                state["val_loss"] = last_val
                if main:
                    metrics.write(json.dumps(dict(step=step, val_loss=last_val)) + "\n")
                    metrics.flush()
            if main and (step % tc.checkpoint_every == 0 or step == tc.max_steps):
                if not all(torch.isfinite(p).all() for p in model.parameters()):
                    raise TrainingDiverged(
                        f"the weights became non-finite at step {step}; stopped, and the last "
                        f"good checkpoint is kept in {out}; lower train.lr and start a new run.")
                extra = None
                if bridges is not None:  # part of the checkpoint, committed with it
                    bcfg.step = step
                    if step == tc.max_steps:
                        say("measuring the bridges on the val split ...")
                        bcfg.eval = evaluate_bridges(model, dense, bridges, val, tc.batch_size)
                        bcfg.rms = dict(sparse=residual_rms(model, val, tc.batch_size),
                                        dense=residual_rms(dense, val, tc.batch_size))
                    extra = lambda folder: save_bridges(out, bridges, optimizer, bcfg, model,
                                                        folder=folder)
                if kept_weights is not None:
                    kept_weights.flush()  # Adam's dense moments, as the checkpoint holds them
                save_checkpoint(out, model, optimizer, dict(state), cfg, extra=extra)
                saved = step
            if on_step is not None:
                on_step(step)
    except OSError as e:  # the metrics log on a full disk; a checkpoint says so itself
        then = (f"continue from the last checkpoint (step {saved}) with `sparsecircuits train "
                f"--out {out} --resume`" if saved else f"delete {out} and train again")
        raise UserError(f"could not write to {out} ({e.strerror or e}); free space there (or fix "
                        f"its permissions), then {then}.") from None
    finally:
        if kept_weights is not None:
            kept_weights.release()
        if main:
            progress.close()
            with contextlib.suppress(OSError):  # a full disk was reported above
                metrics.close()
        if world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()
    say(f"done: {step} steps, val loss {last_val:.4f}, in {_hms(time.time() - t_start)}; "
        f"run saved in {out}")
    return out


def bridge(sparse_run: str | Path, dense_run: str | Path, out: str | Path, *,
           steps: int = 1000, lr: float = 3e-3, kl_sites: int = 0, resume: bool = False,
           log=print) -> Path:
    """Bridges between two finished runs, both frozen: `out` becomes a copy of the sparse run
    with `bridges.safetensors` beside it, trained for `steps` steps of the sparse run's batch
    on its corpus (warmup, then linear decay from `lr`). `resume=True` continues `out`."""
    if resume:
        return train(None, out, resume=True, log=log)
    if type(steps) is not int or steps < 1:
        raise UserError(f"--steps {steps} must be a whole number, at least 1.")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr {lr} must be a finite number above 0 (e.g. 3e-3).")
    if kl_sites < 0:
        raise UserError(f"--kl-sites {kl_sites} must be 0 (every location) or more.")
    # in a second, before a corpus is built or a bridge trained for minutes
    check_roles(weight_density(load(sparse_run)[0]), weight_density(load(dense_run)[0]),
                str(sparse_run), str(dense_run))
    cfg = read_run_config(sparse_run)
    # the corpus the sparse run reads (a shipped run: the default source in its own tokens)
    cfg.data.corpus = str(corpus_for_run(cfg.data.corpus, Path(sparse_run) / "tokenizer.json",
                                         log=log).path)
    cfg.train.max_steps, cfg.train.lr = steps, lr
    cfg.train.eval_every = cfg.train.checkpoint_every = max(1, min(cfg.train.checkpoint_every, steps))
    return train(cfg, out, bridge_to=dense_run, frozen_from=sparse_run, kl_sites=kl_sites, log=log)


def _mean_over_processes(t: torch.Tensor) -> float:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t.item()


class NonFiniteLoss(Exception):
    pass


def training_step(net, optimizer, sparsifier, decay, x, y, *, lr: float, next_frac: float,
                  tc: TrainConfig, autocast=None, loss_fn=None, regrow: bool = True,
                  measure: bool = False, kept_weights: KeptWeights | None = None
                  ) -> tuple[float, dict]:
    """One full step: forward, backward, RMS-normalise, Adam, project, decay. Returns the loss
    and its parts (`loss_fn(x, y) -> (loss, parts)`; default: the model's cross-entropy).

    `regrow=False` lets only the kept (nonzero) weights learn: the pruned weights' gradients
    are dropped and they stay zero. `kept_weights` (engaged between regrowth steps once the
    anneal has ended) computes that step for the linear layers' matrices on their nonzeros
    alone: they are neither projected nor seen by `optimizer`, whose other weights step as
    usual. With `measure` (on a dense step), the parts also hold, for the budgeted tensors,
    the share of the squared weight gradient that falls on kept weights (`grad_kept_share`)
    and, on a step that regrows, the weights the projection brought back per kept weight
    (`regrown`).

    Raises NonFiniteLoss before touching any weight if the loss is NaN or infinite.
    `sparsifier=None` projects nothing (a frozen model).
    """
    with autocast or contextlib.nullcontext():
        if loss_fn is None:
            logits = net(x)
            loss, parts = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()), {}
        else:
            loss, parts = loss_fn(x, y)
    loss_value = _mean_over_processes(loss.detach())  # every process then stops together
    if not math.isfinite(loss_value):
        raise NonFiniteLoss(loss_value)
    loss.backward()
    measure = measure and kept_weights is None
    kept = None
    if sparsifier is not None and (measure or not regrow):
        params = [t.param for t in sparsifier.tensors if t.param.grad is not None]
        kept = [p != 0 for p in params]
        if measure:
            on = sum(float(p.grad[k].square().sum()) for p, k in zip(params, kept))
            every = sum(float(p.grad.square().sum()) for p in params)
            parts = dict(parts, grad_kept_share=on / max(every, 1e-30))
        if not regrow:
            for p, k in zip(params, kept):
                p.grad.mul_(k)
    extra = kept_weights.grads() if kept_weights is not None else []
    for i, group in enumerate(optimizer.param_groups):
        grads = [p.grad for p in group["params"] if p.grad is not None]
        grads += extra if i == 0 else []  # the model's group holds the dense weights
        if tc.grad_rms_norm and grads:
            n = sum(p.numel() for p in group["params"])
            sq = torch.stack(torch._foreach_norm(grads)).square().sum()
            torch._foreach_div_(grads, (sq / n).sqrt() + 1e-5)
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    decay_factor = 1.0 - tc.weight_decay * lr if tc.weight_decay and decay else 1.0
    if kept_weights is not None:
        kept_weights.step(lr, decay_factor)
    if kept is not None and not regrow:
        with torch.no_grad():  # Adam's stale moments must not move a pruned weight either
            for p, k in zip(params, kept):
                p.mul_(k)
    if sparsifier is not None:  # at the density the next step runs at
        sparsifier.project(next_frac, skip=kept_weights.holds if kept_weights else None)
    if kept is not None and measure and regrow:
        back = sum(int((p != 0).logical_and_(~k).sum()) for p, k in zip(params, kept))
        parts = dict(parts, regrown=back / max(1, sum(int(k.sum()) for k in kept)))
    if decay_factor != 1.0:
        with torch.no_grad():  # decoupled decay, after the projection (zeros stay zero)
            rest = decay if kept_weights is None else [
                p for p in decay if not kept_weights.holds(p)]
            torch._foreach_mul_(rest, decay_factor)
    return loss_value, parts


def _open_bridges(out: Path, resume: bool, bridge_to, frozen_from, kl_sites: int, model: GPT,
                  corpus, device, density: float):
    """(bridges, their config, the frozen dense model) of a bridged run, new or resumed."""
    if resume:
        bcfg = read_bridge_config(out)
        dense = load_dense(bcfg)
    else:
        dense_run = Path(bridge_to)
        dense, _ = load(dense_run)
        dense.requires_grad_(False)
        try:
            corpus.check_tokenizer(dense_run / "tokenizer.json")
        except UserError:
            raise UserError(f"the dense run {dense_run} was trained with another tokenizer than "
                            f"the corpus {corpus.path}; bridge models that share a tokenizer "
                            "(train the sparse model on the dense run's corpus).") from None
        if kl_sites < 0:
            raise UserError(f"--kl-sites {kl_sites} must be 0 (every location) or more.")
        if frozen_from is None:  # the model trains towards its target density
            check_roles(density, weight_density(dense),
                        "the model being trained (sparsity.weight_density)", str(dense_run))
        bcfg = BridgeConfig(dense_run=str(dense_run.resolve()), dense_hash=model_hash(dense),
                            frozen=frozen_from is not None, kl_sites=kl_sites)
    check_pair(model, dense)
    dense.to(device)
    bridges = Bridges(model.resid_names(), model.cfg.d_model, dense.cfg.d_model, bcfg.afrac)
    return bridges.to(device), bcfg, dense


def _trim_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint being resumed (and a row cut short by a kill), so
    the log has each step once."""
    if not path.exists():
        return
    rows = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    kept = [json.dumps(r) for r in read_metrics(path) if r["step"] <= step]
    if len(kept) != len(rows):
        atomic_write_text(path, "".join(ln + "\n" for ln in kept))
