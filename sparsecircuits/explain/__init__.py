"""Show a circuit to a person: an interactive viewer, an audit report, a per-prompt trace.

    view(circuit_file, out)                one self-contained HTML file
    report(circuit_file, out_dir)          report.md + report.html (+ the viewer, validation)
    trace(run_dir, circuit_file, prompt)   why the model answers one prompt as it does
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import atomic_write_text, output_dir
from ..circuits import open_circuit, validate
from ..circuits.ablation import PretrainingStats
from ..errors import UserError
from .gather import gather
from .report import build_report
from .trace import Trace, check_prompt, trace_prompt
from .viewer import render_html, write_viewer


def view(circuit_file, out, run=None, log=print) -> Path:
    """Write the interactive viewer of a circuit file to `out` (an .html file)."""
    output_dir(Path(out).parent)  # before the minutes of measuring, not after
    circuit, model, tok, corpus = open_circuit(circuit_file, run)
    return write_viewer(gather(circuit, model, tok, corpus, log=log), out)


def run_info(run_dir, model) -> dict:
    from ..checkpoint import STATE_FILE, read_run_config, read_trainer_state
    cfg = read_run_config(run_dir)
    m, s = cfg.model, cfg.sparsity
    info = {"run folder": str(run_dir),
            "architecture": f"{m.n_layer} layers, d_model {m.d_model}, d_mlp {m.d_mlp}, "
                            f"{m.n_head} heads of {m.d_head}, vocab {m.vocab_size}, "
                            f"context {m.block_size}",
            "sparsity": f"weight density {s.weight_density:g} (embeddings, biases "
                        f"{s.other_density:g}), activation keep fraction {m.afrac:g}",
            "nonzero parameters": _nonzero(model)}
    from ..importers import read_provenance
    prov = read_provenance(run_dir)
    if prov:
        info["imported"] = (f"{prov['source']} model from {prov.get('folder') or prov.get('name')}"
                            " (provenance.json)")
    if (Path(run_dir) / STATE_FILE).is_file():
        st = read_trainer_state(run_dir)
        info["training"] = f"{st['step']} steps, {st['tokens']:,} tokens"
        if st.get("val_loss") is not None:
            info["val loss (pretraining)"] = f"{st['val_loss']:.3f}"
    return info


def _nonzero(model) -> str:
    params = dict(model.named_parameters())
    big = params.pop("bigram", None)
    nz = sum(int((p != 0).sum()) for p in params.values())
    total = sum(p.numel() for p in params.values())
    text = f"{nz:,} of {total:,}"
    if big is not None:
        text += f", plus the dense bigram table ({big.numel():,})"
    return text


def report(circuit_file, out, run=None, validation=None, controls=True, log=print) -> Path:
    """Write DIR/report.md, DIR/report.html, DIR/viewer.html and DIR/validation.json."""
    circuit, model, tok, corpus = open_circuit(circuit_file, run)
    out = output_dir(out)
    if validation is not None:
        vpath = Path(validation)
        if not vpath.is_file():
            raise UserError(f"validation file {vpath} does not exist; make it with "
                            "`sparsecircuits validate CIRCUIT.json --out FILE`, or leave "
                            "--validation out to run it now.")
        try:
            v = json.loads(vpath.read_text())
            v["sufficiency"]["loss"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise UserError(f"{vpath} is not a validation file written by "
                            "`sparsecircuits validate --out`.") from None
    else:
        v = validate(circuit, model, tok, corpus=corpus, controls=controls, log=log).to_dict()
    data = gather(circuit, model, tok, corpus, log=log)
    write_viewer(data, out / "viewer.html")
    doc = build_report(circuit, v, data, run_info(circuit.provenance.get("run_dir") or run, model),
                       viewer_file="viewer.html")
    atomic_write_text(out / "validation.json", json.dumps(v, indent=1))
    atomic_write_text(out / "report.md", doc.markdown())
    atomic_write_text(out / "report.html", doc.html(f"{circuit.task} circuit: audit report"))
    return out


def trace(run_dir, circuit_file, prompt: str, answers=None, log=print) -> Trace:
    """Trace `prompt` through the circuit of `circuit_file` in the model of `run_dir`."""
    circuit, model, tok, corpus = open_circuit(circuit_file, run_dir)
    stats = PretrainingStats.cached(model, corpus, log=log)
    return trace_prompt(circuit, model, tok, stats, check_prompt(prompt), answers)


__all__ = ["Trace", "gather", "render_html", "report", "trace", "view", "write_viewer"]
