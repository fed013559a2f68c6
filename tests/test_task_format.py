"""The task format: loss by hand, controls, answer checks, user task files, the CLI."""

import json
import math
import textwrap

import pytest
import torch

from sparsecircuits.cli import main
from sparsecircuits.config import ModelConfig
from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT
from sparsecircuits.tasks import (Pair, Task, answer_ids, constant, get_task, get_tasks,
                                  inverted, is_natural, load_task_file, task_metrics)
from sparsecircuits.tasks.core import differ_in_one_span
from sparsecircuits.tasks.metrics import last_logits, score_pairs
from sparsecircuits.tasks.show import show_pairs
from sparsecircuits.tokenizer import load_tokenizer
from sparsecircuits.train import train

from .conftest import quiet, tiny_config


@pytest.fixture(scope="module")
def tok(corpus_dir):
    return load_tokenizer(corpus_dir)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=1, d_model=32, d_head=16, d_mlp=64,
                           vocab_size=tok.get_vocab_size(), block_size=64)).eval()


def toy_task(target=" ==", alt=" =") -> Task:
    names = ["count", "total", "value", "size", "index", "name"]

    def make(rng, split):
        n = rng.choice(names[:3] if split == "train" else names[3:])
        pad = " " * rng.randrange(0, 9, 4)
        return Pair(f"{pad}if {n}", f"{pad}{n}", target, alt)
    return Task("toy_if_equals", "toy", make)


def test_loss_equals_a_hand_computation(model, tok):
    pairs = [Pair("x = [1, 2", "y = {1", "]\n", ":"), Pair("if total", "total", " ==", " =")]
    losses, correct = score_pairs(model, tok, "toy", pairs)
    expected, right_more = [], []
    with torch.no_grad():
        for p in pairs:
            for prompt, right, wrong in ((p.clean, p.target, p.alt), (p.corrupt, p.alt, p.target)):
                z = model(torch.tensor([tok.encode(prompt).ids]))[0, -1]
                r, w = tok.token_to_id(_bytelevel(right)), tok.token_to_id(_bytelevel(wrong))
                expected.append(math.log1p(math.exp(z[w] - z[r])))   # -log softmax over {r, w}
                right_more.append(bool(z[r] > z[w]))
    torch.testing.assert_close(losses, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert correct.tolist() == right_more


def _bytelevel(text: str) -> str:
    return text.replace(" ", "\u0120").replace("\n", "\u010a")


def test_metrics_report_per_sequence_mean(model, tok):
    task = toy_task()
    res = task_metrics(model, tok, task, n=3, split="test")
    losses, correct = score_pairs(model, tok, task.name, task.pairs(3, "test"))
    assert res.loss == pytest.approx(float(losses.mean()))
    assert res.accuracy == pytest.approx(float(correct.float().mean()))
    assert res.pairs == 3 and len(losses) == 6


def test_controls_swap_or_fix_the_answers(model, tok):
    task = toy_task()
    base, inv, const = (t.pairs(3, "train", 0) for t in (task, inverted(task), constant(task)))
    assert [(p.clean, p.corrupt) for p in base] == [(p.clean, p.corrupt) for p in inv]
    assert all(i.target == b.alt and i.alt == b.target for b, i in zip(base, inv))
    assert all(c.sequences()[1][1] == b.target for b, c in zip(base, const))
    a = task_metrics(model, tok, task, n=3, split="train")
    b = task_metrics(model, tok, inverted(task), n=3, split="train")
    # Swapping the answers flips every comparison.
    assert a.accuracy + b.accuracy == pytest.approx(1.0)
    assert get_task("bracket_counting:inverted").name == "bracket_counting:inverted"


def test_empty_prompt_is_a_clear_error(model, tok):
    with pytest.raises(UserError, match="prompt is empty"):
        score_pairs(model, tok, "toy", [Pair("", "total", " ==", " =")])


def test_answers_must_be_distinct_single_tokens(tok):
    with pytest.raises(UserError, match=r"task 'toy'.*'not a single token'.*\[.*\]"):
        answer_ids(tok, "toy", "not a single token", " =")
    with pytest.raises(UserError, match="two distinct single tokens"):
        answer_ids(tok, "toy", " =", " =")
    assert answer_ids(tok, "toy", "]]\n", "]\n")[0] != answer_ids(tok, "toy", "]]\n", "]\n")[1]


def test_split_answers_get_a_prompt_ending_that_fixes_them(tok):
    # the pre-tokenizer splits a space off a digit: ' 0' is ' ' then '0'
    with pytest.raises(UserError) as e:
        answer_ids(tok, "toy", " 0", " 1")
    msg = str(e.value)
    assert msg.startswith("task 'toy': answers ' 0' and ' 1'")
    assert "answer ' 0' is split into [' ', '0']" in msg
    assert "end the prompts with ' ' and use the answers '0' and '1'" in msg
    # the suggestion is true: the new answers are single tokens, the very ones that follow
    # a prompt ending in ' ' in running code
    answer_ids(tok, "toy", "0", "1")
    assert is_natural(tok, "x = ", "0", "\n") and is_natural(tok, "x = ", "1", "\n")


def test_split_answers_without_a_prompt_fix_name_the_candidate_tokens(tok):
    # ' =' is one token, so moving ' ' into the prompts would break it: no ending is offered
    with pytest.raises(UserError) as e:
        answer_ids(tok, "toy", " 0", " =")
    msg = str(e.value)
    assert "end the prompts" not in msg
    assert "[' ', '0']" in msg and "single token" in msg and "no token starts with ' 0'" in msg
    # a prefix of real tokens: those tokens are the candidates
    with pytest.raises(UserError) as e:
        answer_ids(tok, "toy", ".ad", " +=")
    msg = str(e.value)
    assert "['.', 'ad']" in msg and "tokens that start with '.ad': '.add'" in msg
    assert "end the prompts" not in msg and "train the tokenizer" not in msg


def test_unknown_task_names_the_closest():
    with pytest.raises(UserError, match="unknown task 'bracket_countin'.*'bracket_counting'"):
        get_task("bracket_countin")
    assert [t.name for t in get_tasks(["set_or_string", "set_or_string:constant"])] == \
        ["set_or_string", "set_or_string:constant"]


def test_one_span_check():
    assert differ_in_one_span(Pair('f("ab', "f('ab", "", ""))
    assert not differ_in_one_span(Pair('f("ab"', "f('ab'", "", ""))


TOML = textwrap.dedent('''\
    name = "dict_or_list"
    description = "a dict wants a colon after its first key"
    target = ":"
    alt = ","

    [[templates]]
    clean = "{var} = {{{key}"
    corrupt = "{var} = [{key}"

    [[templates]]
    clean = "    {var} = {{{key}"
    corrupt = "    {var} = [{key}"

    [slots]
    var = ["config", "table", "lookup", "index", "cache", "store"]
    key = ["alpha", "beta", "gamma", "delta", "size", "name"]
    ''')


def test_user_task_file(tmp_path, tok):
    path = tmp_path / "t.toml"
    path.write_text(TOML)
    task = load_task_file(path)
    train_p, test_p = task.pairs(6, "train"), task.pairs(6, "test")
    for p in train_p + test_p:
        assert (p.target, p.alt) == (":", ",")
        assert p.clean.replace("{", "[") == p.corrupt   # only the opening bracket differs
    keys = lambda ps: {p.clean.split("{")[-1] for p in ps}  # noqa: E731
    assert not keys(train_p) & keys(test_p)   # held-out slot values
    answer_ids(tok, task.name, task.pairs(1)[0].target, task.pairs(1)[0].alt)
    assert get_task(str(path) + ":inverted").pairs(1)[0].target == ","


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace('alt = ","', 'alt = ",'), r"t.toml: .*line 4"),
    (lambda t: t.replace('target = ":"', 'target = ":"\ncolour = "red"'),
     r"line 4: unknown key 'colour'"),
    (lambda t: t.replace('[slots]', '[slots]\nkye = ["a", "b"]').replace("{key}", "{kee}", 1),
     r"line 7: template 1 uses slot '\{kee\}'"),
    (lambda t: t.replace('name = "dict_or_list"\n', ""), r"required key 'name' is missing"),
    (lambda t: t.replace('alt = ","', 'alt = ":"'), r"line 4: target and alt are the same"),
    (lambda t: t.replace('var = ["config", "table", "lookup", "index", "cache", "store"]',
                         'var = ["config"]'), r"line 15: slot 'var' needs at least 2 distinct values"),
    (lambda t: t.replace("[[templates]]\nclean", "[[templates]]\nclaen", 1),
     r"line 7: template 1 has unknown key 'claen' \(did you mean 'clean'\?\)"),
])
def test_malformed_user_task_files_name_the_line(tmp_path, edit, message):
    path = tmp_path / "t.toml"
    path.write_text(edit(TOML))
    with pytest.raises(UserError, match=message):
        load_task_file(path)


def _task_file(tmp_path, target, alt, clean, corrupt, var=("items", "seen", "names", "keys")):
    path = tmp_path / "t.toml"
    q = json.dumps  # a JSON string is a TOML basic string, escapes included
    path.write_text(textwrap.dedent(f'''\
        name = "toy_file"
        target = {q(target)}
        alt = {q(alt)}
        [[templates]]
        clean = {q(clean)}
        corrupt = {q(corrupt)}
        [slots]
        var = {q(list(var))}
        '''))
    return load_task_file(path)


def test_show_flags_answers_that_are_not_single_tokens(tmp_path, tok, model):
    task = _task_file(tmp_path, " 0", " 1", "{var} = [\n{var}[0] =", "{var} = (\n{var}[1] =")
    for m in (None, model):  # with a model too: flagged, not scored
        out = show_pairs(task, tok, n=2, model=m)
        answer_lines = [ln for ln in out.splitlines() if ln.startswith("[")]
        assert len(answer_lines) == 4
        for ln in answer_lines:
            assert "NOT A SINGLE TOKEN" in ln and "[' ', '0']" in ln, ln
            assert "end the prompts with ' ' and use the answers '0' and '1'" in ln, ln
        assert "warning: 4 of 4 answers are not single tokens" in out
    fine = show_pairs(_task_file(tmp_path, "0", "1", "{var}[", "{var}.x["), tok, n=2)
    assert "NOT A SINGLE TOKEN" not in fine and "warning" not in fine


def test_show_flags_an_answer_the_model_only_sees_inside_a_longer_token(tmp_path, tok, model):
    task = _task_file(tmp_path, ".", " +=", "{var} = set()\n{var}", "{var} = 0\n{var}")
    add = tok.token_to_id(".add")

    def push(name, x):  # make '.add' the model's next token everywhere, in its one forward pass
        return x + 1e3 * model.lm_head.weight[add] if name.endswith("mlp.out") else x

    with model.hooks(push):
        prompts = [p.clean for p in task.pairs(2)] + [p.corrupt for p in task.pairs(2)]
        assert (last_logits(model, tok, prompts).argmax(-1) == add).all()
        out = show_pairs(task, tok, n=2, model=model)
    clean = [ln for ln in out.splitlines() if ln.startswith("[clean]")]
    corrupt = [ln for ln in out.splitlines() if ln.startswith("[corrupt]")]
    assert len(clean) == len(corrupt) == 2
    for ln in clean:   # the answer '.' is a prefix of what the model predicts
        assert "the model's top next token here is '.add'" in ln, ln
        assert "use the answer '.add'" in ln, ln
    for ln in corrupt:  # ' +=' is not: the model is wrong there, which is not this flag
        assert "<-" not in ln, ln
    assert "warning: on 2 of 4 prompts the model's top next token is a longer token" in out
    # without the push, the untrained model predicts no such token
    assert "top next token" not in show_pairs(task, tok, n=2, model=model)


def test_task_cli(corpus_dir, tmp_path, capsys):
    run = train(tiny_config(corpus_dir, train=dict(max_steps=3)), tmp_path / "run", log=quiet)
    path = tmp_path / "t.toml"
    path.write_text(TOML)
    assert main(["tasks", "show", str(path), "--n", "2", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "pair 2" in out and "':'" in out and "token [" in out
    # answers that are not single tokens are flagged with the run's model loaded, not scored
    split = tmp_path / "split"
    split.mkdir()
    _task_file(split, " 0", " 1", "{var}[0] =", "{var}[1] =")
    assert main(["tasks", "show", str(split / "t.toml"), "--n", "1", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "NOT A SINGLE TOKEN" in out and "end the prompts with ' '" in out
    assert main(["eval", str(run), "--tasks", str(path), "bracket_counting", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "dict_or_list" in out and "bracket_counting" in out and "target" in out
    assert main(["eval", str(run), "--tasks", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
