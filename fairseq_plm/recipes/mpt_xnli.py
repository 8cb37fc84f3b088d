"""MPT Table I and Table II on XNLI with the paper's settings (§IV-B), as fairseq commands.

    python -m fairseq_plm.recipes.mpt_xnli table1 --data xnli --plm xlm-roberta-base --out runs [--dry-run]
    python -m fairseq_plm.recipes.mpt_xnli table2 --data xnli --plm xlm-roberta-base --out runs \\
        --xnli-parallel xnli/parallel_xnli.tsv [--dry-run]

Every run is ``fairseq-train`` on the ``mpt_nli`` task followed by ``fairseq-plm-mpt-eval``;
each table ends with ``fairseq-plm-mpt-aggregate`` over the seeds. Paper settings (§IV-B):
XLM-R base, AdamW (fairseq's ``adam`` decouples weight decay; the paper gives no decay, we use
none) at a constant lr 4e-5, batch 24, 50 epochs, maximum length 256, prompt length 4, alpha 0.5,
seeds 1-5; the checkpoint with the best English development accuracy is evaluated.

Table I: FT, SP, PCT and MPT for k in {1, 2, 4, ..., 256} shots. PCT (Qi et al. 2022) asks
each pair as a discrete question in its language's template and trains on every English
question together with its copy under the template of one of the 14 target languages
(``--arch mpt_pct --input-format pct --criterion pct_loss``). Table II (64 shots): MPT,
"w/o consistency loss" (alpha = 1: no KL term, so the parallel corpus is not loaded and the
translator, trained by the KL term alone, keeps its initial weights),
"w/o external data" (the parallel pairs come from unlabelled XNLI data, see
``mpt_data xnli-parallel``), "w/o prompt translator" (p^T = p^S) and "w/o MPT framework"
(= SP).
"""

import argparse
import os
import shlex
import subprocess
import sys

from .common import BIN, USER_DIR

SHOTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SEEDS = (1, 2, 3, 4, 5)
PAPER = ["--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--lr", "4e-5", "--batch-size", "24",
         "--max-epoch", "50", "--max-length", "256", "--prompt-length", "4", "--required-batch-size-multiple", "1",
         "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric", "--no-epoch-checkpoints",
         "--no-last-checkpoints", "--log-format", "simple", "--log-interval", "10"]


def method_args(method, parallel, xnli_parallel=None):
    """fairseq-train options of a Table I/II row."""
    return {
        "FT": ["--arch", "mpt_ft", "--input-format", "pair", "--criterion", "mpt_loss", "--alpha", "1"],
        "SP": ["--arch", "mpt_sp", "--criterion", "mpt_loss", "--alpha", "1"],
        "PCT": ["--arch", "mpt_pct", "--input-format", "pct", "--criterion", "pct_loss"],
        "MPT": ["--arch", "mpt", "--criterion", "mpt_loss", "--alpha", "0.5", "--parallel-data", parallel],
        # no KL term: the translator gets no gradient (DDP must be told), p^T = its initial map of p^S
        "w/o consistency loss": ["--arch", "mpt", "--criterion", "mpt_loss", "--alpha", "1",
                                 "--find-unused-parameters"],
        "w/o external data": ["--arch", "mpt", "--criterion", "mpt_loss", "--alpha", "0.5",
                              "--parallel-data", xnli_parallel or "MISSING"],
        "w/o prompt translator": ["--arch", "mpt", "--translator", "none", "--criterion", "mpt_loss",
                                  "--alpha", "0.5", "--parallel-data", parallel],
        "w/o MPT framework": ["--arch", "mpt_sp", "--criterion", "mpt_loss", "--alpha", "1"],
    }[method]


def run_commands(args, method, k, seed, extra):
    tag = method.lower().replace("/", "").replace(" ", "_")
    save = os.path.join(args.out, f"k{k}", tag, f"seed{seed}")
    train = [os.path.join(BIN, "fairseq-train"), args.data, "--user-dir", USER_DIR, "--task", "mpt_nli",
             "--plm", args.plm, "--k-shot", str(k), "--seed", str(seed), "--save-dir", save, *PAPER, *extra,
             *shlex.split(args.train_args)]
    if args.cpu:
        train.append("--cpu")
    result = os.path.join(save, "result.json")
    evaluate = [os.path.join(BIN, "fairseq-plm-mpt-eval"), "--path", os.path.join(save, "checkpoint_best.pt"),
                "--name", method, "--json", result]
    return [train, evaluate], result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=["table1", "table2"])
    p.add_argument("--data", required=True, help="mpt_nli data directory (train, dev, test files)")
    p.add_argument("--plm", required=True, help="XLM-R directory (HuggingFace or fairseq format)")
    p.add_argument("--out", required=True, help="directory for checkpoints and results")
    p.add_argument("--parallel", help="PAWS-15-style parallel corpus (default: <data>/parallel.tsv)")
    p.add_argument("--xnli-parallel", help="Table II 'w/o external data' corpus (mpt_data xnli-parallel)")
    p.add_argument("--shots", default=None, help="comma-separated k (table1 default: 1,2,...,256; table2: 64)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--methods", help="comma-separated rows (default: all of the table)")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--train-args", default="", help="more fairseq-train options, e.g. \"--verbalizer ...\"")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    parallel = args.parallel or os.path.join(args.data, "parallel.tsv")
    if args.table == "table1":
        methods, shots = ["FT", "SP", "PCT", "MPT"], SHOTS
    else:
        methods, shots = ["MPT", "w/o consistency loss", "w/o external data", "w/o prompt translator",
                          "w/o MPT framework"], (64,)
        if not args.xnli_parallel and "w/o external data" in (args.methods or ",".join(methods)).split(","):
            p.error("table2 needs --xnli-parallel for 'w/o external data' (or leave that row out with --methods)")
    methods = args.methods.split(",") if args.methods else methods
    shots = [int(k) for k in args.shots.split(",")] if args.shots else shots
    seeds = [int(s) for s in args.seeds.split(",")]
    for k in shots:
        results = []
        for method in methods:
            for seed in seeds:
                commands, result = run_commands(args, method, k, seed,
                                                method_args(method, parallel, args.xnli_parallel))
                results.append(result)
                for cmd in commands:
                    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
                    if not args.dry_run:
                        subprocess.run(cmd, check=True)
        aggregate = [os.path.join(BIN, "fairseq-plm-mpt-aggregate"), *results]
        print(f"# {args.table}, k = {k}")
        print(" ".join(shlex.quote(c) for c in aggregate), flush=True)
        if not args.dry_run:
            subprocess.run(aggregate, check=True, stdout=sys.stdout)


if __name__ == "__main__":
    main()
