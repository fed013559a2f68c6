"""Behaviours as tasks: pairs of prompts whose correct next tokens differ (PAPER.md section 6).

A task is named by its suite name (`bracket_counting`), a control of one
(`bracket_counting:inverted`, `bracket_counting:constant`), or a user task file (`my.toml`).
"""

from __future__ import annotations

from ..errors import UserError, closest
from .core import Pair, Task, answer_ids, constant, inverted, is_natural
from .metrics import TARGET_LOSS, TaskResult, task_metrics
from .suite_a import TASKS as _A
from .suite_b import TASKS as _B
from .suite_c import TASKS as _C
from .user import load_task_file

SUITE: dict[str, Task] = {t.name: t for t in (*_A, *_B, *_C)}

PAPER_TASKS = (
    "single_double_quote", "bracket_counting", "set_or_string", "set_or_string_fixedvarname",
    "class_init", "with_as", "bracket_brace", "with_open", "for_while", "else_elif",
    "fstring_brace", "if_ternary", "var_swap", "indent_for", "lambda_func", "if_equals",
    "enumerate_range", "var_if", "while_return_true", "final_kwarg",
)

CONTROLS = {"inverted": inverted, "constant": constant}


def get_task(name: str) -> Task:
    """A task by suite name, `NAME:inverted` / `NAME:constant`, or a path to a .toml file."""
    base, control = name, None
    for suffix in CONTROLS:
        if name.endswith(":" + suffix):
            base, control = name[: -len(suffix) - 1], suffix
    if base.endswith(".toml"):
        task = load_task_file(base)
    elif base in SUITE:
        task = SUITE[base]
    else:
        raise UserError(f"unknown task '{base}'{closest(base, SUITE)}; see `sparsecircuits tasks "
                        "list`, or pass a .toml task file.")
    return CONTROLS[control](task) if control else task


def get_tasks(names: list[str] | tuple[str, ...] | str) -> list[Task]:
    """Tasks for a list of names; "all" means the paper's twenty."""
    if isinstance(names, str):
        names = [names]
    if list(names) == ["all"]:
        names = PAPER_TASKS
    return [get_task(n) for n in names]


__all__ = ["CONTROLS", "PAPER_TASKS", "SUITE", "TARGET_LOSS", "Pair", "Task", "TaskResult",
           "answer_ids", "constant", "get_task", "get_tasks", "inverted", "is_natural",
           "load_task_file", "task_metrics"]
