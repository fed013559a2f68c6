import json

import pytest

from sparsecircuits.config import PRESETS, config_from_dict, load_config, preset
from sparsecircuits.errors import UserError
from sparsecircuits.model import GPT


def test_unknown_key_names_the_key_and_the_closest_valid_one():
    with pytest.raises(UserError, match=r"unknown key 'lrr' \(did you mean 'lr'\?\)"):
        config_from_dict({"train": {"lrr": 0.1}})
    with pytest.raises(UserError, match=r"unknown section 'modle' \(did you mean 'model'\?\)"):
        config_from_dict({"modle": {}})


def test_wrong_types_and_values_are_rejected():
    with pytest.raises(UserError, match="n_layer.*wrong type"):
        config_from_dict({"model": {"n_layer": "two"}})
    with pytest.raises(UserError, match="not a multiple of"):
        config_from_dict({"model": {"d_model": 40, "d_head": 16}})
    with pytest.raises(UserError, match="weight_density"):
        config_from_dict({"sparsity": {"weight_density": 0}})
    with pytest.raises(UserError, match="afrac_sites has unknown site 'mlp.neurons'"):
        config_from_dict({"model": {"afrac_sites": ["mlp.neurons"]}})


def test_config_round_trips_through_json(tmp_path):
    cfg = preset("small-sparse")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert load_config(path) == cfg


def test_bad_config_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")


def test_presets_are_valid_and_the_paper_1x_shape_matches():
    for name in PRESETS:
        preset(name)
    p = preset("paper-1x")
    assert (p.model.n_layer, p.model.d_model, p.model.d_mlp, p.model.n_head) == (8, 256, 1024, 16)
    # ~7.4M parameters outside the bigram table and embeddings' vocab-size dependence
    model = GPT(p.model)
    n = model.num_params() - model.bigram.numel()
    assert 7.0e6 < n < 8.0e6
    with pytest.raises(UserError, match="unknown preset 'tiny-spares'.*'tiny-sparse'"):
        preset("tiny-spares")
