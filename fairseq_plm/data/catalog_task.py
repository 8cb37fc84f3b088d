"""A real cross-lingual 3-way sentence-pair classification task from the machine's gettext
catalogs, for MPT's comparison (Tables I-II) where no NLI data exists offline.

Task ("which program said it?"). Premise A and hypothesis B are two messages of the catalogs
(/usr/share/locale/<lang>/LC_MESSAGES/<domain>.mo), both in the same language. The label says
where B comes from, relative to A:

    entailment    ("same")       B is a message of the same program (the same catalog domain),
    neutral       ("similar")    B comes from another program of the same software package,
    contradiction ("different")  B comes from another package,

where a program is a catalog domain (duplicate domains, e.g. ``iso_639-3`` / ``iso_639_3``,
merged when they share over half their messages) and a package is the Debian source package
that installs the catalog (``dpkg-query``; e.g. ``gas``, ``ld`` and ``opcodes`` are binutils,
``psql-15`` and ``pg_dump-15`` PostgreSQL, ``iso_639-3`` and ``iso_3166-2`` iso-codes). The labels
come from the data itself, and every example is asked in every language it is translated to:
the test set of language X is the translation, by the catalogs' own human translators, of the
English examples whose two messages both have an X translation (as XNLI's test sets are
translations of English pairs). Solving it needs what a program's messages are about (an
assembler's vs a linker's; a language name vs a region name vs a currency), not a surface match:
the labels are balanced for every premise (one hypothesis of each label per premise), so the
premise alone says nothing, and ``surface_baselines`` reports how far word overlap gets.

Splits and hold-out. Only messages of exactly one program are used (a message shipped by
several programs has no single origin). Development and test messages, premises and
hypotheses alike, come from the reserved band of the English hash space that the package's
demo PLM pre-training never sees, in any language (``recipes.pretrain_common.in_reserved_band``):
development from its lower half, test from its upper half, so dev and test share no message.
Training examples (English) and the parallel corpora come from messages outside the band.

Files written by ``build`` (the ``mpt_nli`` task reads them; labels entailment / neutral /
contradiction in the file):

    train.tsv               English examples (k-shot training draws from it)
    dev.tsv                 English development examples (k-shot development)
    test.<lang>.tsv         one per language (English included)
    parallel.tsv            external parallel corpus for MPT's alignment: n random message pairs
                            (any programs) with their translation into one random test language
                            each (PAWS-15's shape: 500 English pairs, mixed target languages)
    parallel_task.tsv       Table II "w/o external data": unlabelled task examples (training
                            messages) with their translations, instead of an external corpus
    task.json               languages, sizes, label words, the construction's parameters and
                            the surface baselines
"""

import collections
import glob
import hashlib
import json
import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set

from .gettext_corpus import catalog_pairs
from .nli import LABELS, write_tsv

# XNLI languages with catalogs on Debian machines and in the demo XLM-R's pre-training text
DEFAULT_LANGS = ("ar", "bg", "de", "el", "es", "fr", "hi", "ru", "th", "tr", "vi", "zh_CN")
LABEL_NAMES = {"entailment": "same program", "neutral": "same package, other program",
               "contradiction": "other package"}
# label words tried in order: the first set whose words are single tokens of the PLM is used
VERBALIZERS = ("entailment:same,neutral:similar,contradiction:different",
               "entailment:Yes,neutral:Maybe,contradiction:No",
               "entailment:yes,neutral:maybe,contradiction:no")


def lang_code(lang: str) -> str:
    """Catalog directory name -> the task's language code (zh_CN -> zh)."""
    return lang.split("_")[0].split("@")[0]


@dataclass
class Catalogs:
    """English message -> {language: translation}, the (merged) domain of every message, and the
    package of every domain."""
    translations: Dict[str, Dict[str, str]] = field(default_factory=dict)
    domains: Dict[str, Set[str]] = field(default_factory=dict)
    package: Dict[str, str] = field(default_factory=dict)
    files: Dict[str, List[str]] = field(default_factory=dict)  # domain -> its .mo files

    def origin(self, english):
        """(domain, package) of a message of exactly one program, else None."""
        ds = self.domains.get(english, ())
        if len(ds) != 1:
            return None
        d = next(iter(ds))
        return d, self.package.get(d, d)


def read_catalogs_with_domains(langs: Sequence[str], root: str = "/usr/share/locale",
                               max_chars: int = 120) -> Catalogs:
    """Every catalog of ``langs`` with the filters of ``gettext_corpus.read_catalogs`` (no
    format strings or markup, 2-30 words, not copied untranslated); the first translation of a
    message (catalogs in name order) is kept per language."""
    cats = Catalogs()
    for lang in langs:
        for path in sorted(glob.glob(os.path.join(root, lang, "LC_MESSAGES", "*.mo"))):
            domain = os.path.basename(path)[:-3]
            pairs = catalog_pairs(path, max_chars)
            if pairs is None:
                continue  # unreadable catalog
            cats.files.setdefault(domain, []).append(path)
            for src, tgt in pairs:
                cats.domains.setdefault(src, set()).add(domain)
                cats.translations.setdefault(src, {}).setdefault(lang_code(lang), tgt)
    merge_duplicate_domains(cats)
    return cats


def merge_duplicate_domains(cats: Catalogs, threshold: float = 0.5):
    """Domains sharing more than ``threshold`` of their messages (Jaccard) are one program
    (iso-codes installs iso_639-3 and iso_639_3 with the same content)."""
    members = collections.defaultdict(set)
    for english, ds in cats.domains.items():
        for d in ds:
            members[d].add(english)
    names = sorted(members)
    parent = {d: d for d in names}

    def find(d):
        while parent[d] != d:
            d = parent[d]
        return d
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            inter = len(members[a] & members[b])
            if inter and inter / len(members[a] | members[b]) > threshold:
                parent[find(b)] = find(a)
    rename = {d: find(d) for d in names}
    for english in cats.domains:
        cats.domains[english] = {rename[d] for d in cats.domains[english]}
    files = collections.defaultdict(list)
    for d, paths in cats.files.items():
        files[rename.get(d, d)].extend(paths)
    cats.files = dict(files)


def dpkg_source_packages(files: Dict[str, List[str]]) -> Dict[str, str]:
    """domain -> Debian source package of the package that installs its catalog (domains
    dpkg does not know are left out)."""
    paths = {p: d for d, ps in files.items() for p in ps}
    if not paths:
        return {}
    try:
        owners = subprocess.run(["dpkg-query", "-S", *sorted(paths)], capture_output=True, text=True).stdout
        sources = subprocess.run(["dpkg-query", "-W", "-f", "${binary:Package}\t${source:Package}\n"],
                                 capture_output=True, text=True).stdout
    except OSError:
        return {}
    source_of = {}
    for line in sources.splitlines():
        binary, _, source = line.partition("\t")
        source_of[binary] = source_of[binary.split(":")[0]] = source or binary
    out = {}
    for line in owners.splitlines():
        pkgs, sep, path = line.partition(": ")
        if not sep or path not in paths:
            continue
        pkg = pkgs.split(",")[0].strip()
        out.setdefault(paths[path], source_of.get(pkg, source_of.get(pkg.split(":")[0], pkg.split(":")[0])))
    return out


# ------------------------------------------------------------------------------ examples

def _md5_unit(text):
    return int(hashlib.md5(text.encode()).hexdigest(), 16) / 2 ** 128


def make_examples(premises: Sequence[str], pool: Sequence[str], cats: Catalogs, lang: Optional[str],
                  seed: int) -> List[dict]:
    """One example of each label for every premise that can have all three, hypotheses drawn
    (seeded) from ``pool``; with ``lang`` both messages must have a translation in it and the
    rows hold the translations (``lang`` None: English)."""
    def ok(e):
        return lang is None or lang in cats.translations.get(e, {})
    pool = [e for e in pool if ok(e) and cats.origin(e)]
    by_domain, by_package = collections.defaultdict(list), collections.defaultdict(list)
    for e in pool:
        d, p = cats.origin(e)
        by_domain[d].append(e)
        by_package[p].append(e)
    rng = random.Random(seed)
    rows = []
    for a in premises:
        if not ok(a) or cats.origin(a) is None:
            continue
        d, p = cats.origin(a)
        same = [e for e in by_domain[d] if e != a]
        similar = [e for e in by_package[p] if cats.origin(e)[0] != d]
        if not same or not similar or len(by_package) < 2:
            continue
        different = None
        while different is None:  # a message of another package, rejection-sampled from the pool
            e = pool[rng.randrange(len(pool))]
            if cats.origin(e)[1] != p:
                different = e
        for label, b in zip(LABELS, (rng.choice(same), rng.choice(similar), different)):
            text = (lambda m: m) if lang is None else (lambda m: cats.translations[m][lang])
            rows.append({"premise": text(a), "hypothesis": text(b), "label": label, "language": lang or "en",
                         "premise_en": a, "hypothesis_en": b})
    return rows


def parallel_pairs(messages: Sequence[str], cats: Catalogs, langs: Sequence[str], n: int, seed: int,
                   pairs: Optional[Sequence[tuple]] = None) -> List[dict]:
    """n parallel pairs (two messages and their translations into one random language of
    ``langs`` that has both); random message pairs, or the given (premise, hypothesis) pairs."""
    rng = random.Random(seed)
    rows, tries = [], 0
    while len(rows) < n and tries < 100 * n:
        tries += 1
        a, b = pairs[rng.randrange(len(pairs))] if pairs else rng.sample(messages, 2)
        both = [lang for lang in langs if lang in cats.translations.get(a, {}) and lang in cats.translations.get(b, {})]
        if not both:
            continue
        lang = rng.choice(both)
        rows.append({"src_premise": a, "src_hypothesis": b, "tgt_premise": cats.translations[a][lang],
                     "tgt_hypothesis": cats.translations[b][lang], "tgt_language": lang})
    return rows


# ------------------------------------------------------------------------------ surface baselines

def _words(text):
    return set(re.findall(r"\w+", text.lower()))


def _features(row):
    a, b = _words(row["premise"]), _words(row["hypothesis"])
    jac = len(a & b) / max(1, len(a | b))
    la, lb = len(row["premise"]), len(row["hypothesis"])
    return [jac, float(bool(a & b)), min(la, lb) / max(la, lb, 1), abs(la - lb) / 100.0]


def program_knowledge_baseline(messages: Sequence[str], cats: Catalogs, tests: Dict[str, Sequence[dict]]):
    """Accuracy (%) on English examples of a reader that *knows the programs*: a naive Bayes
    classifier of a message's program over character 2-4-grams, trained on every training
    message with its program (tens of thousands of labelled messages, not k-shot), labelling a
    pair by the predicted programs and packages (P(same program), P(same package) - P(same
    program), P(other package)). It shows the labels are learnable from what messages say."""
    try:
        import numpy as np
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.naive_bayes import MultinomialNB
    except ImportError:
        return {}
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True)
    clf = MultinomialNB(alpha=0.1).fit(vec.fit_transform(messages), [cats.origin(e)[0] for e in messages])
    packages = sorted({cats.package.get(d, d) for d in clf.classes_})
    to_pkg = np.array([[float(cats.package.get(d, d) == p) for p in packages] for d in clf.classes_])
    out = {}
    for name, rows in tests.items():
        rows = [r for r in rows if r["language"] == "en"]
        if not rows:
            continue
        pa = clf.predict_proba(vec.transform([r["premise"] for r in rows]))
        pb = clf.predict_proba(vec.transform([r["hypothesis"] for r in rows]))
        same = (pa * pb).sum(1)
        same_pkg = ((pa @ to_pkg) * (pb @ to_pkg)).sum(1)
        pred = np.stack([same, same_pkg - same, 1 - same_pkg], 1).argmax(1)
        gold = np.array([LABELS.index(r["label"]) for r in rows])
        out[name] = round(100.0 * float((pred == gold).mean()), 1)
    return out


def surface_baselines(train: Sequence[dict], tests: Dict[str, Sequence[dict]]) -> Dict[str, Dict[str, float]]:
    """Accuracy (%) of classifiers that see surface cues only, trained on the English training
    examples: ``overlap``, a logistic regression on word overlap and length features (language
    independent, so it transfers); ``bow``, a logistic regression on the pair's words (premise
    words, hypothesis words, shared words), which transfers to no other script. Chance is 33.3."""
    try:
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return {}
    y = [LABELS.index(r["label"]) for r in train]

    def bow(r):
        a, b = _words(r["premise"]), _words(r["hypothesis"])
        return {**{f"p={w}": 1 for w in a}, **{f"h={w}": 1 for w in b}, **{f"s={w}": 1 for w in a & b}}
    overlap = LogisticRegression(max_iter=2000).fit([_features(r) for r in train], y)
    vec = DictVectorizer()
    words = LogisticRegression(max_iter=2000, C=1.0).fit(vec.fit_transform([bow(r) for r in train]), y)
    out = {}
    for lang, rows in tests.items():
        if not rows:
            continue
        gold = [LABELS.index(r["label"]) for r in rows]
        acc = lambda pred: round(100.0 * sum(int(p == g) for p, g in zip(pred, gold)) / len(gold), 1)  # noqa: E731
        out[lang] = {"overlap": acc(overlap.predict([_features(r) for r in rows])),
                     "bow": acc(words.predict(vec.transform([bow(r) for r in rows])))}
    return out


# ------------------------------------------------------------------------------ build

def build(out_dir: str, langs: Sequence[str] = DEFAULT_LANGS, root: str = "/usr/share/locale", seed: int = 1,
          n_parallel: int = 500, max_train_premises: int = 3000, min_test: int = 30,
          in_band: Optional[Callable[[str], bool]] = None, band: Optional[float] = None,
          packages: Optional[Dict[str, str]] = None, log=print) -> dict:
    """Write the task's files to ``out_dir`` (see the module docstring); returns task.json.

    ``in_band``/``band``: the held-out band (default: the pre-training recipes' reserved band,
    md5(English)/2^128 < RESERVED_BAND); development messages come from its lower half, test
    messages from its upper half. ``packages``: domain -> package (default: dpkg, the domain
    itself for catalogs dpkg does not know). Languages with fewer than ``min_test`` test
    examples get no test set."""
    from ..recipes.pretrain_common import RESERVED_BAND, in_reserved_band

    if in_band is None:  # the demo PLM's hold-out rule itself
        in_band, band = in_reserved_band, RESERVED_BAND
    band = RESERVED_BAND if band is None else band
    cats = read_catalogs_with_domains(langs, root)
    if not cats.translations:
        raise FileNotFoundError(f"no gettext catalogs of {', '.join(langs)} under {root}")
    cats.package = dict(packages) if packages is not None else dpkg_source_packages(cats.files)
    codes = [lang_code(lang) for lang in langs]
    usable = sorted(e for e in cats.translations if cats.origin(e))
    held = [e for e in usable if in_band(e)]
    dev_msgs = [e for e in held if _md5_unit(e) < band / 2]
    test_msgs = [e for e in held if _md5_unit(e) >= band / 2]
    train_msgs = [e for e in usable if not in_band(e)]
    rng = random.Random(seed)
    train_premises = rng.sample(train_msgs, min(max_train_premises, len(train_msgs)))

    train = make_examples(train_premises, train_msgs, cats, None, seed)
    dev = make_examples(dev_msgs, dev_msgs, cats, None, seed + 1)
    tests = {"en": make_examples(test_msgs, test_msgs, cats, None, seed + 2)}
    for code in codes:
        tests[code] = make_examples(test_msgs, test_msgs, cats, code, seed + 2)
    small = [lang for lang, rows in tests.items() if len(rows) < min_test]
    for lang in small:
        del tests[lang]
    os.makedirs(out_dir, exist_ok=True)
    strip = lambda rows: [{k: r[k] for k in ("premise", "hypothesis", "label", "language")} for r in rows]  # noqa: E731
    write_tsv(os.path.join(out_dir, "train.tsv"), strip(train))
    write_tsv(os.path.join(out_dir, "dev.tsv"), strip(dev))
    for lang, rows in tests.items():
        write_tsv(os.path.join(out_dir, f"test.{lang}.tsv"), strip(rows))
    test_langs = [lang for lang in tests if lang != "en"]
    parallel = parallel_pairs(train_msgs, cats, test_langs, n_parallel, seed + 3)
    task_pairs = [(r["premise_en"], r["hypothesis_en"]) for r in train]
    parallel_task = parallel_pairs(train_msgs, cats, test_langs, n_parallel, seed + 4, pairs=task_pairs)
    write_tsv(os.path.join(out_dir, "parallel.tsv"), parallel)
    write_tsv(os.path.join(out_dir, "parallel_task.tsv"), parallel_task)
    info = {
        "task": "catalog origin: is the hypothesis from the same program as the premise (same), another program "
                "of its package (similar), or another package (different)?",
        "labels": LABEL_NAMES, "verbalizers": list(VERBALIZERS),
        "languages": ["en"] + test_langs, "skipped_languages": small,
        "sizes": {"train": len(train), "dev": len(dev), **{f"test.{k}": len(v) for k, v in tests.items()},
                  "parallel": len(parallel), "parallel_task": len(parallel_task)},
        "messages": {"usable": len(usable), "held_out_band": len(held), "dev": len(dev_msgs), "test": len(test_msgs),
                     "train": len(train_msgs)},
        "programs": len({cats.origin(e)[0] for e in usable}), "packages": len({cats.origin(e)[1] for e in usable}),
        "reserved_band": band, "seed": seed, "catalog_languages": list(langs),
        "surface_baselines": surface_baselines(train, {"dev": dev, **tests}),
        "program_knowledge_baseline": program_knowledge_baseline(train_msgs, cats, {"dev": dev, "en": tests["en"]}),
    }
    with open(os.path.join(out_dir, "task.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
    log(f"wrote {out_dir}: {json.dumps(info['sizes'])}")
    return info
