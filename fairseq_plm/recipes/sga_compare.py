"""SGA against its baselines on one dataset, in one table (SGA Table 1 in small).

    python -m fairseq_plm.recipes.sga_compare --raw RAW --plm PLM -s de -t en --out OUT \\
        (--max-update N | --minutes M | --max-epoch E) \\
        [--systems sga,sga_no_denoising,ctc_nat,cmlm,at] [--baseline-arch transformer_vaswani_wmt_en_de_big]

RAW holds raw parallel text ``{train,valid,test}.{SRC,TGT}``; PLM is an XLM-R directory
(HuggingFace or fairseq format). Steps:

1. ``fairseq-plm-encode`` with the PLM's tokenizer, ``fairseq-preprocess --task plm_translation
   --srcdict PLM --tgtdict PLM`` (OUT/data-plm: ids are the PLM's). The fairseq-task baselines
   read the same pieces through a plain fairseq dictionary holding the PLM's vocabulary
   (OUT/data-plain; fairseq's ``translation`` tasks cannot read this package's dictionaries):
   every system sees the same tokens and is detokenized by the same sentencepiece model. With
   XLM-R's 250,002 pieces and shared embeddings, ``--baseline-arch
   transformer_vaswani_wmt_en_de_big`` has 432M parameters, the paper's Transformer (AT).
2. trains each system with ``fairseq-plm-train`` for the budget given (``--max-update``,
   ``--minutes`` = fairseq's ``--stop-time-hours``, ``--max-epoch``), keeping the best
   checkpoint by valid loss (``--average-best K``: the average of the K best, as the paper):

   sga               ``--arch sga`` on the frozen PLM, ``--criterion plm_nat_loss`` (lr 7e-4)
   sga_no_denoising  ``--arch sga_no_denoising`` (alignment only)
   ctc_nat           our CTC-NAT baseline ``--arch ctc_nat`` (Libovický & Helcl), PLM vocabulary
   cmlm              fairseq's Mask-Predict: ``--task translation_lev --noise random_mask
                     --arch cmlm_transformer --criterion nat_loss``
   at                fairseq's ``--task translation --arch transformer``, label smoothing 0.1

   Baselines (lr 5e-4, shared embeddings) take the sizes of ``--baseline-arch`` (a fairseq
   transformer architecture), by default a small transformer for a CPU demo; the
   ``--baseline-*`` size flags override single sizes.
3. translates the test set with ``fairseq-plm-generate`` at batch size 1 (speed, as the paper:
   ``--speed-runs`` runs averaged) and batched (``--batch-size``): NAT systems with fairseq's
   IterativeRefinementGenerator (``--iter-decode-max-iter``: SGA's denoising loops; Mask-Predict
   ``--cmlm-max-iter`` 9 = 10 passes), the AT system with beam 4. ``--required-batch-size-multiple
   1`` keeps fairseq's tasks from dropping the last < 8 sentences; every run is checked to
   translate every test sentence.
4. prints one table: system, trained parameters, BLEU (sacrebleu through fairseq-plm-score on
   the detokenized batched output against RAW/test.TGT), sentences/s at batch size 1, speed
   relative to the AT transformer, sentences/s batched. Also OUT/results.{md,json}.

OUT is reused: a second run resumes each system from its ``checkpoint_last.pt`` (fairseq's
default), so its budget counts from the first run; use a fresh OUT for a fresh comparison.
"""

import argparse
import contextlib
import glob
import io
import os
import re
import shlex
import shutil
import time

from .common import encode_and_binarize, run_cli, write_results

SYSTEMS = {  # name -> (label, data: "plm" | "plain")
    "sga": ("SGA", "plm"),
    "sga_no_denoising": ("SGA w/o denoising", "plm"),
    "ctc_nat": ("Transformer NAT (CTC)", "plm"),
    "cmlm": ("Mask-Predict (CMLM)", "plain"),
    "at": ("Transformer AT", "plain"),
}
# the default baseline: small enough for a CPU demo
SMALL = dict(encoder_layers=3, decoder_layers=3, encoder_embed_dim=256, decoder_embed_dim=256,
             encoder_ffn_embed_dim=1024, decoder_ffn_embed_dim=1024, encoder_attention_heads=4,
             decoder_attention_heads=4, dropout=0.1)
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # what fairseq's Dictionary adds itself


def say(msg):
    print(f"[sga_compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = ap.add_argument_group("data")
    data.add_argument("--raw", required=True, help="directory with {train,valid,test}.{SRC,TGT} raw text")
    data.add_argument("--plm", required=True, help="XLM-R directory (HuggingFace or fairseq format)")
    data.add_argument("-s", "--source-lang", required=True)
    data.add_argument("-t", "--target-lang", required=True)
    data.add_argument("--out", required=True, help="working directory (data, checkpoints, outputs)")
    data.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of: {', '.join(SYSTEMS)}")
    budget = ap.add_argument_group("training budget, per system (at least one)")
    budget.add_argument("--max-update", type=int)
    budget.add_argument("--minutes", type=float, help="wall-clock training time (fairseq --stop-time-hours)")
    budget.add_argument("--max-epoch", type=int)
    opt = ap.add_argument_group("optimization")
    opt.add_argument("--max-tokens", type=int, default=4096)
    opt.add_argument("--update-freq", type=int, default=1, help="the paper: ~32K tokens per update")
    opt.add_argument("--lr-sga", type=float, default=7e-4, help="SGA (§5.1, adaptation methods)")
    opt.add_argument("--lr-baseline", type=float, default=5e-4, help="AT/NAT Transformers (§5.1)")
    opt.add_argument("--warmup-updates", type=int,
                     help="inverse-sqrt warm-up (default: 4000, or max-update/10 when that is smaller; "
                          "lower it for short --minutes runs)")
    opt.add_argument("--average-best", type=int, default=0, metavar="K",
                     help="evaluate the average of the K best checkpoints by valid loss (paper: 5); "
                          "0: checkpoint_best.pt")
    opt.add_argument("--seed", type=int, default=1)
    opt.add_argument("--log-interval", type=int, default=100)
    model = ap.add_argument_group("models")
    model.add_argument("--prompt-length", type=int, default=128, help="SGA prompts (the paper's 128)")
    model.add_argument("--baseline-arch", help="fairseq transformer architecture whose sizes the baselines "
                                               "take (the paper: transformer_vaswani_wmt_en_de_big); "
                                               "default: a small 3+3-layer d=256 transformer")
    for name, what in (("layers", "encoder and decoder layers"), ("embed-dim", "model width"),
                       ("ffn-dim", "feed-forward width"), ("heads", "attention heads")):
        model.add_argument(f"--baseline-{name}", type=int, help=f"override the baselines' {what}")
    model.add_argument("--baseline-dropout", type=float, help="override the baselines' dropout (paper: 0.3)")
    gen = ap.add_argument_group("generation")
    gen.add_argument("--batch-size", type=int, default=64, help="batched decoding (speed at 1 is always measured)")
    gen.add_argument("--speed-runs", type=int, default=1, help="batch-size-1 runs averaged (paper: 3)")
    gen.add_argument("--iter-decode-max-iter", type=int, default=10,
                     help="SGA: at most this many denoising loops (it stops earlier when the output is unchanged)")
    gen.add_argument("--cmlm-max-iter", type=int, default=9, help="Mask-Predict: refinement steps (9 = 10 passes)")
    gen.add_argument("--cmlm-length-beam", type=int, default=1, help="Mask-Predict length candidates")
    gen.add_argument("--beam", type=int, default=4, help="AT beam size")
    ap.add_argument("--cpu", action="store_true", help="train and decode on the CPU even if CUDA is available")
    ap.add_argument("--train-extra", default="", help="extra fairseq-train flags for every system (one string)")
    ap.add_argument("--gen-extra", default="", help="extra fairseq-generate flags for every system (one string)")
    args = ap.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown or not args.systems:
        ap.error(f"--systems: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(SYSTEMS)}")
    if not (args.max_update or args.minutes or args.max_epoch):
        ap.error("give a training budget: --max-update, --minutes and/or --max-epoch")
    if args.warmup_updates is None:
        args.warmup_updates = min(4000, max(1, args.max_update // 10)) if args.max_update else 4000
    for split in ("train", "valid", "test"):
        for lang in (args.source_lang, args.target_lang):
            if not os.path.exists(os.path.join(args.raw, f"{split}.{lang}")):
                ap.error(f"missing {os.path.join(args.raw, f'{split}.{lang}')}")
    args.out, args.plm, args.raw = (os.path.abspath(p) for p in (args.out, args.plm, args.raw))
    return args


# ----------------------------------------------------------------------------- data

def write_plain_dictionary(plm, path):
    """The PLM's vocabulary as a plain fairseq ``dict.txt`` (``symbol count`` lines); returns
    whether its ids equal the PLM's (fairseq's Dictionary adds <s> <pad> </s> <unk> first,
    which is XLM-R's own order)."""
    from fairseq.data import Dictionary

    from ..plm.vocab import load_dictionary

    symbols = load_dictionary(plm).symbols
    seen = set(FAIRSEQ_SPECIALS)
    with open(path, "w", encoding="utf-8") as f:
        for symbol in symbols:
            if symbol and symbol not in seen and not any(c.isspace() for c in symbol):
                seen.add(symbol)
                f.write(f"{symbol} 1\n")
    return Dictionary.load(path).symbols == list(symbols)


def prepare_data(args):
    src, tgt = args.source_lang, args.target_lang
    tok, data = (os.path.join(args.out, d) for d in ("tok", "data-plm"))
    say(f"tokenize with {args.plm}'s tokenizer, binarize with the PLM's dictionary -> {data}")
    encode_and_binarize(args.raw, args.plm, tok, data, src=src, tgt=tgt, workers=args.workers)
    paths = {"plm": data, "tok": tok}
    if any(SYSTEMS[s][1] == "plain" for s in args.systems):
        plain = os.path.join(args.out, "data-plain")
        os.makedirs(plain, exist_ok=True)
        vocab = os.path.join(plain, "plm-vocab.txt")
        say(f"the same pieces under a plain fairseq dictionary of the PLM's vocabulary -> {plain}")
        if write_plain_dictionary(args.plm, vocab):  # same ids (XLM-R): the binarized files are the same
            for name in os.listdir(data):
                shutil.copyfile(os.path.join(data, name), os.path.join(plain, name))
            for lang in (src, tgt):
                shutil.copyfile(vocab, os.path.join(plain, f"dict.{lang}.txt"))
        else:
            run_cli("fairseq-preprocess", "-s", src, "-t", tgt, "--trainpref", f"{tok}/train", "--validpref",
                    f"{tok}/valid", "--testpref", f"{tok}/test", "--srcdict", vocab, "--tgtdict", vocab,
                    "--destdir", plain, "--workers", args.workers)
        paths["plain"] = plain
    return paths


def detokenizer_flags(plm):
    from ..plm.vocab import tokenizer_file

    tok = tokenizer_file(plm)
    if tok is None:
        raise SystemExit(f"sga_compare: {plm} has no tokenizer file")
    if tok.endswith(".model"):
        return ["--bpe", "sentencepiece", "--sentencepiece-model", tok]
    return ["--bpe", "wordpiece", "--wordpiece-vocab", tok]


# ----------------------------------------------------------------------------- systems

def baseline_sizes(args):
    """The baselines' size flags: --baseline-arch's sizes (or SMALL), then single overrides."""
    if args.baseline_arch is None:
        sizes = dict(SMALL)
    else:
        from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
        from fairseq.models.transformer import TransformerModel

        model = ARCH_MODEL_REGISTRY.get(args.baseline_arch)
        if model is None or not issubclass(model, TransformerModel):
            raise SystemExit(f"sga_compare: --baseline-arch {args.baseline_arch} is not a fairseq transformer "
                             f"architecture (e.g. transformer, transformer_vaswani_wmt_en_de_big)")
        ns = argparse.Namespace()
        ARCH_CONFIG_REGISTRY[args.baseline_arch](ns)
        sizes = {k: getattr(ns, k) for k in SMALL}
    for flag, keys in (("layers", ("encoder_layers", "decoder_layers")),
                       ("embed_dim", ("encoder_embed_dim", "decoder_embed_dim")),
                       ("ffn_dim", ("encoder_ffn_embed_dim", "decoder_ffn_embed_dim")),
                       ("heads", ("encoder_attention_heads", "decoder_attention_heads")), ("dropout", ("dropout",))):
        value = getattr(args, f"baseline_{flag}")
        if value is not None:
            sizes.update(dict.fromkeys(keys, value))
    return [a for k, v in sizes.items() for a in ("--" + k.replace("_", "-"), v)] + ["--share-all-embeddings"]


def adam(lr, args, eps=1e-8):
    return ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", eps, "--lr", lr,
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", args.warmup_updates, "--warmup-init-lr", "1e-7"]


def system_flags(name, args):
    """(fairseq-train flags, fairseq-generate flags) of one system, data and budget aside."""
    if name in ("sga", "sga_no_denoising"):
        train = ["--task", "plm_translation", "--arch", name, "--plm", args.plm, "--prompt-length",
                 args.prompt_length, "--criterion", "plm_nat_loss", *adam(args.lr_sga, args, eps=1e-9)]  # MSP's
        return train, ["--task", "plm_translation", "--iter-decode-max-iter", args.iter_decode_max_iter]
    sizes = baseline_sizes(args)
    if name == "ctc_nat":
        train = ["--task", "plm_translation", "--arch", "ctc_nat", *sizes, "--criterion", "plm_nat_loss",
                 *adam(args.lr_baseline, args)]
        return train, ["--task", "plm_translation"]
    if name == "cmlm":  # fairseq's examples/nonautoregressive_translation recipe
        train = ["--task", "translation_lev", "--noise", "random_mask", "--arch", "cmlm_transformer", *sizes,
                 "--encoder-learned-pos", "--decoder-learned-pos", "--apply-bert-init", "--criterion", "nat_loss",
                 "--label-smoothing", "0.1", "--weight-decay", "0.01", "--ddp-backend", "legacy_ddp",
                 *adam(args.lr_baseline, args)]
        return train, ["--task", "translation_lev", "--iter-decode-max-iter", args.cmlm_max_iter,
                       "--iter-decode-eos-penalty", "0", "--iter-decode-with-beam", args.cmlm_length_beam]
    train = ["--task", "translation", "--arch", args.baseline_arch or "transformer", *sizes,
             "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", *adam(args.lr_baseline, args)]
    return train, ["--task", "translation", "--beam", args.beam, "--max-len-a", "1.2", "--max-len-b", "10"]


def device_flags(args):
    import torch

    return ["--cpu"] if args.cpu or not torch.cuda.is_available() else []


def train(name, args, data, save):
    flags, _ = system_flags(name, args)
    budget = []
    if args.max_update:
        budget += ["--max-update", args.max_update]
    if args.minutes:
        budget += ["--stop-time-hours", args.minutes / 60]
    if args.max_epoch:
        budget += ["--max-epoch", args.max_epoch]
    keep = ["--keep-best-checkpoints", args.average_best] if args.average_best else []
    os.makedirs(save, exist_ok=True)
    p = run_cli("fairseq-plm-train", data, *flags, "-s", args.source_lang, "-t", args.target_lang, *budget,
                "--max-tokens", args.max_tokens, "--update-freq", args.update_freq, "--seed", args.seed,
                "--save-dir", save, "--no-epoch-checkpoints", *keep, "--num-workers", "0", "--no-progress-bar",
                "--log-format", "simple", "--log-interval", args.log_interval,
                "--log-file", os.path.join(save, "train.log"), *device_flags(args), *shlex.split(args.train_extra))
    trained = re.search(r"params: [\d,]+ \(num\. trained: ([\d,]+)\)", p.stdout + p.stderr)
    return int(trained.group(1).replace(",", ""))


def checkpoint(args, save):
    if args.average_best:
        best = sorted(glob.glob(os.path.join(save, "checkpoint.best_loss_*.pt")))  # fairseq keeps the K best
        if best:
            out = os.path.join(save, f"checkpoint_avg_best{len(best)}.pt")
            run_cli("fairseq-plm-average-checkpoints", "--inputs", *best, "--output", out)
            return out
    return os.path.join(save, "checkpoint_best.pt")


def generate(name, args, data, path, batch_size, out_file):
    """Translate the test set into out_file; sentences/s, after checking that every sentence came out."""
    _, flags = system_flags(name, args)
    p = run_cli("fairseq-plm-generate", data, *flags, "-s", args.source_lang, "-t", args.target_lang,
                "--path", path, "--gen-subset", "test", "--batch-size", batch_size,
                "--required-batch-size-multiple", "1", *detokenizer_flags(args.plm), *device_flags(args),
                *shlex.split(args.gen_extra))
    with open(out_file, "w", encoding="utf-8") as f:
        f.write(p.stdout)
    n_ref = sum(1 for _ in open(os.path.join(args.raw, f"test.{args.target_lang}"), encoding="utf-8"))
    n_hyp = len(set(re.findall(r"^H-(\d+)\t", p.stdout, flags=re.M)))
    if n_hyp != n_ref:
        raise SystemExit(f"sga_compare: {name} translated {n_hyp} of {n_ref} test sentences ({out_file})")
    speed = re.search(r"Translated [\d,]+ sentences .*?\(([\d.]+) sentences/s", p.stdout + p.stderr)
    return float(speed.group(1))


def bleu(args, gen_out):
    """fairseq-plm-score (in this process) on the detokenized output: (BLEU, signature)."""
    from ..cli import score

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        score.main(["--generate-output", gen_out, "--ref", os.path.join(args.raw, f"test.{args.target_lang}")])
    m = re.search(r"^BLEU = ([\d.]+) \(.*?\) \| (\S+)", buf.getvalue(), flags=re.M)
    return float(m.group(1)), m.group(2)


def run_system(name, args, paths):
    save = os.path.join(args.out, name)
    data = paths[SYSTEMS[name][1]]
    label = SYSTEMS[name][0] + (f" (beam {args.beam})" if name == "at" else "")
    say(f"{name}: train ({label}); log {os.path.relpath(os.path.join(save, 'train.log'))}")
    trained = train(name, args, data, save)
    path = checkpoint(args, save)
    say(f"{name}: translate the test set at batch size 1 ({args.speed_runs} run(s)) and {args.batch_size}")
    one = [generate(name, args, data, path, 1, os.path.join(save, "gen-bs1.out")) for _ in range(args.speed_runs)]
    batched = generate(name, args, data, path, args.batch_size, os.path.join(save, "gen-batched.out"))
    score, signature = bleu(args, os.path.join(save, "gen-batched.out"))
    return {"system": name, "label": label, "trained_params": trained, "bleu": score,
            "bleu_bs1": bleu(args, os.path.join(save, "gen-bs1.out"))[0], "signature": signature,
            "sent_per_s_bs1": sum(one) / len(one), "sent_per_s_batched": batched, "checkpoint": path}


def table(rows, args):
    at = next((r for r in rows if r["system"] == "at"), None)
    lines = [f"| system | --systems | trained params | BLEU | sent/s (batch 1) | speed vs AT | "
             f"sent/s (batch {args.batch_size}) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rel = f"{r['sent_per_s_bs1'] / at['sent_per_s_bs1']:.2f}x" if at else "n/a"
        lines.append(f"| {r['label']} | {r['system']} | {r['trained_params']:,} | {r['bleu']:.2f} | "
                     f"{r['sent_per_s_bs1']:.2f} | {rel} | {r['sent_per_s_batched']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    paths = prepare_data(args)
    rows = [run_system(name, args, paths) for name in args.systems]
    text = table(rows, args)
    n_test = sum(1 for _ in open(os.path.join(args.raw, f"test.{args.target_lang}"), encoding="utf-8"))
    note = (f"{args.source_lang}->{args.target_lang} test set, {n_test} sentences; BLEU: sacrebleu "
            f"{rows[0]['signature']} on the batched output; speed: fairseq-generate's sentences/s")
    write_results(args.out, text, note, rows, args)
    say(f"done in {(time.time() - t0) / 60:.1f} min; {os.path.join(args.out, 'results.md')}")


if __name__ == "__main__":
    main()
