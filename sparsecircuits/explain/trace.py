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
from .gather import circuit_task, prompt_values


# Above this calibration scale most of the circuit's calibrated logit difference is the
# calibration's, not the circuit's: the circuit points the right way, but only weakly.
FAINT_SCALE = 10.0


@dataclass
class Trace:
    prompt: str
    answers: tuple[str, str]              # (A, B): the two answers compared
    top: list[tuple[str, float]]          # the model's top next tokens and probabilities
    logit_diff: float                     # full model, z[A] - z[B]
    circuit_logit_diff: float             # the circuit alone, calibrated: scale * uncalibrated
    circuit_logit_diff_uncalibrated: float  # the circuit alone, its own logits
    calibration_scale: float              # what the circuit's logits are multiplied by
    nodes: list[dict] = field(default_factory=list)  # per circuit node, by |contribution|
    held_at: str = ""                     # a note when ablated nodes are held otherwise than pruned

    @property
    def answer(self) -> str:
        return self.answers[0] if self.logit_diff > 0 else self.answers[1]

    @property
    def faint(self) -> bool:
        return self.calibration_scale > FAINT_SCALE

    def _circuit_words(self, more: str = "") -> str:
        return (f"circuit alone {self.circuit_logit_diff_uncalibrated:+.3f} uncalibrated, "
                f"{self.circuit_logit_diff:+.3f} calibrated (scale {self.calibration_scale:.3g}"
                f"{more})")

    def _faint_words(self) -> str:
        return (f"the circuit's logits are scaled by {self.calibration_scale:.1f}x to be "
                "calibrated: its own signal is faint.")

    def to_dict(self) -> dict:
        return {**asdict(self), "answer": self.answer, "faint": self.faint}

    def _repr_html_(self) -> str:
        from ..doc import Doc
        a, b = self.answers
        doc = Doc().p(f"{self.prompt!r}: the model answers {self.answer!r} "
                      f"(z[{a!r}] - z[{b!r}] = {self.logit_diff:+.3f}; {self._circuit_words()})")
        if self.faint:
            doc.p(self._faint_words())
        return doc.table(["node", "fired anywhere", "fired at last token",
                          "activation (last token)", "contribution in model",
                          "in circuit (calibrated)"],
                         [[n["id"], "yes" if n["fired"] else "no",
                           "yes" if n["fired_last"] else "no", n["act_last"],
                           n["contribution"], n["circuit_contribution"]]
                          for n in self.nodes]).html_body()

    def format(self, limit: int = 25) -> str:
        a, b = self.answers
        circ = a if self.circuit_logit_diff > 0 else b
        lines = [
            f"prompt: {self.prompt!r}",
            "model's top next tokens: " + ", ".join(f"{t!r} {p:.1%}" for t, p in self.top),
            f"z[{a!r}] - z[{b!r}]: model {self.logit_diff:+.3f} (answers {self.answer!r}), "
            f"{self._circuit_words(f'; answers {circ!r}')}",
        ]
        if self.faint:
            lines.append(self._faint_words())
        if self.held_at:
            lines.append(f"note: {self.held_at}.")
        lines += [
            "",
            f"  {'node':<28} {'fired':>8} {'at last':>7} {'act (last)':>11} {'in model':>9} "
            f"{'in circuit':>10}",
            f"  {'':<28} {'anywhere':>8} {'token':>7} {'':>11} {'':>9} {'calibrated':>10}",
        ]
        yes = lambda v: "yes" if v else "no"  # noqa: E731
        for n in self.nodes[:limit]:
            lines.append(f"  {n['id']:<28} {yes(n['fired']):>8} {yes(n['fired_last']):>7} "
                         f"{n['act_last']:>11.3f} {n['contribution']:>+9.3f} "
                         f"{n['circuit_contribution']:>+10.3f}")
        if len(self.nodes) > limit:
            lines.append(f"  ... {len(self.nodes) - limit} more nodes (see --json)")
        lines.append("")
        lines.append("contribution = d(full) - d(node ablated): positive pushes toward "
                     f"{a!r}, negative toward {b!r}. \"at last token\": the node is nonzero at "
                     "the prompt's last token, the position whose next token is traced.")
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
    values, held = prompt_values(circuit, model, tok, stats)
    keep = circuit.keep_vector(model).float()
    # calibration is a temperature on the circuit's logits (circuits.taskdata.calibrate)
    scale = float(circuit.calibration["scale"])

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
        nodes.append(dict(id=str(node), fired=bool((a != 0).any()), fired_last=bool(a[-1] != 0),
                          act_last=round(float(a[-1]), 4), contribution=round(d_full - d_wo, 4),
                          circuit_contribution=round(scale * (d_circ - d_c), 4)))
    nodes.sort(key=lambda n: -abs(n["contribution"]))
    return Trace(prompt, tuple(answers), top, round(d_full, 4), round(scale * d_circ, 4),
                 round(d_circ, 4), scale, nodes, held)


def check_prompt(prompt: str) -> str:
    if not prompt:
        raise UserError("--prompt is empty; give the text whose next token you want traced.")
    return prompt
