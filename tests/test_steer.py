"""Steering a dense model through a sparse circuit's node, on the planted model bridged to an
exact copy of itself through identity bridges: the planted node's channel carries the answer,
so pushing it by the counterfactual's difference flips the dense model's answer, and random
directions of the same norm do not."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sparsecircuits.bridges import steer
from sparsecircuits.bridges.core import BridgeConfig, residual_rms
from sparsecircuits.bridges.steer import steered_logits, steering_vector
from sparsecircuits.bridges.store import load_bridges, load_dense, save_bridges
from sparsecircuits.checkpoint import load
from sparsecircuits.circuits.ablation import model_hash
from sparsecircuits.corpus import Corpus
from sparsecircuits.train import val_windows

from .test_bridges import identity_bridges
from .test_circuits_cli import planted_run  # noqa: F401  (a fixture)
from .test_cli import assert_one_line_error, run_cli
from .test_explain import planted_circuit  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def bridged(planted_circuit, corpus_dir, tmp_path_factory):  # noqa: F811
    """(bridged run, circuit, the planted words): the planted run with identity bridges to a
    dense run that is a copy of it."""
    run, _, circuit = planted_circuit
    d = tmp_path_factory.mktemp("steer")
    dense_run, out = d / "dense", d / "bridged"
    shutil.copytree(run, dense_run)
    shutil.copytree(run, out)
    model, _ = load(out)
    dense, _ = load(dense_run)
    bridges = identity_bridges(model)
    windows = val_windows(Corpus(corpus_dir).val, 8, model.cfg.block_size)
    cfg = BridgeConfig(str(dense_run), model_hash(dense), frozen=True, afrac=1.0,
                       rms=dict(sparse=residual_rms(model, windows), dense=residual_rms(dense, windows)))
    save_bridges(out, bridges, None, cfg, model)
    from .test_circuits import planted
    words = planted(Corpus(corpus_dir).tokenizer)[0].planted_words
    return out, circuit, words


def _prompts(words):
    body = " ".join(words["fill"][:4])
    return " " + body + words["a"], " " + body + words["b"]


def test_steering_the_planted_node_flips_the_dense_answer_and_random_directions_do_not(bridged):
    run, circuit, w = bridged
    prompt, counterfactual = _prompts(w)
    r = steer(run, circuit, "blocks.0.mlp.in[0]", prompt, counterfactual, n_random=20)
    assert r.target == w["alt"]
    alt, target = r.p_steered[w["alt"]], r.p_steered[w["target"]]
    # the planted model spreads its mass over many tokens; what it decides is which answer wins
    assert alt[0] / target[0] < 0.01 and alt[-1] / target[-1] > 100
    assert all(a <= b for a, b in zip(alt, alt[1:]))
    assert alt[-1] >= 0.5 * r.p_counterfactual[w["alt"]]   # as far as the counterfactual goes
    assert r.random_as_far == 0                    # no random direction of its norm does that
    assert max(rr[w["alt"]][-1] for rr in r.p_random) < 0.1 * alt[-1]


def test_steering_at_strength_zero_leaves_the_logits_bit_identical(bridged):
    run, _, w = bridged
    model, tok = load(run)
    bridges, cfg = load_bridges(run, model)
    dense = load_dense(cfg, model)
    prompt, _ = _prompts(w)
    idx = torch.tensor([tok.encode(prompt, add_special_tokens=False).ids])
    from sparsecircuits.circuits.nodes import NodeId
    v = steering_vector(model, dense, bridges, cfg, NodeId("blocks.0.mlp.in", 0))
    delta = torch.randn(idx.shape[1]) * 5
    with torch.no_grad():
        plain = dense(idx)[0, -1].float()
        push = [("blocks.0.mlp.in", delta, v)]
        assert torch.equal(steered_logits(dense, idx, push, 0.0), plain)
        assert not torch.equal(steered_logits(dense, idx, push, 0.5), plain)


def test_steer_cli_writes_json_plots_and_a_report_section(bridged, capsys, tmp_path):
    run, circuit, w = bridged
    prompt, counterfactual = _prompts(w)
    code, out, err = run_cli(capsys, "steer", str(run), "--circuit", str(circuit), "--node",
                             "blocks.0.mlp.in[0]", "--prompt", prompt, "--counterfactual",
                             counterfactual, "--random", "20", "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert "0 of 20 move it as far" in out
    data = json.loads((tmp_path / "s" / "steer.json").read_text())
    assert data["node"] == "blocks.0.mlp.in[0]" and len(data["p_random"]) == 20
    assert (tmp_path / "s" / "steer.png").stat().st_size > 1000
    assert (tmp_path / "s" / "steer.svg").read_text().lstrip().startswith("<?xml")
    assert "## Steering the dense model through blocks.0.mlp.in[0]" in (
        tmp_path / "s" / "steer.md").read_text()


@pytest.mark.parametrize("node,needle", [("blocks.0.mlp.neuron[0]", "residual read"),
                                         ("blocks.0.mlp.in[5]", "not in the circuit"),
                                         ("mlp.in 0", "not a node name")])
def test_steering_a_node_that_cannot_be_steered_is_a_one_line_error(bridged, capsys, node, needle):
    run, circuit, w = bridged
    prompt, counterfactual = _prompts(w)
    code, _, err = run_cli(capsys, "steer", str(run), "--circuit", str(circuit), "--node", node,
                           "--prompt", prompt, "--counterfactual", counterfactual)
    assert_one_line_error(code, err, needle)


def test_a_counterfactual_of_another_length_is_a_one_line_error(bridged, capsys):
    run, circuit, w = bridged
    prompt, _ = _prompts(w)
    code, _, err = run_cli(capsys, "steer", str(run), "--circuit", str(circuit), "--node",
                           "blocks.0.mlp.in[0]", "--prompt", prompt, "--counterfactual",
                           prompt + w["b"])
    assert_one_line_error(code, err, "same length in tokens")


def test_steering_a_run_without_bridges_is_a_one_line_error(planted_circuit, capsys):  # noqa: F811
    run, _, circuit = planted_circuit
    code, _, err = run_cli(capsys, "steer", str(run), "--circuit", str(circuit), "--node",
                           "blocks.0.mlp.in[0]", "--prompt", "a", "--counterfactual", "b")
    assert_one_line_error(code, err, "has no bridges")


def test_steering_on_the_tasks_held_out_pairs_moves_every_pair(bridged, capsys, tmp_path):
    run, circuit, w = bridged
    code, out, err = run_cli(capsys, "steer", str(run), "--circuit", str(circuit), "--node",
                             "blocks.0.mlp.in[0]", "--pairs", "8", "--random", "10",
                             "--out", str(tmp_path / "p"))
    assert code == 0, err
    data = json.loads((tmp_path / "p" / "steer.json").read_text())
    assert len(data["results"]) + data["skipped"] == 8 and data["results"]
    assert data["mean_moved"] > 10 * abs(data["mean_random_moved"])
    assert data["beats_every_random"] == len(data["results"])
    assert data["beats_every_random_log_odds"] == len(data["results"])
    assert data["mean_log_odds"] > 5 > abs(data["mean_random_log_odds"])
    assert data["random_as_far_log_odds"] == 0
    assert "moves further than all 10 random directions" in out
    assert (tmp_path / "p" / "steer.png").stat().st_size > 1000


def test_pairs_and_a_prompt_together_are_a_one_line_error(bridged, capsys):
    run, circuit, _ = bridged
    code, _, err = run_cli(capsys, "steer", str(run), "--circuit", str(circuit), "--node",
                           "blocks.0.mlp.in[0]", "--pairs", "4", "--prompt", "x")
    assert_one_line_error(code, err, "--pairs")


def test_the_pushes_of_several_nodes_add_up(bridged):
    run, _, w = bridged
    model, tok = load(run)
    bridges, cfg = load_bridges(run, model)
    dense = load_dense(cfg, model)
    idx = torch.tensor([tok.encode(_prompts(w)[0], add_special_tokens=False).ids])
    g = torch.Generator().manual_seed(0)
    d1, d2 = torch.randn(idx.shape[1], generator=g), torch.randn(idx.shape[1], generator=g)
    v = torch.randn(model.cfg.d_model, generator=g)
    with torch.no_grad():
        mlp, attn = "blocks.0.mlp.in", "blocks.0.attn.in"
        two = steered_logits(dense, idx, [(mlp, d1, v), (mlp, d2, v)], 0.7)
        one = steered_logits(dense, idx, [(mlp, d1 + d2, v)], 0.7)
        apart = steered_logits(dense, idx, [(mlp, d1, v), (attn, d2, v)], 0.7)
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(apart, one, atol=1e-3)
