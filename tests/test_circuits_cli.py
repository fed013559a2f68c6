"""`sparsecircuits prune` and `validate` end to end on a run folder holding a planted model,
and their one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from sparsecircuits.config import RunConfig
from sparsecircuits.corpus import Corpus

from .test_circuits import PLANTED, planted
from .test_cli import assert_one_line_error, run_cli


def write_planted_task(path, words: dict) -> None:
    """The TOML task of the planted model's behaviour (its `planted_words`)."""
    fill = json.dumps(words["fill"])
    path.write_text(f"""
name = "planted"
description = "the last word decides the answer"
target = {json.dumps(words["target"])}
alt = {json.dumps(words["alt"])}
split = "slots"

[[templates]]
clean = "{{p}} {{q}} {{r}}{words["a"]}"
corrupt = "{{p}} {{q}} {{r}}{words["b"]}"

[slots]
p = {fill}
q = {fill}
r = {fill}
""")


@pytest.fixture(scope="module")
def planted_run(corpus_dir, tmp_path_factory):
    """A run folder with the planted model, and a TOML task file for its behaviour."""
    d = tmp_path_factory.mktemp("planted")
    corpus = Corpus(corpus_dir)
    model, _ = planted(corpus.tokenizer)
    w = model.planted_words
    run = d / "run"
    run.mkdir()
    cfg = RunConfig(model=model.cfg)
    cfg.data.corpus = str(corpus_dir)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors"))
    shutil.copy(corpus.tokenizer_path, run / "tokenizer.json")
    write_planted_task(d / "planted.toml", w)
    return run, d / "planted.toml"


def test_prune_and_validate_through_the_cli(planted_run, capsys, tmp_path):
    run, task = planted_run
    out = tmp_path / "circuit.json"
    code, stdout, err = run_cli(capsys, "prune", str(run), "--task", str(task), "--out", str(out),
                                "--budget", "2", "--steps", "150")
    assert code == 0, err
    assert "3 nodes, 2 edges" in stdout
    circuit = json.loads(out.read_text())
    assert circuit["nodes"] == PLANTED
    assert circuit["provenance"]["run_dir"] == str(run.resolve())
    assert len(circuit["provenance"]["search"]["trials"]) == 2

    report = tmp_path / "validation.json"
    code, stdout, err = run_cli(capsys, "validate", str(out), "--out", str(report), "--n", "48",
                                "--draws", "6")
    assert code == 0, err
    assert "PASS sufficiency" in stdout and "PASS control: inverted labels" in stdout
    v = json.loads(report.read_text())
    assert v["convincing"] is True
    assert v["controls"]["control: re-initialised model"]["reached"] is False


def test_prune_errors_are_one_line(planted_run, capsys, tmp_path):
    run, task = planted_run
    out = str(tmp_path / "c.json")
    assert_one_line_error(*run_cli(capsys, "prune", str(tmp_path / "nope"), "--task", str(task),
                                   "--out", out)[::2], "does not exist")
    assert_one_line_error(*run_cli(capsys, "prune", str(run), "--task", "bracket_countin",
                                   "--out", out)[::2], "unknown task", "bracket_counting")
    # the planted model cannot do its task with the answers swapped, at any circuit size
    assert_one_line_error(*run_cli(capsys, "prune", str(run), "--task", f"{task}:inverted",
                                   "--out", out, "--budget", "1", "--steps", "20")[::2],
                          "cannot do task")
    assert not (tmp_path / "c.json").exists()


def test_validate_errors_are_one_line(planted_run, capsys, tmp_path):
    run, task = planted_run
    assert_one_line_error(*run_cli(capsys, "validate", str(tmp_path / "none.json"))[::2],
                          "does not exist")
    out = tmp_path / "c.json"
    assert run_cli(capsys, "prune", str(run), "--task", str(task), "--out", str(out),
                   "--budget", "1", "--steps", "30")[0] == 0
    other = tmp_path / "other"
    shutil.copytree(run, other)
    from safetensors.torch import load_file
    w = load_file(str(other / "model.safetensors"))
    w["lm_head.weight"] = w["lm_head.weight"] * 1.5
    save_file(w, str(other / "model.safetensors"))
    assert_one_line_error(*run_cli(capsys, "validate", str(out), "--run", str(other))[::2],
                          "was found in model")
    torch.manual_seed(0)


def test_readme_circuit_example_runs(planted_run, monkeypatch, tmp_path):
    """The README's circuit example, on the planted run and its task file."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
               if "find_circuit" in b]
    run, task = planted_run
    code = code.replace('"runs/small-sparse"', repr(str(run)))
    code = code.replace('"single_double_quote"', repr(str(task)))
    code = code.replace("budget=3", "budget=2, log=None")
    monkeypatch.setenv("SPARSECIRCUITS_HOME", str(tmp_path))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    found = namespace["circuit"].nodes  # default settings: the planted path, maybe a stray node
    assert all(set(v) <= set(found.get(s, ())) for s, v in PLANTED.items())
    assert namespace["circuit"].num_nodes <= 5
    full = namespace["model"](namespace["idx"])
    assert full.shape == namespace["circuit_logits"].shape
    assert not torch.equal(full, namespace["circuit_logits"])
