"""Models trained elsewhere, as run folders every command accepts.

Two sources:

- the circuit-sparsity release (`beeg_config.json` + `final_model.pt`, tokenizer `vocab.bpe` +
  `encoder.json`): the paper's own weight-sparse and dense models;
- a Hugging Face `transformers` GPT-2 (a hub name or a saved folder).

An import is lossless or it fails: every source tensor is mapped onto the model (or is the tied
copy of one that is), every model tensor is filled from the source (or is a zero bias the
source declares absent), every config key is mapped, known to have no effect on the forward
pass, or refused by name. What was mapped and what was set aside is written to the run's
`provenance.json`; an imported run has no `trainer_state.json` (nothing was trained here).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import MODEL_FILE, sparsify, staged_dir, versions
from .corpus import Corpus, sha256_file
from .config import SITE_KINDS, ModelConfig, RunConfig, SparsityConfig
from .errors import UserError
from .model import GPT

PROVENANCE_FILE = "provenance.json"


# ---------------------------------------------------------------------------- circuit-sparsity

# afrac_loctypes of the release -> node sites here
CS_LOCTYPES = {k.replace(".", "_"): k for k in SITE_KINDS}
CS_RESIDUAL_LOCTYPES = ("resid_post_attn", "resid_post_mlp")
ANY = None  # an inert key's every value leaves the forward pass alone
# Keys of the release's config that do not change the forward pass of a trained model, each
# with the values that keep it so and the reason, read from the release's own code (its
# `GPTConfig`, `load_model` and training settings). A value outside the set is refused by name.
CS_INERT = {
    "dropout": (ANY, "dropout is off when a model is evaluated"),
    "dropout_cat_pos_emb": (ANY, "dropout on the position channels, off when evaluated"),
    "flash": (ANY, "the attention kernel; the release's own loader overrides it"),
    "grad_checkpointing": (ANY, "recomputes activations in training to save memory"),
    "debug_nans": (ANY, "assertions only"),
    "enable_sparse_kernels": (ANY, "a kernel choice; the release's layers compute the same "
                                   "product either way"),
    "sparse_matmul_impl": (ANY, "a kernel choice of the training code"),
    "afrac_approx": (ANY, "approximate AbsTopK in training; the release's forward always "
                          "selects exactly"),
    "debug_exact_topk": (ANY, "a training-time check of the top-k selection"),
    "ignore_dw_grad": (ANY, "a training-only switch on the weight gradient"),
    "pfrac": (ANY, "the training's nonzero budget; the weights hold what it produced"),
    "expansion_factor": (ANY, "the training's width multiplier; d_model, n_head and d_mlp give "
                              "the widths"),
    "expansion_factor_mlp": (ANY, "the training's MLP width multiplier; d_mlp gives the width"),
    "tokenizer_name": (ANY, "names the tokenizer, whose files come with --tokenizer-dir"),
    "sinusoidal_cat_pos_emb": (ANY, "an init of the position channels (then frozen); their "
                                    "values are in the weights file like any other"),
    "n_embd": ((None,), "null means unset: d_model gives the width"),
    "n_mlp": ((None,), "null means unset: d_mlp gives the width"),
    "rtopk": ((False,), "off"),
    "bigram_table_rank": ((None,), "null: the full vocab x vocab table"),
}
# What a value outside an inert key's set would need, for the refusal.
CS_REFUSED = {
    "rtopk": "a top-k variant the release's forward pass does not describe",
    "bigram_table_rank": "a low-rank bigram table, which the model class does not have",
}
# The release config class's defaults, which a key absent from a file takes (d_head: d_model
# // n_head, d_mlp: 4 * d_model).
CS_DEFAULTS = dict(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, d_head=None,
                   d_model=768, d_mlp=None, bias=True, ln_bias=True, rms_norm=False,
                   residual_activation_type="identity", activation_type="gelu", afrac=None,
                   afrac_loctypes="attn_in,attn_out,mlp_in,mlp_out", tied_unembed=True,
                   enable_bigram_table=False, learnable_bigram_table=False, d_pos_emb=None,
                   sink=False)


def _cs_model_config(raw: dict, path: Path, inert: set[str]) -> tuple[ModelConfig, dict, dict]:
    """The model config a `beeg_config.json` describes, with the keys set aside as inert and
    the release's flags the tensor mapping needs."""
    raw = dict(raw)
    for old, new in (("n_embd", "d_model"), ("n_mlp", "d_mlp")):
        if raw.get(old) is not None:  # an older name of the key; null means unset
            if raw.get(new) is not None and raw[new] != raw[old]:
                raise UserError(f"{path} gives both {old}={raw[old]} and {new}={raw[new]}; "
                                "the file contradicts itself, so this model cannot be imported.")
            raw[new] = raw.pop(old)
    mapped = sorted(set(inert) & (set(CS_DEFAULTS) | set(CS_INERT)))
    if mapped:
        raise UserError(f"--inert {mapped[0]}: the importer knows that key already (it maps it "
                        "or checks its value); --inert is only for keys it does not know.")
    set_aside = {}
    for key, (allowed, _) in CS_INERT.items():
        if key not in raw:
            continue
        if allowed is not ANY and raw[key] not in allowed:
            need = CS_REFUSED.get(key, "a feature the model class does not have")
            raise UserError(f"{path}: {key}={json.dumps(raw[key])} asks for {need}; this model "
                            "cannot be imported.")
        set_aside[key] = raw[key]
    set_aside.update({k: raw[k] for k in raw if k in inert})
    unknown = sorted(k for k in raw if k not in CS_DEFAULTS and k not in set_aside)
    if unknown:
        raise UserError(f"{path} has the key '{unknown[0]}', which the importer does not know; "
                        f"if it has no effect on the forward pass, pass --inert {unknown[0]} "
                        "(it is then listed in the run's provenance), otherwise this model "
                        "cannot be imported.")
    c = {**CS_DEFAULTS, **{k: v for k, v in raw.items() if k not in set_aside}}
    c["d_head"] = c["d_head"] or c["d_model"] // c["n_head"]
    c["d_mlp"] = c["d_mlp"] or 4 * c["d_model"]
    if c["residual_activation_type"] != "identity":
        raise UserError(f"{path}: residual_activation_type='{c['residual_activation_type']}' "
                        "(an activation on the residual stream) is not in the model class; "
                        "this model cannot be imported.")
    if c["activation_type"] not in ("gelu", "relu"):
        raise UserError(f"{path}: activation_type='{c['activation_type']}' is unknown; the "
                        "release has 'gelu' and 'relu'.")
    if c["n_head"] * c["d_head"] != c["d_model"]:
        raise UserError(f"{path}: n_head * d_head = {c['n_head'] * c['d_head']} differs from "
                        f"d_model = {c['d_model']}; the model class needs them equal, so this "
                        "model cannot be imported.")
    locs = [s for s in str(c["afrac_loctypes"] or "").split(",") if s.strip()]
    sites = []
    for loc in (s.strip() for s in locs):
        if loc in CS_RESIDUAL_LOCTYPES:
            if c["afrac"] is not None:
                raise UserError(f"{path}: afrac_loctypes has '{loc}' (AbsTopK on the residual "
                                "stream), which is not in the model class; this model cannot "
                                "be imported.")
            continue
        if loc not in CS_LOCTYPES:
            raise UserError(f"{path}: afrac_loctypes has the unknown location '{loc}'; known: "
                            f"{', '.join(list(CS_LOCTYPES) + list(CS_RESIDUAL_LOCTYPES))}.")
        sites.append(CS_LOCTYPES[loc])
    afrac = 1.0 if c["afrac"] is None or not sites else float(c["afrac"])
    rms = bool(c["rms_norm"])
    d_pos = int(c["d_pos_emb"] or 0)
    cfg = ModelConfig(
        n_layer=int(c["n_layer"]), d_model=int(c["d_model"]), d_head=int(c["d_head"]),
        d_mlp=int(c["d_mlp"]), vocab_size=int(c["vocab_size"]), block_size=int(c["block_size"]),
        afrac=afrac, afrac_sites=sites, bigram=bool(c["enable_bigram_table"]),
        learnable_bigram=bool(c["learnable_bigram_table"]), sink=bool(c["sink"]),
        d_pos_emb=d_pos, norm="rms" if rms else "layer", norm_bias=not rms and bool(c["ln_bias"]),
        norm_eps=torch.finfo(torch.float32).eps if rms else 1e-5,
        activation="gelu" if c["activation_type"] == "gelu" else "relu",
        added_pos=not d_pos, pos_norm=bool(d_pos))
    try:
        cfg.validate()
    except UserError as e:
        raise UserError(f"{path} describes a model this class cannot hold: {e}") from None
    if rms and c["ln_bias"]:
        set_aside["ln_bias"] = c["ln_bias"]  # RMSNorm has no bias: the flag does nothing
    flags = dict(bias=bool(c["bias"]), tied=bool(c["tied_unembed"]))
    return cfg, set_aside, flags


def _cs_names(cfg: ModelConfig, flags: dict) -> dict[str, str]:
    """Release tensor name -> model tensor name, for every tensor the release may hold."""
    names = {"transformer.wte.weight": "wte.weight", "transformer.wpe.weight": "wpe.weight",
             "transformer.ln_f.weight": "ln_f.weight", "lm_head.weight": "lm_head.weight",
             "final_logits_bias": "logits_bias", "bigram_table": "bigram"}
    if cfg.norm_bias:
        names["transformer.ln_f.bias"] = "ln_f.bias"
    for i in range(cfg.n_layer):
        src, dst = f"transformer.h.{i}.", f"blocks.{i}."
        norms = ["ln_1", "ln_2"] + (["ln_p1", "ln_p2"] if cfg.pos_norm else [])
        for n in norms:
            names[f"{src}{n}.weight"] = f"{dst}{n}.weight"
            if cfg.norm_bias:
                names[f"{src}{n}.bias"] = f"{dst}{n}.bias"
        for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            names[f"{src}{lin}.weight"] = f"{dst}{lin}.weight"
            if flags["bias"]:
                names[f"{src}{lin}.bias"] = f"{dst}{lin}.bias"
        if cfg.sink:
            names[f"{src}attn.attn_imp.sink_logit"] = f"{dst}attn.sink"
    return names


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path} is missing; a circuit-sparsity model folder holds "
                        "beeg_config.json and final_model.pt.")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, foreign objects: all say the same
        raise UserError(f"{path} cannot be read as a torch state dict ({type(e).__name__}); it "
                        "is truncated or not a weights file: download it again.") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path} does not hold a state dict of tensors; pass the release's "
                        "final_model.pt.")
    return sd


def import_circuit_sparsity(src: str | Path, out: str | Path, *,
                            tokenizer_dir: str | Path | None = None, inert=(),
                            corpus: str | Path | None = None, log=print) -> Path:
    """Import a circuit-sparsity release folder as the run folder `out`."""
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src} is not a folder; pass the folder holding beeg_config.json and "
                        "final_model.pt.")
    cfg_path = src / "beeg_config.json"
    raw = _read_json(cfg_path, "the release's model config")
    cfg, set_aside, flags = _cs_model_config(raw, cfg_path, set(inert))
    tok = tokenizer_from_gpt2_files(Path(tokenizer_dir) if tokenizer_dir else src,
                                    cfg.vocab_size)
    weights_path = src / "final_model.pt"
    sd = _read_state_dict(weights_path)
    names = _cs_names(cfg, flags)
    if flags["tied"] and "lm_head.weight" not in sd and "transformer.wte.weight" in sd:
        sd = dict(sd, **{"lm_head.weight": sd["transformer.wte.weight"]})
    for key in sd:
        if key not in names:
            raise UserError(f"{weights_path} holds the tensor '{key}', which {cfg_path.name} "
                            "gives no place in the model; the two files do not belong together, "
                            "or the model has a feature the importer does not know.")
    tensors, notes = {}, []
    cfg.logits_bias = "final_logits_bias" in sd
    if not cfg.logits_bias:
        del names["final_logits_bias"]
        notes.append("final_logits_bias absent: no logits bias")
    own = _shapes(cfg)
    for key, target in names.items():
        if target not in own:  # e.g. bigram_table in a file whose config turns the table off
            if key in sd:
                raise UserError(f"{weights_path} holds '{key}' but {cfg_path.name} turns its "
                                "feature off; the two files do not belong together.")
            continue
        if key not in sd:
            raise UserError(f"{weights_path} lacks the tensor '{key}' that {cfg_path.name} "
                            "implies; the file is incomplete or from another model.")
        tensors[target] = _checked(sd[key], own[target], key, weights_path)
    if not flags["bias"]:
        for target in own:
            if target.endswith(".bias") and ".ln_" not in target and target not in tensors:
                tensors[target] = torch.zeros(own[target])
        notes.append("bias=false: the linear layers' biases are zero")
    if flags["tied"]:
        notes.append("tied_unembed: lm_head holds a copy of the token embedding")
    _fill_check(tensors, own, weights_path)
    provenance = dict(
        source="circuit-sparsity", folder=str(src.resolve()),
        files={f: sha256_file(src / f) for f in ("beeg_config.json", "final_model.pt")},
        config=raw, inert_keys=set_aside,
        inert_reasons={k: CS_INERT[k][1] if k in CS_INERT else
                       "RMSNorm has no bias" if k == "ln_bias" else "set aside by --inert"
                       for k in set_aside},
        tensors=names, notes=notes)
    return _write_run(out, cfg, tensors, tok, provenance, corpus, log)


# ---------------------------------------------------------------------------- tokenizer

def tokenizer_from_gpt2_files(folder: Path, vocab_size: int):
    """A GPT-2-style byte-level BPE (`vocab.bpe` merges, `encoder.json` ids) with the paper's
    pre-tokenizer, as a `tokenizers` object whose last id is the end-of-text special."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    from .tokenizer import EOT, PRETOKENIZER_REGEX
    bpe, enc = folder / "vocab.bpe", folder / "encoder.json"
    if not bpe.is_file() or not enc.is_file():
        raise UserError(f"no tokenizer in {folder} (vocab.bpe and encoder.json); pass "
                        "--tokenizer-dir with the release's tinypython_2k tokenizer files.")
    vocab = _read_json(enc, "the tokenizer's encoder")
    try:
        lines = bpe.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{bpe} is not UTF-8 text; pass the release's vocab.bpe.") from None
    merges = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise UserError(f"{bpe}:{n} is not a merge of two tokens; pass the release's "
                            "vocab.bpe.")
        merges.append((parts[0], parts[1]))
    regular = {t: i for t, i in vocab.items() if t != EOT}
    try:
        tok = Tokenizer(models.BPE(vocab=regular, merges=merges))
    except Exception as e:
        raise UserError(f"{bpe} and {enc} do not make a BPE together ({e}).") from None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZER_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    eot = tok.token_to_id(EOT)
    if tok.get_vocab_size() != vocab_size or eot != vocab_size - 1:
        raise UserError(f"the tokenizer in {folder} has {tok.get_vocab_size()} tokens with "
                        f"{EOT} at {eot}, but the model has vocab_size={vocab_size} with it last; "
                        "pass --tokenizer-dir with the model's own tokenizer.")
    return tok


# ---------------------------------------------------------------------------- Hugging Face GPT-2

def import_hf_gpt2(name: str, out: str | Path, *, corpus: str | Path | None = None,
                   log=print) -> Path:
    """Import a `transformers` GPT-2 (a hub name, or a folder saved by `save_pretrained`)."""
    try:
        from transformers import AutoTokenizer, GPT2LMHeadModel
    except ImportError:
        raise UserError("importing GPT-2 needs the transformers package: pip install "
                        "'sparsecircuits[hf]'.") from None
    try:
        hf = GPT2LMHeadModel.from_pretrained(name)
        hf_tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load the GPT-2 '{name}' ({first}); pass a folder saved with "
                        "save_pretrained or a hub name reachable from here.") from None
    return gpt2_to_run(hf, hf_tok, out, source=name, corpus=corpus, log=log)


def gpt2_to_run(hf, hf_tok, out: str | Path, *, source: str, corpus=None, log=print) -> Path:
    """Write a loaded `GPT2LMHeadModel` and its tokenizer as the run folder `out`."""
    from tokenizers import Tokenizer

    from .tokenizer import EOT
    c = hf.config
    act = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
           "relu": "relu"}.get(c.activation_function)
    if act is None:
        raise UserError(f"{source}: activation_function='{c.activation_function}' is not in the "
                        "model class; this model cannot be imported.")
    refused = [(k, v) for k, v in (("scale_attn_by_inverse_layer_idx", True),
                                   ("reorder_and_upcast_attn", True), ("add_cross_attention", True))
               if getattr(c, k, False) == v]
    if refused or not getattr(c, "scale_attn_weights", True):
        key = refused[0][0] if refused else "scale_attn_weights"
        raise UserError(f"{source}: {key} changes attention in a way the model class does not "
                        "have; this model cannot be imported.")
    n_inner = c.n_inner or 4 * c.n_embd
    cfg = ModelConfig(n_layer=c.n_layer, d_model=c.n_embd, d_head=c.n_embd // c.n_head,
                      d_mlp=n_inner, vocab_size=c.vocab_size, block_size=c.n_positions,
                      afrac=1.0, bigram=False, norm="layer", norm_bias=True,
                      norm_eps=c.layer_norm_epsilon, activation=act, added_pos=True)
    if c.n_embd % c.n_head:
        raise UserError(f"{source}: n_embd={c.n_embd} is not a multiple of n_head={c.n_head}.")
    sd = {k: v for k, v in hf.state_dict().items()
          if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # causal-mask buffers
    names = {"transformer.wte.weight": "wte.weight", "transformer.wpe.weight": "wpe.weight",
             "transformer.ln_f.weight": "ln_f.weight", "transformer.ln_f.bias": "ln_f.bias",
             "lm_head.weight": "lm_head.weight"}
    conv1d = set()  # Conv1D weights are stored (in, out): transposed here
    for i in range(c.n_layer):
        src, dst = f"transformer.h.{i}.", f"blocks.{i}."
        for n in ("ln_1", "ln_2"):
            for p in ("weight", "bias"):
                names[f"{src}{n}.{p}"] = f"{dst}{n}.{p}"
        for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            names[f"{src}{lin}.weight"] = f"{dst}{lin}.weight"
            names[f"{src}{lin}.bias"] = f"{dst}{lin}.bias"
            conv1d.add(f"{src}{lin}.weight")
    own = _shapes(cfg)
    tensors = {}
    for key, t in sd.items():
        if key not in names:
            raise UserError(f"{source} holds the tensor '{key}', which has no place in the "
                            "model class; this model cannot be imported.")
        t = t.detach().float()
        tensors[names[key]] = _checked(t.t() if key in conv1d else t, own[names[key]],
                                       key, source)
    _fill_check(tensors, own, source)
    backend = getattr(hf_tok, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"{source} has only a slow tokenizer; save it with a tokenizer.json "
                        "(a fast tokenizer) and import the folder.")
    tok = Tokenizer.from_str(backend.to_str())
    if tok.token_to_id(EOT) is None:
        raise UserError(f"{source}'s tokenizer has no {EOT} token; this model cannot be "
                        "imported.")
    if tok.get_vocab_size() > cfg.vocab_size:
        raise UserError(f"{source}'s tokenizer has {tok.get_vocab_size()} tokens, more than the "
                        f"model's {cfg.vocab_size}; pass a matching tokenizer.")
    tied = hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    provenance = dict(source="hf-gpt2", name=source, config=c.to_dict(), tensors=names,
                      transposed=sorted(conv1d), inert_keys={},
                      notes=(["tied embeddings: lm_head holds a copy of the token embedding"]
                             if tied else []) + ["causal-mask buffers (.attn.bias) not kept"])
    return _write_run(out, cfg, tensors, tok, provenance, corpus, log)


# ---------------------------------------------------------------------------- shared

def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path} is missing ({what}).")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON ({what}); download it again.") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a JSON object ({what}).")
    return d


def _checked(t: torch.Tensor, shape, key: str, where) -> torch.Tensor:
    if tuple(t.shape) != tuple(shape):
        raise UserError(f"{where}: the tensor '{key}' has shape {tuple(t.shape)}, but the config "
                        f"implies {tuple(shape)}; the weights and the config do not belong "
                        "together.")
    t = t.detach().to(torch.float32, copy=True).contiguous()  # never shared with another
    if not bool(torch.isfinite(t).all()):
        raise UserError(f"{where}: the tensor '{key}' has non-finite values; the file is "
                        "damaged.")
    return t


def _shapes(cfg: ModelConfig) -> dict[str, torch.Size]:
    """The model's tensor names and shapes, without allocating it (wide models are large)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in GPT(cfg).state_dict().items()}


def _fill_check(tensors: dict, own: dict, where) -> None:
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise UserError(f"{where} gives no value for the model's '{missing[0]}'; the model "
                        "cannot be imported losslessly.")


def _density(tensors: dict, names) -> float:
    ts = [tensors[n] for n in names]
    total = sum(t.numel() for t in ts)
    return sum(int((t != 0).sum()) for t in ts) / total if total else 1.0


def _write_run(out, cfg: ModelConfig, tensors: dict, tok, provenance: dict, corpus, log) -> Path:
    """The run folder: config, weights, tokenizer and provenance, written whole or not at all.
    `corpus` (a built corpus with the model's tokenizer) becomes the run's corpus."""
    with torch.device("meta"):
        model = GPT(cfg)
    model.load_state_dict(tensors, assign=True)  # the tensors themselves: no second copy
    sparse = model.sparse_tensors()
    matrices = [s.name for s in sparse if s.group == "matrix"]
    others = [s.name for s in sparse if s.group != "matrix"]
    # The measured densities (descriptive: an imported model is not trained here).
    run = RunConfig(model=cfg, sparsity=SparsityConfig(
        weight_density=max(_density(tensors, matrices), 1e-9),
        other_density=max(_density(tensors, others), 1e-9)))
    # `eval` reads about 32k val tokens whatever the context length (1024 for GPT-2)
    run.train.eval_batches = max(1, 32768 // (run.train.batch_size * cfg.block_size))
    run.data.corpus = str(Path(corpus).resolve()) if corpus else None
    run.validate()
    provenance = dict(provenance, imported_by=versions())
    with staged_dir(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(run.to_dict(), indent=1))
        tok.save(str(tmp / "tokenizer.json"))
        if corpus:
            Corpus(corpus).check_tokenizer(tmp / "tokenizer.json")
        meta = dict(format="sparsecircuits", step="0", config=json.dumps(run.to_dict()),
                    versions=json.dumps(versions()), imported_from=provenance["source"])
        weights, shapes = sparsify({k: v.contiguous() for k, v in model.state_dict().items()},
                                   [s.name for s in sparse])  # a sparse model: its nonzeros
        if shapes:
            meta["sparse"] = json.dumps(shapes)
        save_file(weights, str(tmp / MODEL_FILE), metadata=meta)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1, default=str))
    nz = sum(int((p != 0).sum()) for p in model.parameters())
    log(f"imported {provenance['source']} model into {out}: {cfg.n_layer} layers, d_model "
        f"{cfg.d_model}, {nz:,} nonzero of {model.num_params():,} parameters, matrix density "
        f"{run.sparsity.weight_density:.4g}")
    return out


def read_provenance(run_dir: str | Path) -> dict | None:
    """An imported run's provenance (None for a run trained here), checked to be what `import`
    wrote: a JSON object naming its source."""
    path = Path(run_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        prov = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        prov = None
    if not (isinstance(prov, dict) and isinstance(prov.get("source"), str)):
        raise UserError(f"{path} is damaged (it should be the JSON object `import` wrote, with "
                        "its source); restore it or import the model again.")
    return prov
