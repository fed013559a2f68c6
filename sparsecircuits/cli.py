"""The `sparsecircuits` command: a thin shell over the public functions of the same names."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys

from .errors import UserError, closest


def _set_overrides(cfg, pairs: list[str]):
    """Apply `section.key=value` overrides (value parsed as JSON, else taken as a string)."""
    from .config import config_from_dict
    d = cfg.to_dict()
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise UserError(f"--set '{pair}' is not of the form section.key=value "
                            "(e.g. train.max_steps=200).")
        key, raw = pair.split("=", 1)
        section, name = key.split(".", 1)
        if section not in d:
            raise UserError(f"--set '{pair}': unknown section '{section}'{closest(section, d)}.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        d[section][name] = value
    return config_from_dict(d, where="--set")


def cmd_corpus_build(a):
    from .corpus import build_corpus
    build_corpus(a.out, a.source, vocab_size=a.vocab_size, val_frac=a.val_frac,
                 tokenizer=a.tokenizer, generated=a.generated, seed=a.seed, force=a.force)


def cmd_train(a):
    from .config import load_config, preset
    from .train import train
    if a.resume:
        if a.preset or a.config or a.set or a.corpus:
            raise UserError("--resume continues the run saved in --out with its own config; "
                            "drop --preset/--config/--set/--corpus.")
        if a.bridge_to:
            raise UserError("--resume continues the run's own bridges; drop --bridge-to.")
        train(None, a.out, resume=True)
        return
    if bool(a.preset) == bool(a.config):
        raise UserError("pass exactly one of --preset NAME or --config FILE "
                        "(see `sparsecircuits presets`).")
    cfg = preset(a.preset) if a.preset else load_config(a.config)
    if a.corpus:
        cfg.data.corpus = a.corpus
    if a.set:
        cfg = _set_overrides(cfg, a.set)
    train(cfg, a.out, bridge_to=a.bridge_to, kl_sites=a.kl_sites)


def cmd_bridge(a):
    from .train import bridge
    if a.resume:
        bridge(None, None, a.out, resume=True)
    elif not (a.sparse_run and a.dense_run):
        raise UserError("pass SPARSE_RUN and DENSE_RUN (or --resume with --out of a bridge run).")
    else:
        bridge(a.sparse_run, a.dense_run, a.out, steps=a.steps, lr=a.lr, kl_sites=a.kl_sites)


def cmd_eval(a):
    from .evaluate import evaluate, evaluate_tasks
    if a.tasks:
        report = evaluate_tasks(a.run_dir, a.tasks, n=a.n, split=a.split, seed=a.seed)
    else:
        report = evaluate(a.run_dir, batches=a.batches, corpus=a.corpus)
    print(json.dumps(report.to_dict(), indent=1) if a.json else report.format())


def cmd_tasks_list(a):
    from .tasks import PAPER_TASKS, SUITE
    print(f"{len(PAPER_TASKS)} tasks of the paper's suite (each also as NAME:inverted and "
          "NAME:constant controls; a .toml file names a task of your own):\n")
    for name in PAPER_TASKS:
        print(f"  {name:<28} {SUITE[name].description}")


def cmd_tasks_show(a):
    from .tasks import get_task
    from .tasks.show import show_pairs
    task = get_task(a.name)
    if a.run:
        from .checkpoint import load
        model, tok = load(a.run)
    else:
        from .corpus import open_corpus
        model, tok = None, open_corpus(None).tokenizer
    print(show_pairs(task, tok, n=a.n, split=a.split, seed=a.seed, model=model))


def cmd_presets(a):
    from .config import PRESETS, preset
    from .model import GPT
    for name in PRESETS:
        c = preset(name)
        m = c.model
        n = GPT(c.model).num_params()
        print(f"{name:<13} {m.n_layer}L d_model {m.d_model} d_mlp {m.d_mlp} ctx {m.block_size} "
              f"| density {c.sparsity.weight_density:g} afrac {m.afrac:g} | "
              f"{c.train.max_steps} steps x {c.train.batch_size} seqs | {n / 1e6:.2f}M params")


def cmd_prune(a):
    from .circuits import prune
    settings = dict(target_loss=a.target_loss, ablation=a.ablation, freeze_norm=a.freeze_norm,
                    seed=a.seed)
    if a.steps is not None:
        settings["steps"] = a.steps
    c = prune(a.run_dir, a.task, a.out, budget=a.budget, jobs=a.jobs, log=_log_now, **settings)
    search = c.provenance["search"]
    print(f"\n{c.summary()}; calibration scale {c.calibration['scale']:.2f} (bound "
          f"{c.calibration['bound']:.2f})")
    print(f"best of {len(search['trials'])} pruning runs, {c.provenance['seconds']:.0f} s; "
          f"wrote {a.out}")


def cmd_validate(a):
    from .checkpoint import atomic_write_text
    from .circuits import open_circuit, validate
    circuit, model, tok, corpus = open_circuit(a.circuit, a.run)
    report = validate(circuit, model, tok, corpus=corpus, n=a.n, draws=a.draws,
                      controls=not a.no_controls, seed=a.seed, jobs=a.jobs)
    print()
    print(report.format())
    if a.out:
        atomic_write_text(a.out, json.dumps(report.to_dict(), indent=1))
        print(f"\nwrote {a.out}")


def cmd_view(a):
    from .explain import view
    out = view(a.circuit, a.out, run=a.run)
    print(f"wrote {out}: open it in a browser (no network or server needed)")


def cmd_report(a):
    from .explain import report
    out = report(a.circuit, a.out, run=a.run, validation=a.validation,
                 controls=not a.no_controls)
    print(f"wrote {out}/report.md, report.html, viewer.html and validation.json")


def cmd_trace(a):
    from .explain import trace
    t = trace(a.run_dir, a.circuit, a.prompt, answers=tuple(a.answers) if a.answers else None)
    print(json.dumps(t.to_dict(), indent=1) if a.json else t.format())


def cmd_steer(a):
    from .bridges import steer, steer_pairs
    if a.pairs:
        if a.prompt or a.counterfactual or a.answers:
            raise UserError("--pairs takes its prompts and answers from the circuit's task; "
                            "drop --prompt, --counterfactual and --answers, or drop --pairs.")
        result = steer_pairs(a.run_dir, a.circuit, a.node, n=a.pairs, split=a.split,
                             strengths=a.strengths, n_random=a.random, seed=a.seed, out=a.out)
    elif a.prompt is None or a.counterfactual is None:
        raise UserError("pass --prompt and --counterfactual, or --pairs N to steer on the "
                        "circuit's task.")
    else:
        result = steer(a.run_dir, a.circuit, a.node, a.prompt, a.counterfactual,
                       strengths=a.strengths, answers=tuple(a.answers) if a.answers else None,
                       n_random=a.random, seed=a.seed, out=a.out)
    print(json.dumps(result.to_dict(), indent=1) if a.json else result.format())
    if a.out:
        print(f"\nwrote {a.out}/steer.json, steer.png, steer.svg and steer.md")


def cmd_compare(a):
    from .study import compare, format_summary
    result = compare(a.sparse_run, a.dense_run, tasks=a.tasks, targets=a.targets, out=a.out,
                     budget=a.budget, steps=a.steps, ablation=a.ablation,
                     freeze_norm=a.freeze_norm, jobs=a.jobs, log=_log_now)
    print()
    print(format_summary(result))
    print(f"\nwrote {a.out}/compare.json, frontier.png and frontier.svg, and the circuits "
          f"counted at the headline target in {a.out}/circuits/TASK/MODEL.json")


def cmd_export(a):
    from .release import export_run
    export_run(a.run_dir, a.out, dtype=a.dtype)


def cmd_monitor(a):
    from .monitor import monitor_run
    monitor_run(a.run_dir, a.circuits, a.input, a.out, policy=a.policy, positions=a.positions,
                full=not a.cheap, log=_log_now)


def cmd_import_circuit_sparsity(a):
    from .importers import import_circuit_sparsity
    import_circuit_sparsity(a.src, a.out, tokenizer_dir=a.tokenizer_dir, inert=a.inert,
                            corpus=a.corpus)


def cmd_import_hf_gpt2(a):
    from .importers import import_hf_gpt2
    import_hf_gpt2(a.name, a.out, corpus=a.corpus)


class _Parser(argparse.ArgumentParser):
    """Argument mistakes reported as every other mistake is: one line, exit status 2."""

    def error(self, message):
        # "argument --jobs: 0 must be at least 1" as the functions' own checks say it
        message = re.sub(r"^argument (--[\w-]+): (?=\S+ must be)", r"\1 ", message)
        self.exit(2, f"error: {message} (see `{self.prog} --help`).\n")


def _whole(least: int):
    """An option's type: a whole number >= `least`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
        return value
    return parse


def _number(low: float, high: float, text: str):
    """An option's type: a finite number with `low <= x <= high` (`text` says so)."""
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"{raw} must be a finite number {text}")
        return value
    return parse


# The numeric options' types: a NaN, an infinity or a value out of range stops at parsing.
COUNT, COUNT0, SEED = _whole(1), _whole(0), _whole(0)
LOSS = _number(1e-12, math.log(2) - 1e-12, "between 0 and chance, ln 2 = 0.693")
FRACTION = _number(0.0, 1.0, "in [0, 1]")
POSITIVE = _number(1e-300, math.inf, "above 0")


def _log_now(*args):
    print(*args, flush=True)  # progress lines appear as they happen, also through a pipe


def cmd_demo(a):
    from .demo import demo
    demo(a.out, jobs=a.jobs, budget=a.budget, ablation=a.ablation, live=a.live, log=_log_now)


def build_parser() -> argparse.ArgumentParser:
    from .circuits.ablation import ABLATIONS
    from .circuits.pruning import PruneConfig
    from .circuits.search import DEFAULT_BUDGET
    from .study.compare import DEFAULT_TARGETS
    from .tasks.metrics import TARGET_LOSS
    p = _Parser(prog="sparsecircuits", description=(
        "Train weight-sparse transformers on Python code and inspect them."))
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("corpus", help="build a tokenized Python corpus")
    csub = c.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    b = csub.add_parser("build", help="find .py files, train the BPE, write token memmaps")
    b.add_argument("--source", action="append", metavar="PATH",
                   help="a .py file or folder (repeatable); default: this Python's standard library")
    b.add_argument("--out", required=True, metavar="DIR")
    b.add_argument("--vocab-size", type=int, default=2048)
    b.add_argument("--val-frac", type=FRACTION, default=0.02)
    b.add_argument("--tokenizer", metavar="PATH", help="reuse this tokenizer.json instead of training")
    b.add_argument("--generated", type=COUNT0, default=0, metavar="N",
                   help="add N programs of the seeded simple-Python generator beside the "
                        "sources (default 0)")
    b.add_argument("--seed", type=SEED, default=0, help="the generator's seed (default 0)")
    b.add_argument("--force", action="store_true", help="replace DIR if it exists")
    b.set_defaults(fn=cmd_corpus_build)

    t = sub.add_parser("train", help="train a sparse or dense model into a run folder")
    t.add_argument("--preset", metavar="NAME", help="a named config (see `sparsecircuits presets`)")
    t.add_argument("--config", metavar="FILE", help="a JSON config file")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. train.max_steps=200")
    t.add_argument("--corpus", metavar="DIR", help="a built corpus folder (default: the default corpus)")
    t.add_argument("--out", required=True, metavar="RUN_DIR")
    t.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR exactly")
    t.add_argument("--bridge-to", metavar="DENSE_RUN",
                   help="train bridges to this frozen dense run (same tokenizer and depth) "
                        "beside the sparse model")
    t.add_argument("--kl-sites", type=COUNT0, default=0, metavar="K",
                   help="with --bridge-to: hybrid passes per step and direction, K locations "
                        "drawn per step (default 0: every location)")
    t.set_defaults(fn=cmd_train)

    b = sub.add_parser("bridge", help="train bridges between two finished runs, both frozen")
    b.add_argument("sparse_run", nargs="?", metavar="SPARSE_RUN")
    b.add_argument("dense_run", nargs="?", metavar="DENSE_RUN")
    b.add_argument("--out", required=True, metavar="DIR",
                   help="a new run folder: the sparse run with its bridges")
    b.add_argument("--steps", type=COUNT, default=1000, help="training steps (default 1000)")
    b.add_argument("--lr", type=POSITIVE, default=3e-3, help="peak learning rate (default 3e-3)")
    b.add_argument("--kl-sites", type=COUNT0, default=0, metavar="K",
                   help="hybrid passes per step and direction, K locations drawn per step "
                        "(default 0: every location)")
    b.add_argument("--resume", action="store_true", help="continue the bridges in --out")
    b.set_defaults(fn=cmd_bridge)

    e = sub.add_parser("eval", help="val loss, sparsity and training summary of a run; with "
                       "--tasks, per-task loss and accuracy")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--batches", type=COUNT, default=None, help="val batches (default: the run's)")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--corpus", metavar="DIR", help="evaluate on this corpus (default: the run's)")
    e.add_argument("--tasks", nargs="+", metavar="TASK",
                   help="instead: per-task loss and accuracy; 'all', names, NAME:inverted, "
                        "NAME:constant or .toml files")
    e.add_argument("--n", type=COUNT, default=64, help="pairs per task (with --tasks)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--seed", type=SEED, default=0)
    e.set_defaults(fn=cmd_eval)

    tk = sub.add_parser("tasks", help="the task suite: list tasks, show their pairs")
    tsub = tk.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    tl = tsub.add_parser("list", help="the paper's twenty tasks")
    tl.set_defaults(fn=cmd_tasks_list)
    ts = tsub.add_parser("show", help="print a task's pairs with their answer tokens")
    ts.add_argument("name", metavar="TASK", help="a task name, NAME:inverted, or a .toml file")
    ts.add_argument("--n", type=COUNT, default=5)
    ts.add_argument("--split", default="test", choices=["train", "val", "test"])
    ts.add_argument("--seed", type=SEED, default=0)
    ts.add_argument("--run", metavar="RUN_DIR", help="use this run's tokenizer (default: the "
                    "default corpus's) and flag answers its model never predicts")
    ts.set_defaults(fn=cmd_tasks_show)

    pr = sub.add_parser("presets", help="list the named configs")
    pr.set_defaults(fn=cmd_presets)

    pa = sub.add_parser("prune", help="find the smallest circuit that does a task")
    pa.add_argument("run_dir", metavar="RUN_DIR")
    pa.add_argument("--task", required=True, help="a task name, NAME:inverted, or a .toml file")
    pa.add_argument("--out", required=True, metavar="CIRCUIT.json")
    pa.add_argument("--target-loss", type=LOSS, default=TARGET_LOSS)
    pa.add_argument("--ablation", default="mean", choices=ABLATIONS,
                    help="what a pruned node is held at (mean: over pretraining tokens; "
                         "resample: its value on another prompt of the task)")
    pa.add_argument("--freeze-norm", action="store_true",
                    help="reuse the unpruned pass's RMSNorm scales")
    pa.add_argument("--seed", type=SEED, default=0)
    pa.add_argument("--steps", type=COUNT, default=None,
                    help=f"mask-training steps per run (default {PruneConfig.steps})")
    pa.add_argument("--budget", type=COUNT, default=DEFAULT_BUDGET,
                    help="pruning runs of the built-in search (1: the paper's centre settings)")
    pa.add_argument("--jobs", type=COUNT, default=None,
                    help="runs in parallel (default: one per core)")
    pa.set_defaults(fn=cmd_prune)

    va = sub.add_parser("validate", help="causal tests and controls for a circuit")
    va.add_argument("circuit", metavar="CIRCUIT.json")
    va.add_argument("--run", metavar="RUN_DIR", help="the circuit's run (default: as recorded)")
    va.add_argument("--out", metavar="VALIDATION.json", help="also write the figures as JSON")
    va.add_argument("--n", type=COUNT, default=128, help="test pairs")
    va.add_argument("--draws", type=COUNT, default=20,
                    help="random circuits, resampling and stochastic draws")
    va.add_argument("--no-controls", action="store_true",
                    help="skip the controls and sensitivity prunings (faster)")
    va.add_argument("--seed", type=SEED, default=0)
    va.add_argument("--jobs", type=COUNT, default=None,
                    help="the controls' pruning runs in parallel (default: one per core)")
    va.set_defaults(fn=cmd_validate)

    vw = sub.add_parser("view", help="write a circuit's interactive viewer (one HTML file)")
    vw.add_argument("circuit", metavar="CIRCUIT.json")
    vw.add_argument("--out", required=True, metavar="FILE.html")
    vw.add_argument("--run", metavar="RUN_DIR", help="the circuit's run (default: as recorded)")
    vw.set_defaults(fn=cmd_view)

    rp = sub.add_parser("report", help="write a circuit's audit report (Markdown and HTML)")
    rp.add_argument("circuit", metavar="CIRCUIT.json")
    rp.add_argument("--out", required=True, metavar="DIR")
    rp.add_argument("--run", metavar="RUN_DIR", help="the circuit's run (default: as recorded)")
    rp.add_argument("--validation", metavar="FILE.json",
                    help="figures from `validate --out` (default: validate now)")
    rp.add_argument("--no-controls", action="store_true",
                    help="when validating now, skip the controls (faster, flagged as a caveat)")
    rp.set_defaults(fn=cmd_report)

    tr = sub.add_parser("trace", help="why the model answers one prompt as it does, node by node")
    tr.add_argument("run_dir", metavar="RUN_DIR")
    tr.add_argument("--circuit", required=True, metavar="CIRCUIT.json")
    tr.add_argument("--prompt", required=True, help="the text whose next token is traced")
    tr.add_argument("--answers", nargs=2, metavar=("A", "B"),
                    help="the two answers compared (default: the circuit's task's)")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(fn=cmd_trace)

    st = sub.add_parser("steer", help="push a dense model through a sparse circuit's node, "
                        "across a bridge")
    st.add_argument("run_dir", metavar="BRIDGED_RUN")
    st.add_argument("--circuit", required=True, metavar="CIRCUIT.json",
                    help="a circuit of the bridged run's sparse model")
    st.add_argument("--node", required=True, nargs="+", metavar="NODE",
                    help="a node of the circuit at attn.in or mlp.in, e.g. 'blocks.1.mlp.in[17]' "
                         "(several: pushed together)")
    st.add_argument("--prompt", help="the text the dense model reads")
    st.add_argument("--counterfactual",
                    help="the same text changed where the node should see the difference "
                         "(as many tokens)")
    st.add_argument("--pairs", type=COUNT, default=0, metavar="N",
                    help="instead: N pairs of the circuit's task, each corrupt prompt pushed "
                         "toward its clean one")
    st.add_argument("--split", default="test", choices=["test", "val", "train"],
                    help="the pairs' split (default test)")
    st.add_argument("--strengths", nargs="+", type=FRACTION, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                    metavar="S", help="strengths in [0, 1] (default 0 0.25 0.5 0.75 1)")
    st.add_argument("--answers", nargs=2, metavar=("A", "B"),
                    help="the two answers (default: the circuit's task's)")
    st.add_argument("--random", type=COUNT, default=20, metavar="N",
                    help="random directions of the same norm to compare with (default 20)")
    st.add_argument("--seed", type=SEED, default=0)
    st.add_argument("--out", metavar="DIR", help="write steer.json, .png, .svg and .md here")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_steer)

    cp = sub.add_parser("compare", help="circuit sizes of a sparse and a dense model across "
                        "target losses")
    cp.add_argument("sparse_run", metavar="SPARSE_RUN")
    cp.add_argument("dense_run", metavar="DENSE_RUN")
    cp.add_argument("--tasks", nargs="+", metavar="TASK",
                    help="tasks (default: every suite task both models bring below the "
                         "loosest target)")
    cp.add_argument("--targets", nargs="+", type=LOSS, metavar="LOSS",
                    default=list(DEFAULT_TARGETS))
    cp.add_argument("--budget", type=COUNT, default=DEFAULT_BUDGET,
                    help="pruning runs per task and model (the same search as prune)")
    cp.add_argument("--steps", type=COUNT, default=PruneConfig.steps,
                    help="mask-training steps per run")
    cp.add_argument("--ablation", default="mean", choices=ABLATIONS,
                    help="what a pruned node is held at, in both models (as for prune)")
    cp.add_argument("--freeze-norm", action="store_true",
                    help="replay the full pass's RMSNorm scales in pruned passes (as for prune)")
    cp.add_argument("--jobs", type=COUNT, default=None,
                    help="(task, model) searches run at once, one process each (default: one "
                         "per core)")
    cp.add_argument("--out", required=True, metavar="DIR")
    cp.set_defaults(fn=cmd_compare)

    ex = sub.add_parser("export", help="a compact copy of a run: half-precision weights, no "
                        "optimizer state")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--out", required=True, metavar="DIR")
    ex.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    ex.set_defaults(fn=cmd_export)

    mo = sub.add_parser("monitor", help="watch circuits while the model reads inputs; flag "
                        "where it leaves them")
    mo.add_argument("run_dir", metavar="RUN_DIR")
    mo.add_argument("--circuits", nargs="+", required=True, metavar="CIRCUIT.json")
    mo.add_argument("--input", required=True, metavar="FILE",
                    help="a text file (one prompt a line), a JSONL file ({\"text\": ...} a "
                         "line) or a folder of .py files (read at every position)")
    mo.add_argument("--out", required=True, metavar="DIR")
    mo.add_argument("--policy", metavar="POLICY.toml", help="alert thresholds (default: built in)")
    mo.add_argument("--positions", choices=["last", "all"], default=None,
                    help="watch the last token (default for prompts) or every token (default "
                         "for a folder)")
    mo.add_argument("--cheap", action="store_true",
                    help="skip the circuit-alone pass (no agreement or share)")
    mo.set_defaults(fn=cmd_monitor)

    im = sub.add_parser("import", help="a model trained elsewhere as a run folder: the paper's "
                        "released models, or a Hugging Face GPT-2")
    isub = im.add_subparsers(dest="source", metavar="SOURCE", required=True)
    ic = isub.add_parser("circuit-sparsity", help="a circuit-sparsity release folder "
                         "(beeg_config.json, final_model.pt)")
    ic.add_argument("src", metavar="DIR")
    ic.add_argument("--out", required=True, metavar="RUN_DIR")
    ic.add_argument("--tokenizer-dir", metavar="DIR",
                    help="the folder with the release's vocab.bpe and encoder.json "
                         "(default: DIR itself)")
    ic.add_argument("--inert", nargs="+", default=[], metavar="KEY",
                    help="config keys you know have no effect on the forward pass")
    ic.set_defaults(fn=cmd_import_circuit_sparsity)
    ih = isub.add_parser("hf-gpt2", help="a transformers GPT-2: a hub name (needs network) or "
                         "a folder saved with save_pretrained")
    ih.add_argument("name", metavar="NAME_OR_DIR")
    ih.add_argument("--out", required=True, metavar="RUN_DIR")
    ih.set_defaults(fn=cmd_import_hf_gpt2)
    for x in (ic, ih):
        x.add_argument("--corpus", metavar="DIR",
                       help="a corpus built with the model's tokenizer, read by eval, prune and "
                            "the rest (default: the standard library, tokenized on first use)")

    d = sub.add_parser("demo", help="the main job: circuits in the shipped sparse and dense "
                       "models, compared, validated and shown")
    d.add_argument("--out", default="sparsecircuits-demo", metavar="DIR")
    d.add_argument("--jobs", type=COUNT, default=None,
                   help="circuits worked on at once, one process each (default: one per core)")
    d.add_argument("--budget", type=COUNT, default=DEFAULT_BUDGET,
                   help="trials of the circuit search per circuit (as for prune)")
    d.add_argument("--ablation", default="mean", choices=ABLATIONS,
                   help="what a pruned node is held at (mean: over pretraining tokens; "
                        "resample: its value on another prompt of the task)")
    d.add_argument("--live", action="store_true",
                   help="search for every circuit now instead of validating the ones of the "
                        "study shipped with the models (minutes more)")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or an argument mistake already reported in one line
        return e.code if isinstance(e.code, int) else 0
    try:
        args.fn(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder without permission: the machine's, not a bug
        where = f" {e.filename}" if e.filename else ""
        print(f"error: could not read or write{where} ({e.strerror or e}); free space or fix "
              "the permissions there, then run the command again.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; a run can continue from its last checkpoint with "
              "`sparsecircuits train --out RUN_DIR --resume`", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
