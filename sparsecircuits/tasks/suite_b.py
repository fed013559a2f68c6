"""Tasks of the paper's suite: class attributes, `with`/`open`, dict or list, and the
keyword-follows tasks (for/while, else/elif, f-strings, if/ternary).

Conventions as in suite_a.py: every generator draws its names, contents and contexts from
disjoint train/val/test shares, so test pairs use values a circuit never saw during pruning.
Each prompt ends on a whole pre-token (a name, a number, a keyword or ` '`), so the answer is
the very token the tokenizer emits when the code goes on naturally.
"""

from __future__ import annotations

import random
import re

from ..answers import PARAM_NAMES
from .core import Pair, Task, last_line_differs, split_half
from .words import NOUNS, VARS, VERBS, indent, preamble, sentence


def _replaced_once(clean: str, corrupt: str, old: str, new: str) -> bool:
    """True if `corrupt` is `clean` with one occurrence of `old` replaced by `new`."""
    at = clean.find(old)
    while at != -1:
        if clean[:at] + new + clean[at + len(old):] == corrupt:
            return True
        at = clean.find(old, at + 1)
    return False


def _one_swap(*swaps: tuple[str, str]):
    """A `differs` check: the corrupt prompt is the clean one with one of `swaps` applied once."""
    def differs(pair: Pair) -> bool:
        return any(_replaced_once(pair.clean, pair.corrupt, old, new) for old, new in swaps)
    return differs


# Names a line may end on, and conditions and statements to fill blocks with. A condition
# never ends in `)`, `]` or a quote, which would glue to the `:\n` that follows it.
def _condition(rng: random.Random, split: str) -> str:
    names, nouns = split_half(VARS, split, "cond-var"), split_half(NOUNS, split, "cond-noun")
    v, w, group = rng.choice(names), rng.choice(names), rng.choice(nouns)
    n = rng.randint(0, 20)
    return rng.choice([v, f"not {v}", f"{v} is None", f"{v} is not None", f"{v} > {n}",
                       f"{v} < {w}", f"{v} == {n}", f"{v} >= {w}", f"{v} in {group}",
                       f"{v} not in {group}", f"len({group}) > {n}", f"self.{v}",
                       f"{v} and {w}", f"{v} or not {w}", f"{v} % 2 == 0", f"{v} != {w}"])


def _statement(rng: random.Random, split: str) -> str:
    names, nouns = split_half(VARS, split, "stmt-var"), split_half(NOUNS, split, "stmt-noun")
    verbs = split_half(VERBS, split, "stmt-verb")
    v, w = rng.choice(names), rng.choice(names)
    return rng.choice([f"{v} = {rng.randint(0, 9)}", f"{v} += 1", f"return {v}", "return None",
                       f"{rng.choice(verbs)}({v})", f"{rng.choice(nouns)}.append({v})",
                       f"print({v})", f"{v} = {w}", f"{v} = None", f"{v} = {rng.choice(verbs)}({w})",
                       f"self.{v} = {w}", "pass"])


def _block(rng: random.Random, split: str, pad: str, most: int) -> str:
    """1 to `most` statement lines at `pad`, stopping after a `return` or `pass`."""
    lines = []
    for _ in range(rng.randint(1, most)):
        lines.append(_statement(rng, split))
        if lines[-1].startswith(("return", "pass")):    # nothing useful follows these
            break
    return "".join(f"{pad}{line}\n" for line in lines)


# ----------------------------------------------------------------------------- class_init

_CLASS_BASES = ["Config", "Node", "Client", "Handler", "Record", "Point", "Item", "Job", "Task",
                "Request", "Response", "Event", "Parser", "Cache", "Session", "Worker",
                "Reader", "Writer", "Buffer", "Window", "Model", "Layer", "Entry", "Message",
                "Token", "Field", "Column", "Plugin", "Stream", "Query", "Rule", "Frame"]
_CLASS_PREFIXES = ["", "", "Base", "Simple", "Http", "File", "Async", "Local", "Remote",
                   "Default", "Custom", "Tree", "Text", "Json"]
_DOCSTRINGS = ["Holds the settings of one run.", "A small record type.", "Keeps one connection.",
               "State shared by the workers.", "One parsed entry.", "Wraps the raw response."]
_DEFAULTS = ["None", "None", "0", "1", "False", "True", "()", '""']

# Attributes set from literals, not parameters: the underscore keeps them apart from
# `PARAM_NAMES`.
_EXTRA_ATTRS = ["self._cache = {}", "self._lock = threading.Lock()", "self._closed = False",
                "self._pending = []", "self._seen = set()", "self._buffer = []",
                "self._count = 0", "self._handlers = {}", "self._started = None"]


def _class_init(rng: random.Random, split: str) -> Pair:
    params = rng.sample(split_half(PARAM_NAMES, split, "init-param"), rng.randint(2, 6))
    base = rng.choice(split_half(_CLASS_BASES, split, "init-class"))
    cls = rng.choice(_CLASS_PREFIXES) + base
    other_base = rng.choice([b for b in _CLASS_BASES if b != base])
    parent = rng.choice(["", "", "(object)", "(Base)", f"({other_base})"])
    first_default = rng.randint(1, len(params))    # parameters from here on have defaults
    signature = ", ".join(p if i < first_default else f"{p}={rng.choice(_DEFAULTS)}"
                          for i, p in enumerate(params))
    # Most code assigns in signature order; some does not.
    order = params[:] if rng.random() < 0.7 else rng.sample(params, len(params))
    assigned = rng.randint(0, len(params) - 2)     # leave at least two to choose from
    a, b = rng.sample(order[assigned:], 2)
    attr = "self._" if rng.random() < 0.2 else "self."

    body = []
    if parent and rng.random() < 0.5:
        body.append("super().__init__()")
    body += [f"{attr}{p} = {p}" for p in order[:assigned]]
    for extra in rng.sample(_EXTRA_ATTRS, rng.randint(0, 2)):
        body.insert(rng.randint(0, len(body)), extra)
    head = f"class {cls}{parent}:\n"
    if rng.random() < 0.3:
        head += f'    """{rng.choice(_DOCSTRINGS)}"""\n\n'
    if rng.random() < 0.3:
        head += f"    limit = {rng.randint(1, 100)}\n\n"
    head += f"    def __init__(self, {signature}):\n"
    head += "".join(f"        {line}\n" for line in body)
    return Pair(clean=f"{head}        {attr}{a} =", corrupt=f"{head}        {attr}{b} =",
                target=f" {a}", alt=f" {b}", clean_rest="\n", corrupt_rest="\n")


def _other_attribute(clean_last: str, corrupt_last: str) -> bool:
    found = [re.fullmatch(r"( *self\._?)(\w+) =", line) for line in (clean_last, corrupt_last)]
    return all(found) and found[0][1] == found[1][1] and found[0][2] != found[1][2]


# ----------------------------------------------------------------------------- with_as

_PATH_NAMES = ["path", "filename", "fname", "file_path", "config_path", "log_file",
               "input_file", "output_path", "cache_file", "target", "source", "dest",
               "report_path", "src", "tmp_path", "manifest", "settings_file", "data_file",
               "out_file", "index_path", "schema_path", "lock_file", "name", "location"]
_HANDLES = ["f", "fh", "fp", "handle", "stream", "infile", "outfile", "fd", "file_obj",
            "src", "dst", "out", "reader", "log", "fobj", "conf"]


def _path_expr(rng: random.Random, split: str) -> str:
    # Always ends in a name: `")` or `))` would glue to the closing parenthesis.
    name = rng.choice(split_half(_PATH_NAMES, split, "path-name"))
    return rng.choice([name, name, f"self.{name}", f"args.{name}", f"options.{name}",
                       f"root / {name}", f"base_dir + {name}", f"{name}, mode",
                       f"{name}, encoding=encoding", f"{name}, mode=mode"])


def _with_as(rng: random.Random, split: str) -> Pair:
    path = _path_expr(rng, split)
    handle = rng.choice(split_half(_HANDLES, split, "with-handle"))
    pad = indent(rng)
    head = preamble(rng, split, pad)
    use = rng.choice([f"text = {handle}.read()", f"lines = {handle}.readlines()",
                      f"data = json.load({handle})", f"{handle}.write(text)",
                      f"for line in {handle}:", f"reader = csv.reader({handle})"])
    return Pair(clean=f"{head}{pad}with open({path}", corrupt=f"{head}{pad}{handle} = open({path}",
                target=")", alt=")\n", clean_rest=f" as {handle}:\n",
                corrupt_rest=f"{pad}{use}\n")


def _with_or_assigned(clean_last: str, corrupt_last: str) -> bool:
    clean = re.fullmatch(r"( *)with (open\(.*)", clean_last)
    corrupt = re.fullmatch(r"( *)\w+ = (open\(.*)", corrupt_last)
    return bool(clean and corrupt) and clean.groups() == corrupt.groups()


# ----------------------------------------------------------------------------- bracket_brace

def _bracket_item(rng: random.Random, split: str, last: bool = False) -> str:
    # The last item is a name or a number: a string would glue its quote to the `:`.
    kind = rng.randrange(2 if last else 3)
    if kind == 0:
        return str(rng.randint(0, 999))
    if kind == 1:
        return rng.choice(split_half(VARS, split, "brace-key"))
    return repr(rng.choice(split_half(NOUNS, split, "brace-str")))


def _bracket_value(rng: random.Random, split: str) -> str:
    # No commas or braces inside, so `_dict_keys_as_list` can strip values reliably.
    return rng.choice([str(rng.randint(0, 99)), rng.choice(split_half(VARS, split, "brace-val")),
                       repr(rng.choice(split_half(NOUNS, split, "brace-val-str"))),
                       "None", "True", "False", "[]", "0.5"])


def _bracket_brace(rng: random.Random, split: str) -> Pair:
    name = rng.choice(split_half(VARS, split, "brace-name"))
    verb = rng.choice(split_half(VERBS, split, "brace-verb"))
    opener = rng.choice([f"{name} = ", f"{name} = ", "return ", f"self.{name} = ",
                         f"{name}.append(", f"{verb}("])
    close = ")" if opener.endswith("(") else ""
    keys = [_bracket_item(rng, split) for _ in range(rng.randint(0, 4))]
    keys.append(_bracket_item(rng, split, last=True))
    earlier = "".join(f"{k}: {_bracket_value(rng, split)}, " for k in keys[:-1])
    pad = indent(rng)
    head = preamble(rng, split, pad)
    value = _bracket_value(rng, split)
    return Pair(clean=f"{head}{pad}{opener}{{{earlier}{keys[-1]}",
                corrupt=f"{head}{pad}{opener}[{', '.join(keys)}",
                target=":", alt=",", clean_rest=f" {value}}}{close}\n",
                corrupt_rest=f" {value}]{close}\n")


def _dict_keys_as_list(pair: Pair) -> bool:
    head, _, items = pair.clean.rpartition("{")
    return pair.corrupt == f"{head}[{re.sub(r': [^,]*', '', items)}"


# ----------------------------------------------------------------------------- with_open

# Each pair names the same thing for reading and for writing; exactly one of them appears in
# a prompt, once, as a function's verb, in a path, or in a log message or comment.
_FUNCTION_VERBS = [("load", "save"), ("read", "write"), ("import", "export"), ("parse", "dump"),
                   ("restore", "backup"), ("fetch", "store"), ("deserialize", "serialize"),
                   ("get", "put"), ("from", "to"), ("unpickle", "pickle")]
_PATH_WORDS = [("input", "output"), ("in", "out"), ("src", "dst"), ("source", "target"),
               ("read", "write"), ("load", "save"), ("inbox", "outbox"), ("incoming", "outgoing")]
_LOG_WORDS = [("loading", "saving"), ("reading", "writing"), ("parsing", "dumping"),
              ("importing", "exporting"), ("restoring", "storing"), ("opening", "creating"),
              ("fetching", "recording")]
_COMMENT_WORDS = [("read", "write"), ("load", "save"), ("fetch", "store"),
                  ("parse", "dump"), ("import", "export"), ("collect", "persist")]
_MODE_CONTEXTS = {"function": _FUNCTION_VERBS, "path": _PATH_WORDS, "log": _LOG_WORDS,
                  "comment": _COMMENT_WORDS}
_MODE_SWAPS = [p for pairs in _MODE_CONTEXTS.values() for p in pairs]

# Verbs that imply neither reading nor writing, for functions whose name is not the context.
_NEUTRAL_VERBS = ["process", "handle", "check", "update", "build", "sort", "merge", "validate",
                  "format", "compute", "clean", "convert", "render", "split"]


def _with_open(rng: random.Random, split: str) -> Pair:
    noun = rng.choice(split_half(NOUNS, split, "mode-noun"))
    kind = rng.choice(list(_MODE_CONTEXTS))
    keys = split_half(["/".join(p) for p in _MODE_CONTEXTS[kind]], split, f"mode-{kind}")
    read, write = rng.choice(keys).split("/")
    # One template holds `{}` exactly once, where the reading or writing word goes.
    param = rng.choice(["path", "filename", "fname"])
    path, params = rng.choice([(param, param), (param, f"self, {param}"),
                               (f"self.{noun}_path", "self"),
                               ("os.path.join(root, name)", "root, name")])
    fn = f"{rng.choice(split_half(_NEUTRAL_VERBS, split, 'mode-neutral'))}_{noun}"
    body = []
    if kind == "function":
        fn = f"{noun}_{{}}_file" if read == "from" else rng.choice([f"{{}}_{noun}", "{}"])
    elif kind == "path":
        ext = rng.choice(["txt", "csv", "json", "log"])
        path, params = rng.choice([("args.{}_path", "args"), ("self.{}_file", "self"),
                                   ("config.{}_path", ""), (f'"{noun}_{{}}.{ext}"', ""),
                                   ("os.path.join({}_dir, name)", "name")])
    elif kind == "log":
        body.append(rng.choice([f'print("{{}} %s" % {path})', f'logger.info("{{}} %s", {path})',
                                f'log.debug("{{}} {noun}")', f'print("{{}}", {path})']))
    else:
        body.append(f"# {{}} the {noun}")
    if rng.random() < 0.4:    # an unrelated statement before the context line
        body.insert(0, rng.choice([f"{noun} = []", f"count = {rng.randint(0, 3)}",
                                   'encoding = "utf-8"', "lines = None"]))
    opening = rng.choice(["with open(", "with open(", "f = open(", "fh = open("])
    template = (f"def {fn}({params}):\n"
                + "".join(f"    {line}\n" for line in body) + f"    {opening}{path}, '")
    rest = "') as f:\n" if opening.startswith("with") else "')\n"
    return Pair(clean=template.replace("{}", read), corrupt=template.replace("{}", write),
                target="r", alt="w", clean_rest=rest, corrupt_rest=rest)


# ----------------------------------------------------------------------------- for_while

# Names that read naturally after both `for` and `while` (a linked-list walk, a read loop).
_LOOP_NAMES = ["node", "current", "line", "chunk", "item", "job", "task", "entry", "block",
               "batch", "frame", "event", "msg", "packet", "token", "page", "cursor", "child",
               "parent", "head", "candidate", "data", "record", "part", "buf", "match"]


def _for_while(rng: random.Random, split: str) -> Pair:
    name = rng.choice(split_half(_LOOP_NAMES, split, "loop-name"))
    source = rng.choice(split_half(NOUNS, split, "loop-src"))
    pad = indent(rng)
    head = preamble(rng, split, pad)
    if rng.random() < 0.3:
        head += f"{pad}{name} = {rng.choice(['self.head', 'queue.pop()', 'None', 'first'])}\n"
    return Pair(clean=f"{head}{pad}for {name}", corrupt=f"{head}{pad}while {name}",
                target=" in", alt=":\n", clean_rest=f" {source}:\n",
                corrupt_rest=f"{pad}    {_statement(rng, split)}\n")


# ----------------------------------------------------------------------------- else_elif

def _else_elif(rng: random.Random, split: str) -> Pair:
    pad = indent(rng)
    inner = pad + "    "
    head = preamble(rng, split, pad)
    block = f"{pad}if {_condition(rng, split)}:\n"
    block += _block(rng, split, inner, 3)
    if rng.random() < 0.3:
        block += f"{pad}elif {_condition(rng, split)}:\n" + _block(rng, split, inner, 2)
    name = rng.choice(split_half(VARS, split, "elif-name"))
    return Pair(clean=f"{head}{block}{pad}else", corrupt=f"{head}{block}{pad}elif",
                target=":\n", alt=" not", clean_rest=f"{inner}{_statement(rng, split)}\n",
                corrupt_rest=f" {name}:\n")


# ----------------------------------------------------------------------------- fstring_brace

_MESSAGE_CALLS = ["print(", "log(", "logger.info(", "logger.warning(", "raise ValueError(",
                  "raise KeyError(", "messages.append(", "errors.append(", "warnings.warn(",
                  "self.log(", "parser.error(", "sys.stderr.write(", "click.echo(", "emit(",
                  "lines.append(", "self.fail("]


def _fstring_brace(rng: random.Random, split: str) -> Pair:
    call = rng.choice(split_half(_MESSAGE_CALLS, split, "fstring-call"))
    text = sentence(rng, split, rng.randint(1, 6))   # letters only: ` {` stays its own token
    name = rng.choice(split_half(VARS, split, "fstring-name"))
    pad = indent(rng)
    head = preamble(rng, split, pad)
    return Pair(clean=f'{head}{pad}{call}f"{text}', corrupt=f'{head}{pad}{call}"{text}',
                target=" {", alt='")\n', clean_rest=f'{name}}}")\n',
                corrupt_rest=f"{pad}{_statement(rng, split)}\n")


# ----------------------------------------------------------------------------- if_ternary

def _if_ternary(rng: random.Random, split: str) -> Pair:
    cond = _condition(rng, split)
    names = split_half(VARS, split, "ternary-name")
    name = rng.choice(names)
    value, other = (rng.choice([rng.choice(names), str(rng.randint(0, 9)), "None", "True",
                                f"{rng.choice(names)} + 1", '"default"', "[]"]) for _ in range(2))
    pad = indent(rng)
    head = preamble(rng, split, pad)
    return Pair(clean=f"{head}{pad}if {cond}", corrupt=f"{head}{pad}{name} = {value} if {cond}",
                target=":\n", alt=" else", clean_rest=f"{pad}    {_statement(rng, split)}\n",
                corrupt_rest=f" {other}\n")


def _ternary_adds_assignment(clean_last: str, corrupt_last: str) -> bool:
    clean = re.fullmatch(r"( *)(if .*)", clean_last)
    corrupt = re.fullmatch(r"( *)\w+ = .+? (if .*)", corrupt_last)
    return bool(clean and corrupt) and clean.groups() == corrupt.groups()


TASKS = [
    Task("class_init",
         "copy the parameter name in `self.x = x`: ` a` after `self.a =`, ` b` after `self.b =`",
         _class_init, differs_doc="only the attribute name on the last `self.<name> =` line differs",
         differs=last_line_differs(_other_attribute)),
    Task("with_as",
         "`with open(path` is closed by `)` (then ` as f:`), `f = open(path` by `)\\n`",
         _with_as, differs_doc="the last line starts `with open(` or `<name> = open(`; "
         "the path and everything before are the same", differs=last_line_differs(_with_or_assigned)),
    Task("bracket_brace",
         "after a key in a dict comes `:`, after an item in a list `,`",
         _bracket_brace, differs_doc="the same keys, in a dict `{k: v, ..., k` or in a list "
         "`[k, ..., k`; nothing else differs", differs=_dict_keys_as_list),
    Task("with_open",
         "open a file with mode `r` when the context reads it, `w` when the context writes it",
         _with_open, differs_doc="only one word that implies reading or writing differs "
         "(in the function name, the path, a log message or a comment)",
         differs=_one_swap(*_MODE_SWAPS)),
    Task("for_while", "`for x` goes on with ` in`, `while x` with `:\\n`", _for_while,
         differs_doc="only the keyword differs: for or while", differs=_one_swap(("for", "while"))),
    Task("else_elif", "`else` goes on with `:\\n`, `elif` with a condition (` not`)", _else_elif,
         differs_doc="only the last keyword differs: else or elif",
         differs=_one_swap(("else", "elif"))),
    Task("fstring_brace",
         'an f-string message goes on with ` {`, a plain string ends with `")\\n`',
         _fstring_brace, differs_doc="only the f prefix of the string differs",
         differs=_one_swap(('f"', '"'))),
    Task("if_ternary", "`if cond` goes on with `:\\n`, `x = a if cond` with ` else`",
         _if_ternary, differs_doc="the last line gains `<name> = <value> ` before `if`; "
         "the condition and everything before are the same",
         differs=last_line_differs(_ternary_adds_assignment)),
]
