"""Deep fusion against a fairseq-native Transformer-12-style baseline on the same data and
time budget, in one table (Table 1 of "Deep Fusing Pre-trained Models into NMT" in small).

    python -m fairseq_plm.recipes.fusion_compare --plm PTM_DIR --out OUT --minutes 6 \\
        [--raw RAW -s en -t de] [--fusion-layers 2] [--decoder-embed-dim D] [--nmt-vocab 8000]

PTM_DIR is a bidirectional encoder (mBERT or XLM-R, HuggingFace or fairseq format). Steps:

1. corpus: without ``--raw``, English-German pairs from this machine's gettext catalogs
   (``/usr/share/locale/de/LC_MESSAGES/*.mo``, deduplicated, split by a hash of the English
   side: ``--test-size`` test and valid pairs, the rest train) in OUT/raw;
2. one ``fairseq-preprocess --task fusion_translation`` run (OUT/data-fusion): the source
   tokenized by the PTM's tokenizer (``fairseq-plm-encode``, ``--srcdict PTM``), the target in
   the NMT's own sentencepiece vocabulary (``--nmt-vocab`` pieces trained on train.TGT;
   ``--nwordstgt 30000`` caps it as the paper). The baseline reads the same pieces with
   fairseq's ``translation`` task (OUT/data-baseline: its own source dictionary built from
   the source pieces, the fusion data's target dictionary), so both systems see the same
   tokens and are detokenized the same way;
3. trains, each for the same budget (``--minutes`` = fairseq's ``--stop-time-hours``, and/or
   ``--max-update``), the same optimizer (Adam, inverse-sqrt, ``--lr``), label smoothing 0.1,
   dropout 0.1, ``--max-tokens``:

   fusion    ``--arch deep_fusion --plm PTM --fusion-layers M`` (decoder: PTM layers / M layers
             of width ``--decoder-embed-dim``, default the PTM's width as mBERT/768 in the
             paper), ``--criterion deep_fusion_loss`` (L_T + L_TWP + L_TSP + L_MLM)
   baseline  ``--task translation --arch transformer``, Transformer-12 style scaled to the
             fusion decoder: ``--baseline-encoder-layers`` (12) encoder layers and as many
             decoder layers as the fusion decoder (the paper's Transformer-12: 12 + 6, with
             mBERT M=2: 6), the fusion decoder's width, FFN and heads, shared decoder
             input/output embeddings (as the fusion decoder);
4. translates the test set with beam 4 (the paper) from checkpoint_best.pt and prints one
   table: system, parameters (all / trained, from fairseq-train's log), updates done in the
   budget, best valid loss, and BLEU (sacrebleu through fairseq-plm-score on the detokenized
   output against RAW/test.TGT). Also OUT/results.{md,json}.

OUT is reused: a second run resumes each system from its checkpoint_last.pt (fairseq's
default); use a fresh OUT for a fresh comparison.
"""

import argparse
import contextlib
import io
import os
import re
import shlex
import time

from .common import run_cli, write_results

SYSTEMS = ("fusion", "baseline")


def say(msg):
    print(f"[fusion_compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = ap.add_argument_group("data")
    data.add_argument("--plm", required=True, help="the PTM: mBERT or XLM-R directory")
    data.add_argument("--out", required=True, help="working directory (data, checkpoints, outputs)")
    data.add_argument("--raw", help="directory with {train,valid,test}.{SRC,TGT}; default: gettext En-De")
    data.add_argument("-s", "--source-lang", default="en")
    data.add_argument("-t", "--target-lang", default="de")
    data.add_argument("--test-size", type=int, default=500, help="gettext corpus: test (and valid) pairs")
    data.add_argument("--nmt-vocab", type=int, default=8000, help="target sentencepiece vocabulary size")
    data.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of: fusion, baseline")
    budget = ap.add_argument_group("training budget, per system (at least one)")
    budget.add_argument("--minutes", type=float, help="wall-clock training time (fairseq --stop-time-hours)")
    budget.add_argument("--max-update", type=int)
    opt = ap.add_argument_group("optimization (both systems)")
    opt.add_argument("--lr", type=float, default=5e-4, help="Adam peak lr (paper: 1e-4 for a long GPU run)")
    opt.add_argument("--warmup-updates", type=int, default=200)
    opt.add_argument("--max-tokens", type=int, default=4096)
    opt.add_argument("--dropout", type=float, default=0.1)
    opt.add_argument("--seed", type=int, default=1)
    model = ap.add_argument_group("models")
    model.add_argument("--fusion-layers", type=int, default=2, help="M (paper default 2)")
    model.add_argument("--decoder-embed-dim", type=int, help="decoder width (default: the PTM's hidden size)")
    model.add_argument("--decoder-ffn-embed-dim", type=int, help="default: 4 x width")
    model.add_argument("--decoder-attention-heads", type=int, help="default: the PTM's heads")
    model.add_argument("--baseline-encoder-layers", type=int, default=12, help="Transformer-12: 12")
    model.add_argument("--baseline-decoder-layers", type=int,
                       help="default: the fusion decoder's depth N = PTM layers / M")
    gen = ap.add_argument_group("generation")
    gen.add_argument("--beam", type=int, default=4)
    gen.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cpu", action="store_true", help="train and decode on the CPU even if CUDA is available")
    ap.add_argument("--train-extra", default="", help="extra fairseq-train flags for both systems (one string)")
    args = ap.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not args.systems or any(s not in SYSTEMS for s in args.systems):
        ap.error(f"--systems: choose from {', '.join(SYSTEMS)}")
    if not (args.minutes or args.max_update):
        ap.error("give a training budget: --minutes and/or --max-update")
    args.out, args.plm = os.path.abspath(args.out), os.path.abspath(args.plm)
    args.raw = os.path.abspath(args.raw) if args.raw else None
    return args


# ----------------------------------------------------------------------------- data

def make_corpus(args):
    raw = os.path.join(args.out, "raw")
    if args.raw:
        return args.raw
    if not os.path.exists(os.path.join(raw, f"test.{args.target_lang}")):
        from ..data.gettext_corpus import read_catalogs, split_pairs, write_splits

        if (args.source_lang, args.target_lang) != ("en", "de"):
            raise SystemExit("fusion_compare: the built-in gettext corpus is en-de; pass --raw for other pairs")
        pairs = read_catalogs("de")
        splits = split_pairs(pairs, valid=args.test_size, test=args.test_size)
        write_splits(splits, raw)
        say(f"gettext En-De: {len(pairs)} pairs; train {len(splits['train'])}, valid {len(splits['valid'])}, "
            f"test {len(splits['test'])} -> {raw}")
    return raw


def prepare_data(args, raw):
    import sentencepiece as spm

    src, tgt = args.source_lang, args.target_lang
    tok, fusion, base = (os.path.join(args.out, d) for d in ("tok", "data-fusion", "data-baseline"))
    splits = ("train", "valid", "test")
    os.makedirs(tok, exist_ok=True)
    say(f"source: {os.path.basename(args.plm)}'s tokenizer (fairseq-plm-encode) -> {tok}")
    run_cli("fairseq-plm-encode", "--tokenizer", args.plm, "--inputs", *[os.path.join(raw, f"{s}.{src}") for s in splits],
            "--outputs", *[os.path.join(tok, f"{s}.{src}") for s in splits])
    prefix = os.path.join(args.out, f"nmt-{tgt}")
    if not os.path.exists(prefix + ".model"):
        say(f"target: sentencepiece, {args.nmt_vocab} pieces, trained on train.{tgt}")
        spm.SentencePieceTrainer.train(input=os.path.join(raw, f"train.{tgt}"), model_prefix=prefix,
                                       vocab_size=args.nmt_vocab, model_type="unigram", character_coverage=1.0,
                                       minloglevel=2)
    sp = spm.SentencePieceProcessor()
    sp.Load(prefix + ".model")
    for s in splits:
        with open(os.path.join(raw, f"{s}.{tgt}"), encoding="utf-8") as fin, \
                open(os.path.join(tok, f"{s}.{tgt}"), "w", encoding="utf-8") as fout:
            for line in fin:
                fout.write(" ".join(sp.EncodeAsPieces(line.strip())) + "\n")
    prefs = ["--trainpref", f"{tok}/train", "--validpref", f"{tok}/valid", "--testpref", f"{tok}/test"]
    if not os.path.exists(os.path.join(fusion, f"dict.{tgt}.txt")):
        say(f"fairseq-preprocess --task fusion_translation --srcdict PTM --nwordstgt 30000 -> {fusion}")
        run_cli("fairseq-plm-preprocess", "--task", "fusion_translation", "-s", src, "-t", tgt, *prefs,
                "--srcdict", args.plm, "--nwordstgt", "30000", "--destdir", fusion, "--workers", args.workers)
    if "baseline" in args.systems and not os.path.exists(os.path.join(base, f"dict.{tgt}.txt")):
        say(f"fairseq-preprocess --task translation (same pieces, the same target dictionary) -> {base}")
        run_cli("fairseq-preprocess", "--task", "translation", "-s", src, "-t", tgt, *prefs,
                "--tgtdict", os.path.join(fusion, f"dict.{tgt}.txt"), "--destdir", base, "--workers", args.workers)
    return {"fusion": fusion, "baseline": base}, prefix + ".model"


# ----------------------------------------------------------------------------- systems

def ptm_shape(plm):
    from ..plm.loading import config_from_hf, load_plm

    hf = os.path.join(plm, "config.json")
    c = config_from_hf(hf) if os.path.exists(hf) else load_plm(plm, random_init=True).cfg
    return c.num_layers, c.hidden_size, c.num_heads


def sizes(args):
    layers, hidden, heads = ptm_shape(args.plm)
    d = args.decoder_embed_dim or hidden
    return dict(layers=layers, n=layers // args.fusion_layers, d=d, ffn=args.decoder_ffn_embed_dim or 4 * d,
                heads=args.decoder_attention_heads or heads)


def system_flags(name, args):
    z = sizes(args)
    common = ["--decoder-embed-dim", z["d"], "--decoder-ffn-embed-dim", z["ffn"],
              "--decoder-attention-heads", z["heads"], "--dropout", args.dropout, "--attention-dropout", "0.1",
              "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", args.lr, "--lr-scheduler",
              "inverse_sqrt", "--warmup-updates", args.warmup_updates, "--warmup-init-lr", "1e-7",
              "--label-smoothing", "0.1", "--share-decoder-input-output-embed"]
    if name == "fusion":
        return ["--task", "fusion_translation", "--arch", "deep_fusion", "--plm", args.plm, "--fusion-layers",
                args.fusion_layers, "--criterion", "deep_fusion_loss", *common]
    return ["--task", "translation", "--arch", "transformer", "--encoder-layers", args.baseline_encoder_layers,
            "--decoder-layers", args.baseline_decoder_layers or z["n"], "--encoder-embed-dim", z["d"],
            "--encoder-ffn-embed-dim", z["ffn"], "--encoder-attention-heads", z["heads"],
            "--criterion", "label_smoothed_cross_entropy", *common]


def device_flags(args):
    import torch

    return ["--cpu"] if args.cpu or not torch.cuda.is_available() else []


def train(name, args, data, save):
    budget = []
    if args.minutes:
        budget += ["--stop-time-hours", args.minutes / 60]
    budget += ["--max-update", args.max_update or 10 ** 9]
    os.makedirs(save, exist_ok=True)
    p = run_cli("fairseq-plm-train", data, *system_flags(name, args), "-s", args.source_lang, "-t",
                args.target_lang, *budget, "--max-tokens", args.max_tokens, "--seed", args.seed,
                "--save-dir", save, "--no-epoch-checkpoints", "--num-workers", "0", "--no-progress-bar",
                "--log-format", "simple", "--log-interval", "50", "--log-file", os.path.join(save, "train.log"),
                *device_flags(args), *shlex.split(args.train_extra), env={"PYTHONWARNINGS": "ignore"})
    log = p.stdout + p.stderr
    m = re.search(r"num\. (?:shared )?model params: ([\d,]+) \(num\. trained: ([\d,]+)\)", log)
    updates = re.findall(r"num_updates (\d+)", log)
    valid = re.findall(r"valid on 'valid' subset.*?\| loss ([\d.]+)", log)
    return {"params": int(m.group(1).replace(",", "")), "trained_params": int(m.group(2).replace(",", "")),
            "updates": int(updates[-1]) if updates else 0,
            "best_valid_loss": min(map(float, valid)) if valid else float("nan")}


def generate(name, args, data, save, out_file):
    task = "fusion_translation" if name == "fusion" else "translation"
    p = run_cli("fairseq-plm-generate", data, "--task", task, "-s", args.source_lang, "-t", args.target_lang,
                "--path", os.path.join(save, "checkpoint_best.pt"), "--gen-subset", "test", "--beam", args.beam,
                "--max-len-a", "1.2", "--max-len-b", "10", "--batch-size", args.batch_size,
                "--required-batch-size-multiple", "1", "--remove-bpe", "sentencepiece", *device_flags(args),
                env={"PYTHONWARNINGS": "ignore"})
    with open(out_file, "w", encoding="utf-8") as f:
        f.write(p.stdout)
    return p


def bleu(args, raw, gen_out):
    from ..cli import score

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        score.main(["--generate-output", gen_out, "--ref", os.path.join(raw, f"test.{args.target_lang}")])
    m = re.search(r"^BLEU = ([\d.]+) \(.*?\) \| (\S+)", buf.getvalue(), flags=re.M)
    return float(m.group(1)), m.group(2)


def label(name, args):
    z = sizes(args)
    if name == "fusion":
        return (f"Deep fusion (PTM {z['layers']} layers, M={args.fusion_layers}, decoder {z['n']}x d{z['d']}, "
                f"L_T+TWP+TSP+MLM)")
    return (f"Transformer-12 style ({args.baseline_encoder_layers} enc + "
            f"{args.baseline_decoder_layers or z['n']} dec, d{z['d']})")


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    raw = make_corpus(args)
    data, _ = prepare_data(args, raw)
    rows = []
    for name in args.systems:
        save = os.path.join(args.out, name)
        say(f"{name}: train {label(name, args)}; log {os.path.join(save, 'train.log')}")
        row = {"system": name, "label": label(name, args), **train(name, args, data[name], save)}
        say(f"{name}: translate the test set (beam {args.beam})")
        gen_out = os.path.join(save, "gen-test.out")
        generate(name, args, data[name], save, gen_out)
        row["bleu"], row["signature"] = bleu(args, raw, gen_out)
        rows.append(row)
    lines = ["| system | params (all) | params (trained) | updates | best valid loss | BLEU |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['params']:,} | {r['trained_params']:,} | {r['updates']:,} | "
                     f"{r['best_valid_loss']:.3f} | {r['bleu']:.2f} |")
    n_test = sum(1 for _ in open(os.path.join(raw, f"test.{args.target_lang}"), encoding="utf-8"))
    budget = " and ".join(x for x in (f"{args.minutes:g} min" if args.minutes else "",
                                      f"{args.max_update} updates" if args.max_update else "") if x)
    note = (f"{args.source_lang}->{args.target_lang}, {n_test} test sentences; budget {budget} per system; "
            f"BLEU: sacrebleu {rows[0]['signature']} on the detokenized beam-{args.beam} output of "
            f"checkpoint_best.pt; valid loss: label-smoothed translation loss (base 2)")
    text = "\n".join(lines)
    write_results(args.out, text, note, rows, args)
    say(f"done in {(time.time() - t0) / 60:.1f} min; {os.path.join(args.out, 'results.md')}")


if __name__ == "__main__":
    main()
