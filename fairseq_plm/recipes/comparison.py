"""What the one-table comparison recipes (``sga_compare``, ``fusion_compare``) share: a
per-system training budget, resumable runs, decoding the whole test split at batch size 1 and
batched, sacrebleu BLEU with its signature, and what each system reached in its budget.

Resuming. Everything a system produced lives in ``OUT/<system>/``:

* ``trained.json`` is written once ``fairseq-plm-train`` finished the budget; a rerun does
  not train that system again. Without it, a rerun calls ``fairseq-plm-train`` again, which
  continues from ``checkpoint_last.pt`` (fairseq's default) with the budget counted from the
  first run: fairseq stores the training time spent in the checkpoint and ``--stop-time-hours``
  compares the total, ``--max-update`` counts updates from the start;
* ``<decoding>.json`` (one per decoding run: BLEU, speed) is written once that run finished;
  a rerun skips it.

So a killed comparison resumes where it stopped (losing at most the training since the last
checkpoint: ``--save-interval-updates``), and a finished one prints its table again at once.
Files are written to a temporary name and renamed, so a kill never leaves a half-written one.

Equal budgets: ``--minutes`` is fairseq's ``--stop-time-hours``, the wall-clock time since the
trainer started (validation and checkpoint saving included), checked after every update. Each
row reports the updates it reached and the training minutes it used.
"""

import contextlib
import io
import json
import math
import os
import re
import shlex

from .common import run_cli


def add_budget_args(ap, max_epoch=False):
    budget = ap.add_argument_group("training budget, the same for every system (at least one)")
    budget.add_argument("--minutes", type=float,
                        help="wall-clock training minutes per system (fairseq --stop-time-hours; validation and "
                             "checkpoint saving count); a resumed system continues its count")
    budget.add_argument("--max-update", type=int, help="updates per system")
    if max_epoch:
        budget.add_argument("--max-epoch", type=int, help="epochs per system")
    budget.add_argument("--save-interval-updates", type=int, default=500,
                        help="also save checkpoint_last.pt (and validate) every N updates, so that a killed run "
                             "loses at most N updates (0: at the end of each epoch only)")
    return budget


def check_budget(ap, args):
    if not (args.minutes or args.max_update or getattr(args, "max_epoch", None)):
        ap.error("give a training budget per system: --minutes and/or --max-update"
                 + (" and/or --max-epoch" if hasattr(args, "max_epoch") else ""))


def budget_flags(args):
    flags = []
    if args.minutes:
        flags += ["--stop-time-hours", args.minutes / 60]
    flags += ["--max-update", args.max_update or 10 ** 9]
    if getattr(args, "max_epoch", None):
        flags += ["--max-epoch", args.max_epoch]
    if args.save_interval_updates:
        flags += ["--save-interval-updates", args.save_interval_updates, "--keep-interval-updates", 1]
    return flags


def add_speed_args(gen):
    gen.add_argument("--speed-runs", type=int, default=1,
                     help="batch-size-1 runs averaged (the paper: 3; 0: no batch-size-1 run, speed n/a)")
    gen.add_argument("--speed-sentences", type=int, default=0, metavar="N",
                     help="time batch size 1 on about N test sentences spread over all lengths (every k-th of "
                          "the length-sorted test split, k = ceil(test size / N)) instead of the whole split; "
                          "BLEU always comes from the batched decoding of the whole split (0: whole split)")


def speed_shards(n_test, args):
    """k: batch size 1 is timed on 1 in k test sentences (``--speed-sentences``; 1: all)."""
    return math.ceil(n_test / args.speed_sentences) if args.speed_sentences else 1


def batch1_speed(data, flags, path, out_file, n_ref, args, env=None):
    """fairseq's sentences/s at batch size 1 averaged over ``--speed-runs`` runs (None for 0):
    on the whole test split or, with ``--speed-sentences N``, on shard 0 of k = ceil(n / N) of
    it. fairseq-generate shards its batches by ``--distributed-world-size`` / ``--distributed-rank``
    (batches 0, k, 2k, ... of the length-sorted split; at batch size 1 one sentence each), so the
    sample spans every length and each of its sentences must get a hypothesis."""
    if not args.speed_runs:
        return None
    k = speed_shards(n_ref, args)
    shard = ["--distributed-world-size", k, "--distributed-rank", 0] if k > 1 else []
    runs = [generate(data, [*flags, *shard], path, 1, out_file, math.ceil(n_ref / k), args, env)
            for _ in range(args.speed_runs)]
    return sum(runs) / len(runs)


def speed_note(args, n_test):
    """What the batch-size-1 column measured, for the note under a table."""
    if not args.speed_runs:
        return "batch-1 speed not measured (--speed-runs 0)"
    k = speed_shards(n_test, args)
    sample = (f"{math.ceil(n_test / k)} test sentences, 1 in {k} of the {n_test} sorted by length" if k > 1
              else f"all {n_test} test sentences")
    return f"batch-1 speed on {sample}, {args.speed_runs} run(s) averaged"


def device_flags(args):
    import torch

    return ["--cpu"] if args.cpu or not torch.cuda.is_available() else []


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def cached(path, compute, redo=False):
    """The JSON at ``path`` if an earlier run wrote it, else ``compute()`` written there."""
    if os.path.exists(path) and not redo:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    obj = compute()
    write_json(path, obj)
    return obj


def checkpoint_state(path):
    """Updates done, training minutes spent and best validation loss, from a fairseq checkpoint."""
    from ..checkpoints import load_torch_file  # the safe loader: runs no code from the file

    state = load_torch_file(path, mmap=True)
    extra = state.get("extra_state") or {}
    history = state.get("optimizer_history") or [{}]
    best = extra.get("best")
    return {"updates": int(history[-1].get("num_updates", 0)),
            "train_minutes": round(float(extra.get("previous_training_time", 0.0)) / 60, 2),
            "best_valid_loss": float(best) if best is not None else float("nan")}


def budget_spent(state, args):
    return bool((args.max_update and state["updates"] >= args.max_update)
                or (args.minutes and state["train_minutes"] >= args.minutes))


def train(save, data, flags, args, env=None):
    """``fairseq-plm-train`` for one system into ``save`` (resumed from its checkpoint_last.pt),
    once: the summary (parameters, updates, minutes, best valid loss) is cached in trained.json."""
    os.makedirs(save, exist_ok=True)

    last, log = os.path.join(save, "checkpoint_last.pt"), os.path.join(save, "train.log")

    def run():
        # a run killed after its last checkpoint but before trained.json: fairseq would do one more update
        if not (os.path.exists(last) and budget_spent(checkpoint_state(last), args)):
            run_cli("fairseq-plm-train", data, *flags, *budget_flags(args), "--seed", args.seed, "--save-dir", save,
                    "--no-epoch-checkpoints", "--num-workers", "0", "--no-progress-bar", "--log-format", "simple",
                    "--log-interval", args.log_interval, "--log-file", log, *device_flags(args),
                    *shlex.split(args.train_extra), env=env)
        with open(log, encoding="utf-8") as f:  # every run of this system appended to it
            # "num. model params" (older fairseq) or "num. shared model params" (+ "expert", 0 here)
            m = re.findall(r"num\. (?:shared )?model params: ([\d,]+) \(num\. trained: ([\d,]+)\)", f.read())
        params, trained = (int(x.replace(",", "")) for x in m[-1])
        return {"params": params, "trained_params": trained, **checkpoint_state(last)}

    return cached(os.path.join(save, "trained.json"), run)


def speed(value):
    """A sentences/s cell of the comparison tables."""
    return "n/a" if value is None else f"{value:.2f}"


def relative_speed(row, reference):
    """Batch-1 speed of ``row`` relative to ``reference`` (the table's baseline row), or n/a."""
    if not reference or not row["sent_per_s_bs1"] or not reference["sent_per_s_bs1"]:
        return "n/a"
    return f"{row['sent_per_s_bs1'] / reference['sent_per_s_bs1']:.2f}x"


def count_lines(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def generate(data, flags, path, batch_size, out_file, n_expected, args, env=None):
    """Decode the test split into ``out_file`` with ``fairseq-plm-generate``; fairseq's
    sentences/s, after checking that every test sentence got a hypothesis."""
    p = run_cli("fairseq-plm-generate", data, *flags, "--path", path, "--gen-subset", "test", "--batch-size",
                batch_size, "--required-batch-size-multiple", "1", *device_flags(args),
                *shlex.split(args.gen_extra), env=env)
    tmp = out_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(p.stdout)
    os.replace(tmp, out_file)
    n_hyp = len(set(re.findall(r"^H-(\d+)\t", p.stdout, flags=re.M)))
    if n_hyp != n_expected:
        raise SystemExit(f"{n_hyp} of {n_expected} test sentences translated ({out_file})")
    speed = re.search(r"Translated [\d,]+ sentences .*?\(([\d.]+) sentences/s", p.stdout + p.stderr)
    return float(speed.group(1))


def score(gen_out, ref, metrics=("bleu",)):
    """``fairseq-plm-score`` (in this process) on the detokenized output against raw references:
    {"bleu": .., "signature": .., "meteor": ..}; a metric whose packages are missing is None."""
    from ..cli import score as score_cli

    out = {}
    for metric in metrics:
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                score_cli.main(["--generate-output", gen_out, "--ref", ref, "--metric", metric])
        except SystemExit as e:  # ROUGE-L / METEOR without requirements-eval.txt
            if metric == "bleu":
                raise
            out[metric], out[f"{metric}_note"] = None, str(e)
            continue
        m = re.search(r"^\S+ = ([\d.]+) \(.*?\) \| (.+)$", buf.getvalue(), flags=re.M)
        out[metric] = float(m.group(1))
        out["signature" if metric == "bleu" else f"{metric}_signature"] = m.group(2)
    return out
