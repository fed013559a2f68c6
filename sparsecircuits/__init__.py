"""sparsecircuits: train weight-sparse transformers on Python code and read their circuits."""

__version__ = "0.1.0"

from .checkpoint import load
from .config import (SITE_KINDS, DataConfig, ModelConfig, RunConfig, SparsityConfig, TrainConfig,
                     config_from_dict, load_config, preset)
from .corpus import Corpus, build_corpus, open_corpus
from .errors import UserError
from .evaluate import evaluate
from .model import GPT
from .tokenizer import load_tokenizer, train_tokenizer
from .train import train

__all__ = [
    "GPT", "SITE_KINDS", "Corpus", "DataConfig", "ModelConfig", "RunConfig", "SparsityConfig",
    "TrainConfig", "UserError", "build_corpus", "config_from_dict", "evaluate", "load",
    "load_config", "load_tokenizer", "open_corpus", "preset", "train", "train_tokenizer",
]
