import math

import pytest
import torch

from sparsecircuits.config import SparsityConfig
from sparsecircuits.errors import UserError
from sparsecircuits.sparsity import (SparseTensor, WeightSparsifier, abstopk, kth_largest, lr_at,
                                     scheduled_density, sharkfin_factor, topk_mask,
                                     topk_mask_sort)


def sparsifier(param, axis, density, j=4, group="matrix"):
    cfg = SparsityConfig(weight_density=density, other_density=density, min_per_neuron=j,
                         anneal_start=0.0, anneal_end=0.0)
    return WeightSparsifier([SparseTensor("w", param, group, axis)], cfg)


@pytest.mark.parametrize("n,k", [(1000, 1), (1000, 137), (4096, 4095), (50, 50), (50, 0)])
def test_topk_mask_keeps_exactly_k_largest(n, k):
    s = torch.rand(n, generator=torch.Generator().manual_seed(n + k))
    m = topk_mask(s, k)
    assert int(m.sum()) == k
    if 0 < k < n:
        assert s[m].min() > s[~m].max()
        assert torch.equal(m, topk_mask_sort(s, k))


def test_sorted_selection_for_accelerators_matches_the_threshold_path():
    from sparsecircuits.sparsity import _topk_mask_sorted
    g = torch.Generator().manual_seed(1)
    for s in (torch.rand(5000, generator=g), (torch.randn(5000, generator=g) * 2).round().abs()):
        for k in (1, 137, 2500, 4999):
            assert torch.equal(_topk_mask_sorted(s, k), topk_mask(s, k)), k


def test_topk_mask_breaks_ties_exactly():
    s = torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0, 3.0])
    m = topk_mask(s, 3)
    assert int(m.sum()) == 3 and m[5] and not m[0]


def test_threshold_matches_exact_kthvalue():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(1 << 21, generator=g).abs()
    for k in (1, 1000, s.numel() // 64, s.numel() // 2, s.numel() - 3):
        exact = s.kthvalue(s.numel() - k + 1).values
        assert kth_largest(s, k) == exact
        assert kth_largest(s.double(), k) == exact


def test_projection_gives_exact_density():
    w = torch.nn.Parameter(torch.randn(96, 40))
    sp = sparsifier(w, axis=1, density=0.1)
    sp.project(1.0)
    assert int((w != 0).sum()) == math.floor(0.1 * w.numel())


@pytest.mark.parametrize("axis", [0, 1])
def test_floor_of_four_per_neuron_holds_on_adversarial_weights(axis):
    # One neuron's weights are huge and would take the whole budget; the rest are tiny.
    w = torch.full((64, 32), 1e-6)
    w += 1e-7 * torch.rand(64, 32, generator=torch.Generator().manual_seed(0))
    if axis == 1:
        w[0] = 1e3
    else:
        w[:, 0] = 1e3
    w = torch.nn.Parameter(w)
    density = 0.2
    sp = sparsifier(w, axis=axis, density=density)
    sp.project(1.0)
    nonzero = w != 0
    per_neuron = nonzero.sum(dim=axis)
    assert int(per_neuron.min()) >= 4
    assert int(nonzero.sum()) == math.floor(density * w.numel())
    # Without the floor, the big neuron takes everything and others are left with nothing.
    w2 = torch.nn.Parameter(torch.where(torch.arange(64).unsqueeze(1).expand(64, 32) == 0
                                        if axis == 1 else
                                        torch.arange(32).unsqueeze(0).expand(64, 32) == 0,
                                        1e3, 1e-6))
    sparsifier(w2, axis=axis, density=0.01, j=0).project(1.0)
    assert int((w2 != 0).sum(dim=axis).min()) == 0


def test_floor_that_cannot_fit_the_budget_is_a_clear_error():
    w = torch.nn.Parameter(torch.randn(64, 32))
    with pytest.raises(UserError, match="min_per_neuron=4.*raise the density to at least 0.125"):
        sparsifier(w, axis=1, density=0.05)


def test_abstopk_keeps_exactly_k_per_vector():
    x = torch.randn(7, 5, 64, generator=torch.Generator().manual_seed(0))
    y = abstopk(x, 16)
    assert torch.all((y != 0).sum(-1) == 16)
    kept = y != 0
    assert torch.equal(y[kept], x[kept])
    # The kept entries are the largest in magnitude.
    assert torch.all(x.abs().masked_fill(~kept, float("inf")).amin(-1)
                     >= x.abs().masked_fill(kept, 0).amax(-1))


def test_abstopk_with_ties_and_short_vectors():
    x = torch.ones(3, 10)
    x[1] = -2.0
    x[2] = 0.0
    x[2, :2] = 5.0  # fewer nonzeros than k
    y = abstopk(x, 4)
    assert (y[0] != 0).sum() == 4 and (y[1] != 0).sum() == 4
    assert (y[2] != 0).sum() == 2


def test_abstopk_gradient_flows_to_kept_entries_only():
    x = torch.randn(4, 32, requires_grad=True)
    y = abstopk(x, 8)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float())


def test_schedule_endpoints_linear_and_exponential():
    for kind in ("linear", "exponential"):
        cfg = SparsityConfig(weight_density=1 / 16, anneal=kind)
        assert scheduled_density(0.0, 1 / 16, cfg) == 1.0
        assert scheduled_density(0.01, 1 / 16, cfg) == 1.0
        assert scheduled_density(0.5, 1 / 16, cfg) == pytest.approx(1 / 16)
        assert scheduled_density(1.0, 1 / 16, cfg) == pytest.approx(1 / 16)
    mid = 0.01 + 0.49 / 2
    lin = SparsityConfig(weight_density=1 / 16)
    assert scheduled_density(mid, 1 / 16, lin) == pytest.approx((1 + 1 / 16) / 2)
    exp = SparsityConfig(weight_density=1 / 16, anneal="exponential")
    assert scheduled_density(mid, 1 / 16, exp) == pytest.approx(1 / 4)


def test_sharkfin_endpoints():
    cfg = SparsityConfig(weight_density=1 / 16)
    assert sharkfin_factor(0.0, cfg) == pytest.approx(1 / 4)   # sqrt(1/16): dense start runs low
    assert sharkfin_factor(0.5, cfg) == pytest.approx(1.0)     # normalised at the target
    assert sharkfin_factor(0.9, cfg) == pytest.approx(1.0)
    total = 1000
    assert lr_at(0, total, 1.0, 0.01) == pytest.approx(0.1)    # warmup over 10 steps
    assert lr_at(9, total, 1.0, 0.01) == pytest.approx(1.0)
    assert lr_at(10, total, 1.0, 0.01) == pytest.approx(1.0)
    assert lr_at(total - 1, total, 1.0, 0.01) == pytest.approx(1 / 990)
    # The sharkfin: the LR rises through the anneal, peaks as it ends, then decays.
    curve = [lr_at(t, total, 1.0, 0.01, sharkfin_factor(t / total, cfg)) for t in range(total)]
    peak = max(range(total), key=curve.__getitem__)
    assert 490 <= peak <= 500
    assert curve[peak] == pytest.approx(0.5, abs=0.01)   # the relative LR peaks near 0.5
    assert curve[10] == pytest.approx(0.25)              # at the dense start, sqrt(1/16)


def _abstopk_cases():
    g = torch.Generator().manual_seed(0)
    for shape, k in [((3, 7, 128), 32), ((2, 5, 512), 128), ((64, 8), 3), ((4, 33), 1)]:
        x = torch.randn(shape, generator=g)
        yield x, k
        # Ties, zeros, negative zeros and subnormals in the same rows.
        t = (x * 2).round() / 2
        t[..., ::5] = 0.0
        t[..., 1::7] = -0.0
        t[..., 2::11] = 1e-42
        yield t, k
    wide = torch.randn(4, 6, 3 * 128, generator=g)
    yield wide[..., 128:256], 32  # a strided view, as q, k, v of the fused projection are


def test_abstopk_fused_cpu_kernel_matches_the_tensor_path_exactly():
    from sparsecircuits.sparsity import _abstopk_torch, _cpu_kernel
    kernel = _cpu_kernel()
    assert kernel is not None, "numba is a dependency: the fused kernel must load"
    for x, k in _abstopk_cases():
        out, mask = kernel(x, k)
        ref_out, ref_mask = _abstopk_torch(x, k)
        assert torch.equal(mask, ref_mask) and torch.equal(out, ref_out)
        nonzero = (x != 0).sum(-1)
        assert torch.equal((mask != 0).sum(-1), nonzero.clamp_max(k))
        assert torch.equal(out, x * mask)


def test_abstopk_breaks_ties_by_position_on_both_paths():
    from sparsecircuits.sparsity import _abstopk_torch, _cpu_kernel
    x = torch.tensor([[1.0, -3.0, 2.0, 2.0, -2.0, 2.0, 0.5, 2.0]])
    want = torch.tensor([[0.0, -3.0, 2.0, 2.0, -2.0, 0.0, 0.0, 0.0]])
    for fn in (_cpu_kernel(), _abstopk_torch):
        out, _ = fn(x, 4)
        assert torch.equal(out, want)


def _projection_cases():
    g = torch.Generator().manual_seed(0)
    for shape, axis, density in [((96, 40), 1, 0.1), ((40, 96), 0, 0.1), ((384, 128), 1, 1 / 16),
                                 ((128, 512), 0, 1 / 16), ((2048, 64), None, 0.25),
                                 ((300,), None, 0.25), ((7, 5), 1, 0.9)]:
        w = torch.randn(shape, generator=g)
        yield w, axis, density
        t = (w * 2).round() / 2  # ties, and a fifth of the entries exactly zero
        yield t, axis, density
        if len(shape) == 2 and axis is not None:  # one neuron would take the whole budget
            big = w.clone().mul_(1e-6)
            big.select(1 - axis, 0).fill_(1e3)
            yield big, axis, density


def test_fused_cpu_projection_matches_the_tensor_path_exactly():
    from sparsecircuits.sparsity import _cpu_projection
    assert _cpu_projection() is not None, "numba is a dependency: the fused projection must load"
    for w, axis, density in _projection_cases():
        fused, ref = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
        sparsifier(fused, axis=axis, density=density).project(1.0)
        sparsifier(ref, axis=axis, density=density).project(1.0, select=topk_mask)
        k = math.floor(density * w.numel() + 1e-6)
        if bool((w != 0).all()) and w.unique().numel() == w.numel():
            # No ties: the same weights kept, exactly k of them, the floor for every neuron.
            assert torch.equal(fused, ref), (w.shape, axis, density)
            assert int((fused != 0).sum()) == k
            if axis is not None:
                assert int((fused != 0).sum(dim=axis).min()) >= min(4, w.shape[axis])
        else:
            # Ties (and zeros): a neuron's floor may take another of several equal entries, so
            # the kept magnitudes agree as a multiset, and each neuron keeps its floor.
            def kept(p):
                return p[p != 0].abs().sort().values
            assert torch.equal(kept(fused), kept(ref)), (w.shape, axis, density)
            assert int((fused != 0).sum()) <= k
            if axis is None:  # no floor: ties broken by position on both paths
                assert torch.equal(fused, ref)
            else:
                need = (w != 0).sum(dim=axis).clamp_max(min(4, w.shape[axis]))
                assert bool(((fused != 0).sum(dim=axis) >= need).all())


def test_projection_invalidates_a_graph_that_saved_the_weights():
    # The fused kernel writes the weights in place; autograd must see it, as with masked_fill_.
    w = torch.nn.Parameter(torch.randn(96, 40))
    x = torch.randn(8, 96, requires_grad=True)
    loss = (x @ w).square().sum()  # saves w for the gradient of x
    sparsifier(w, axis=1, density=0.1).project(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
