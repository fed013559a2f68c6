import ast

from sparsecircuits.pygen import READ_VERBS, WRITE_VERBS, program


def test_programs_parse_and_are_a_function_of_their_seed():
    texts = [program(f"0-{i}") for i in range(300)]
    for t in texts:
        ast.parse(t)
    assert texts == [program(f"0-{i}") for i in range(300)]
    assert len(set(texts)) == 300


def _open_modes(fn: ast.FunctionDef) -> list[str]:
    modes = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
            modes.append(node.args[1].value if len(node.args) > 1 else "r")
    return modes


def test_a_function_opens_its_file_as_its_name_says():
    """`load_notes` reads, `save_report` writes: the regularity a model can learn from names."""
    seen = {"read": 0, "write": 0}
    for i in range(1000):
        for fn in ast.walk(ast.parse(program(f"0-{i}"))):
            if not isinstance(fn, ast.FunctionDef) or not _open_modes(fn):
                continue
            verb = fn.name.split("_")[0]
            if verb in READ_VERBS:
                assert set(_open_modes(fn)) == {"r"}, fn.name
                seen["read"] += 1
            elif verb in WRITE_VERBS:
                assert set(_open_modes(fn)) == {"w"}, fn.name
                seen["write"] += 1
    assert min(seen.values()) > 50


def test_a_name_is_grown_as_what_it_was_bound_to():
    """A name bound to `set()` grows with `.add`, one bound to an empty string with `+=`, a list
    with `.append`, in the same function."""
    checked = 0
    for i in range(1000):
        for fn in ast.walk(ast.parse(program(f"0-{i}"))):
            if not isinstance(fn, ast.FunctionDef):
                continue
            bound = {}
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    v = node.value
                    kind = ("set" if isinstance(v, ast.Call) and getattr(v.func, "id", "") == "set"
                            and not v.args else
                            "str" if isinstance(v, ast.Constant) and v.value == "" else
                            "list" if isinstance(v, ast.List) and not v.elts else None)
                    if kind:
                        bound[node.targets[0].id] = kind
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        isinstance(node.func.value, ast.Name) and node.func.value.id in bound:
                    method, kind = node.func.attr, bound[node.func.value.id]
                    if method in ("add", "append"):
                        assert (kind, method) in (("set", "add"), ("list", "append")), fn.name
                        checked += 1
                if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and \
                        bound.get(node.target.id) in ("set", "list"):
                    raise AssertionError(f"{fn.name}: += on a {bound[node.target.id]}")
    assert checked > 100


def test_programs_hold_no_task_prompt():
    """The generator is written from the language, not the suite: no test prompt is in it.

    Prompts shorter than 40 characters (a few tokens, e.g. `for block`) are common Python
    anywhere and are not checked."""
    from sparsecircuits.tasks import get_tasks
    text = "\n".join(program(f"0-{i}") for i in range(2000))
    checked = 0
    for task in get_tasks("all"):
        for p in task.pairs(16, split="test", at_most=True):
            for prompt in (p.clean.strip(), p.corrupt.strip()):
                if len(prompt) >= 40:
                    checked += 1
                    assert prompt not in text, (task.name, prompt)
    assert checked > 200
