"""The audit report: one document (Markdown and HTML) that says what was studied, on which
model, how big the circuit is, every validation figure with its meaning, what each node does,
the caveats, and how to reproduce it all."""

from __future__ import annotations

import shlex

from ..circuits.circuit import Circuit
from ..doc import Doc

MEANINGS = {
    "full model": "the behaviour as the whole model does it",
    "sufficiency": "the circuit alone, every other node ablated, after calibration; at most the "
                   "target means the circuit carries the behaviour",
    "sufficiency before calibration": "the same without the fitted temperature",
    "necessity": "the full model with only the circuit ablated, read at its best calibration "
                 "scale (bounded like the circuit's); it must rise by more than half the gap "
                 "between the full model and the empty circuit, both calibrated the same way, "
                 "else the model has another route",
    "necessity before calibration": "the same without the fitted temperature",
    "empty circuit": "every node ablated: the floor every other figure is judged against",
    "empty circuit, calibrated": "the same with a fitted temperature (bounded like the circuit's); "
                                 "at most the target "
                                 "means the last token alone gives the answer away (TRIVIAL)",
    "random circuits (median)": "random circuits with the circuit's edge count on every weight "
                                "matrix, each calibrated on the test pairs themselves; none may "
                                "do as well as the circuit",
    "top-attribution circuit": "the circuit's number of nodes, picked by |gradient x (activation "
                               "- ablation value)| on the train pairs and calibrated on the val "
                               "pairs as the circuit was; the circuit must do at least as well",
    "top-attribution circuit before calibration": "the same without the fitted temperature",
    "interchange: answers flipped": "the circuit's nodes given their values on the pair's other "
                                    "prompt, the rest as in the full model: the fraction of "
                                    "answers that switch to the other prompt's; at least half, "
                                    "and more than random circuits with as many edges",
    "interchange, random circuits (median)": "the same for the random circuits above",
    "resampled from test prompts (mean)": "the non-circuit nodes given their values on another "
                                          "random test prompt, the circuit's kept; calibrated "
                                          "loss at most twice the target",
    "stochastic ablation, harsh (mean)": "a random half of the non-circuit nodes resampled from "
                                         "random pretraining tokens instead of held at the mean; "
                                         "reported, not judged",
    "faithfulness": "(F(circuit) - F(empty)) / (F(model) - F(empty)) with F = -loss, "
                    "uncalibrated; at least 0.8",
    "completeness": "the same ratio for everything outside the circuit; 0 = nothing is left "
                    "there, below -0.5 the rest of the model pushes against the answer",
}


def caveats(circuit: Circuit, v: dict) -> list[str]:
    out = []
    target = circuit.target_loss
    raw = v["sufficiency"]["loss_uncalibrated"]
    cal = circuit.calibration
    if raw > target:
        out.append(f"Calibration was needed: before its logits are scaled by {cal['scale']:.2f} "
                   f"(the bound is {cal['bound']:.2f}, the full model's own fitted scale), the "
                   f"circuit's test loss is {raw:.3f}, above the target {target}. The circuit "
                   "ranks the answers right more than it sizes its logits right.")
    if cal["scale"] > 10:
        out.append(f"The calibration scale is {cal['scale']:.1f}x: the circuit's own signal is "
                   "faint, and only a large temperature makes it confident.")
    for line in v.get("verdicts", []):
        if line.startswith(("FAIL", "UNCONVINCING", "TRIVIAL")):
            out.append(line)
    for name, c in v.get("controls", {}).items():
        if c.get("reached") and v["circuit"]["edges"] > 0:
            ratio = c["edges"] / v["circuit"]["edges"]
            if ratio < 4:
                out.append(f"{name}: its circuit is only {ratio:.1f}x this one's edges; the margin "
                           "over the control is narrow.")
    for name, c in v.get("sensitivity", {}).items():
        if c.get("reached") and v["circuit"]["edges"] > 0:
            ratio = c["edges"] / v["circuit"]["edges"]
            if ratio > 2 or ratio < 0.5:
                out.append(f"{name}: {c['edges']} edges, {ratio:.1f}x this circuit's; the size "
                           "depends strongly on how pruned nodes are ablated.")
    if not v.get("controls"):
        out.append("The controls (inverted labels, re-initialised model) were not run; the size "
                   "of this circuit has nothing to be compared with.")
    if v["test_pairs"] < 64:
        out.append(f"Only {v['test_pairs']} test pairs: figures carry sampling noise of several "
                   "hundredths.")
    return out


def build_report(circuit: Circuit, validation: dict, data: dict, run_info: dict,
                 viewer_file: str | None = None) -> Doc:
    m, v = data["meta"], validation
    doc = Doc()
    doc.h(1, f"Audit report: the {m['task']} circuit")
    verdict = "convincing" if v.get("convincing") else "NOT convincing"
    doc.p(f"A circuit of {m['nodes']} nodes and {m['edges']} edges in model {m['model_hash']}; "
          f"by the checks below it is {verdict}.")
    if v.get("summary"):
        doc.p(v["summary"])
    if viewer_file:
        doc.link("Open the interactive circuit viewer", viewer_file)

    doc.h(2, "Behaviour studied")
    doc.p(f"Task {m['task']}: {m['description']}. Each pair of prompts differs minimally and "
          "wants different next tokens. Loss is the two-token contrast cross-entropy per "
          f"sequence (chance 0.693); the target is {m['target_loss']}.")
    ex = m["example"]
    doc.table(["prompt", "last line", "wants"],
              [["clean", ex["clean"].rstrip("\n").split("\n")[-1], repr(ex["target"])],
               ["corrupt", ex["corrupt"].rstrip("\n").split("\n")[-1], repr(ex["alt"])]])

    doc.h(2, "Model")
    doc.table(["", ""], [[k, val] for k, val in run_info.items()])

    doc.h(2, "Circuit")
    counts = circuit.counts()
    doc.table(["figure", "value"], [
        ["nodes", counts["nodes"]], ["edges (nonzero weights between kept nodes)", counts["edges"]],
        ["nodes by site", ", ".join(f"{k} {n}" for k, n in counts["nodes_by_site"].items())],
        ["edges by kind", ", ".join(f"{k} {n}" for k, n in counts["edges_by_kind"].items())],
        ["val loss (calibrated / uncalibrated)",
         f"{circuit.loss:.3f} / {circuit.loss_uncalibrated:.3f}"
         if circuit.loss is not None else "n/a"],
        ["calibration scale (bound)", f"{circuit.calibration['scale']:.3f} "
                                      f"({circuit.calibration['bound']:.3f})"],
        ["ablation", str(circuit.ablation) + (", frozen norm" if circuit.freeze_norm else "")]])
    trials = circuit.provenance.get("search", {}).get("trials", [])
    if trials:
        doc.p(f"Search: {len(trials)} pruning runs; the smallest circuit (in edges) reaching the "
              "target was kept.")
        key = str(circuit.target_loss)

        def at(t, what):
            found = t["targets"].get(key)
            return found[what] if found else "-"
        doc.table(["k_coef", "lr", "seed", "status", "nodes", "edges", "loss (calibrated)",
                   "loss (uncalibrated)", "seconds"],
                  [[t["k_coef"], t["lr"], t["seed"], t["status"], at(t, "nodes"),
                    at(t, "edges"), at(t, "loss"), at(t, "loss_uncalibrated"), t["seconds"]]
                   for t in trials])

    doc.h(2, "Validation")
    doc.p(f"On {v['test_pairs']} test-split pairs (templates or values pruning never saw).")
    s = v["sufficiency"]
    a, x = v.get("attribution", {}), v.get("interchange", {})
    rows = [
        ["full model", v["full_model"]["loss"], v["full_model"]["accuracy"]],
        ["sufficiency", s["loss"], s["accuracy"]],
        ["sufficiency before calibration", s["loss_uncalibrated"], None],
        ["necessity", v["necessity"].get("loss_calibrated"), v["necessity"]["accuracy"]],
        ["necessity before calibration", v["necessity"]["loss"], None],
        ["empty circuit", v["empty"]["loss"], v["empty"]["accuracy"]],
        ["empty circuit, calibrated", v["empty"].get("loss_calibrated"), None],
        ["random circuits (median)", v["random"]["median"], None],
        ["top-attribution circuit", a.get("loss"), a.get("accuracy")],
        ["top-attribution circuit before calibration", a.get("loss_uncalibrated"), None],
        ["interchange: answers flipped", x.get("flipped"), None],
        ["interchange, random circuits (median)", x.get("random_median"), None],
        ["resampled from test prompts (mean)", v.get("resample", {}).get("mean"), None],
        ["stochastic ablation, harsh (mean)", v["stochastic"]["mean"], None],
        ["faithfulness", v["faithfulness"], None],
        ["completeness", v["completeness"], None],
    ]
    doc.table(["figure", "loss / value", "accuracy", "meaning"],
              [r + [MEANINGS[r[0]]] for r in rows])
    sizes = [[name, c.get("nodes", "none reach the target"), c.get("edges", "")]
             for name, c in {**v.get("controls", {}), **v.get("sensitivity", {})}.items()]
    if sizes:
        doc.table(["circuit size", "nodes", "edges"],
                  [["this circuit", v["circuit"]["nodes"], v["circuit"]["edges"]]] + sizes)
    doc.ul(v.get("verdicts", []))

    doc.h(2, "Nodes")
    doc.p("What each node does (full model, validation corpus), and how much the circuit's test "
          "loss rises when it alone is also ablated.")
    doc.table(["node", "description", "loss change if ablated", "mean act. clean / corrupt"],
              [[n["id"], n["description"], n["ablation_delta"],
                f"{n['task']['clean']:.3f} / {n['task']['corrupt']:.3f}"] for n in data["nodes"]])

    doc.h(2, "Caveats")
    doc.ul(caveats(circuit, v) or ["None flagged by the automatic checks."])

    doc.h(2, "Reproduce")
    doc.code(reproduce_commands(circuit))
    versions = circuit.provenance.get("versions", {})
    if versions:
        doc.p("Versions: " + ", ".join(f"{k} {val}" for k, val in versions.items()) + ".")
    if circuit.provenance.get("created"):
        doc.p(f"Circuit created {circuit.provenance['created']}; validation "
              f"{v.get('provenance', {}).get('created', 'n/a')}.")
    return doc


def reproduce_commands(circuit: Circuit) -> str:
    prov = circuit.provenance
    cfg = prov.get("config", {})
    run = prov.get("run_dir", "RUN_DIR")
    search = prov.get("search", {})
    args = ["sparsecircuits", "prune", run, "--task", prov.get("task", circuit.task),
            "--out", "circuit.json", "--target-loss", str(circuit.target_loss),
            "--ablation", circuit.ablation]
    if circuit.freeze_norm:
        args.append("--freeze-norm")
    trials = search.get("trials") or []
    base_seed = trials[0]["seed"] if trials else cfg.get("seed", 0)  # the first trial has no offset
    args += ["--seed", str(base_seed), "--steps", str(cfg.get("steps", 100)),
             "--budget", str(search.get("budget", 1))]
    return "\n".join([" ".join(shlex.quote(a) for a in args),
                      "sparsecircuits validate circuit.json --out validation.json",
                      "sparsecircuits report circuit.json --validation validation.json --out report"])
