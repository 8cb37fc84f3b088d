"""A free-generation task built from English text: write the sentence from its keywords
(SGA Table 4 in small; the paper's task is MTG story generation, which is not on this machine).

    python -m fairseq_plm.recipes.keywords_data --out DIR --raw RAW --lang en
    python -m fairseq_plm.recipes.keywords_data --out DIR --catalogs de,fr [--test 500 --valid 200]

Source: the keywords of an English sentence, its *content words* in a shuffled order; target:
the sentence. Like story or question generation, the output is much longer than the input and
not determined by it word for word (function words, inflection, word order and punctuation
must be produced), the multi-modality that makes SGA use Mask-Predict for free generation
(§4.3, §5.5).

Keywords (:func:`keywords`): the sentence's words (maximal runs of letters, digits, ``'`` and
``-``), minus a fixed list of English function words (:data:`STOPWORDS`: articles, pronouns,
auxiliaries, prepositions, conjunctions, ...) and minus repeats (case-insensitive; a word keeps
the form of its first occurrence), shuffled by a generator seeded with the MD5 of the sentence
(deterministic: the same sentence always gets the same keyword order). Sentences without
any content word are dropped.

Splits (the test English must be unseen by the PLM):

* ``--raw RAW --lang en``: the English side of an existing corpus's splits, e.g. the
  multilingual gettext corpus of ``gettext_multilingual``, whose valid and test English this
  package's demo PLMs never saw in pre-training (``pretrain_common.evaluation_english``). Each
  split is deduplicated; a train sentence that also occurs in valid or test is dropped.
* ``--catalogs LANGS``: the English messages of these languages' gettext catalogs; test and
  valid are the messages in the reserved MD5 band (``pretrain_common.in_reserved_band``), which
  the demo PLMs' pre-training holds out, the rest is train.

Writes ``DIR/{train,valid,test}.{kw,en}`` and ``DIR/task.json`` (sizes, rules).
"""

import argparse
import hashlib
import json
import os
import random
import re
import sys

# English function words (closed classes) and a few very frequent light words
STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being below between
both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each either few for
from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself
his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's may me might more most must mustn't my
myself neither no nor not of off on once only or other ought our ours ourselves out over own same shall shan't she
she'd she'll she's should shouldn't so some such than that that's the their theirs them themselves then there
there's these they they'd they'll they're they've this those through to too under until up upon us very via was
wasn't we we'd we'll we're we've were weren't what what's when when's where where's whether which while who who's
whom whose why why's will with won't would wouldn't yet you you'd you'll you're you've your yours yourself
yourselves also just now than thus
""".split())

WORD = re.compile(r"[^\W_](?:[\w'-]*[^\W_])?")


def content_words(sentence):
    """The sentence's content words in their order of first occurrence (see the module docstring)."""
    seen, out = set(), []
    for w in WORD.findall(sentence):
        key = w.lower()
        if key in STOPWORDS or key in seen:
            continue
        seen.add(key)
        out.append(w)
    return out


def keywords(sentence):
    """The content words shuffled by a generator seeded with the sentence's MD5."""
    words = content_words(sentence)
    random.Random(int(hashlib.md5(sentence.encode()).hexdigest(), 16)).shuffle(words)
    return words


def make_pairs(sentences):
    """(keywords, sentence) for each distinct sentence with at least one content word."""
    pairs, seen = [], set()
    for s in sentences:
        s = s.strip()
        if not s or s in seen:
            continue
        seen.add(s)
        kw = keywords(s)
        if kw:
            pairs.append((" ".join(kw), s))
    return pairs


def write_task(out, splits, rule):
    """splits: name -> list of English sentences. Returns the manifest."""
    os.makedirs(out, exist_ok=True)
    pairs = {name: make_pairs(sentences) for name, sentences in splits.items()}
    held = {s for name in ("valid", "test") for _, s in pairs[name]}
    pairs["train"] = [p for p in pairs["train"] if p[1] not in held]
    for name, rows in pairs.items():
        for side, i in (("kw", 0), ("en", 1)):
            with open(os.path.join(out, f"{name}.{side}"), "w", encoding="utf-8") as f:
                f.writelines(r[i] + "\n" for r in rows)
    manifest = {"task": "keywords -> English sentence (content words, shuffled)", "source": "kw", "target": "en",
                "splits": rule, **{name: len(rows) for name, rows in pairs.items()}}
    with open(os.path.join(out, "task.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def from_raw(raw, lang, out):
    """The English side (``lang``) of RAW/{train,valid,test}."""
    splits = {}
    for name in ("train", "valid", "test"):
        with open(os.path.join(raw, f"{name}.{lang}"), encoding="utf-8") as f:
            splits[name] = f.read().splitlines()
    return write_task(out, splits, f"the {lang} side of {raw}'s train/valid/test splits")


def from_catalogs(langs, out, test=500, valid=200, root="/usr/share/locale"):
    """English gettext messages; test/valid from the reserved MD5 band, in MD5 order."""
    from ..data.gettext_corpus import read_catalogs
    from .pretrain_common import _band, in_reserved_band

    english = set()
    for lang in langs:
        english |= {en for en, _ in read_catalogs(lang, root)}
    band = sorted((e for e in english if in_reserved_band(e)), key=_band)
    rest = sorted(e for e in english if not in_reserved_band(e))
    if len(band) < test + valid:
        raise ValueError(f"the reserved band holds {len(band)} English messages of {','.join(langs)}: fewer than "
                         f"--test {test} + --valid {valid}; read more languages or ask for fewer")
    return write_task(out, {"test": band[:test], "valid": band[test:test + valid], "train": rest},
                      f"English messages of the {','.join(langs)} gettext catalogs; test and valid from the "
                      f"reserved md5 band (held out from the demo PLMs' pre-training)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", help="a corpus directory with {train,valid,test}.LANG")
    src.add_argument("--catalogs", help="comma list of gettext languages whose English messages to use")
    ap.add_argument("--lang", default="en", help="--raw: the English side's suffix")
    ap.add_argument("--test", type=int, default=500, help="--catalogs: test sentences")
    ap.add_argument("--valid", type=int, default=200, help="--catalogs: valid sentences")
    ap.add_argument("--locale-root", default="/usr/share/locale")
    args = ap.parse_args(argv)
    try:
        if args.raw:
            m = from_raw(args.raw, args.lang, args.out)
        else:
            langs = [x.strip() for x in args.catalogs.split(",") if x.strip()]
            m = from_catalogs(langs, args.out, args.test, args.valid, args.locale_root)
    except (OSError, ValueError) as e:
        sys.exit(f"keywords_data: error: {e}")
    print(f"train {m['train']}, valid {m['valid']}, test {m['test']} pairs -> {args.out} ({m['splits']})")


if __name__ == "__main__":
    main()
