"""Tasks of the paper's suite (see suite_a.py for the conventions)."""

from __future__ import annotations

from .core import Task

TASKS: list[Task] = []
