"""Word lists and code fragments that the task generators draw from.

Lists are split into disjoint train, val and test shares by `split_half`, so val and test
pairs use identifiers and contents that training pairs never contain.
"""

from __future__ import annotations

import random

from .core import split_half

VARS = ["value", "count", "total", "name", "item", "data", "result", "key", "path", "line",
        "size", "index", "text", "node", "state", "buf", "mode", "user", "score", "items",
        "entry", "record", "token", "word", "row", "col", "field", "target", "source", "config",
        "options", "parts", "prefix", "suffix", "label", "level", "limit", "offset", "start",
        "stop", "step", "width", "height", "depth", "weight", "flag", "found", "seen", "current",
        "other", "parent", "child", "left", "right", "head", "tail", "first", "last", "message"]

NOUNS = ["files", "names", "rows", "lines", "words", "users", "items", "keys", "values",
         "tokens", "nodes", "records", "entries", "paths", "tags", "fields", "args", "parts",
         "chunks", "blocks", "events", "tasks", "jobs", "pages", "links", "groups", "errors",
         "results", "options", "columns", "labels", "scores", "points", "edges", "modules"]

VERBS = ["load", "save", "parse", "check", "update", "render", "build", "send", "read",
         "write", "process", "handle", "compute", "format", "validate", "clean", "sort",
         "merge", "split", "convert", "print", "log", "reset", "open", "close", "fetch"]

WORDS = ["the", "file", "was", "not", "found", "value", "is", "too", "large", "please", "try",
         "again", "done", "loading", "data", "from", "disk", "invalid", "input", "for", "user",
         "could", "read", "line", "missing", "key", "in", "config", "starting", "server", "on",
         "port", "saved", "results", "to", "error", "while", "parsing", "request", "unknown",
         "option", "expected", "number", "got", "empty", "string", "skipping", "entry", "ready",
         "waiting", "timeout", "after", "seconds", "cannot", "connect", "host", "all", "tests"]


def indent(rng: random.Random) -> str:
    return rng.choice(["", "    ", "        "])


def sentence(rng: random.Random, split: str, n: int) -> str:
    words = split_half(WORDS, split, "sentence")
    return " ".join(rng.choice(words) for _ in range(n))


def preamble(rng: random.Random, split: str, pad: str) -> str:
    """A header that makes `pad` valid indentation, then 0-2 unrelated statements at `pad`."""
    verbs, nouns, names = (split_half(VERBS, split, "pre-verb"), split_half(NOUNS, split, "pre-noun"),
                           split_half(VARS, split, "pre-var"))
    if pad == "":
        head = ""
    elif pad == "    ":
        head = f"def {rng.choice(verbs)}_{rng.choice(nouns)}({rng.choice(names)}):\n"
    else:
        head = (f"class {rng.choice(verbs).title()}{rng.choice(nouns).title()}:\n"
                f"    def {rng.choice(verbs)}(self, {rng.choice(names)}):\n")
    for _ in range(rng.randint(0, 2)):
        a, b = rng.choice(names), rng.choice(names)
        head += rng.choice([f"{pad}{a} = {rng.randint(0, 9)}\n",
                            f"{pad}{a} = {rng.choice(verbs)}({b})\n",
                            f"{pad}{a} = len({rng.choice(nouns)})\n"])
    return head
