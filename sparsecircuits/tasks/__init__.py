"""Behaviours as tasks: pairs of prompts whose correct next tokens differ (PAPER.md section 6)."""

from .core import Pair, Task, answer_ids, constant, inverted, is_natural
from .suite_a import TASKS as _A
from .suite_b import TASKS as _B
from .suite_c import TASKS as _C

SUITE: dict[str, Task] = {t.name: t for t in (*_A, *_B, *_C)}

PAPER_TASKS = (
    "single_double_quote", "bracket_counting", "set_or_string", "set_or_string_fixedvarname",
    "class_init", "with_as", "bracket_brace", "with_open", "for_while", "else_elif",
    "fstring_brace", "if_ternary", "var_swap", "indent_for", "lambda_func", "if_equals",
    "enumerate_range", "var_if", "while_return_true", "final_kwarg",
)

__all__ = ["PAPER_TASKS", "SUITE", "Pair", "Task", "answer_ids", "constant", "inverted",
           "is_natural"]
