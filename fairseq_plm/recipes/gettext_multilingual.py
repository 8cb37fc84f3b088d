"""A multilingual X->En (or En->X) corpus from the gettext catalogs: SGA's prompt sharing and
zero-shot setting (Table 2) in small, on real text.

    python -m fairseq_plm.recipes.gettext_multilingual --out DIR \\
        [--langs ar,de,es,fr,he,it,ro,ru,tr,vi] [--zero-shot kk,be,eu,ms,bs] \\
        [--direction x-en | en-x [--target-tags]] [--valid 200] [--test 200] [--seed 1] \\
        [--max-train-per-lang N] [--plm PLM_DIR [--data-bin DIR]]

The defaults are the paper's 10 supervised and 5 zero-shot TED languages; every Debian
machine has gettext catalogs for them (``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``).

Files (X->En; the non-English side is called ``src`` whatever its language)::

    DIR/train.src  train.en      every supervised language, mixed and shuffled (--seed)
    DIR/valid.src  valid.en      the supervised languages' valid sets, one after another
    DIR/test.src   test.en       the supervised languages' test sets, one after another
    DIR/test-<l>.src test-<l>.en one test set per language, supervised and zero-shot
    DIR/corpus.json              languages, sizes, and the fairseq subset name of each test set

which ``fairseq-preprocess --task plm_translation -s src -t en`` reads as
``--trainpref DIR/train --validpref DIR/valid --testpref DIR/test,DIR/test-ar,DIR/test-de,...``
(tokenized with ``fairseq-plm-encode`` first): the test sets become subsets ``test`` (all
supervised), ``test1``, ``test2``, ... in the order ``corpus.json`` lists under
``"subsets"``. ``--plm`` runs both steps and writes ``DIR/data-bin`` (or ``--data-bin``).

En->X (``--direction en-x``) writes ``*.en`` -> ``*.tgt`` (``-s en -t tgt``). SGA has no
target-language signal of its own, so several target languages need ``--target-tags``
(``<2de>`` etc. in front of the English source); zero-shot languages are X->En only.

Splits: sentence pairs are deduplicated (``read_catalogs`` keeps one translation per English
sentence and language; identical pairs across languages are kept once). Every language's test
set is the first ``--test`` of its pairs in the order of an MD5 hash of the English side, a
global order, so test sets of different languages share many English sentences; valid sets
follow in that order, skipping any English sentence of any test set. No English sentence of
any test or valid set occurs in training, with any language.
"""

import argparse
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from ..data.gettext_corpus import read_catalogs
from .common import USER_DIR, run_cli

SUPERVISED = ("ar", "de", "es", "fr", "he", "it", "ro", "ru", "tr", "vi")  # SGA §5.1: TED, most data
ZERO_SHOT = ("kk", "be", "eu", "ms", "bs")                                 # least data, never trained on

Pair = Tuple[str, str]  # (non-English sentence, English sentence)


@dataclass
class MultilingualCorpus:
    train: List[Tuple[str, str, str]]   # (language, x, en), mixed and shuffled
    valid: Dict[str, List[Pair]]        # supervised language -> pairs
    test: Dict[str, List[Pair]]         # supervised and zero-shot language -> pairs
    supervised: List[str]
    zero_shot: List[str]
    skipped: List[str] = field(default_factory=list)  # languages without catalogs here


def _hash_order(pairs):
    return sorted(pairs, key=lambda p: hashlib.md5(p[1].encode()).hexdigest())


def _read(langs, root, skip_missing, skipped):
    found = {}
    for lang in langs:
        try:
            found[lang] = [(x, en) for en, x in read_catalogs(lang, root)]
        except FileNotFoundError:
            if not skip_missing:
                raise
            skipped.append(lang)
    return found


def build_corpus(langs=SUPERVISED, zero_shot=ZERO_SHOT, valid=200, test=200, seed=1,
                 root="/usr/share/locale", max_train_per_lang=None, skip_missing=True):
    """Read the catalogs and split them; see the module docstring for the rules."""
    overlap = set(langs) & set(zero_shot)
    if overlap:
        raise ValueError(f"languages both supervised and zero-shot: {', '.join(sorted(overlap))}")
    skipped = []
    sup = _read(langs, root, skip_missing, skipped)
    zs = _read(zero_shot, root, skip_missing, skipped)
    if not sup:
        raise FileNotFoundError(f"no gettext catalogs under {root} for any of {', '.join(langs)}")
    ordered = {lang: _hash_order(pairs) for lang, pairs in {**sup, **zs}.items()}
    tests = {lang: pairs[:test] for lang, pairs in ordered.items()}
    held_out = {en for pairs in tests.values() for _, en in pairs}
    valids = {}
    for lang in sup:
        valids[lang] = [p for p in ordered[lang] if p[1] not in held_out][:valid]
    held_out |= {en for pairs in valids.values() for _, en in pairs}
    rng = random.Random(seed)
    train, seen = [], set()
    for lang in sup:
        rows = [p for p in ordered[lang] if p[1] not in held_out and p not in seen]
        if max_train_per_lang is not None:
            rows = rows[:max_train_per_lang]  # hash order: a deterministic sample
        seen.update(rows)
        train.extend((lang, x, en) for x, en in rows)
    rng.shuffle(train)
    return MultilingualCorpus(train, valids, tests, list(sup), list(zs), skipped)


def _write(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def write_corpus(corpus, out, direction="x-en", target_tags=False):
    """Raw text files and ``corpus.json`` (see the module docstring); returns the manifest."""
    if direction not in ("x-en", "en-x"):
        raise ValueError(f"direction {direction!r}: expected x-en or en-x")
    if direction == "en-x" and corpus.zero_shot:
        raise ValueError("zero-shot languages are an X->En setting (SGA Table 2); drop them for en-x")
    if direction == "en-x" and len(corpus.supervised) > 1 and not target_tags:
        raise ValueError("en-x with several target languages needs --target-tags: nothing else tells "
                         "the model which language to write")
    src, tgt = ("src", "en") if direction == "x-en" else ("en", "tgt")
    os.makedirs(out, exist_ok=True)

    def sides(rows):  # rows: (lang, x, en) -> (source lines, target lines)
        if direction == "x-en":
            return [x for _, x, _ in rows], [en for _, _, en in rows]
        tag = (lambda lang: f"<2{lang}> ") if target_tags else (lambda lang: "")
        return [tag(lang) + en for lang, _, en in rows], [x for _, x, _ in rows]

    def write(prefix, rows):
        s, t = sides(rows)
        _write(os.path.join(out, f"{prefix}.{src}"), s)
        _write(os.path.join(out, f"{prefix}.{tgt}"), t)
        return len(rows)

    def tagged(split, langs):
        return [(lang, x, en) for lang in langs for x, en in split[lang]]

    write("train", corpus.train)
    write("valid", tagged(corpus.valid, corpus.supervised))
    subsets = {"test": {"file": "test", "languages": corpus.supervised,
                        "sentences": write("test", tagged(corpus.test, corpus.supervised))}}
    for i, lang in enumerate(corpus.supervised + corpus.zero_shot, start=1):
        subsets[f"test{i}"] = {"file": f"test-{lang}", "languages": [lang],
                               "zero_shot": lang in corpus.zero_shot,
                               "sentences": write(f"test-{lang}", tagged(corpus.test, [lang]))}
    per_lang = {lang: sum(1 for row in corpus.train if row[0] == lang) for lang in corpus.supervised}
    manifest = {
        "direction": direction, "source": src, "target": tgt, "target_tags": target_tags,
        "supervised": corpus.supervised, "zero_shot": corpus.zero_shot, "skipped": corpus.skipped,
        "train": {"sentences": len(corpus.train), "per_language": per_lang},
        "valid": {"sentences": sum(len(v) for v in corpus.valid.values()),
                  "per_language": {k: len(v) for k, v in corpus.valid.items()}},
        "subsets": subsets,
    }
    with open(os.path.join(out, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
    return manifest


def binarize(raw, manifest, plm, data_bin, workers=1):
    """fairseq-plm-encode every file, then one fairseq-preprocess run whose test subsets are
    ``test``, ``test1``, ... in the manifest's order."""
    src, tgt = manifest["source"], manifest["target"]
    tok = os.path.join(raw, "tok")
    prefixes = ["train", "valid"] + [s["file"] for s in manifest["subsets"].values()]
    files = [f"{p}.{side}" for p in prefixes for side in (src, tgt)]
    run_cli("fairseq-plm-encode", "--tokenizer", plm, "--inputs", *[os.path.join(raw, f) for f in files],
            "--outputs", *[os.path.join(tok, f) for f in files])
    tests = ",".join(os.path.join(tok, s["file"]) for s in manifest["subsets"].values())
    run_cli("fairseq-preprocess", "--user-dir", USER_DIR, "--task", "plm_translation", "-s", src, "-t", tgt,
            "--trainpref", os.path.join(tok, "train"), "--validpref", os.path.join(tok, "valid"),
            "--testpref", tests, "--srcdict", plm, "--tgtdict", plm, "--destdir", data_bin, "--workers", workers)


def _langs(text):
    return [lang.strip() for lang in text.split(",") if lang.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for the raw text files")
    ap.add_argument("--langs", default=",".join(SUPERVISED), help="supervised languages (comma list)")
    ap.add_argument("--zero-shot", help="test-only languages, never in training (comma list; '' for none; "
                                        f"default for x-en: {','.join(ZERO_SHOT)}, for en-x: none)")
    ap.add_argument("--direction", choices=("x-en", "en-x"), default="x-en")
    ap.add_argument("--target-tags", action="store_true", help="en-x: prefix the source with <2xx>")
    ap.add_argument("--valid", type=int, default=200, help="valid sentences per supervised language")
    ap.add_argument("--test", type=int, default=200, help="test sentences per language")
    ap.add_argument("--max-train-per-lang", type=int, help="cap the training pairs of each language")
    ap.add_argument("--seed", type=int, default=1, help="shuffling seed of the mixed training data")
    ap.add_argument("--locale-root", default="/usr/share/locale")
    ap.add_argument("--strict", action="store_true", help="fail on a language without catalogs (default: skip it)")
    ap.add_argument("--plm", help="also tokenize with this PLM and binarize (fairseq-preprocess --task plm_translation)")
    ap.add_argument("--data-bin", help="binarized output (default: OUT/data-bin)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        zero_shot = _langs(args.zero_shot if args.zero_shot is not None else
                           ",".join(ZERO_SHOT) if args.direction == "x-en" else "")
        corpus = build_corpus(_langs(args.langs), zero_shot, args.valid, args.test, args.seed,
                              args.locale_root, args.max_train_per_lang, skip_missing=not args.strict)
        manifest = write_corpus(corpus, args.out, args.direction, args.target_tags)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"gettext_multilingual: error: {e}")
    if corpus.skipped:
        print(f"skipped (no catalogs under {args.locale_root}): {', '.join(corpus.skipped)}")
    print(f"train: {manifest['train']['sentences']} pairs ("
          + ", ".join(f"{k} {v}" for k, v in manifest["train"]["per_language"].items()) + ")")
    print(f"valid: {manifest['valid']['sentences']} pairs")
    for name, s in manifest["subsets"].items():
        kind = "zero-shot" if s.get("zero_shot") else "supervised"
        print(f"{name:6s} {s['file']}: {s['sentences']} pairs ({kind}, {'+'.join(s['languages'])})")
    if args.plm:
        data_bin = args.data_bin or os.path.join(args.out, "data-bin")
        binarize(args.out, manifest, args.plm, data_bin, args.workers)
        print(f"binarized into {data_bin} (subsets as listed)")


if __name__ == "__main__":
    main()
