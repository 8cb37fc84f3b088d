"""MPT evaluation: accuracy on every language's test set as one row of MPT Table I, and the
mean and standard deviation over seeds.

    fairseq-plm-mpt-eval --path ckpt/checkpoint_best.pt [--data DIR] --name MPT --json mpt.s1.json
    fairseq-plm-mpt-aggregate mpt.s*.json sp.s*.json [--ttest student|welch|paired|none] [--baseline MPT]

English is read with the source prompt p^S, every other language with p^T = Transl(p^S)
(the task marks each test example by its language). Languages without a test set in the
data directory are shown as "-" and left out of the average.

The JSON also records the run's seed, k, the trained parameters and the updates reached (of
the evaluated checkpoint and of ``checkpoint_last.pt`` beside it). The aggregate prints mean ±
sample std per method and, as MPT Table II, the two-tailed p-value of a t-test between each
method's per-run average accuracies and the baseline's (the first method unless --baseline;
``fairseq_plm.data.significance.ttest``: Student's two-sample test by default, Welch's, or
paired by seed).
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

from ..plm.errors import FairseqPLMError, command


def table(rows, langs, extra=()):
    """Markdown table: one row per (name, {lang: cell}, avg cell[, extra cells...]); ``extra``
    names the columns after Avg."""
    head = "| Method | " + " | ".join(lang.upper() for lang in langs) + " | Avg. |" + \
        "".join(f" {e} |" for e in extra)
    lines = [head, "|" + "---|" * (len(langs) + 2 + len(extra))]
    for name, cells, avg, *more in rows:
        lines.append(f"| {name} | " + " | ".join(cells.get(lang, "-") for lang in langs) + f" | {avg} |" +
                     "".join(f" {c} |" for c in more))
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


def num_updates(path):
    """Updates recorded in a fairseq checkpoint (None if unreadable)."""
    try:
        from ..checkpoints import load_torch_file  # the safe loader: runs no code from the file

        state = load_torch_file(path, mmap=True)
        return int(state["optimizer_history"][-1]["num_updates"])
    except Exception:
        return None


def run_info(path, model, cfg):
    """Seed, k, trained parameters and updates of the run behind checkpoint ``path``."""
    last = os.path.join(os.path.dirname(path), "checkpoint_last.pt")
    return {"seed": int(cfg.common.seed), "k_shot": int(getattr(cfg.task, "k_shot", 0)),
            "trained_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "num_updates": num_updates(path),
            "last_num_updates": num_updates(last) if os.path.exists(last) else None}


def evaluate(path, data=None, langs=None, batch_size=64, plm=None, cpu=False, info=None):
    """{lang: accuracy %} on the test sets of ``data`` (default: the training data directory).
    ``info``: a dict that receives ``run_info`` of the checkpoint."""
    from fairseq import checkpoint_utils

    if not os.path.exists(path):
        raise FairseqPLMError(f"--path {path}: checkpoint not found")
    overrides = {k: v for k, v in (("data", data), ("plm", plm)) if v}
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    model = models[0].eval()
    if info is not None:
        info.update(run_info(path, model, cfg))
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
    info = {}
    scores = evaluate(args.path, args.data, args.langs.split(",") if args.langs else None, args.batch_size,
                      args.plm, args.cpu, info=info)
    avg = float(np.mean(list(scores.values())))
    print(table([(args.name, {k: f"{v:.1f}" for k, v in scores.items()}, f"{avg:.1f}")], list(scores)))
    if args.json:
        write_json(args.json, {"name": args.name, "checkpoint": os.path.abspath(args.path), "accuracy": scores,
                               "avg": avg, **info})


def write_json(path, obj):
    """Atomically (a killed run leaves no half-written result behind)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def read_results(paths):
    """fairseq-plm-mpt-eval JSON results grouped by name, in first-seen order."""
    groups = OrderedDict()
    for path in paths:
        try:
            with open(path) as f:
                r = json.load(f)
            r["accuracy"], r["name"]  # noqa: B018 (required keys)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FairseqPLMError(f"{path}: not a fairseq-plm-mpt-eval result ({e})") from None
        groups.setdefault(r["name"], []).append(r)
    return groups


def run_average(run):
    return float(np.mean(list(run["accuracy"].values())))


def p_value(runs, baseline_runs, kind):
    """Two-tailed t-test p-value of the runs' average accuracies against the baseline's (MPT
    Table II); ``paired`` pairs runs by seed. None where the test is undefined."""
    from ..data.significance import ttest

    if kind == "paired":
        base = {r.get("seed"): run_average(r) for r in baseline_runs}
        if None in base or any(r.get("seed") is None for r in runs):
            raise FairseqPLMError("--ttest paired needs the seed of every run (results of fairseq-plm-mpt-eval "
                                  "from this version)")
        seeds = [r["seed"] for r in runs if r["seed"] in base]
        a = [run_average(r) for r in runs if r["seed"] in base]
        b = [base[s] for s in seeds]
    else:
        a, b = [run_average(r) for r in runs], [run_average(r) for r in baseline_runs]
    try:
        return ttest(a, b, kind)[2]
    except ValueError:
        return None


def aggregate_rows(groups, ttest_kind="student", baseline=None, columns=("p-value",)):
    """(rows, langs, extra column names) of the aggregate table: mean ± std per language and
    of the average, then the columns asked for: ``p-value`` (t-test against ``baseline``,
    default the first group), ``params`` (trained parameters), ``updates`` (mean updates
    reached, from checkpoint_last.pt where recorded)."""
    langs = list(OrderedDict.fromkeys(lang for runs in groups.values() for run in runs for lang in run["accuracy"]))
    baseline = baseline or next(iter(groups))
    if baseline not in groups:
        raise FairseqPLMError(f"--baseline {baseline!r}: no results of that name ({', '.join(groups)})")
    rows = []
    for name, runs in groups.items():
        cells = {}
        for lang in langs:
            values = [run["accuracy"][lang] for run in runs if lang in run["accuracy"]]
            if values:
                cells[lang] = mean_std(values)
        row = [f"{name} (n={len(runs)})", cells, mean_std([run_average(r) for r in runs])]
        for column in columns:
            if column == "p-value":
                p = None if name == baseline or ttest_kind == "none" else p_value(runs, groups[baseline], ttest_kind)
                row.append("-" if p is None else f"{p:.1e}")
            elif column == "params":
                params = {r.get("trained_params") for r in runs} - {None}
                row.append("-" if not params else "/".join(f"{x / 1e6:.2f}M" for x in sorted(params)))
            elif column == "updates":
                ups = [r.get("last_num_updates") or r.get("num_updates") for r in runs]
                ups = [u for u in ups if u is not None]
                row.append("-" if not ups else f"{np.mean(ups):.0f}")
        rows.append(tuple(row))
    return rows, langs, list(columns)


@command("fairseq-plm-mpt-aggregate")
def aggregate(argv=None):
    from ..data.significance import TTESTS

    p = argparse.ArgumentParser(description="Mean and standard deviation over runs (seeds) of "
                                            "fairseq-plm-mpt-eval --json results, one row per --name, with the "
                                            "two-tailed t-test p-value of each method against the baseline "
                                            "(MPT Table II)")
    p.add_argument("results", nargs="+", help="JSON files written by fairseq-plm-mpt-eval --json")
    p.add_argument("--ttest", choices=list(TTESTS) + ["none"], default="student",
                   help="t-test on the per-run average accuracies: student (two-sample, pooled variance; default), "
                        "welch, paired (runs paired by seed), none")
    p.add_argument("--baseline", help="the --name every other method is tested against (default: the first)")
    args = p.parse_args(argv)
    groups = read_results(args.results)
    rows, langs, extra = aggregate_rows(groups, args.ttest, args.baseline, columns=("p-value", "params", "updates"))
    print(table(rows, langs, extra))
    if args.ttest != "none":
        print(f"p-value: two-tailed {args.ttest} t-test of the per-run average accuracy against "
              f"{args.baseline or next(iter(groups))}")


def mean_std(values):
    """'mean ± std' with the sample standard deviation (ddof=1; 0 for a single run)."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.1f} ± {std:.1f}"


if __name__ == "__main__":
    main()
