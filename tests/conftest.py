"""Shared fixtures: a small corpus built from a few standard-library modules, tiny configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sparsecircuits.config import ModelConfig, RunConfig, SparsityConfig, TrainConfig
from sparsecircuits.corpus import build_corpus, stdlib_dir

SOURCES = ["json", "collections", "email/mime", "string.py", "textwrap.py", "bisect.py",
           "heapq.py", "keyword.py", "copy.py", "fnmatch.py"]
# Large enough to hold every suite answer as one token (the reserve alone needs ~290 merges).
TEST_VOCAB = 1024


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        p = stdlib_dir() / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(p, src / name)
    out = tmp_path_factory.mktemp("corpus") / "c"
    build_corpus(out, [src], vocab_size=TEST_VOCAB, val_frac=0.1, log=lambda *a: None)
    return out


def tiny_config(corpus: Path | None = None, **sections) -> RunConfig:
    """A 2-layer model that trains a step in milliseconds; override fields per section."""
    cfg = RunConfig(
        ModelConfig(n_layer=2, d_model=32, d_head=16, d_mlp=64, vocab_size=TEST_VOCAB, block_size=32),
        SparsityConfig(weight_density=0.25, other_density=0.5),
        TrainConfig(batch_size=4, max_steps=20, lr=1e-2, log_every=5, eval_every=10,
                    eval_batches=2, checkpoint_every=5, device="cpu"),
    )
    cfg.data.corpus = str(corpus) if corpus else None
    for section, values in sections.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    return cfg.validate()


def quiet(*args, **kwargs):
    pass
