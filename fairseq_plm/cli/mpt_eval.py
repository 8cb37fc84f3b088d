"""MPT evaluation: accuracy on every language's test set as one row of MPT Table I, and the
mean and standard deviation over seeds.

    fairseq-plm-mpt-eval --path ckpt/checkpoint_best.pt [--data DIR] --name MPT --json mpt.s1.json
    fairseq-plm-mpt-aggregate mpt.s*.json sp.s*.json

English is read with the source prompt p^S, every other language with p^T = Transl(p^S)
(the task marks each test example by its language). Languages without a test set in the
data directory are shown as "-" and left out of the average.
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

from ..plm.errors import FairseqPLMError, command


def table(rows, langs):
    """Markdown table: one row per (name, {lang: cell}, avg cell)."""
    head = "| Method | " + " | ".join(lang.upper() for lang in langs) + " | Avg. |"
    lines = [head, "|" + "---|" * (len(langs) + 2)]
    for name, cells, avg in rows:
        lines.append(f"| {name} | " + " | ".join(cells.get(lang, "-") for lang in langs) + f" | {avg} |")
    return "\n".join(lines)


@torch.no_grad()
def accuracy(model, task, split, batch_size, use_cuda):
    from fairseq import utils

    task.load_dataset(split)
    itr = task.get_batch_iterator(dataset=task.dataset(split), max_sentences=batch_size,
                                  ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)
    correct = total = 0
    for sample in itr:
        if use_cuda:
            sample = utils.move_to_cuda(sample)
        pred = model.label_log_probs(model(**sample["net_input"])).argmax(-1)
        correct += int((pred == sample["target"]).sum())
        total += sample["target"].numel()
    return 100.0 * correct / max(total, 1), total


def evaluate(path, data=None, langs=None, batch_size=64, plm=None, cpu=False):
    """{lang: accuracy %} on the test sets of ``data`` (default: the training data directory)."""
    from fairseq import checkpoint_utils

    if not os.path.exists(path):
        raise FairseqPLMError(f"--path {path}: checkpoint not found")
    overrides = {k: v for k, v in (("data", data), ("plm", plm)) if v}
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    model = models[0].eval()
    use_cuda = torch.cuda.is_available() and not cpu
    if use_cuda:
        model.cuda()
    langs = langs or cfg.task.test_langs.split(",")
    scores = OrderedDict()
    for lang in langs:
        try:
            scores[lang], n = accuracy(model, task, f"test.{lang}", batch_size, use_cuda)
        except FairseqPLMError as e:
            print(f"{lang}: skipped ({e})", file=sys.stderr)
            continue
        print(f"{lang}: {scores[lang]:.2f} ({n} examples)", file=sys.stderr)
    if not scores:
        raise FairseqPLMError(f"no test set of {', '.join(langs)} found in {cfg.task.data}")
    return scores


@command("fairseq-plm-mpt-eval")
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, help="checkpoint (checkpoint_best.pt)")
    p.add_argument("--data", help="data directory with test.tsv / test.<lang>.tsv (default: the training --data)")
    p.add_argument("--langs", help="comma-separated languages (default: the task's --test-langs, XNLI's 15)")
    p.add_argument("--plm", help="PLM directory, if it moved since training")
    p.add_argument("--name", default="MPT", help="row name in the table and the JSON")
    p.add_argument("--json", help="write {name, checkpoint, accuracy: {lang: %}, avg} here (for the aggregate)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cpu", action="store_true")
    args = p.parse_args(argv)
    scores = evaluate(args.path, args.data, args.langs.split(",") if args.langs else None, args.batch_size,
                      args.plm, args.cpu)
    avg = float(np.mean(list(scores.values())))
    print(table([(args.name, {k: f"{v:.1f}" for k, v in scores.items()}, f"{avg:.1f}")], list(scores)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"name": args.name, "checkpoint": os.path.abspath(args.path), "accuracy": scores, "avg": avg},
                      f, indent=1)


@command("fairseq-plm-mpt-aggregate")
def aggregate(argv=None):
    p = argparse.ArgumentParser(description="Mean and standard deviation over runs (seeds) of "
                                            "fairseq-plm-mpt-eval --json results, one row per --name")
    p.add_argument("results", nargs="+", help="JSON files written by fairseq-plm-mpt-eval --json")
    args = p.parse_args(argv)
    groups = OrderedDict()
    for path in args.results:
        try:
            with open(path) as f:
                r = json.load(f)
            groups.setdefault(r["name"], []).append(r["accuracy"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FairseqPLMError(f"{path}: not a fairseq-plm-mpt-eval result ({e})") from None
    langs = list(OrderedDict.fromkeys(lang for runs in groups.values() for run in runs for lang in run))
    rows = []
    for name, runs in groups.items():
        cells = {}
        for lang in langs:
            values = [run[lang] for run in runs if lang in run]
            if values:
                cells[lang] = mean_std(values)
        avgs = [float(np.mean(list(run.values()))) for run in runs]
        rows.append((f"{name} (n={len(runs)})", cells, mean_std(avgs)))
    print(table(rows, langs))


def mean_std(values):
    """'mean ± std' with the sample standard deviation (ddof=1; 0 for a single run)."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.1f} ± {std:.1f}"


if __name__ == "__main__":
    main()
