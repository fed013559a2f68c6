"""Every answer the built-in task suite contrasts, in one place.

Each task contrasts two single tokens, so the tokenizer is trained with every answer here
reserved as one token (`tokenizer.train_tokenizer`: extra occurrences teach BPE the merges;
nothing is forced into the corpus). Two tasks answer with an identifier (` value` after
`self.value =`, ` b` to finish `a, b = b,`): their names are listed here and drawn from by the
tasks, so that any tokenizer trained with this list can pose them.
"""

# class_init: the parameter copied in `self.x = x`.
PARAM_NAMES = ["value", "count", "name", "item", "data", "result", "key", "path", "line", "size",
               "index", "text", "node", "state", "mode", "user", "token", "col", "source", "config",
               "prefix", "start", "current", "other", "child", "first", "last", "message", "url",
               "args", "root", "base", "filename", "parser", "values", "lines", "time", "encoding",
               "header", "context", "client", "server", "handler", "output", "code", "error",
               "errors", "version", "group", "x", "y", "z", "n", "k", "attr", "char", "cmd",
               "command", "default", "event", "frame", "func", "file", "files", "instance",
               "module", "msg", "names", "obj", "option", "pos", "sock", "socket", "stream",
               "string", "thread", "widget", "end", "number", "method", "spec", "loop", "out"]

# var_swap: the two names of `a, b = b, a` (no `self`, builtins such as `next` or `max`, or
# words odd as variables such as `by` or `this`).
SWAP_NAMES = ["a", "after", "args", "b", "base", "c", "child", "col", "config", "count", "cur",
              "current", "d", "data", "end", "errors", "files", "first", "i", "index", "item",
              "j", "k", "key", "last", "line", "lines", "lo", "m", "message", "mode", "n",
              "name", "names", "new", "node", "other", "p", "path", "prefix", "result", "root",
              "s", "size", "source", "start", "state", "t", "temp", "text", "token", "u",
              "user", "v", "value", "values", "w", "x", "y", "z"]

# Each is one pre-token (the tokenizer refuses a reserved string its pre-tokenizer splits).
PUNCTUATION = (
    '")\n', "')\n",              # single_double_quote
    "]]\n", "]\n",               # bracket_counting
    ".add", " +=",                # set_or_string, set_or_string_fixedvarname
    ")", ")\n",                   # with_as
    ":", ",",                     # bracket_brace
    "r", "w",                     # with_open
    " in", ":\n",                 # for_while, else_elif, if_ternary, var_if, while_return_true
    " not", " else",              # else_elif, if_ternary
    " {",                         # fstring_brace
    " ==", " =",                  # if_equals
    " enumerate", " range",       # enumerate_range
    "\n",                         # var_if, while_return_true
    "=None", "):\n", "():\n",     # final_kwarg, lambda_func
    "   ", "       ", "           ", "               ",  # indent_for: indentation tokens
)

TASK_ANSWERS = PUNCTUATION + tuple(" " + n for n in sorted(set(PARAM_NAMES) | set(SWAP_NAMES)))
