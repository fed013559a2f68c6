"""Hostile inputs: every file or option a user can hand the tools wrong, and a kill at any
instant of a checkpoint write.

Each mistake gets one line starting with `error:`, exit status 2, no traceback, and writes
nothing; a killed training loses only the steps since its last complete checkpoint. To add a
case: make the bad input inside the test (a file edited from a good one, an option), run the
command with `run_cli`, and check it with `refused`, which asserts the one line, the words it
must hold (the input, the fix) and that the command's outputs do not exist.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparsecircuits import checkpoint
from sparsecircuits.bridges import steer
from sparsecircuits.bridges.core import BridgeConfig, residual_rms
from sparsecircuits.bridges.store import save_bridges
from sparsecircuits.checkpoint import checkpoint_dir, load, read_trainer_state
from sparsecircuits.circuits import Circuit, PruneConfig
from sparsecircuits.circuits.ablation import model_hash
from sparsecircuits.corpus import Corpus
from sparsecircuits.errors import UserError
from sparsecircuits.evaluate import training_summary
from sparsecircuits.train import train, val_windows

from .conftest import quiet, tiny_config
from .test_bridges import identity_bridges
from .test_circuits import PLANTED
from .test_circuits_cli import planted_run  # noqa: F401  (a fixture)
from .test_cli import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
train_module = sys.modules["sparsecircuits.train"]  # the package's `train` is the function


def refused(capsys, *argv, needles=(), absent=()) -> str:
    """Run the command; assert one `error:` line holding every needle, and no `absent` path."""
    code, _, err = run_cli(capsys, *map(str, argv))
    assert_one_line_error(code, err, *needles)
    for path in absent:
        assert not Path(path).exists(), path
    return err


# ---------------------------------------------------------------------------- fixtures

def short_config(corpus_dir):
    """Six steps, a checkpoint every two: the run every checkpoint case trains."""
    return tiny_config(corpus_dir, train=dict(max_steps=6, checkpoint_every=2, eval_every=6))


@pytest.fixture(scope="module")
def straight(corpus_dir, tmp_path_factory):
    """The uninterrupted run: what every interrupted one must end as, bit for bit."""
    return train(short_config(corpus_dir), tmp_path_factory.mktemp("straight") / "run", log=quiet)


def final_weights(run) -> dict:
    return load_file(checkpoint_dir(run) / "model.safetensors")


def assert_same_weights(a: dict, b: dict, what: str = "") -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), (what, k)


@pytest.fixture(scope="module")
def planted(planted_run, corpus_dir, tmp_path_factory):  # noqa: F811
    """The planted run (written in the flat layout, as by hand), its task file, a circuit file
    of it, and a copy of it bridged to another copy through identity bridges."""
    run, task = planted_run
    d = tmp_path_factory.mktemp("hostile")
    model, _ = load(run)
    circuit = Circuit.from_nodes(model, PLANTED, "planted", task_ref=str(task),
                                 config=PruneConfig(), provenance=dict(run_dir=str(run)))
    path = circuit.save(d / "circuit.json")
    dense_run, bridged = d / "dense", d / "bridged"
    shutil.copytree(run, dense_run)
    shutil.copytree(run, bridged)
    windows = val_windows(Corpus(corpus_dir).val, 8, model.cfg.block_size)
    cfg = BridgeConfig(str(dense_run), model_hash(model), frozen=True, afrac=1.0,
                       rms=dict(sparse=residual_rms(model, windows),
                                dense=residual_rms(model, windows)))
    save_bridges(bridged, identity_bridges(model), None, cfg, model)
    return dict(run=run, task=task, circuit=path, bridged=bridged, dir=d)


def edited(src: Path, dest: Path, change) -> Path:
    """A copy of the JSON file `src` at `dest`, changed by `change(d)`."""
    d = json.loads(src.read_text())
    change(d)
    dest.write_text(json.dumps(d))
    return dest


# ---------------------------------------------------------------------------- checkpoints

def test_a_kill_at_any_instant_of_a_checkpoint_write_resumes_to_the_same_weights(
        corpus_dir, straight, tmp_path, monkeypatch):
    """The folder is copied at every step of the second checkpoint's write (before each file,
    half-way through each, before each rename and removal, half-way through a removal): each
    copy is what kill -9 at that instant leaves on disk. Each resumes and ends bit-identical."""
    run, shots, active = tmp_path / "run", [], []

    def shoot(what):
        if active:
            dest = tmp_path / f"killed-{len(shots):02d}"
            shutil.copytree(run, dest)
            shots.append((what, dest))

    def before(fn, what):
        def call(path, *a, **kw):
            shoot(f"before {what} {Path(path).name}")
            return fn(path, *a, **kw)
        return call

    def write_bytes(path, data):
        shoot(f"before writing {path.name}")
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            shoot(f"inside {path.name}")
            f.write(data[len(data) // 2:])

    rmtree = shutil.rmtree

    def remove(path, *a, **kw):
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        if active and files:
            files[0].unlink()  # a removal cut short
            shoot(f"inside removing {Path(path).name}")
        return rmtree(path, *a, **kw)

    save = train_module.save_checkpoint

    def save_and_watch(*a, **kw):
        active[:] = [True] if a[3]["step"] == 4 else []
        try:
            return save(*a, **kw)
        finally:
            shoot("after the checkpoint")
            active.clear()

    monkeypatch.setattr(os, "replace", before(os.replace, "replacing"))
    monkeypatch.setattr(os, "rename", before(os.rename, "renaming"))
    monkeypatch.setattr(shutil, "rmtree", before(remove, "removing"))
    monkeypatch.setattr(checkpoint, "_write_bytes", write_bytes, raising=False)
    monkeypatch.setattr(train_module, "save_checkpoint", save_and_watch)
    train(short_config(corpus_dir), run, log=quiet)
    monkeypatch.undo()

    assert len(shots) >= 10, [w for w, _ in shots]
    want, resumed_from = final_weights(straight), set()
    for what, dest in shots:
        resumed_from.add(read_trainer_state(dest)["step"])
        with open(dest / "metrics.jsonl", "a") as f:
            f.write('{"step": 5, "lo')  # the same kill cuts the metrics log mid-row
        train(None, dest, resume=True, log=quiet)
        assert_same_weights(want, final_weights(dest), what)
        assert read_trainer_state(dest)["step"] == 6 and training_summary(dest)["steps"] == 6
        # nothing of the killed write is left: one checkpoint, no partial or temp files
        assert sorted(p.name for p in dest.iterdir()) == sorted(
            p.name for p in straight.iterdir()), what
    assert resumed_from == {2, 4}  # killed before the commit, and after it


def test_a_real_kill_9_inside_the_model_file_loses_only_the_steps_since_the_checkpoint(
        corpus_dir, straight, tmp_path):
    run = tmp_path / "run"
    script = f"""
import os, signal
from pathlib import Path
from sparsecircuits import checkpoint
from sparsecircuits.train import train
from tests.test_hostile import short_config
write = checkpoint._write_bytes
def kill_inside(path, data):
    if path.name == "model.safetensors" and "000004" in path.parent.name:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, data)
checkpoint._write_bytes = kill_inside
train(short_config(Path({str(corpus_dir)!r})), Path({str(run)!r}), log=lambda *a: None)
"""
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert read_trainer_state(run)["step"] == 2
    train(None, run, resume=True, log=quiet)
    assert_same_weights(final_weights(straight), final_weights(run))


def test_a_full_disk_stops_training_in_one_line_and_keeps_the_last_checkpoint(
        corpus_dir, straight, tmp_path, capsys, monkeypatch):
    cfg, run = tmp_path / "cfg.json", tmp_path / "run"
    cfg.write_text(json.dumps(short_config(corpus_dir).to_dict()))
    write = getattr(checkpoint, "_write_bytes", None)

    def full(path, data):
        if path.name == "model.safetensors" and "000004" in path.parent.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write(path, data)
    monkeypatch.setattr(checkpoint, "_write_bytes", full, raising=False)
    refused(capsys, "train", "--config", cfg, "--out", run,
            needles=(str(run), "No space left on device", "free there", "step 2", "--resume"))
    monkeypatch.undo()
    assert read_trainer_state(run)["step"] == 2
    assert not [p for p in run.iterdir() if p.name.startswith(".") or p.name.endswith("0004")]
    code, _, err = run_cli(capsys, "train", "--out", str(run), "--resume")
    assert code == 0, err
    assert_same_weights(final_weights(straight), final_weights(run))


def test_a_run_killed_before_its_first_checkpoint_is_described_alike_everywhere(
        corpus_dir, tmp_path, capsys):
    cfg, run = tmp_path / "cfg.json", tmp_path / "run"
    cfg.write_text(json.dumps(short_config(corpus_dir).to_dict()))

    def killed(step):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(short_config(corpus_dir), run, log=quiet, on_step=killed)
    lines = {refused(capsys, *argv, needles=("stopped before its first checkpoint",
                                             f"delete {run}"))
             for argv in (("train", "--config", cfg, "--out", run),
                          ("train", "--out", run, "--resume"), ("eval", run))}
    assert len(lines) == 1  # train, train --resume and eval say the same


def test_a_damaged_trainer_state_is_named(straight, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    edited(run / "trainer_state.json", run / "trainer_state.json",
           lambda d: d.update(tokens="many"))
    refused(capsys, "train", "--out", run, "--resume",
            needles=("trainer_state.json", "tokens", "restore it"))
    edited(run / "trainer_state.json", run / "trainer_state.json",
           lambda d: d.update(tokens=1, checkpoint="checkpoint-000099"))
    refused(capsys, "eval", run, needles=("checkpoint-000099", "missing"))


# ---------------------------------------------------------------------------- circuit files

def _append(site, value):
    return lambda d: d["nodes"][site].append(value)


CIRCUIT_CASES = {
    "index past the site's width": (_append("blocks.0.mlp.neuron", 99999),
                                    ("blocks.0.mlp.neuron[99999]", "out of range", "0 to")),
    "negative index": (_append("blocks.0.mlp.neuron", -1),
                       ("blocks.0.mlp.neuron[-1]", "whole number")),
    "float index": (_append("blocks.0.mlp.neuron", 5.0), ("blocks.0.mlp.neuron[5.0]",)),
    "bool index": (_append("blocks.0.mlp.neuron", True), ("blocks.0.mlp.neuron[true]",)),
    "node twice": (_append("blocks.0.mlp.neuron", 0), ("blocks.0.mlp.neuron[0]", "twice")),
    "site past the last layer": (lambda d: d["nodes"].update({"blocks.9.mlp.neuron": [0]}),
                                 ("blocks.9.mlp.neuron", "does not exist")),
    "unknown site kind": (lambda d: d["nodes"].update({"blocks.0.mlp.neuro": [0]}),
                          ("blocks.0.mlp.neuro", "did you mean 'blocks.0.mlp.neuron'")),
    "nodes as a list": (lambda d: d.update(nodes=[["blocks.0.mlp.in", 0]]),
                        ("'nodes' is a JSON array", "mapping")),
    "edge to an unlisted node": (
        lambda d: d["edges"].append(["blocks.0.mlp.in", 5, "blocks.0.mlp.neuron", 0, 0.5,
                                     "weight"]),
        ("blocks.0.mlp.in[5]", "does not list")),
}


@pytest.mark.parametrize("case", CIRCUIT_CASES)
def test_a_circuit_file_edited_wrong_is_refused_before_anything_runs(planted, case, capsys,
                                                                    tmp_path):
    change, needles = CIRCUIT_CASES[case]
    bad = edited(planted["circuit"], tmp_path / "bad.json", change)
    refused(capsys, "view", bad, "--out", tmp_path / "v.html", needles=(str(bad), *needles),
            absent=[tmp_path / "v.html"])


@pytest.mark.parametrize("command", ["view", "report", "trace", "validate", "monitor", "steer"])
def test_every_command_that_reads_a_circuit_checks_it(planted, command, capsys, tmp_path):
    bad = edited(planted["circuit"], tmp_path / "bad.json",
                 _append("blocks.0.mlp.neuron", 99999))
    (tmp_path / "prompts.txt").write_text("x = 1\n")
    out = tmp_path / "out"
    argv = {"view": ("view", bad, "--out", out),
            "report": ("report", bad, "--out", out),
            "trace": ("trace", planted["run"], "--circuit", bad, "--prompt", "x ="),
            "validate": ("validate", bad, "--out", out),
            "monitor": ("monitor", planted["run"], "--circuits", bad, "--input",
                        tmp_path / "prompts.txt", "--out", out),
            "steer": ("steer", planted["bridged"], "--circuit", bad, "--node",
                      "blocks.0.mlp.in[0]", "--prompt", "a", "--counterfactual", "b", "--out",
                      out)}[command]
    refused(capsys, *argv, needles=(str(bad), "blocks.0.mlp.neuron[99999]"), absent=[out])


# ---------------------------------------------------------------------------- monitor

@pytest.mark.parametrize("text", ["5", "null", '["a", "b"]', '{"code": "x"}'])
def test_a_jsonl_input_whose_text_is_not_a_string_is_named(planted, text, capsys, tmp_path):
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"text": "x = 1"}\n{"text": ' + text + "}\n")
    refused(capsys, "monitor", planted["run"], "--circuits", planted["circuit"], "--input",
            inputs, "--out", tmp_path / "mon", needles=(f"{inputs}, line 2", '"text"'),
            absent=[tmp_path / "mon"])


def test_a_text_input_holding_nul_bytes_is_refused(planted, capsys, tmp_path):
    inputs = tmp_path / "inputs.txt"
    inputs.write_bytes(b"x = 1\n\x00\x00\x7fELF\x00\n")
    refused(capsys, "monitor", planted["run"], "--circuits", planted["circuit"], "--input",
            inputs, "--out", tmp_path / "mon", needles=(f"{inputs}, line 2", "NUL"),
            absent=[tmp_path / "mon"])


@pytest.mark.parametrize("line,needles", [
    ("min_share = -1", ("min_share", "in [0, 1]")),
    ("max_anomaly = nan", ("max_anomaly", "finite")),
    ("max_anomaly = inf", ("max_anomaly", "finite")),
    ("max_node_z = 0", ("max_node_z", "above 0")),
    ("min_engagement = 1.5", ("min_engagement", "in [0, 1]")),
    ("min_share = true", ("min_share", "number")),
])
def test_a_policy_threshold_out_of_its_range_is_refused(planted, line, needles, capsys,
                                                        tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(f"[default]\n{line}\n")
    (tmp_path / "prompts.txt").write_text("x = 1\n")
    refused(capsys, "monitor", planted["run"], "--circuits", planted["circuit"], "--input",
            tmp_path / "prompts.txt", "--out", tmp_path / "mon", "--policy", policy,
            needles=(str(policy), *needles), absent=[tmp_path / "mon"])


def test_a_policy_section_for_a_circuit_not_watched_is_refused(planted, capsys, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("[circuit.plantd]\nmax_anomaly = 8.0\n")
    (tmp_path / "prompts.txt").write_text("x = 1\n")
    refused(capsys, "monitor", planted["run"], "--circuits", planted["circuit"], "--input",
            tmp_path / "prompts.txt", "--out", tmp_path / "mon", "--policy", policy,
            needles=("[circuit.plantd]", "did you mean 'planted'"), absent=[tmp_path / "mon"])


def test_reference_statistics_edited_wrong_are_refused(planted, capsys, tmp_path):
    circuit = shutil.copy(planted["circuit"], tmp_path / "circuit.json")
    (tmp_path / "prompts.txt").write_text("x = 1\n")
    code, _, err = run_cli(capsys, "monitor", str(planted["run"]), "--circuits", str(circuit),
                           "--input", str(tmp_path / "prompts.txt"), "--out",
                           str(tmp_path / "ok"))
    assert code == 0, err
    ref = tmp_path / "circuit.reference.json"
    edited(ref, ref, lambda d: d.update(scale=d["scale"][:1]))
    refused(capsys, "monitor", planted["run"], "--circuits", circuit, "--input",
            tmp_path / "prompts.txt", "--out", tmp_path / "mon",
            needles=(str(ref), "'scale'", "delete it"), absent=[tmp_path / "mon"])


# ---------------------------------------------------------------------------- steer and bridge

def test_steer_refuses_a_nan_strength(planted, capsys, tmp_path):
    refused(capsys, "steer", planted["bridged"], "--circuit", planted["circuit"], "--node",
            "blocks.0.mlp.in[0]", "--prompt", "a", "--counterfactual", "b", "--strengths", "0",
            "nan", "--out", tmp_path / "s", needles=("--strengths", "nan", "finite"),
            absent=[tmp_path / "s"])
    with pytest.raises(UserError, match="--strengths"):  # the library checks it too
        steer(planted["bridged"], planted["circuit"], "blocks.0.mlp.in[0]", "a", "b",
              strengths=[0.0, float("nan")])


def test_bridge_refuses_swapped_runs(corpus_dir, tmp_path, capsys):
    sparse = train(tiny_config(corpus_dir, train=dict(max_steps=2)), tmp_path / "sparse",
                   log=quiet)
    dense = train(tiny_config(corpus_dir, train=dict(max_steps=2),
                              sparsity=dict(weight_density=1.0, other_density=1.0)),
                  tmp_path / "dense", log=quiet)
    refused(capsys, "bridge", dense, sparse, "--out", tmp_path / "b", "--steps", "2",
            needles=("weight density 1", "swapped", "sparse run first"),
            absent=[tmp_path / "b"])


@pytest.mark.parametrize("argv,needles", [
    (("eval", "{run}", "--batches", "-2"), ("--batches", "at least 1")),
    (("eval", "{run}", "--batches", "0"), ("--batches", "at least 1")),
    (("prune", "{run}", "--task", "{task}", "--out", "{out}", "--jobs", "0"),
     ("--jobs", "at least 1")),
    (("prune", "{run}", "--task", "{task}", "--out", "{out}", "--seed", "-1"),
     ("--seed", "at least 0")),
    (("validate", "{circuit}", "--draws", "0", "--out", "{out}"), ("--draws", "at least 1")),
    (("compare", "{run}", "{run}", "--out", "{out}", "--budget", "0"), ("--budget",)),
    (("bridge", "{run}", "{run}", "--out", "{out}", "--lr", "nan"), ("--lr", "finite")),
    (("steer", "{bridged}", "--circuit", "{circuit}", "--node", "blocks.0.mlp.in[0]",
      "--pairs", "0", "--out", "{out}"), ("--pairs", "at least 1")),
])
def test_numeric_options_out_of_range_are_refused_before_anything_runs(planted, argv, needles,
                                                                       capsys, tmp_path):
    out = tmp_path / "out"
    fill = dict(planted, out=out)
    refused(capsys, *(a.format(**fill) for a in argv), needles=needles, absent=[out])


# ---------------------------------------------------------------------------- other files

def test_a_damaged_bridges_json_is_named(planted, capsys, tmp_path):
    bridged = shutil.copytree(planted["bridged"], tmp_path / "bridged")
    for change, key in ((lambda d: d.update(afrac="x"), "afrac"),
                        (lambda d: d.update(dense_run=5), "dense_run"),
                        (lambda d: d["rms"]["dense"].clear(), "rms")):
        meta = shutil.copy(planted["bridged"] / "bridges.json", bridged / "bridges.json")
        edited(meta, meta, change)
        refused(capsys, "steer", bridged, "--circuit", planted["circuit"], "--node",
                "blocks.0.mlp.in[0]", "--prompt", "a", "--counterfactual", "b",
                needles=("bridges.json", key))


@pytest.mark.parametrize("change,needles", [
    (lambda s: s.replace('clean = "{p}', 'clean = "{p:d}'), ("'{p:d}'", "'{p}'")),
    (lambda s: s.replace('clean = "{p}', 'clean = "{p!r}'), ("'{p!r}'", "'{p}'")),
    (lambda s: re.sub(r"^target = .*$", 'target = ""', s, flags=re.M), ("'target' is empty",)),
])
def test_a_task_file_value_that_would_fail_later_is_named_now(planted, change, needles, capsys,
                                                               tmp_path):
    task = tmp_path / "task.toml"
    task.write_text(change(Path(planted["task"]).read_text()))
    refused(capsys, "tasks", "show", task, needles=(str(task), *needles))


def test_a_damaged_provenance_file_is_named(planted, tmp_path):
    from sparsecircuits.explain import run_info
    run = shutil.copytree(planted["run"], tmp_path / "run")
    model, _ = load(run)
    for text in ("{not json", '["a list"]'):
        (run / "provenance.json").write_text(text)
        with pytest.raises(UserError, match="provenance.json is damaged"):
            run_info(run, model)
