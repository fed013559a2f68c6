import json
from pathlib import Path

import numpy as np
import pytest

from sparsecircuits.corpus import Corpus, build_corpus, find_sources
from sparsecircuits.errors import UserError
from sparsecircuits.tokenizer import EOT, load_tokenizer, single_token, train_tokenizer

from .conftest import TEST_VOCAB, quiet


def write_sources(root, n=12):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"mod_{i}.py").write_text(
            f"def f_{i}(x, y=None):\n    return [x, {{'k': y}}, \"s{i}\", ('q',)]\n" * 20)
    (root / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (root / "blank.py").write_text("\n\n")
    (root / "notes.txt").write_text("not python")
    return root


def test_build_corpus_counts_skips_and_splits_by_file(tmp_path):
    src = write_sources(tmp_path / "src")
    out = build_corpus(tmp_path / "c", [src], vocab_size=300, reserve=(), val_frac=0.2, log=quiet)
    m = json.loads((out / "manifest.json").read_text())
    assert m["skipped"]["non_utf8"] == {"count": 1, "files": ["latin1.py"]}
    assert m["skipped"]["empty"]["count"] == 1
    assert m["totals"]["train"]["files"] + m["totals"]["val"]["files"] == 12
    assert m["totals"]["val"]["files"] >= 1
    c = Corpus(out)
    eot = c.tokenizer.token_to_id(EOT)
    # The special is the last id (the BPE may stop short of 300 on so small a corpus).
    assert eot == c.tokenizer.get_vocab_size() - 1 == m["vocab_size"] - 1 and eot < 300
    # Files are joined by the end-of-text token: one per file, each file's count recorded.
    assert int((c.train == eot).sum()) == m["totals"]["train"]["files"]
    assert len(c.train) == sum(f["tokens"] for f in m["files"] if f["split"] == "train")
    assert all(len(f["sha256"]) == 64 for f in m["files"])
    assert c.train.max() <= eot


def test_build_is_deterministic(tmp_path):
    src = write_sources(tmp_path / "src")
    a = build_corpus(tmp_path / "a", [src], vocab_size=300, reserve=(), log=quiet)
    b = build_corpus(tmp_path / "b", [src], vocab_size=300, reserve=(), log=quiet)
    for f in ("train.bin", "val.bin", "tokenizer.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_empty_corpus_is_a_clear_error_and_leaves_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no python here")
    with pytest.raises(UserError, match="corpus is empty"):
        build_corpus(tmp_path / "c", [tmp_path / "empty"], log=quiet)
    assert not (tmp_path / "c").exists()
    with pytest.raises(UserError, match="does not exist"):
        build_corpus(tmp_path / "c", [tmp_path / "missing"], log=quiet)


def test_existing_output_needs_force(tmp_path):
    src = write_sources(tmp_path / "src")
    out = build_corpus(tmp_path / "c", [src], vocab_size=300, reserve=(), log=quiet)
    with pytest.raises(UserError, match="--force"):
        build_corpus(out, [src], vocab_size=300, reserve=(), log=quiet)
    build_corpus(out, [src], vocab_size=300, reserve=(), force=True, log=quiet)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_truncated_token_file_is_detected(tmp_path):
    out = build_corpus(tmp_path / "c", [write_sources(tmp_path / "src")], vocab_size=300, reserve=(),
                       log=quiet)
    data = (out / "train.bin").read_bytes()
    (out / "train.bin").write_bytes(data[:-10])
    with pytest.raises(UserError, match="missing or truncated"):
        Corpus(out)
    with pytest.raises(UserError, match="not a corpus folder"):
        Corpus(tmp_path)


def test_default_sources_are_the_standard_library_without_site_packages():
    files = find_sources()
    names = {rel for _, rel in files}
    assert "json/__init__.py" in names and "collections/__init__.py" in names
    assert not any("site-packages" in str(p) for p, _ in files)
    assert len(files) > 500


def test_tokenizer_has_the_paper_pretokenizer_and_eot_last(tmp_path, corpus_dir):
    tok = load_tokenizer(corpus_dir)
    assert tok.get_vocab_size() == TEST_VOCAB and tok.token_to_id(EOT) == TEST_VOCAB - 1
    # One punctuation char may lead a word; punctuation runs absorb trailing newlines.
    pieces = tok.pre_tokenizer.pre_tokenize_str("x = f(a)]\n")
    assert [p for p, _ in pieces] == ["x", "Ġ=", "Ġf", "(a", ")]Ċ"]
    text = "def f(x):\n    return {'a': [1, 2]}\n"
    assert tok.decode(tok.encode(text).ids) == text
    small = train_tokenizer(["print('hi')\n" * 50], vocab_size=300, reserve=())
    assert single_token(small, "print") is not None
    assert single_token(small, "zzzz unseen") is None
    with pytest.raises(UserError, match="too small"):
        train_tokenizer(["x"], vocab_size=100)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError, match="not a valid tokenizer"):
        load_tokenizer(tmp_path)


def test_token_files_are_uint16_memmaps(corpus_dir):
    c = Corpus(corpus_dir)
    assert isinstance(c.train, np.memmap) and c.train.dtype == np.uint16


def test_reserved_task_answers_become_single_tokens(corpus_dir):
    from sparsecircuits.tokenizer import TASK_ANSWERS
    tok = load_tokenizer(corpus_dir)
    assert all(single_token(tok, a) is not None for a in TASK_ANSWERS)
    # Reserving adds merges, not forced splits: ordinary code tokenizes as before.
    assert tok.encode("x = [[1], [2]]\n").tokens[-1] == "]]\u010a"
    with pytest.raises(UserError, match="split by the pre-tokenizer"):
        train_tokenizer(["x = 1\n"], vocab_size=300, reserve=["a b"])


def test_a_run_with_another_tokenizer_reads_the_default_source_with_its_own(corpus_dir, tmp_path):
    """A shipped model trained on another machine's standard library: its tokenizer differs
    from this machine's default corpus, so the source is re-tokenized with the model's."""
    import time

    from sparsecircuits.corpus import sha256_file, corpus_for_run, open_corpus
    tok_file = Path(corpus_dir) / "tokenizer.json"  # a small test BPE, not the default one
    default = open_corpus(None, log=lambda *a: None)
    c = corpus_for_run(None, tok_file, log=lambda *a: None)
    assert c.path != default.path
    assert sha256_file(c.tokenizer_path) == sha256_file(tok_file)
    assert len(c.train) > 1_000_000 and int(c.train.max()) < TEST_VOCAB
    t = time.perf_counter()
    assert corpus_for_run(None, tok_file, log=lambda *a: None).path == c.path  # cached
    assert time.perf_counter() - t < 5
    assert corpus_for_run(None, default.tokenizer_path).path == default.path
    with pytest.raises(UserError, match="differs from the tokenizer"):
        corpus_for_run(default.path, tok_file)
    assert isinstance(c, Corpus)


def test_build_adds_generated_programs_beside_the_sources(tmp_path):
    src = write_sources(tmp_path / "src")
    out = build_corpus(tmp_path / "c", [src], vocab_size=300, reserve=(), generated=40, seed=3,
                       log=quiet)
    m = json.loads((out / "manifest.json").read_text())
    assert m["generated"]["programs"] == 40 and m["generated"]["seed"] == 3
    names = [f["path"] for f in m["files"]]
    assert sum(n.startswith("generated/") for n in names) == 40
    with pytest.raises(UserError, match="generated=-1"):
        build_corpus(tmp_path / "d", [src], generated=-1, log=quiet)
