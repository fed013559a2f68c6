import math

import pytest
import torch

from sparsecircuits.config import SITE_KINDS, ModelConfig
from sparsecircuits.model import GPT


def small(**kw) -> GPT:
    cfg = dict(n_layer=2, d_model=32, d_head=16, d_mlp=64, vocab_size=100, block_size=16)
    cfg.update(kw)
    torch.manual_seed(0)
    return GPT(ModelConfig(**cfg)).eval()


def tokens(B=3, T=11, V=100, seed=0):
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", [{}, {"sink": True}, {"d_pos_emb": 4}, {"afrac": 1.0},
                                     {"bigram": False}])
def test_every_site_fires_once_with_its_documented_shape(variant):
    model = small(**variant)
    x = tokens()
    seen = []
    with model.hooks(lambda name, t: seen.append((name, tuple(t.shape))) or t):
        model(x)
    c = model.cfg
    dims = {"attn.in": c.d_model, "attn.q": c.d_attn, "attn.k": c.d_attn, "attn.v": c.d_attn,
            "attn.out": c.d_model, "mlp.in": c.d_model, "mlp.neuron": c.d_mlp,
            "mlp.out": c.d_model}
    expected = [(f"blocks.{l}.{k}", (3, 11, dims[k])) for l in range(2) for k in SITE_KINDS]
    assert seen == expected
    assert [n for n, _ in seen] == model.site_names()


def test_identity_hook_leaves_logits_bit_identical():
    model = small(sink=True, d_pos_emb=4)
    x = tokens()
    with torch.no_grad():
        ref = model(x)
        with model.hooks(lambda name, t: t):
            out = model(x)
        _, cache = model.run_with_cache(x)
        again = model(x)
    assert torch.equal(ref, out) and torch.equal(ref, again)
    assert set(cache) == set(model.site_names())


def test_a_hook_is_the_intervention_seam():
    model = small()
    x = tokens()
    with torch.no_grad():
        ref = model(x)

        def zero_mlp_out(name, t):
            return torch.zeros_like(t) if name == "blocks.1.mlp.out" else t
        with model.hooks(zero_mlp_out):
            patched = model(x)
    assert not torch.allclose(ref, patched)
    # Zeroing the last MLP write equals removing it: logits from the residual without it.
    _, cache = model.run_with_cache(x)
    with torch.no_grad():
        resid = model.wte(x) + sum(cache[f"blocks.{l}.{w}"] for l in range(2)
                                   for w in ("attn.out", "mlp.out"))
        resid = resid - cache["blocks.1.mlp.out"]
        manual = model.lm_head(model.ln_f(resid)) + model.bigram[x]
    torch.testing.assert_close(patched, manual)


def test_abstopk_applies_at_every_site():
    model = small(afrac=0.25)
    _, cache = model.run_with_cache(tokens())
    for name, act in cache.items():
        k = max(1, int(0.25 * act.shape[-1]))
        assert int((act != 0).sum(-1).max()) <= k, name
    dense = small(afrac=1.0)
    _, cache = dense.run_with_cache(tokens())
    assert float((cache["blocks.0.mlp.neuron"] != 0).float().mean()) > 0.9


def test_model_is_causal():
    model = small(sink=True, d_pos_emb=4)
    x = tokens(B=1)
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 100
    with torch.no_grad():
        assert torch.equal(model(x)[:, :-1], model(y)[:, :-1])


def test_attention_sink_semantics():
    """a_j = exp(s_j) / (exp(b) + sum_i exp(s_i)) and the sink carries a zero value."""
    model = small(sink=True, afrac=1.0, n_layer=1)
    attn = model.blocks[0].attn
    x = tokens(B=1, T=5)
    with torch.no_grad():
        attn.sink.copy_(torch.tensor([0.7, -1.3]))
        _, cache = model.run_with_cache(x)
        q, k, v = (cache[f"blocks.0.attn.{n}"][0].view(5, 2, 16) for n in "qkv")
        ys = []
        for h in range(2):
            s = q[:, h] @ k[:, h].T / math.sqrt(16)
            s = s.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
            a = s.exp() / (attn.sink[h].exp() + s.exp().sum(-1, keepdim=True))
            ys.append(a @ v[:, h])
        expected = attn.c_proj(torch.cat(ys, dim=-1))
        torch.testing.assert_close(cache["blocks.0.attn.out"][0], expected)
        # A huge sink absorbs all attention: the layer writes only its output bias.
        attn.sink.fill_(60.0)
        _, cache = model.run_with_cache(x)
        torch.testing.assert_close(cache["blocks.0.attn.out"][0],
                                   attn.c_proj.bias.expand(5, -1), atol=1e-6, rtol=0)


def test_position_channels_are_read_only_inputs():
    model = small(d_pos_emb=4)
    assert model.blocks[0].attn.c_attn.in_features == 32 + 4
    assert model.blocks[0].mlp.c_fc.in_features == 32 + 4
    no_pos = small()
    x = tokens(B=1, T=6)
    x[0] = 7  # the same token everywhere: only position channels can tell positions apart
    with torch.no_grad():
        assert not torch.allclose(model(x)[0, 1], model(x)[0, 5])
        torch.testing.assert_close(no_pos(x)[0, 0].expand(6, -1), no_pos(x)[0])


def test_sparse_tensor_inventory():
    model = small(sink=True)
    tensors = {t.name: t for t in model.sparse_tensors()}
    assert "bigram" not in tensors
    assert not any("ln_" in n or n.endswith("sink") for n in tensors)
    assert tensors["blocks.0.attn.c_attn.weight"].floor_axis == 1
    assert tensors["blocks.0.mlp.c_fc.weight"].floor_axis == 1
    assert tensors["blocks.0.attn.c_proj.weight"].floor_axis == 0
    assert tensors["blocks.1.mlp.c_proj.weight"].floor_axis == 0
    assert tensors["wte.weight"].floor_axis is None and tensors["wte.weight"].group == "other"
    assert tensors["blocks.0.mlp.c_fc.bias"].group == "other"
    assert "lm_head.bias" not in dict(model.named_parameters())  # unembedding has no bias


def test_init_follows_the_paper():
    model = GPT(ModelConfig(n_layer=8, d_model=256, d_head=16, d_mlp=1024, vocab_size=512))
    assert model.blocks[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert float(model.blocks[0].mlp.c_fc.bias.detach().abs().sum()) == 0
    assert 0 <= float(model.bigram.detach().min()) and float(model.bigram.detach().max()) < 0.02
