"""The task format: pairs of minimally different prompts whose correct next tokens differ.

A `Pair` holds two prompts: `clean`, whose correct next token is `target`, and `corrupt`,
whose correct next token is `alt` (for a constant-answer control, `target` for both). Answers
are text; the tokenizer resolves them to tokens, and a pair whose answers are not two distinct
single tokens is rejected with an error that names the task, the answers and their
tokenization. `clean_rest` / `corrupt_rest` hold the text that naturally follows each answer,
so a test can check that the answer is the very token the model sees in such code (the paper's
pre-tokenizer glues punctuation to a following newline, so `")` and `")\\n` are different
questions).

The loss is the paper's two-token contrast cross-entropy at the last position,

    L_pair = softplus(z1[alt] - z1[target]) + softplus(z2[target] - z2[alt])

reported per sequence (L_pair / 2), so 0.15 means what the paper's target means (about 86%
on the right token; chance is ln 2 = 0.69). Accuracy counts sequences whose right answer
out-scores the other.
"""

from __future__ import annotations

import difflib
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..errors import UserError, closest

# Three disjoint splits of every generator's words and templates: masks train on "train", the
# bisection judges circuits on "val", and every reported figure uses "test", which pruning
# never sees. "test" is the same half of each list it always was; "train" and "val" divide the
# other half.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Pair:
    clean: str             # prompt whose correct next token is `target`
    corrupt: str           # minimally different prompt whose correct next token is `alt`
    target: str
    alt: str
    clean_rest: str = ""   # what naturally follows `target` after `clean`
    corrupt_rest: str = ""  # what naturally follows `alt` after `corrupt`
    constant: bool = False  # control: both prompts want `target`

    def sequences(self) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        """(prompt, right answer, wrong answer) for each of the two prompts."""
        second = (self.corrupt, self.target, self.alt) if self.constant else \
            (self.corrupt, self.alt, self.target)
        return (self.clean, self.target, self.alt), second


def differ_in_one_span(pair: Pair, max_chars: int = 40) -> bool:
    """The default minimality check: the prompts differ in one contiguous span of text."""
    ops = [op for op in difflib.SequenceMatcher(None, pair.clean, pair.corrupt,
                                                autojunk=False).get_opcodes() if op[0] != "equal"]
    if len(ops) != 1:
        return False
    _, i1, i2, j1, j2 = ops[0]
    return max(i2 - i1, j2 - j1) <= max_chars


def _split_last_line(text: str) -> tuple[str, str]:
    """(everything before the last line, the last line), a trailing newline kept in the line."""
    cut = text.rstrip("\n").rfind("\n") + 1
    return text[:cut], text[cut:]


def last_line_differs(rule: Callable[[str, str], bool]) -> Callable[[Pair], bool]:
    """A `differs` check: the prompts agree up to their last lines, which satisfy
    `rule(clean_last_line, corrupt_last_line)`."""
    def differs(pair: Pair) -> bool:
        clean_head, clean_last = _split_last_line(pair.clean)
        corrupt_head, corrupt_last = _split_last_line(pair.corrupt)
        return clean_head == corrupt_head and rule(clean_last, corrupt_last)
    return differs


@dataclass
class Task:
    """A named behaviour. `make(rng, split)` draws one pair from the split's templates/values.

    `differs(pair)` says whether a pair's prompts differ only where the task says they do
    (`differs_doc`, in words); the default allows one contiguous span.
    """
    name: str
    description: str
    make: Callable[[random.Random, str], Pair]
    differs_doc: str = "the prompts differ in one contiguous span"
    differs: Callable[[Pair], bool] = differ_in_one_span
    tags: tuple[str, ...] = field(default_factory=tuple)
    rng_key: str = ""  # seeds the pairs (default: the name); controls share their task's prompts

    def pairs(self, n: int, split: str = "test", seed: int = 0, at_most: bool = False) -> list[Pair]:
        """n distinct pairs of the split; the same n, split and seed give the same pairs. With
        `at_most`, as many as the task can make up to n, rather than an error."""
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'{closest(split, SPLITS)}; use one of "
                            f"{', '.join(SPLITS)}.")
        if n < 1:
            raise UserError(f"asked for {n} pairs of task '{self.name}'; ask for at least 1.")
        rng = random.Random(f"{self.rng_key or self.name}/{split}/{seed}")
        out, seen = [], set()
        for _ in range(50 * n + 500):
            p = self.make(rng, split)
            if (p.clean, p.corrupt) not in seen:
                seen.add((p.clean, p.corrupt))
                out.append(p)
                if len(out) == n:
                    return out
        if at_most:
            return out
        raise UserError(f"task '{self.name}' can make only {len(out)} distinct {split} pairs; "
                        f"ask for at most {len(out)}.")


def inverted(task: Task) -> Task:
    """Control: the same prompts with the answers swapped (a behaviour the model never had)."""
    def make(rng, split):
        p = task.make(rng, split)
        return replace(p, target=p.alt, alt=p.target, clean_rest="", corrupt_rest="")
    return Task(f"{task.name}:inverted", f"control: {task.name} with its answers swapped", make,
                task.differs_doc, task.differs, ("control",), task.rng_key or task.name)


def constant(task: Task) -> Task:
    """Control: the same prompts, but both want the task's first answer (no behaviour needed)."""
    def make(rng, split):
        p = task.make(rng, split)
        return replace(p, constant=True, clean_rest="", corrupt_rest="")
    return Task(f"{task.name}:constant",
                f"control: {task.name} prompts that always want the clean answer", make,
                task.differs_doc, task.differs, ("control",), task.rng_key or task.name)


# ----------------------------------------------------------------------------- split helpers

def split_half(items: Sequence[str], split: str, salt: str = "") -> list[str]:
    """The deterministic share of `items` that belongs to `split`: ranked by a salted hash,
    alternate items go to test and to the rest, and the rest alternates between train and val.
    All three are disjoint from four items on; with two or three, train and val share the one
    item the test half leaves (a generator draws from several lists, so its pairs still
    differ), and test is never shared.

    Held-out generalisation is measured on values a circuit never saw during pruning.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    ranked = sorted(dict.fromkeys(items), key=lambda x: hashlib.sha256(f"{salt}/{x}".encode()).digest())
    if split == "test":
        chosen = ranked[1::2]
    else:
        rest = ranked[0::2]
        chosen = rest if len(rest) < 2 else rest[split == "val"::2]
    if not chosen:
        raise ValueError(f"split_half left the {split} split empty for {list(items)!r}")
    return chosen


def split_in_order(items: Sequence, split: str) -> list:
    """`split_half` by position instead of by hash (for templates, whose order the author
    chose): odd positions are test, even ones alternate between train and val."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    items = list(items)
    if split == "test":
        return items[1::2]
    rest = items[0::2]
    return rest if len(rest) < 2 else rest[split == "val"::2]


# ----------------------------------------------------------------------------- tokens

def answer_ids(tok, task_name: str, target: str, alt: str) -> tuple[int, int]:
    """The single-token ids of a pair's answers, or a UserError naming what is wrong."""
    t = tok.encode(target, add_special_tokens=False)
    a = tok.encode(alt, add_special_tokens=False)
    if len(t.ids) != 1 or len(a.ids) != 1 or t.ids == a.ids:
        problem = answer_problem(tok, (target, alt)) or (
            f"both are the one token {pieces(tok, target)}; choose two answers that differ")
        raise UserError(f"task '{task_name}': answers {target!r} and {alt!r} must be two "
                        f"distinct single tokens, but {problem}.")
    return t.ids[0], a.ids[0]


def pieces(tok, text: str) -> list[str]:
    """The text of each token the tokenizer makes of `text` (not the byte-level names)."""
    return [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False).ids]


def answer_problem(tok, answers: Sequence[str]) -> str | None:
    """Why `answers` are not all single tokens and what to change, in words; None if they are.

    The usual cause is a leading piece the pre-tokenizer splits off (`' 0'` is `' '` then
    `'0'`). When every answer is such a prefix shared by all of them plus one token, moving the
    prefix into the prompts makes each answer a single token, and the very token the tokenizer
    emits after that prefix in running text, so that is the fix offered. Otherwise no prompt
    ending helps, and the tokens that begin with the answer are the candidates.
    """
    split = [a for a in answers if len(tok.encode(a, add_special_tokens=False).ids) != 1]
    if not split:
        return None
    said = "; ".join(f"answer {a!r} is split into {pieces(tok, a)}" if a else "an answer is empty"
                     for a in split)
    prefix = _movable_prefix(tok, answers)
    if prefix is not None:
        rest = [a[len(prefix):] for a in answers]
        word = "answer" if len(rest) == 1 else "answers"
        return (f"{said}; end the prompts with {prefix!r} and use the {word} "
                + " and ".join(repr(r) for r in rest))
    hints = []
    for a in filter(None, split):
        cands = tokens_starting_with(tok, a)
        hints.append(f"tokens that start with {a!r}: {', '.join(map(repr, cands))}" if cands
                     else f"no token starts with {a!r}")
    return f"{said}; choose answers that are single tokens" + (
        f" ({'; '.join(hints)})" if hints else "")


def _movable_prefix(tok, answers: Sequence[str]) -> str | None:
    """The text p such that every answer is p + one token and the tokenizer, given p + that
    token, makes the tokens of p and then that very token; None if there is no such p."""
    first = tok.encode(answers[0], add_special_tokens=False)
    if len(first.ids) < 2:
        return None
    prefix = answers[0][:first.offsets[-1][0]]
    if not prefix:
        return None
    head = tok.encode(prefix, add_special_tokens=False).ids
    rests = []
    for a in answers:
        if not a.startswith(prefix) or len(a) == len(prefix):
            return None
        rest = tok.encode(a[len(prefix):], add_special_tokens=False).ids
        if len(rest) != 1 or tok.encode(a, add_special_tokens=False).ids != head + rest:
            return None
        rests.append(rest[0])
    return prefix if len(set(rests)) == len(rests) else None


def tokens_starting_with(tok, text: str, limit: int = 8) -> list[str]:
    """The tokenizer's tokens whose text begins with `text`, shortest first (at most `limit`)."""
    every = tok.decode_batch([[i] for i in range(tok.get_vocab_size())])
    found = {s for s in every if s.startswith(text)}
    return sorted(found, key=lambda s: (len(s), s))[:limit]


def is_natural(tok, prompt: str, answer: str, rest: str) -> bool:
    """True if, in the text prompt + answer + rest, the tokenizer ends the prompt where the
    prompt ends and emits `answer` as the next single token."""
    head = tok.encode(prompt, add_special_tokens=False).ids
    full = tok.encode(prompt + answer + rest, add_special_tokens=False).ids
    ans = tok.encode(answer, add_special_tokens=False).ids
    return len(ans) == 1 and full[:len(head) + 1] == head + ans
