"""MPT's comparison (Table I and Table II) at small scale, on real cross-lingual data, in one
command and one table.

    python -m fairseq_plm.recipes.mpt_compare --data catalog --plm PLM --out OUT \\
        [--shots 4,16,64] [--seeds 1,2,3] [--minutes 10 | --max-update N] [--dry-run]

Data (``--data``): an ``mpt_nli`` directory with ``train``/``dev`` files in English,
``test.<lang>.tsv`` per language, ``parallel.tsv`` (the external corpus of MPT's alignment) and
``parallel_task.tsv`` (Table II "w/o external data"). A directory without ``train.tsv`` is filled
with the gettext-catalog task first (``python -m fairseq_plm.recipes.mpt_data catalog-task``:
is the hypothesis message from the same program as the premise, another program of its
package, or another package? English training/development data; test sets in every catalog
language; development and test messages from the band the demo PLM never saw). The test
languages are those with a ``test.<lang>.tsv``.

PLM (``--plm``): a local XLM-R directory (HuggingFace or fairseq format), e.g. the demo
``examples/plms/tiny-xlmr``. The label words are the first set of the task's candidates
(``task.json``; by default same/similar/different, then Yes/Maybe/No) whose words are single
tokens of the PLM (``--verbalizer`` overrides).

Systems (one pre-declared configuration each, the paper's §IV-B settings: AdamW, constant lr
``--lr`` 4e-5, batch ``--batch-size`` 24, max length 256, prompt length 4, alpha 0.5; XLM-R tuned):

  Table I, for every k in ``--shots`` and seed in ``--seeds`` (k examples per label drawn from
  the English training and development files with the seed):
    FT    XLM-R + classification head on the sentence pair (``mpt_ft``)
    SP    soft prompt, the same for every language (``mpt_sp``, alpha 1, no parallel data)
    PCT   cross-lingual template questions + augmented-template consistency (``mpt_pct``)
    MPT   soft prompt + translator + KL alignment on parallel.tsv (``mpt``)
  Table II, at k = ``--ablation-shots`` (default: the largest k), the same seeds:
    MPT, w/o consistency loss (alpha 1), w/o external data (parallel_task.tsv), w/o prompt
    translator (p^T = p^S), w/o MPT framework (= SP: its runs are reused)

Budget: every run gets the same budget, ``--minutes`` of wall clock (fairseq's
``--stop-time-hours``; resumed runs keep counting) and/or ``--max-update`` updates, with
``--threads`` CPU threads (default 1), ``--jobs`` runs at a time (default 2), so every run has
the same compute whatever runs beside it (as ``msp_compare``). The English development accuracy is measured every ``--validate-updates`` updates, and the best
checkpoint is evaluated on every test language (``fairseq-plm-mpt-eval``; other languages with
the translated prompt p^T).

Output: one table per k (Table I) and the Table II table, with accuracy per language and the
average as mean ± std over the seeds, the trained parameters, the updates reached (mean over
seeds) and, in Table II, the two-tailed t-test p-value against MPT (``--ttest``). Written to
stdout and OUT/results.md (+ results.json).

Resumable: a run whose ``result.json`` exists is skipped; a killed run resumes from its
``checkpoint_last.pt`` within its budget. Once a run is evaluated only its
``checkpoint_best.pt`` is kept (``--keep-checkpoints`` keeps the others). ``--dry-run`` prints the
commands.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections import OrderedDict

from ..data.nli import XNLI_LANGUAGES
from ..plm.errors import FairseqPLMError
from .common import BIN, USER_DIR, write_results
from .mpt_xnli import method_args

TABLE1 = ("FT", "SP", "PCT", "MPT")
TABLE2 = ("MPT", "w/o consistency loss", "w/o external data", "w/o prompt translator", "w/o MPT framework")
ALIASES = {"w/o MPT framework": "SP"}  # the same configuration: one set of runs


def say(msg):
    print(f"[mpt_compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ap.add_argument_group("data and PLM")
    d.add_argument("--data", required=True, help="mpt_nli data directory; built with the gettext-catalog task if it "
                                                 "has no train.tsv")
    d.add_argument("--plm", required=True, help="XLM-R directory (HuggingFace or fairseq format)")
    d.add_argument("--out", required=True, help="directory for runs and results (reused: finished runs are skipped)")
    d.add_argument("--verbalizer", help="label words label:word,... (default: the task's first single-token set)")
    d.add_argument("--langs", help="test languages (default: every test.<lang>.tsv of --data)")
    r = ap.add_argument_group("runs")
    r.add_argument("--shots", default="4,16,64", help="k per label (Table I)")
    r.add_argument("--seeds", default="1,2,3", help="seeds (k-shot sample and training)")
    r.add_argument("--methods", default=",".join(TABLE1), help="Table I systems")
    r.add_argument("--ablations", default=",".join(TABLE2[1:]),
                   help="Table II rows besides MPT ('' for none)")
    r.add_argument("--ablation-shots", type=int, help="k of Table II (default: the largest --shots)")
    b = ap.add_argument_group("budget (the same for every run)")
    b.add_argument("--minutes", type=float, help="wall-clock minutes per run (fairseq's --stop-time-hours)")
    b.add_argument("--max-update", type=int, help="updates per run")
    b.add_argument("--validate-updates", type=int, default=50, help="dev accuracy (best checkpoint) every N updates")
    b.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    b.add_argument("--threads", type=int, default=1, help="CPU threads per run (OMP_NUM_THREADS)")
    t = ap.add_argument_group("training (the paper's settings; one configuration for every system)")
    t.add_argument("--lr", default="4e-5")
    t.add_argument("--batch-size", type=int, default=24)
    t.add_argument("--train-args", default="", help="more fairseq-train options for every run")
    t.add_argument("--cpu", action="store_true", help="train and evaluate on CPU")
    o = ap.add_argument_group("report")
    o.add_argument("--ttest", default="student", choices=["student", "welch", "paired", "none"],
                   help="Table II p-values: two-tailed t-test of the per-seed average accuracy against MPT")
    o.add_argument("--keep-checkpoints", action="store_true",
                   help="keep checkpoint_last.pt and the interval checkpoint of evaluated runs (default: only "
                        "checkpoint_best.pt stays)")
    o.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args(argv)
    if args.minutes is None and args.max_update is None:
        ap.error("give a budget per run: --minutes and/or --max-update")
    if args.jobs < 1 or args.threads < 1:
        ap.error("--jobs and --threads must be positive")
    return args


def test_languages(data, langs=None):
    if langs:
        return langs.split(",")
    found = sorted(f[len("test."):-len(".tsv")] for f in os.listdir(data) if f.startswith("test.") and f.endswith(".tsv"))
    if not found:
        raise FairseqPLMError(f"--data {data} has no test.<lang>.tsv files")
    order = {lang: i for i, lang in enumerate(XNLI_LANGUAGES)}
    return sorted(found, key=lambda lang: (order.get(lang, len(order)), lang))


def choose_verbalizer(data, plm):
    """The first candidate of task.json (or the defaults) whose words are single PLM tokens."""
    from ..data.catalog_task import VERBALIZERS
    from ..data.nli import ClozeTemplate
    from ..plm.vocab import load_dictionary, make_encoder

    candidates = list(VERBALIZERS)
    info = os.path.join(data, "task.json")
    if os.path.exists(info):
        with open(info, encoding="utf-8") as f:
            candidates = json.load(f).get("verbalizers", candidates)
    template = ClozeTemplate(load_dictionary(plm), make_encoder(plm))
    for spec in candidates:
        try:
            template.label_word_ids(spec)
            return spec
        except FairseqPLMError:
            continue
    raise FairseqPLMError(f"none of the label word sets {candidates} is single tokens of {plm}: give --verbalizer")


def system_args(method, data):
    return method_args(method, os.path.join(data, "parallel.tsv"), os.path.join(data, "parallel_task.tsv"))


def run_dir(args, method, k, seed):
    tag = ALIASES.get(method, method).lower().replace("/", "").replace(" ", "_")
    return os.path.join(args.out, f"k{k}", tag, f"seed{seed}")


def train_command(args, method, k, seed, save, langs, verbalizer):
    budget = []
    if args.minutes is not None:
        budget += ["--stop-time-hours", f"{args.minutes / 60:.6f}"]
    if args.max_update is not None:
        budget += ["--max-update", str(args.max_update)]
    v = str(args.validate_updates)
    cmd = [os.path.join(BIN, "fairseq-train"), args.data, "--user-dir", USER_DIR, "--task", "mpt_nli",
           "--plm", args.plm, "--k-shot", str(k), "--seed", str(seed), "--save-dir", save,
           "--test-langs", ",".join(langs), "--verbalizer", verbalizer,
           "--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--lr", str(args.lr),
           "--batch-size", str(args.batch_size), "--required-batch-size-multiple", "1",
           "--max-length", "256", "--prompt-length", "4", *budget,
           "--validate-interval-updates", v, "--save-interval-updates", v, "--keep-interval-updates", "1",
           "--validate-interval", "1000000", "--save-interval", "1000000", "--no-epoch-checkpoints",
           "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric",
           "--log-format", "simple", "--log-interval", "10", "--no-progress-bar",
           *system_args(ALIASES.get(method, method), args.data), *shlex.split(args.train_args)]
    if args.cpu:
        cmd.append("--cpu")
    return cmd


def train_all(args, runs, langs, verbalizer):
    """Train every run not trained yet, ``--jobs`` at a time with ``--threads`` threads each
    (each writes ``train.done`` when fairseq-train exits cleanly)."""
    pending = []
    for method, k, seed in runs:
        save = run_dir(args, method, k, seed)
        if os.path.exists(os.path.join(save, "result.json")) or os.path.exists(os.path.join(save, "train.done")):
            continue
        cmd = train_command(args, method, k, seed, save, langs, verbalizer)
        if args.dry_run:
            print(" ".join(shlex.quote(c) for c in cmd))
            continue
        pending.append((f"k={k} {ALIASES.get(method, method)} seed {seed}", cmd, save))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    running = []
    while pending or running:
        while pending and len(running) < args.jobs:
            name, cmd, save = pending.pop(0)
            os.makedirs(save, exist_ok=True)
            log = open(os.path.join(save, "train.log"), "a")
            say(f"{name}: training (log {log.name})")
            running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, save))
        time.sleep(0.5)
        for item in list(running):
            name, proc, log, save = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            if proc.returncode != 0:
                for _, other, _, _ in running:
                    other.terminate()
                with open(os.path.join(save, "train.log"), errors="replace") as f:
                    tail = f.read().strip().splitlines()[-1:] or ["(empty log)"]
                raise FairseqPLMError(f"training {name} failed: {tail[0]} (full log: {os.path.join(save, 'train.log')})")
            open(os.path.join(save, "train.done"), "w").close()


def evaluate_run(args, method, k, seed, langs):
    """The result of one trained run (evaluated once, then read from result.json)."""
    from ..cli.mpt_eval import evaluate, run_average, write_json

    save = run_dir(args, method, k, seed)
    result_path = os.path.join(save, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    name = ALIASES.get(method, method)
    info = {}
    scores = evaluate(os.path.join(save, "checkpoint_best.pt"), langs=langs, cpu=args.cpu, info=info)
    result = {"name": name, "checkpoint": os.path.abspath(os.path.join(save, "checkpoint_best.pt")),
              "accuracy": dict(scores), **info}
    result["avg"] = run_average(result)
    write_json(result_path, result)
    if not args.keep_checkpoints:  # evaluated: the resume checkpoints are no longer needed (disk)
        for f in os.listdir(save):
            if f.startswith("checkpoint") and f.endswith(".pt") and f != "checkpoint_best.pt":
                os.remove(os.path.join(save, f))
    say(f"k={k} {name} seed {seed}: average accuracy {result['avg']:.1f} after {info.get('last_num_updates')} updates")
    return result


def main(argv=None):
    args = parse_args(argv)
    try:
        report(args)
    except FairseqPLMError as e:
        sys.exit(f"mpt_compare: error: {e}")


def report(args):
    from ..cli.mpt_eval import aggregate_rows, table

    if not os.path.exists(os.path.join(args.data, "train.tsv")):
        from ..data.catalog_task import build

        say(f"{args.data} has no train.tsv: building the gettext-catalog task there")
        if not args.dry_run:
            build(args.data, log=say)
    langs = test_languages(args.data, args.langs) if os.path.isdir(args.data) else (args.langs or "en").split(",")
    verbalizer = args.verbalizer or (choose_verbalizer(args.data, args.plm) if os.path.isdir(args.data) else
                                     "entailment:same,neutral:similar,contradiction:different")
    shots = [int(k) for k in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    ablations = [m for m in args.ablations.split(",") if m]
    for m in methods:
        if m not in TABLE1:
            raise FairseqPLMError(f"--methods: unknown system {m!r} (choose from {', '.join(TABLE1)})")
    for m in ablations:
        if m not in TABLE2[1:]:
            raise FairseqPLMError(f"--ablations: unknown row {m!r} (choose from {', '.join(TABLE2[1:])})")
    k2 = args.ablation_shots or max(shots)
    budget = " and ".join(x for x in (f"{args.minutes:g} min" if args.minutes is not None else "",
                                      f"{args.max_update} updates" if args.max_update is not None else "") if x)
    say(f"data {args.data} (test: {', '.join(langs)}), PLM {args.plm}, label words {verbalizer}, budget {budget} "
        f"per run ({args.threads} thread(s), {args.jobs} run(s) at a time), lr {args.lr}, batch {args.batch_size}")
    plan = [(m, k) for k in shots for m in methods]
    if ablations:
        plan += [(m, k2) for m in ("MPT",) + tuple(ablations) if (ALIASES.get(m, m), k2) not in plan]
    runs = [(method, k, seed) for method, k in plan for seed in seeds]
    train_all(args, runs, langs, verbalizer)
    if args.dry_run:
        return
    results = OrderedDict()
    for method, k, seed in runs:
        results.setdefault((k, ALIASES.get(method, method)), []).append(evaluate_run(args, method, k, seed, langs))
    sections, rows_json = [], []
    columns = ("params", "updates")
    for k in shots:
        groups = OrderedDict((m, results[(k, m)]) for m in methods if (k, m) in results)
        if groups:
            rows, tlangs, extra = aggregate_rows(groups, "none", None, columns=columns)
            sections.append(f"Table I, k = {k} (accuracy %, mean ± std over seeds {args.seeds})\n\n"
                            + table(rows, tlangs, ["trained params", "updates"]))
            rows_json += [{"table": "I", "k": k, "row": list(map(str, [r[0], r[2], *r[3:]]))} for r in rows]
    if ablations:
        groups = OrderedDict()
        for m in ("MPT",) + tuple(ablations):
            runs = results.get((k2, ALIASES.get(m, m)))
            if runs:
                groups[m] = runs
        rows, tlangs, extra = aggregate_rows(groups, args.ttest, "MPT", columns=("p-value",) + columns)
        sections.append(f"Table II, k = {k2} (p-value: two-tailed {args.ttest} t-test of the per-seed average "
                        f"against MPT)\n\n" + table(rows, tlangs, ["p-value", "trained params", "updates"]))
        rows_json += [{"table": "II", "k": k2, "row": list(map(str, [r[0], r[2], *r[3:]]))} for r in rows]
    note = (f"data {os.path.abspath(args.data)}; PLM {os.path.abspath(args.plm)}; label words {verbalizer}; "
            f"budget per run: {budget}, {args.threads} thread(s), {args.jobs} run(s) at a time; lr {args.lr}, "
            f"batch {args.batch_size}; seeds {args.seeds}; machine: {os.cpu_count()} CPUs{', CPU only' if args.cpu else ''}")
    write_results(args.out, "\n\n".join(sections), note, rows_json, args)


if __name__ == "__main__":
    main()
