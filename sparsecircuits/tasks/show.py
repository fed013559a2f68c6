"""A task's pairs as text a person can read, with the answer tokens the tokenizer makes."""

from __future__ import annotations

from .core import Task


def show_pairs(task: Task, tok, n: int = 5, split: str = "test", seed: int = 0,
               tail: int = 6) -> str:
    """The last `tail` lines of each prompt, the answers and their token ids."""
    lines = [f"{task.name}: {task.description}", f"pairs differ: {task.differs_doc}", ""]
    for i, p in enumerate(task.pairs(n, split, seed), 1):
        lines.append(f"--- pair {i} ({split}, seed {seed})")
        for label, prompt, answer in (("clean", p.clean, p.target), ("corrupt", p.corrupt,
                                                                     p.alt if not p.constant
                                                                     else p.target)):
            enc = tok.encode(answer, add_special_tokens=False)
            shown = "\n".join(prompt.split("\n")[-tail:])
            lines.append(f"[{label}] -> {answer!r} = token {enc.ids} {enc.tokens}")
            lines.extend("    | " + ln for ln in shown.split("\n"))
            lines[-1] += "\u2038"  # a caret marks where the answer goes
        lines.append("")
    return "\n".join(lines)
