"""Data for the MPT recipes: the external parallel corpus, and a small synthetic NLI task.

    python -m fairseq_plm.recipes.mpt_data paws15 --pawsx-dir x-final --out data/parallel.tsv
    python -m fairseq_plm.recipes.mpt_data paws15-translate --english x-final/en/train.tsv --out data/parallel.tsv \
        --translate "fairseq-interactive MODEL_DATA --path MODEL.pt --source-lang en --target-lang {lang} ..."
    python -m fairseq_plm.recipes.mpt_data xnli-parallel --xnli-file XNLI-1.0/xnli.dev.tsv --out data/parallel_xnli.tsv
    python -m fairseq_plm.recipes.mpt_data gettext --out data/parallel.tsv
    python -m fairseq_plm.recipes.mpt_data catalog-task --out catalog/
    python -m fairseq_plm.recipes.mpt_data synthetic --out synthetic/

* ``paws15``: PAWS-15 as MPT §IV-A builds it: 500 English PAWS-X training pairs drawn with a
  seed, each paired with its translation into one randomly chosen target language. The paper
  machine-translated into 14 XNLI languages with Google Translate; offline we take PAWS-X's
  own (machine-)translated training pairs, matched by ``id``, so the target languages are
  PAWS-X's (de, es, fr, ja, ko, zh).
* ``paws15-translate``: PAWS-15 as the paper built it, with a translation system of your own:
  500 English PAWS(-X) training pairs drawn with a seed, both sentences translated into every
  one of ``--langs`` (default: XNLI's 14 target languages) by the command ``--translate``
  (``{lang}`` is replaced by the target language; ``--lang-command LANG=CMD`` overrides it per
  language), which reads English sentences on stdin, one per line, and writes either
  fairseq-interactive's output (``D-<id>`` lines, e.g. ``fairseq-interactive`` or this
  package's ``fairseq-plm-interactive`` with a multilingual or per-language model) or one
  translation per line. ``--out`` then pairs each English example with its translation into one
  language drawn at random, as §IV-A describes (500 pairs in 14 languages); ``--all-pairs``
  keeps all n x 14. Translations are cached per language in ``<out>.work/`` (a killed run
  resumes with the languages it has not finished).
* ``xnli-parallel``: "w/o external data" of Table II: the parallel pairs come from XNLI itself
  (an unlabelled English dev pair and the same pair, by ``pairID``, in a random other language).
* ``gettext``: a real parallel corpus that exists on every Debian machine (the English msgid
  and translated msgstr of /usr/share/locale catalogs), two messages per "sentence pair".
* ``catalog-task``: a real cross-lingual 3-way sentence-pair task from the gettext catalogs
  (is the hypothesis message from the same program as the premise, another program of its
  package, or another package?), English train/dev, test sets in every catalog language, dev and
  test messages from the band the demo PLM never saw, parallel corpora from the rest; see
  ``fairseq_plm.data.catalog_task``. What ``mpt_compare`` runs on.
* ``synthetic``: an NLI task a tiny model learns in seconds (for tests and the CPU demo):
  premises are four words of set A; an entailed hypothesis repeats one of them, a
  contradicted one adds "not", a neutral one uses a word of the disjoint set B. The "de" test
  set spells every word backwards (a different surface form for the same task), and
  ``synthetic_parallel`` pairs English inputs with those "translations".
"""

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
from typing import Dict, List, Optional

from ..data.nli import LABELS, XNLI_LANGUAGES, write_tsv
from ..plm.errors import FairseqPLMError

PAWSX_LANGUAGES = ("de", "es", "fr", "ja", "ko", "zh")
XNLI_TARGETS = tuple(lang for lang in XNLI_LANGUAGES if lang != "en")


def _pick_target(rng, langs, available):
    choices = [lang for lang in langs if lang in available]
    return rng.choice(choices) if choices else None


def read_paws(path):
    """{id: row} of a PAWS / PAWS-X .tsv (header id, sentence1, sentence2, label)."""
    if not os.path.exists(path):
        raise FairseqPLMError(f"PAWS-X file not found: {path}")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if not {"id", "sentence1", "sentence2"} <= set(header):
            raise FairseqPLMError(f"{path}: expected PAWS columns id, sentence1, sentence2 (header: {header})")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f if line.strip()]
    return {r["id"]: r for r in rows if r.get("sentence1") and r.get("sentence2")}


def _shuffled_ids(english, seed):
    rng = random.Random(seed)
    ids = sorted(english, key=lambda i: int(i) if i.isdigit() else i)
    rng.shuffle(ids)
    return rng, ids


def paws15(pawsx_dir, n=500, seed=1, langs=PAWSX_LANGUAGES) -> List[dict]:
    """PAWS-15-style rows from a PAWS-X ``x-final`` directory (en/train.tsv and
    <lang>/translated_train.tsv, columns id, sentence1, sentence2, label)."""
    english = read_paws(os.path.join(pawsx_dir, "en", "train.tsv"))
    translated = {lang: read_paws(os.path.join(pawsx_dir, lang, "translated_train.tsv")) for lang in langs}
    rng, ids = _shuffled_ids(english, seed)
    rows = []
    for i in ids:
        lang = _pick_target(rng, langs, [lang for lang in langs if i in translated[lang]])
        if lang is None:
            continue
        e, t = english[i], translated[lang][i]
        rows.append({"src_premise": e["sentence1"], "src_hypothesis": e["sentence2"],
                     "tgt_premise": t["sentence1"], "tgt_hypothesis": t["sentence2"], "tgt_language": lang})
        if len(rows) == n:
            break
    return rows


# ------------------------------------------------------------------------------ PAWS-15 by translation

def parse_translations(output: str, n: int, what: str) -> List[str]:
    """n translations from a translation command's stdout: fairseq-interactive / -generate
    ``D-<id>\t<score>\t<text>`` lines (the first hypothesis of each id), else plain lines."""
    hyps = {}
    for line in output.splitlines():
        m = re.match(r"^D-(\d+)\t[^\t]*\t?(.*)$", line)
        if m and int(m.group(1)) not in hyps:
            hyps[int(m.group(1))] = m.group(2)
    if hyps:
        missing = [i for i in range(n) if i not in hyps]
        if missing:
            raise FairseqPLMError(f"{what}: no translation (D- line) of input line {missing[0] + 1} "
                                  f"({len(missing)} of {n} missing; a sentence too long for the model?)")
        return [hyps[i] for i in range(n)]
    lines = output.splitlines()
    if len(lines) != n:
        raise FairseqPLMError(f"{what}: {len(lines)} output lines (and no fairseq D- lines) for {n} input sentences")
    return lines


def translate(sentences: List[str], command: str, lang: str, cache: Optional[str] = None) -> List[str]:
    """Translate ``sentences`` into ``lang`` with a shell-free command line ({lang} replaced);
    the result is cached in ``cache`` (reused when it holds as many lines)."""
    if cache and os.path.exists(cache):
        with open(cache, encoding="utf-8") as f:
            done = f.read().split("\n")[:-1]
        if len(done) == len(sentences):
            return done
    argv = shlex.split(command.replace("{lang}", lang))
    if not argv:
        raise FairseqPLMError(f"--translate for {lang}: empty command")
    try:
        p = subprocess.run(argv, input="\n".join(sentences) + "\n", capture_output=True, text=True)
    except OSError as e:
        raise FairseqPLMError(f"--translate for {lang}: cannot run {argv[0]!r} ({e.strerror})") from None
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no error output)"])[-1]
        raise FairseqPLMError(f"--translate for {lang}: {argv[0]} exited with status {p.returncode}: {last}")
    out = [t.replace("\t", " ").strip() for t in parse_translations(p.stdout, len(sentences), f"--translate for {lang}")]
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        with open(cache + ".tmp", "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in out))
        os.replace(cache + ".tmp", cache)
    return out


def paws15_translate(english_tsv, command, langs=XNLI_TARGETS, n=500, seed=1, work_dir=None,
                     lang_commands: Optional[Dict[str, str]] = None, all_pairs=False, log=print) -> List[dict]:
    """PAWS-15 rows (MPT §IV-A): n English PAWS pairs drawn with ``seed``, translated into every
    language of ``langs``; each English pair is kept with its translation into one language
    drawn at random (the paper's 500 mixed-language pairs), or with all (``all_pairs``)."""
    english = read_paws(english_tsv)
    rng, ids = _shuffled_ids(english, seed)
    chosen = ids[:n]
    if len(chosen) < n:
        raise FairseqPLMError(f"{english_tsv} has only {len(chosen)} pairs with both sentences; --n {n}")
    sentences = [english[i][k].strip() for i in chosen for k in ("sentence1", "sentence2")]
    lang_commands = lang_commands or {}
    translations = {}
    for lang in langs:
        cache = os.path.join(work_dir, f"{lang}.txt") if work_dir else None
        cmd = lang_commands.get(lang, command)
        if not cmd:
            raise FairseqPLMError(f"no translation command for {lang}: give --translate or --lang-command {lang}=CMD")
        log(f"translating {len(sentences)} sentences into {lang}" + (f" (cache {cache})" if cache else ""))
        translations[lang] = translate(sentences, cmd, lang, cache)
    rows = []
    for j in range(n):
        targets = list(langs) if all_pairs else [rng.choice(list(langs))]
        for lang in targets:
            t = translations[lang]
            rows.append({"src_premise": sentences[2 * j], "src_hypothesis": sentences[2 * j + 1],
                         "tgt_premise": t[2 * j], "tgt_hypothesis": t[2 * j + 1], "tgt_language": lang})
    return rows


def xnli_parallel(xnli_file, n=500, seed=1, source_lang="en") -> List[dict]:
    """Unlabelled parallel pairs from an XNLI dev/test file (same ``pairID`` in two languages)."""
    by_pair = {}
    with open(xnli_file, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(header, line.rstrip("\n").split("\t")))
            by_pair.setdefault(r["pairID"], {})[r["language"]] = r
    rng = random.Random(seed)
    keys = sorted(by_pair)
    rng.shuffle(keys)
    rows = []
    for k in keys[:n]:
        langs = by_pair[k]
        others = sorted(lang for lang in langs if lang != source_lang)
        if source_lang not in langs or not others:
            continue
        e, t = langs[source_lang], langs[rng.choice(others)]
        rows.append({"src_premise": e["sentence1"], "src_hypothesis": e["sentence2"],
                     "tgt_premise": t["sentence1"], "tgt_hypothesis": t["sentence2"], "tgt_language": t["language"]})
    return rows


def gettext_parallel(n=500, seed=1, langs=("de", "fr", "es", "ru", "zh_CN", "tr", "vi", "bg", "el", "ar")) -> List[dict]:
    from ..data.gettext_corpus import read_catalogs

    catalogs = {}
    for lang in langs:
        try:
            pairs = read_catalogs(lang)
        except FileNotFoundError:
            continue
        if len(pairs) >= 2:
            catalogs[lang] = pairs
    if not catalogs:
        raise FairseqPLMError(f"no gettext catalogs for any of {', '.join(langs)} under /usr/share/locale")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        lang = rng.choice(sorted(catalogs))
        (e1, t1), (e2, t2) = rng.sample(catalogs[lang], 2)
        rows.append({"src_premise": e1, "src_hypothesis": e2, "tgt_premise": t1, "tgt_hypothesis": t2,
                     "tgt_language": lang.split("_")[0]})
    return rows


# ------------------------------------------------------------------------------ synthetic NLI

SET_A = ("river", "stone", "garden", "window", "market", "forest", "bridge", "kitchen", "letter", "mountain",
         "candle", "harbor")
SET_B = ("planet", "violin", "desert", "tunnel", "ladder", "pepper", "island", "museum")


def _foreign(words, lang):
    return words if lang == "en" else [w[::-1] for w in words]


def synthetic_example(rng, label, lang="en"):
    premise = rng.sample(SET_A, 4)
    if label == 0:  # entailment: repeats a premise word
        hyp = ["the", rng.choice(premise), "is", "here"]
    elif label == 2:  # contradiction: negated
        hyp = ["the", rng.choice(premise), "is", "not", "here"]
    else:  # neutral: a word the premise never uses
        hyp = ["the", rng.choice(SET_B), "is", "here"]
    return {"premise": " ".join(_foreign(["we", "saw"] + premise, lang)),
            "hypothesis": " ".join(_foreign(hyp, lang)), "label": LABELS[label], "language": lang}


def synthetic_nli(out_dir, n_train=60, n_valid=30, n_test=60, test_langs=("en", "de"), seed=1):
    """train/valid/test.tsv of the synthetic task (balanced labels)."""
    rng = random.Random(seed)
    write_tsv(os.path.join(out_dir, "train.tsv"), [synthetic_example(rng, i % 3) for i in range(n_train)])
    write_tsv(os.path.join(out_dir, "valid.tsv"), [synthetic_example(rng, i % 3) for i in range(n_valid)])
    write_tsv(os.path.join(out_dir, "test.tsv"),
              [synthetic_example(rng, i % 3, lang) for lang in test_langs for i in range(n_test)])
    return out_dir


def synthetic_parallel(n=60, seed=2, lang="de") -> List[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        e = synthetic_example(random.Random(rng.random()), i % 3)
        t = {k: " ".join(_foreign(v.split(), lang)) for k, v in e.items() if k in ("premise", "hypothesis")}
        rows.append({"src_premise": e["premise"], "src_hypothesis": e["hypothesis"], "tgt_premise": t["premise"],
                     "tgt_hypothesis": t["hypothesis"], "tgt_language": lang})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("paws15", help="PAWS-15-style corpus from PAWS-X")
    a.add_argument("--pawsx-dir", required=True, help="PAWS-X x-final directory")
    a.add_argument("--langs", default=",".join(PAWSX_LANGUAGES))
    t = sub.add_parser("paws15-translate", help="PAWS-15 by translating English PAWS pairs with your own model",
                       description="PAWS-15 (MPT §IV-A): n English PAWS pairs translated into every --langs "
                                   "language by a translation command; see the module help")
    t.add_argument("--english", required=True, help="English PAWS(-X) training file (x-final/en/train.tsv)")
    t.add_argument("--translate", default="", help="translation command reading English lines on stdin, {lang} "
                                                   "replaced by the target language (fairseq-interactive output or "
                                                   "one line per sentence)")
    t.add_argument("--lang-command", action="append", default=[], metavar="LANG=CMD",
                   help="the command for one language (repeatable), e.g. a bilingual model per language")
    t.add_argument("--langs", default=",".join(XNLI_TARGETS), help="target languages (default: XNLI's 14)")
    t.add_argument("--all-pairs", action="store_true", help="keep every language's translation (n x langs "
                                                            "pairs) instead of one random language per pair")
    b = sub.add_parser("xnli-parallel", help="parallel pairs from an XNLI dev/test file (w/o external data)")
    b.add_argument("--xnli-file", required=True)
    c = sub.add_parser("gettext", help="parallel pairs from the gettext catalogs")
    g = sub.add_parser("catalog-task", help="the gettext-catalog 3-way task (train/dev/test.<lang>/parallel .tsv)",
                       description=catalog_doc())
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--langs", default=None, help="catalog languages (default: the XNLI languages with catalogs: "
                                                 "ar,bg,de,el,es,fr,hi,ru,th,tr,vi,zh_CN)")
    g.add_argument("--root", default="/usr/share/locale", help="gettext catalog root")
    g.add_argument("--packages", help="JSON {domain: package} instead of asking dpkg which package installs each "
                                      "catalog")
    g.add_argument("--n", type=int, default=500, help="pairs in parallel.tsv and parallel_task.tsv")
    g.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("synthetic", help="synthetic NLI task (train/valid/test.tsv) and parallel.tsv")
    for q in (a, b, c, t):
        q.add_argument("--out", required=True, help="output .tsv")
        q.add_argument("--n", type=int, default=500, help="parallel pairs (PAWS-15: 500)")
        q.add_argument("--seed", type=int, default=1)
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    try:
        run(args)
    except FairseqPLMError as e:
        sys.exit(f"mpt_data {args.cmd}: error: {e}")


def catalog_doc():
    from ..data import catalog_task

    return catalog_task.__doc__


def run(args):
    if args.cmd == "catalog-task":
        from ..data.catalog_task import DEFAULT_LANGS, build

        packages = None
        if args.packages:
            try:
                with open(args.packages, encoding="utf-8") as f:
                    packages = json.load(f)
            except (OSError, ValueError) as e:
                raise FairseqPLMError(f"--packages {args.packages}: {e}") from None
        langs = tuple(args.langs.split(",")) if args.langs else DEFAULT_LANGS
        try:
            build(args.out, langs, args.root, seed=args.seed, n_parallel=args.n, packages=packages)
        except FileNotFoundError as e:
            raise FairseqPLMError(str(e)) from None
        return
    if args.cmd == "synthetic":
        synthetic_nli(args.out, seed=args.seed)
        write_tsv(os.path.join(args.out, "parallel.tsv"), synthetic_parallel(seed=args.seed + 1))
        print(f"wrote {args.out}/train.tsv valid.tsv test.tsv parallel.tsv")
        return
    if args.cmd == "paws15":
        rows = paws15(args.pawsx_dir, args.n, args.seed, tuple(args.langs.split(",")))
    elif args.cmd == "paws15-translate":
        lang_commands = {}
        for spec in args.lang_command:
            lang, sep, cmd = spec.partition("=")
            if not sep or not lang.strip() or not cmd.strip():
                raise FairseqPLMError(f"--lang-command {spec!r}: expected LANG=COMMAND")
            lang_commands[lang.strip()] = cmd
        langs = tuple(x.strip() for x in args.langs.split(",") if x.strip())
        rows = paws15_translate(args.english, args.translate, langs, args.n, args.seed, args.out + ".work",
                                lang_commands, args.all_pairs)
    elif args.cmd == "xnli-parallel":
        rows = xnli_parallel(args.xnli_file, args.n, args.seed)
    else:
        rows = gettext_parallel(args.n, args.seed)
    if not rows:
        raise SystemExit("no parallel pairs found")
    write_tsv(args.out, rows)
    print(f"wrote {len(rows)} parallel pairs to {args.out}")


if __name__ == "__main__":
    main()
