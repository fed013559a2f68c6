"""compare: per-target circuit sizes of two models, geometric means, ratio, plot files."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest

from sparsecircuits.errors import UserError
from sparsecircuits.study.compare import geomean, ratio_interval, summarize, task_folder

from .test_circuits_cli import planted_run  # noqa: F401  (a fixture)
from .test_cli import assert_one_line_error, run_cli


def frontier(**sizes):
    """{target: (nodes, edges) or None} as a search's frontier."""
    return {"targets": {k: (None if v is None else {"nodes": v[0], "edges": v[1]})
                        for k, v in sizes.items()}}


def test_summary_takes_geometric_means_over_tasks_both_models_reach():
    per_task = {
        "a": {"sparse": frontier(**{"0.5": (2, 4), "0.1": (4, 16)}),
              "dense": frontier(**{"0.5": (8, 64), "0.1": None})},
        "b": {"sparse": frontier(**{"0.5": (8, 16), "0.1": (4, 8)}),
              "dense": frontier(**{"0.5": (16, 256), "0.1": (12, 80)})},
    }
    rows = {r["target"]: r for r in summarize(per_task, (0.5, 0.1))}
    assert rows[0.5]["tasks"] == ["a", "b"]
    assert rows[0.5]["sparse_edges"] == 8.0 and rows[0.5]["dense_edges"] == 128.0
    assert rows[0.5]["ratio"] == 16.0
    # nodes: sparse 2, 8 -> 4; dense 8, 16 -> 11.31; per task 4x and 2x
    assert rows[0.5]["node_ratio"] == round(math.sqrt(8), 2)
    assert rows[0.5]["per_task_ratios"] == {"a": {"edges": 16.0, "nodes": 4.0},
                                            "b": {"edges": 16.0, "nodes": 2.0}}
    # every resample of two equal edge ratios is that ratio; node ratios lie between 2x and 4x
    assert rows[0.5]["ratio_interval"] == [16.0, 16.0]
    assert rows[0.5]["node_ratio_interval"] == [2.0, 4.0]
    assert rows[0.1]["tasks"] == ["b"] and rows[0.1]["ratio"] == 10.0
    assert rows[0.1]["ratio_interval"] is None   # one task: nothing to resample
    assert math.isclose(geomean([2, 8]), 4.0) and geomean([None]) is None
    per_task["c"] = {"sparse": frontier(**{"0.5": (0, 0), "0.1": None}),
                     "dense": frontier(**{"0.5": (40, 500), "0.1": None})}
    row = summarize(per_task, (0.5,))[0]
    assert row["tasks"] == ["a", "b"] and row["zero_edge_tasks"] == ["c"]
    assert row["ratio"] == 16.0  # a task with an edgeless circuit cannot enter a geometric mean


def test_bootstrap_interval_covers_the_spread_of_tasks_and_is_reproducible():
    ratios = [2.0, 8.0, 32.0, 128.0]
    lo, hi = ratio_interval(ratios)
    assert 2.0 <= lo < geomean(ratios) < hi <= 128.0
    assert ratio_interval(ratios) == (lo, hi)          # seeded
    assert all(math.isclose(x, 5.0) for x in ratio_interval([5.0, 5.0, 5.0]))
    wide, narrow = ratio_interval([1.0, 100.0] * 2), ratio_interval([9.0, 11.0] * 2)
    assert wide[1] / wide[0] > 50 > narrow[1] / narrow[0]


def test_compare_through_the_cli(planted_run, capsys, tmp_path, monkeypatch):  # noqa: F811
    run, task = planted_run
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(capsys, "compare", str(run), str(twin), "--tasks", str(task),
                                "--targets", "0.3", "0.05", "--steps", "150", "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "compare.json").read_text())
    frontier = result["tasks"][str(task)]
    for m in ("sparse", "dense"):
        assert frontier[m]["targets"]["0.05"]["edges"] == 2   # the planted path
        # reported on the test split too, which the bisection never saw
        at = frontier[m]["targets"]["0.05"]
        assert at["test_loss"] <= 0.05 and at["test_loss_uncalibrated"] >= at["test_loss"]
    assert [r["ratio"] for r in result["summary"]] == [1.0, 1.0]
    assert "dense/sparse" in stdout
    from sparsecircuits.study.compare import format_summary
    at_015 = copy.deepcopy(result)   # the per-task table is printed at 0.15
    for m in ("sparse", "dense"):
        f = at_015["tasks"][str(task)][m]["targets"]
        f["0.15"] = f["0.05"]
    table = format_summary(at_015)
    assert "on the test split" in table and f"{at['test_loss']:.3f}" in table
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "frontier.svg").read_text()
    # The circuits the headline counts are written: none here, 0.15 is not among the targets.
    assert list((out / "circuits").iterdir()) == []
    assert result["command"] == (f"sparsecircuits compare {run} {twin} --tasks {task} "
                                 "--targets 0.3 0.05")
    assert_one_line_error(*run_cli(capsys, "compare", str(run), str(twin), "--targets", "2",
                                   "--out", str(out))[::2], "between 0 and chance")
    assert_one_line_error(*run_cli(capsys, "compare", str(run), str(twin), "--jobs", "0",
                                   "--out", str(out))[::2], "--jobs 0 must be at least 1")
    # The CLI ran the two searches in two processes; in this one process they give the same.
    from sparsecircuits.study import compare
    alone = compare(run, twin, tasks=[str(task)], targets=(0.3, 0.05), steps=150, jobs=1, log=None)
    assert alone["tasks"] == result["tasks"] and alone["summary"] == result["summary"]
    assert (result["ablation"], result["freeze_norm"]) == ("mean", False)
    import importlib
    study = importlib.import_module("sparsecircuits.study.compare")  # the module, not the function
    seen, real = [], study.search
    monkeypatch.setattr(study, "search", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    stale = tmp_path / "zero" / "circuits" / "gone" / "sparse.json"   # an earlier run's
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    zero = compare(run, twin, tasks=[str(task)], targets=(0.15, 0.05), steps=150, jobs=1,
                   ablation="zero", freeze_norm=True, out=tmp_path / "zero", log=None)
    assert (zero["ablation"], zero["freeze_norm"]) == ("zero", True)
    assert zero["command"].endswith("--targets 0.15 0.05 --ablation zero "
                                    "--freeze-norm")
    from sparsecircuits.circuits import Circuit
    for m in ("sparse", "dense"):   # the circuits the headline counts, as the frontier has them
        c = Circuit.load(tmp_path / "zero" / "circuits" / task_folder(str(task)) / f"{m}.json")
        at = zero["tasks"][str(task)][m]["targets"]["0.15"]
        assert (c.num_nodes, c.num_edges, c.target_loss) == (at["nodes"], at["edges"], 0.15)
        assert c.provenance["run_dir"] == str((run if m == "sparse" else twin).resolve())
    assert not stale.parent.exists()   # replaced, not added to
    assert [f.name for f in (tmp_path / "zero").iterdir() if f.name.startswith(".")] == []
    # both searches ran with those settings
    assert [(c.ablation.value, c.freeze_norm) for c in seen] == [("zero", True)] * 2
    trial = zero["tasks"][str(task)]["sparse"]["trials"][0]
    assert trial["targets"]["0.05"] is not None  # the planted path survives zero ablation too


def test_demo_lists_a_task_the_last_token_gives_away_instead_of_pruning_it(
        planted_run, tmp_path, monkeypatch):  # noqa: F811
    import sparsecircuits.circuits.pruning as pruning
    from sparsecircuits.demo import demo
    run, task = planted_run
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    # As if the embeddings and bigram table alone did the task in one of the models.
    monkeypatch.setattr(pruning, "empty_circuit_loss", lambda model, *a: 0.01)
    with pytest.raises(UserError, match="with a circuit to find"):
        demo(tmp_path / "demo", runs=(run, twin), tasks=[str(task)], log=lambda *_: None)
    assert "the last token gives it away" in (tmp_path / "demo" / "tasks.txt").read_text()


def test_demo_writes_its_report_folder(planted_run, tmp_path):  # noqa: F811
    from sparsecircuits.demo import demo
    run, task = planted_run
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    lines = []
    out = demo(tmp_path / "demo", runs=(run, twin), tasks=[str(task)], jobs=2, log=lines.append)
    folder = out / "planted"
    for f in ("sparse.json", "dense.json", "validation-sparse.json", "viewer.html", "report.md",
              "report.html"):
        assert (folder / f).is_file(), f
    for f in ("index.html", "summary.md", "frontier.png", "frontier.svg", "compare.json",
              "tasks.txt"):
        assert (out / f).is_file(), f
    summary = (out / "summary.md").read_text()
    assert "| 2 |" in summary or "2.0" in summary  # the planted circuit has 2 edges
    assert any(line.startswith("[1/") for line in lines)  # progress lines
    assert sum("working on planted" in line for line in lines) == 2  # as each job starts
    assert any("open" in line and "index.html" in line for line in lines)
    page = (out / "index.html").read_text()
    assert 'img src="data:image/png;base64,' in page       # the plot is on the page itself
    assert "What was found: At task loss 0.15, dense circuits have 1.0x" in page
    assert "![" in summary and "(frontier.png)" in summary
    result = json.loads((out / "compare.json").read_text())
    assert result["summary"][-2]["ratio"] == 1.0  # target 0.15: the same model twice
    from sparsecircuits.circuits.ablation import ABLATIONS
    from sparsecircuits.demo import ABLATION_WORDS
    assert result["ablation"] == "mean" and set(ABLATION_WORDS) == set(ABLATIONS)
    assert ABLATION_WORDS["mean"] in summary
    with pytest.raises(UserError, match="--jobs 0 must be at least 1"):
        demo(tmp_path / "none", runs=(run, twin), jobs=0)
    # two worker processes find what one process finds, file for file
    alone = demo(tmp_path / "alone", runs=(run, twin), tasks=[str(task)], jobs=1,
                 log=lambda *_: None)
    again = json.loads((alone / "compare.json").read_text())
    assert (again["tasks"], again["summary"]) == (result["tasks"], result["summary"])
    for f in ("sparse.json", "dense.json"):
        a, b = (json.loads((o / "planted" / f).read_text()) for o in (out, alone))
        assert (a["nodes"], a["edges"]) == (b["nodes"], b["edges"])


def test_demo_validates_the_circuits_of_a_study_made_on_its_models(
        planted_run, tmp_path, monkeypatch):  # noqa: F811
    import importlib
    from sparsecircuits.demo import demo
    from sparsecircuits.study import compare
    run, task = planted_run
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    study = compare(run, twin, tasks=[str(task)], targets=(0.5, 0.15), jobs=1,
                    out=tmp_path / "study", log=None)
    search_module = importlib.import_module("sparsecircuits.circuits.search")  # not the function
    real, searched = search_module.search, []
    monkeypatch.setattr(search_module, "search",
                        lambda *a, **k: searched.append(a[2]) or real(*a, **k))
    lines = []
    out = demo(tmp_path / "demo", runs=(run, twin), tasks=[str(task)], study=tmp_path / "study",
               jobs=1, log=lines.append)
    assert searched == []   # the study's circuits, validated, not searched for again
    result = json.loads((out / "compare.json").read_text())
    assert result["study"]["command"] == study["command"]
    def sizes(rows):   # tasks are keyed by name in the demo, by the path given to compare
        return [{k: v for k, v in r.items() if "tasks" not in k and k != "per_task_ratios"}
                for r in rows]
    assert sizes(result["summary"]) == sizes(study["summary"])
    assert result["targets"] == [0.5, 0.15]
    for m in ("sparse", "dense"):
        shown = json.loads((out / "planted" / f"{m}.json").read_text())
        counted = json.loads((tmp_path / "study" / "circuits" / task_folder(str(task))
                              / f"{m}.json").read_text())
        assert shown == counted
        assert (out / "planted" / f"validation-{m}.json").is_file()
    page = (out / "index.html").read_text()
    assert study["command"] in page and study["sparse"]["model_hash"][:12] in page
    assert "not searched for now" in page and (out / "planted" / "viewer.html").is_file()
    # Another search (here: fewer trials) or --live: the demo searches itself.
    for kw in (dict(budget=1), dict(live=True)):
        searched.clear()
        out = demo(tmp_path / "other", runs=(run, twin), tasks=[str(task)], jobs=1,
                   study=tmp_path / "study", log=lines.append, **kw)
        assert len(searched) == 2 and "study" not in json.loads((out / "compare.json").read_text())
    assert any("with another search" in line for line in lines)
    (tmp_path / "study" / "compare.json").write_text("{")
    with pytest.raises(UserError, match="is not a compare result"):
        demo(tmp_path / "bad", runs=(run, twin), tasks=[str(task)], jobs=1,
             study=tmp_path / "study", log=lines.append)


def test_demo_prunes_with_the_ablation_it_is_given(planted_run, tmp_path):  # noqa: F811
    from sparsecircuits.demo import ABLATION_WORDS, demo
    run, task = planted_run
    out = demo(tmp_path / "rs", runs=(run, run), tasks=[str(task)], jobs=1, budget=1,
               ablation="resample", log=lambda *_: None)
    assert json.loads((out / "compare.json").read_text())["ablation"] == "resample"
    circuit = json.loads((out / "planted" / "sparse.json").read_text())
    assert circuit["config"]["ablation"] == "resample"
    v = json.loads((out / "planted" / "validation-sparse.json").read_text())
    assert v["ablation"] == "resample"
    assert ABLATION_WORDS["resample"] in (out / "summary.md").read_text()
    with pytest.raises(UserError, match="unknown ablation"):
        demo(tmp_path / "bad", runs=(run, run), tasks=[str(task)], ablation="median")
    assert not (tmp_path / "bad").exists()   # refused before anything is written


def test_demo_summary_points_to_resample_ablation_when_resampling_breaks_a_circuit():
    from .test_circuits import fake_validation
    from sparsecircuits.circuits.validate import _verdicts
    from sparsecircuits.demo import summary_doc
    result = dict(sparse=dict(weight_density=0.0625, afrac=0.25), dense=dict(weight_density=1.0,
                  afrac=1.0), summary=[], ablation="mean")
    broken = fake_validation(resample=dict(draws=20, losses=[1.0] * 20, mean=1.0, max=1.2))
    broken.verdicts, broken.convincing, broken.summary = _verdicts(broken, 0.15)
    held = fake_validation()
    held.verdicts, held.convincing, held.summary = _verdicts(held, 0.15)

    def text(validations, ablation="mean"):
        return summary_doc({**result, "ablation": ablation}, ["t"], {}, validations).markdown()

    assert "Resampling breaks 1 of 2 circuits here (t (sparse))" in text(
        {("t", "sparse"): broken, ("t", "dense"): held})
    assert "--ablation resample" in text({("t", "sparse"): broken})
    assert "Resampling breaks" not in text({("t", "sparse"): held})
    assert "Resampling breaks" not in text({("t", "sparse"): broken}, ablation="resample")
