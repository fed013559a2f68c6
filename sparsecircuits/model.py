"""The GPT of the paper, in one readable file, with named node sites.

Every activation the paper calls a node passes through `site(name, x)`, which applies the
site's AbsTopK and then the model's hooks (none by default). Recording, ablation, masks,
patching and steering are all hooks; there is no other forward pass.

    blocks.{l}.attn.in    post-RMSNorm read of the residual stream      (B, T, d_model)
    blocks.{l}.attn.q/k/v query / key / value channels, head-major      (B, T, n_head*d_head)
    blocks.{l}.attn.out   attention's write to the residual stream      (B, T, d_model)
    blocks.{l}.mlp.in     post-RMSNorm read of the residual stream      (B, T, d_model)
    blocks.{l}.mlp.neuron post-GELU neurons                             (B, T, d_mlp)
    blocks.{l}.mlp.out    the MLP's write to the residual stream        (B, T, d_model)

Channel c of head h is index h*d_head + c of q/k/v, the column order of `attn.c_proj`.
With `pos_norm` (the released format's position channels) the input sites `attn.in` and
`mlp.in` read d_model + d_pos_emb channels: the normed residual, then the normed positions.
The norms are RMSNorm unless the config asks for LayerNorm (imported models).

The residual stream itself is read (and may be replaced) before each sublayer's RMSNorm, at
the residual locations `blocks.{l}.resid_pre` (before the attention) and `blocks.{l}.resid_mid`
(before the MLP): bridges to another model live there, and a pass may start at one of them.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import SITE_KINDS, ModelConfig
from .pattern import PatternLinear
from .sparsity import SparseTensor, abstopk

Hook = Callable[[str, torch.Tensor], torch.Tensor]


class Norm(nn.Module):
    """RMSNorm (gain only; the paper's) or LayerNorm (gain, optional bias; imported models).

    `scale_fn` rewrites the per-token scale (1/rms, or 1/std for LayerNorm) before it is used:
    the norm hooks replay a clean pass's scales through it."""

    def __init__(self, d: int, kind: str = "rms", eps: float = 1e-6, bias: bool = False):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x, scale_fn=None):
        shape = (x.shape[-1],)
        if scale_fn is None:
            if self.kind == "rms":
                return F.rms_norm(x, shape, self.weight, self.eps)
            return F.layer_norm(x, shape, self.weight, self.bias, self.eps)
        if self.kind == "layer":
            x = x - x.mean(-1, keepdim=True)
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        y = x * scale_fn(scale) * self.weight
        return y if self.bias is None else y + self.bias


def make_norm(cfg: ModelConfig, d: int | None = None) -> Norm:
    return Norm(cfg.d_model if d is None else d, cfg.norm, cfg.norm_eps, cfg.norm_bias)


class Linear(nn.Linear):
    """`nn.Linear` with a second way to run: through its weight's nonzeros (a CSR copy), for
    frozen weight-sparse models (`GPT.set_path`). The sparse path is taken only while the
    weight needs no gradient or none is being recorded, and the CSR copy follows the weight:
    it is rebuilt whenever the weight changes in place (training, loading). While a training
    step on the kept weights holds the weight as values on its pattern (`pattern.KeptWeights`),
    the layer runs on those values, and the gradient goes to them."""

    path = "dense"

    def forward(self, x):
        kept = self.__dict__.get("_kept")
        if kept is not None:
            y = PatternLinear.apply(x.reshape(-1, x.shape[-1]), kept.values, kept)
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*x.shape[:-1], y.shape[-1])
        if self.path == "dense" or (self.weight.requires_grad and torch.is_grad_enabled()):
            return F.linear(x, self.weight, self.bias)
        csr = self.__dict__.get("_csr")
        if csr is None or csr[0] != self.weight._version or csr[1].device != x.device:
            with warnings.catch_warnings():  # torch calls its CSR support beta
                warnings.simplefilter("ignore", UserWarning)
                csr = self.__dict__["_csr"] = (self.weight._version,
                                               self.weight.detach().to_sparse_csr())
        y = torch.sparse.mm(csr[1], x.reshape(-1, x.shape[-1]).T).T  # (tokens, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def __getstate__(self):  # a spawned worker rebuilds the copy on first use
        state = dict(self.__dict__)
        state.pop("_csr", None)
        state.pop("_kept", None)
        return state


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.d_head, self.d_attn = cfg.n_head, cfg.d_head, cfg.d_attn
        self.c_attn = Linear(cfg.d_model + cfg.d_pos_emb, 3 * cfg.d_attn)
        self.c_proj = Linear(cfg.d_attn, cfg.d_model)
        # Sink logit per head: a virtual always-visible key with zero value.
        self.sink = nn.Parameter(torch.zeros(cfg.n_head)) if cfg.sink else None

    def forward(self, h, site):
        B, T, _ = h.shape
        q, k, v = self.c_attn(h).split(self.d_attn, dim=-1)
        q, k, v = site("q", q), site("k", k), site("v", v)
        q, k, v = (t.view(B, T, self.n_head, self.d_head).transpose(1, 2) for t in (q, k, v))
        if self.sink is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)
            causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
            s = s.masked_fill(~causal, float("-inf"))
            sink = self.sink.view(1, -1, 1, 1).expand(B, -1, T, 1).to(s.dtype)
            # softmax over [sink, keys], then drop the sink column: weights may sum to < 1.
            a = torch.cat([sink, s], dim=-1).softmax(dim=-1)[..., 1:]
            y = a @ v
        y = y.transpose(1, 2).reshape(B, T, self.d_attn)
        return site("out", self.c_proj(y))


ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
               "relu": F.relu}


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = Linear(cfg.d_model + cfg.d_pos_emb, cfg.d_mlp)
        self.c_proj = Linear(cfg.d_mlp, cfg.d_model)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, h, site):
        return site("out", self.c_proj(site("neuron", self.act(self.c_fc(h)))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1, self.attn = make_norm(cfg), Attention(cfg)
        self.ln_2, self.mlp = make_norm(cfg), MLP(cfg)
        if cfg.pos_norm:
            self.ln_p1, self.ln_p2 = make_norm(cfg, cfg.d_pos_emb), make_norm(cfg, cfg.d_pos_emb)
        self.pos_norm = cfg.pos_norm

    def sublayer(self, which: str, x, site, pos, norm):
        """The write of sublayer `which` ("attn" or "mlp") to the residual stream `x`.

        Position channels `pos` (if any) are appended to the normed residual: after its input
        site (the paper's model), or, with `pos_norm`, normed by their own gain and then read by
        the input site together with the residual (AbsTopK over both; the released format)."""
        def sub_site(kind, t):
            return site(f"{which}.{kind}", t)

        ln, layer, ln_name = ((self.ln_1, self.attn, "ln_1") if which == "attn"
                              else (self.ln_2, self.mlp, "ln_2"))
        h = ln(x, norm(ln_name))
        if pos is None:
            return layer(sub_site("in", h), sub_site)
        if not self.pos_norm:
            return layer(_cat_pos(sub_site("in", h), pos), sub_site)
        ln_p = self.ln_p1 if which == "attn" else self.ln_p2
        return layer(sub_site("in", _cat_pos(h, ln_p(pos))), sub_site)


def _cat_pos(h, pos):
    """Append the position channels (1, T, d_pos_emb) to every sequence of `h`."""
    return torch.cat([h, pos.expand(h.shape[0], -1, -1)], dim=-1)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        d_pos = cfg.d_model if cfg.added_pos else cfg.d_pos_emb
        self.wpe = nn.Embedding(cfg.block_size, d_pos) if d_pos else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.lm_head = Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.logits_bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.logits_bias else None
        if cfg.bigram and cfg.learnable_bigram:
            self.bigram = nn.Parameter(torch.empty(cfg.vocab_size, cfg.vocab_size))
        elif cfg.bigram:
            self.register_buffer("bigram", torch.zeros(cfg.vocab_size, cfg.vocab_size))
        else:
            self.bigram = None
        self._topk = {kind: max(1, int(cfg.afrac * self.site_dim(kind)))
                      for kind in SITE_KINDS if cfg.afrac < 1 and kind in cfg.afrac_sites}
        self._hooks: list[Hook] = []
        self._norm_hooks: list[Hook] = []
        self._resid_hooks: list[Hook] = []
        self.reset_parameters()

    # ------------------------------------------------------------------ init

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None):
        """The paper's init: N(0, 0.02), output projections 0.02/sqrt(2 n_layer), biases 0,
        bigram U[0, 0.02), norm gains 1. Draws from `generator` (default: torch's global RNG)."""
        std = self.cfg.init_std
        proj_std = std / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():
            if name == "bigram":
                p.uniform_(0, 0.02, generator=generator)
            elif name.endswith((".bias", ".sink")) or name == "logits_bias":
                p.zero_()
            elif name.startswith("ln_") or ".ln_" in name:
                p.fill_(1.0)
            else:
                s = proj_std if name.endswith("c_proj.weight") else std
                p.normal_(0.0, s, generator=generator)

    # ------------------------------------------------------------------ sites and hooks

    def site_dim(self, kind: str) -> int:
        c = self.cfg
        d_in = c.d_model + (c.d_pos_emb if c.pos_norm else 0)
        return {"attn.q": c.d_attn, "attn.k": c.d_attn, "attn.v": c.d_attn,
                "mlp.neuron": c.d_mlp, "attn.in": d_in, "mlp.in": d_in}.get(kind, c.d_model)

    def site_names(self) -> list[str]:
        return [f"blocks.{l}.{kind}" for l in range(self.cfg.n_layer) for kind in SITE_KINDS]

    @contextlib.contextmanager
    def _pushed(self, attr: str, fns):
        """Append `fns` to the hook list `attr` inside the block (nesting composes)."""
        saved = getattr(self, attr)
        setattr(self, attr, saved + list(fns))
        try:
            yield
        finally:
            setattr(self, attr, saved)

    @contextlib.contextmanager
    def hooks(self, *fns: Hook):
        """Apply hooks `fn(name, x) -> x` at every node site (in order) inside the block."""
        with self._pushed("_hooks", fns):
            yield self

    @contextlib.contextmanager
    def norm_hooks(self, *fns: Hook):
        """Apply `fn(name, scale) -> scale` to every RMSNorm's per-token scale 1/rms, shape
        (B, T, 1), inside the block. Names: `blocks.{l}.ln_1`, `blocks.{l}.ln_2`, `ln_f`.
        Frozen-norm ablation records the scales of a clean pass and replays them here."""
        with self._pushed("_norm_hooks", fns):
            yield self

    def _norm_fn(self, name: str):
        if not self._norm_hooks:
            return None

        def apply(scale):
            for fn in self._norm_hooks:
                scale = fn(name, scale)
            return scale
        return apply

    def resid_names(self) -> list[str]:
        """The residual locations in the order a pass meets them (2 per layer)."""
        return [f"blocks.{l}.resid_{half}" for l in range(self.cfg.n_layer) for half in ("pre", "mid")]

    @contextlib.contextmanager
    def resid_hooks(self, *fns: Hook):
        """Apply `fn(name, x) -> x` to the residual stream (B, T, d_model) at every residual
        location (`resid_names`), before the sublayer's RMSNorm reads it, inside the block."""
        with self._pushed("_resid_hooks", fns):
            yield self

    def run_with_cache(self, idx: torch.Tensor, names=None):
        """Logits and a dict of the activations at the given sites (all sites by default)."""
        wanted = set(self.site_names() if names is None else names)
        unknown = wanted - set(self.site_names())
        if unknown:
            raise KeyError(f"unknown node sites: {sorted(unknown)}")
        cache = {}

        def record(name, x):
            if name in wanted:
                cache[name] = x.detach()
            return x

        with self.hooks(record):
            logits = self(idx)
        return logits, cache

    # ------------------------------------------------------------------ forward

    def forward(self, idx: torch.Tensor, at: torch.Tensor | None = None,
                start: tuple[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (B, T, vocab); with `at` (B,) positions, only the logits there, (B, vocab):
        the same pass, minus the unembedding of positions nobody reads (task prompts).

        `start=(location, x)` begins the pass at a residual location with the residual stream
        `x` (B, T, d_model) in place of the one the model would have computed there: the
        sublayers before it are not run (a bridged hybrid pass). `idx` still feeds the bigram.
        """
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size={self.cfg.block_size}")
        if start is not None and start[0] not in self.resid_names():
            raise KeyError(f"unknown residual location {start[0]!r}")
        pos = self.wpe(torch.arange(T, device=idx.device)).unsqueeze(0) if self.wpe else None
        x = None
        if start is None:
            x = self.wte(idx)
            if self.cfg.added_pos:
                x = x + pos
        if self.cfg.added_pos:
            pos = None  # in the stream now, not appended to sublayer inputs
        for l, block in enumerate(self.blocks):
            prefix = f"blocks.{l}."

            def site(kind, t, prefix=prefix):
                k = self._topk.get(kind)
                if k is not None:
                    t = abstopk(t, k)
                for fn in self._hooks:
                    t = fn(prefix + kind, t)
                return t

            def norm(kind, prefix=prefix):
                return self._norm_fn(prefix + kind)

            for which, half in (("attn", "pre"), ("mlp", "mid")):
                name = f"{prefix}resid_{half}"
                if start is not None:
                    if name != start[0]:
                        continue
                    x, start = start[1], None
                for fn in self._resid_hooks:
                    x = fn(name, x)
                x = x + block.sublayer(which, x, site, pos, norm)
        if at is not None:
            rows = torch.arange(B, device=idx.device)
            x, idx = x[rows, at].unsqueeze(1), idx[rows, at].unsqueeze(1)
        logits = self.lm_head(self.ln_f(x, self._norm_fn("ln_f")))
        if self.logits_bias is not None:
            logits = logits + self.logits_bias
        if self.bigram is not None:
            logits = logits + F.embedding(idx, self.bigram)  # deterministic backward
        if at is not None:
            logits = logits.squeeze(1)
        return logits

    # ------------------------------------------------------------------ execution path

    PATHS = ("dense", "sparse", "auto")
    # "auto" runs a layer sparse when its weight is large and sparse enough: measured on this
    # project's CPU (bench/bench_sparse_linear.py), the sparse product wins on weights of 4M
    # entries from density 1/16 down (1.6x, up to 6x at 1/1024) and loses on small ones
    # (512 x 128: 0.3x at any density), where the dense product is already cheap
    AUTO_DENSITY = 1 / 16
    AUTO_MIN_WEIGHTS = 1 << 20

    @classmethod
    def auto_path(cls, weight: torch.Tensor) -> str:
        density = float((weight != 0).float().mean())
        return ("sparse" if weight.numel() >= cls.AUTO_MIN_WEIGHTS and density <= cls.AUTO_DENSITY
                else "dense")

    @torch.no_grad()
    def set_path(self, mode: str = "auto") -> dict[str, str]:
        """How each linear layer runs when no weight gradient is needed: "dense", "sparse"
        (through its weight's nonzeros), or "auto" (`auto_path`: sparse where the weight is
        large and sparse enough). The two agree to float rounding; the rule is deterministic,
        so a model runs the same way everywhere. Returns the path per layer. Training always
        takes the dense path (it needs weight gradients)."""
        if mode not in self.PATHS:
            from .errors import UserError
            raise UserError(f"unknown execution path '{mode}'; use one of "
                            f"{', '.join(self.PATHS)} (SPARSECIRCUITS_PATH).")
        choice = {}
        for name, lin in self.named_modules():
            if isinstance(lin, Linear):
                lin.path = self.auto_path(lin.weight) if mode == "auto" else mode
                choice[name] = lin.path
        return choice

    # ------------------------------------------------------------------ sparsity bookkeeping

    def sparse_tensors(self) -> list[SparseTensor]:
        """Every tensor under the weight budget, with the axis of its per-neuron floor.

        Reads (`c_attn`, `c_fc`) keep >= j inputs per output row; writes (`c_proj`) keep >= j
        outputs per input column. Embeddings, the unembedding and biases use plain top-k. The
        bigram table, norm gains and biases, sink logits and a logits bias stay dense.
        """
        out = []
        for name, p in self.named_parameters():
            if (name in ("bigram", "logits_bias") or name.startswith("ln_") or ".ln_" in name
                    or p.ndim == 1 and not name.endswith(".bias")):
                continue
            if name.endswith(("c_attn.weight", "c_fc.weight")):
                out.append(SparseTensor(name, p, "matrix", floor_axis=1))
            elif name.endswith("c_proj.weight"):
                out.append(SparseTensor(name, p, "matrix", floor_axis=0))
            else:
                out.append(SparseTensor(name, p, "other", floor_axis=None))
        return out

    def decay_params(self) -> list[torch.nn.Parameter]:
        """Matrices that get weight decay: every 2-D weight except the bigram table."""
        return [p for n, p in self.named_parameters() if p.ndim == 2 and n != "bigram"]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
