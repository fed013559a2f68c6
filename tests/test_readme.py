"""The README's Python example runs as written (against a tiny run)."""

import re
from pathlib import Path

from sparsecircuits.train import train

from .conftest import quiet, tiny_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(corpus_dir, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    train(tiny_config(corpus_dir, train=dict(max_steps=2)), tmp_path / "runs" / "tiny-sparse",
          log=quiet)
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        if "find_circuit" in code or "sc.monitor" in code:  # need a circuit: tested with one
            continue                                         # in test_circuits_cli, test_monitor
        namespace = {}
        exec(compile(code, "README.md", "exec"), namespace)
        assert not namespace["torch"].equal(namespace["logits"], namespace["patched"])


def test_readme_and_ci_share_the_test_command():
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text()


def test_readme_task_file_example_loads(tmp_path):
    from sparsecircuits.tasks import load_task_file
    blocks = {m.group(1): b for b in re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
              if (m := re.match(r"# (\w+)\.toml", b))}  # task files (the rest: a policy)
    assert set(blocks) == {"dict_or_list", "ioi"}
    path = tmp_path / "ioi.toml"
    path.write_text(blocks["ioi"])
    ioi = load_task_file(path)
    assert all(len(ioi.pairs(100, s, at_most=True)) >= 12 for s in ("train", "val", "test"))
    path = tmp_path / "dict_or_list.toml"
    path.write_text(blocks["dict_or_list"])
    task = load_task_file(path)
    assert task.name == "dict_or_list"
    assert {p.target for p in task.pairs(8, "test")} == {":"}


def test_readme_policy_example_loads(tmp_path):
    from sparsecircuits.monitor import Policy, Thresholds
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
                if b.startswith("[default]")]
    path = tmp_path / "policy.toml"
    path.write_text(block)
    policy = Policy.load(path)
    assert policy.default == Thresholds()  # the README shows the built-in values
    assert policy.for_circuit("single_double_quote").max_anomaly == 8.0
