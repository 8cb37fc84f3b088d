"""Text pre/post-processing of MSP Appendix A.2, and BLEU the way the paper reports it.

* Romanian: diacritics are removed on the Romanian side (WMT16 Ro-En practice,
  ``remove-diacritics.py``): ș/ş -> s, ț/ţ -> t, ă/â -> a, î -> i (and capitals).
* Chinese: the mT5 tokenizer applies Unicode NFKC, which turns full-width punctuation into
  ASCII (，-> ,); after decoding we restore the standard Chinese forms next to CJK text.
* BLEU: sacrebleu, case-sensitive, 13a tokenization (``zh`` for Chinese), with its signature.

Exposed to fairseq as ``--tokenizer plm_text`` (encode: pre-processing for interactive input;
decode: post-processing of hypotheses and references in fairseq-generate) and used by
``fairseq-plm-encode --remove-diacritics`` and ``fairseq-plm-score``.

Lines: every tool of this package reads text through ``read_lines`` / ``LineReader``, which
split lines exactly as fairseq-preprocess and fairseq-interactive do (Python's universal
newlines: ``\n``, ``\r\n`` and a lone ``\r``), and never on the other characters that
``str.splitlines`` also breaks at (U+2028, U+2029, U+0085, form feed, vertical tab, \x1c-\x1e),
so sentence i is line i in every tool. Invalid UTF-8 is an error naming the file and line,
except where a run must go on (``fairseq-plm-interactive``): there it is decoded with
``errors="replace"`` (each invalid byte sequence becomes U+FFFD) and a warning names the line.
"""

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from fairseq.data.encoders import register_tokenizer
from fairseq.dataclass import FairseqDataclass

from ..plm.errors import FairseqPLMError

logger = logging.getLogger(__name__)

_RO = str.maketrans({"ș": "s", "ş": "s", "ț": "t", "ţ": "t", "ă": "a", "â": "a", "î": "i",
                     "Ș": "S", "Ş": "S", "Ț": "T", "Ţ": "T", "Ă": "A", "Â": "A", "Î": "I"})

_CJK = r"[\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
_ZH_PUNCT = {",": "，", "!": "！", "?": "？", ":": "：", ";": "；", "(": "（", ")": "）"}


def remove_romanian_diacritics(text: str) -> str:
    return text.translate(_RO)


def restore_chinese_punctuation(text: str) -> str:
    """ASCII , ! ? : ; ( ) touching CJK text -> full-width forms. Numbers (1,000) and Latin
    text keep ASCII punctuation."""
    for _ in range(2):  # punctuation runs such as "?)" need a second pass
        text = re.sub(rf"(?<={_CJK})\s*([,!?:;()])\s*", lambda m: _ZH_PUNCT[m.group(1)], text)
        text = re.sub(rf"\s*([,!?:;()])(\s*)(?={_CJK})", lambda m: _ZH_PUNCT[m.group(1)], text)
    return text


# ------------------------------------------------------------------ reading lines

REPLACEMENT = "\ufffd"
_SURROGATES = re.compile("[\ud800-\udfff]+")


class LineReader:
    """Lines of a UTF-8 byte stream, without their terminators, split on ``\n``, ``\r\n``
    and ``\r`` only (see the module docstring). ``errors="strict"``: invalid UTF-8 raises a
    ``FairseqPLMError`` naming ``name`` and the line; ``"replace"``: it becomes U+FFFD and a
    warning names the line. Streams lazily (interactive input), counts lines in ``line_no``.

    ``readline()`` returns the next line with a ``"\n"`` (``""`` at the end), so the object
    can stand in for ``sys.stdin`` where fairseq reads it with ``fileinput``."""

    def __init__(self, stream, name, errors="strict"):
        self.stream, self.name, self.errors = stream, name, errors
        self.line_no = 0
        self._pending = []

    def _next_raw(self):
        if self._pending:
            return self._pending.pop(0)
        raw = self.stream.readline()
        if not raw:
            return None
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):  # \r\n, or a lone \r at the very end of the stream
            raw = raw[:-1]
        if b"\r" in raw:  # lone carriage returns end lines too (universal newlines)
            first, *self._pending = raw.split(b"\r")
            return first
        return raw

    def __iter__(self):
        return self

    def __next__(self):
        raw = self._next_raw()
        if raw is None:
            raise StopIteration
        self.line_no += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if self.errors == "strict":
                raise FairseqPLMError(
                    f"{self.name}: line {self.line_no} is not valid UTF-8 (byte {e.start + 1}: "
                    f"{raw[e.start:e.start + 4]!r}); fix or remove that line") from None
            logger.warning(f"{self.name}: line {self.line_no} is not valid UTF-8; "
                           f"invalid bytes were replaced by U+FFFD")
            return raw.decode("utf-8", errors="replace")

    def readline(self):
        try:
            return next(self) + "\n"
        except StopIteration:
            return ""

    def isatty(self):
        return getattr(self.stream, "isatty", lambda: False)()

    def close(self):
        self.stream.close()


def read_lines(path, what=None, errors="strict"):
    """Every line of the UTF-8 text file ``path`` (``-``: standard input), split as
    fairseq-preprocess splits it. ``what`` (e.g. ``--ref``) prefixes error messages."""
    name = f"{what} {path}" if what else path
    if path == "-":
        return list(LineReader(sys.stdin.buffer, name if what else "<stdin>", errors))
    try:
        with open(path, "rb") as f:
            return list(LineReader(f, name, errors))
    except FileNotFoundError:
        raise FairseqPLMError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise FairseqPLMError(f"{name} is a directory, not a text file") from None


def count_lines(path, what=None):
    """Number of lines of ``path`` as ``read_lines`` (and fairseq-preprocess) count them,
    checking that each is valid UTF-8, without holding the file in memory."""
    name = f"{what} {path}" if what else path
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in LineReader(f, name))
    except FileNotFoundError:
        raise FairseqPLMError(f"{name}: file not found") from None


def same_file(a, b) -> bool:
    """Whether two paths name one file (links and relative paths included); ``-`` is never a file."""
    if a == "-" or b == "-":
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


@contextlib.contextmanager
def atomic_output(path, mode="w"):
    """Write ``path`` through a temporary file next to it, renamed over ``path`` only when the
    block completes: a failure or Ctrl-C leaves the old file (or none) and no partial output."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
            yield f
        if os.path.exists(path):
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_surrogates(text):
    """Lone surrogates (bytes Python's ``surrogateescape`` kept from invalid UTF-8, e.g. on
    standard input under a C locale) -> U+FFFD, one per invalid byte; tokenizers reject them."""
    return _SURROGATES.sub(lambda m: REPLACEMENT * len(m.group(0)), text)


def bleu(hypotheses, references, tokenize="13a"):
    """Corpus BLEU and sacrebleu's signature string."""
    import sacrebleu

    metric = sacrebleu.BLEU(tokenize=tokenize)
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return score, str(metric.get_signature())


@dataclass
class PLMTextConfig(FairseqDataclass):
    plm_text_remove_diacritics: bool = field(
        default=False, metadata={"help": "remove Romanian diacritics from input text (MSP App. A.2)"})
    plm_text_zh_punct: bool = field(
        default=False, metadata={"help": "restore Chinese punctuation after decoding (MSP App. A.2)"})


@register_tokenizer("plm_text", dataclass=PLMTextConfig)
class PLMTextProcessor:
    def __init__(self, cfg):
        self.cfg = cfg

    def encode(self, x: str) -> str:
        return remove_romanian_diacritics(x) if self.cfg.plm_text_remove_diacritics else x

    def decode(self, x: str) -> str:
        return restore_chinese_punctuation(x) if self.cfg.plm_text_zh_punct else x
