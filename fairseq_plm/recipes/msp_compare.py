"""MSP against its baselines on one dataset, in one table (MSP Tables 1 and 5 in small).

    python -m fairseq_plm.recipes.msp_compare --plm PLM --out OUT --minutes M \\
        [--raw RAW -s SRC -t TGT] [--systems msp,prompt_tuning,...] [--jobs 2]

Every system is trained for the same wall-clock budget (``--minutes`` per system, fairseq's
``--stop-time-hours``) on the same data and tokenization, with ``--threads`` CPU threads each
(1 by default; ``--jobs`` systems at a time, so each has the same compute whatever runs beside
it), then translates the whole test split:

  msp                 MSP (encoding, re-encoding and decoding stages; Tan et al. 2022)  lr 0.02
  prompt_tuning       prompt tuning (virtual tokens at the embedding layer)             lr 0.02
  prefix_tuning       prefix-tuning (MLP-reparameterized deep prompts)                  lr 7e-4
  single_stage        Table 5: single-stage prompting                                   lr 0.02
  two_stage           Table 5: encoding + decoding stages                               lr 0.02
  msp_2nd_reencoding  Table 5: + 2nd re-encoding                                        lr 0.02
  msp_prompt_sharing  Table 5: one prompt for every stage                               lr 0.02
  transformer         fairseq's own ``transformer`` trained from scratch: 3+3 layers, d=256,
                      4 heads, FFN 1024, dropout 0.1, shared embeddings, lr 1e-3; fairseq's
                      dictionary over the same sentencepiece pieces (``--joined-dictionary``)
  copy                the source sentence as the translation (no training)

Learning rates are the paper's (§4.1: 0.02 for MSP and prompt tuning, 7e-4 for prefix-tuning);
the paper's 4K warm-up steps are scaled to a short budget (``--warmup-updates``, default 200,
the same for every system). Adam (0.9, 0.98), inverse-sqrt schedule, label smoothing 0.1,
``--max-tokens`` per batch, the best checkpoint by valid loss. Decoding: beam 4 with
``--max-len-a 1.5 --max-len-b 10``; length penalty 0.0 for the prompting methods (the paper's,
for every pair but En-Zh) and fairseq's default 1.0 for the Transformer.

Data: ``--raw`` with ``{train,valid,test}.{SRC,TGT}``, or by default the gettext En-De corpus of
the quickstart (``/usr/share/locale/de``; the demo PLMs never saw its valid/test sentences).
Everything is tokenized with the PLM's sentencepiece model (``fairseq-plm-encode``).

Outputs: OUT/<system>/ (train.log, checkpoints, gen-test.out), OUT/results.{md,json}. A rerun
with the same OUT skips finished systems and continues unfinished ones from their
``checkpoint_last.pt`` (fairseq counts the training time already spent toward the budget).
``--speed`` also times decoding at batch size 1 and at ``--batch-size``, one system at a time.
"""

import argparse
import contextlib
import io
import json
import os
import random
import re
import subprocess
import time

from ..data.gettext_corpus import read_catalogs, split_pairs, write_splits
from .common import BIN, encode_and_binarize, run_cli, write_results

PROMPT_SYSTEMS = {  # name -> (label, arch, learning rate)
    "msp": ("MSP", "msp", 0.02),
    "prompt_tuning": ("Prompt tuning", "prompt_tuning", 0.02),
    "prefix_tuning": ("Prefix-tuning", "prefix_tuning", 7e-4),
    "single_stage": ("Single-stage (Table 5)", "msp_single_stage", 0.02),
    "two_stage": ("Two-stage (Table 5)", "msp_two_stage", 0.02),
    "msp_2nd_reencoding": ("MSP + 2nd re-encoding (Table 5)", "msp_2nd_reencoding", 0.02),
    "msp_prompt_sharing": ("MSP + prompt sharing (Table 5)", "msp_prompt_sharing", 0.02),
}
TRANSFORMER = dict(encoder_layers=3, decoder_layers=3, encoder_embed_dim=256, decoder_embed_dim=256,
                   encoder_ffn_embed_dim=1024, decoder_ffn_embed_dim=1024, encoder_attention_heads=4,
                   decoder_attention_heads=4, dropout=0.1)
SYSTEMS = list(PROMPT_SYSTEMS) + ["transformer", "copy"]
LABELS = {**{k: v[0] for k, v in PROMPT_SYSTEMS.items()}, "transformer": "Transformer from scratch",
          "copy": "copy the source"}


def say(msg, prog="msp_compare"):
    print(f"[{prog} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def add_args(ap, systems_default):
    data = ap.add_argument_group("data")
    data.add_argument("--plm", required=True, help="causal PLM directory (GPT-2 family, HuggingFace format, "
                                                   "with its spiece.model), e.g. examples/plms/tiny-mgpt")
    data.add_argument("--raw", help="directory with raw {train,valid,test}.{SRC,TGT}; default: the gettext "
                                    "En-De corpus (quickstart split)")
    data.add_argument("-s", "--source-lang", default="en")
    data.add_argument("-t", "--target-lang", default="de")
    data.add_argument("--test-size", type=int, default=200, help="gettext corpus: valid and test sentences")
    data.add_argument("--out", required=True, help="working directory (data, checkpoints, outputs)")
    ap.add_argument("--systems", default=systems_default, help=f"comma list of: {', '.join(SYSTEMS)}")
    budget = ap.add_argument_group("budget (the same for every system)")
    budget.add_argument("--minutes", type=float, required=True,
                        help="wall-clock training time per system (fairseq --stop-time-hours)")
    budget.add_argument("--jobs", type=int, default=2, help="systems trained at the same time")
    budget.add_argument("--threads", type=int, default=1, help="CPU threads per system")
    opt = ap.add_argument_group("optimization (every system)")
    opt.add_argument("--max-tokens", type=int, default=4096)
    opt.add_argument("--warmup-updates", type=int, default=200)
    opt.add_argument("--prompt-length", type=int, default=32, help="prompt length of every prompting method")
    opt.add_argument("--seed", type=int, default=1)
    opt.add_argument("--output-shortlist", default="none", metavar="none|auto|FILE",
                     help="prompting methods: score only the target side's pieces in training and decoding "
                          "(fairseq_plm/plm/shortlist.py); auto: the pieces of the training targets")
    gen = ap.add_argument_group("decoding")
    gen.add_argument("--beam", type=int, default=4)
    gen.add_argument("--batch-size", type=int, default=32, help="batched decoding")
    gen.add_argument("--speed", action="store_true", help="also time decoding at batch 1 and --batch-size")
    ap.add_argument("--cpu", action="store_true", help="train and decode on the CPU even if CUDA is available")


def check_args(ap, args):
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown or not args.systems:
        ap.error(f"--systems: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(SYSTEMS)}")
    if args.minutes <= 0 or args.jobs < 1 or args.threads < 1:
        ap.error("--minutes, --jobs and --threads must be positive")
    if not os.path.exists(os.path.join(args.plm, "config.json")):
        ap.error(f"--plm {args.plm}: no config.json (a HuggingFace-format GPT-2 directory is needed)")
    if args.raw:
        for split in ("train", "valid", "test"):
            for lang in (args.source_lang, args.target_lang):
                if not os.path.exists(os.path.join(args.raw, f"{split}.{lang}")):
                    ap.error(f"--raw: missing {os.path.join(args.raw, f'{split}.{lang}')}")
    args.out, args.plm = os.path.abspath(args.out), os.path.abspath(args.plm)
    args.raw = os.path.abspath(args.raw) if args.raw else os.path.join(args.out, "raw")
    return args


# ----------------------------------------------------------------------------- data

def gettext_corpus(raw, test_size, src="en", tgt="de"):
    """The quickstart's En-De corpus from the gettext catalogs into ``raw``; returns its sizes."""
    pairs = read_catalogs(tgt)
    splits = split_pairs(pairs, valid=test_size, test=test_size)
    write_splits(splits, raw, src, tgt)
    return {name: len(rows) for name, rows in splits.items()}


def prepare_data(args, prog="msp_compare"):
    """OUT/data-plm (PLM ids, for the prompting methods) and OUT/data-plain (a fairseq dictionary
    over the same pieces, for the Transformer); skipped when already there."""
    src, tgt = args.source_lang, args.target_lang
    if not os.path.exists(os.path.join(args.raw, f"test.{tgt}")):
        sizes = gettext_corpus(args.raw, args.test_size, src, tgt)
        say(f"gettext {src}-{tgt} corpus: train {sizes['train']}, valid {sizes['valid']}, test {sizes['test']} "
            f"sentence pairs (split by a hash of the English side)", prog)
    tok, plm_data, plain = (os.path.join(args.out, d) for d in ("tok", "data-plm", "data-plain"))
    if not os.path.exists(os.path.join(plm_data, f"test.{src}-{tgt}.{tgt}.bin")):
        encode_and_binarize(args.raw, args.plm, tok, plm_data, src=src, tgt=tgt, workers=1)
    if "transformer" in args.systems and not os.path.exists(os.path.join(plain, f"test.{src}-{tgt}.{tgt}.bin")):
        run_cli("fairseq-preprocess", "-s", src, "-t", tgt, "--trainpref", f"{tok}/train", "--validpref",
                f"{tok}/valid", "--testpref", f"{tok}/test", "--joined-dictionary", "--destdir", plain)
    return {"plm": plm_data, "plain": plain}


# ----------------------------------------------------------------------------- systems

def device_flags(args):
    import torch

    return ["--cpu"] if args.cpu or not torch.cuda.is_available() else []


def train_command(name, args, paths):
    save = os.path.join(args.out, name)
    common = ["-s", args.source_lang, "-t", args.target_lang, "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
              "--lr-scheduler", "inverse_sqrt", "--warmup-updates", args.warmup_updates, "--warmup-init-lr", "1e-7",
              "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
              "--max-tokens", args.max_tokens, "--stop-time-hours", args.minutes / 60, "--max-update", 10 ** 7,
              "--save-dir", save, "--no-epoch-checkpoints", "--seed", args.seed, "--num-workers", "0",
              "--log-format", "simple", "--log-interval", "10", "--no-progress-bar", *device_flags(args)]
    if name == "transformer":
        sizes = [a for k, v in TRANSFORMER.items() for a in ("--" + k.replace("_", "-"), v)]
        flags = [paths["plain"], "--task", "translation", "--arch", "transformer", *sizes, "--share-all-embeddings",
                 "--adam-eps", "1e-8", "--lr", 1e-3, "--required-batch-size-multiple", "1"]
    else:
        _, arch, lr = PROMPT_SYSTEMS[name]
        flags = [paths["plm"], "--task", "plm_translation", "--arch", arch, "--plm", args.plm,
                 "--prompt-length", args.prompt_length, "--adam-eps", "1e-9", "--lr", lr,
                 "--output-shortlist", getattr(args, "output_shortlist", "none")]
    return [os.path.join(BIN, "fairseq-plm-train"), *map(str, flags + common)], save


def generate_command(name, args, paths, batch_size):
    path = os.path.join(args.out, name, "checkpoint_best.pt")
    if name == "transformer":
        flags = [paths["plain"], "--task", "translation", "--lenpen", "1.0"]
    else:
        flags = [paths["plm"], "--task", "plm_translation", "--lenpen", "0.0"]
    flags += ["-s", args.source_lang, "-t", args.target_lang, "--path", path, "--gen-subset", "test",
              "--beam", args.beam, "--max-len-a", "1.5", "--max-len-b", "10", "--batch-size", batch_size,
              "--required-batch-size-multiple", "1", "--bpe", "sentencepiece",
              "--sentencepiece-model", os.path.join(args.plm, "spiece.model"), *device_flags(args)]
    return [os.path.join(BIN, "fairseq-plm-generate"), *map(str, flags)]


def _env(args):
    return dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                PYTHONWARNINGS="ignore")


def log_stats(path):
    """(trained parameters, updates reached, last valid loss) from a fairseq-train log."""
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except FileNotFoundError:
        return None, 0, None
    trained = re.search(r"num\. trained: ([\d,]+)", text)
    updates = re.findall(r"num_updates (\d+)", text)
    valid = re.findall(r"\| valid on 'valid' subset \| loss ([\d.]+)", text)
    return (int(trained.group(1).replace(",", "")) if trained else None, int(updates[-1]) if updates else 0,
            float(valid[-1]) if valid else None)


def run_parallel(jobs, args, prog, report_every=30.0):
    """Run ``jobs`` (name -> (argv, log path, done marker)) ``args.jobs`` at a time; print a
    progress line every ``report_every`` seconds; raise with the log tail of a failed job."""
    pending, running = list(jobs), {}
    last = time.time()
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            argv, log_path, marker = jobs[name]
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            log = open(log_path, "a", encoding="utf-8")
            running[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(args)), log,
                             log_path, marker)
        time.sleep(2)
        for name, (proc, log, log_path, marker) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode != 0:
                for p, *_ in running.values():
                    p.terminate()
                tail = open(log_path, encoding="utf-8", errors="replace").read().splitlines()[-30:]
                raise SystemExit("\n".join(tail) + f"\n[{prog}] {name} failed (exit {proc.returncode}); "
                                                   f"log: {log_path}")
            open(marker, "w").close()
        if running and time.time() - last >= report_every:
            last = time.time()
            parts = []
            for name, (_, _, log_path, _) in running.items():
                _, updates, valid = log_stats(log_path)
                parts.append(f"{LABELS[name]}: {updates} updates" + (f", valid loss {valid:.2f}" if valid else ""))
            say(" | ".join(parts), prog)


def train_all(args, paths, prog="msp_compare"):
    jobs = {}
    for name in args.systems:
        if name == "copy":
            continue
        argv, save = train_command(name, args, paths)
        marker = os.path.join(save, ".trained")
        if not os.path.exists(marker):
            jobs[name] = (argv, os.path.join(save, "train.log"), marker)
    if jobs:
        say(f"training {', '.join(LABELS[n] for n in jobs)}: {args.minutes:g} min each, {args.jobs} at a time, "
            f"{args.threads} thread(s) each", prog)
        run_parallel(jobs, args, prog)


def generate_all(args, paths, prog="msp_compare"):
    """Batched translations of the test split (OUT/<system>/gen-test.out), ``--jobs`` at a time."""
    jobs = {}
    for name in args.systems:
        if name == "copy":
            continue
        out = os.path.join(args.out, name, "gen-test.out")
        if not os.path.exists(out + ".done"):
            if os.path.exists(out):
                os.remove(out)
            jobs[name] = (generate_command(name, args, paths, args.batch_size), out, out + ".done")
    if jobs:
        say(f"translating the test split with {', '.join(LABELS[n] for n in jobs)}", prog)
        run_parallel(jobs, args, prog, report_every=1e9)


def decode_speed(name, args, paths, batch_size):
    """Sentences/s of one decoding run (nothing else of this recipe running)."""
    p = subprocess.run(generate_command(name, args, paths, batch_size), capture_output=True, text=True,
                       env=_env(args))
    if p.returncode != 0:
        raise SystemExit(p.stdout[-2000:] + p.stderr[-3000:])
    m = re.search(r"Translated [\d,]+ sentences .*?\(([\d.]+) sentences/s", p.stdout + p.stderr)
    return float(m.group(1))


def score(args, hyp_args):
    """sacrebleu BLEU and signature through fairseq-plm-score (in this process) against the raw
    references."""
    from ..cli import score as score_cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        score_cli.main([*hyp_args, "--ref", os.path.join(args.raw, f"test.{args.target_lang}")])
    m = re.search(r"^BLEU = ([\d.]+) \(.*?\) \| (\S+)", buf.getvalue(), flags=re.M)
    return float(m.group(1)), m.group(2)


def check_complete(name, args, gen_out):
    n_ref = sum(1 for _ in open(os.path.join(args.raw, f"test.{args.target_lang}"), encoding="utf-8"))
    n_hyp = len(set(re.findall(r"^D-(\d+)\t", open(gen_out, encoding="utf-8").read(), flags=re.M)))
    if n_hyp != n_ref:
        raise SystemExit(f"{name} translated {n_hyp} of {n_ref} test sentences ({gen_out})")


def results(args, paths):
    rows = []
    for name in args.systems:
        if name == "copy":
            b, sig = score(args, ["--hyp", os.path.join(args.raw, f"test.{args.source_lang}")])
            rows.append({"system": name, "label": LABELS[name], "bleu": b, "signature": sig, "trained_params": 0,
                         "updates": 0})
            continue
        gen_out = os.path.join(args.out, name, "gen-test.out")
        check_complete(name, args, gen_out)
        b, sig = score(args, ["--generate-output", gen_out])
        trained, updates, _ = log_stats(os.path.join(args.out, name, "train.log"))
        row = {"system": name, "label": LABELS[name], "bleu": b, "signature": sig, "trained_params": trained,
               "updates": updates}
        rows.append(row)
    if args.speed:
        for row in rows:
            if row["system"] != "copy":
                say(f"timing {row['label']} at batch size 1 and {args.batch_size}")
                row["sent_per_s_bs1"] = decode_speed(row["system"], args, paths, 1)
                row["sent_per_s_batched"] = decode_speed(row["system"], args, paths, args.batch_size)
    return rows


def table(rows, args):
    speed = args.speed
    head = "| system | trained params | updates | BLEU |" + (
        f" sent/s (batch 1) | sent/s (batch {args.batch_size}) |" if speed else "")
    lines = [head, "| --- | ---: | ---: | ---: |" + (" ---: | ---: |" if speed else "")]
    for r in rows:
        line = f"| {r['label']} | {r['trained_params']:,} | {r['updates']:,} | {r['bleu']:.2f} |"
        if speed:
            line += (" - | - |" if r["system"] == "copy" else
                     f" {r['sent_per_s_bs1']:.2f} | {r['sent_per_s_batched']:.2f} |")
        lines.append(line)
    return "\n".join(lines)


def samples(args, names, k=5, seed=0):
    """``k`` test sentences with every system's translation: [(source, reference, {label: hyp})]."""
    src = open(os.path.join(args.raw, f"test.{args.source_lang}"), encoding="utf-8").read().split("\n")
    ref = open(os.path.join(args.raw, f"test.{args.target_lang}"), encoding="utf-8").read().split("\n")
    hyps = {}
    for name in names:
        rows = {}
        for line in open(os.path.join(args.out, name, "gen-test.out"), encoding="utf-8"):
            m = re.match(r"^D-(\d+)\t[^\t]*\t(.*)$", line.rstrip("\n"))
            if m:
                rows[int(m.group(1))] = m.group(2)
        hyps[LABELS[name]] = rows
    ids = sorted(random.Random(seed).sample(range(len(ref) - 1), min(k, len(ref) - 1)))
    return [(src[i], ref[i], {label: h.get(i, "") for label, h in hyps.items()}) for i in ids]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap, ",".join(SYSTEMS))
    args = check_args(ap, ap.parse_args(argv))
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    paths = prepare_data(args)
    train_all(args, paths)
    generate_all(args, paths)
    rows = results(args, paths)
    text = table(rows, args)
    n_test = sum(1 for _ in open(os.path.join(args.raw, f"test.{args.target_lang}"), encoding="utf-8"))
    note = (f"{args.source_lang}->{args.target_lang} test split, {n_test} sentences; PLM {args.plm}; "
            f"{args.minutes:g} min of training per system ({args.threads} CPU thread(s) each, {args.jobs} at a time); "
            f"BLEU: sacrebleu {rows[0]['signature']}")
    write_results(args.out, text, note, rows, args)
    with open(os.path.join(args.out, "samples.json"), "w", encoding="utf-8") as f:
        json.dump(samples(args, [r["system"] for r in rows if r["system"] != "copy"]), f, ensure_ascii=False,
                  indent=1)
    say(f"done in {(time.time() - t0) / 60:.1f} min; {os.path.join(args.out, 'results.md')}")


if __name__ == "__main__":
    main()
