"""Tasks of the paper's suite: swaps, indentation, and the keyword-versus-assignment tasks.

Conventions as in suite_a.py: every generator draws names, contents and layouts from disjoint
train/val/test shares of its word lists, and each pair's answers are the tokens the default
tokenizer emits when the code goes on naturally (`clean_rest` / `corrupt_rest`).

Most pairs here differ in the last line only (`x = lambda` / `def x`, `while True` /
`return True`), which one contiguous span of characters does not capture, so those tasks
check their own rule with `last_line_differs`.
"""

from __future__ import annotations

import random
import re

from ..answers import SWAP_NAMES
from .core import Pair, Task, last_line_differs, split_half
from .words import NOUNS, VARS, VERBS, indent, preamble

# ----------------------------------------------------------------------------- shared helpers


def _statement(rng: random.Random, split: str) -> str:
    """One unrelated statement (no indentation, no newline) to pad a body with."""
    names = split_half(VARS, split, "c-stmt-var")
    nouns = split_half(NOUNS, split, "c-stmt-noun")
    verbs = split_half(VERBS, split, "c-stmt-verb")
    a, b, noun, verb = rng.choice(names), rng.choice(names), rng.choice(nouns), rng.choice(verbs)
    return rng.choice([f"{a} = {rng.randint(0, 99)}", f"{a} = {verb}({b})",
                       f"{a} = len({noun})", f"{verb}({a})", f"{noun}.append({a})",
                       f"{a} += 1", f"{a} = []", f"{a} = {b}.{verb}()"])


def _filler(rng: random.Random, split: str, pad: str, most: int = 2) -> str:
    return "".join(f"{pad}{_statement(rng, split)}\n" for _ in range(rng.randint(0, most)))


def _value(rng: random.Random, split: str) -> str:
    """A short right-hand side: a number, a call, a length or a name."""
    name = rng.choice(split_half(VARS, split, "c-val-var"))
    noun = rng.choice(split_half(NOUNS, split, "c-val-noun"))
    verb = rng.choice(split_half(VERBS, split, "c-val-verb"))
    return rng.choice([str(rng.randint(0, 99)), f"len({noun})", f"{verb}({name})", name,
                       f"{noun}[0]"])


# ----------------------------------------------------------------------------- var_swap

_SWAP_CONDITIONS = ["if {a} > {b}:", "if {b} < {a}:", "if {a} is None:", "if not {b}:",
                    "if len({a}) < len({b}):", "if reverse:", "if {b} is not None:",
                    "if descending:", "if {a} < {b}:", "if swap:"]


def _var_swap(rng: random.Random, split: str) -> Pair:
    a, b = rng.sample(split_half(SWAP_NAMES, split, "swap-name"), 2)
    pad = indent(rng)
    head = preamble(rng, split, pad)
    setup = rng.choice(["", f"{pad}{a} = {_value(rng, split)}\n{pad}{b} = {_value(rng, split)}\n",
                        f"{pad}{a}, {b} = {_value(rng, split)}, {_value(rng, split)}\n"])
    inner = pad
    if rng.random() < 0.5:   # the swap is often conditional
        cond = rng.choice(split_half(_SWAP_CONDITIONS, split, "swap-cond"))
        setup += f"{pad}{cond.format(a=a, b=b)}\n"
        inner = pad + "    "
    return Pair(clean=f"{head}{setup}{inner}{a}, {b} = {b},",
                corrupt=f"{head}{setup}{inner}{b}, {a} = {a},",
                target=f" {a}", alt=f" {b}", clean_rest="\n", corrupt_rest="\n")


_SWAP_LINE = re.compile(r"( *)(\w+), (\w+) = (\w+),")


def _names_swapped(clean_last: str, corrupt_last: str) -> bool:
    c, r = _SWAP_LINE.fullmatch(clean_last), _SWAP_LINE.fullmatch(corrupt_last)
    return bool(c and r) and c[3] == c[4] and r[3] == r[4] and \
        (r[1], r[2], r[3]) == (c[1], c[3], c[2])


# ----------------------------------------------------------------------------- indent_for

def _loop_line(rng: random.Random, split: str, in_method: bool) -> tuple[str, str, str]:
    """(a `for` header, a plain statement on the same names, a body line for the loop)."""
    x, y = rng.sample(split_half(VARS, split, "for-var"), 2)
    noun = rng.choice(split_half(NOUNS, split, "for-noun"))
    verb = rng.choice(split_half(VERBS, split, "for-verb"))
    source = f"self.{noun}" if in_method and rng.random() < 0.5 else noun
    header = rng.choice([f"for {x} in {source}:", f"for {x} in sorted({source}):",
                         f"for i in range(len({source})):", f"for i, {x} in enumerate({source}):",
                         f"for {x}, {y} in {source}.items():", f"for {x} in reversed({source}):"])
    plain = rng.choice([f"{x} = {source}[0]", f"{x} = len({source})", f"{source}.sort()",
                        f"{verb}({source})", f"{x} = None", f"{x} = {verb}({source})",
                        f"{y} = {x}"])
    body = rng.choice([f"{verb}({x})", f"{y} += 1", f"{y}.append({x})", f"print({x})",
                       f"{x} = {verb}({x})"])
    return header, plain, body


_BLOCKS = ["if {x}:", "if not {x}:", "with open({x}) as f:", "try:", "while {x}:",
           "if {x} is not None:", "with lock:", "else:"]


def _indent_for(rng: random.Random, split: str) -> Pair:
    # Statement levels 4 and 8 only: their bodies' indentation tokens (7 and 11 spaces) and
    # the same-level tokens (3 and 7 spaces) are all reserved answers.
    kind = rng.randrange(3)
    if kind == 0:        # a function body
        pad, head = "    ", preamble(rng, split, "    ")
    elif kind == 1:      # a method body
        pad, head = "        ", preamble(rng, split, "        ")
    else:                # a block inside a function
        block = rng.choice(split_half(_BLOCKS, split, "for-block"))
        x = rng.choice(split_half(VARS, split, "for-block-var"))
        pad, head = "        ", preamble(rng, split, "    ")
        if block == "else:":
            head += f"    if {x} is None:\n        return\n"
        head += f"    {block.format(x=x)}\n"
    head += _filler(rng, split, pad)
    header, plain, body = _loop_line(rng, split, in_method=kind == 1)
    deeper, same = " " * (len(pad) + 3), " " * (len(pad) - 1)
    return Pair(clean=f"{head}{pad}{header}\n", corrupt=f"{head}{pad}{plain}\n",
                target=deeper, alt=same, clean_rest=f" {body}\n",
                corrupt_rest=f" {_statement(rng, split)}\n")


def _for_header_vs_statement(clean_last: str, corrupt_last: str) -> bool:
    pad = clean_last[:len(clean_last) - len(clean_last.lstrip(" "))]
    return (clean_last.startswith(f"{pad}for ") and clean_last.endswith(":\n")
            and corrupt_last.startswith(pad) and corrupt_last[len(pad):len(pad) + 1] != " "
            and not corrupt_last.endswith(":\n"))


# ----------------------------------------------------------------------------- lambda_func

_CALLABLE_NAMES = ["key", "callback", "factory", "handler", "default", "getter", "action",
                   "on_done", "on_error", "cleanup", "make", "loader", "fetcher", "builder",
                   "compute", "step", "hook", "task", "job", "func", "fn", "run", "check"]

_ZERO_ARG_BODIES = ["[]", "{{}}", "0", "None", "True", "set()", "dict()", "len({noun})",
                    "{verb}({var})", "{noun}[0]", "{var}", "list({noun})", "{verb}()"]


def _callable_name(rng: random.Random, split: str) -> str:
    if rng.random() < 0.4:
        return rng.choice(split_half(_CALLABLE_NAMES, split, "lambda-name"))
    verb = rng.choice(split_half(VERBS, split, "lambda-verb"))
    return f"{verb}_{rng.choice(split_half(NOUNS, split, 'lambda-noun'))}"


def _lambda_func(rng: random.Random, split: str) -> Pair:
    name = _callable_name(rng, split)
    pad = indent(rng)
    head = preamble(rng, split, pad) + _filler(rng, split, pad, most=1)
    body = rng.choice(_ZERO_ARG_BODIES).format(
        noun=rng.choice(split_half(NOUNS, split, "lambda-body-noun")),
        verb=rng.choice(split_half(VERBS, split, "lambda-body-verb")),
        var=rng.choice(split_half(VARS, split, "lambda-body-var")))
    # Both forms take no arguments, so `lambda` wants `:` and `def name` wants `():\n`.
    return Pair(clean=f"{head}{pad}{name} = lambda", corrupt=f"{head}{pad}def {name}",
                target=":", alt="():\n", clean_rest=f" {body}\n",
                corrupt_rest=f"{pad}    return {body}\n")


_LAMBDA_LINE = re.compile(r"( *)(\w+) = lambda")
_DEF_LINE = re.compile(r"( *)def (\w+)")


def _lambda_vs_def(clean_last: str, corrupt_last: str) -> bool:
    c, r = _LAMBDA_LINE.fullmatch(clean_last), _DEF_LINE.fullmatch(corrupt_last)
    return bool(c and r) and c.groups() == r.groups()


# ----------------------------------------------------------------------------- if_equals

def _if_equals(rng: random.Random, split: str) -> Pair:
    name = rng.choice(split_half(VARS, split, "eq-name"))
    pad = indent(rng)
    head = preamble(rng, split, pad) + _filler(rng, split, pad)
    value = _value(rng, split)
    stmt = _statement(rng, split)
    return Pair(clean=f"{head}{pad}if {name}", corrupt=f"{head}{pad}{name}",
                target=" ==", alt=" =", clean_rest=f" {value}:\n{pad}    {stmt}\n",
                corrupt_rest=f" {value}\n{pad}{stmt}\n")


# ----------------------------------------------------------------------------- enumerate_range

_INDEX_NAMES = ["i", "j", "k", "n", "idx", "index", "pos", "num", "lineno", "row", "col",
                "position", "offset", "count", "rank", "slot", "number", "step", "ix", "ii"]


def _enumerate_range(rng: random.Random, split: str) -> Pair:
    i = rng.choice(split_half(_INDEX_NAMES, split, "enum-index"))
    x = rng.choice([v for v in split_half(VARS, split, "enum-item") if v != i])
    noun = rng.choice(split_half(NOUNS, split, "enum-noun"))
    pad = indent(rng)
    head = preamble(rng, split, pad) + _filler(rng, split, pad)
    if rng.random() < 0.5:   # where the sequence came from
        verb = rng.choice(split_half(VERBS, split, "enum-verb"))
        head += f"{pad}{noun} = {verb}({rng.choice(split_half(VARS, split, 'enum-src'))})\n"
    return Pair(clean=f"{head}{pad}for {i}, {x} in", corrupt=f"{head}{pad}for {i} in",
                target=" enumerate", alt=" range",
                clean_rest=f"({noun}):\n{pad}    print({i}, {x})\n",
                corrupt_rest=f"(len({noun})):\n{pad}    {x} = {noun}[{i}]\n")


_TWO_VAR_LOOP = re.compile(r"( *)for (\w+), \w+ in")
_ONE_VAR_LOOP = re.compile(r"( *)for (\w+) in")


def _second_loop_var_dropped(clean_last: str, corrupt_last: str) -> bool:
    c, r = _TWO_VAR_LOOP.fullmatch(clean_last), _ONE_VAR_LOOP.fullmatch(corrupt_last)
    return bool(c and r) and c.groups() == r.groups()


# ----------------------------------------------------------------------------- var_if

_FLAGS = ["done", "found", "ready", "valid", "enabled", "active", "changed", "running",
          "visible", "flag", "ok", "success", "finished", "dirty", "loaded", "debug", "verbose",
          "cached", "locked", "empty", "seen", "stop", "skip", "updated", "matched", "retry",
          "closed", "started", "failed", "is_valid", "has_data", "first", "verified", "dry_run",
          "quiet", "strict", "force", "connected", "paused"]


def _flag_name(rng: random.Random, split: str, pad: str) -> str:
    flag = rng.choice(split_half(_FLAGS, split, "flag"))
    # An attribute is as natural as a local in a method body.
    return f"self.{flag}" if pad == "        " and rng.random() < 0.4 else flag


def _var_if(rng: random.Random, split: str) -> Pair:
    pad = indent(rng)
    name = _flag_name(rng, split, pad)
    head = preamble(rng, split, pad) + _filler(rng, split, pad)
    stmt = _statement(rng, split)
    return Pair(clean=f"{head}{pad}if {name} == True", corrupt=f"{head}{pad}{name} = True",
                target=":\n", alt="\n", clean_rest=f"{pad}    {stmt}\n",
                corrupt_rest=f"{pad}{stmt}\n")


_IF_TRUE_LINE = re.compile(r"( *)if (\S+) == True")
_SET_TRUE_LINE = re.compile(r"( *)(\S+) = True")


def _condition_vs_assignment(clean_last: str, corrupt_last: str) -> bool:
    c, r = _IF_TRUE_LINE.fullmatch(clean_last), _SET_TRUE_LINE.fullmatch(corrupt_last)
    return bool(c and r) and c.groups() == r.groups()


# ----------------------------------------------------------------------------- while_return_true

_INNER_BLOCKS = ["if {x}:", "if not {x}:", "if {x} is None:", "for {x} in {noun}:", "try:",
                 "with lock:", "if {x} in {noun}:", "if len({noun}) > {n}:",
                 "with open({x}) as f:", "if self.{x}:"]

# What follows a block that ends in `return True`, one level out.
_AFTER_BLOCK = ["return False", "return None", "{x} = None", "print({x})", "return {x}",
                "raise ValueError({x})", "{noun}.clear()"]


def _while_return_true(rng: random.Random, split: str) -> Pair:
    pad = rng.choice(["    ", "        "])          # a function or a method body
    head = preamble(rng, split, pad) + _filler(rng, split, pad)
    fill = {"x": rng.choice(split_half(VARS, split, "while-var")),
            "noun": rng.choice(split_half(NOUNS, split, "while-noun")), "n": rng.randint(0, 9)}
    inner, after = pad, ""   # last in a function, a `return True` line ends the text
    if rng.random() < 0.6:   # inside a block, so that code follows the `return True` line
        block = rng.choice(split_half(_INNER_BLOCKS, split, "while-block"))
        head += f"{pad}{block.format(**fill)}\n" + _filler(rng, split, pad + "    ", most=1)
        inner = pad + "    "
        outer = "except ValueError:" if block == "try:" else rng.choice(_AFTER_BLOCK).format(**fill)
        after = f"{pad}{outer}\n"
    body = _statement(rng, split)
    return Pair(clean=f"{head}{inner}while True", corrupt=f"{head}{inner}return True",
                target=":\n", alt="\n", clean_rest=f"{inner}    {body}\n", corrupt_rest=after)


def _while_vs_return(clean_last: str, corrupt_last: str) -> bool:
    pad = clean_last[:len(clean_last) - len(clean_last.lstrip(" "))]
    return clean_last == f"{pad}while True" and corrupt_last == f"{pad}return True"


# ----------------------------------------------------------------------------- final_kwarg

_DECORATORS = ["@cache", "@timed", "@retry(3)", "@log_calls", "@torch.no_grad()",
               "@app.route('/')", "@functools.lru_cache()", "@register", "@pytest.fixture",
               "@wraps(func)"]

# How a method's parameter list starts: (decorator, leading parameters).
_METHOD_KINDS = [("", ["self"]), ("@staticmethod", []), ("@classmethod", ["cls"])]


def _final_kwarg(rng: random.Random, split: str) -> Pair:
    names = split_half(VARS, split, "kwarg-param")
    plain_n, default_n = rng.randint(0, 3), rng.randint(1, 3)
    params = rng.sample(names, plain_n + default_n + 1)
    plain, defaulted, last = params[:plain_n], params[plain_n:-1], params[-1]
    verb = rng.choice(split_half(VERBS, split, "kwarg-verb"))
    noun = rng.choice(split_half(NOUNS, split, "kwarg-noun"))
    func = rng.choice([verb, f"{verb}_{noun}"])
    decorator = rng.choice(["", "", *split_half(_DECORATORS, split, "kwarg-deco")])

    if rng.random() < 0.5:   # a method, maybe static or a classmethod
        pad = "    "
        kind_decorator, leading = rng.choice(_METHOD_KINDS)
        decorator = kind_decorator or decorator
        head = f"class {noun.title()}:\n" + rng.choice(["", f"    {rng.choice(names)} = None\n"])
    else:
        pad, leading = "", []
        head = _filler(rng, split, "", most=1)
    if decorator:
        head += f"{pad}{decorator}\n"

    def signature(default: str) -> str:
        return ", ".join([*leading, *plain, *(f"{p}{default}" for p in defaulted), last])

    body = f"{pad}    return {rng.choice([last, *plain, *defaulted])}\n"
    return Pair(clean=f"{head}{pad}def {func}({signature('=None')}",
                corrupt=f"{head}{pad}def {func}({signature('')}",
                target="=None", alt="):\n", clean_rest=f"):\n{body}", corrupt_rest=body)


def _defaults_removed(clean_last: str, corrupt_last: str) -> bool:
    return "=None" in clean_last and clean_last.replace("=None", "") == corrupt_last


TASKS = [
    Task("var_swap", "finish a swap: `a, b = b,` wants ` a`, `b, a = a,` wants ` b`", _var_swap,
         differs_doc="the last lines name the same two variables in swapped order",
         differs=last_line_differs(_names_swapped)),
    Task("indent_for",
         "the line after a `for` header is one level deeper; after a plain statement it is not",
         _indent_for,
         differs_doc="only the last line differs: a `for` header or a plain statement at the "
                     "same indentation",
         differs=last_line_differs(_for_header_vs_statement)),
    Task("lambda_func", "`name = lambda` wants `:`, `def name` wants `():\\n`", _lambda_func,
         differs_doc="only the last line differs: `<name> = lambda` or `def <name>`, same name "
                     "and indentation",
         differs=last_line_differs(_lambda_vs_def)),
    Task("if_equals", "`if name` wants ` ==` (a condition), a statement `name` wants ` =`",
         _if_equals, differs_doc="only the `if ` before the last line's name differs"),
    Task("enumerate_range",
         "`for i, x in` wants ` enumerate`, `for i in` wants ` range`", _enumerate_range,
         differs_doc="only the last line differs: `for <i>, <x> in` or `for <i> in`",
         differs=last_line_differs(_second_loop_var_dropped)),
    Task("var_if", "`if x == True` wants `:\\n`, `x = True` wants `\\n`", _var_if,
         differs_doc="only the last line differs: `if <name> == True` or `<name> = True`",
         differs=last_line_differs(_condition_vs_assignment)),
    Task("while_return_true", "`while True` wants `:\\n`, `return True` wants `\\n`",
         _while_return_true,
         differs_doc="only the last line's keyword differs: `while True` or `return True`",
         differs=last_line_differs(_while_vs_return)),
    Task("final_kwarg",
         "a parameter after defaulted ones wants `=None`; after plain ones the list may close",
         _final_kwarg,
         differs_doc="only the def line differs: its `=None` defaults are present or removed",
         differs=last_line_differs(_defaults_removed)),
]
