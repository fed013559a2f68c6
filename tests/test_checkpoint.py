import json

import pytest

import sparsecircuits
from sparsecircuits.checkpoint import checkpoint_dir
from sparsecircuits.errors import UserError
from sparsecircuits.train import train

from .conftest import TEST_VOCAB, quiet, tiny_config


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
    assert tok.get_vocab_size() == model.cfg.vocab_size == TEST_VOCAB


def test_missing_run_folder_and_files(run, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        sparsecircuits.load(tmp_path / "nope")
    with pytest.raises(UserError, match="no config.json"):
        sparsecircuits.load(tmp_path)
    r = copy_run(run, tmp_path / "r")
    (checkpoint_dir(r) / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors is missing"):
        sparsecircuits.load(r)


def test_corrupt_checkpoint_is_a_one_line_error(run, tmp_path):
    r = copy_run(run, tmp_path / "r")
    path = checkpoint_dir(r) / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated") as e:
        sparsecircuits.load(r)
    assert "\n" not in str(e.value)
    path.write_bytes(b"garbage")
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


def test_export_writes_a_half_precision_run_that_loads(corpus_dir, tmp_path):
    import torch

    from sparsecircuits.checkpoint import load
    from sparsecircuits.release import export_run
    run = tmp_path / "run"
    train(tiny_config(corpus_dir, train=dict(max_steps=6)), run, log=quiet)
    out = export_run(run, tmp_path / "release", log=quiet)
    assert not (out / "optimizer.safetensors").exists()
    assert (out / "model.safetensors").stat().st_size < 0.6 * (checkpoint_dir(run) / "model.safetensors").stat().st_size
    full, _ = load(run)
    half, _ = load(out)
    patterned = {st.name for st in full.sparse_tensors()}
    assert patterned
    for (n, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items()):
        assert b.dtype == torch.float32                       # upcast on load
        if n in patterned:                                    # the sparsity pattern survives
            assert torch.equal(a != 0, b != 0), n             # (the dense bigram table may round)
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6), n
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["dtype"] == "float16" and abs(state["val_loss"] - state["val_loss_float32"]) < 0.01
    with pytest.raises(UserError, match="not an empty folder"):
        export_run(run, out, log=quiet)
    with pytest.raises(UserError, match="not an empty folder"):  # a file where the folder goes
        export_run(run, out / "config.json", log=quiet)


def test_export_stores_sparse_tensors_as_their_nonzeros(corpus_dir, tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sparsecircuits.checkpoint import load
    from sparsecircuits.release import export_run
    run = tmp_path / "run"
    train(tiny_config(corpus_dir, train=dict(max_steps=6)), run, log=quiet)
    out = export_run(run, tmp_path / "release", log=quiet)
    path = out / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    stored = json.loads(meta["sparse"])
    full, _ = load(run)
    half, _ = load(out)
    weights = full.state_dict()
    assert stored and all(list(weights[n].shape) == s for n, s in stored.items())
    raw = load_file(str(path))
    for name in stored:  # only the nonzeros are in the file
        assert name not in raw
        assert raw[name + ".nz_index"].numel() == int((weights[name] != 0).sum())
    for n in stored:
        assert torch.equal(weights[n] != 0, half.state_dict()[n] != 0), n
    # an index past the end of its tensor: a corrupt file, one clear error
    name = next(iter(stored))
    raw[name + ".nz_index"][0] = 10**9
    save_file(raw, str(path), metadata=meta)
    with pytest.raises(UserError, match="corrupt"):
        load(out)


def test_a_run_in_the_flat_layout_of_earlier_versions_loads_and_resumes(corpus_dir, tmp_path):
    """Before checkpoints had folders, model, optimizer and trainer state lay beside
    config.json: such a run loads, resumes exactly, and continues in checkpoint folders."""
    import shutil

    import torch
    from safetensors.torch import load_file

    def config():
        return tiny_config(corpus_dir, train=dict(max_steps=6, checkpoint_every=3))

    def stop(step):
        if step == 3:
            raise KeyboardInterrupt
    straight = train(config(), tmp_path / "straight", log=quiet)
    old = tmp_path / "old"
    with pytest.raises(KeyboardInterrupt):
        train(config(), old, log=quiet, on_step=stop)
    folder = checkpoint_dir(old)
    for f in folder.iterdir():
        shutil.move(f, old / f.name)
    folder.rmdir()
    state = json.loads((old / "trainer_state.json").read_text())
    del state["checkpoint"]
    (old / "trainer_state.json").write_text(json.dumps(state))
    assert checkpoint_dir(old) == old
    sparsecircuits.load(old)
    train(None, old, resume=True, log=quiet)
    assert checkpoint_dir(old) == old / "checkpoint-000006"
    assert not (old / "model.safetensors").exists() and not (old / "optimizer.safetensors").exists()
    a = load_file(checkpoint_dir(straight) / "model.safetensors")
    b = load_file(checkpoint_dir(old) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_shipped_models_and_their_study_circuits_load():
    """Flat run folders written by `export`, and circuit files written by `compare`: read by
    the one run reader and the one circuit reader, each circuit checked against its model."""
    from pathlib import Path

    from sparsecircuits.circuits import Circuit
    from sparsecircuits.demo import shipped_runs
    models = {r.name: sparsecircuits.load(r)[0] for r in map(Path, shipped_runs())}
    study = Path(shipped_runs()[0]).parent / "study" / "circuits"
    files = sorted(study.rglob("*.json"))
    assert files
    for f in files:
        assert Circuit.load(f, models[f.stem]).task == f.parent.name, f
