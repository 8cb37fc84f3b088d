"""Text pre/post-processing of MSP Appendix A.2, and BLEU the way the paper reports it.

* Romanian: diacritics are removed on the Romanian side (WMT16 Ro-En practice,
  ``remove-diacritics.py``): ș/ş -> s, ț/ţ -> t, ă/â -> a, î -> i (and capitals).
* Chinese: the mT5 tokenizer applies Unicode NFKC, which turns full-width punctuation into
  ASCII (，-> ,); after decoding we restore the standard Chinese forms next to CJK text.
* BLEU: sacrebleu, case-sensitive, 13a tokenization (``zh`` for Chinese), with its signature.

Exposed to fairseq as ``--tokenizer plm_text`` (encode: pre-processing for interactive input;
decode: post-processing of hypotheses and references in fairseq-generate) and used by
``fairseq-plm-encode --remove-diacritics`` and ``fairseq-plm-score``.
"""

import re
from dataclasses import dataclass, field

from fairseq.data.encoders import register_tokenizer
from fairseq.dataclass import FairseqDataclass

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
