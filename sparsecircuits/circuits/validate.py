"""Causal tests that a circuit is the mechanism, with the controls its critics asked for.

Every figure is measured on the task's test split (templates and values that pruning never
saw), with the circuit's own ablation. Loss is the per-sequence contrast cross-entropy;
"calibrated" applies a temperature (a logit scale, at most the circuit's bound: the full
model's own fitted scale); every calibrated loss is reported beside the uncalibrated one.

    sufficiency     the circuit alone (everything else ablated), at the circuit's own scale
    necessity       the full model with only the circuit ablated
    faithfulness    (F(C) - F(empty)) / (F(model) - F(empty)), F = -loss (uncalibrated)
    completeness    the same ratio for the complement of C
    random          random circuits with the circuit's edge count on every link
                    (`checks.random_matched_edges`), each calibrated on the test pairs
    attribution     the top nodes by |gradient x (activation - ablation value)| on the train
                    pairs, as many as the circuit has, calibrated on the val pairs as the
                    circuit was
    interchange     the circuit's nodes take their values on the pair's other prompt, the rest
                    runs as in the full model: how often the answer flips to the other prompt's
    resample        the non-circuit nodes take their values on another random test prompt, the
                    circuit's nodes keep their own (ACDC-style, in distribution)
    stochastic      the harsh test, reported but not judged: a random half of the non-circuit
                    nodes take the activations of random pretraining tokens (one token per
                    sequence), the rest their mean
    controls        circuit size for the inverted-label task, and for the task on a copy of
                    the model re-initialised with the same sparsity pattern
    sensitivity     circuit size under zero ablation and with frozen normalisation
"""

from __future__ import annotations

import copy
import math
import textwrap
from dataclasses import asdict, dataclass, field, replace

import torch

from ..errors import UserError
from ..tasks import get_task
from ..tasks.core import inverted
from .ablation import Ablation, PretrainingStats
from .checks import attribution_scores, random_matched_edges, stochastic_values, swapped_diffs
from .circuit import Circuit, count_edges, stamp
from .nodes import NodeLayout
from .pruning import TaskSplit, resolve_values
from .search import frozen, search
from .taskdata import TaskData, accuracy, all_activations, calibrate, logit_diffs, losses

CLEARLY_BELOW = 0.5   # a circuit is convincing if at most this fraction of its control's size
NEAR_TARGET = 2.0     # resampling passes if its mean loss is at most this x target
# The circuit alone, before any calibration, must recover most of what the model does beyond
# the empty circuit: below 0.8 a fifth of the effect is missing, and a temperature (which
# cannot add information) is doing the work a mechanism should.
MIN_FAITHFULNESS = 0.8
# Completeness is ~0 when nothing outside the circuit matters. Below -0.5 the model with the
# circuit ablated does worse than with every node ablated, by more than half of the model's
# whole effect: the rest of the model pushes against the answer and the circuit wins only by
# outweighing it, so the circuit alone (with that opposition held at its mean) overstates how
# the model does the task. (Above 0.5 is the necessity check's failure.)
MIN_COMPLETENESS = -0.5
# Swapping the circuit's nodes between the two prompts of a pair must flip most answers: a
# circuit that carries the behaviour decides the answer even when everything else disagrees.
MOST_FLIPPED = 0.5


@dataclass
class Validation:
    task: str
    circuit: dict                      # nodes, edges
    test_pairs: int
    full_model: dict                   # loss, accuracy
    empty: dict                        # loss, accuracy with every node ablated
    sufficiency: dict                  # loss, loss_uncalibrated, accuracy
    necessity: dict                    # loss, accuracy
    faithfulness: float
    completeness: float                # the same ratio for the complement: ~0 is good
    random: dict                       # edge-matched draws: losses, median, min, beaten_by, ...
    attribution: dict                  # the top-attribution circuit of the same size
    interchange: dict                  # flipped (fraction), the random draws' flips
    resample: dict                     # in distribution: draws, losses, mean, max
    stochastic: dict                   # harsh, not judged: draws, losses, mean, max
    ablation: str = Ablation.MEAN.value  # what the circuit's ablated nodes are held at
    controls: dict = field(default_factory=dict)
    sensitivity: dict = field(default_factory=dict)
    summary: str = ""                  # why the circuit is or is not convincing, in plain words
    verdicts: list[str] = field(default_factory=list)
    convincing: bool = True
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def failed(self) -> list[str]:
        """The names of the checks that failed, read off the verdict lines `_Judge` writes
        ("FAIL name: why", "UNCONVINCING name: why")."""
        return [line.split(":", 1)[0].split(" ", 1)[1] for line in self.verdicts
                if line.startswith(("FAIL ", "UNCONVINCING "))]

    def _rows(self) -> list[tuple[str, float | None, float | None, str]]:
        """(measure, loss or value, accuracy, note) for the table of `format` and the HTML."""
        s, n, e, r = self.sufficiency, self.necessity, self.empty, self.random
        a, x, rs, st = self.attribution, self.interchange, self.resample, self.stochastic
        return [
            ("full model", self.full_model["loss"], self.full_model["accuracy"],
             f"the behaviour as the model does it; {self.full_model['loss_calibrated']:.3f} "
             "calibrated"),
            ("sufficiency (calibrated)", s["loss"], s["accuracy"],
             f"the circuit alone; {s['loss_uncalibrated']:.3f} before calibration"),
            ("necessity (calibrated)", n["loss_calibrated"], n["accuracy"],
             f"the circuit ablated, the rest read at its best scale; should be far worse than "
             f"the full model; {n['loss']:.3f} before calibration"),
            ("empty circuit (all ablated)", e["loss"], e["accuracy"],
             f"the floor; {e['loss_calibrated']:.3f} calibrated"),
            ("random circuits, same edges", r["median"], None,
             f"median of {r['draws']} (best {r['min']:.3f}); {r['beaten_by']} beat the circuit"),
            ("top-attribution circuit", a["loss"], a["accuracy"],
             f"{a['nodes']} nodes, {a['overlap']} shared; {a['loss_uncalibrated']:.3f} "
             "before calibration"),
            ("interchange: answers flipped", x["flipped"], None,
             f"random circuits {x['random_median']:.2f} (most {x['random_max']:.2f})"),
            ("resampled from test prompts", rs["mean"], None,
             f"mean of {rs['draws']} (worst {rs['max']:.3f})"),
            ("stochastic ablation (harsh)", st["mean"], None,
             f"not judged; mean of {st['draws']} (worst {st['max']:.3f})"),
            ("faithfulness", self.faithfulness, None,
             f"at least {MIN_FAITHFULNESS}; 1 = recovers the model"),
            ("completeness", self.completeness, None,
             f"at least {MIN_COMPLETENESS}; 0 = nothing left outside the circuit"),
        ]

    def _repr_html_(self) -> str:
        from ..doc import Doc
        return (Doc().p(self.summary)
                .p(f"Validation of the {self.task} circuit ({self.circuit['nodes']} nodes, "
                   f"{self.circuit['edges']} edges) on {self.test_pairs} test pairs")
                .table(["measure", "loss / value", "accuracy", "note"],
                       [list(row) for row in self._rows()])
                .ul(self.verdicts).html_body())

    def format(self) -> str:
        rows = textwrap.wrap(self.summary, 100) + [
            "",
            f"validation of the {self.task} circuit ({self.circuit['nodes']} nodes, "
            f"{self.circuit['edges']} edges) on {self.test_pairs} test pairs",
            "",
            f"  {'measure':<34} {'loss':>8} {'acc':>6}   note",
        ]
        for name, value, acc, note in self._rows():
            shown = "" if value is None or math.isnan(value) else f"{value:.3f}"
            rows.append(f"  {name:<34} {shown:>8} {'' if acc is None else f'{acc:.2f}':>6}"
                        f"   {note}")
        if self.controls or self.sensitivity:
            rows += ["", f"  {'circuit size':<34} {'nodes':>8} {'edges':>6}"]
            rows.append(f"  {'this circuit':<34} {self.circuit['nodes']:>8} {self.circuit['edges']:>6}")
            for name, c in {**self.controls, **self.sensitivity}.items():
                if c.get("reached"):
                    rows.append(f"  {name:<34} {c['nodes']:>8} {c['edges']:>6}")
                else:
                    rows.append(f"  {name:<34} {'none reaches the target':>15}")
        rows += [""] + [f"  {v}" for v in self.verdicts]
        return "\n".join(rows)


def _kept_diffs(model, data, values, keep, freeze_norm):
    """Logit differences with the nodes outside `keep` ablated."""
    return logit_diffs(model, data, NodeLayout(model).split(keep.float()), values, freeze_norm)


def flipped(d: torch.Tensor, sign: torch.Tensor) -> float:
    """Fraction of sequences whose answer is the pair's other answer (the one the pair's other
    prompt wants)."""
    return _r((-sign * d > 0).float().mean())


def reinitialised(model, seed: int = 0):
    """A copy of `model` with fresh random weights on the same sparsity pattern."""
    twin = copy.deepcopy(model)
    pattern = {n: p != 0 for n, p in model.named_parameters()}
    twin.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for n, p in twin.named_parameters():
            if n in pattern and p.ndim == 2:
                p.mul_(pattern[n])
    return twin


def control_size(model, tok, task, cfg, stats, budget: int, bound: float,
                 jobs: int | None = None) -> dict:
    """The same search as the circuit's, for a control; nodes and edges of what it finds."""
    found = search(model, tok, task, (cfg.target_loss,), cfg, budget=budget, jobs=jobs,
                   stats=stats, bound=bound, control=True, log=None)
    c = found.circuits[cfg.target_loss]
    if c is None:
        return dict(reached=False, trials=budget)
    return dict(reached=True, nodes=c.num_nodes, edges=c.num_edges, loss=round(c.loss, 4),
                loss_uncalibrated=round(c.loss_uncalibrated, 4), trials=budget)


def validate(circuit: Circuit, model, tok, *, stats: PretrainingStats | None = None, corpus=None,
             n: int = 128, draws: int = 20, controls: bool = True, seed: int = 0,
             jobs: int | None = None, log=print) -> Validation:
    """Run the validation battery for `circuit` on its own model. The controls' searches run
    `jobs` trials at a time (default: one per core), as `prune`'s does."""
    circuit.check_model(model)
    if stats is None:
        if corpus is None:
            raise UserError("validation resamples pretraining activations: pass a corpus (or "
                            "stats).")
        stats = PretrainingStats.cached(model, corpus, log=log)
    task = get_task(circuit.task_ref)
    cfg = circuit.config
    layout = NodeLayout(model)
    pairs = task.pairs(n, "test", seed=seed, at_most=True)
    if len(pairs) < TaskSplit.MIN_PAIRS:
        raise UserError(f"task '{task.name}' makes only {len(pairs)} distinct test pairs; "
                        f"validation needs at least {TaskSplit.MIN_PAIRS}: add templates or "
                        "slot values.")
    n = len(pairs)
    test = TaskData.from_pairs(tok, task.name, pairs, model.cfg.block_size)
    split = TaskSplit(model, tok, task, cfg)
    values = resolve_values(model, cfg, split, stats)
    keep = circuit.keep_vector(model)
    scale, bound = circuit.calibration["scale"], circuit.calibration["bound"]
    fn = cfg.freeze_norm
    sign = test.sign
    g = torch.Generator().manual_seed(seed)
    partner = torch.arange(len(test)) ^ 1   # a pair's two prompts are neighbours

    with frozen(model), torch.no_grad():
        if log:
            log("measuring sufficiency, necessity and faithfulness ...")
        d_full = logit_diffs(model, test)
        full = _metrics(d_full, sign)
        d_c = _kept_diffs(model, test, values, keep, fn)
        suff = dict(loss=_loss(d_c, sign, scale), loss_uncalibrated=_loss(d_c, sign),
                    accuracy=_r(accuracy(d_c, sign)), scale=_r(scale))
        d_n = _kept_diffs(model, test, values, ~keep, fn)
        nec = _metrics(d_n, sign)
        d_e = _kept_diffs(model, test, values, torch.zeros_like(keep), fn)
        empty = _metrics(d_e, sign)
        # Each calibrated on the test pairs themselves, within the bound: what the best
        # temperature can read from it. The answer may be readable without any node (the last
        # token's embedding reaches the unembedding directly, and the bigram table reads it);
        # and what the model keeps without the circuit is judged by what can be read from the
        # rest, not by how confidently wrong a bias makes it (uncalibrated, a rest that is at
        # chance can score far better than an empty circuit that always answers one way).
        for m, d in ((full, d_full), (nec, d_n), (empty, d_e)):
            m["loss_calibrated"] = _loss(d, sign, calibrate(d, sign, bound))
        span = empty["loss"] - full["loss"]
        faith = (empty["loss"] - _loss(d_c, sign)) / span if span > 1e-9 else float("nan")
        compl = (empty["loss"] - nec["loss"]) / span if span > 1e-9 else float("nan")

        if log:
            log(f"{draws} random circuits with the circuit's edges, and the interchange ...")
        acts = all_activations(model, test)
        flips = flipped(swapped_diffs(model, test, layout.split((~keep).float()), partner,
                                      acts=acts), sign)
        rand, rand_flips, rand_edges, rand_nodes = [], [], [], []
        for _ in range(draws):
            r = random_matched_edges(model, keep, g)
            d_r = _kept_diffs(model, test, values, r, fn)
            rand.append(_loss(d_r, sign, calibrate(d_r, sign, bound)))
            rand_flips.append(flipped(swapped_diffs(model, test, layout.split((~r).float()),
                                                    partner, acts=acts), sign))
            rand_edges.append(count_edges(model, layout.to_sets(r)))
            rand_nodes.append(int(r.sum()))

        if log:
            log("ranking nodes by attribution on the train pairs ...")
        scores = attribution_scores(model, split.train, values, fn)
        top = torch.zeros_like(keep)
        top[torch.argsort(-scores, stable=True)[:int(keep.sum())]] = True
        d_av = _kept_diffs(model, split.val, values, top, fn)
        a_scale = calibrate(d_av, split.val.sign, bound)   # fitted as the circuit's scale was
        d_a = _kept_diffs(model, test, values, top, fn)
        attr = dict(nodes=int(top.sum()), edges=count_edges(model, layout.to_sets(top)),
                    overlap=int((top & keep).sum()), loss=_loss(d_a, sign, a_scale),
                    loss_uncalibrated=_loss(d_a, sign), accuracy=_r(accuracy(d_a, sign)),
                    scale=_r(a_scale))

        if log:
            log(f"resampling the other nodes from other test prompts, {draws} draws ...")
        res = []
        for _ in range(draws):
            other = (torch.arange(len(test)) + torch.randint(1, len(test), (len(test),),
                                                             generator=g)) % len(test)
            d_s = swapped_diffs(model, test, layout.split(keep.float()), other, fn, acts)
            res.append(_loss(d_s, sign, scale))

        if log:
            log(f"stochastic ablation (harsh), {draws} draws ...")
        sto = []
        means = values if isinstance(values, dict) else stats.means  # resample: the rest at means
        for _ in range(draws):
            v = stochastic_values(layout, keep, stats, means, len(test), g)
            d_s = logit_diffs(model, test, layout.split(keep.float()), v, fn)
            sto.append(_loss(d_s, sign, scale))

    rand_t, flips_t = torch.tensor(rand), torch.tensor(rand_flips)
    size = dict(nodes=circuit.num_nodes, edges=circuit.num_edges)
    report = Validation(
        task=task.name, circuit=size, test_pairs=n, full_model=full, empty=empty,
        sufficiency=suff, necessity=nec, faithfulness=_r(faith), completeness=_r(compl),
        random=dict(draws=draws, losses=rand, median=_r(rand_t.median()), min=_r(rand_t.min()),
                    beaten_by=int((rand_t <= suff["loss"]).sum()), edges=rand_edges,
                    nodes=rand_nodes),
        attribution=attr,
        interchange=dict(flipped=flips, random=rand_flips, random_median=_r(flips_t.median()),
                         random_max=_r(flips_t.max())),
        resample=_spread(res), stochastic=_spread(sto), ablation=cfg.ablation.value,
        provenance=dict(circuit_model_hash=circuit.model_hash, seed=seed, created=stamp()))

    if controls:
        budget = circuit.provenance.get("search", {}).get("budget", 1)
        runs = {
            "control: inverted labels": (model, inverted(task), cfg, stats),
            "control: re-initialised model": None,
            "sensitivity: zero ablation": (model, task, replace(cfg, ablation=Ablation.ZERO),
                                           stats),
            "sensitivity: frozen norm": (model, task, replace(cfg, freeze_norm=True), stats),
        }
        for name, args in runs.items():
            if log:
                log(f"pruning for {name} ...")
            if args is None:
                twin = reinitialised(model, seed)
                twin_stats = PretrainingStats.compute(twin, _bank_source(corpus, stats))
                args = (twin, task, cfg, twin_stats)
            m, t, c, s = args
            result = control_size(m, tok, t, c, s, budget, bound, jobs)
            (report.controls if name.startswith("control") else report.sensitivity)[name] = result
    report.verdicts, report.convincing, report.summary = _verdicts(report, cfg.target_loss)
    return report


def _bank_source(corpus, stats):
    if corpus is None:
        raise UserError("the re-initialised control needs the corpus to measure its node "
                        "means; pass corpus=, or controls=False.")
    return corpus.train


def _loss(d, sign, scale=1.0) -> float:
    return _r(losses(d, sign, scale).mean())


def _metrics(d, sign) -> dict:
    return dict(loss=_loss(d, sign), accuracy=_r(accuracy(d, sign)))


def _r(x) -> float:
    return round(float(x), 4)


def _spread(xs: list[float]) -> dict:
    t = torch.tensor(xs)
    return dict(draws=len(xs), losses=xs, mean=_r(t.mean()), max=_r(t.max()))


# What a failed check means, for the summary: (name in the summary, why it is no evidence).
WHY = {
    "trivial task": "the last token alone gives the answer away, so the behaviour needs no "
                    "circuit",
    "sufficiency": "on unseen test pairs the circuit alone misses the target",
    "faithfulness": "before calibration the circuit alone recovers too little of what the model "
                    "does beyond the empty circuit",
    "completeness": "the rest of the model pushes against the answer, so the circuit alone "
                    "overstates how the model does it",
    "necessity": "the model still does the task without the circuit, so it has other routes",
    "random circuits": "random circuits with as many edges do as well, so the size, not the "
                       "choice of nodes, does the work",
    "attribution": "a circuit of the same size picked by gradient attribution does better",
    "interchange": "swapping its nodes between a pair's prompts does not flip most answers, so "
                   "the answer is decided elsewhere",
    "resampling": "giving the other nodes their values on other prompts of the task breaks it: "
                  "a mean-ablated circuit relies on them being held quiet at their means, and a "
                  "resample circuit reaches the target only on a lucky draw of those prompts",
    "controls": "pruning finds a circuit about as small where there is no mechanism to find",
}


class _Judge:
    """Collects verdict lines and which checks passed or failed."""

    def __init__(self):
        self.lines: list[str] = []
        self.failed: list[str] = []
        self.passed: list[str] = []

    def check(self, ok: bool, name: str, text_pass: str, text_fail: str, tag: str = "FAIL",
              key: str | None = None):
        key = key or name
        self.lines.append(f"PASS {name}: {text_pass}" if ok else f"{tag} {name}: {text_fail}")
        (self.passed if ok else self.failed).append(key)

    def note(self, text: str):
        self.lines.append(f"NOTE {text}")


def _verdicts(v: Validation, target: float) -> tuple[list[str], bool, str]:
    """Verdict lines, whether the circuit is convincing (every judged check passes), and a
    plain-words summary naming the checks that failed."""
    j = _Judge()
    if v.empty["loss_calibrated"] <= target:
        j.lines.append(f"TRIVIAL task: with every node ablated, a calibrated readout already "
                       f"reaches {v.empty['loss_calibrated']:.3f} <= {target}. The last token "
                       "alone gives the answer away (its embedding reaches the unembedding "
                       "directly, and the bigram table reads it; neither is a node), so a "
                       "circuit for it shows nothing.")
        j.failed.append("trivial task")
    s = v.sufficiency["loss"]
    j.check(s <= target, "sufficiency",
            f"the circuit alone reaches {s:.3f} <= {target} on test pairs it was not pruned on.",
            f"the circuit alone gets {s:.3f} > {target} on the test split; it does not carry "
            "the behaviour beyond the pairs it was pruned on.")
    f = v.faithfulness
    if math.isnan(f):
        j.note("faithfulness is undefined: ablating everything does not change the loss.")
    else:
        j.check(f >= MIN_FAITHFULNESS, "faithfulness",
                f"{f:.3f} >= {MIN_FAITHFULNESS}: before calibration the circuit alone "
                "recovers most of what the model does beyond the empty circuit.",
                f"{f:.3f} < {MIN_FAITHFULNESS}: before calibration the circuit alone recovers "
                "too little of what the model does beyond the empty circuit.")
    c = v.completeness
    if not math.isnan(c):
        j.check(c >= MIN_COMPLETENESS, "completeness",
                f"{c:.3f} >= {MIN_COMPLETENESS}: the rest of the model does not push against "
                "the answer.",
                f"{c:.3f} < {MIN_COMPLETENESS}: with the circuit ablated the model does worse "
                "than with every node ablated; the rest of the model pushes against the "
                "answer and the circuit only outweighs it.")
    n, full_c, empty_c = v.necessity, v.full_model["loss_calibrated"], v.empty["loss_calibrated"]
    gap = n["loss_calibrated"] - full_c
    j.check(gap > 0.5 * (empty_c - full_c), "necessity",
            f"with the circuit alone ablated, the best calibrated readout of the rest reaches "
            f"{n['loss_calibrated']:.3f} (accuracy {n['accuracy']:.0%}), more than half of the "
            f"way from the full model's {full_c:.3f} to the empty circuit's {empty_c:.3f}.",
            f"with the circuit alone ablated, the rest of the model still reaches "
            f"{n['loss_calibrated']:.3f} calibrated (accuracy {n['accuracy']:.0%}), less than "
            f"half of the way from the full model's {full_c:.3f} to the empty circuit's "
            f"{empty_c:.3f}; the model has other routes to the answer.")
    r = v.random
    j.check(r["beaten_by"] == 0, "random circuits",
            f"none of {r['draws']} random circuits with the circuit's edges comes close "
            f"(best {r['min']:.3f}).",
            f"{r['beaten_by']} of {r['draws']} random circuits with as many edges do as well "
            f"(best {r['min']:.3f}); the size, not the choice, does the work.")
    a = v.attribution
    same = a["overlap"] == a["nodes"] == v.circuit["nodes"]
    j.check(same or s <= a["loss"], "attribution",
            "attribution picks the same nodes." if same else
            f"the circuit ({s:.3f}) does at least as well as the top {a['nodes']} nodes by "
            f"attribution ({a['loss']:.3f}).",
            f"the top {a['nodes']} nodes by attribution reach {a['loss']:.3f}, better than the "
            f"circuit's {s:.3f}; pruning found no better circuit than a gradient ranking.")
    x = v.interchange
    j.check(x["flipped"] >= MOST_FLIPPED and x["flipped"] > x["random_median"], "interchange",
            f"given the other prompt's values, the circuit's nodes flip {x['flipped']:.0%} of "
            f"the answers (random circuits {x['random_median']:.0%}).",
            f"given the other prompt's values, the circuit's nodes flip only "
            f"{x['flipped']:.0%} of the answers; the rest of the model decides the answer."
            if x["flipped"] < MOST_FLIPPED else
            f"the circuit's nodes flip {x['flipped']:.0%} of the answers, but random circuits "
            f"with as many edges flip as many ({x['random_median']:.0%}): the size, not the "
            "choice, does the work.")
    rs = v.resample
    if v.ablation == Ablation.RESAMPLE.value:
        # its own ablation, so the target itself, on average over draws: sufficiency above is
        # one draw of the other prompts, and one draw can be lucky
        j.check(rs["mean"] <= target, "resampling",
                f"resampling is this circuit's own ablation: over {rs['draws']} draws of other "
                f"test prompts its loss averages {rs['mean']:.3f} <= {target} (worst "
                f"{rs['max']:.3f}).",
                f"resampling is this circuit's own ablation, and over {rs['draws']} draws of "
                f"other test prompts its loss averages {rs['mean']:.3f} > {target}: it reaches "
                "the target on one draw of the other prompts, not on average.")
    else:
        j.check(rs["mean"] <= NEAR_TARGET * target, "resampling",
                f"with the other nodes taken from other test prompts the loss stays near "
                f"target (mean {rs['mean']:.3f} <= {NEAR_TARGET:g} x {target}).",
                f"with the other nodes taken from other test prompts the loss rises to "
                f"{rs['mean']:.3f} > {NEAR_TARGET:g} x {target}; the circuit relies on the rest "
                "being held at its ablation value.")
    st = v.stochastic
    j.note(f"stochastic ablation (harsh, not judged): with half the other nodes taken from "
           f"random pretraining tokens the mean loss is {st['mean']:.3f} (worst {st['max']:.3f}).")
    for name, ctl in v.controls.items():
        if not ctl.get("reached"):
            j.check(True, name, "no circuit reaches the target at all.", "", key="controls")
        else:
            j.check(v.circuit["edges"] <= CLEARLY_BELOW * ctl["edges"], name,
                    f"needs {ctl['edges']} edges, ours {v.circuit['edges']}.",
                    f"pruning finds a {ctl['edges']}-edge circuit there, not clearly more than "
                    f"ours ({v.circuit['edges']}); a small circuit is no evidence of a mechanism "
                    "here.", tag="UNCONVINCING", key="controls")
    for name, ctl in v.sensitivity.items():
        if ctl.get("reached") and v.circuit["edges"] > 0:
            ratio = ctl["edges"] / v.circuit["edges"]
            j.note(f"{name}: {ctl['edges']} edges ({ratio:.2f}x this circuit's).")
        else:
            j.note(f"{name}: no circuit reaches the target.")
    return j.lines, not j.failed, _summary(v, j, target)


def _summary(v: Validation, j: _Judge, target: float) -> str:
    failed = list(dict.fromkeys(j.failed))
    passed = [p for p in dict.fromkeys(j.passed) if p not in failed]
    size = f"The {v.task} circuit ({v.circuit['nodes']} nodes, {v.circuit['edges']} edges)"
    if failed:
        out = (f"{size} is not convincing. It fails {len(failed)} check"
               f"{'s' if len(failed) > 1 else ''}: "
               + "; ".join(f"{k} ({WHY[k]})" for k in failed) + ".")
        if passed:
            out += f" It passes {', '.join(passed)}."
    else:
        out = (f"{size} is convincing: on test pairs pruning never saw it does the task alone "
               f"(loss {v.sufficiency['loss']:.3f} <= {target}), the model fails without it, it "
               "beats random circuits with as many edges and the top-attribution nodes of its "
               f"size, swapping its nodes between a pair's prompts flips "
               f"{v.interchange['flipped']:.0%} of the answers, and it holds when the other "
               "nodes take their values from other prompts of the task.")
        out += (" Its size is clearly below its controls'." if v.controls else
                " The controls were not run, so its size has nothing to be compared with.")
    if v.stochastic["mean"] > NEAR_TARGET * target:
        out += (" Under the harsh test (other nodes resampled from random pretraining tokens) "
                f"its loss rises to {v.stochastic['mean']:.3f}.")
    return out
