import pytest

import sparsecircuits
from sparsecircuits.errors import UserError
from sparsecircuits.train import train

from .conftest import quiet, tiny_config


@pytest.fixture(scope="module")
def run(corpus_dir, tmp_path_factory):
    return train(tiny_config(corpus_dir, train=dict(max_steps=5)),
                 tmp_path_factory.mktemp("ck") / "run", log=quiet)


def copy_run(run, dest):
    import shutil
    shutil.copytree(run, dest)
    return dest


def test_load_returns_model_and_tokenizer(run):
    model, tok = sparsecircuits.load(run)
    assert not model.training
    assert tok.get_vocab_size() == model.cfg.vocab_size == 512


def test_missing_run_folder_and_files(run, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        sparsecircuits.load(tmp_path / "nope")
    with pytest.raises(UserError, match="no config.json"):
        sparsecircuits.load(tmp_path)
    r = copy_run(run, tmp_path / "r")
    (r / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors is missing"):
        sparsecircuits.load(r)


def test_corrupt_checkpoint_is_a_one_line_error(run, tmp_path):
    r = copy_run(run, tmp_path / "r")
    data = (r / "model.safetensors").read_bytes()
    (r / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated") as e:
        sparsecircuits.load(r)
    assert "\n" not in str(e.value)
    (r / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt or truncated"):
        sparsecircuits.load(r)


def test_config_that_does_not_match_the_weights(run, tmp_path):
    r = copy_run(run, tmp_path / "r")
    text = (r / "config.json").read_text().replace('"d_mlp": 64', '"d_mlp": 128')
    (r / "config.json").write_text(text)
    with pytest.raises(UserError, match="different runs"):
        sparsecircuits.load(r)


def test_no_temp_files_left_behind(run):
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
