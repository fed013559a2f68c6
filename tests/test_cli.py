"""The command line: each bad input gets one clear line on stderr and a non-zero exit."""

import json
import shutil
import subprocess
import sys

import pytest

from sparsecircuits.checkpoint import checkpoint_dir
from sparsecircuits.cli import main

from .conftest import tiny_config


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def cli_run(corpus_dir, tmp_path_factory):
    """A run trained through the CLI, from a JSON config with an override."""
    d = tmp_path_factory.mktemp("cli")
    cfg = tiny_config(corpus_dir, train=dict(max_steps=10))
    (d / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    assert main(["train", "--config", str(d / "cfg.json"), "--set", "train.max_steps=8",
                 "--out", str(d / "run")]) == 0
    return d / "run"


def test_train_and_eval_through_the_cli(cli_run, capsys):
    state = json.loads((cli_run / "trainer_state.json").read_text())
    assert state["step"] == 8
    code, out, _ = run_cli(capsys, "eval", str(cli_run))
    assert code == 0
    for needle in ("val loss", "L0", "min/neuron", "blocks.0.mlp.c_fc.weight", "mlp.neuron"):
        assert needle in out
    code, out, _ = run_cli(capsys, "eval", str(cli_run), "--json")
    report = json.loads(out)
    assert report["l0"] == sum(t["nonzero"] for t in report["tensors"])


def test_resume_of_a_finished_run_is_a_no_op(cli_run, capsys):
    before = (checkpoint_dir(cli_run) / "model.safetensors").read_bytes()
    code, _, _ = run_cli(capsys, "train", "--out", str(cli_run), "--resume")
    assert code == 0 and (checkpoint_dir(cli_run) / "model.safetensors").read_bytes() == before


def test_wrong_run_path(capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, "eval", str(tmp_path / "nowhere"))[::2],
                          "does not exist")


def test_unknown_config_key(capsys, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"train": {"max_step": 3}}))
    assert_one_line_error(*run_cli(capsys, "train", "--config", str(tmp_path / "c.json"),
                                   "--out", str(tmp_path / "r"))[::2],
                          "unknown key 'max_step'", "did you mean 'max_steps'")
    assert not (tmp_path / "r").exists()
    assert_one_line_error(*run_cli(capsys, "train", "--preset", "tiny-sparse", "--set",
                                   "model.n_layers=3", "--out", str(tmp_path / "r"))[::2],
                          "unknown key 'n_layers'", "'n_layer'")


def test_unknown_preset_and_missing_choice(capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, "train", "--preset", "smal-sparse", "--out",
                                   str(tmp_path / "r"))[::2], "unknown preset", "small-sparse")
    assert_one_line_error(*run_cli(capsys, "train", "--out", str(tmp_path / "r"))[::2],
                          "exactly one of --preset")


def test_corrupt_checkpoint(cli_run, capsys, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(cli_run, bad)
    (checkpoint_dir(bad) / "model.safetensors").write_bytes(b"\x00" * 100)
    assert_one_line_error(*run_cli(capsys, "eval", str(bad))[::2], "corrupt or truncated")


def test_checkpoint_with_non_finite_weights_is_refused(cli_run, capsys, tmp_path):
    from safetensors.torch import load_file, save_file
    bad = tmp_path / "nan"
    shutil.copytree(cli_run, bad)
    tensors = load_file(str(checkpoint_dir(bad) / "model.safetensors"))
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[-1]
    tensors[name].view(-1)[3] = float("nan")
    save_file(tensors, str(checkpoint_dir(bad) / "model.safetensors"))
    assert_one_line_error(*run_cli(capsys, "eval", str(bad))[::2], name, "non-finite")


def test_empty_corpus(capsys, tmp_path):
    (tmp_path / "src").mkdir()
    assert_one_line_error(*run_cli(capsys, "corpus", "build", "--source", str(tmp_path / "src"),
                                   "--out", str(tmp_path / "c"))[::2], "corpus is empty")
    assert not (tmp_path / "c").exists()


def test_missing_corpus_for_training(capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, "train", "--preset", "tiny-sparse", "--corpus",
                                   str(tmp_path / "nocorpus"), "--out", str(tmp_path / "r"))[::2],
                          "not a corpus folder")


def test_console_script_runs(tmp_path):
    exe = shutil.which("sparsecircuits")
    cmd = [exe] if exe else [sys.executable, "-m", "sparsecircuits"]
    res = subprocess.run(cmd + ["eval", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    res = subprocess.run(cmd + ["presets"], capture_output=True, text=True)
    assert res.returncode == 0 and "paper-1x" in res.stdout


def test_eval_with_a_corpus_of_another_tokenizer_is_refused(cli_run, capsys, tmp_path):
    from sparsecircuits.corpus import build_corpus, stdlib_dir
    other = build_corpus(tmp_path / "other", [stdlib_dir() / "json"], vocab_size=300, reserve=(),
                         log=lambda *a: None)
    assert_one_line_error(*run_cli(capsys, "eval", str(cli_run), "--corpus", str(other))[::2],
                          "differs from the tokenizer of the corpus")
