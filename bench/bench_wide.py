"""Pruning and the viewer on a wide imported model: time and memory at the width of the paper's
released `csp_yolo2` (d_model 2048, d_mlp 8192, 128 heads of 16, matrices at 1/1024 density,
AbsTopK 1/4 at every node site), on a synthetic checkpoint in the release's format.

    python bench/bench_wide.py [--layers 2] [--d-model 2048] [--steps 4] [--pairs N]
                               [--nodes 60] [--task single_double_quote]

Stages, each with its wall time and the process's peak resident memory so far: writing the
synthetic release folder; `import circuit-sparsity`; loading the run; the pretraining mean of
every node (the default ablation values); mask training (`--steps` steps of `--pairs` pairs,
the default search runs 8 trials of `PruneConfig.steps`); and the viewer's data and page for a
circuit of `--nodes` nodes drawn from the model's sites. Weights are random: this measures
cost, not circuits. The tokenizer and corpus are the shipped models' (vocabulary 2048, as in
the release).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_release(folder: Path, layers: int, d: int, density: float, vocab: int,
                      block: int, tok_file: Path) -> None:
    """A release folder of random weights: each matrix keeps `density` of its entries."""
    g = torch.Generator().manual_seed(0)
    d_mlp, d_head = 4 * d, 16
    cfg = dict(n_layer=layers, n_head=d // d_head, d_head=d_head, d_model=d, d_mlp=d_mlp,
               block_size=block, vocab_size=vocab, bias=True, ln_bias=False, rms_norm=True,
               residual_activation_type="identity", activation_type="gelu", afrac=0.25,
               afrac_loctypes="attn_in,attn_out,mlp_in,mlp_out,mlp_neuron,attn_v,attn_k,attn_q",
               tied_unembed=False, enable_bigram_table=True, learnable_bigram_table=True,
               d_pos_emb=None, sink=True, flash=False, dropout=0.0, pfrac=density)

    def sparse(*shape):
        n = torch.Size(shape).numel()
        keep = max(1, int(density * n))
        flat = torch.zeros(n)
        flat[torch.randperm(n, generator=g)[:keep]] = torch.randn(keep, generator=g)
        return flat.view(*shape)

    sd = {"transformer.wte.weight": sparse(vocab, d), "transformer.wpe.weight": sparse(block, d),
          "transformer.ln_f.weight": torch.ones(d), "lm_head.weight": sparse(vocab, d),
          "bigram_table": 0.01 * torch.randn(vocab, vocab, generator=g)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"], sd[p + "ln_2.weight"] = torch.ones(d), torch.ones(d)
        for name, shape in (("attn.c_attn", (3 * d, d)), ("attn.c_proj", (d, d)),
                            ("mlp.c_fc", (d_mlp, d)), ("mlp.c_proj", (d, d_mlp))):
            sd[p + name + ".weight"] = sparse(*shape)
            sd[p + name + ".bias"] = torch.zeros(shape[0])
        sd[p + "attn.attn_imp.sink_logit"] = torch.zeros(d // d_head)
    folder.mkdir(parents=True)
    (folder / "beeg_config.json").write_text(json.dumps(cfg))
    torch.save(sd, folder / "final_model.pt")
    m = json.loads(tok_file.read_text())["model"]
    vocab_ids = dict(m["vocab"], **{"<|endoftext|>": vocab - 1})
    (folder / "encoder.json").write_text(json.dumps(vocab_ids))
    merges = [" ".join(x) if isinstance(x, list) else x for x in m["merges"]]
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--density", type=float, default=1 / 1024)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=None,
                    help="pairs per mask-training step (default: PruneConfig's)")
    ap.add_argument("--nodes", type=int, default=60)
    ap.add_argument("--task", default="single_double_quote")
    a = ap.parse_args()

    from sparsecircuits.circuits import (Circuit, NodeLayout, PretrainingStats, PruneConfig,
                                         derive_edges)
    from sparsecircuits.circuits.ablation import model_hash
    from sparsecircuits.circuits.pruning import TaskSplit, resolve_values, train_masks
    from sparsecircuits.circuits.search import frozen, open_run, task_reference
    from sparsecircuits.corpus import corpus_for_run
    from sparsecircuits.demo import shipped_runs
    from sparsecircuits.explain import gather
    from sparsecircuits.explain.viewer import render_html
    from sparsecircuits.importers import import_circuit_sparsity
    from sparsecircuits.tasks import get_task

    shipped = Path(shipped_runs()[0])
    corpus = corpus_for_run(None, shipped / "tokenizer.json", log=lambda *x: None)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {a.layers} layers, d_model "
          f"{a.d_model}, d_mlp {4 * a.d_model}, density {a.density:.3g}, AbsTopK 1/4")
    rows = []

    def stage(name, t0, extra=""):
        rows.append((name, time.time() - t0, peak_mib(), extra))
        print(f"{name:<34} {rows[-1][1]:8.1f} s   peak RSS {rows[-1][2]:8.0f} MiB   {extra}",
              flush=True)

    def mask_step(model, tok, stats, steps):
        """Seconds per mask-training step, as the search runs it (weights frozen)."""
        task = get_task(a.task)
        pairs = a.pairs or PruneConfig().batch_pairs
        cfg = PruneConfig(steps=steps, batch_pairs=pairs, train_pairs=max(64, pairs),
                          val_pairs=64).validate()
        split = TaskSplit(model, tok, task, cfg)
        values = resolve_values(model, cfg, split, stats)
        t = time.time()
        with frozen(model):
            train_masks(model, split.train, values, cfg, NodeLayout(model), log=None)
        return (time.time() - t) / steps, cfg

    small, small_tok, small_corpus = open_run(shipped)
    small_step, _ = mask_step(small, small_tok, PretrainingStats.cached(small, small_corpus),
                              max(a.steps, 10))
    print(f"the shipped sparse model (4 layers, d_model 128): {small_step:.3f} s per mask step")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.time()
        synthetic_release(tmp / "release", a.layers, a.d_model, a.density, 2048, 128,
                          shipped / "tokenizer.json")
        size = (tmp / "release" / "final_model.pt").stat().st_size / 2**20
        stage("write synthetic release", t, f"final_model.pt {size:.0f} MiB")
        t = time.time()
        run = import_circuit_sparsity(tmp / "release", tmp / "run", corpus=corpus.path,
                                      log=lambda *x: None)
        size = (run / "model.safetensors").stat().st_size / 2**20
        stage("import circuit-sparsity", t, f"model.safetensors {size:.0f} MiB")
        t = time.time()
        model, tok, corpus = open_run(run)
        layout = NodeLayout(model)
        stage("load the run", t, f"{layout.total:,} nodes")
        t = time.time()
        stats = PretrainingStats.compute(model, corpus.train, windows=16)
        stage("pretraining means (16 windows)", t)
        t = time.time()
        per, cfg = mask_step(model, tok, stats, a.steps)
        stage(f"mask training, {a.steps} steps of {cfg.batch_pairs} pairs", t,
              f"{per:.2f} s/step ({per / small_step:.0f}x the shipped model's); a default "
              f"trial ({PruneConfig().steps} steps) ~{per * PruneConfig().steps / 60:.1f} min")
        task = get_task(a.task)
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(layout.total, generator=g)[:a.nodes].tolist()
        nodes: dict[str, list[int]] = {}
        for i in pick:
            n = layout.node(i)
            nodes.setdefault(n.site, []).append(n.index)
        nodes = {s: sorted(v) for s, v in nodes.items()}
        t = time.time()
        circuit = Circuit(nodes=nodes, edges=derive_edges(model, nodes), task=task.name,
                          model_hash=model_hash(model), config=cfg,
                          task_ref=task_reference(task.name),
                          provenance=dict(run_dir=str(run)))
        data = gather(circuit, model, tok, corpus, log=None)
        page = render_html(data)
        stage(f"viewer of {a.nodes} nodes", t, f"page {len(page) / 2**10:.0f} KiB")


if __name__ == "__main__":
    main()
