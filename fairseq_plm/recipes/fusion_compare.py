"""Deep fusion against its baselines and ablations, each trained for the same budget, in one
command: Tables 2, 6 and 7 (and the AT/NAT pair of Table 3) of "Deep Fusing Pre-trained
Models into NMT" in small.

    python -m fairseq_plm.recipes.fusion_compare --plm PTM_DIR --out OUT --minutes M \\
        [--raw RAW -s en -t de] [--systems ...] [--fusion-layers 2] [--m-values 1,2,4] [--nat-distill]

PTM_DIR is a bidirectional encoder (mBERT or XLM-R, HuggingFace or fairseq format). Steps:

1. corpus: without ``--raw``, English-German pairs from this machine's gettext catalogs
   (``/usr/share/locale/de/LC_MESSAGES/*.mo``, deduplicated, split by a hash of the English
   side: ``--test-size`` test and valid pairs, the rest train) in OUT/raw;
2. one ``fairseq-preprocess --task fusion_translation`` run (OUT/data-fusion): the source
   tokenized by the PTM's tokenizer (``fairseq-plm-encode``, ``--srcdict PTM``), the target in
   the NMT's own sentencepiece vocabulary (``--nmt-vocab`` pieces trained on train.TGT;
   ``--nwordstgt 30000`` caps it as the paper). The fairseq baselines read the same pieces with
   fairseq's ``translation`` task (OUT/data-baseline: their own source dictionary built from
   the source pieces, the fusion data's target dictionary), so every system sees the same
   tokens and is detokenized the same way;
3. trains every system of ``--systems`` for the same budget (``--minutes`` = fairseq's
   ``--stop-time-hours``, and/or ``--max-update``) with the same optimizer (Adam,
   inverse-sqrt, ``--lr``), label smoothing 0.1, dropout 0.1, ``--max-tokens``:

   fusion        ``--arch deep_fusion --fusion-layers M`` (decoder: PTM layers / M layers of
                 width ``--decoder-embed-dim``, default the PTM's width as mBERT/768 in the
                 paper), ``--criterion deep_fusion_loss`` (L_T + L_TWP + L_TSP + L_MLM)
   fusion_nat    the same encoder with a Mask-Predict decoder, ``--arch deep_fusion_cmlm``
                 (Table 3); trained on the fusion model's distilled training set with
                 ``--nat-distill`` (the paper's Mask-Predict setting; ``fusion_distill``)
   baseline      Transformer-12 style, ``--task translation --arch transformer``:
                 ``--baseline-encoder-layers`` (12) encoder layers and as many decoder layers as
                 the fusion decoder, its width, FFN and heads (Tables 1, 2, 7)
   cmlm          fairseq's Mask-Predict (``--task translation_lev --arch cmlm_transformer_two_vocab``: its
                 own source and target embeddings) with
                 the baseline's sizes (the NAT baseline of Table 3; distilled data too with
                 ``--nat-distill``)
   ptm_init      Table 2 line 2: Transformer-12 whose encoder is the PTM, fine-tuned by
                 translation only (``--arch deep_fusion_mbert_init_encoder``)
   ptm_frozen    Table 2 line 3: the PTM frozen as the encoder (``deep_fusion_frozen_mbert_encoder``)
   no_twp no_tsp no_mlm all_tasks
                 Table 6: fusion with ``--no-twp`` / ``--no-tsp`` / ``--no-mlm`` /
                 ``--ptm-update all_tasks``
   m1 m4 ...     Table 7: fusion with ``--fusion-layers`` k for each k of ``--m-values`` (1, 2, 4)
                 other than M; a k that does not divide the PTM's layers is left out (a note
                 under the table says so)
   not in the default list: no_twp_tsp (-L_TWP -L_TSP), freeze_ptm (``--ptm-update frozen``),
   no_pretraining (``--plm-random-init``), twp_multiset (``--twp-bag multiset``);

4. translates the whole test split from checkpoint_best.pt at batch size 1 (or an evenly
   spread sample of it: ``--speed-sentences``) and at ``--batch-size`` (AT: beam 4, the
   paper; NAT: 10 Mask-Predict iterations, 5 length candidates) and prints one table: parameters (all / trained), updates and training minutes
   reached in the budget, best valid loss, sacrebleu BLEU (``fairseq-plm-score`` on the
   detokenized output against RAW/test.TGT, signature under the table), sentences/s at batch
   size 1, relative to the baseline, and batched. Also OUT/results.{md,json}.

Resuming: rerun the same command; finished systems and decodings are skipped, a killed system
continues from its checkpoint_last.pt with its budget counted from the first run (see
``comparison``). Use a fresh OUT for a fresh comparison.
"""

import argparse
import os
import time

from . import comparison as cmp
from .common import run_cli, write_results

# name -> (label, kind: "fusion" | "baseline", extra deep_fusion flags)
FIXED = {
    "fusion": ("Deep fusion (AT)", "fusion", []),
    "fusion_nat": ("Deep fusion (NAT, Mask-Predict)", "fusion_nat", []),
    "baseline": ("Transformer-12 style", "baseline", []),
    "cmlm": ("Mask-Predict (fairseq CMLM), Transformer-12 sizes", "cmlm", []),
    "ptm_init": ("Transformer-12 + PTM-initialised encoder (fine-tuned)", "fusion",
                 ["--arch", "deep_fusion_mbert_init_encoder"]),
    "ptm_frozen": ("Transformer-12 + frozen PTM encoder", "fusion", ["--arch", "deep_fusion_frozen_mbert_encoder"]),
    "no_twp": ("Deep fusion - L_TWP", "fusion", ["--no-twp"]),
    "no_tsp": ("Deep fusion - L_TSP", "fusion", ["--no-tsp"]),
    "no_mlm": ("Deep fusion - L_MLM", "fusion", ["--no-mlm"]),
    "all_tasks": ("Deep fusion, θ_P optimized by all tasks", "fusion", ["--ptm-update", "all_tasks"]),
}
EXTRA = {
    "no_twp_tsp": ("Deep fusion - L_TWP - L_TSP", "fusion", ["--no-twp", "--no-tsp"]),
    "freeze_ptm": ("Deep fusion, θ_P frozen for all tasks", "fusion", ["--ptm-update", "frozen"]),
    "no_pretraining": ("Deep fusion without pre-training (random PTM)", "fusion", ["--plm-random-init"]),
    "twp_multiset": ("Deep fusion, TWP over the multiset of target words", "fusion", ["--twp-bag", "multiset"]),
}


def say(msg):
    print(f"[fusion_compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = ap.add_argument_group("data and PTM")
    data.add_argument("--plm", required=True, help="the PTM: mBERT or XLM-R directory")
    data.add_argument("--out", required=True, help="working directory (data, checkpoints, outputs); reused = resumed")
    data.add_argument("--raw", help="directory with {train,valid,test}.{SRC,TGT}; default: gettext En-De")
    data.add_argument("-s", "--source-lang", default="en")
    data.add_argument("-t", "--target-lang", default="de")
    data.add_argument("--test-size", type=int, default=500, help="gettext corpus: test (and valid) pairs")
    data.add_argument("--nmt-vocab", type=int, default=8000, help="target sentencepiece vocabulary size")
    data.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    ap.add_argument("--systems", help="comma list of systems (default: every system of Tables 2, 6 and 7 and the "
                                      "AT/NAT pair: fusion, fusion_nat, baseline, cmlm, ptm_init, ptm_frozen, "
                                      "no_twp, no_tsp, no_mlm, all_tasks, m<k>); also: " + ", ".join(EXTRA))
    cmp.add_budget_args(ap)
    opt = ap.add_argument_group("optimization (every system)")
    opt.add_argument("--lr", type=float, default=5e-4, help="Adam peak lr (paper: 1e-4 for a long GPU run)")
    opt.add_argument("--warmup-updates", type=int, default=200)
    opt.add_argument("--max-tokens", type=int, default=4096)
    opt.add_argument("--dropout", type=float, default=0.1)
    opt.add_argument("--seed", type=int, default=1)
    opt.add_argument("--log-interval", type=int, default=50)
    model = ap.add_argument_group("models")
    model.add_argument("--fusion-layers", type=int, default=2, help="M (paper default 2)")
    model.add_argument("--m-values", default="1,2,4", help="Table 7: the M values of the m<k> systems")
    model.add_argument("--decoder-embed-dim", type=int, help="decoder width (default: the PTM's hidden size)")
    model.add_argument("--decoder-ffn-embed-dim", type=int, help="default: 4 x width")
    model.add_argument("--decoder-attention-heads", type=int, help="default: the PTM's heads")
    model.add_argument("--baseline-encoder-layers", type=int, default=12, help="Transformer-12: 12")
    model.add_argument("--baseline-decoder-layers", type=int,
                       help="default: the fusion decoder's depth N = PTM layers / M")
    model.add_argument("--nat-distill", action="store_true",
                       help="train fusion_nat and cmlm on the fusion model's beam-4 translations of the training "
                            "set (the paper's Mask-Predict setting; needs the fusion system; the teacher's "
                            "decoding time is not part of any budget)")
    gen = ap.add_argument_group("generation")
    gen.add_argument("--beam", type=int, default=4, help="AT beam size")
    gen.add_argument("--nat-iterations", type=int, default=10, help="NAT: Mask-Predict iterations (paper: 10)")
    gen.add_argument("--nat-length-beam", type=int, default=5, help="NAT: length candidates (paper: 5)")
    gen.add_argument("--batch-size", type=int, default=64, help="batched decoding (speed at 1 is always measured)")
    cmp.add_speed_args(gen)
    ap.add_argument("--cpu", action="store_true", help="train and decode on the CPU even if CUDA is available")
    ap.add_argument("--train-extra", default="", help="extra fairseq-train flags for every system (one string)")
    ap.add_argument("--gen-extra", default="", help="extra fairseq-generate flags for every system (one string)")
    args = ap.parse_args(argv)
    cmp.check_budget(ap, args)
    args.out, args.plm = os.path.abspath(args.out), os.path.abspath(args.plm)
    args.raw = os.path.abspath(args.raw) if args.raw else None
    try:
        m_values = [int(x) for x in args.m_values.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--m-values {args.m_values}: expected a comma list of integers")
    layers = ptm_shape(args.plm)[0]
    if layers % args.fusion_layers:
        ap.error(f"--fusion-layers {args.fusion_layers} does not divide the PTM's {layers} layers")
    args.m_systems = {f"m{k}": k for k in m_values if k != args.fusion_layers and layers % k == 0}
    args.m_skipped = [k for k in m_values if layers % k]
    default = list(FIXED) + list(args.m_systems)
    known = default + list(EXTRA)
    args.systems = [s.strip() for s in (args.systems or ",".join(default)).split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in known]
    if unknown or not args.systems:
        ap.error(f"--systems: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(known)} "
                 f"(m<k>: k from --m-values dividing the PTM's {layers} layers)")
    if args.nat_distill and "fusion" not in args.systems and any(s in args.systems for s in ("fusion_nat", "cmlm")):
        ap.error("--nat-distill: the fusion system is the teacher; add it to --systems")
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
        write_splits(splits, raw + ".tmp")
        os.replace(raw + ".tmp", raw)
        say(f"gettext En-De: {len(pairs)} pairs; train {len(splits['train'])}, valid {len(splits['valid'])}, "
            f"test {len(splits['test'])} -> {raw}")
    return raw


def prepare_data(args, raw):
    import sentencepiece as spm

    src, tgt = args.source_lang, args.target_lang
    tok, fusion, base = (os.path.join(args.out, d) for d in ("tok", "data-fusion", "data-baseline"))
    splits = ("train", "valid", "test")
    prefs = ["--trainpref", f"{tok}/train", "--validpref", f"{tok}/valid", "--testpref", f"{tok}/test"]
    if not os.path.exists(os.path.join(fusion, ".done")):
        os.makedirs(tok, exist_ok=True)
        say(f"source: {os.path.basename(args.plm)}'s tokenizer (fairseq-plm-encode) -> {tok}")
        run_cli("fairseq-plm-encode", "--tokenizer", args.plm,
                "--inputs", *[os.path.join(raw, f"{s}.{src}") for s in splits],
                "--outputs", *[os.path.join(tok, f"{s}.{src}") for s in splits])
        prefix = os.path.join(args.out, f"nmt-{tgt}")
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
        say(f"fairseq-preprocess --task fusion_translation --srcdict PTM --nwordstgt 30000 -> {fusion}")
        run_cli("fairseq-plm-preprocess", "--task", "fusion_translation", "-s", src, "-t", tgt, *prefs,
                "--srcdict", args.plm, "--nwordstgt", "30000", "--destdir", fusion, "--workers", args.workers)
        open(os.path.join(fusion, ".done"), "w").close()
    if {"baseline", "cmlm"} & set(args.systems) and not os.path.exists(os.path.join(base, ".done")):
        say(f"fairseq-preprocess --task translation (same pieces, the same target dictionary) -> {base}")
        run_cli("fairseq-preprocess", "--task", "translation", "-s", src, "-t", tgt, *prefs,
                "--tgtdict", os.path.join(fusion, f"dict.{tgt}.txt"), "--destdir", base, "--workers", args.workers)
        open(os.path.join(base, ".done"), "w").close()
    return {"fusion": fusion, "fusion_nat": fusion, "baseline": base, "cmlm": base}


def distilled_data(args, data):
    """--nat-distill: the fusion AT model's beam translations of the training set replace the
    training targets of both data directories (fusion_distill; same target dictionary)."""
    from . import fusion_distill

    teacher = os.path.join(args.out, "fusion", "checkpoint_best.pt")
    out = dict(data)
    for kind, task in (("fusion_nat", "fusion_translation"), ("cmlm", "translation")):
        if kind not in args.systems:
            continue
        dest = data[kind] + "-distilled"
        if not os.path.exists(os.path.join(dest, "distill.done")):
            say(f"{kind}: distilled training set from the fusion model (beam {args.beam}) -> {dest}")
        # the teacher reads the fusion data; its hypotheses replace the targets of `kind`'s data
        stats = fusion_distill.distill(data[kind], teacher, dest, teacher_data=data["fusion"],
                                       teacher_task="fusion_translation", beam=args.beam, batch_size=args.batch_size,
                                       cpu=bool(cmp.device_flags(args)),
                                       hypotheses_file=os.path.join(args.out, "fusion", "distilled-train.pieces"))
        if "sentences" in stats:
            say(f"{kind}: {stats}")
        out[kind] = dest
    return out


# ----------------------------------------------------------------------------- systems

def ptm_shape(plm):
    from ..plm.loading import config_from_hf, load_plm

    hf = os.path.join(plm, "config.json")
    c = config_from_hf(hf) if os.path.exists(hf) else load_plm(plm, random_init=True).cfg
    return c.num_layers, c.hidden_size, c.num_heads


def sizes(args, m=None):
    layers, hidden, heads = ptm_shape(args.plm)
    d = args.decoder_embed_dim or hidden
    return dict(layers=layers, hidden=hidden, n=layers // (m or args.fusion_layers), d=d,
                ffn=args.decoder_ffn_embed_dim or 4 * d, heads=args.decoder_attention_heads or heads)


def system(name, args):
    """(label, kind, extra flags) of a system."""
    if name in args.m_systems:
        k = args.m_systems[name]
        return "Deep fusion", "fusion", ["--fusion-layers", k]
    return FIXED.get(name) or EXTRA[name]


def nat_decoding(args):
    return ["--iter-decode-max-iter", args.nat_iterations - 1, "--iter-decode-with-beam", args.nat_length_beam,
            "--iter-decode-eos-penalty", "0"]


def system_flags(name, args):
    """(fairseq-train flags, fairseq-generate flags) of one system, data and budget aside."""
    _, kind, extra = system(name, args)
    z = sizes(args)
    common = ["--decoder-embed-dim", z["d"], "--decoder-ffn-embed-dim", z["ffn"],
              "--decoder-attention-heads", z["heads"], "--dropout", args.dropout, "--attention-dropout", "0.1",
              "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", args.lr, "--lr-scheduler",
              "inverse_sqrt", "--warmup-updates", args.warmup_updates, "--warmup-init-lr", "1e-7",
              "--label-smoothing", "0.1", "--share-decoder-input-output-embed", "--max-tokens", args.max_tokens,
              "-s", args.source_lang, "-t", args.target_lang]
    at_gen = ["--beam", args.beam, "--max-len-a", "1.2", "--max-len-b", "10"]
    baseline_sizes = ["--encoder-layers", args.baseline_encoder_layers,
                      "--decoder-layers", args.baseline_decoder_layers or z["n"], "--encoder-embed-dim", z["d"],
                      "--encoder-ffn-embed-dim", z["ffn"], "--encoder-attention-heads", z["heads"]]
    if kind == "baseline":
        return (["--task", "translation", "--arch", "transformer", *baseline_sizes,
                 "--criterion", "label_smoothed_cross_entropy", *common], ["--task", "translation", *at_gen])
    if kind == "cmlm":  # fairseq's examples/nonautoregressive_translation recipe, baseline sizes
        return (["--task", "translation_lev", "--noise", "random_mask", "--arch", "cmlm_transformer_two_vocab",
                 *baseline_sizes,
                 "--encoder-learned-pos", "--decoder-learned-pos", "--apply-bert-init", "--criterion", "nat_loss",
                 "--weight-decay", "0.01", "--ddp-backend", "legacy_ddp", *common],
                ["--task", "translation_lev", *nat_decoding(args)])
    fusion = ["--task", "fusion_translation", "--plm", args.plm, "--criterion", "deep_fusion_loss", *common]
    if kind == "fusion_nat":
        return (["--arch", "deep_fusion_cmlm", "--fusion-layers", args.fusion_layers, *fusion],
                ["--task", "fusion_translation", *nat_decoding(args)])
    arch = ["--arch", "deep_fusion", "--fusion-layers", args.fusion_layers]
    if "--arch" in extra:  # Table 2 baselines: no coordinator, the fusion decoder's depth
        arch = ["--decoder-layers", z["n"]]
    return [*arch, *extra, *fusion], ["--task", "fusion_translation", *at_gen]


def label(name, args):
    text, kind, extra = system(name, args)
    z = sizes(args, args.m_systems.get(name))
    if kind in ("baseline", "cmlm"):
        return f"{text} ({args.baseline_encoder_layers} enc + {args.baseline_decoder_layers or z['n']} dec, d{z['d']})"
    if "--arch" in extra:
        return f"{text} ({z['layers']} PTM layers + {z['n']} dec, d{z['d']})"
    return f"{text} (M={args.m_systems.get(name, args.fusion_layers)}, decoder {z['n']}x d{z['d']})"


def run_system(name, args, data, raw):
    save = os.path.join(args.out, name)
    _, kind, _ = system(name, args)
    train_flags, gen_flags = system_flags(name, args)
    if not os.path.exists(os.path.join(save, "trained.json")):
        say(f"{name}: train {label(name, args)}; log {os.path.join(save, 'train.log')}")
    trained = cmp.train(save, data[kind], train_flags, args, env={"PYTHONWARNINGS": "ignore"})
    ref = os.path.join(raw, f"test.{args.target_lang}")
    n_ref = cmp.count_lines(ref)
    flags = [*gen_flags, "-s", args.source_lang, "-t", args.target_lang, "--remove-bpe", "sentencepiece"]
    path = os.path.join(save, "checkpoint_best.pt")
    test_data = data[kind]  # (distilled data: only the training targets differ)

    def decode():
        env = {"PYTHONWARNINGS": "ignore"}
        one = cmp.batch1_speed(test_data, flags, path, os.path.join(save, "gen-bs1.out"), n_ref, args, env)
        batched_out = os.path.join(save, "gen-batched.out")
        batched = cmp.generate(test_data, flags, path, args.batch_size, batched_out, n_ref, args, env)
        return {**cmp.score(batched_out, ref), "sent_per_s_bs1": one, "sent_per_s_batched": batched}

    if not os.path.exists(os.path.join(save, "decode-test.json")):
        say(f"{name}: translate the test set at batch size 1 ({args.speed_runs} run(s)) and {args.batch_size}")
    result = cmp.cached(os.path.join(save, "decode-test.json"), decode)
    return {"system": name, "label": label(name, args), "distilled": data[kind].endswith("-distilled"),
            **trained, **result}


def table(rows, args):
    base = next((r for r in rows if r["system"] == "baseline"), None)
    lines = [f"| system | --systems | params (all) | params (trained) | updates | train min | best valid loss | BLEU | "
             f"sent/s (batch 1) | speed vs baseline | sent/s (batch {args.batch_size}) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rel = cmp.relative_speed(r, base)
        lines.append(f"| {r['label']}{' (distilled data)' if r['distilled'] else ''} | {r['system']} | "
                     f"{r['params']:,} | {r['trained_params']:,} | {r['updates']:,} | {r['train_minutes']:.1f} | "
                     f"{r['best_valid_loss']:.3f} | {r['bleu']:.2f} | {cmp.speed(r['sent_per_s_bs1'])} | {rel} | "
                     f"{cmp.speed(r['sent_per_s_batched'])} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    raw = make_corpus(args)
    data = prepare_data(args, raw)
    order = sorted(args.systems, key=lambda s: s in ("fusion_nat", "cmlm"))  # the teacher first
    rows = {}
    for name in order:
        if args.nat_distill and name in ("fusion_nat", "cmlm") and not data["fusion_nat"].endswith("-distilled"):
            data = distilled_data(args, data)
        rows[name] = run_system(name, args, data, raw)
    rows = [rows[name] for name in args.systems]
    n_test = cmp.count_lines(os.path.join(raw, f"test.{args.target_lang}"))
    budget = " and ".join(x for x in (f"{args.minutes:g} min" if args.minutes else "",
                                      f"{args.max_update} updates" if args.max_update else "") if x)
    note = (f"{args.source_lang}->{args.target_lang}, {n_test} test sentences; budget {budget} per system; "
            f"BLEU: sacrebleu {rows[0]['signature']} on the detokenized batched output of checkpoint_best.pt "
            f"(AT: beam {args.beam}; NAT: {args.nat_iterations} Mask-Predict iterations, {args.nat_length_beam} "
            f"length candidates); speed: fairseq-generate's sentences/s ({cmp.speed_note(args, n_test)}); "
            f"valid loss: each system's own training criterion on valid (base 2; "
            f"translation only for deep fusion); train min: fairseq's training time at the last checkpoint")
    if args.m_skipped:
        note += (f"\nM = {', '.join(map(str, args.m_skipped))} left out: the PTM's {ptm_shape(args.plm)[0]} layers "
                 f"do not split into parts of that size")
    write_results(args.out, table(rows, args), note, rows, args)
    say(f"done in {(time.time() - t0) / 60:.1f} min; {os.path.join(args.out, 'results.md')}")


if __name__ == "__main__":
    main()
