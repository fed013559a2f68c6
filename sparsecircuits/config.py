"""Configs as plain dataclasses, loaded strictly from JSON.

A run is described by one `RunConfig` with four sections: `model` (shapes and architecture),
`sparsity` (weight budget and its schedule), `train` (optimizer and loop), `data` (corpus).
Unknown keys are errors that name the key and the closest valid one: a typo in a config must
never silently train the wrong model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError, closest

# The eight activation kinds of every block that the paper calls nodes, in forward order.
SITE_KINDS = (
    "attn.in", "attn.q", "attn.k", "attn.v", "attn.out",
    "mlp.in", "mlp.neuron", "mlp.out",
)


NORMS = ("rms", "layer")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


@dataclass
class ModelConfig:
    n_layer: int = 2
    d_model: int = 128
    d_head: int = 16
    d_mlp: int = 512
    vocab_size: int = 2048
    block_size: int = 128          # context length in tokens
    afrac: float = 0.25            # AbsTopK keep fraction per token vector; 1.0 turns it off
    afrac_sites: list[str] = field(default_factory=lambda: list(SITE_KINDS))
    bigram: bool = True            # dense vocab x vocab table added to the logits
    learnable_bigram: bool = True  # False: a fixed (zero) buffer
    sink: bool = False             # per-head attention sink logit
    d_pos_emb: int = 0             # learned position channels appended to every sublayer input
    init_std: float = 0.02
    # Variants that imported models need; the defaults are the paper's model, unchanged.
    norm: str = "rms"              # "rms" (RMSNorm, gain only) or "layer" (LayerNorm)
    norm_bias: bool = False        # a LayerNorm bias beside its gain
    norm_eps: float = 1e-6
    activation: str = "gelu"       # MLP neurons: "gelu" (exact), "gelu_tanh" or "relu"
    added_pos: bool = False        # learned positions (block_size, d_model) added to the embedding
    pos_norm: bool = False         # position channels normed per sublayer (ln_p1, ln_p2) and read
    #                                by the sublayer's input site with the residual (see model.py)
    logits_bias: bool = False      # a learned bias on the logits

    # Fields added after models were first saved: at their defaults they stay out of the
    # weights hash, so circuits and bridges made before still bind to their models.
    LATER_FIELDS = ("norm", "norm_bias", "norm_eps", "activation", "added_pos", "pos_norm",
                    "logits_bias")

    def hashed(self) -> dict:
        """The fields that identify the architecture (see `LATER_FIELDS`)."""
        d = vars(self)
        return {k: v for k, v in d.items()
                if not (k in self.LATER_FIELDS and v == self.__dataclass_fields__[k].default)}

    @property
    def n_head(self) -> int:
        return self.d_model // self.d_head

    @property
    def d_attn(self) -> int:
        return self.n_head * self.d_head

    def validate(self) -> None:
        _positive(self, "n_layer", "d_model", "d_head", "d_mlp", "vocab_size", "block_size")
        if self.d_model % self.d_head:
            raise UserError(f"model.d_model={self.d_model} is not a multiple of "
                            f"model.d_head={self.d_head}; choose d_model = n_head * d_head.")
        if not 0 < self.afrac <= 1:
            raise UserError(f"model.afrac={self.afrac} must be in (0, 1]; use 1.0 for no "
                            "activation sparsity.")
        for s in self.afrac_sites:
            if s not in SITE_KINDS:
                raise UserError(f"model.afrac_sites has unknown site '{s}'{closest(s, SITE_KINDS)}; "
                                f"valid sites: {', '.join(SITE_KINDS)}.")
        if self.d_pos_emb < 0:
            raise UserError("model.d_pos_emb must be >= 0 (0 means no position channels).")
        for name, allowed in (("norm", NORMS), ("activation", ACTIVATIONS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"model.{name}='{getattr(self, name)}' is unknown; use one of "
                                f"{', '.join(allowed)}.")
        if self.norm_bias and self.norm != "layer":
            raise UserError("model.norm_bias needs model.norm='layer' (RMSNorm has no bias).")
        if self.norm_eps <= 0:
            raise UserError(f"model.norm_eps={self.norm_eps} must be positive.")
        if self.added_pos and self.d_pos_emb:
            raise UserError("model.added_pos and model.d_pos_emb exclude each other: positions "
                            "are either added to the embedding or appended as channels.")
        if self.pos_norm and not self.d_pos_emb:
            raise UserError("model.pos_norm needs position channels (model.d_pos_emb > 0).")


@dataclass
class SparsityConfig:
    weight_density: float = 1.0    # target fraction of nonzeros in every weight matrix
    other_density: float = 1.0     # target fraction for embeddings, unembedding and biases
    min_per_neuron: int = 4        # each neuron / q-k-v channel keeps at least this many weights
    anneal_start: float = 0.01     # fraction of training where the L0 anneal starts ...
    anneal_end: float = 0.5        # ... and where it reaches the target
    anneal: str = "linear"         # "linear" or "exponential" (geometric) in density
    # Every how many steps the dense weight gradient may bring pruned weights back: 1 is the
    # paper's rule (every step); N > 1 lets only the kept weights learn in between, what a
    # step whose cost follows the nonzeros computes (docs/RESULTS.md, "A sparse execution path").
    regrow_every: int = 1

    @property
    def is_dense(self) -> bool:
        return self.weight_density >= 1 and self.other_density >= 1

    def validate(self) -> None:
        for name in ("weight_density", "other_density"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise UserError(f"sparsity.{name}={v} must be in (0, 1]; 1.0 means dense.")
        if not 0 <= self.anneal_start <= self.anneal_end <= 1:
            raise UserError("sparsity.anneal_start and anneal_end must satisfy "
                            f"0 <= start <= end <= 1 (got {self.anneal_start}, {self.anneal_end}).")
        if self.anneal not in ("linear", "exponential"):
            raise UserError(f"sparsity.anneal='{self.anneal}' is unknown; use 'linear' or "
                            "'exponential'.")
        if self.min_per_neuron < 0:
            raise UserError("sparsity.min_per_neuron must be >= 0.")
        if self.regrow_every < 1:
            raise UserError(f"sparsity.regrow_every={self.regrow_every} must be 1 (every step, "
                            "the paper's rule) or more.")


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 16           # sequences per step (global, across all processes)
    max_steps: int = 300
    lr: float = 1e-2               # peak LR at the *target* density (sharkfin convention)
    warmup_frac: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 0.1
    weight_decay: float = 0.1      # decoupled, on matrices except the bigram table
    grad_rms_norm: bool = True     # divide all gradients by their global RMS
    sharkfin: bool = True          # multiply LR by sqrt(target density / current density)
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 100
    device: str = "auto"           # "auto", "cpu", "cuda", "cuda:1", ...
    autocast: str = "none"         # "none" or "bf16" (CUDA only)
    # The training step: "dense" computes over the full weight matrices with their zeros;
    # "sparse", between regrowth steps after the anneal, computes on the kept weights alone
    # (sparsecircuits/pattern.py), the same step to float rounding (needs regrow_every > 1).
    path: str = "dense"

    def validate(self) -> None:
        _positive(self, "batch_size", "max_steps", "log_every", "eval_every", "eval_batches",
                  "checkpoint_every")
        if self.lr <= 0:
            raise UserError(f"train.lr={self.lr} must be positive.")
        if not 0 <= self.warmup_frac < 1:
            raise UserError(f"train.warmup_frac={self.warmup_frac} must be in [0, 1).")
        if self.autocast not in ("none", "bf16"):
            raise UserError(f"train.autocast='{self.autocast}' is unknown; use 'none' or 'bf16'.")
        if self.path not in ("dense", "sparse"):
            raise UserError(f"train.path='{self.path}' is unknown; use 'dense' or 'sparse'.")


@dataclass
class DataConfig:
    corpus: str | None = None      # a built corpus folder; None: the default (standard library)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> RunConfig:
        self.model.validate()
        self.sparsity.validate()
        self.train.validate()
        if self.train.path == "sparse" and (self.sparsity.regrow_every == 1
                                            or self.sparsity.is_dense):
            raise UserError("train.path='sparse' trains the kept weights between regrowth "
                            "steps; set sparsity.regrow_every above 1 on a sparse model, or use "
                            "train.path='dense'.")
        if self.train.path == "sparse" and self.train.autocast != "none":
            raise UserError("train.path='sparse' runs in float32; set train.autocast='none'.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {"model": ModelConfig, "sparsity": SparsityConfig, "train": TrainConfig,
            "data": DataConfig}


def config_from_dict(d: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig from nested dicts, rejecting unknown sections, keys and wrong types."""
    if not isinstance(d, dict):
        raise UserError(f"{where} must be a JSON object with sections {', '.join(SECTIONS)}.")
    parts = {}
    for section, value in d.items():
        if section not in SECTIONS:
            raise UserError(f"{where}: unknown section '{section}'{closest(section, SECTIONS)}; "
                            f"valid sections: {', '.join(SECTIONS)}.")
        parts[section] = _section_from_dict(SECTIONS[section], value, f"{where}: {section}")
    return RunConfig(**parts).validate()


def _section_from_dict(cls, d, where):
    if not isinstance(d, dict):
        raise UserError(f"{where} must be a JSON object.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    for key, value in d.items():
        if key not in fields:
            raise UserError(f"{where}: unknown key '{key}'{closest(key, fields)}.")
        expected = getattr(defaults, key)
        if not _type_ok(value, expected):
            raise UserError(f"{where}.{key}={value!r} has the wrong type; expected "
                            f"{type(expected).__name__ if expected is not None else 'a string'}.")
    return cls(**d)


def _type_ok(value, default) -> bool:
    if default is None:
        return value is None or isinstance(value, str)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list)
    return isinstance(value, type(default))


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass a JSON file or use --preset.")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid JSON ({e}); fix the file.") from None
    return config_from_dict(d, where=str(path))


def _positive(obj, *names):
    for n in names:
        if getattr(obj, n) <= 0:
            raise UserError(f"{n}={getattr(obj, n)} must be positive.")


# ----------------------------------------------------------------------------- presets

def _preset(model: dict, sparsity: dict, train: dict) -> RunConfig:
    return RunConfig(ModelConfig(**model), SparsityConfig(**sparsity), TrainConfig(**train))


_TINY = dict(n_layer=2, d_model=64, d_head=16, d_mlp=256, block_size=64)
_SMALL = dict(n_layer=4, d_model=128, d_head=16, d_mlp=512, block_size=128)

PRESETS = {
    # A smoke run: about a minute on a 2-core CPU.
    "tiny-sparse": lambda: _preset(
        _TINY, dict(weight_density=1 / 8, other_density=1 / 4),
        dict(batch_size=16, max_steps=400, lr=1e-2, eval_every=100, checkpoint_every=200)),
    "tiny-dense": lambda: _preset(
        {**_TINY, "afrac": 1.0}, {},
        dict(batch_size=16, max_steps=400, lr=3e-3, eval_every=100, checkpoint_every=200)),
    # A real CPU run: tens of minutes.
    "small-sparse": lambda: _preset(
        _SMALL, dict(weight_density=1 / 16, other_density=1 / 4),
        dict(batch_size=32, max_steps=2500, lr=1e-2, eval_every=250, checkpoint_every=500)),
    "small-dense": lambda: _preset(
        {**_SMALL, "afrac": 1.0}, {},
        dict(batch_size=32, max_steps=2500, lr=3e-3, eval_every=250, checkpoint_every=500)),
    # The paper's 1x model (8 layers, d_model 256, 16 heads of 16, d_mlp 1024) for GPU users:
    # weight density 1/8 (L0 ~ 0.9M of ~7.4M), AbsTopK 1/4, batch 512 x 256 tokens.
    "paper-1x": lambda: _preset(
        dict(n_layer=8, d_model=256, d_head=16, d_mlp=1024, block_size=256),
        dict(weight_density=1 / 8, other_density=1 / 8),
        dict(batch_size=512, max_steps=20000, lr=1.28e-2, eval_every=500, eval_batches=16,
             checkpoint_every=1000, log_every=50, autocast="bf16")),
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'{closest(name, PRESETS)}; "
                        f"presets: {', '.join(PRESETS)}.")
    return PRESETS[name]().validate()
