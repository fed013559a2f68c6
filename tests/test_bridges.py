"""Bridges: the residual seam, the bridged loss, bridged training in both modes, storage."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sparsecircuits.bridges import Bridges, bridged_loss, evaluate_bridges, load_bridges, load_dense
from sparsecircuits.bridges.core import BridgeConfig, kl_from, nmse
from sparsecircuits.checkpoint import checkpoint_dir, load
from sparsecircuits.config import ModelConfig
from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT
from sparsecircuits.train import bridge, train

from .conftest import quiet, tiny_config


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(n_layer=2, d_model=32, d_head=16, d_mlp=64, vocab_size=64, block_size=16)
    cfg.update(kw)
    return GPT(ModelConfig(**cfg)).eval()


def identity_bridges(model) -> Bridges:
    """Bridges of a model to an exact copy of itself: every encoder and decoder the identity."""
    d = model.cfg.d_model
    b = Bridges(model.resid_names(), d, d, afrac=1.0)
    with torch.no_grad():
        for lin in list(b.enc) + list(b.dec):
            lin.weight.copy_(torch.eye(d))
            lin.bias.zero_()
    return b


def test_a_pass_started_at_a_residual_location_continues_the_full_pass():
    model = _model(afrac=0.25)
    idx = torch.randint(0, 64, (3, 16))
    res = {}
    with model.resid_hooks(lambda n, x: res.setdefault(n, x)):
        full = model(idx)
    assert list(res) == model.resid_names() == ["blocks.0.resid_pre", "blocks.0.resid_mid",
                                                 "blocks.1.resid_pre", "blocks.1.resid_mid"]
    for loc in model.resid_names():
        torch.testing.assert_close(model(idx, start=(loc, res[loc])), full, rtol=0, atol=1e-6)
    # a start is a replacement: another residual there gives other logits
    assert not torch.allclose(model(idx, start=("blocks.1.resid_pre", res["blocks.0.resid_pre"])), full)


def test_a_model_bridged_to_an_exact_copy_through_identity_bridges_has_zero_nmse_and_kl():
    model = _model()
    copy = _model()
    bridges = identity_bridges(model)
    idx = torch.randint(0, 64, (4, 17))
    loss, parts = bridged_loss(model, copy, bridges, idx[:, :-1], idx[:, 1:], BridgeConfig("d", "h"))
    assert parts["nmse_enc"] == pytest.approx(0, abs=1e-10)
    assert parts["nmse_dec"] == pytest.approx(0, abs=1e-10)
    assert parts["kl_enc"] == pytest.approx(0, abs=1e-6)
    assert parts["kl_dec"] == pytest.approx(0, abs=1e-6)
    report = evaluate_bridges(model, copy, bridges, idx)
    for r in report["locations"].values():
        assert r["ce_enc"] == pytest.approx(report["ce_sparse"], abs=1e-5)
        assert r["ce_dec"] == pytest.approx(report["ce_dense"], abs=1e-5)
        assert r["recovered_enc"] == pytest.approx(1.0, abs=1e-4)
        assert r["recovered_dec"] == pytest.approx(1.0, abs=1e-4)


def test_the_bridge_losses_see_a_wrong_bridge():
    model, other = _model(0), _model(1)
    bridges = identity_bridges(model)
    idx = torch.randint(0, 64, (4, 17))
    _, parts = bridged_loss(model, other, bridges, idx[:, :-1], idx[:, 1:], BridgeConfig("d", "h"))
    assert parts["nmse_enc"] > 0.1 and parts["nmse_dec"] > 0.1
    assert parts["kl_enc"] > 1e-4 and parts["kl_dec"] > 1e-4


def test_nmse_is_one_for_the_target_mean_and_kl_zero_for_the_same_distribution():
    t = torch.randn(5, 7, 8)
    assert nmse(t.mean((0, 1), keepdim=True).expand_as(t), t).item() == pytest.approx(1.0, rel=1e-5)
    assert nmse(t, t).item() == 0
    logits = torch.randn(2, 3, 11)
    assert kl_from(torch.log_softmax(logits, -1), logits).item() == pytest.approx(0, abs=1e-6)


@pytest.fixture(scope="module")
def dense_run(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bridges") / "dense"
    cfg = tiny_config(corpus_dir, sparsity=dict(weight_density=1.0, other_density=1.0),
                      train=dict(max_steps=10))
    return train(cfg, out, log=quiet)


def _weights(run):
    return load_file(str(checkpoint_dir(run) / "model.safetensors"))


def test_joint_training_leaves_the_dense_model_alone_and_resumes_exactly(corpus_dir, dense_run,
                                                                          tmp_path):
    before = _weights(dense_run)
    cfg = tiny_config(corpus_dir, train=dict(max_steps=10, checkpoint_every=5))
    straight = train(cfg, tmp_path / "straight", bridge_to=dense_run, log=quiet)

    def stop_at_5(step):
        if step == 5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(corpus_dir, train=dict(max_steps=10, checkpoint_every=5)),
              tmp_path / "resumed", bridge_to=dense_run, log=quiet, on_step=stop_at_5)
    resumed = train(None, tmp_path / "resumed", resume=True, log=quiet)

    after = _weights(dense_run)
    assert all(torch.equal(before[k], after[k]) for k in before)
    for name in ("model.safetensors", "bridges.safetensors"):
        a = load_file(str(checkpoint_dir(straight) / name))
        b = load_file(str(checkpoint_dir(resumed) / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    meta = json.loads((checkpoint_dir(straight) / "bridges.json").read_text())
    assert not meta["frozen"] and meta["step"] == 10
    assert set(meta["eval"]["locations"]) == {"blocks.0.resid_pre", "blocks.0.resid_mid",
                                              "blocks.1.resid_pre", "blocks.1.resid_mid"}
    rows = [json.loads(r) for r in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all(k in rows[0] for k in ("ce", "nmse_enc", "nmse_dec", "kl_enc", "kl_dec"))


def test_bridging_two_finished_runs_trains_only_the_bridges(corpus_dir, dense_run, tmp_path):
    sparse_run = train(tiny_config(corpus_dir, train=dict(max_steps=10)), tmp_path / "sparse",
                       log=quiet)
    sparse_before, dense_before = _weights(sparse_run), _weights(dense_run)
    out = bridge(sparse_run, dense_run, tmp_path / "bridged", steps=30, lr=1e-2, log=quiet)
    for before, run in ((sparse_before, out), (dense_before, dense_run)):
        after = _weights(run)
        assert all(torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert rows[-1]["nmse_dec"] < rows[0]["nmse_dec"]  # the bridges learnt something
    model, _ = load(out)
    bridges, cfg = load_bridges(out, model)
    assert cfg.frozen and cfg.step == 30 and bridges.k == 8
    assert load_dense(cfg) is not None


def test_a_bridge_file_from_another_pair_is_a_one_line_error(corpus_dir, dense_run, tmp_path):
    sparse_a = train(tiny_config(corpus_dir, train=dict(max_steps=5)), tmp_path / "a", log=quiet)
    sparse_b = train(tiny_config(corpus_dir, train=dict(max_steps=5, seed=1)), tmp_path / "b",
                     log=quiet)
    out = bridge(sparse_a, dense_run, tmp_path / "bridged", steps=5, log=quiet)
    for name in ("bridges.safetensors", "bridges.json"):
        shutil.copy(checkpoint_dir(out) / name, checkpoint_dir(sparse_b) / name)
    model_b, _ = load(sparse_b)
    with pytest.raises(UserError, match="another pair of models") as e:
        load_bridges(sparse_b, model_b)
    assert "\n" not in str(e.value)


def test_a_changed_dense_run_is_refused_by_its_hash(corpus_dir, dense_run, tmp_path):
    dense_copy = tmp_path / "dense"
    shutil.copytree(dense_run, dense_copy)
    sparse = train(tiny_config(corpus_dir, train=dict(max_steps=5)), tmp_path / "s", log=quiet)
    out = bridge(sparse, dense_copy, tmp_path / "bridged", steps=5, log=quiet)
    w = load_file(str(checkpoint_dir(dense_copy) / "model.safetensors"))
    w["lm_head.weight"] = w["lm_head.weight"] * 1.01
    save_file(w, str(checkpoint_dir(dense_copy) / "model.safetensors"))
    model, _ = load(out)
    _, cfg = load_bridges(out, model)
    with pytest.raises(UserError, match="hash"):
        load_dense(cfg)


def test_bridging_models_of_different_depths_is_refused(corpus_dir, dense_run, tmp_path):
    cfg = tiny_config(corpus_dir, model=dict(n_layer=3), train=dict(max_steps=5))
    with pytest.raises(UserError, match="same depth"):
        train(cfg, tmp_path / "deep", bridge_to=dense_run, log=quiet)


def test_eval_of_a_bridged_run_shows_every_location(corpus_dir, dense_run, tmp_path, capsys):
    from .test_cli import run_cli
    sparse = train(tiny_config(corpus_dir, train=dict(max_steps=5)), tmp_path / "s", log=quiet)
    code, _, err = run_cli(capsys, "bridge", str(sparse), str(dense_run), "--out",
                           str(tmp_path / "b"), "--steps", "5")
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "b"))
    assert code == 0, err
    assert "both models frozen, 5 steps" in out
    for loc in ("blocks.0.resid_pre", "blocks.0.resid_mid", "blocks.1.resid_pre", "blocks.1.resid_mid"):
        assert loc in out
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "b"), "--json")
    assert set(json.loads(out)["bridges"]["eval"]["locations"]) == {
        "blocks.0.resid_pre", "blocks.0.resid_mid", "blocks.1.resid_pre", "blocks.1.resid_mid"}


def test_a_bridged_run_moves_with_its_dense_run_and_exports_with_its_bridges(corpus_dir,
                                                                              dense_run, tmp_path):
    from sparsecircuits.release import export_run
    home = tmp_path / "home"
    shutil.copytree(dense_run, home / "dense")
    sparse = train(tiny_config(corpus_dir, train=dict(max_steps=5)), tmp_path / "s", log=quiet)
    bridge(sparse, home / "dense", home / "bridged", steps=5, log=quiet)
    bridged = checkpoint_dir(home / "bridged") / "bridges.json"
    assert json.loads(bridged.read_text())["dense_run"] == "../dense"  # from the run folder
    moved = tmp_path / "elsewhere"
    shutil.move(home, moved)
    model, _ = load(moved / "bridged")
    _, cfg = load_bridges(moved / "bridged", model)
    assert load_dense(cfg) is not None and cfg.dense_run == str((moved / "dense").resolve())

    out = export_run(moved / "bridged", moved / "release", log=quiet)
    assert not (out / "bridges.optimizer.safetensors").exists()
    released, _ = load(out)  # the rounded weights: the bridges are bound to them now
    bridges, rcfg = load_bridges(out, released)
    original, _ = load_bridges(moved / "bridged", model)
    assert all(torch.equal(a, b) for a, b in zip(bridges.state_dict().values(),
                                                  original.state_dict().values()))
    assert rcfg.sparse_hash != cfg.sparse_hash and rcfg.dense_hash == cfg.dense_hash
    assert json.loads((out / "bridges.json").read_text())["dense_run"] == "../dense"
    assert set(rcfg.eval["locations"]) == set(cfg.eval["locations"])
