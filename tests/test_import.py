"""Importing models trained elsewhere: the circuit-sparsity release format (checked against a
reference forward written here from the format's description) and Hugging Face GPT-2 (checked
against `transformers` itself); the imported run works with every command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from sparsecircuits.checkpoint import load
from sparsecircuits.corpus import Corpus
from sparsecircuits.errors import UserError
from sparsecircuits.importers import import_circuit_sparsity, read_provenance

from .test_cli import assert_one_line_error, run_cli

LOCTYPES = ["attn_in", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_in", "mlp_neuron", "mlp_out"]


# ----------------------------------------------------------------------------- the release format

def release_config(**kw) -> dict:
    c = dict(n_layer=2, n_head=2, d_head=8, d_model=16, d_mlp=32, block_size=24, vocab_size=0,
             bias=True, ln_bias=False, rms_norm=True, residual_activation_type="identity",
             activation_type="gelu", afrac=0.5, afrac_loctypes=",".join(LOCTYPES),
             tied_unembed=False, enable_bigram_table=True, learnable_bigram_table=True,
             d_pos_emb=None, sink=True, flash=True, dropout=0.0, pfrac=0.25,
             grad_checkpointing=False)
    c.update(kw)
    return c


def release_tensors(c: dict, seed: int = 0, final_bias: bool = True) -> dict:
    """Random weights in the release's names and shapes (about a third of each matrix zero)."""
    g = torch.Generator().manual_seed(seed)
    d, dm, V = c.get("d_model", c.get("n_embd")), c.get("d_mlp", c.get("n_mlp")), c["vocab_size"]
    da, dp = c["n_head"] * c["d_head"], c.get("d_pos_emb") or 0
    d_in = d + dp

    def w(*shape, sparse=True):
        t = torch.randn(*shape, generator=g) * 0.3
        return t * (torch.rand(*shape, generator=g) > 0.3) if sparse else t

    def gain(n):
        return 1 + 0.2 * torch.randn(n, generator=g)

    layer_norm = not c["rms_norm"]
    sd = {"transformer.wte.weight": w(V, d), "transformer.wpe.weight": w(c["block_size"], dp or d),
          "transformer.ln_f.weight": gain(d), "lm_head.weight": w(V, d)}
    norms = ["ln_1", "ln_2"] + (["ln_p1", "ln_p2"] if dp else [])
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        for n in norms:
            sd[f"{p}{n}.weight"] = gain(dp if n.startswith("ln_p") else d)
            if layer_norm and c["ln_bias"]:
                sd[f"{p}{n}.bias"] = 0.1 * torch.randn(dp if n.startswith("ln_p") else d, generator=g)
        for name, shape in (("attn.c_attn", (3 * da, d_in)), ("attn.c_proj", (d, da)),
                            ("mlp.c_fc", (dm, d_in)), ("mlp.c_proj", (d, dm))):
            sd[f"{p}{name}.weight"] = w(*shape)
            if c["bias"]:
                sd[f"{p}{name}.bias"] = 0.1 * torch.randn(shape[0], generator=g)
        if c.get("sink"):
            sd[f"{p}attn.attn_imp.sink_logit"] = torch.randn(c["n_head"], generator=g)
    if layer_norm and c["ln_bias"]:
        sd["transformer.ln_f.bias"] = 0.1 * torch.randn(d, generator=g)
    if final_bias:
        sd["final_logits_bias"] = 0.1 * torch.randn(V, generator=g)
    if c["enable_bigram_table"]:
        sd["bigram_table"] = 0.1 * torch.randn(V, V, generator=g)
    if c["tied_unembed"]:
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def reference_logits(c: dict, sd: dict, idx: torch.Tensor) -> torch.Tensor:
    """The forward pass as the format's description states it, written independently of the
    model class."""
    H, dh, dp = c["n_head"], c["d_head"], c.get("d_pos_emb") or 0
    locs = set(filter(None, (c.get("afrac_loctypes") or "").split(","))) if c["afrac"] else set()
    B, T = idx.shape
    act = F.gelu if c["activation_type"] == "gelu" else F.relu

    def norm(x, prefix):
        if c["rms_norm"]:
            eps = torch.finfo(torch.float32).eps
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * sd[prefix + ".weight"]
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + 1e-5) * sd[prefix + ".weight"]
        return y + sd[prefix + ".bias"] if prefix + ".bias" in sd else y

    def topk(x, loc):
        if loc not in locs:
            return x
        k = int(c["afrac"] * x.shape[-1])
        keep = x.abs().topk(k, dim=-1).indices
        return torch.zeros_like(x).scatter(-1, keep, x.gather(-1, keep))

    def linear(x, prefix):
        y = x @ sd[prefix + ".weight"].T
        return y + sd[prefix + ".bias"] if prefix + ".bias" in sd else y

    pos = sd["transformer.wpe.weight"][:T]
    x = sd["transformer.wte.weight"][idx]
    if not dp:
        x = x + pos
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        h = norm(x, p + "ln_1")
        if dp:
            h = torch.cat([h, norm(pos, p + "ln_p1").expand(B, T, dp)], -1)
        h = topk(h, "attn_in")
        q, k, v = linear(h, p + "attn.c_attn").split(H * dh, -1)
        q, k, v = topk(q, "attn_q"), topk(k, "attn_k"), topk(v, "attn_v")
        q, k, v = (t.view(B, T, H, dh).transpose(1, 2) for t in (q, k, v))
        s = q @ k.transpose(-1, -2) / math.sqrt(dh)
        s = s.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        if c.get("sink"):
            sink = sd[p + "attn.attn_imp.sink_logit"].view(1, H, 1, 1).expand(B, H, T, 1)
            a = torch.cat([sink, s], -1).softmax(-1)[..., 1:]
        else:
            a = s.softmax(-1)
        y = (a @ v).transpose(1, 2).reshape(B, T, H * dh)
        x = x + topk(linear(y, p + "attn.c_proj"), "attn_out")
        h = norm(x, p + "ln_2")
        if dp:
            h = torch.cat([h, norm(pos, p + "ln_p2").expand(B, T, dp)], -1)
        h = topk(h, "mlp_in")
        n = topk(act(linear(h, p + "mlp.c_fc")), "mlp_neuron")
        x = x + topk(linear(n, p + "mlp.c_proj"), "mlp_out")
    logits = norm(x, "transformer.ln_f") @ sd["lm_head.weight"].T
    if "final_logits_bias" in sd:
        logits = logits + sd["final_logits_bias"]
    if c["enable_bigram_table"]:
        logits = logits + sd["bigram_table"][idx]
    return logits


def write_tokenizer_files(tok: Tokenizer, folder: Path, with_eot: bool = True) -> None:
    """The tokenizer as the release ships one: encoder.json (ids) and vocab.bpe (merges)."""
    m = json.loads(tok.to_str())["model"]
    vocab = dict(m["vocab"])
    if with_eot:
        vocab["<|endoftext|>"] = tok.get_vocab_size() - 1
    (folder / "encoder.json").write_text(json.dumps(vocab))
    merges = [" ".join(x) if isinstance(x, list) else x for x in m["merges"]]
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_release(folder: Path, c: dict, sd: dict, tok: Tokenizer) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "beeg_config.json").write_text(json.dumps(c))
    torch.save(sd, folder / "final_model.pt")
    write_tokenizer_files(tok, folder)
    return folder


@pytest.fixture(scope="module")
def tok(corpus_dir) -> Tokenizer:
    return Corpus(corpus_dir).tokenizer


def quiet(*a, **k):
    pass


VARIANTS = {
    "added positions, sink, bigram, AbsTopK everywhere, tied": dict(tied_unembed=True),
    "concatenated positions, LayerNorm with bias, ReLU, no bias": dict(
        d_pos_emb=4, rms_norm=False, ln_bias=True, activation_type="relu", bias=False,
        sink=False, afrac=0.25, afrac_loctypes="attn_in,mlp_in,attn_q,mlp_neuron",
        enable_bigram_table=False),
    "older key names, dense activations": dict(afrac=None, afrac_loctypes="", sink=False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_imported_release_model_matches_the_formats_reference_forward(variant, tok, tmp_path):
    c = release_config(vocab_size=tok.get_vocab_size(), **VARIANTS[variant])
    if variant.startswith("older"):
        c["n_embd"], c["n_mlp"] = c.pop("d_model"), c.pop("d_mlp")
    sd = release_tensors(c, final_bias=not variant.startswith("concat"))
    src = write_release(tmp_path / "release", c, sd, tok)
    if variant.startswith("older"):  # and d_head left to its default, d_model // n_head
        (src / "beeg_config.json").write_text(json.dumps({k: v for k, v in c.items()
                                                          if k != "d_head"}))
    run = import_circuit_sparsity(src, tmp_path / "run", log=quiet)
    model, run_tok = load(run)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, c["vocab_size"], (3, c["block_size"]), generator=g)
    with torch.no_grad():
        got, want = model(idx), reference_logits(c, sd, idx)
    assert (got - want).abs().max().item() < 1e-5
    text = "def f(x):\n    return x['a']\n"
    assert run_tok.encode(text).ids == tok.encode(text).ids
    prov = read_provenance(run)
    assert prov["source"] == "circuit-sparsity"
    assert {"flash", "dropout", "pfrac", "grad_checkpointing"} <= set(prov["inert_keys"])


def test_the_input_sites_of_an_imported_model_read_the_concatenated_positions(tok, tmp_path):
    """AbsTopK at attn.in runs over residual and position channels together: 20 channels,
    at most 10 kept (fewer where a kept value is itself zero)."""
    c = release_config(vocab_size=tok.get_vocab_size(), d_pos_emb=4)
    run = import_circuit_sparsity(write_release(tmp_path / "r", c, release_tensors(c), tok),
                                  tmp_path / "run", log=quiet)
    model, _ = load(run)
    _, cache = model.run_with_cache(torch.randint(0, c["vocab_size"], (2, 10)))
    a = cache["blocks.0.attn.in"]
    assert a.shape[-1] == 20 and (a != 0).sum(-1).max() == 10


# ----------------------------------------------------------------------------- the real configs

RELEASED = Path(__file__).parent / "fixtures" / "release-configs"
RELEASED_SHA256 = {
    "csp_bridges1": "819e71e7ee02bca4bfc6b78e67e41b05fd1566ed75a2c6c10cee277c5cdfb7a1",
    "csp_bridges2": "819e71e7ee02bca4bfc6b78e67e41b05fd1566ed75a2c6c10cee277c5cdfb7a1",
    "csp_sweep1_1x_0.9Mnonzero_afrac0.125":
        "0b4f4dd2c913f6b3e26abf3499860552656de663c82646c7599b0b1850e76477",
    "csp_sweep1_2x_1.9Mnonzero_afrac0.125":
        "e59708fef432db26318c2aac8155f09821569b2fff5fe146d4a7e12ad55e7e54",
    "csp_yolo2": "a80b49d251d1bed529d56b52e87559c6b1000ae58034e148933f3c191b8b3a07",
    "dense1_4x": "ca2832e787e9312cd529100511d4f4f7df4c039c8097fa9223d53cd6af10451f",
}


def released(name: str) -> dict:
    path = RELEASED / name / "beeg_config.json"
    import hashlib
    assert hashlib.sha256(path.read_bytes()).hexdigest() == RELEASED_SHA256[name], \
        f"{path} is no longer the released file"
    return json.loads(path.read_text())


def shrunk(c: dict, vocab_size: int) -> dict:
    """The released config at a test's size: 2 layers, 4 heads of the released width, d_mlp
    in its released ratio, a short context; every other key (and every key) as released."""
    small = dict(c)
    small.update(n_layer=2, n_head=4, d_model=4 * c["d_head"], block_size=24,
                 d_mlp=4 * c["d_head"] * c["d_mlp"] // c["d_model"], vocab_size=vocab_size)
    if c.get("d_pos_emb"):
        small["d_pos_emb"] = 8
    assert small.keys() == c.keys()
    return small


@pytest.mark.parametrize("name", sorted(RELEASED_SHA256))
def test_every_released_config_imports_and_matches_the_reference_forward(name, tok, tmp_path):
    c = shrunk(released(name), tok.get_vocab_size())
    sd = release_tensors(c)
    run = import_circuit_sparsity(write_release(tmp_path / name, c, sd, tok), tmp_path / "run",
                                  log=quiet)  # no --inert: every released key is decided
    model, _ = load(run)
    idx = torch.randint(0, c["vocab_size"], (3, c["block_size"]),
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(idx) - reference_logits(c, sd, idx)).abs().max().item() < 1e-5
    prov = read_provenance(run)
    assert set(prov["config"]) == set(released(name))
    assert set(prov["inert_keys"]) <= set(prov["inert_reasons"])
    dense = c["afrac"] is None
    assert (model.cfg.afrac == 1.0) == dense
    assert model.cfg.sink == bool(c.get("sink")) and model.cfg.pos_norm == bool(c.get("d_pos_emb"))
    if dense:  # pfrac 16 and no afrac_loctypes: every weight kept, no AbsTopK anywhere
        assert json.loads((run / "config.json").read_text())["sparsity"]["weight_density"] > 0.6
        assert "afrac_loctypes" not in c


@pytest.mark.parametrize("key,value,needle", [
    ("rtopk", True, "rtopk=true"), ("bigram_table_rank", 64, "low-rank bigram table"),
    ("n_embd", 999, "n_embd=999"), ("residual_activation_type", "relu", "residual_activation_type")])
def test_a_released_key_at_a_value_that_changes_the_forward_is_refused(key, value, needle, tok,
                                                                       tmp_path):
    c = shrunk(released("csp_yolo2"), tok.get_vocab_size())
    src = write_release(tmp_path / "r", dict(c, **{key: value}), release_tensors(c), tok)
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        import_circuit_sparsity(src, tmp_path / "run", log=quiet)
    assert not (tmp_path / "run").exists()


def plant(c: dict, sd: dict, tok) -> tuple[dict, dict]:
    """The planted mechanism of the circuit tests put into layer 0 of a released shape: token A
    writes +1 and token B -1 on residual channel 0, neuron 0 reads it and writes channel 1, and
    the two answers' unembedding rows read channel 1 alone. Nothing else reads channels 0 or 1
    into a neuron or writes them, the bigram table is zero, and every other write is quiet
    enough for the planted channels and neuron to pass AbsTopK, so the answer depends on three
    nodes whatever the other (random, sparse) weights do."""
    from .test_circuits import FILLERS, single_tokens
    a, b = single_tokens(tok, [" def", " class"])
    x_ans, y_ans = single_tokens(tok, ["(", ":"])
    ids = {s: tok.encode(s, add_special_tokens=False).ids[0] for s in (a, b, x_ans, y_ans)}
    sd = {k: v.clone() for k, v in sd.items()}
    sd["transformer.wte.weight"].mul_(0.05)
    sd["transformer.wte.weight"][:, :2] = 0
    sd["transformer.wte.weight"][ids[a], 0], sd["transformer.wte.weight"][ids[b], 0] = 1.0, -1.0
    sd["transformer.wpe.weight"].mul_(0.05)
    sd["transformer.wpe.weight"][:, :2] = 0
    sd["bigram_table"].zero_()
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        for lin in ("attn.c_proj", "mlp.c_proj"):  # quiet writes: the planted channels win
            sd[p + lin + ".weight"].mul_(0.01)
            sd[p + lin + ".weight"][:2] = 0
            sd[p + lin + ".bias"][:2] = 0
        sd[p + "mlp.c_fc.weight"].mul_(0.1)    # and the planted neuron its AbsTopK
        sd[p + "mlp.c_fc.weight"][:, :2] = 0
    fc, proj = "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"
    sd[fc + ".weight"][0] = 0
    sd[fc + ".weight"][0, 0] = 0.1
    sd[fc + ".bias"][0] = 3.0
    sd[proj + ".weight"][:, 0] = 0
    sd[proj + ".weight"][1, 0] = 1.0
    sd[proj + ".bias"][1] = -F.gelu(torch.tensor(3.0))
    sd["lm_head.weight"][[ids[x_ans], ids[y_ans]]] = 0
    sd["lm_head.weight"][ids[x_ans], 1], sd["lm_head.weight"][ids[y_ans], 1] = 20.0, -20.0
    sd["transformer.ln_f.weight"].fill_(1.0)
    return dict(a=a, b=b, target=x_ans, alt=y_ans, fill=[f.strip() for f in single_tokens(
        tok, [" " + w for w in FILLERS])]), sd


def test_the_smallest_released_shape_imports_at_its_real_size(tmp_path, capsys):
    """csp_sweep1_1x at its real size: 8 layers, d_model 256, 1,024 positions, the 2,048-token
    vocabulary of the shipped tokenizer."""
    from sparsecircuits.demo import shipped_runs
    from sparsecircuits.tokenizer import load_tokenizer
    big = load_tokenizer(Path(shipped_runs()[0]) / "tokenizer.json")
    c = released("csp_sweep1_1x_0.9Mnonzero_afrac0.125")
    assert (c["n_layer"], c["d_model"], c["block_size"]) == (8, 256, 1024)
    sd = release_tensors(c)
    src = write_release(tmp_path / "release", c, sd, big)
    code, out, err = run_cli(capsys, "import", "circuit-sparsity", str(src), "--out",
                             str(tmp_path / "run"))
    assert code == 0, err
    assert "8 layers, d_model 256" in out
    model, _ = load(tmp_path / "run")
    idx = torch.randint(0, c["vocab_size"], (2, 96), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(idx) - reference_logits(c, sd, idx)).abs().max().item() < 1e-5


def test_a_released_shape_goes_through_eval_prune_and_view(corpus_dir, tok, tmp_path, capsys):
    """Every key of csp_sweep1_1x as released, at a test's size, with a circuit planted: the
    imported run is taken by eval, prune --budget 1 and view, and the circuit holds the plant."""
    from .test_circuits_cli import write_planted_task
    c = shrunk(released("csp_sweep1_1x_0.9Mnonzero_afrac0.125"), tok.get_vocab_size())
    c.update(d_model=128, n_head=8, d_mlp=512)  # room for AbsTopK (1/8) to keep 16 channels
    words, sd = plant(c, release_tensors(c), tok)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "import", "circuit-sparsity",
                             str(write_release(tmp_path / "release", c, sd, tok)), "--out",
                             str(run), "--corpus", str(corpus_dir))
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", str(run))
    assert code == 0, err
    task = tmp_path / "planted.toml"
    write_planted_task(task, words)
    circuit = tmp_path / "circuit.json"
    code, out, err = run_cli(capsys, "prune", str(run), "--task", str(task), "--out",
                             str(circuit), "--budget", "1", "--steps", "150")
    assert code == 0, err
    found = json.loads(circuit.read_text())
    for site, index in (("blocks.0.mlp.in", 0), ("blocks.0.mlp.neuron", 0), ("blocks.0.mlp.out", 1)):
        assert index in found["nodes"][site]
    assert found["loss"] <= 0.15
    code, out, err = run_cli(capsys, "view", str(circuit), "--out", str(tmp_path / "v.html"))
    assert code == 0, err


# ----------------------------------------------------------------------------- bad input

def _release(tok, tmp_path, **kw):
    c = release_config(vocab_size=tok.get_vocab_size(), **kw)
    return write_release(tmp_path / "release", c, release_tensors(c), tok), c


def test_bad_release_files_are_one_line_errors(tok, tmp_path, capsys):
    src, c = _release(tok, tmp_path)

    def fails(*needles, extra=()):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        assert_one_line_error(*run_cli(capsys, "import", "circuit-sparsity", str(src), "--out",
                                       str(out), *extra)[::2], *needles)
        assert not out.exists()

    sd = torch.load(src / "final_model.pt")
    raw = (src / "final_model.pt").read_bytes()
    (src / "final_model.pt").write_bytes(raw[: len(raw) // 2])
    fails("final_model.pt", "truncated")
    missing = dict(sd)
    del missing["transformer.h.1.mlp.c_fc.weight"]
    torch.save(missing, src / "final_model.pt")
    fails("lacks the tensor 'transformer.h.1.mlp.c_fc.weight'")
    wrong = dict(sd, **{"transformer.h.0.attn.c_proj.weight": torch.zeros(16, 15)})
    torch.save(wrong, src / "final_model.pt")
    fails("'transformer.h.0.attn.c_proj.weight' has shape (16, 15)", "(16, 16)")
    torch.save(dict(sd, extra_table=torch.zeros(3)), src / "final_model.pt")
    fails("'extra_table'")
    torch.save(sd, src / "final_model.pt")

    (src / "beeg_config.json").write_text(json.dumps(dict(c, mystery_knob=3)))
    fails("'mystery_knob'", "--inert mystery_knob")
    code, _, err = run_cli(capsys, "import", "circuit-sparsity", str(src), "--out",
                           str(tmp_path / "ok"), "--inert", "mystery_knob")
    assert code == 0, err
    assert read_provenance(tmp_path / "ok")["inert_keys"]["mystery_knob"] == 3
    fails("--inert sink", extra=("--inert", "sink"))  # a mapped key is never set aside
    for key, value, needle in (("afrac_loctypes", "attn_in,resid_post_mlp", "resid_post_mlp"),
                               ("residual_activation_type", "relu", "residual_activation_type"),
                               ("afrac_loctypes", "attn_inn", "attn_inn")):
        (src / "beeg_config.json").write_text(json.dumps(dict(c, **{key: value})))
        fails(needle)
    (src / "beeg_config.json").write_text("{not json")
    fails("beeg_config.json", "not valid JSON")
    (src / "beeg_config.json").write_text(json.dumps(c))
    (src / "vocab.bpe").unlink()
    fails("vocab.bpe", "--tokenizer-dir")


# ----------------------------------------------------------------------------- every command

def planted_release(tok, folder: Path):
    """The planted model of the circuit tests, written in the release's format."""
    from .test_circuits import planted
    model, _ = planted(tok)
    m = model.cfg
    c = release_config(n_layer=m.n_layer, n_head=m.n_head, d_head=m.d_head, d_model=m.d_model,
                       d_mlp=m.d_mlp, block_size=m.block_size, vocab_size=m.vocab_size,
                       afrac=None, afrac_loctypes="", enable_bigram_table=False, sink=False)
    own = model.state_dict()
    sd = {"transformer.wte.weight": own["wte.weight"],
          "transformer.wpe.weight": torch.zeros(m.block_size, m.d_model),  # no positions
          "transformer.ln_f.weight": own["ln_f.weight"], "lm_head.weight": own["lm_head.weight"]}
    for k, v in own.items():
        if k.startswith("blocks."):
            sd["transformer.h." + k[len("blocks."):]] = v
    return write_release(folder, c, sd, tok), model


def test_an_imported_model_goes_through_prune_validate_view_and_eval(corpus_dir, tok, tmp_path,
                                                                     capsys):
    from .test_circuits import PLANTED
    from .test_circuits_cli import write_planted_task
    src, planted_model = planted_release(tok, tmp_path / "release")
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "import", "circuit-sparsity", str(src), "--out", str(run),
                             "--corpus", str(corpus_dir))
    assert code == 0, err
    model, _ = load(run)
    x = torch.randint(0, tok.get_vocab_size(), (2, 20))
    with torch.no_grad():
        assert (model(x) - planted_model(x)).abs().max().item() < 1e-4

    w = planted_model.planted_words
    task = tmp_path / "planted.toml"
    write_planted_task(task, w)
    circuit = tmp_path / "circuit.json"
    code, out, err = run_cli(capsys, "prune", str(run), "--task", str(task), "--out",
                             str(circuit), "--budget", "2", "--steps", "150")
    assert code == 0, err
    assert json.loads(circuit.read_text())["nodes"] == PLANTED
    code, out, err = run_cli(capsys, "validate", str(circuit), "--n", "48", "--draws", "6",
                             "--no-controls")
    assert code == 0, err
    assert "PASS sufficiency" in out
    code, out, err = run_cli(capsys, "view", str(circuit), "--out", str(tmp_path / "v.html"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", str(run), "--tasks", str(task))
    assert code == 0, err
    code, out, err = run_cli(capsys, "trace", str(run), "--circuit", str(circuit), "--prompt",
                             f" if for return{w['a']}")
    assert code == 0, err
    code, out, err = run_cli(capsys, "export", str(run), "--out", str(tmp_path / "half"))
    assert code == 0, err
    assert read_provenance(tmp_path / "half")["source"] == "circuit-sparsity"
    assert not (tmp_path / "half" / "trainer_state.json").exists()  # nothing trained here


# ----------------------------------------------------------------------------- GPT-2

def test_an_imported_gpt2_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from sparsecircuits.importers import import_hf_gpt2
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # the init leaves biases and norms trivial: make them count
        for name, p in hf.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    gpt2_tokenizer(300).save_pretrained(tmp_path / "hf")
    run = import_hf_gpt2(str(tmp_path / "hf"), tmp_path / "run", log=quiet)
    model, tok = load(run)
    idx = torch.randint(0, 300, (3, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf(idx).logits
        got = model(idx)
    assert (got - want).abs().max().item() < 1e-5
    assert read_provenance(run)["source"] == "hf-gpt2"
    with pytest.raises(UserError, match="cannot load the GPT-2"):
        import_hf_gpt2(str(tmp_path / "nowhere"), tmp_path / "run2", log=quiet)


def gpt2_tokenizer(vocab_size: int):
    """A small byte-level BPE in the GPT-2 layout, trained offline, as a transformers tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast
    bpe = ByteLevelBPETokenizer()
    text = [Path(__file__).read_text()] * 3
    bpe.train_from_iterator(text, vocab_size=vocab_size - 1, show_progress=False)
    bpe.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")


def test_the_shipped_models_keep_the_hash_their_circuits_are_bound_to():
    """Config fields added for imported models stay out of the weights hash at their defaults:
    the shipped study's circuits (and any saved before) still bind to their models."""
    from sparsecircuits.circuits import Circuit
    from sparsecircuits.circuits.ablation import model_hash
    from sparsecircuits.demo import shipped_runs
    runs = [Path(r) for r in shipped_runs()]
    study = runs[0].parent / "study" / "circuits"
    for run, name in zip(runs, ("sparse", "dense")):
        model, _ = load(run)
        for circuit in study.glob(f"*/{name}.json"):
            Circuit.load(circuit).check_model(model)
        assert model_hash(model) == json.loads(
            (study.parent / "compare.json").read_text())[name]["model_hash"]
