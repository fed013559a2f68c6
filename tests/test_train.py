import json

import pytest
import torch
from safetensors.torch import load_file

import sparsecircuits
from sparsecircuits.checkpoint import checkpoint_dir, read_trainer_state
from sparsecircuits.evaluate import evaluate, training_summary
from sparsecircuits.train import TrainingDiverged, train

from .conftest import TEST_VOCAB, quiet, tiny_config


class Crash(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(corpus_dir, tmp_path):
    cfg = tiny_config(corpus_dir, train=dict(max_steps=24, checkpoint_every=5))
    train(cfg, tmp_path / "straight", log=quiet)

    def crash_at_13(step):
        if step == 13:
            raise Crash

    with pytest.raises(Crash):
        train(tiny_config(corpus_dir, train=dict(max_steps=24, checkpoint_every=5)),
              tmp_path / "resumed", log=quiet, on_step=crash_at_13)
    assert read_trainer_state(tmp_path / "resumed")["step"] == 10
    train(None, tmp_path / "resumed", resume=True, log=quiet)

    a = load_file(checkpoint_dir(tmp_path / "straight") / "model.safetensors")
    b = load_file(checkpoint_dir(tmp_path / "resumed") / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The metrics log has each step once, as if the run had never stopped.
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "resumed" / "metrics.jsonl").open()
             if "loss" in json.loads(ln)]
    assert steps == [5, 10, 15, 20, 24]
    summary = training_summary(tmp_path / "resumed")
    assert summary["steps"] == 24 and summary["tokens"] == 24 * 4 * 32
    assert 0 < summary["elapsed_s"] < 60


def test_run_folder_contents_and_final_density(corpus_dir, tmp_path):
    run = train(tiny_config(corpus_dir), tmp_path / "run", log=quiet)
    for f in ("config.json", "tokenizer.json", "trainer_state.json", "metrics.jsonl"):
        assert (run / f).is_file(), f
    assert checkpoint_dir(run) == run / "checkpoint-000020"  # the one checkpoint, made current
    assert sorted(p.name for p in checkpoint_dir(run).iterdir()) == ["model.safetensors",
                                                                    "optimizer.safetensors"]
    assert not [p for p in run.iterdir() if p.is_dir() and p != checkpoint_dir(run)]
    cfg = sparsecircuits.load_config(run / "config.json")
    assert cfg.model.vocab_size == TEST_VOCAB
    report = evaluate(run)
    for t in report.tensors:
        target = 0.25 if t.name.endswith("weight") and "blocks" in t.name else 0.5
        assert t.nonzero == int(target * torch.Size(t.shape).numel() + 1e-6), t.name
        if t.min_per_neuron is not None:
            assert t.min_per_neuron >= 4, t.name
    assert report.l0 == sum(t.nonzero for t in report.tensors)
    assert 0 < report.val_loss < 7
    for kind, d in report.activation_density.items():
        assert d <= 0.25 + 1e-6, kind
    model, tok = sparsecircuits.load(run)
    assert tok.get_vocab_size() == model.cfg.vocab_size


def test_training_lowers_the_loss(corpus_dir, tmp_path):
    run = train(tiny_config(corpus_dir, train=dict(max_steps=60, eval_every=60)),
                tmp_path / "run", log=quiet)
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").open()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 1.0


def test_dense_training_is_the_same_code_with_density_one(corpus_dir, tmp_path):
    cfg = tiny_config(corpus_dir, model=dict(afrac=1.0),
                      sparsity=dict(weight_density=1.0, other_density=1.0))
    run = train(cfg, tmp_path / "dense", log=quiet)
    report = evaluate(run)
    assert all(t.density > 0.99 for t in report.tensors)
    assert report.activation_density["mlp.neuron"] > 0.9


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus_dir, tmp_path):
    cfg = tiny_config(corpus_dir, train=dict(max_steps=40, lr=1e30, checkpoint_every=1,
                                             warmup_frac=0.0, weight_decay=0.0))
    with pytest.raises(TrainingDiverged, match="the last good checkpoint") as err:
        train(cfg, tmp_path / "run", log=quiet)
    weights = load_file(checkpoint_dir(tmp_path / "run") / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert "lower train.lr" in str(err.value)


def test_starting_over_an_existing_run_is_refused(corpus_dir, tmp_path):
    train(tiny_config(corpus_dir, train=dict(max_steps=5)), tmp_path / "run", log=quiet)
    with pytest.raises(sparsecircuits.UserError, match="already holds a run; pass --resume"):
        train(tiny_config(corpus_dir), tmp_path / "run", log=quiet)


def test_same_seed_same_model(corpus_dir, tmp_path):
    for name in ("a", "b"):
        train(tiny_config(corpus_dir, train=dict(max_steps=6)), tmp_path / name, log=quiet)
    a = load_file(checkpoint_dir(tmp_path / "a") / "model.safetensors")
    b = load_file(checkpoint_dir(tmp_path / "b") / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_data_parallel_run_matches_a_single_process(corpus_dir, tmp_path):
    """torchrun with 2 CPU processes sees the same global batches as one process."""
    import os
    import subprocess
    import sys

    cfg = tiny_config(corpus_dir, train=dict(max_steps=8, batch_size=4, eval_every=8))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    train(tiny_config(corpus_dir, train=dict(max_steps=8, batch_size=4, eval_every=8)),
          tmp_path / "single", log=quiet)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29517", "-m", "sparsecircuits", "train", "--config",
         str(tmp_path / "cfg.json"), "--out", str(tmp_path / "ddp")],
        capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    single = [json.loads(ln) for ln in (tmp_path / "single" / "metrics.jsonl").open()]
    ddp = [json.loads(ln) for ln in (tmp_path / "ddp" / "metrics.jsonl").open()]
    for a, b in zip(single, ddp):
        assert a["step"] == b["step"]
        key = "loss" if "loss" in a else "val_loss"
        assert b[key] == pytest.approx(a[key], abs=1e-3)


def test_between_regrowth_steps_only_kept_weights_learn(corpus_dir, tmp_path):
    from sparsecircuits.train import training_step
    cfg = tiny_config(corpus_dir, sparsity=dict(anneal_start=0.0, anneal_end=0.0))
    run = train(cfg, tmp_path / "run", log=quiet)
    model, _ = sparsecircuits.load(run)
    model.train()
    from sparsecircuits.sparsity import WeightSparsifier
    sp = WeightSparsifier(model.sparse_tensors(), cfg.sparsity)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=0.1)
    x = torch.randint(0, TEST_VOCAB, (4, 32))
    y = torch.randint(0, TEST_VOCAB, (4, 32))
    before = [t.param.detach().clone() for t in sp.tensors]
    _, parts = training_step(model, opt, sp, model.decay_params(), x, y, lr=1e-2, next_frac=1.0,
                             tc=cfg.train, regrow=False, measure=True)
    moved = 0
    for t, b in zip(sp.tensors, before):
        assert not (t.param[b == 0] != 0).any(), t.name  # no pruned weight came back
        moved += int((t.param != b).sum())
    assert moved > 0 and "regrown" not in parts
    assert 0 < parts["grad_kept_share"] < 1
    # The paper's rule: the dense gradient may bring weights back at once.
    for _ in range(3):
        _, parts = training_step(model, opt, sp, model.decay_params(), x, y, lr=1e-1,
                                 next_frac=1.0, tc=cfg.train, measure=True)
        assert parts["regrown"] >= 0
    with pytest.raises(sparsecircuits.UserError, match="regrow_every"):
        tiny_config(corpus_dir, sparsity=dict(regrow_every=0))


def test_a_run_with_rare_regrowth_logs_the_gradient_share(corpus_dir, tmp_path):
    cfg = tiny_config(corpus_dir, sparsity=dict(regrow_every=5))
    run = train(cfg, tmp_path / "run", log=quiet)
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").open()]
    shares = [r["grad_kept_share"] for r in rows if "tokens" in r]
    assert len(shares) == 4 and all(0 < s < 1 for s in shares)
    assert sparsecircuits.load_config(run / "config.json").sparsity.regrow_every == 5
