"""The monitor: it never changes the model's logits, it flags exactly the inputs a second path
answers, and it refuses a circuit of another model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from safetensors.torch import save_file

from sparsecircuits.circuits import Circuit, PretrainingStats, PruneConfig
from sparsecircuits.config import RunConfig
from sparsecircuits.corpus import Corpus
from sparsecircuits.errors import UserError
from sparsecircuits.monitor import Policy, auroc, monitor

from .test_circuits import PLANTED, planted
from .test_circuits_cli import write_planted_task


def second_path(tok):
    """The planted model plus a path around its circuit: token C writes -0.5 on the circuit's
    input channel (so the circuit alone leans to the other answer) and +1 on channel 2, which
    neuron 1, outside the circuit, turns into a push of the answer channel three times as
    strong. The model answers X after C; the circuit alone answers Y."""
    model, task = planted(tok)
    w = model.planted_words
    c_word = next(x for x in (" if", " for", " return", " import") if x not in (w["a"], w["b"]))
    ids = {k: tok.encode(v, add_special_tokens=False).ids[0]
           for k, v in dict(a=w["a"], c=c_word).items()}
    with torch.no_grad():
        model.wte.weight[:, 2] = 0
        model.blocks[0].attn.c_proj.weight[2] = 0  # only C writes channel 2
        model.blocks[0].attn.c_proj.bias[2] = 0
        model.wte.weight[ids["c"], 0], model.wte.weight[ids["c"], 2] = -0.5, 1.0
        mlp = model.blocks[0].mlp
        mlp.c_fc.weight[:, 2] = 0
        mlp.c_fc.weight[1] = 0
        mlp.c_fc.weight[1, 2] = 1.0
        mlp.c_fc.bias[1] = 3.0
        mlp.c_proj.weight[1, 1] = 3.0
        mlp.c_proj.bias[1] -= 3.0 * F.gelu(torch.tensor(3.0))
    model.planted_words["c"] = c_word
    return model, task


@pytest.fixture(scope="module")
def setup(corpus_dir, tmp_path_factory):
    corpus = Corpus(corpus_dir)
    tok = corpus.tokenizer
    model, _ = second_path(tok)
    d = tmp_path_factory.mktemp("monitor")
    write_planted_task(d / "planted.toml", model.planted_words)
    run = d / "run"  # a run folder of the model, which the circuit records
    run.mkdir()
    cfg = RunConfig(model=model.cfg)
    cfg.data.corpus = str(corpus.path)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(run / "model.safetensors"))
    shutil.copy(corpus.tokenizer_path, run / "tokenizer.json")
    circuit = Circuit.from_nodes(model, PLANTED, "planted", task_ref=str(d / "planted.toml"),
                                 config=PruneConfig(), provenance=dict(run_dir=str(run)))
    path = circuit.save(d / "circuit.json")
    stats = PretrainingStats.compute(model, corpus.train, windows=16)
    return model, tok, corpus, path, stats


def _prompts(tok, words, n=12):
    fill = words["fill"]
    out = []
    for i in range(n):
        body = f" {fill[i % len(fill)]} {fill[(3 * i + 1) % len(fill)]}"
        for key in ("a", "b", "c"):
            out.append((key, tok.encode(body + words[key], add_special_tokens=False).ids))
    return out


def test_the_monitor_flags_exactly_the_inputs_a_second_path_answers(setup):
    model, tok, corpus, path, stats = setup
    prompts = _prompts(tok, model.planted_words)
    with monitor(model, [path], tok=tok, corpus=corpus, log=None) as mon:
        for _, ids in prompts:
            model(torch.tensor([ids]))
    assert len(mon.records) == len(prompts)
    flagged = ["disagree" in r["alerts"] for r in mon.records]
    assert flagged == [key == "c" for key, _ in prompts]
    on_task = [r for r, (key, _) in zip(mon.records, prompts) if key != "c"]
    assert all(r["agree"] and r["share"] > 0.5 for r in on_task)
    # the second path's inputs also sit outside the circuit's validated range
    scores = [r["anomaly"] for r in mon.records]
    assert auroc(scores, flagged) == 1.0


def test_the_monitor_never_changes_the_logits(setup):
    model, tok, corpus, path, _ = setup
    by_len: dict[int, list] = {}
    for _, ids in _prompts(tok, model.planted_words, 6):
        by_len.setdefault(len(ids), []).append(ids)
    x = torch.tensor(max(by_len.values(), key=len))  # a batch of one length
    with torch.no_grad():
        plain = model(x)
        plain_at = model(x, at=torch.full((len(x),), x.shape[1] - 1))
    with monitor(model, [path], tok=tok, corpus=corpus, positions="all", log=None) as mon:
        with torch.no_grad():
            watched = model(x)
            watched_at = model(x, at=torch.full((len(x),), x.shape[1] - 1))
    assert torch.equal(plain, watched) and torch.equal(plain_at, watched_at)
    assert len(mon.records) == len(x) * x.shape[1] + len(x)
    with monitor(model, [path], tok=tok, corpus=corpus, full=False, log=None) as cheap:
        assert torch.equal(model(x), plain)
    assert "agree" not in cheap.records[0]
    assert model.forward.__func__ is type(model).forward  # the model is itself again


def test_a_circuit_of_another_model_is_a_one_line_error(setup, corpus_dir):
    model, tok, corpus, path, _ = setup
    other, _ = planted(tok)
    with pytest.raises(UserError, match="found in model") as e:
        with monitor(other, [path], tok=tok, corpus=corpus, log=None):
            pass
    assert "\n" not in str(e.value)


def test_a_policy_file_sets_thresholds_and_names_a_wrong_key(tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text("[default]\nmin_share = 0.5\n\n[circuit.planted]\nmax_anomaly = 10\n")
    policy = Policy.load(p)
    assert policy.default.min_share == 0.5 and policy.for_circuit("planted").max_anomaly == 10
    assert policy.for_circuit("planted").min_share == 0.5
    p.write_text("[default]\nmin_shar = 0.5\n")
    with pytest.raises(UserError, match="unknown key 'min_shar'"):
        Policy.load(p)


def test_the_monitor_command_writes_records_and_a_page_that_lists_the_flagged(
        setup, tmp_path, capsys):
    from .test_cli import assert_one_line_error, run_cli
    from .test_explain import ATTACK, chrome
    model, tok, corpus, path, _ = setup
    run = Circuit.load(path).provenance["run_dir"]
    prompts = _prompts(tok, model.planted_words, 4)
    lines = [tok.decode(ids) for _, ids in prompts]
    lines[2] = ATTACK + lines[2]  # an input is text, never markup
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(capsys, "monitor", str(run), "--circuits", str(path), "--input",
                             str(tmp_path / "in.txt"), "--out", str(tmp_path / "mon"))
    assert code == 0, err
    records = [json.loads(r) for r in (tmp_path / "mon" / "records.jsonl").read_text().splitlines()]
    assert [r["input"] for r in records] == [f"line {i + 1}" for i in range(len(lines))]
    flagged = {r["input"] for r in records if "disagree" in r["alerts"]}
    assert flagged == {f"line {i + 1}" for i, (k, _) in enumerate(prompts) if k == "c"}
    assert "planted: 12 records, alerts disagree 4" in out

    driver = chrome()
    try:
        driver.get((tmp_path / "mon" / "monitor.html").as_uri())
        from selenium.webdriver.common.by import By
        rows = driver.find_elements(By.CSS_SELECTOR, "#flagged tr.row")
        assert len(rows) == sum(bool(r["alerts"]) for r in records)
        assert "sparsecircuits trace" in driver.find_element(By.ID, "detail").text
        lit = driver.find_elements(By.CSS_SELECTOR, "#detail .tok[title*='node(s)']")
        assert lit  # the circuit's nodes fire on some of the flagged input's tokens
        assert driver.execute_script("return window.__pwned === undefined")
    finally:
        driver.quit()

    assert_one_line_error(*run_cli(capsys, "monitor", str(run), "--circuits", str(path), str(path),
                                   "--input", str(tmp_path / "in.txt"), "--out",
                                   str(tmp_path / "m3"))[::2], "same task")
    (tmp_path / "empty.txt").write_text("\n")
    assert_one_line_error(*run_cli(capsys, "monitor", str(run), "--circuits", str(path),
                                   "--input", str(tmp_path / "empty.txt"), "--out",
                                   str(tmp_path / "m2"))[::2], "no prompts")


def test_the_readme_monitor_example_runs(setup, monkeypatch, capsys):
    model, tok, corpus, path, _ = setup
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
               if "sc.monitor" in b]
    run = Circuit.load(path).provenance["run_dir"]
    code = (code.replace('"runs/small-sparse"', repr(run)).replace('"quote.json"', repr(str(path)))
            .replace("""'x = "hello'""", repr(" x y" + model.planted_words["a"])))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["mon"].records[-1]["alerts"] == []  # on task: nothing to flag
