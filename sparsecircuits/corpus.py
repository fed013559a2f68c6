"""Python source corpora: find files, split train/val by file, tokenize into uint16 memmaps.

The default source is the standard library of the running interpreter: real Python that is on
every machine, with no download. A built corpus is a folder:

    manifest.json    sources, per-file bytes/tokens/sha256/split, skipped files, totals
    tokenizer.json   the BPE trained on the train split
    train.bin        uint16 token ids, files joined by the end-of-text token
    val.bin          the same for the validation files
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import staged_dir
from .errors import UserError
from .pygen import GENERATOR_VERSION, program
from .tokenizer import TASK_ANSWERS, eot_id, load_tokenizer, train_tokenizer

MANIFEST_VERSION = 1
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def find_sources(sources: list[str | Path] | None = None) -> list[tuple[Path, str]]:
    """All .py files under the given files/folders as (path, name-relative-to-its-source).

    With no sources, the standard library of the running interpreter (never site-packages).
    """
    roots = [Path(s) for s in sources] if sources else [stdlib_dir()]
    found: dict[str, Path] = {}
    for root in roots:
        if not root.exists():
            raise UserError(f"source {root} does not exist; pass existing .py files or folders "
                            "to --source.")
        if root.is_file():
            found[root.name] = root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    p = Path(dirpath) / name
                    rel = p.relative_to(root).as_posix()
                    key = rel if len(roots) == 1 else f"{root.name}/{rel}"
                    found[key] = p
    return sorted((p, rel) for rel, p in found.items())


def split_of(rel: str, val_frac: float) -> str:
    """Deterministic split by file: a hash of the file's relative name, never of its content."""
    h = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16)
    return "val" if h % 100_000 < val_frac * 100_000 else "train"


@dataclass
class SourceFile:
    rel: str
    text: str
    sha256: str
    nbytes: int
    split: str


def read_sources(files: list[tuple[Path, str]], val_frac: float):
    """Read files as UTF-8; unreadable and non-UTF-8 files are skipped and reported."""
    kept, skipped = [], {"non_utf8": [], "unreadable": [], "empty": []}
    for path, rel in files:
        try:
            raw = path.read_bytes()
        except OSError:
            skipped["unreadable"].append(rel)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped["non_utf8"].append(rel)
            continue
        if not text.strip():
            skipped["empty"].append(rel)
            continue
        kept.append(SourceFile(rel, text, hashlib.sha256(raw).hexdigest(), len(raw),
                               split_of(rel, val_frac)))
    if kept and not any(f.split == "val" for f in kept):
        if len(kept) < 2:
            raise UserError("the corpus has a single usable file, but the train/val split is by "
                            "file; add at least one more .py file.")
        # Small corpora may draw no val file by hash: take the lowest-hash file, deterministically.
        min(kept, key=lambda f: hashlib.sha256(f.rel.encode()).hexdigest()).split = "val"
    return kept, skipped


def generated_sources(n: int, seed: int, val_frac: float) -> list[SourceFile]:
    """`n` programs of the seeded generator (`pygen`) as files `generated/NNNNNN.py`."""
    out = []
    for i in range(n):
        rel = f"generated/{i:06d}.py"
        text = program(f"{seed}-{i}")
        raw = text.encode()
        out.append(SourceFile(rel, text, hashlib.sha256(raw).hexdigest(), len(raw),
                              split_of(rel, val_frac)))
    return out


def build_corpus(out: str | Path, sources: list[str | Path] | None = None, *,
                 vocab_size: int = 2048, val_frac: float = 0.02, tokenizer: str | Path | None = None,
                 reserve: tuple[str, ...] = TASK_ANSWERS, generated: int = 0, seed: int = 0,
                 force: bool = False, log=print) -> Path:
    """Build a corpus folder at `out`; returns its path. Written to a temp folder, then renamed.

    `generated` adds that many programs of the seeded simple-Python generator (`pygen`, seed
    `seed`) beside the files of `sources`; they are split into train and val by name like any
    file. The tokenizer is trained on the train split with `reserve` (by default the task
    suite's answers) made single tokens, unless an existing `tokenizer` file is given.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} already exists and is not empty; choose another --out or pass "
                        "--force to replace it.")
    if not 0 < val_frac < 1:
        raise UserError(f"val_frac={val_frac} must be between 0 and 1.")
    if generated < 0:
        raise UserError(f"generated={generated} must be 0 or a positive number of programs.")
    t0 = time.time()
    files = find_sources(sources)
    kept, skipped = read_sources(files, val_frac)
    if generated:
        programs = generated_sources(generated, seed, val_frac)
        kept += programs
        log(f"generated {generated} programs (seed {seed}, "
            f"{sum(f.nbytes for f in programs) / 1e6:.1f} MB)")
    if not kept:
        where = ", ".join(str(s) for s in sources) if sources else str(stdlib_dir())
        raise UserError(f"the corpus is empty: no readable UTF-8 .py file under {where}; "
                        "pass --source with folders that contain Python files.")
    log(f"read {len(kept)} files ({sum(f.nbytes for f in kept) / 1e6:.1f} MB); skipped "
        + ", ".join(f"{len(v)} {k}" for k, v in skipped.items()))

    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    else:
        tok = train_tokenizer((f.text for f in kept if f.split == "train"), vocab_size, reserve)
        log(f"trained a {tok.get_vocab_size()}-token BPE in {time.time() - t0:.1f}s"
            + (f" (the corpus supports no more merges than that; {vocab_size} were asked for)"
               if tok.get_vocab_size() < vocab_size else ""))
    if tok.get_vocab_size() > 65535:
        raise UserError("the tokenizer has more than 65535 tokens and cannot be stored as uint16.")
    eot = eot_id(tok)

    with staged_dir(out, replace=True) as tmp:
        records, totals = [], {}
        for split in ("train", "val"):
            group = [f for f in kept if f.split == split]
            n_tokens = 0
            with open(tmp / f"{split}.bin", "wb") as fh:
                for i in range(0, len(group), 256):
                    chunk = group[i:i + 256]
                    for f, enc in zip(chunk, tok.encode_batch([f.text for f in chunk],
                                                              add_special_tokens=False)):
                        ids = np.asarray(enc.ids + [eot], dtype=np.uint16)
                        fh.write(ids.tobytes())
                        n_tokens += len(ids)
                        records.append(dict(path=f.rel, split=split, bytes=f.nbytes,
                                            tokens=len(ids), sha256=f.sha256))
            totals[split] = dict(files=len(group), bytes=sum(f.nbytes for f in group),
                                 tokens=n_tokens)
        tok.save(str(tmp / "tokenizer.json"))
        manifest = dict(
            version=MANIFEST_VERSION,
            sources=[str(s) for s in sources] if sources else [str(stdlib_dir())],
            generated=dict(programs=generated, seed=seed, version=GENERATOR_VERSION)
            if generated else None,
            python=sys.version.split()[0], vocab_size=tok.get_vocab_size(), eot_id=eot,
            val_frac=val_frac, reserved=list(reserve) if tokenizer is None else None, totals=totals,
            skipped={k: dict(count=len(v), files=v) for k, v in skipped.items()},
            tokenizer_sha256=sha256_file(tmp / "tokenizer.json"),
            files=sorted(records, key=lambda r: r["path"]),
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log(f"wrote {out}: {totals['train']['tokens']:,} train / {totals['val']['tokens']:,} val "
        f"tokens in {time.time() - t0:.1f}s")
    return out


class Corpus:
    """A built corpus folder, opened read-only: `train` and `val` are uint16 memmaps."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise UserError(f"{self.path} is not a corpus folder (no manifest.json); build one "
                            "with `sparsecircuits corpus build --out DIR`.")
        try:
            self.manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{mpath} is corrupt; rebuild the corpus with "
                            "`sparsecircuits corpus build --force`.") from None
        self.tokenizer_path = self.path / "tokenizer.json"
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.splits = {}
        for split in ("train", "val"):
            f = self.path / f"{split}.bin"
            expected = self.manifest["totals"][split]["tokens"]
            if not f.is_file() or f.stat().st_size != 2 * expected:
                raise UserError(f"{f} is missing or truncated (expected {expected} tokens); "
                                "rebuild the corpus with `sparsecircuits corpus build --force`.")
            self.splits[split] = np.memmap(f, dtype=np.uint16, mode="r")

    def check_tokenizer(self, tokenizer_file: Path) -> None:
        """Refuse to pair this corpus's token ids with a model trained on another tokenizer."""
        if sha256_file(Path(tokenizer_file)) != sha256_file(self.tokenizer_path):
            raise UserError(f"{tokenizer_file} differs from the tokenizer of the corpus at "
                            f"{self.path}, so its token ids mean other things to the model; pass "
                            "--corpus with the corpus the run was trained on.")

    @property
    def train(self) -> np.ndarray:
        return self.splits["train"]

    @property
    def val(self) -> np.ndarray:
        return self.splits["val"]


def cache_home() -> Path:
    """Where built corpora and node statistics are cached ($SPARSECIRCUITS_HOME to move it)."""
    return Path(os.environ.get("SPARSECIRCUITS_HOME") or Path.home() / ".cache" / "sparsecircuits")


def default_corpus_dir(vocab_size: int = 2048) -> Path:
    home = cache_home()
    ver = "".join(map(str, sys.version_info[:2]))
    # The reserved answers are part of the recipe: a change to them must not reuse a stale cache.
    recipe = hashlib.sha256(repr(TASK_ANSWERS).encode()).hexdigest()[:8]
    return Path(home) / "corpus" / f"stdlib-py{ver}-v{vocab_size}-{recipe}"


def open_corpus(path: str | Path | None, log=print) -> Corpus:
    """Open a corpus folder; with no path, the default one, built on first use and cached."""
    if path is not None:
        return Corpus(path)
    d = default_corpus_dir()
    if not (d / "manifest.json").is_file():
        log(f"building the default corpus (the standard library) into {d} ...")
        build_corpus(d, force=True, log=log)
    return Corpus(d)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_for_run(corpus: str | Path | None, tokenizer_file: str | Path, log=print) -> Corpus:
    """The corpus to read a run's model with: the given one (its tokenizer must be the run's),
    or the default source tokenized with the run's own tokenizer.

    A model shipped from another machine was trained on *that* machine's standard library; if
    this machine's default corpus has a different tokenizer, the same source is re-tokenized
    with the model's tokenizer (once, cached), so token ids always mean what the model learnt.
    """
    tokenizer_file = Path(tokenizer_file)
    if corpus is not None:
        c = Corpus(corpus)
        c.check_tokenizer(tokenizer_file)
        return c
    default = open_corpus(None, log=log)
    sha = sha256_file(tokenizer_file)
    if sha == sha256_file(default.tokenizer_path):
        return default
    d = default.path.parent / f"{default.path.name}-tok{sha[:12]}"
    if not (d / "manifest.json").is_file():
        log(f"tokenizing the default corpus with the run's tokenizer into {d} ...")
        build_corpus(d, tokenizer=tokenizer_file, force=True, log=log)
    return Corpus(d)
