"""SGA against its baselines, each trained for the same budget, in one command: Table 1 (and
Table 4) of the SGA paper in small.

    python -m fairseq_plm.recipes.sga_compare --plm PLM --out OUT --minutes M \\
        [--raw RAW -s SRC -t TGT] [--systems sga,sga_no_denoising,ctc_nat,cmlm,at,xlmr_at_init,free_gen]

PLM is an XLM-R directory (HuggingFace or fairseq format). Data: RAW holds raw parallel text
``{train,valid,test}.{SRC,TGT}``; without ``--raw`` the recipe builds the multilingual X->En
corpus of this machine's gettext catalogs (``gettext_multilingual``: the paper's 10 supervised
languages mixed, ``-s src -t en``, test = their test sets together) in OUT/raw.

Table 1 systems (``--systems``, default all, then ``free_gen``):

  sga               ``--arch sga`` on the frozen PLM (denoiser trained on its own outputs, §4.4)
  sga_no_denoising  ``--arch sga_no_denoising`` (alignment only)
  ctc_nat           the CTC-NAT baseline ``--arch ctc_nat`` (Libovický & Helcl), PLM vocabulary
  cmlm              fairseq's Mask-Predict: ``--task translation_lev --noise random_mask
                    --arch cmlm_transformer --criterion nat_loss``
  at                fairseq's ``--task translation --arch transformer``, label smoothing 0.1, beam 4
  xlmr_at_init      "XLM-R w. AT initialization": ``--arch xlmr_at_init``, XLM-R as the encoder of
                    an AT Transformer, every parameter fine-tuned (lr ``--lr-at-init``, 3e-5 as
                    the paper's PLM fine-tuning), beam 4
  sga_noised_t0     (not in the default list) SGA with ``--denoiser-training noised_t0``

Optimization: SGA lr 7e-4 (MSP's setting, §5.1), baselines lr 5e-4, Adam, inverse-sqrt with
``--warmup-updates``, ``--max-tokens`` per batch; baselines take the sizes of ``--baseline-arch``
(the paper: transformer_vaswani_wmt_en_de_big; default a small 3+3-layer d=256 transformer for
a CPU run), all with shared embeddings over the PLM's vocabulary. The fairseq-task baselines
(cmlm, at) read the same pieces through a plain fairseq dictionary of the PLM's vocabulary
(OUT/data-plain), so every system sees the same tokens and is detokenized the same way.

Table 4 (``free_gen``): a free-generation task built from the data's English, write the
English sentence from its keywords (content words, shuffled; ``keywords_data``): train, valid
and test from the English side of RAW's train, valid and test splits (the multilingual
corpus's test English is held out from the demo PLMs' pre-training), or ``--free-gen-raw DIR``
with ``{train,valid,test}.{kw,en}``. One ``--arch sga_mask_predict`` model is trained for the
same budget and decoded with Mask-Predict ``--t4-iterations`` (2, 4, 8) without denoising
(``--iter-decode-max-iter 0``) and with it, plus the zero-iteration rows (the CTC denoiser
aligns a blank canvas; with and without further denoising loops). ``free_gen_ctc`` (not in the
default list) adds the other reading of that row: a separately trained ``--arch sga_ctc_free``
model (CTC alignment over twice the predicted length), without and with denoising.

Every system decodes the whole test split at batch size 1 (the paper's speed setting,
``--speed-runs`` runs averaged; ``--speed-sentences N`` times an evenly spread sample of N
sentences instead) and at ``--batch-size``; the tables give sacrebleu BLEU (through
``fairseq-plm-score`` on the detokenized batched output against RAW/test.TGT; its signature
under the table), METEOR for Table 4 when requirements-eval.txt is installed, trained
parameters, the updates and training minutes each system reached in its budget, and fairseq's
sentences/s. Also OUT/results.{md,json}; logs and outputs per system in OUT/<system>/.

Resuming: rerun the same command. Finished systems are not trained again, a killed one
continues from its checkpoint_last.pt with the budget counted from the first run, finished
decodings are not repeated (see ``comparison``). Use a fresh OUT for a fresh comparison.
"""

import argparse
import glob
import os
import shutil
import time

from . import comparison as cmp
from .common import encode_and_binarize, run_cli, write_results

TABLE1 = {  # name -> (label, data: "plm" | "plain")
    "sga": ("SGA", "plm"),
    "sga_no_denoising": ("SGA w/o denoising", "plm"),
    "ctc_nat": ("Transformer NAT (CTC)", "plm"),
    "cmlm": ("Mask-Predict (fairseq CMLM)", "plain"),
    "at": ("Transformer AT", "plain"),
    "xlmr_at_init": ("XLM-R w. AT initialization", "plm"),
}
EXTRA = {"sga_noised_t0": ("SGA, denoiser trained on the noised T_0 only", "plm")}
FREE_GEN, FREE_GEN_CTC = "free_gen", "free_gen_ctc"
DEFAULT = list(TABLE1) + [FREE_GEN]
ALL = DEFAULT + list(EXTRA) + [FREE_GEN_CTC]
# the default baseline: small enough for a CPU demo
SMALL = dict(encoder_layers=3, decoder_layers=3, encoder_embed_dim=256, decoder_embed_dim=256,
             encoder_ffn_embed_dim=1024, decoder_ffn_embed_dim=1024, encoder_attention_heads=4,
             decoder_attention_heads=4, dropout=0.1)
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # what fairseq's Dictionary adds itself


def say(msg):
    print(f"[sga_compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = ap.add_argument_group("data and PLM")
    data.add_argument("--plm", required=True, help="the XLM-R: a HuggingFace or fairseq-format directory")
    data.add_argument("--out", required=True, help="working directory (data, checkpoints, outputs); reused = resumed")
    data.add_argument("--raw", help="directory with raw {train,valid,test}.{SRC,TGT}; default: the gettext "
                                    "multilingual X->En corpus, built in OUT/raw")
    data.add_argument("-s", "--source-lang", default="src", help="source suffix (default: src, the gettext corpus)")
    data.add_argument("-t", "--target-lang", default="en", help="target suffix (default: en)")
    data.add_argument("--max-train-per-lang", type=int,
                      help="gettext corpus: at most this many training pairs per language (default: all)")
    data.add_argument("--free-gen-raw", help="Table 4 task: a directory with {train,valid,test}.{kw,en}; default: "
                                             "built from the English side of the data (keywords_data)")
    data.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    ap.add_argument("--systems", default=",".join(DEFAULT),
                    help=f"comma list of: {', '.join(ALL)} (default: every system of Tables 1 and 4)")
    cmp.add_budget_args(ap, max_epoch=True)
    opt = ap.add_argument_group("optimization")
    opt.add_argument("--max-tokens", type=int, default=4096)
    opt.add_argument("--update-freq", type=int, default=1, help="the paper: ~32K tokens per update")
    opt.add_argument("--lr-sga", type=float, default=7e-4, help="SGA (§5.1, adaptation methods)")
    opt.add_argument("--lr-baseline", type=float, default=5e-4, help="AT/NAT Transformers (§5.1)")
    opt.add_argument("--lr-at-init", type=float, default=3e-5, help="XLM-R w. AT initialization (§5.1: 3e-5)")
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
    cmp.add_speed_args(gen)
    gen.add_argument("--iter-decode-max-iter", type=int, default=10,
                     help="SGA: at most this many denoising loops (it stops earlier when the output is unchanged)")
    gen.add_argument("--cmlm-max-iter", type=int, default=9, help="Mask-Predict: refinement steps (9 = 10 passes)")
    gen.add_argument("--cmlm-length-beam", type=int, default=1, help="Mask-Predict length candidates")
    gen.add_argument("--beam", type=int, default=4, help="AT beam size")
    gen.add_argument("--t4-iterations", default="2,4,8", help="Table 4: Mask-Predict iterations (the 0 row is always run)")
    ap.add_argument("--cpu", action="store_true", help="train and decode on the CPU even if CUDA is available")
    ap.add_argument("--train-extra", default="", help="extra fairseq-train flags for every system (one string)")
    ap.add_argument("--gen-extra", default="", help="extra fairseq-generate flags for every system (one string)")
    args = ap.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in ALL]
    if unknown or not args.systems:
        ap.error(f"--systems: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(ALL)}")
    cmp.check_budget(ap, args)
    try:
        args.t4_iterations = sorted({int(x) for x in args.t4_iterations.split(",") if x.strip()} - {0})
    except ValueError:
        ap.error(f"--t4-iterations {args.t4_iterations}: expected a comma list of integers")
    if args.warmup_updates is None:
        args.warmup_updates = min(4000, max(1, args.max_update // 10)) if args.max_update else 4000
    if args.raw:
        for split in ("train", "valid", "test"):
            for lang in (args.source_lang, args.target_lang):
                if not os.path.exists(os.path.join(args.raw, f"{split}.{lang}")):
                    ap.error(f"missing {os.path.join(args.raw, f'{split}.{lang}')}")
        args.raw = os.path.abspath(args.raw)
    elif (args.source_lang, args.target_lang) != ("src", "en"):
        ap.error("without --raw the data is the gettext X->En corpus: -s src -t en")
    if {FREE_GEN, FREE_GEN_CTC} & set(args.systems) and not args.free_gen_raw and "en" not in (args.source_lang, args.target_lang):
        ap.error("free_gen builds its task from the English side of the data (-s or -t en); "
                 "pass --free-gen-raw or leave free_gen out of --systems")
    args.out, args.plm = os.path.abspath(args.out), os.path.abspath(args.plm)
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


def make_raw(args):
    """RAW, or the gettext multilingual X->En corpus in OUT/raw (built once)."""
    if args.raw:
        return args.raw
    from .gettext_multilingual import build_corpus, write_corpus

    raw = os.path.join(args.out, "raw")
    if not os.path.exists(os.path.join(raw, "corpus.json")):
        say("building the gettext multilingual X->En corpus (gettext_multilingual) -> " + raw)
        tmp = raw + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        manifest = write_corpus(build_corpus(max_train_per_lang=args.max_train_per_lang), tmp)
        os.replace(tmp, raw)
        say(f"train {manifest['train']['sentences']}, valid {manifest['valid']['sentences']}, "
            f"test {manifest['subsets']['test']['sentences']} pairs ({', '.join(manifest['supervised'])})")
    return raw


def binarize_once(raw, plm, out, src, tgt, workers):
    """encode + binarize with the PLM's dictionary into out/data-plm, once (a marker file)."""
    tok, data = os.path.join(out, "tok"), os.path.join(out, "data-plm")
    done = os.path.join(data, ".done")
    if not os.path.exists(done):
        say(f"tokenize with {plm}'s tokenizer, binarize with the PLM's dictionary -> {data}")
        encode_and_binarize(raw, plm, tok, data, src=src, tgt=tgt, workers=workers)
        open(done, "w").close()
    return tok, data


def prepare_data(args, raw):
    src, tgt = args.source_lang, args.target_lang
    tok, data = binarize_once(raw, args.plm, args.out, src, tgt, args.workers)
    paths = {"plm": data, "tok": tok}
    if any(TABLE1.get(s, EXTRA.get(s, ("", "")))[1] == "plain" for s in args.systems):
        plain = os.path.join(args.out, "data-plain")
        if not os.path.exists(os.path.join(plain, ".done")):
            os.makedirs(plain, exist_ok=True)
            vocab = os.path.join(plain, "plm-vocab.txt")
            say(f"the same pieces under a plain fairseq dictionary of the PLM's vocabulary -> {plain}")
            if write_plain_dictionary(args.plm, vocab):  # same ids (XLM-R): the binarized files are the same
                for name in os.listdir(data):
                    if not name.startswith("."):
                        shutil.copyfile(os.path.join(data, name), os.path.join(plain, name))
                for lang in (src, tgt):
                    shutil.copyfile(vocab, os.path.join(plain, f"dict.{lang}.txt"))
            else:
                run_cli("fairseq-preprocess", "-s", src, "-t", tgt, "--trainpref", f"{tok}/train", "--validpref",
                        f"{tok}/valid", "--testpref", f"{tok}/test", "--srcdict", vocab, "--tgtdict", vocab,
                        "--destdir", plain, "--workers", args.workers)
            open(os.path.join(plain, ".done"), "w").close()
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


def sga_flags(arch, args, *extra):
    train = ["--task", "plm_translation", "--arch", arch, "--plm", args.plm, "--prompt-length", args.prompt_length,
             "--criterion", "plm_nat_loss", *extra, *adam(args.lr_sga, args, eps=1e-9)]  # MSP's
    return train, ["--task", "plm_translation", "--iter-decode-max-iter", args.iter_decode_max_iter]


def system_flags(name, args):
    """(fairseq-train flags, fairseq-generate flags) of one system, data and budget aside."""
    if name in ("sga", "sga_no_denoising"):
        return sga_flags(name, args)
    if name == "sga_noised_t0":
        return sga_flags("sga", args, "--denoiser-training", "noised_t0")
    if name == "xlmr_at_init":
        train = ["--task", "plm_translation", "--arch", "xlmr_at_init", "--plm", args.plm,
                 "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", *adam(args.lr_at_init, args)]
        return train, ["--task", "plm_translation", "--beam", args.beam, "--max-len-a", "1.2", "--max-len-b", "10"]
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


def train(args, data, save, flags, src, tgt):
    keep = ["--keep-best-checkpoints", args.average_best] if args.average_best else []
    return cmp.train(save, data, [*flags, "-s", src, "-t", tgt, "--max-tokens", args.max_tokens,
                                  "--update-freq", args.update_freq, *keep], args)


def checkpoint(args, save):
    if args.average_best:
        best = sorted(glob.glob(os.path.join(save, "checkpoint.best_loss_*.pt")))  # fairseq keeps the K best
        if best:
            out = os.path.join(save, f"checkpoint_avg_best{len(best)}.pt")
            if not os.path.exists(out):
                run_cli("fairseq-plm-average-checkpoints", "--inputs", *best, "--output", out)
            return out
    return os.path.join(save, "checkpoint_best.pt")


def decode(args, data, save, path, gen_flags, tag, ref, src, tgt, metrics=("bleu",)):
    """One decoding setting of the test split, at batch size 1 (``--speed-runs``) and batched:
    cached in save/decode-<tag>.json."""
    n_ref = cmp.count_lines(ref)
    flags = [*gen_flags, "-s", src, "-t", tgt, *detokenizer_flags(args.plm)]

    def run():
        one = cmp.batch1_speed(data, flags, path, os.path.join(save, f"gen-{tag}-bs1.out"), n_ref, args)
        batched_out = os.path.join(save, f"gen-{tag}-batched.out")
        batched = cmp.generate(data, flags, path, args.batch_size, batched_out, n_ref, args)
        return {**cmp.score(batched_out, ref, metrics), "sent_per_s_bs1": one, "sent_per_s_batched": batched}

    return cmp.cached(os.path.join(save, f"decode-{tag}.json"), run)


def run_system(name, args, paths, raw):
    save = os.path.join(args.out, name)
    label, kind = TABLE1.get(name) or EXTRA[name]
    data = paths[kind]
    train_flags, gen_flags = system_flags(name, args)
    if name in ("at", "xlmr_at_init"):
        label += f" (beam {args.beam})"
    if not os.path.exists(os.path.join(save, "trained.json")):
        say(f"{name}: train ({label}); log {os.path.join(save, 'train.log')}")
    trained = train(args, data, save, train_flags, args.source_lang, args.target_lang)
    if not os.path.exists(os.path.join(save, "decode-test.json")):
        say(f"{name}: translate the test set at batch size 1 ({args.speed_runs} run(s)) and {args.batch_size}")
    ref = os.path.join(raw, f"test.{args.target_lang}")
    result = decode(args, data, save, checkpoint(args, save), gen_flags, "test", ref, args.source_lang,
                    args.target_lang)
    return {"system": name, "label": label, **trained, **result}


# ----------------------------------------------------------------------------- Table 4

def free_gen_settings(args):
    """(row label, Mask-Predict iterations, denoising loops) of Table 4, in the paper's order."""
    rows = [("w/o denoising", it, 0) for it in args.t4_iterations]
    rows += [("w/o denoising (CTC alignment alone)", 0, 0), ("w. denoising", 0, args.iter_decode_max_iter)]
    rows += [("w. denoising", it, args.iter_decode_max_iter) for it in args.t4_iterations]
    return rows


def free_gen_data(args, raw):
    """The keywords -> English task (raw and binarized, in OUT/free_gen): (raw dir, data-bin)."""
    from . import keywords_data

    root = os.path.join(args.out, FREE_GEN)
    task_raw = args.free_gen_raw
    if task_raw is None:
        task_raw = os.path.join(root, "raw")
        if not os.path.exists(os.path.join(task_raw, "task.json")):
            lang = "en" if args.target_lang == "en" else args.source_lang
            m = keywords_data.from_raw(raw, lang, task_raw)
            say(f"{FREE_GEN}: keywords -> English from the {lang} side of {raw}: train {m['train']}, "
                f"valid {m['valid']}, test {m['test']}")
    return task_raw, binarize_once(task_raw, args.plm, root, "kw", "en", args.workers)[1]


def run_free_gen(args, raw, name):
    """Table 4: one model on the keywords task, decoded at several settings: free_gen (the
    sga_mask_predict model) or free_gen_ctc (sga_ctc_free, the other reading of the 0 row)."""
    task_raw, data = free_gen_data(args, raw)
    save = os.path.join(args.out, name)
    arch, what = ("sga_mask_predict", "SGA Mask-Predict") if name == FREE_GEN else ("sga_ctc_free", "SGA CTC")
    train_flags, _ = sga_flags(arch, args)
    if not os.path.exists(os.path.join(save, "trained.json")):
        say(f"{name}: train {what} (keywords -> English); log {os.path.join(save, 'train.log')}")
    trained = train(args, data, save, train_flags, "kw", "en")
    path, ref = checkpoint(args, save), os.path.join(task_raw, "test.en")
    if name == FREE_GEN:
        settings = free_gen_settings(args)
    else:
        settings = [("sga_ctc_free model, w/o denoising", 0, 0),
                    ("sga_ctc_free model, w. denoising", 0, args.iter_decode_max_iter)]
    rows = []
    for group, iterations, loops in settings:
        tag = f"it{iterations}-loops{loops}"
        if not os.path.exists(os.path.join(save, f"decode-{tag}.json")):
            say(f"{name}: decode, {iterations} Mask-Predict iterations, {group}")
        flags = ["--task", "plm_translation", "--iter-decode-max-iter", loops]
        if name == FREE_GEN:
            flags += ["--model-overrides", str({"mask_predict_iterations": iterations})]
        result = decode(args, data, save, path, flags, tag, ref, "kw", "en", metrics=("bleu", "meteor"))
        rows.append({"group": group, "iterations": iterations, "max_denoising_loops": loops, **result})
    return {"trained": trained, "rows": rows, "test_sentences": cmp.count_lines(ref), "raw": task_raw}


# ----------------------------------------------------------------------------- tables

def table1(rows, args):
    at = next((r for r in rows if r["system"] == "at"), None)
    lines = [f"| system | --systems | trained params | updates | train min | BLEU | sent/s (batch 1) | "
             f"speed vs AT | sent/s (batch {args.batch_size}) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rel = cmp.relative_speed(r, at)
        lines.append(f"| {r['label']} | {r['system']} | {r['trained_params']:,} | {r['updates']:,} | "
                     f"{r['train_minutes']:.1f} | {r['bleu']:.2f} | {cmp.speed(r['sent_per_s_bs1'])} | {rel} | "
                     f"{cmp.speed(r['sent_per_s_batched'])} |")
    return "\n".join(lines)


def table4(t4, args):
    lines = [f"| group | # Iter. | BLEU | METEOR | sent/s (batch 1) | sent/s (batch {args.batch_size}) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in t4["rows"]:
        meteor = f"{r['meteor']:.2f}" if r.get("meteor") is not None else "n/a"
        lines.append(f"| {r['group']} | {r['iterations']} | {r['bleu']:.2f} | {meteor} | {cmp.speed(r['sent_per_s_bs1'])} | "
                     f"{cmp.speed(r['sent_per_s_batched'])} |")
    return "\n".join(lines)


def budget_text(args):
    parts = [f"{args.minutes:g} min" if args.minutes else "", f"{args.max_update} updates" if args.max_update else "",
             f"{args.max_epoch} epochs" if args.max_epoch else ""]
    return " and ".join(p for p in parts if p)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    raw = make_raw(args)
    texts, notes, results = [], [], {}
    table1_systems = [s for s in args.systems if s not in (FREE_GEN, FREE_GEN_CTC)]
    if table1_systems:
        paths = prepare_data(args, raw)
        rows = [run_system(name, args, paths, raw) for name in table1_systems]
        n_test = cmp.count_lines(os.path.join(raw, f"test.{args.target_lang}"))
        texts.append(f"Table 1 ({args.source_lang}->{args.target_lang})\n\n" + table1(rows, args))
        notes.append(f"Table 1: {n_test} test sentences ({raw}); budget {budget_text(args)} per system; BLEU: "
                     f"sacrebleu {rows[0]['signature']} on the detokenized batched output; speed: fairseq-generate's "
                     f"sentences/s ({cmp.speed_note(args, n_test)}); train min: fairseq's training time at the "
                     f"last checkpoint")
        results["table1"] = rows
    t4_models = [s for s in (FREE_GEN, FREE_GEN_CTC) if s in args.systems]
    if t4_models:
        t4s = {name: run_free_gen(args, raw, name) for name in t4_models}
        t4 = {"rows": [r for name in t4_models for r in t4s[name]["rows"]], "models": t4s}
        first = t4s[t4_models[0]]
        models = "; ".join(f"{'sga_mask_predict' if n == FREE_GEN else 'sga_ctc_free'}: "
                           f"{t['trained']['trained_params']:,} trained parameters, {t['trained']['updates']:,} "
                           f"updates, {t['trained']['train_minutes']:.1f} min" for n, t in t4s.items())
        texts.append(f"Table 4 (keywords -> English; {models})\n\n" + table4(t4, args))
        meteor = next((r.get("meteor_signature") for r in t4["rows"] if r.get("meteor_signature")), None)
        notes.append(f"Table 4: {first['test_sentences']} test sentences ({first['raw']}); budget {budget_text(args)} "
                     f"per model; BLEU: sacrebleu {t4['rows'][0]['signature']}; METEOR: "
                     f"{meteor or 'n/a (pip install -r requirements-eval.txt)'}; '# Iter.': Mask-Predict iterations, "
                     f"0 = the CTC denoiser aligns a blank canvas (sga_ctc_free: its CTC alignment unit); "
                     f"w. denoising: at most {args.iter_decode_max_iter} loops")
        results["table4"] = t4
    write_results(args.out, "\n\n".join(texts), "\n".join(notes), results, args)
    say(f"done in {(time.time() - t0) / 60:.1f} min; {os.path.join(args.out, 'results.md')}")


if __name__ == "__main__":
    main()
