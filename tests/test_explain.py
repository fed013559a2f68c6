"""The viewer in a real browser, the audit report, the trace, and notebook displays, on a
circuit pruned from the planted model."""

from __future__ import annotations

import json
import shutil

import pytest

from sparsecircuits.circuits import Circuit, open_run
from sparsecircuits.explain import gather, render_html

from .test_circuits import PLANTED
from .test_circuits_cli import planted_run  # noqa: F401  (a fixture)
from .test_cli import assert_one_line_error, run_cli

ATTACK = '</script><img src=x onerror="window.__pwned=1">'


@pytest.fixture(scope="module")
def planted_circuit(planted_run, tmp_path_factory):  # noqa: F811
    run, task = planted_run
    out = tmp_path_factory.mktemp("explain") / "circuit.json"
    from sparsecircuits.cli import main
    assert main(["prune", str(run), "--task", str(task), "--out", str(out), "--budget", "2",
                 "--steps", "150"]) == 0
    assert Circuit.load(out).nodes == PLANTED
    return run, task, out


def test_report_writes_every_figure_and_the_viewer(planted_circuit, capsys, tmp_path):
    run, _, circuit = planted_circuit
    code, out, err = run_cli(capsys, "report", str(circuit), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    for needle in ("## Behaviour studied", "## Model", "## Circuit", "## Validation", "## Nodes",
                   "## Caveats", "## Reproduce", "sufficiency", "necessity", "faithfulness",
                   "stochastic ablation", "control: inverted labels",
                   "control: re-initialised model", "sensitivity: zero ablation",
                   "blocks.0.mlp.neuron[0]", "sparsecircuits prune", "3 nodes and 2 edges"):
        assert needle in md, needle
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<table>" in html and "blocks.0.mlp.neuron[0]" in html and "<script" not in html
    v = json.loads((tmp_path / "rep" / "validation.json").read_text())
    assert v["sufficiency"]["loss"] <= 0.15
    # the figures in the report are the validation's own
    assert f"{v['necessity']['loss_calibrated']:.4g}" in md
    assert (tmp_path / "rep" / "viewer.html").is_file()

    # re-using a validation file skips validating; a bad one is a one-line error
    code, _, err = run_cli(capsys, "report", str(circuit), "--out", str(tmp_path / "rep2"),
                           "--validation", str(tmp_path / "rep" / "validation.json"))
    assert code == 0, err
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert_one_line_error(*run_cli(capsys, "report", str(circuit), "--out", str(tmp_path / "r3"),
                                   "--validation", str(tmp_path / "junk.json"))[::2],
                          "not a validation file")
    assert_one_line_error(*run_cli(capsys, "view", str(circuit), "--out",
                                   str(tmp_path / "junk.json" / "v.html"))[::2], "not a folder")


def test_trace_names_the_nodes_that_decide_the_answer(planted_circuit, capsys):
    run, _, circuit = planted_circuit
    c = Circuit.load(circuit)
    from sparsecircuits.tasks import get_task
    pair = get_task(c.task_ref).pairs(1, "test")[0]
    for prompt, want in ((pair.clean, pair.target), (pair.corrupt, pair.alt)):
        code, out, err = run_cli(capsys, "trace", str(run), "--circuit", str(circuit),
                                 "--prompt", prompt, "--json")
        assert code == 0, err
        t = json.loads(out)
        assert t["answer"] == want
        top3 = {n["id"] for n in t["nodes"][:3]}
        assert top3 == {"blocks.0.mlp.in[0]", "blocks.0.mlp.neuron[0]", "blocks.0.mlp.out[1]"}
        # every node of the path moves the answer the same way the model goes
        sign = 1 if t["logit_diff"] > 0 else -1
        assert all(sign * n["contribution"] > 0 for n in t["nodes"])
        # the deciding word is the last token, so the whole path is active there
        assert all(n["fired"] and n["fired_last"] for n in t["nodes"][:3])
        # calibrated = scale * uncalibrated, both carried
        assert t["calibration_scale"] == c.calibration["scale"]
        assert t["circuit_logit_diff"] == pytest.approx(
            c.calibration["scale"] * t["circuit_logit_diff_uncalibrated"], abs=1e-3)
    code, out, _ = run_cli(capsys, "trace", str(run), "--circuit", str(circuit), "--prompt",
                           pair.clean)
    assert "model's top next tokens" in out and "blocks.0.mlp.neuron[0]" in out
    assert "uncalibrated" in out and "calibrated (scale" in out and "at last" in out
    from sparsecircuits.explain import trace
    t = trace(run, circuit, pair.clean, log=None)
    assert "<table>" in t._repr_html_() and "blocks.0.mlp.out[1]" in t._repr_html_()
    assert_one_line_error(*run_cli(capsys, "trace", str(run), "--circuit", str(circuit),
                                   "--prompt", "")[::2], "--prompt is empty")


def test_trace_tells_firing_at_the_last_token_from_firing_anywhere(planted_circuit):
    run, _, circuit = planted_circuit
    from sparsecircuits.explain import trace
    from sparsecircuits.tasks import get_task
    pair = get_task(Circuit.load(circuit).task_ref).pairs(1, "test")[0]
    # one more filler word after the deciding word: mlp.in[0] reads only the deciding word
    # (its channel is zero in every filler's embedding), so it fired, but not at the last token
    t = trace(run, circuit, pair.clean + " " + pair.clean.split()[0], log=None)
    node = {n["id"]: n for n in t.to_dict()["nodes"]}["blocks.0.mlp.in[0]"]
    assert node["fired"] and not node["fired_last"] and node["act_last"] == 0
    row = next(ln for ln in t.format().splitlines() if "blocks.0.mlp.in[0]" in ln)
    assert row.split()[1:3] == ["yes", "no"]
    html = t._repr_html_()
    assert "fired at last token" in html and "fired anywhere" in html


def test_trace_applies_the_scale_only_and_says_when_it_is_large(planted_circuit, tmp_path,
                                                               capsys):
    run, _, circuit = planted_circuit
    d = json.loads(circuit.read_text())
    d["calibration"] = {"scale": 14.2, "bound": 20.0}
    faint = tmp_path / "faint.json"
    faint.write_text(json.dumps(d))
    from sparsecircuits.tasks import get_task
    pair = get_task(d["task_ref"]).pairs(1, "test")[0]
    code, out, err = run_cli(capsys, "trace", str(run), "--circuit", str(faint), "--prompt",
                             pair.clean, "--json")
    assert code == 0, err
    t = json.loads(out)
    assert t["calibration_scale"] == 14.2 and t["faint"]
    assert t["circuit_logit_diff"] == pytest.approx(14.2 * t["circuit_logit_diff_uncalibrated"],
                                                    abs=1e-3)
    code, out, err = run_cli(capsys, "trace", str(run), "--circuit", str(faint), "--prompt",
                             pair.clean)
    assert code == 0, err
    assert ("the circuit's logits are scaled by 14.2x to be calibrated: its own signal is faint"
            in out)
    assert f"{t['circuit_logit_diff_uncalibrated']:+.3f} uncalibrated" in out
    assert f"{t['circuit_logit_diff']:+.3f} calibrated" in out
    assert "shift" not in out
    from sparsecircuits.explain import trace
    assert "its own signal is faint" in trace(run, faint, pair.clean, log=None)._repr_html_()
    d["calibration"] = {"scale": 2.0}
    faint.write_text(json.dumps(d))
    code, out, _ = run_cli(capsys, "trace", str(run), "--circuit", str(faint), "--prompt",
                           pair.clean)
    assert code == 0 and "faint" not in out


def test_notebook_displays(planted_circuit):
    _, _, circuit = planted_circuit
    c = Circuit.load(circuit)
    html = c._repr_html_()
    assert "<table>" in html and "nodes at mlp.neuron" in html and "3 nodes, 2 edges" in html
    from sparsecircuits.circuits import validate
    run = c.provenance["run_dir"]
    model, tok, corpus = open_run(run)
    val = validate(c, model, tok, corpus=corpus, n=32, draws=4, controls=False, log=None)
    vh = val._repr_html_()
    assert "sufficiency (calibrated)" in vh and "PASS sufficiency" in vh


# ----------------------------------------------------------------------------- browser

def chrome():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver); the README's test command "
                    "installs them")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_viewer_in_a_real_browser(planted_circuit, tmp_path):
    from selenium.webdriver.common.by import By
    run, _, circuit = planted_circuit
    model, tok, corpus = open_run(run)
    c = Circuit.load(circuit)
    data = gather(c, model, tok, corpus, log=None)
    # corpus text is code: a token sequence that would be markup must stay text
    node = data["nodes"][1]
    node["contexts"].insert(0, dict(tokens=["x = '", ATTACK, "'"], acts=[0.0, 1.0, 0.0], at=1))
    node["top_tokens"].insert(0, [ATTACK, 3])
    data["prompts"][0]["tokens"][0] = ATTACK
    data["meta"]["description"] += " " + ATTACK
    page = tmp_path / "viewer.html"
    page.write_text(render_html(data))
    assert page.read_text().count("</script>") == 2  # only the page's own two blocks

    driver = chrome()
    try:
        driver.get(page.as_uri())
        svg_nodes = driver.find_elements(By.CSS_SELECTOR, "svg .node")
        assert len(svg_nodes) == c.num_nodes == 3
        summary = driver.find_element(By.ID, "summary").text
        assert summary.startswith(f"{c.num_nodes} nodes, {c.num_edges} edges")
        assert "uncalibrated" in summary and "bound" in summary  # a temperature, no shift
        assert "shift" not in summary and "NaN" not in summary
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg .edge")) == len(data["edges"])

        svg_nodes[1].find_element(By.CSS_SELECTOR, "rect, circle").click()
        title = driver.find_element(By.ID, "card-title").text
        assert title == node["id"]
        card = driver.find_element(By.ID, "card").text
        assert ATTACK in card                       # shown as text ...
        assert "Edges in" in card and "Edges out" in card
        assert driver.execute_script("return window.__pwned === undefined")  # ... never run
        assert not driver.find_elements(By.CSS_SELECTOR, "img")
        assert ATTACK in driver.find_element(By.ID, "title").text
        assert ATTACK in driver.find_element(By.ID, "prompt-tokens").text

        # the prompt browser lights up the circuit nodes active on a token
        tokens = driver.find_elements(By.CSS_SELECTOR, "#prompt-tokens .tok")
        tokens[-1].click()
        lit = driver.find_elements(By.CSS_SELECTOR, "svg .node.lit")
        assert len(lit) >= 1
        assert "circuit nodes active" in driver.find_element(By.ID, "prompt-info").text

        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests
                if m["method"] == "Network.requestWillBeSent"]
        assert urls and all(u == page.as_uri() for u in urls), urls
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


def large_circuit_data(data: dict, n: int = 90, seed: int = 0) -> dict:
    """A viewer's data for an n-node circuit, built from a real card: random sites, distinct
    importances (a few not measured), weight edges from each layer to later ones and q-k links."""
    import random
    rng = random.Random(seed)
    kinds = ["attn.in", "attn.q", "attn.k", "attn.v", "attn.out", "mlp.in", "mlp.neuron",
             "mlp.out"]
    order = {k: i for i, k in enumerate(kinds)}
    nodes = []
    for i in range(n):
        layer, kind = rng.randrange(data["meta"]["n_layer"]), rng.choice(kinds)
        card = dict(data["nodes"][0], id=f"blocks.{layer}.{kind}[{i}]", layer=layer, kind=kind,
                    index=i, site=f"blocks.{layer}.{kind}", edges_in=[], edges_out=[],
                    ablation_delta=None if i % 15 == 7 else round(0.001 * (i + 1), 4))
        nodes.append(card)
    rank = [(c["layer"], order[c["kind"]]) for c in nodes]
    edges = []
    for a in range(n):
        for b in rng.sample(range(n), 6):
            if rank[a] < rank[b]:
                edges.append([a, b, round(rng.uniform(-1, 1), 5), "weight"])
        if nodes[a]["kind"] == "attn.q":
            k = next((b for b in range(n) if nodes[b]["kind"] == "attn.k"
                      and nodes[b]["layer"] == nodes[a]["layer"]), None)
            if k is not None:
                edges.append([a, k, 0.0, "qk"])
    return dict(data, nodes=nodes, edges=edges, meta=dict(data["meta"], nodes=n, edges=len(edges)))


def test_viewer_filters_a_large_circuit_and_highlights_paths(planted_circuit, tmp_path):
    """A large circuit opens on its 40 most important nodes; the sliders show exactly the
    nodes at or above an importance and the edges at or above a weight, with the counts; a
    selected node's upstream and downstream paths are the ones the edges give."""
    from selenium.webdriver.common.by import By
    run, _, circuit = planted_circuit
    model, tok, corpus = open_run(run)
    data = large_circuit_data(gather(Circuit.load(circuit), model, tok, corpus, log=None))
    nodes, edges = data["nodes"], data["edges"]
    page = tmp_path / "large.html"
    page.write_text(render_html(data))

    def expected(imp, weight):
        vis = {i for i, c in enumerate(nodes) if imp is None
               or (c["ablation_delta"] is not None and c["ablation_delta"] >= imp)}
        shown = [e for e in edges if e[0] in vis and e[1] in vis
                 and (e[3] != "weight" or weight is None or abs(e[2]) >= weight)]
        return vis, shown

    driver = chrome()
    try:
        driver.get(page.as_uri())

        def drawn():
            return ({int(g.get_attribute("data-i"))
                     for g in driver.find_elements(By.CSS_SELECTOR, "svg .node")},
                    len(driver.find_elements(By.CSS_SELECTOR, "svg .edge")))

        def slide(slider, step):
            driver.execute_script("const s = document.getElementById(arguments[0]); "
                                  "s.value = arguments[1]; s.dispatchEvent(new Event('input'));",
                                  slider, step)

        counts = driver.find_element(By.ID, "filter-counts")
        deltas = sorted({c["ablation_delta"] for c in nodes if c["ablation_delta"] is not None})
        vis, shown = drawn()
        top = set(sorted((i for i, c in enumerate(nodes) if c["ablation_delta"] is not None),
                         key=lambda i: -nodes[i]["ablation_delta"])[:40])
        assert vis == top                                   # the 40 most important nodes
        assert counts.text.startswith(f"showing 40 of {len(nodes)} nodes")
        assert shown <= 150

        slide("imp-filter", 0)
        slide("edge-filter", 0)
        assert drawn() == (set(range(len(nodes))), len(edges))
        n, m = len(nodes), len(edges)
        assert counts.text == f"showing {n} of {n} nodes, {m} of {m} edges"

        weights = sorted({abs(e[2]) for e in edges if e[3] == "weight"})
        for imp_step, edge_step in ((10, 0), (30, 25), (1, len(weights) // 2)):
            slide("imp-filter", imp_step)
            slide("edge-filter", edge_step)
            vis, shown = expected(deltas[imp_step - 1], weights[edge_step - 1] if edge_step else None)
            assert drawn() == (vis, len(shown))
            assert counts.text.startswith(f"showing {len(vis)} of {len(nodes)} nodes, "
                                          f"{len(shown)} of {len(edges)} edges")
            assert driver.find_element(By.ID, "imp-value").text == f"≥ {deltas[imp_step - 1]:.4f}"

        driver.find_element(By.ID, "show-all").click()
        assert drawn() == (set(range(len(nodes))), len(edges))

        # paths: everything that reaches the node and everything it reaches, over all edges
        succ = {i: set() for i in range(len(nodes))}
        pred = {i: set() for i in range(len(nodes))}
        for a, b, _, kind in edges:
            succ[a].add(b), pred[b].add(a)
            if kind == "qk":
                succ[b].add(a), pred[a].add(b)

        def reach(i, nxt):
            seen, todo = {i}, [i]
            while todo:
                for j in nxt[todo.pop()] - seen:
                    seen.add(j), todo.append(j)
            return seen

        i = max(range(len(nodes)), key=lambda j: len(reach(j, pred)) * len(reach(j, succ)))
        driver.find_element(By.CSS_SELECTOR, f'svg .node[data-i="{i}"] text').click()
        on = {int(g.get_attribute("data-i"))
              for g in driver.find_elements(By.CSS_SELECTOR, "svg .node.onpath")}
        up, down = reach(i, pred), reach(i, succ)
        assert on == up | down and len(on) < len(nodes)
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg .node.dim")) == len(nodes) - len(on)
        assert (f"{len(up) - 1} nodes upstream, {len(down) - 1} downstream"
                in driver.find_element(By.ID, "card-paths").text)
        driver.find_element(By.ID, "show-paths").click()       # off: nothing dimmed
        assert not driver.find_elements(By.CSS_SELECTOR, "svg .node.dim, svg .node.onpath")
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


def test_trace_of_a_resample_circuit_holds_the_rest_at_task_means_and_says_so(planted_circuit,
                                                                              tmp_path):
    """One prompt has no other prompt to take values from: a resample circuit's other nodes
    are held at their mean over the task's train prompts, and the trace says so."""
    run, _, circuit = planted_circuit
    d = json.loads(circuit.read_text())
    d["config"]["ablation"] = "resample"
    rs = tmp_path / "resample.json"
    rs.write_text(json.dumps(d))
    from sparsecircuits.explain import trace
    from sparsecircuits.tasks import get_task
    pair = get_task(d["task_ref"]).pairs(1, "test")[0]
    t = trace(run, rs, pair.clean, log=None)
    assert "mean over the task's train prompts" in t.held_at
    assert "note: this resample circuit" in t.format()
    assert t.to_dict()["held_at"] == t.held_at
    mean = trace(run, circuit, pair.clean, log=None)   # the circuit's own ablation: no note
    assert mean.held_at == "" and "note:" not in mean.format()
    assert (t.circuit_logit_diff > 0) == (mean.circuit_logit_diff > 0)   # the planted path decides
