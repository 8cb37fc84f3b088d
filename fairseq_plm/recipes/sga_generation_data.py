"""Data for SGA's free-generation experiments (Table 3, §5.1): XGLUE question generation with a
machine-translated training set, and MTG story generation, from local files.

    python -m fairseq_plm.recipes.sga_generation_data qg --xglue XGLUE/QG --out OUT [--langs en,de,fr] \\
        --mt "MT_DATA --path MT.pt --task TASK ... -s {src} -t {tgt}" [--plm XLMR]
    python -m fairseq_plm.recipes.sga_generation_data sg --mtg MTG/SG --out OUT [--langs en,de,fr] [--plm XLMR]

**Question generation (XGLUE QG).** XGLUE's layout (``xglue_full_dataset/QG``):
``xglue.qg.en.src.train`` / ``xglue.qg.en.tgt.train`` (passage / question, English only) and
``xglue.qg.<l>.{src,tgt}.{dev,test}`` for l in en, de, es, fr, it, pt, one example per line.
The paper: "Since XGLUE only provides a training set in the English-English direction, we use
M2M-100-418M to translate the English training set to all other languages. We train all
models in the En->X directions and evaluate them on the X->X test sets." Our reading: En->X
training pairs are (English passage, question translated into X), the question being what the
model writes; the valid and test sets of direction En->X are XGLUE's X->X dev and test sets
(zero-shot for X != en: passages in X). ``--translate passage,question`` translates the
passages too (the other reading: X->X training data).

The translation runs through any fairseq model the user points at, with
``fairseq-plm-interactive`` (fairseq's own ``fairseq-interactive`` with this package's
``--user-dir``): ``--mt`` is its argument string, in which ``{src}`` and ``{tgt}`` are replaced
by the language codes (``en`` and each X). For M2M-100 (fairseq's examples/m2m_100) that is,
e.g.::

    --mt "M2M/data_bin --path M2M/418M_last_checkpoint.pt --task translation_multi_simple_epoch
          --lang-pairs M2M/language_pairs_small_models.txt --encoder-langtok src --decoder-langtok
          --fixed-dictionary M2M/model_dict.128k.txt --bpe sentencepiece
          --sentencepiece-model M2M/spm.128k.model -s {src} -t {tgt} --beam 5"

(M2M/data_bin holds ``dict.<lang>.txt`` = model_dict.128k.txt for every language). Inputs are raw
lines; the detokenized ``D-`` lines are kept, one per input line in order (checked). Each
language's translation is cached in OUT/qg/mt/, so a rerun does not translate again.

**Story generation (MTG).** MTG is multi-way parallel: line i of every language's file is the
same story. The paper reports En->En and the supervised cross-lingual X->En directions: story
context in X -> continuation in English. ``--mtg-pattern`` (default ``{lang}/{split}.{side}``,
relative to ``--mtg``; side src = context, tgt = continuation; split train, dev, test) names the
files; arrange MTG's download that way or pass the pattern that fits it. X->En pairs line i of
X's ``src`` with line i of English's ``tgt`` (the line counts must agree).

Output: OUT/qg/en-<l>/ and OUT/sg/<l>-en/ with ``{train,valid,test}.{src,tgt}``, and
OUT/{qg,sg}-manifest.json (sizes); with ``--plm``, each direction is tokenized and binarized with the PLM's
dictionary into ``data-bin/`` (``fairseq-preprocess --task plm_translation -s src -t tgt``) for
``--arch sga_mask_predict`` (examples/sga/README.md).
"""

import argparse
import json
import os
import re
import shlex
import sys

from .common import encode_and_binarize, run_cli

XGLUE_QG_LANGS = ("en", "de", "es", "fr", "it", "pt")


def read_lines(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"missing {path}")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def write_lines(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def read_pair(src_path, tgt_path):
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise ValueError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}")
    return src, tgt


def translate(lines, mt_args, src, tgt, cache, batch_size=32):
    """``lines`` translated src -> tgt by ``fairseq-plm-interactive <mt_args>``; one output per
    line, in order; cached in ``cache`` (reused when it exists with as many lines)."""
    if os.path.exists(cache):
        done = read_lines(cache)
        if len(done) == len(lines):
            return done
    args = shlex.split(mt_args.replace("{src}", src).replace("{tgt}", tgt))
    inp = cache + ".input"
    # fairseq-interactive reads one sentence per line: keep every input line non-empty and single-line
    write_lines(inp, [re.sub(r"\s+", " ", line).strip() or "." for line in lines])
    p = run_cli("fairseq-plm-interactive", *args, "--input", inp, "--buffer-size", batch_size, "--batch-size",
                batch_size)
    hyps = {}
    for i, text in re.findall(r"^D-(\d+)\t\S+\t?(.*)$", p.stdout, flags=re.M):
        hyps.setdefault(int(i), text)  # the best hypothesis (--nbest > 1 prints more)
    missing = [i for i in range(len(lines)) if i not in hyps]
    if missing:
        raise SystemExit(f"sga_generation_data: the MT model translated {len(lines) - len(missing)} of {len(lines)} "
                         f"lines {src}->{tgt} (e.g. line {missing[0] + 1} is missing; see {inp})")
    out = [hyps[i] for i in range(len(lines))]
    write_lines(cache, out)
    os.remove(inp)
    return out


def write_direction(out, splits, plm=None, workers=1):
    """splits: name -> (sources, targets); raw files and, with a PLM, data-bin/."""
    os.makedirs(out, exist_ok=True)
    for name, (src, tgt) in splits.items():
        write_lines(os.path.join(out, f"{name}.src"), src)
        write_lines(os.path.join(out, f"{name}.tgt"), tgt)
    if plm:
        encode_and_binarize(out, plm, os.path.join(out, "tok"), os.path.join(out, "data-bin"), src="src", tgt="tgt",
                            workers=workers)
    return {name: len(src) for name, (src, _) in splits.items()}


def question_generation(xglue, out, langs, mt=None, translate_sides=("question",), plm=None, workers=1):
    """OUT/qg/en-<l>: English passages -> questions in l (machine-translated for l != en);
    valid/test: XGLUE's l->l dev/test."""
    def path(lang, side, split):
        return os.path.join(xglue, f"xglue.qg.{lang}.{side}.{split}")

    passages, questions = read_pair(path("en", "src", "train"), path("en", "tgt", "train"))
    manifest = {}
    for lang in langs:
        if lang not in XGLUE_QG_LANGS:
            raise ValueError(f"XGLUE QG has no {lang} test set (languages: {', '.join(XGLUE_QG_LANGS)})")
        src, tgt = passages, questions
        if lang != "en":
            if not mt:
                raise ValueError(f"the En->{lang} training questions are machine translations: pass --mt")
            cache = os.path.join(out, "qg", "mt")
            os.makedirs(cache, exist_ok=True)
            tgt = translate(questions, mt, "en", lang, os.path.join(cache, f"train.question.{lang}"))
            if "passage" in translate_sides:
                src = translate(passages, mt, "en", lang, os.path.join(cache, f"train.passage.{lang}"))
        splits = {"train": (src, tgt), "valid": read_pair(path(lang, "src", "dev"), path(lang, "tgt", "dev")),
                  "test": read_pair(path(lang, "src", "test"), path(lang, "tgt", "test"))}
        manifest[f"en-{lang}"] = write_direction(os.path.join(out, "qg", f"en-{lang}"), splits, plm, workers)
    return manifest


def story_generation(mtg, out, langs, pattern="{lang}/{split}.{side}", plm=None, workers=1):
    """OUT/sg/<l>-en: story context in l -> English continuation (multi-way: line i with line i)."""
    def path(lang, split, side):
        return os.path.join(mtg, pattern.format(lang=lang, split=split, side=side))

    manifest = {}
    for lang in langs:
        splits = {}
        for name, split in (("train", "train"), ("valid", "dev"), ("test", "test")):
            src, tgt = read_lines(path(lang, split, "src")), read_lines(path("en", split, "tgt"))
            if len(src) != len(tgt):
                raise ValueError(f"MTG is multi-way parallel, but {path(lang, split, 'src')} has {len(src)} lines "
                                 f"and {path('en', split, 'tgt')} {len(tgt)}")
            splits[name] = (src, tgt)
        manifest[f"{lang}-en"] = write_direction(os.path.join(out, "sg", f"{lang}-en"), splits, plm, workers)
    return manifest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="task", required=True)
    qg = sub.add_parser("qg", help="XGLUE question generation, En->X with machine-translated training questions")
    qg.add_argument("--xglue", required=True, help="XGLUE's QG directory (xglue.qg.<l>.{src,tgt}.{train,dev,test})")
    qg.add_argument("--langs", default="en,de,fr", help="target languages (Table 3: en,de,fr)")
    qg.add_argument("--mt", help="fairseq-plm-interactive arguments of the MT model, with {src} and {tgt}")
    qg.add_argument("--translate", default="question",
                    help="what of the English training set to translate: question (default) or passage,question")
    sg = sub.add_parser("sg", help="MTG story generation, X->En")
    sg.add_argument("--mtg", required=True, help="MTG's story-generation directory")
    sg.add_argument("--langs", default="en,de,fr", help="source languages (Table 3: en,de,fr)")
    sg.add_argument("--mtg-pattern", default="{lang}/{split}.{side}",
                    help="file names under --mtg, with {lang}, {split} (train/dev/test), {side} (src/tgt)")
    for p in (qg, sg):
        p.add_argument("--out", required=True)
        p.add_argument("--plm", help="also tokenize and binarize each direction with this PLM (XLM-R)")
        p.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    langs = [x.strip() for x in args.langs.split(",") if x.strip()]
    try:
        if args.task == "qg":
            sides = tuple(x.strip() for x in args.translate.split(","))
            if not set(sides) <= {"question", "passage"}:
                ap.error(f"--translate {args.translate}: question and/or passage")
            manifest = question_generation(args.xglue, args.out, langs, args.mt, sides, args.plm, args.workers)
        else:
            manifest = story_generation(args.mtg, args.out, langs, args.mtg_pattern, args.plm, args.workers)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"sga_generation_data: error: {e}")
    with open(os.path.join(args.out, f"{args.task}-manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    for direction, sizes in manifest.items():
        print(f"{args.task} {direction}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
