"""Tasks of the paper's suite: quotes, brackets, and the variable-type tasks.

Each generator draws from word lists and templates split into disjoint train, val and test
shares, so a circuit pruned on train pairs is measured on names, contents and layouts it
never saw.
"""

from __future__ import annotations

import random

from .core import Pair, Task, split_half
from .words import NOUNS, VARS, VERBS, indent, preamble, sentence

# ----------------------------------------------------------------------------- quotes

_QUOTE_CALLS = ["print(", "log(", "logger.info(", "warnings.warn(", "raise ValueError(",
                "self.write(", "parser.error(", "sys.stdout.write(", "emit(", "out.append(",
                "lines.append(", "results.append(", "notify(", "self.fail(", "print(name, "]


def _single_double_quote(rng: random.Random, split: str) -> Pair:
    call = rng.choice(split_half(_QUOTE_CALLS, split, "quote-call"))
    text = sentence(rng, split, rng.randint(1, 6))
    pad = indent(rng)
    head = preamble(rng, split, pad)
    return Pair(clean=f'{head}{pad}{call}"{text}', corrupt=f"{head}{pad}{call}'{text}",
                target='")\n', alt="')\n", clean_rest=f"{pad}return\n", corrupt_rest=f"{pad}return\n")


# ----------------------------------------------------------------------------- brackets

def _element(rng: random.Random, split: str, last: bool = False) -> str:
    # The last element is never a string: `'x']` would glue the quote to the closing bracket.
    kind = rng.randrange(2 if last else 3)
    if kind == 0:
        return str(rng.randint(0, 99))
    if kind == 1:
        return rng.choice(split_half(VARS, split, "elem"))
    return repr(rng.choice(split_half(NOUNS, split, "elem-str")))


def _bracket_counting(rng: random.Random, split: str) -> Pair:
    rows, width = rng.randint(1, 4), rng.randint(1, 4)
    items = [[_element(rng, split) for _ in range(width)] for _ in range(rows)]
    items[-1][-1] = _element(rng, split, last=True)
    name = rng.choice(split_half(VARS, split, "bracket-name"))
    pad = indent(rng)
    nested = ", ".join("[" + ", ".join(r) + "]" for r in items)[:-1]   # last row left open
    flat = ", ".join(x for r in items for x in r)
    head = preamble(rng, split, pad)
    return Pair(clean=f"{head}{pad}{name} = [{nested}", corrupt=f"{head}{pad}{name} = [{flat}",
                target="]]\n", alt="]\n", clean_rest=f"{pad}return {name}\n",
                corrupt_rest=f"{pad}return {name}\n")


def _same_without_brackets(pair: Pair) -> bool:
    def strip(s):
        return s.replace("[", "").replace("]", "")
    return strip(pair.clean) == strip(pair.corrupt)


# ----------------------------------------------------------------------------- set or string

def _set_or_string(fixed_name: str | None):
    def make(rng: random.Random, split: str) -> Pair:
        name = fixed_name or rng.choice(split_half(VARS, split, "set-name"))
        src = rng.choice([n for n in split_half(NOUNS, split, "set-src") if n != name])
        item = rng.choice([v for v in split_half(VARS, split, "set-item") if v != name])
        pad = indent(rng)
        head = preamble(rng, split, pad)
        verbs = split_half(VERBS, split, "set-verb")
        between = "".join(f"{pad}{rng.choice(verbs)}({src})\n" for _ in range(rng.randint(0, 2)))
        body = f"{between}{pad}for {item} in {src}:\n{pad}    {name}"
        return Pair(clean=f"{head}{pad}{name} = set()\n{body}",
                    corrupt=f'{head}{pad}{name} = ""\n{body}',
                    target=".add", alt=" +=", clean_rest=f"({item})\n",
                    corrupt_rest=f" {item}\n")
    return make


TASKS = [
    Task("single_double_quote",
         'close a string with the quote that opened it: `")\\n` after `("`, `\')\\n` after `(\'`',
         _single_double_quote, differs_doc="only the opening quote differs"),
    Task("bracket_counting",
         "close a nested list with `]]` and a flat list with `]`", _bracket_counting,
         differs_doc="the same elements, nested in rows or flat",
         differs=_same_without_brackets),
    Task("set_or_string",
         "a variable initialised as `set()` grows with `.add`, one initialised as `\"\"` with `+=`",
         _set_or_string(None), differs_doc='only the initial value differs: set() or ""'),
    Task("set_or_string_fixedvarname",
         "set_or_string with the variable always named `current`",
         _set_or_string("current"), differs_doc='only the initial value differs: set() or ""'),
]
