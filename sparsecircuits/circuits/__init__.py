"""Circuits: find the nodes that carry a behaviour by pruning, and test that they are real.

    prune(run_dir, task)            load a run, search, save a Circuit (the `prune` command)
    search(model, tok, task, targets)  the one search: circuits at a list of target losses
    find_circuit(model, tok, task)  `search` at one target
    validate(circuit, model, tok)   sufficiency, necessity, faithfulness, completeness,
                                    edge-matched random circuits, attribution, interchange,
                                    resampling, stochastic ablation, controls, sensitivity
    Circuit                         kept nodes, edges, provenance; JSON; `applied(model, values)`
    Circuit.load(file, model)       the one reader of circuit files, checked against the model
    open_circuit(file)              a circuit file and its run (model, tokenizer, corpus)
"""

from .ablation import ABLATIONS, Ablation, PretrainingStats, ablation_values, mask_hook, model_hash
from .circuit import Circuit, Edge, derive_edges
from .nodes import NodeId, NodeLayout
from .pruning import PruneConfig, bisect_smallest, heaviside
from .search import Search, find_circuit, open_circuit, open_run, prune, search
from .validate import Validation, validate

__all__ = ["ABLATIONS", "Ablation", "Circuit", "Edge", "NodeId", "NodeLayout", "PretrainingStats",
           "PruneConfig", "Search", "Validation", "ablation_values", "bisect_smallest", "derive_edges",
           "find_circuit", "heaviside", "mask_hook", "model_hash", "open_circuit", "open_run", "prune",
           "search", "validate"]
