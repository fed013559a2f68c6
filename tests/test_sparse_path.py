"""The sparse execution path: the same logits, node activations and mask gradients as the
dense path (to float rounding), a weight changed after loading followed, and a circuit found
with a fixed seed unchanged by the choice of path."""

from __future__ import annotations

import pytest
import torch

from sparsecircuits.circuits import NodeLayout, find_circuit, mask_hook
from sparsecircuits.errors import UserError

from .test_circuits import PLANTED, planted_setup, random_model, random_values  # noqa: F401

TOL = 1e-5  # relative to the largest magnitude compared


def _close(a, b):
    return (a - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item())


def sparse_model(seed=0):
    model = random_model(seed)
    with torch.no_grad():  # weight-sparse, as trained models are
        for name, p in model.named_parameters():
            if p.ndim == 2 and name != "bigram":
                p.mul_(torch.rand_like(p) < 0.1)
    return model


def test_the_sparse_path_gives_the_dense_paths_logits_activations_and_mask_gradients():
    model = sparse_model()
    x = torch.randint(0, 512, (3, 17))
    layout = NodeLayout(model)
    values = random_values(model)

    def run(path):
        model.set_path(path)
        model.requires_grad_(False)  # frozen, as pruning runs it
        with torch.no_grad():
            logits, cache = model.run_with_cache(x)
        m = torch.full((layout.total,), 0.7, requires_grad=True)
        with model.hooks(mask_hook(layout.split(m), values)):
            model(x).sum().backward()
        return logits, cache, m.grad

    dense, sparse = run("dense"), run("sparse")
    assert _close(sparse[0], dense[0])
    assert all(_close(sparse[1][k], dense[1][k]) for k in dense[1])
    assert _close(sparse[2], dense[2])


def test_a_weight_changed_after_the_path_was_set_is_followed():
    model = sparse_model()
    model.requires_grad_(False)
    x = torch.randint(0, 512, (2, 9))
    model.set_path("sparse")
    with torch.no_grad():
        model(x)  # builds the sparse copies
        model.blocks[0].mlp.c_fc.weight.fill_(0.01)  # now dense, and different
        after = model(x)
        model.set_path("dense")
        want = model(x)
    assert _close(after, want)


def test_training_takes_the_dense_path_and_a_wrong_mode_is_refused():
    model = sparse_model()
    model.set_path("sparse")
    x = torch.randint(0, 512, (2, 9))
    model(x).sum().backward()  # weights need gradients: the dense path gives them
    assert model.blocks[0].mlp.c_fc.weight.grad is not None
    with pytest.raises(UserError, match="unknown execution path"):
        model.set_path("fast")


def test_auto_runs_sparse_the_layers_large_and_sparse_enough():
    from sparsecircuits.model import GPT

    def weight(out_f, in_f, density):
        return torch.randn(out_f, in_f) * (torch.rand(out_f, in_f) < density)
    assert GPT.auto_path(weight(2048, 1024, 1 / 100)) == "sparse"
    assert GPT.auto_path(weight(2048, 1024, 1 / 4)) == "dense"
    assert GPT.auto_path(weight(512, 128, 1 / 100)) == "dense"  # small: dense is cheap
    choice = sparse_model().set_path("auto")  # a tiny model: every layer dense
    assert set(choice.values()) == {"dense"} and "lm_head" in choice


def test_the_path_does_not_change_a_circuit_found_with_a_fixed_seed(planted_setup):  # noqa: F811
    from sparsecircuits.circuits import PruneConfig
    model, corpus, task, stats = planted_setup
    cfg = PruneConfig(k_coef=1e-3, lr=1e-2, steps=150, train_pairs=128, val_pairs=64)
    found = {}
    for path in ("dense", "sparse"):
        model.set_path(path)
        c = find_circuit(model, corpus.tokenizer, task, cfg, budget=1, stats=stats, log=None)
        found[path] = (c.nodes, c.num_edges)
    model.set_path("dense")
    assert found["sparse"] == found["dense"] and found["dense"][0] == PLANTED
