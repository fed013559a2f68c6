"""A seeded generator of simple, everyday Python programs: a corpus that is on every machine.

The standard library is real Python but some of the hardest there is: long files, deep
abstractions, rare idioms. The method's models learn everyday regularities (which quote closes
a string, how deep the brackets are, what type a name holds) from simple code seen many times;
the paper's own corpus was mostly simple generated Python. This module writes such code: short
modules of small functions, classes and scripts, each built from one everyday idiom (collect
into a list, count into a dict, read a file, walk a linked list, validate an argument, format a
message), with names chosen for what they hold, so that a name is used as what it was bound to
and a file opened by `save_report` is opened for writing.

It is written from the language, not from the task suite: no template of a task appears here,
and `tests/test_pygen.py` checks that no task prompt appears verbatim in its output. Every
program parses (`ast.parse`); `program(seed)` is a pure function of its seed.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

GENERATOR_VERSION = 2

NOUNS = """user item word line name file task order book city score price event record
message player card node row cell point word entry product student account color animal
number value key token line page post comment song movie team game step rule job packet
reading sample image shape letter tag label item_id city_name""".split()
ADJS = """new old active valid empty unique total first last best small large raw clean
sorted pending current default visible hidden recent""".split()
SUBJECTS = """config report data scores users notes settings results log cache inventory
history profile records stats orders summary index queue table""".split()
EXTS = ["txt", "json", "csv", "log", "md", "cfg", "dat"]
READ_VERBS = ["load", "read", "parse", "open", "import", "fetch", "get"]
WRITE_VERBS = ["save", "write", "dump", "export", "store", "backup"]
APPEND_VERBS = ["append", "log", "record", "add"]
PHRASES = """hello world|done|not found|invalid input|file saved|loading data|starting up
|all tests passed|something went wrong|please try again|ready|goodbye|no items left
|the list is empty|value is too large|saving results|processing|unknown command|welcome back
|game over|you win|connection lost|retrying|finished in time|skipping this one|ok
|enter a number|nothing to do|missing value|bad format|count reached|starting the game
|cleaning up|out of range|try again later|key not found|total so far""".split("|")
PHRASES = [p.strip() for p in PHRASES]
EXCEPTIONS = ["ValueError", "KeyError", "TypeError", "IndexError", "RuntimeError"]


def plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


class Writer:
    """One program: its lines, the current indent, and the functions it has defined."""

    def __init__(self, rng: random.Random):
        self.r = rng
        self.lines: list[str] = []
        self.depth = 0
        self.functions: list[tuple[str, int]] = []     # (name, number of parameters)
        # The program's own habits: most code sticks to one quote style.
        self.q = rng.choice(['"', '"', "'"])

    def emit(self, text: str = "") -> None:
        self.lines.append("    " * self.depth + text if text else "")

    @contextmanager
    def indent(self):
        self.depth += 1
        yield
        self.depth -= 1

    # -- choices -------------------------------------------------------------------------------
    def pick(self, seq):
        return self.r.choice(seq)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def noun(self) -> str:
        return self.pick(NOUNS)

    def quote(self) -> str:
        return self.q if self.chance(0.8) else self.pick("'\"")

    def string(self, text: str | None = None) -> str:
        q = self.quote()
        return f"{q}{self.pick(PHRASES) if text is None else text}{q}"

    def number(self) -> str:
        return self.pick(["0", "1", "2", "3", "5", "10", "42", "100", str(self.r.randint(0, 50))])

    def scalar(self) -> str:
        k = self.r.random()
        if k < 0.45:
            return self.number()
        if k < 0.8:
            return self.string(self.noun())
        return self.pick(["True", "False", "None", "0.5", "1.5", "3.14"])

    def fstring(self, *names: str) -> str:
        q = self.quote()
        words = self.pick(PHRASES).split()
        cut = self.r.randint(0, len(words))
        text = " ".join(words[:cut])
        fields = " ".join("{" + n + "}" for n in names)
        tail = " ".join(words[cut:])
        body = " ".join(p for p in (text, fields, tail) if p)
        return f"f{q}{body}{q}"

    def say(self, *names: str) -> str:
        """A message: a plain string, or an f-string over `names`."""
        if names and self.chance(0.5):
            return self.fstring(*names)
        return self.string()

    def output(self, *names: str) -> None:
        k = self.r.random()
        if k < 0.6:
            self.emit(f"print({self.say(*names)})")
        elif k < 0.8:
            self.emit(f"logger.{self.pick(['info', 'debug', 'warning'])}({self.say(*names)})")
        elif names:
            self.emit(f"print({', '.join(names)})")
        else:
            self.emit(f"print({self.string()})")

    def literal_list(self, kind: str | None = None) -> str:
        kind = kind or self.pick(["int", "str", "nested", "tuple", "int", "str", "name"])
        n = self.r.randint(1, 5)
        if kind == "int":
            return "[" + ", ".join(self.number() for _ in range(n)) + "]"
        if kind == "name":
            return "[" + ", ".join(self.r.sample(NOUNS, n)) + "]"
        if kind == "str":
            return "[" + ", ".join(self.string(self.noun()) for _ in range(n)) + "]"
        width = self.r.randint(2, 3)
        if kind == "tuple":
            rows = ["(" + ", ".join(self.scalar() for _ in range(width)) + ")" for _ in range(n)]
        else:
            rows = ["[" + ", ".join(self.number() for _ in range(width)) + "]" for _ in range(n)]
        return "[" + ", ".join(rows) + "]"

    def literal_dict(self) -> str:
        n = self.r.randint(1, 4)
        keys = self.r.sample(NOUNS, n)
        k = self.r.random()
        if k < 0.6:
            items = [f"{self.string(key)}: {self.scalar()}" for key in keys]
        elif k < 0.8:
            items = [f"{i}: {self.string(key)}" for i, key in enumerate(keys, self.r.randint(0, 1))]
        else:   # names as keys: a mapping built from variables in scope
            items = [f"{key}: {self.scalar()}" for key in keys]
        return "{" + ", ".join(items) + "}"

    def condition(self, x: str) -> str:
        n = self.number()
        return self.pick([f"{x} > {n}", f"{x} < {n}", f"{x} == {n}", f"{x} != {n}",
                          f"{x} >= {n}", f"not {x}", f"{x}", f"{x} is None",
                          f"{x} is not None", f"{x} % 2 == 0"])


# -- functions ---------------------------------------------------------------------------------

def signature(w: Writer, params: list[str], defaults: int = 0) -> str:
    """`a, b, c=None`: the last `defaults` parameters take a default, mostly None."""
    out = []
    for i, p in enumerate(params):
        if i >= len(params) - defaults:
            out.append(f"{p}={w.pick(['None', 'None', 'None', '0', 'False', 'True', '1'])}")
        else:
            out.append(p)
    return ", ".join(out)


def docstring(w: Writer, text: str) -> None:
    if w.chance(0.3):
        w.emit(f'"""{text[0].upper()}{text[1:]}."""')


def fn_collect(w: Writer) -> None:
    """Walk a sequence and build something from it: a list, a set, a string, a count, a dict."""
    noun = w.noun()
    seq, x = plural(noun), noun
    kind = w.pick(["list", "set", "str", "int", "dict", "list", "int"])
    name, init, grow = {
        "list": (w.pick(["result", "out", f"{w.pick(ADJS)}_{seq}", "found"]), "[]",
                 lambda n: f"{n}.append({x})"),
        "set": (w.pick(["seen", f"unique_{seq}", "visited", "names"]), "set()",
                lambda n: f"{n}.add({x})"),
        "str": (w.pick(["text", "result", "line", "output", "message"]), w.pick(['""', "''"]),
                lambda n: f"{n} += {w.pick([f'str({x})', x, f'{x} + {w.string(chr(32))}'])}"),
        "int": (w.pick(["total", "count", "n", f"num_{seq}", "score"]), "0",
                lambda n: f"{n} += {w.pick(['1', x, f'len({x})'])}"),
        "dict": (w.pick(["counts", f"by_{noun}", "index", "table"]), "{}",
                 lambda n: w.pick([f"{n}[{x}] = {n}.get({x}, 0) + 1",
                                   f"{n}[{x}] = {w.pick(['True', '1', 'None', x])}"])),
    }[kind]
    verb = {"list": "collect", "set": "unique", "str": "join", "int": "count", "dict": "count"}
    fname = w.pick([f"{verb[kind]}_{seq}", f"get_{name}", f"make_{name}", f"build_{name}"])
    extra = w.pick(["", "", "limit", "prefix", "min_value"])
    params = [seq] + ([extra] if extra else [])
    w.functions.append((fname, len(params)))
    w.emit(f"def {fname}({signature(w, params, 1 if extra and w.chance(0.5) else 0)}):")
    with w.indent():
        docstring(w, f"{verb[kind]} the {seq}")
        w.emit(f"{name} = {init}")
        loop = w.pick(["plain", "plain", "enumerate", "range"])
        if loop == "plain":
            w.emit(f"for {x} in {seq}:")
        elif loop == "enumerate":
            w.emit(f"for i, {x} in enumerate({seq}):")
        else:
            w.emit(f"for i in range(len({seq})):")
            with w.indent():
                w.emit(f"{x} = {seq}[i]")
        with w.indent():
            if w.chance(0.4):
                w.emit(f"if {w.condition(x)}:")
                with w.indent():
                    w.emit(grow(name))
            elif w.chance(0.2):
                w.emit(f"if {w.condition(x)}:")
                with w.indent():
                    w.emit("continue")
                w.emit(grow(name))
            else:
                w.emit(grow(name))
        w.emit(f"return {name}")


def fn_search(w: Writer) -> None:
    """Find something in a sequence, or say that it is not there."""
    noun = w.noun()
    seq, x = plural(noun), noun
    target = w.pick(["target", "value", "name", "key", f"wanted_{noun}"])
    fname = w.pick([f"find_{noun}", f"index_of_{noun}", f"has_{noun}", f"contains_{noun}"])
    w.functions.append((fname, 2))
    w.emit(f"def {fname}({seq}, {target}):")
    with w.indent():
        predicate = fname.startswith(("has_", "contains_"))
        k = w.r.random()
        if k < 0.4:
            w.emit(f"for i, {x} in enumerate({seq}):")
            hit = "True" if predicate else "i"
        elif k < 0.7:
            w.emit(f"for i in range(len({seq})):")
            x = f"{seq}[i]"
            hit = "True" if predicate else "i"
        else:
            w.emit(f"for {x} in {seq}:")
            hit = "True" if predicate else x
        with w.indent():
            w.emit(f"if {x} == {target}:")
            with w.indent():
                w.emit(f"return {hit}")
        w.emit(f"return {'False' if predicate else w.pick(['-1', 'None'])}")


def fn_predicate(w: Writer) -> None:
    """`is_x(value)`: a yes/no question answered with True and False."""
    noun = w.noun()
    fname = w.pick([f"is_{w.pick(ADJS)}", f"is_valid_{noun}", f"check_{noun}", f"can_{noun}"])
    arg = w.pick([noun, "value", "x", "n", "text"])
    w.functions.append((fname, 1))
    w.emit(f"def {fname}({arg}):")
    with w.indent():
        k = w.r.random()
        if k < 0.35:
            w.emit(f"if {w.condition(arg)}:")
            with w.indent():
                w.emit("return False")
            if w.chance(0.5):
                w.emit(f"if {w.condition(arg)}:")
                with w.indent():
                    w.emit("return True")
            w.emit(w.pick(["return True", f"return {w.condition(arg)}"]))
        elif k < 0.6:
            w.emit(f"return {w.condition(arg)}")
        elif k < 0.8:
            w.emit(f"for c in {arg}:")
            with w.indent():
                w.emit(f"if c {w.pick(['==', '!=', 'in'])} {w.string(w.pick(['a', ' ', '-', 'x']))}:")
                with w.indent():
                    w.emit("return True")
            w.emit("return False")
        else:
            flag = w.pick(["ok", "found", "valid", "result"])
            w.emit(f"{flag} = False")
            w.emit(f"if {w.condition(arg)}:")
            with w.indent():
                w.emit(f"{flag} = True")
            w.emit(f"if {flag} == True:" if w.chance(0.3) else f"if {flag}:")
            with w.indent():
                w.output(arg)
            w.emit(f"return {flag}")


def file_name(w: Writer, subject: str) -> str:
    return w.string(f"{subject}.{w.pick(EXTS)}")


def fn_file(w: Writer) -> None:
    """Read, write or append to a file; the function's verb says which."""
    subject = w.pick(SUBJECTS)
    way = w.pick(["read", "read", "write", "write", "append"])
    verb = w.pick({"read": READ_VERBS, "write": WRITE_VERBS, "append": APPEND_VERBS}[way])
    fname = w.pick([f"{verb}_{subject}", f"{verb}_{subject}_file", f"{verb}_{w.noun()}"])
    path = w.pick(["path", "filename", "file_path", "fname"])
    params = [path] if way == "read" else [path, w.pick(["data", "text", "lines", subject])]
    default = w.chance(0.2)
    w.functions.append((fname, len(params)))
    first = params[0] + ("=" + file_name(w, subject) if default and len(params) == 1 else "")
    w.emit(f"def {fname}({', '.join([first] + params[1:])}):")
    mode = {"read": w.pick(["", "", f", {w.string('r')}"]), "write": f", {w.string('w')}",
            "append": f", {w.string('a')}"}[way]
    handle = w.pick(["f", "f", "f", "fh", "fp", "file", "infile" if way == "read" else "outfile"])
    with w.indent():
        docstring(w, f"{verb} the {subject}")
        if w.chance(0.25):      # the older style: open, use, close
            w.emit(f"{handle} = open({path}{mode})")
            file_body(w, way, handle, params)
            w.emit(f"{handle}.close()")
        else:
            w.emit(f"with open({path}{mode}) as {handle}:")
            with w.indent():
                file_body(w, way, handle, params)
        if way == "read":
            w.emit(f"return {w.pick(['data', 'lines', 'text', 'result'])}")


def file_body(w: Writer, way: str, handle: str, params: list[str]) -> None:
    if way == "read":
        k = w.r.random()
        if k < 0.3:
            w.emit(f"data = {handle}.read()")
        elif k < 0.5:
            w.emit(f"data = json.load({handle})")
        elif k < 0.7:
            w.emit(f"lines = {handle}.readlines()")
        else:
            target = w.pick(["lines", "result", "data"])
            w.emit(f"{target} = []")
            w.emit(f"for line in {handle}:")
            with w.indent():
                w.emit(f"{target}.append(line.strip())")
        return
    data = params[1]
    k = w.r.random()
    if k < 0.4:
        w.emit(f"{handle}.write({data})")
    elif k < 0.6:
        w.emit(f"json.dump({data}, {handle})")
    else:
        w.emit(f"for line in {data}:")
        with w.indent():
            w.emit(f"{handle}.write(line + {w.string(chr(92) + 'n')})")


def fn_while(w: Writer) -> None:
    """The everyday while loops: walk a chain, read until done, count to a bound, retry."""
    k = w.r.random()
    if k < 0.25:
        node = w.pick(["node", "current", "head", "item", "cur"])
        fname = w.pick(["walk", "length", "last_node", "to_list", "count_nodes"])
        w.functions.append((fname, 1))
        w.emit(f"def {fname}({node}):")
        with w.indent():
            w.emit("count = 0")
            w.emit(f"while {node}:" if w.chance(0.6) else f"while {node} is not None:")
            with w.indent():
                w.emit("count += 1")
                w.emit(f"{node} = {node}.{w.pick(['next', 'parent', 'child'])}")
            w.emit("return count")
    elif k < 0.5:
        fname = w.pick(["read_all", "main_loop", "run", "ask_user", "serve", "poll"])
        w.functions.append((fname, 0))
        w.emit(f"def {fname}():")
        with w.indent():
            w.emit("while True:")
            with w.indent():
                src = w.pick(["input(" + w.string(w.pick(['> ', 'name: ', 'command: '])) + ")",
                              "f.readline()", "queue.get()", "sock.recv(1024)"])
                var = w.pick(["line", "answer", "command", "data", "msg"])
                w.emit(f"{var} = {src}")
                w.emit(f"if not {var}:" if w.chance(0.6) else f"if {var} == {w.string('quit')}:")
                with w.indent():
                    w.emit(w.pick(["break", "return", "return None"]))
                w.emit(f"{w.pick(['handle', 'process', 'print'])}({var})")
            if w.chance(0.4):
                w.output()
    elif k < 0.75:
        i, n = w.pick([("i", "n"), ("count", "limit"), ("step", "steps"), ("x", "size")])
        fname = w.pick(["countdown", "repeat", "fill", "loop_until", "grow"])
        w.functions.append((fname, 1))
        w.emit(f"def {fname}({n}):")
        with w.indent():
            w.emit(f"{i} = 0")
            w.emit(f"while {i} < {n}:")
            with w.indent():
                if w.chance(0.5):
                    w.output(i)
                w.emit(f"{i} += 1")
            w.emit(f"return {i}")
    else:
        fname = w.pick(["connect", "retry", "try_send", "wait_for", "fetch"])
        w.functions.append((fname, 1))
        w.emit(f"def {fname}(attempts=3):")
        with w.indent():
            w.emit("while attempts > 0:")
            with w.indent():
                w.emit("try:")
                with w.indent():
                    w.emit(f"{w.pick(['send', 'open_connection', 'ping', 'load'])}()")
                    w.emit("return True")
                w.emit(f"except {w.pick(EXCEPTIONS)}:")
                with w.indent():
                    w.emit("attempts -= 1")
            w.emit("return False")


def fn_branch(w: Writer) -> None:
    """Map a value to a label with if / elif / else, or with a conditional expression."""
    arg = w.pick(["score", "value", "age", "n", "size", "temperature", "count", "level"])
    fname = w.pick([f"describe_{arg}", f"{arg}_label", "grade", "classify"])
    w.functions.append((fname, 1))
    w.emit(f"def {fname}({arg}):")
    with w.indent():
        bounds = sorted(w.r.sample(range(1, 100), 3), reverse=True)
        labels = w.r.sample(["high", "low", "medium", "big", "small", "hot", "cold", "ok", "A",
                             "B", "C", "none", "many", "few"], 4)
        if w.chance(0.3):
            w.emit(f"return {w.string(labels[0])} if {arg} > {bounds[0]} else {w.string(labels[1])}")
            return
        if w.chance(0.2):
            w.emit(f"label = {w.string(labels[0])} if {arg} > {bounds[0]} else {w.string(labels[1])}")
            w.output(arg, "label")
            w.emit("return label")
            return
        ways = w.r.randint(1, 3)
        for j in range(ways):
            w.emit(f"{'if' if j == 0 else 'elif'} {arg} {w.pick(['>', '>='])} {bounds[j]}:")
            with w.indent():
                w.emit(f"return {w.string(labels[j])}")
        if w.chance(0.7):
            w.emit("else:")
            with w.indent():
                w.emit(f"return {w.string(labels[-1])}")
        else:
            w.emit(f"return {w.string(labels[-1])}")


def fn_options(w: Writer) -> None:
    """Keyword parameters that default to None and are filled in the body."""
    noun = w.noun()
    fname = w.pick([f"make_{noun}", f"create_{noun}", "connect", f"new_{noun}", "setup"])
    required = w.r.sample(["name", "host", "path", "title", "user", "key"], w.r.randint(0, 2))
    optional = w.r.sample(["port", "timeout", "size", "color", "parent", "owner", "tags",
                           "limit", "verbose", "callback", "retries"], w.r.randint(1, 4))
    w.functions.append((fname, len(required)))
    w.emit(f"def {fname}({signature(w, required + optional, len(optional))}):")
    with w.indent():
        for p in optional[:w.r.randint(1, len(optional))]:
            if w.chance(0.5):
                w.emit(f"if {p} is None:")
                with w.indent():
                    w.emit(f"{p} = {w.scalar() if p != 'tags' else '[]'}")
        fields = ", ".join(f"{w.string(p)}: {p}" for p in required + optional)
        w.emit(f"return {{{fields}}}")


def fn_check(w: Writer) -> None:
    """Validate the arguments and raise with a message."""
    arg = w.pick(["value", "n", "name", "count", "age", "size", "index", w.noun()])
    fname = w.pick([f"set_{arg}", f"validate_{arg}", f"check_{arg}", "update"])
    w.functions.append((fname, 1))
    w.emit(f"def {fname}({arg}):")
    with w.indent():
        for _ in range(w.r.randint(1, 2)):
            w.emit(f"if {w.condition(arg)}:")
            with w.indent():
                w.emit(f"raise {w.pick(EXCEPTIONS)}({w.say(arg)})")
        if w.chance(0.3):
            w.emit(f"assert {w.condition(arg)}, {w.say(arg)}")
        w.output(arg)
        w.emit(f"return {arg}")


def fn_swap(w: Writer) -> None:
    """Code that swaps two names: sorting, Fibonacci, reversing, keeping the smaller first."""
    k = w.r.random()
    if k < 0.3:
        w.functions.append(("fib", 1))
        w.emit("def fib(n):")
        with w.indent():
            a, b = w.pick([("a", "b"), ("x", "y"), ("prev", "cur")])
            w.emit(f"{a}, {b} = 0, 1")
            w.emit("for _ in range(n):")
            with w.indent():
                w.emit(f"{a}, {b} = {b}, {a} + {b}")
            w.emit(f"return {a}")
    elif k < 0.6:
        seq = w.pick(["items", "numbers", "values", "arr", "data"])
        w.functions.append(("bubble_sort", 1))
        w.emit(f"def {w.pick(['bubble_sort', 'sort_list', 'my_sort'])}({seq}):")
        with w.indent():
            w.emit(f"n = len({seq})")
            w.emit("for i in range(n):")
            with w.indent():
                w.emit("for j in range(n - i - 1):")
                with w.indent():
                    w.emit(f"if {seq}[j] > {seq}[j + 1]:")
                    with w.indent():
                        w.emit(f"{seq}[j], {seq}[j + 1] = {seq}[j + 1], {seq}[j]")
            w.emit(f"return {seq}")
    else:
        a, b = w.pick([("a", "b"), ("low", "high"), ("x", "y"), ("start", "end"),
                       ("first", "second"), ("left", "right"), ("lo", "hi")])
        fname = w.pick(["ordered", "min_max", "normalize_range", "span"])
        w.functions.append((fname, 2))
        w.emit(f"def {fname}({a}, {b}):")
        with w.indent():
            w.emit(f"if {a} > {b}:")
            with w.indent():
                w.emit(f"{a}, {b} = {b}, {a}")
            w.emit(f"return {w.pick([f'{a}, {b}', f'{b} - {a}', f'({a}, {b})'])}")


def fn_lambda(w: Writer) -> None:
    """Small functions as values: sort keys, callbacks, factories."""
    noun = w.noun()
    seq = plural(noun)
    fname = w.pick([f"sort_{seq}", f"top_{seq}", f"rank_{seq}", "apply_all"])
    w.functions.append((fname, 1))
    w.emit(f"def {fname}({seq}):")
    with w.indent():
        k = w.r.random()
        if k < 0.4:
            key = w.pick(["x[1]", "x[0]", "len(x)", "-x", "x.lower()", "x.name", "x.score"])
            w.emit(f"return sorted({seq}, key=lambda x: {key})")
        elif k < 0.7:
            name = w.pick(["double", "square", "shout", "clean", "to_key", "inc"])
            body = w.pick(["x * 2", "x * x", "x.upper()", "x.strip()", "str(x)", "x + 1"])
            w.emit(f"{name} = lambda x: {body}")
            w.emit(f"return [{name}(x) for x in {seq}]")
        else:
            name = w.pick(["make_list", "on_done", "default", "empty", "factory", "get_zero"])
            body = w.pick(["[]", "{}", "0", "None", f"print({w.string()})", "set()"])
            w.emit(f"{name} = lambda: {body}")
            w.emit(f"result = {name}()")
            w.emit(f"for x in {seq}:")
            with w.indent():
                w.emit(w.pick(["result.append(x)", "print(x, result)", "result = x"]))
            w.emit("return result")


def fn_grid(w: Writer) -> None:
    """Lists of lists: a grid built in loops or written out, and walked row by row."""
    name = w.pick(["grid", "matrix", "board", "table", "rows", "cells"])
    fname = w.pick([f"make_{name}", f"print_{name}", f"sum_{name}", f"{name}_total"])
    w.functions.append((fname, 0))
    w.emit(f"def {fname}():")
    with w.indent():
        if w.chance(0.5):
            w.emit(f"{name} = {w.literal_list('nested')}")
        else:
            w.emit(f"{name} = [[0] * {w.r.randint(2, 5)} for _ in range({w.r.randint(2, 5)})]")
        w.emit("total = 0")
        w.emit(f"for row in {name}:")
        with w.indent():
            w.emit("for cell in row:")
            with w.indent():
                w.emit("total += cell")
        w.emit("return total" if w.chance(0.6) else f"return {name}")


FUNCTIONS = [fn_collect, fn_collect, fn_search, fn_predicate, fn_file, fn_file, fn_while,
             fn_branch, fn_options, fn_check, fn_swap, fn_lambda, fn_grid]


# -- classes and scripts -----------------------------------------------------------------------

def klass(w: Writer) -> None:
    """A class whose __init__ stores its arguments, with a few methods that use them."""
    noun = w.noun()
    name = "".join(part.capitalize() for part in noun.split("_"))
    if w.chance(0.3):
        name = w.pick(ADJS).capitalize() + name
    fields = w.r.sample(["name", "age", "title", "price", "size", "owner", "color", "score",
                         "value", "count", "text", "key", "parent", "level", "email", "url",
                         "width", "height", "x", "y", "label", "status"], w.r.randint(1, 4))
    w.emit(f"class {name}{w.pick(['', '', '', '(object)', '(Base)', '(Exception)'])}:")
    with w.indent():
        docstring(w, f"a {noun.replace('_', ' ')}")
        w.emit(f"def __init__(self, {signature(w, fields, w.r.randint(0, len(fields) - 1))}):")
        with w.indent():
            for f in fields:
                w.emit(f"self.{f} = {f}")
            extra = w.pick([None, None, ("items", "[]"), ("tags", "set()"), ("count", "0"),
                            ("history", "[]"), ("text", '""'), ("cache", "{}")])
            if extra and extra[0] not in fields:
                w.emit(f"self.{extra[0]} = {extra[1]}")
        if w.chance(0.6):
            w.emit()
            w.emit("def __repr__(self):")
            with w.indent():
                shown = ", ".join(f"{f}={{self.{f}}}" for f in fields[:2])
                w.emit(f"return f{w.q}{name}({shown}){w.q}")
        if extra and extra[0] not in fields and w.chance(0.8):
            attr, init = extra
            w.emit()
            w.emit(f"def add(self, {noun}):")
            with w.indent():
                if init == "[]":
                    w.emit(f"self.{attr}.append({noun})")
                elif init == "set()":
                    w.emit(f"self.{attr}.add({noun})")
                elif init == "{}":
                    w.emit(f"self.{attr}[{noun}] = True")
                elif init == '""':
                    w.emit(f"self.{attr} += {noun}")
                else:
                    w.emit(f"self.{attr} += 1")
        for _ in range(w.r.randint(0, 2)):
            f = w.pick(fields)
            w.emit()
            k = w.r.random()
            if k < 0.4:
                w.emit(f"def is_{w.pick(ADJS)}(self):")
                with w.indent():
                    w.emit(f"return {w.condition('self.' + f)}")
            elif k < 0.7:
                w.emit(f"def set_{f}(self, {f}):")
                with w.indent():
                    if w.chance(0.5):
                        w.emit(f"if {f} is None:")
                        with w.indent():
                            w.emit(f"raise ValueError({w.say(f)})")
                    w.emit(f"self.{f} = {f}")
            else:
                w.emit("def show(self):")
                with w.indent():
                    w.output(f"self.{f}")


def script(w: Writer) -> None:
    """Top-level statements: some data, a loop over it, calls of what the module defined."""
    noun = w.noun()
    seq = plural(noun)
    k = w.r.random()
    if k < 0.4:
        w.emit(f"{seq} = {w.literal_list()}")
    elif k < 0.7:
        w.emit(f"{w.pick(['config', 'settings', 'options', 'data', 'info'])} = {w.literal_dict()}")
        w.emit(f"{seq} = {w.literal_list()}")
    else:
        w.emit(f"{seq} = {w.literal_list('nested')}")
    w.emit(f"for {noun} in {seq}:" if w.chance(0.7) else f"for i, {noun} in enumerate({seq}):")
    with w.indent():
        if w.chance(0.4):
            w.emit(f"if {w.condition(noun)}:")
            with w.indent():
                w.output(noun)
        else:
            w.output(noun)
    for fname, n in w.r.sample(w.functions, min(len(w.functions), w.r.randint(0, 2))):
        args = ", ".join([seq] + [w.scalar() for _ in range(n - 1)]) if n else ""
        if w.chance(0.5):
            w.emit(f"result = {fname}({args})")
            w.output("result")
        else:
            w.emit(f"print({fname}({args}))")


IMPORTS = ["import os", "import sys", "import json", "import math", "import random",
           "import logging", "import re", "from collections import defaultdict",
           "from pathlib import Path", "import time"]


def program(seed: int | str) -> str:
    """One module: imports, a few functions and classes, maybe a script part and a main guard."""
    w = Writer(random.Random(seed))
    r = w.r
    if r.random() < 0.25:
        w.emit(f'"""{w.pick(PHRASES).capitalize()}."""')
    imports = r.sample(IMPORTS, r.randint(0, 3))
    for line in sorted(imports):
        w.emit(line)
    if "import logging" in imports:
        w.emit()
        w.emit("logger = logging.getLogger(__name__)")
    if imports:
        w.emit()
    for _ in range(r.randint(1, 4)):
        k = r.random()
        if k < 0.65:
            w.pick(FUNCTIONS)(w)
        elif k < 0.85:
            klass(w)
        else:
            script(w)
        w.emit()
        w.emit()
    if r.random() < 0.3:
        w.emit('if __name__ == "__main__":')
        with w.indent():
            script(w)
    return "\n".join(w.lines).strip("\n") + "\n"
