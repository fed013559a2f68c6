"""Every task of the suite: variety, determinism, disjoint splits, minimal pairs, single-token
answers that are the natural next token under the default tokenizer."""

import pytest

from sparsecircuits.corpus import open_corpus
from sparsecircuits.tasks import PAPER_TASKS, SUITE, answer_ids, is_natural

N = 60


@pytest.fixture(scope="session")
def default_tok():
    return open_corpus(None, log=lambda *a: None).tokenizer


def test_the_suite_has_the_papers_twenty_tasks():
    assert sorted(SUITE) == sorted(PAPER_TASKS)


@pytest.mark.parametrize("name", sorted(SUITE))
def test_pairs_are_distinct_deterministic_and_varied(name):
    task = SUITE[name]
    for seed in range(10):
        pairs = task.pairs(N, ("train", "test")[seed % 2], seed)
        assert len({(p.clean, p.corrupt) for p in pairs}) == N
        assert pairs == task.pairs(N, ("train", "test")[seed % 2], seed)
        assert all(p.clean != p.corrupt for p in pairs)
    assert task.pairs(N, "train", 0) != task.pairs(N, "train", 1)
    # Real variety: many distinct prompt lengths, not one template with one slot.
    assert len({len(p.clean) for p in task.pairs(200, "test", 0)}) >= 10


@pytest.mark.parametrize("name", sorted(SUITE))
def test_no_prompt_appears_in_two_splits(name):
    """Masks train on train, the bisection judges on val, figures use test: three sets of
    prompts with nothing in common."""
    task = SUITE[name]
    prompts = {split: {s for p in task.pairs(300, split, 0, at_most=True)
                       for s in (p.clean, p.corrupt)} for split in ("train", "val", "test")}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["val"] & prompts["test"]
    assert not prompts["train"] & prompts["val"]
    assert len(task.pairs(128, "val", 0, at_most=True)) >= 64  # enough to judge a circuit on


@pytest.mark.parametrize("name", sorted(SUITE))
def test_prompts_differ_only_where_the_task_says(name):
    task = SUITE[name]
    for split in ("train", "val", "test"):
        for p in task.pairs(N, split, 0, at_most=True):
            assert task.differs(p), (task.differs_doc, p)


@pytest.mark.parametrize("name", sorted(SUITE))
def test_answers_are_distinct_single_natural_tokens(name, default_tok):
    task = SUITE[name]
    for split in ("train", "val", "test"):
        for p in task.pairs(N, split, 0, at_most=True):
            answer_ids(default_tok, name, p.target, p.alt)
            assert is_natural(default_tok, p.clean, p.target, p.clean_rest), (p.clean, p.target)
            assert is_natural(default_tok, p.corrupt, p.alt, p.corrupt_rest), (p.corrupt, p.alt)
            assert len(default_tok.encode(p.clean).ids) <= 250


def test_split_half_gives_three_disjoint_shares_and_keeps_the_test_half():
    from sparsecircuits.tasks.core import split_half, split_in_order
    items = [f"w{i}" for i in range(12)]
    shares = {s: split_half(items, s, "salt") for s in ("train", "val", "test")}
    assert sorted(sum(shares.values(), [])) == sorted(items)
    assert len(shares["test"]) == 6 and len(shares["train"]) == 3 and len(shares["val"]) == 3
    # two items: test keeps one, train and val share the other
    assert split_half(["a", "b"], "train") == split_half(["a", "b"], "val")
    assert not set(split_half(["a", "b"], "test")) & set(split_half(["a", "b"], "train"))
    assert split_in_order("abcde", "test") == ["b", "d"]
    assert (split_in_order("abcde", "train"), split_in_order("abcde", "val")) == (["a", "e"], ["c"])
