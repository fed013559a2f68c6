"""sparsecircuits: train weight-sparse transformers on Python code and read their circuits."""

__version__ = "0.1.0"

from . import circuits
from .bridges import Steering, steer, steer_pairs
from .checkpoint import load
from .circuits import Circuit, find_circuit, prune, validate
from .config import (SITE_KINDS, DataConfig, ModelConfig, RunConfig, SparsityConfig, TrainConfig,
                     config_from_dict, load_config, preset)
from .corpus import Corpus, build_corpus, open_corpus
from .errors import UserError
from .evaluate import evaluate, evaluate_tasks
from .model import GPT
from .monitor import monitor
from .tasks import PAPER_TASKS, SUITE, Pair, Task, get_task, get_tasks, load_task_file, task_metrics
from .tokenizer import load_tokenizer, train_tokenizer
from .train import bridge, train

__all__ = [
    "Circuit", "circuits", "find_circuit", "prune", "validate",
    "Steering", "bridge", "steer", "steer_pairs", "monitor",
    "GPT", "PAPER_TASKS", "SITE_KINDS", "SUITE", "Corpus", "DataConfig", "ModelConfig", "Pair",
    "RunConfig", "SparsityConfig", "Task", "TrainConfig", "UserError", "build_corpus",
    "config_from_dict", "evaluate", "evaluate_tasks", "get_task", "get_tasks", "load",
    "load_config", "load_task_file", "load_tokenizer", "open_corpus", "preset", "task_metrics",
    "train", "train_tokenizer",
]
