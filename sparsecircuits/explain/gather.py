"""Everything a viewer or report shows about a circuit, measured once, as plain JSON data."""

from __future__ import annotations

import torch

from ..circuits.ablation import Ablation, PretrainingStats, ablation_values
from ..circuits.circuit import Circuit
from ..circuits.pruning import TaskSplit
from ..circuits.search import circuit_values
from ..circuits.taskdata import TaskData
from ..errors import UserError
from ..tasks import get_task
from .cards import node_cards, prompt_activations


def circuit_task(circuit: Circuit):
    return get_task(circuit.task_ref)


def prompt_values(circuit: Circuit, model, tok, stats: PretrainingStats
                  ) -> tuple[dict[str, torch.Tensor], str]:
    """Ablation values for one prompt on its own, and a note when they differ from the
    circuit's: a resample circuit's nodes take their values on other prompts of the task, which
    one prompt alone does not have, so there they are held at their mean over the task's train
    prompts (what resampling gives them on average)."""
    cfg = circuit.config
    if cfg.ablation is not Ablation.RESAMPLE:
        return circuit_values(circuit, model, tok, stats), ""
    split = TaskSplit(model, tok, circuit_task(circuit), cfg)
    values = ablation_values(Ablation.TASK_MEAN, model, task_idx=split.train.idx,
                             task_lengths=split.train.lengths)
    return values, ("this resample circuit's ablated nodes are held at their mean over the "
                    "task's train prompts (one prompt has no other prompt to take values from)")


def gather(circuit: Circuit, model, tok, corpus, *, pairs: int = 32, browse: int = 6,
           ablate_max: int = 300, log=print) -> dict:
    """Cards for every node, the edges, and prompts for the browser: the viewer's data."""
    circuit.check_model(model)
    stats = PretrainingStats.cached(model, corpus, log=log)
    task = circuit_task(circuit)
    test_pairs = task.pairs(pairs, "test", seed=0, at_most=True)
    if not test_pairs:
        raise UserError(f"task '{task.name}' makes no test pairs to show the circuit on.")
    test = TaskData.from_pairs(tok, task.name, test_pairs, model.cfg.block_size)
    values = circuit_values(circuit, model, tok, stats)
    if log:
        log(f"measuring {circuit.num_nodes} node cards ...")
    cards = node_cards(circuit, model, tok, val_tokens=corpus.val, test=test, values=values,
                       ablate_max=ablate_max)
    index = {c["id"]: i for i, c in enumerate(cards)}
    edges = [[index[str(e.src)], index[str(e.dst)], round(e.weight, 5), e.kind]
             for e in circuit.edges if str(e.src) in index and str(e.dst) in index]
    example = test_pairs[0]
    cfg = model.cfg
    return dict(
        meta=dict(task=task.name, description=task.description, nodes=circuit.num_nodes,
                  edges=circuit.num_edges, loss=circuit.loss,
                  loss_uncalibrated=circuit.loss_uncalibrated, calibration=circuit.calibration,
                  target_loss=circuit.target_loss, ablation=str(circuit.ablation),
                  freeze_norm=circuit.freeze_norm, model_hash=circuit.model_hash,
                  run_dir=circuit.provenance.get("run_dir"), n_layer=cfg.n_layer,
                  d_model=cfg.d_model, d_mlp=cfg.d_mlp, afrac=cfg.afrac,
                  example=dict(clean=example.clean, corrupt=example.corrupt,
                               target=example.target, alt=example.alt)),
        nodes=cards, edges=edges,
        prompts=prompt_activations(circuit, model, tok, test, pairs=browse))
