"""Trace one prompt through a circuit: the model's answer, the circuit nodes that fired, and
how much each moved the difference between the two answer logits.

A node's contribution is measured by ablation: the logit difference d = z[A] - z[B] of the
full model, minus d with that one node held at its ablation value (positive: the node pushes
toward A). The same is reported inside the circuit (everything else ablated), so a user can
see whether the model and its circuit agree on this prompt, and which node is to blame when
they do not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..circuits.ablation import PretrainingStats, mask_hook
from ..circuits.circuit import Circuit
from ..circuits.nodes import NodeLayout
from ..errors import UserError
from ..tasks.core import answer_ids
from ..tasks.metrics import encode_prompts
from .gather import circuit_task, circuit_values


@dataclass
class Trace:
    prompt: str
    answers: tuple[str, str]              # (A, B): the two answers compared
    top: list[tuple[str, float]]          # the model's top next tokens and probabilities
    logit_diff: float                     # full model, z[A] - z[B]
    circuit_logit_diff: float             # the circuit alone (calibrated)
    nodes: list[dict] = field(default_factory=list)  # per circuit node, by |contribution|

    @property
    def answer(self) -> str:
        return self.answers[0] if self.logit_diff > 0 else self.answers[1]

    def to_dict(self) -> dict:
        return {**asdict(self), "answer": self.answer}

    def _repr_html_(self) -> str:
        from ..doc import Doc
        a, b = self.answers
        doc = Doc().p(f"{self.prompt!r}: the model answers {self.answer!r} "
                      f"(z[{a!r}] - z[{b!r}] = {self.logit_diff:+.3f}; circuit alone "
                      f"{self.circuit_logit_diff:+.3f})")
        return doc.table(["node", "fired", "activation (last token)", "contribution in model",
                          "in circuit"],
                         [[n["id"], "yes" if n["fired"] else "no", n["act_last"],
                           n["contribution"], n["circuit_contribution"]]
                          for n in self.nodes]).html_body()

    def format(self, limit: int = 25) -> str:
        a, b = self.answers
        lines = [
            f"prompt: {self.prompt!r}",
            "model's top next tokens: " + ", ".join(f"{t!r} {p:.1%}" for t, p in self.top),
            f"z[{a!r}] - z[{b!r}]: model {self.logit_diff:+.3f} (answers {self.answer!r}), "
            f"circuit alone {self.circuit_logit_diff:+.3f} "
            f"(answers {a if self.circuit_logit_diff > 0 else b!r})",
            "",
            f"  {'node':<28} {'fired':>5} {'act (last)':>11} {'in model':>9} {'in circuit':>10}",
        ]
        for n in self.nodes[:limit]:
            lines.append(f"  {n['id']:<28} {'yes' if n['fired'] else 'no':>5} {n['act_last']:>11.3f} "
                         f"{n['contribution']:>+9.3f} {n['circuit_contribution']:>+10.3f}")
        if len(self.nodes) > limit:
            lines.append(f"  ... {len(self.nodes) - limit} more nodes (see --json)")
        lines.append("")
        lines.append("contribution = d(full) - d(node ablated): positive pushes toward "
                     f"{a!r}, negative toward {b!r}.")
        return "\n".join(lines)


@torch.no_grad()
def trace_prompt(circuit: Circuit, model, tok, stats: PretrainingStats, prompt: str,
                 answers: tuple[str, str] | None = None) -> Trace:
    circuit.check_model(model)
    task = circuit_task(circuit)
    if answers is None:
        p = task.pairs(1, "test", seed=0)[0]
        answers = (p.target, p.alt)
    a_id, b_id = answer_ids(tok, task.name, *answers)
    idx, lengths = encode_prompts(tok, [prompt], model.cfg.block_size)
    at = lengths - 1
    layout = NodeLayout(model)
    values = circuit_values(circuit, model, tok, stats)
    keep = circuit.keep_vector(model).float()
    cal = circuit.calibration

    def diff(mask_vec=None):
        hooks = [mask_hook(layout.split(mask_vec), values)] if mask_vec is not None else []
        with model.hooks(*hooks):
            z = model(idx, at=at)[0].float()
        return z, float(z[a_id] - z[b_id])

    z, d_full = diff()
    probs = z.softmax(-1)
    top = [(tok.decode([int(i)]), float(probs[i])) for i in torch.topk(probs, 5).indices]
    _, d_circ = diff(keep)
    _, cache = model.run_with_cache(idx, names=sorted({s for s in circuit.nodes}))
    nodes = []
    for node in circuit.node_ids():
        i = layout.flat_index(node)
        all_on = torch.ones(layout.total)
        all_on[i] = 0
        _, d_wo = diff(all_on)
        k2 = keep.clone()
        k2[i] = 0
        _, d_c = diff(k2)
        a = cache[node.site][0, :, node.index]
        nodes.append(dict(id=str(node), fired=bool((a != 0).any()), act_last=round(float(a[-1]), 4),
                          contribution=round(d_full - d_wo, 4),
                          circuit_contribution=round(cal["scale"] * (d_circ - d_c), 4)))
    nodes.sort(key=lambda n: -abs(n["contribution"]))
    return Trace(prompt, tuple(answers), top, round(d_full, 4),
                 round(cal["scale"] * d_circ + cal["shift"], 4), nodes)


def check_prompt(prompt: str) -> str:
    if not prompt:
        raise UserError("--prompt is empty; give the text whose next token you want traced.")
    return prompt
