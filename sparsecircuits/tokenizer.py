"""Byte-level BPE for Python code, with the paper's pre-tokenizer.

The pre-tokenizer lets punctuation runs absorb trailing newlines and slashes, so `("`, `('`,
`]]\\n` and `],` can become single tokens: every task contrasts two single tokens, so this
matters. The end-of-text special is the last id (2047 for the default 2048-token vocabulary).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from .answers import TASK_ANSWERS  # noqa: F401  (re-exported: what corpus build reserves)
from .errors import UserError

EOT = "<|endoftext|>"

PRETOKENIZER_REGEX = (r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*"
                      r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048,
                    reserve: Iterable[str] = ()) -> Tokenizer:
    """Train a byte-level BPE of `vocab_size` tokens, the last of which is the end-of-text special.

    Every string in `reserve` becomes a single token: it is fed to the trainer as extra
    occurrences of itself, so BPE learns the merges that build it (the corpus is tokenized with
    the ordinary merges; nothing is forced into the text). A reserved string must be a single
    pre-token (e.g. `]]\n`, ` +=`, `.add`); one that the pre-tokenizer splits is an error.
    """
    if vocab_size < 258:
        raise UserError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs 256 byte "
                        "tokens plus the end-of-text special; use at least 258.")
    if vocab_size > 65535:
        raise UserError(f"vocab_size={vocab_size} does not fit the corpus's uint16 token files; "
                        "use at most 65535.")
    reserve = sorted(set(reserve))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZER_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    for r in reserve:
        pieces = tok.pre_tokenizer.pre_tokenize_str(r)
        if len(pieces) != 1:
            raise UserError(f"reserved token {r!r} is split by the pre-tokenizer into "
                            f"{[p for p, _ in pieces]}; reserve one piece at a time.")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    boost = (r for r in reserve for _ in range(_RESERVE_COUNT))
    tok.train_from_iterator(itertools.chain(texts, boost), trainer=trainer)
    tok.add_special_tokens([EOT])  # appended after training, so it takes the last id
    missing = [r for r in reserve if single_token(tok, r) is None]
    if missing:
        raise UserError(f"the tokenizer could not make {missing} single tokens within "
                        f"{vocab_size} tokens; raise the vocabulary size.")
    return tok


# Occurrences added per reserved string: more than any merge that a 2k-64k vocabulary drops.
_RESERVE_COUNT = 20_000


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"no tokenizer at {path}; point at a run or corpus folder that has "
                        "tokenizer.json.")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise UserError(f"{path} is not a valid tokenizer file ({e}); rebuild it with "
                        "`sparsecircuits corpus build`.") from None
    if tok.token_to_id(EOT) is None:
        raise UserError(f"{path} has no {EOT} token; rebuild it with `sparsecircuits corpus build`.")
    return tok


def eot_id(tok: Tokenizer) -> int:
    return tok.token_to_id(EOT)


def single_token(tok: Tokenizer, text: str) -> int | None:
    """The id of `text` if the tokenizer encodes it as exactly one token, else None."""
    ids = tok.encode(text, add_special_tokens=False).ids
    return ids[0] if len(ids) == 1 else None
