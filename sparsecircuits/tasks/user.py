"""User-defined tasks from a small TOML file: templates with slots, slot values, two answers.

    name = "dict_or_list"
    description = "a dict literal wants `:` after its first key, a list wants `,`"
    target = ":"                      # the clean prompt's answer
    alt = ","                         # the corrupt prompt's answer
    split = "slots"                   # split the values of each slot ("slots") or the templates

    [[templates]]
    clean = "{var} = {{{key}"         # {slot} is filled in; {{ and }} are literal braces
    corrupt = "{var} = [{key}"

    [slots]
    var = ["config", "table", "lookup", "index"]
    key = ["alpha", "beta", "gamma", "delta", "size"]

With `split = "slots"` each slot's values are divided into disjoint train, val and test shares
(`tasks.core.split_half`); with `split = "templates"`, odd-numbered templates are test and the
even ones alternate between train and val (shared when there are only two). Every mistake is
reported with the file, the line and what to change.
"""

from __future__ import annotations

import random
import re
import string
import tomllib
from pathlib import Path

from ..errors import UserError, closest
from .core import Pair, Task, split_half, split_in_order

KEYS = ("name", "description", "target", "alt", "split", "templates", "slots")
TEMPLATE_KEYS = ("clean", "corrupt")


def load_task_file(path: str | Path) -> Task:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"task file {path} does not exist; pass a .toml file (see the README).")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: {e}; fix the TOML syntax there.") from None

    def fail(key: str, problem: str):
        raise UserError(f"{path}, line {_line_of(text, key)}: {problem}")

    for key in spec:
        if key not in KEYS:
            fail(key, f"unknown key '{key}'{closest(key, KEYS)}; valid keys: {', '.join(KEYS)}.")
    for key in ("name", "target", "alt", "templates"):
        if key not in spec:
            raise UserError(f"{path}: the required key '{key}' is missing; add it (see the README).")
    for key in ("name", "description", "target", "alt"):
        if key in spec and not isinstance(spec[key], str):
            fail(key, f"'{key}' must be a string.")
    for key in ("target", "alt"):
        if not spec[key]:
            fail(key, f"'{key}' is empty; an answer is the text the model should predict next, "
                      "e.g. \":\".")
    name = spec["name"]
    if not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        fail("name", f"name '{name}' must be letters, digits, '_' or '-', starting with a letter.")
    if spec["target"] == spec["alt"]:
        fail("alt", "target and alt are the same answer; a task contrasts two different tokens.")
    split_mode = spec.get("split", "slots")
    if split_mode not in ("slots", "templates"):
        fail("split", f"split = '{split_mode}' is unknown; use \"slots\" or \"templates\".")

    slots = spec.get("slots", {})
    if not isinstance(slots, dict):
        fail("slots", "[slots] must be a table of lists, e.g. name = [\"a\", \"b\"].")
    for slot, values in slots.items():
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, str) for v in values)):
            fail(slot, f"slot '{slot}' must be a non-empty list of strings.")

    templates = spec["templates"]
    if not isinstance(templates, list) or not templates:
        fail("templates", "add at least one [[templates]] table with clean and corrupt.")
    for i, tpl in enumerate(templates):
        where = f"template {i + 1}"
        if not isinstance(tpl, dict):
            fail("templates", f"{where} must be a table with clean and corrupt.")
        for key in tpl:
            if key not in TEMPLATE_KEYS:
                fail(key, f"{where} has unknown key '{key}'{closest(key, TEMPLATE_KEYS)}.")
        for key in TEMPLATE_KEYS:
            if not isinstance(tpl.get(key), str):
                raise UserError(f"{path}: {where} needs a string '{key}'; add it.")
            for field_name in _fields(tpl[key], path, text):
                if field_name not in slots:
                    fail(key, f"{where} uses slot '{{{field_name}}}' but [slots] has no "
                              f"'{field_name}'{closest(field_name, slots)}.")
    if split_mode == "templates" and len(templates) < 2:
        fail("split", 'split = "templates" needs at least 2 templates (odd-numbered: test, '
                      'even-numbered: train and val).')
    if split_mode == "slots":
        for slot, values in slots.items():
            if len(set(values)) < 2:
                fail(slot, f"slot '{slot}' needs at least 2 distinct values to split into "
                           "train and test.")

    def make(rng: random.Random, split: str) -> Pair:
        pool = templates if split_mode == "slots" else split_in_order(templates, split)
        tpl = rng.choice(pool)
        values = {s: rng.choice(split_half(v, split, f"{name}/{s}") if split_mode == "slots" else v)
                  for s, v in slots.items()}
        return Pair(tpl["clean"].format(**values), tpl["corrupt"].format(**values),
                    spec["target"], spec["alt"])

    return Task(name, spec.get("description", f"user task from {path.name}"), make,
                differs_doc="as written in the task file's templates",
                differs=lambda p: p.clean != p.corrupt, tags=("user",))


def _fields(template: str, path: Path, text: str) -> list[str]:
    where = f"{path}, line {_line_of(text, template[:20])}: template {template!r}"
    try:
        parts = [p for p in string.Formatter().parse(template) if p[1] is not None]
    except ValueError as e:
        raise UserError(f"{where} is malformed ({e}); write literal braces as {{{{ and "
                        "}}}}.") from None
    for _, name, spec, conversion in parts:
        if spec or conversion:  # filling it in would fail, or quietly change the value
            raise UserError(f"{where} writes the slot as "
                            f"'{{{name}{'!' + conversion if conversion else ''}"
                            f"{':' + spec if spec else ''}}}'; a slot is its name alone in "
                            f"braces, '{{{name}}}' (literal braces are {{{{ and }}}}).")
    return [name for _, name, _, _ in parts]


def _line_of(text: str, needle: str) -> int:
    """The first line that assigns `needle` as a key (or else contains it), 1-based."""
    lines = text.splitlines()
    for i, line in enumerate(lines, 1):
        if re.match(rf"\s*\[*\s*{re.escape(needle)}\s*[\]=]", line):
            return i
    for i, line in enumerate(lines, 1):
        if needle in line:
            return i
    return 1
