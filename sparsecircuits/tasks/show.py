"""A task's pairs as text a person can read, with the answer tokens the tokenizer makes, and
plain-words flags on answers that cannot work: not a single token, or (given the model) never
the token the model would naturally predict there."""

from __future__ import annotations

from .core import Task, answer_problem, is_natural, pieces
from .metrics import last_logits


def show_pairs(task: Task, tok, n: int = 5, split: str = "test", seed: int = 0,
               tail: int = 6, model=None) -> str:
    """The last `tail` lines of each prompt, the answers and their token ids. With `model`,
    also flag prompts where the model's top next token is a longer token that begins with the
    answer (the answer `.` when the tokenizer writes `.append` as one token)."""
    pairs = task.pairs(n, split, seed)
    rows = [(i, p, label, prompt, answer) for i, p in enumerate(pairs, 1)
            for label, prompt, answer in (("clean", p.clean, p.target),
                                          ("corrupt", p.corrupt, p.target if p.constant else p.alt))]
    tops = None
    if model is not None:
        tops = last_logits(model, tok, [r[3] for r in rows]).argmax(-1).tolist()

    lines = [f"{task.name}: {task.description}", f"pairs differ: {task.differs_doc}", ""]
    problems, longer = {}, []
    for k, (i, p, label, prompt, answer) in enumerate(rows):
        if label == "clean":
            lines.append(f"--- pair {i} ({split}, seed {seed})")
        ids = tok.encode(answer, add_special_tokens=False).ids
        line = f"[{label}] -> {answer!r} = token {ids} {pieces(tok, answer)}"
        if len(ids) != 1:
            # both answers are scored after both prompts, so the fix is the pair's, not one answer's
            problem = answer_problem(tok, (p.target, p.alt))
            problems.setdefault(problem, 0)
            problems[problem] += 1
            line += f"  <- NOT A SINGLE TOKEN: {problem}"
        elif tops is not None and tops[k] != ids[0]:
            top = tok.decode([tops[k]])
            if top.startswith(answer):
                longer.append((answer, top))
                line += (f"  <- the model's top next token here is {top!r}, a longer token that "
                         f"begins with the answer {answer!r}")
                if is_natural(tok, prompt, top, ""):
                    line += (f": the tokenizer writes {top!r} as one token after this prompt, so "
                             f"the model may never see {answer!r} alone here; use the answer "
                             f"{top!r}")
        lines.append(line)
        shown = "\n".join(prompt.split("\n")[-tail:])
        lines.extend("    | " + ln for ln in shown.split("\n"))
        lines[-1] += "\u2038"  # a caret marks where the answer goes
        if label == "corrupt":
            lines.append("")
    for problem, count in problems.items():
        lines.append(f"warning: {count} of {len(rows)} answers are not single tokens: {problem}.")
    if longer:
        answer, top = longer[0]
        lines.append(f"warning: on {len(longer)} of {len(rows)} prompts the model's top next "
                     f"token is a longer token that begins with the answer (e.g. {top!r} for "
                     f"{answer!r}): the answer may never be the model's natural next token.")
    return "\n".join(lines)
