"""The training step on the kept weights (`train.path = "sparse"`): the masked-dense step's
numbers, computed on the nonzeros."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import sparsecircuits
from sparsecircuits import pattern
from sparsecircuits.checkpoint import checkpoint_dir
from sparsecircuits.pattern import Pattern, PatternLinear
from sparsecircuits.train import train

from .conftest import quiet, tiny_config

TOL = dict(rtol=1e-5, atol=1e-6)  # float32 sums taken in another order


def test_the_pattern_product_and_its_gradients_equal_the_masked_dense_ones():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 40, generator=g) * (torch.rand(48, 40, generator=g) < 0.1)
    w[3] = 0  # a row with no kept weight
    x = torch.randn(64, 40, generator=g, requires_grad=True)
    gy = torch.randn(64, 48, generator=g)
    p = Pattern(torch.nn.Parameter(w.clone()), {})
    assert p.values.numel() == int((w != 0).sum())

    y = PatternLinear.apply(x, p.values, p)
    y.backward(gy)
    wd = w.clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    F.linear(x2, wd).backward(gy)
    torch.testing.assert_close(y, x2 @ w.t(), **TOL)
    torch.testing.assert_close(x.grad, x2.grad, **TOL)
    torch.testing.assert_close(p.values.grad, wd.grad.reshape(-1)[p.idx], **TOL)
    # The values written back land where the nonzeros were, and nowhere else.
    with torch.no_grad():
        p.values.mul_(2)
    p.write()
    torch.testing.assert_close(p.weight.detach(), 2 * w)


def _run(corpus_dir, out, path, regrow_every=4, on_step=None, **train_kw):
    cfg = tiny_config(corpus_dir, sparsity=dict(regrow_every=regrow_every, anneal_start=0.0,
                                                anneal_end=0.25),
                      train=dict(path=path, max_steps=40, checkpoint_every=7, **train_kw))
    return train(cfg, out, log=quiet, on_step=on_step)


def _tensors(run):
    return (load_file(checkpoint_dir(run) / "model.safetensors"),
            load_file(checkpoint_dir(run) / "optimizer.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    """The largest difference of two state dicts, relative to each tensor's largest entry."""
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max() / a[k].float().abs().max()
                     .clamp_min(1e-12)) for k in a)


def test_a_run_on_the_kept_weights_equals_the_masked_dense_run(corpus_dir, tmp_path,
                                                                monkeypatch):
    steps = []
    real = pattern.KeptWeights.step
    monkeypatch.setattr(pattern.KeptWeights, "step",
                        lambda self, *a: (steps.append(1), real(self, *a))[1])
    masked = _tensors(_run(corpus_dir, tmp_path / "masked", "dense"))
    assert not steps
    sparse = _tensors(_run(corpus_dir, tmp_path / "sparse", "sparse"))
    # Steps 10..39 run after the anneal; every 4th of them regrows on the dense step.
    assert len(steps) == sum(1 for s in range(10, 40) if s % 4)
    for a, b in zip(masked, sparse):  # weights, then Adam's moments (flushed at checkpoints)
        assert _max_diff(a, b) < 1e-5
        for k in a:
            assert torch.equal(a[k] != 0, b[k] != 0) or k.endswith(("exp_avg", "exp_avg_sq")), k
    # Control: the paper's rule (regrowth every step) is a different run by far more than that.
    paper = _tensors(_run(corpus_dir, tmp_path / "paper", "dense", regrow_every=1))
    assert _max_diff(masked[0], paper[0]) > 1e-3


def test_a_sparse_path_run_resumes_mid_pattern_to_the_same_weights(corpus_dir, tmp_path):
    straight = _tensors(_run(corpus_dir, tmp_path / "straight", "sparse"))

    class Crash(Exception):
        pass

    def crash(step):
        if step == 17:
            raise Crash

    with pytest.raises(Crash):  # the last checkpoint, step 14, is in the middle of a pattern
        _run(corpus_dir, tmp_path / "resumed", "sparse", on_step=crash)
    train(None, tmp_path / "resumed", resume=True, log=quiet)
    resumed = _tensors(tmp_path / "resumed")
    for a, b in zip(straight, resumed):
        assert _max_diff(a, b) < 1e-6


def test_the_sparse_path_is_refused_where_it_cannot_apply(corpus_dir, tmp_path):
    with pytest.raises(sparsecircuits.UserError, match="regrow_every above 1"):
        tiny_config(corpus_dir, train=dict(path="sparse"))
    with pytest.raises(sparsecircuits.UserError, match="autocast"):
        tiny_config(corpus_dir, sparsity=dict(regrow_every=4),
                    train=dict(path="sparse", autocast="bf16"))
    with pytest.raises(sparsecircuits.UserError, match="train.path='csr' is unknown"):
        tiny_config(corpus_dir, train=dict(path="csr"))
    # Bridges are refused before anything is written: the folder stays free for a new try.
    cfg = tiny_config(corpus_dir, sparsity=dict(regrow_every=4), train=dict(path="sparse"))
    with pytest.raises(sparsecircuits.UserError, match="one model in one process"):
        train(cfg, tmp_path / "bridged", bridge_to=tmp_path / "dense", log=quiet)
    assert not (tmp_path / "bridged").exists()
