"""Causal tests that a circuit is the mechanism, with the controls its critics asked for.

Every figure is measured on the task's test split (templates and values that pruning never
saw), with the circuit's own ablation. Loss is the per-sequence contrast cross-entropy;
"calibrated" applies the circuit's temperature (a bounded logit scale, fitted on the val pairs
during pruning); every calibrated loss is reported beside the uncalibrated one.

    sufficiency     the circuit alone (everything else ablated)
    necessity       the full model with only the circuit ablated
    random          circuits with the same number of nodes at every site, drawn at random
    faithfulness    (F(C) - F(empty)) / (F(model) - F(empty)), F = -loss (uncalibrated)
    stochastic      a random half of the non-circuit nodes resampled from the activations of
                    random pretraining tokens (one token per sequence), the rest at their mean
    controls        circuit size for the inverted-label task, and for the task on a copy of
                    the model re-initialised with the same sparsity pattern
    sensitivity     circuit size under zero ablation and with frozen normalisation
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, replace

import torch

from ..errors import UserError
from ..tasks import get_task
from ..tasks.core import inverted
from .ablation import Ablation, PretrainingStats
from .circuit import Circuit, stamp
from .nodes import NodeLayout
from .pruning import TaskSplit, resolve_values
from .search import frozen, search
from .taskdata import TaskData, accuracy, calibrate, logit_diffs, losses

CLEARLY_BELOW = 0.5   # a circuit is convincing if at most this fraction of its control's size
NEAR_TARGET = 2.0     # stochastic ablation passes if its mean loss is at most this x target


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
    random: dict                       # draws, losses (calibrated on the test pairs), ...
    stochastic: dict                   # draws, losses, mean, max
    controls: dict = field(default_factory=dict)
    sensitivity: dict = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)
    convincing: bool = True
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def _repr_html_(self) -> str:
        from ..doc import Doc
        rows = [["full model", self.full_model["loss"], self.full_model["accuracy"]],
                ["sufficiency (calibrated)", self.sufficiency["loss"], self.sufficiency["accuracy"]],
                ["necessity", self.necessity["loss"], self.necessity["accuracy"]],
                ["empty circuit", self.empty["loss"], self.empty["accuracy"]],
                ["random circuits (median)", self.random["median"], None],
                ["stochastic ablation (mean)", self.stochastic["mean"], None],
                ["faithfulness", self.faithfulness, None]]
        return (Doc().p(f"Validation of the {self.task} circuit ({self.circuit['nodes']} nodes, "
                        f"{self.circuit['edges']} edges) on {self.test_pairs} test pairs")
                .table(["measure", "loss / value", "accuracy"], rows).ul(self.verdicts).html_body())

    def format(self) -> str:
        s, n, r, st, e = self.sufficiency, self.necessity, self.random, self.stochastic, self.empty
        rows = [
            f"validation of the {self.task} circuit ({self.circuit['nodes']} nodes, "
            f"{self.circuit['edges']} edges) on {self.test_pairs} test pairs",
            "",
            f"  {'measure':<34} {'loss':>8} {'acc':>6}   meaning",
            f"  {'full model':<34} {self.full_model['loss']:>8.3f} {self.full_model['accuracy']:>6.2f}"
            "   the behaviour as the model does it",
            f"  {'sufficiency (circuit alone)':<34} {s['loss']:>8.3f} {s['accuracy']:>6.2f}"
            f"   calibrated; {s['loss_uncalibrated']:.3f} before calibration",
            f"  {'necessity (circuit ablated)':<34} {n['loss']:>8.3f} {n['accuracy']:>6.2f}"
            "   should be far worse than the full model",
            f"  {'empty circuit (all ablated)':<34} {e['loss']:>8.3f} {e['accuracy']:>6.2f}"
            f"   the floor; {e['loss_calibrated']:.3f} calibrated",
            f"  {'random circuits, same sizes':<34} {r['median']:>8.3f} {'':>6}"
            f"   median of {r['draws']} (best {r['min']:.3f}); {r['beaten_by']} beat the circuit",
            f"  {'stochastic ablation':<34} {st['mean']:>8.3f} {'':>6}"
            f"   mean of {st['draws']} (worst {st['max']:.3f})",
            f"  faithfulness {self.faithfulness:.3f} (1 = recovers the model),"
            f" completeness {self.completeness:.3f} (0 = nothing left outside the circuit)",
        ]
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


def random_same_sizes(layout: NodeLayout, keep: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    out = torch.zeros_like(keep)
    for sl in layout.slices().values():
        k = int(keep[sl].sum())
        n = sl.stop - sl.start
        out[sl.start + torch.randperm(n, generator=g)[:k]] = True
    return out


def stochastic_values(layout, keep, stats: PretrainingStats, means, n_seq, g):
    """Per-sequence ablation values: a random half of the non-circuit nodes take the activation
    of one random pretraining token (per sequence), the rest keep their mean."""
    vals = {}
    for site, sl in layout.slices().items():
        bank = stats.bank[site]
        resample = torch.rand(sl.stop - sl.start, generator=g) < 0.5
        tok = bank[torch.randint(len(bank), (n_seq,), generator=g)]          # (n_seq, dim)
        v = torch.where(resample & ~keep[sl], tok, means[site].expand_as(tok))
        vals[site] = v.unsqueeze(1)                                          # (n_seq, 1, dim)
    return vals


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


def control_size(model, tok, task, cfg, stats, budget: int, bound: float) -> dict:
    """The same search as the circuit's, for a control; nodes and edges of what it finds."""
    found = search(model, tok, task, (cfg.target_loss,), cfg, budget=budget, jobs=1,
                   stats=stats, bound=bound, control=True, log=None)
    c = found.circuits[cfg.target_loss]
    if c is None:
        return dict(reached=False, trials=budget)
    return dict(reached=True, nodes=c.num_nodes, edges=c.num_edges, loss=round(c.loss, 4),
                loss_uncalibrated=round(c.loss_uncalibrated, 4), trials=budget)


def validate(circuit: Circuit, model, tok, *, stats: PretrainingStats | None = None, corpus=None,
             n: int = 128, draws: int = 20, controls: bool = True, seed: int = 0,
             log=print) -> Validation:
    """Run the validation battery for `circuit` on its own model."""
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
    values = resolve_values(model, cfg, TaskSplit(model, tok, task, cfg), stats)
    keep = circuit.keep_vector(model)
    scale, bound = circuit.calibration["scale"], circuit.calibration["bound"]
    fn = cfg.freeze_norm
    g = torch.Generator().manual_seed(seed)

    with frozen(model), torch.no_grad():
        if log:
            log("measuring sufficiency, necessity and faithfulness ...")
        d_full = logit_diffs(model, test)
        full = _metrics(d_full, test.sign)
        d_c = _kept_diffs(model, test, values, keep, fn)
        suff = dict(loss=_loss(d_c, test.sign, scale), loss_uncalibrated=_loss(d_c, test.sign),
                    accuracy=_r(accuracy(d_c, test.sign)), scale=_r(scale))
        d_n = _kept_diffs(model, test, values, ~keep, fn)
        nec = _metrics(d_n, test.sign)
        d_e = _kept_diffs(model, test, values, torch.zeros_like(keep), fn)
        empty = _metrics(d_e, test.sign)
        # the answer may be readable without any node: the last token's embedding reaches the
        # unembedding directly, and the bigram table reads it too
        empty["loss_calibrated"] = _loss(d_e, test.sign, calibrate(d_e, test.sign, bound))
        span = empty["loss"] - full["loss"]
        faith = (empty["loss"] - _loss(d_c, test.sign)) / span if span > 1e-9 else float("nan")
        compl = (empty["loss"] - nec["loss"]) / span if span > 1e-9 else float("nan")

        if log:
            log(f"scoring {draws} random circuits of the same sizes ...")
        rand = []
        for _ in range(draws):
            d_r = _kept_diffs(model, test, values, random_same_sizes(layout, keep, g), fn)
            rand.append(_loss(d_r, test.sign, calibrate(d_r, test.sign, bound)))
        rand_t = torch.tensor(rand)

        if log:
            log(f"stochastic ablation, {draws} draws ...")
        sto = []
        means = stats.means if cfg.ablation is Ablation.MEAN else values
        for _ in range(draws):
            v = stochastic_values(layout, keep, stats, means, len(test), g)
            d_s = logit_diffs(model, test, layout.split(keep.float()), v, fn)
            sto.append(_loss(d_s, test.sign, scale))
        sto_t = torch.tensor(sto)

    size = dict(nodes=circuit.num_nodes, edges=circuit.num_edges)
    report = Validation(
        task=task.name, circuit=size, test_pairs=n, full_model=full, empty=empty,
        sufficiency=suff, necessity=nec, faithfulness=_r(faith), completeness=_r(compl),
        random=dict(draws=draws, losses=[_r(x) for x in rand], median=_r(rand_t.median()),
                    min=_r(rand_t.min()), beaten_by=int((rand_t <= suff["loss"]).sum())),
        stochastic=dict(draws=draws, losses=[_r(x) for x in sto], mean=_r(sto_t.mean()),
                        max=_r(sto_t.max())),
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
            result = control_size(m, tok, t, c, s, budget, bound)
            (report.controls if name.startswith("control") else report.sensitivity)[name] = result
    report.verdicts, report.convincing = _verdicts(report, cfg.target_loss)
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


def _verdicts(v: Validation, target: float) -> tuple[list[str], bool]:
    out, ok = [], True
    if v.empty["loss_calibrated"] <= target:
        ok = False
        out.append(f"TRIVIAL task: with every node ablated, a calibrated readout already reaches "
                   f"{v.empty['loss_calibrated']:.3f} <= {target}. The last token alone gives the "
                   "answer away (its embedding reaches the unembedding directly, and the bigram "
                   "table reads it; neither is a node), so a circuit for it shows nothing.")
    s = v.sufficiency["loss"]
    if s <= target:
        out.append(f"PASS sufficiency: the circuit alone reaches {s:.3f} <= {target} on test "
                   "pairs it was not pruned on.")
    else:
        ok = False
        out.append(f"FAIL sufficiency: the circuit alone gets {s:.3f} > {target} on the test "
                   "split; it does not carry the behaviour beyond the pairs it was pruned on.")
    gap = v.necessity["loss"] - v.full_model["loss"]
    if gap > 0.5 * (v.empty["loss"] - v.full_model["loss"]):
        out.append(f"PASS necessity: ablating the circuit alone raises the loss by {gap:.3f}.")
    else:
        ok = False
        out.append(f"FAIL necessity: ablating only the circuit raises the loss by just {gap:.3f}; "
                   "the model has other routes to the answer.")
    if v.random["beaten_by"] == 0:
        out.append(f"PASS random circuits: none of {v.random['draws']} random circuits of the "
                   f"same sizes comes close (best {v.random['min']:.3f}).")
    else:
        ok = False
        out.append(f"FAIL random circuits: {v.random['beaten_by']} of {v.random['draws']} random "
                   "circuits of the same sizes do as well; the size, not the choice, does the work.")
    if v.stochastic["mean"] <= NEAR_TARGET * target:
        out.append(f"PASS stochastic ablation: resampling non-circuit nodes keeps the loss near "
                   f"target (mean {v.stochastic['mean']:.3f}).")
    else:
        ok = False
        out.append(f"FAIL stochastic ablation: resampling non-circuit nodes lifts the loss to "
                   f"{v.stochastic['mean']:.3f}; the circuit relies on the rest being held at "
                   "exactly its ablation value.")
    for name, c in v.controls.items():
        if not c.get("reached"):
            out.append(f"PASS {name}: no circuit reaches the target at all.")
        elif v.circuit["edges"] <= CLEARLY_BELOW * c["edges"]:
            out.append(f"PASS {name}: needs {c['edges']} edges, ours {v.circuit['edges']}.")
        else:
            ok = False
            out.append(f"UNCONVINCING {name}: pruning finds a {c['edges']}-edge circuit there, "
                       f"not clearly more than ours ({v.circuit['edges']}); a small circuit is "
                       "no evidence of a mechanism here.")
    for name, c in v.sensitivity.items():
        if c.get("reached") and v.circuit["edges"] > 0:
            ratio = c["edges"] / v.circuit["edges"]
            out.append(f"NOTE {name}: {c['edges']} edges ({ratio:.2f}x this circuit's).")
        else:
            out.append(f"NOTE {name}: no circuit reaches the target.")
    if math.isnan(v.faithfulness):
        out.append("NOTE faithfulness is undefined: ablating everything does not change the loss.")
    return out, ok
