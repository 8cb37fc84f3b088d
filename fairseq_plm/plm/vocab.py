"""Vocabulary bridge: fairseq dictionaries whose indices equal the PLM's own token ids.

fairseq's ``Dictionary`` always prepends ``<s> <pad> </s> <unk>``; a PLM has its own order
(mT5/mGPT: pad 0, eos 1, unk 2; XLM-R: <s> 0, <pad> 1, </s> 2, <unk> 3, ..., <mask> last;
mBERT: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103). ``PLMDictionary`` holds the
PLM's symbol list verbatim and saves itself in a self-describing format, so the
``dict.*.txt`` that ``fairseq-preprocess`` writes reloads with the same ids.
"""

import os
import unicodedata
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.data import Dictionary
from fairseq.data.encoders import register_bpe
from fairseq.dataclass import FairseqDataclass

from .errors import FairseqPLMError
from .hub import local_plm_path

HEADER = "#fairseq_plm_dictionary"
# After the header's fields, for people: fairseq's own Dictionary (a plain fairseq-generate or
# -train without --user-dir, whose --task plm_translation argparse would reject) fails on this
# line and quotes it, all but its last word, in its error message.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HINT = (f"| this is a fairseq_plm dictionary: give fairseq --user-dir {_PACKAGE_DIR} --task plm_translation "
        f"(or fusion_translation), or use fairseq-plm-generate / -train / -interactive / -validate |")


class VocabularyError(FairseqPLMError):
    pass


class PLMDictionary(Dictionary):
    def __init__(self, symbols: List[str], *, pad: int, eos: int, unk: int, bos: int,
                 mask: Optional[int] = None, kind: str = "plm", allow_duplicates: bool = False):
        super().__init__(add_special_symbols=False)
        for s in symbols:
            # (a duplicate in a BERT vocab.txt maps to its last line, as BERT's tokenizer does)
            if s in self.indices and not allow_duplicates:
                raise VocabularyError(f"duplicate symbol {s!r} in the {kind} vocabulary")
            self.indices[s] = len(self.symbols)
            self.symbols.append(s)
            self.count.append(1)
        self.pad_index, self.eos_index, self.unk_index, self.bos_index = pad, eos, unk, bos
        self.mask_index = mask
        self.pad_word, self.eos_word = symbols[pad], symbols[eos]
        self.unk_word, self.bos_word = symbols[unk], symbols[bos]
        self.nspecial = 0
        self.kind = kind

    def save(self, f):
        if isinstance(f, str):
            os.makedirs(os.path.dirname(os.path.abspath(f)), exist_ok=True)
            with open(f, "w", encoding="utf-8") as fd:
                return self.save(fd)
        mask = -1 if self.mask_index is None else self.mask_index
        print(f"{HEADER} kind={self.kind} size={len(self)} pad={self.pad_index} eos={self.eos_index} "
              f"unk={self.unk_index} bos={self.bos_index} mask={mask} {HINT}", file=f)
        for s in self.symbols:
            print(s, file=f)

    @classmethod
    def load_saved(cls, path):
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        meta = dict(kv.split("=", 1) for kv in lines[0].split(" | ")[0].split()[1:])
        symbols = lines[1:1 + int(meta["size"])]
        if len(symbols) != int(meta["size"]):
            raise VocabularyError(f"{path} is truncated: expected {meta['size']} symbols")
        mask = int(meta["mask"])
        return cls(symbols, pad=int(meta["pad"]), eos=int(meta["eos"]), unk=int(meta["unk"]),
                   bos=int(meta["bos"]), mask=None if mask < 0 else mask, kind=meta["kind"],
                   allow_duplicates=meta["kind"] == "wordpiece")

    def string(self, tensor, *args, **kwargs):
        """As ``Dictionary.string``, but padding never prints: a PLM's pad id need not be the
        one fairseq strips (its target dictionary's), e.g. mBERT's [PAD] 0 next to an NMT
        target dictionary's <pad> 1."""
        if torch.is_tensor(tensor) and tensor.dim() == 1:
            tensor = tensor[tensor.ne(self.pad_index)]
        return super().string(tensor, *args, **kwargs)

    def same_vocabulary(self, other) -> bool:
        return self.symbols == list(other.symbols)


def _spm(path):
    import sentencepiece as spm

    if not os.path.exists(path):
        raise VocabularyError(f"sentencepiece model not found: {path}")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(path)
    except Exception as e:
        raise VocabularyError(f"{path} is not a sentencepiece model: {e}") from None
    return sp


def t5_dictionary(spm_path: str, vocab_size: Optional[int] = None) -> PLMDictionary:
    """mT5/mGPT: ids are sentencepiece ids (pad 0, eos 1, unk 2); the embedding table may be
    larger than the sentencepiece model (mT5: 250,000 pieces + 100 sentinels = 250,100)."""
    sp = _spm(spm_path)
    n = sp.GetPieceSize()
    symbols = [sp.IdToPiece(i) for i in range(n)]
    if vocab_size is not None:
        if vocab_size < n:
            raise VocabularyError(f"{spm_path} has {n} pieces but the PLM only {vocab_size} embeddings")
        extra = vocab_size - n
        symbols += [f"<extra_id_{extra - 1 - j}>" for j in range(extra)]
    # mT5 pieces: 0 <pad>, 1 </s>, 2 <unk>. No BOS: the tasks decide how a target starts.
    pad, eos, unk = sp.pad_id(), sp.eos_id(), sp.unk_id()
    if min(pad, eos, unk) < 0:
        raise VocabularyError(f"{spm_path} lacks pad/eos/unk pieces (not a T5-style model)")
    return PLMDictionary(symbols, pad=pad, eos=eos, unk=unk, bos=eos, kind="t5")


def xlmr_dictionary_from_spm(spm_path: str, vocab_size: Optional[int] = None) -> PLMDictionary:
    """XLM-R from its sentencepiece model (HF layout): fairseq specials then spm pieces
    shifted by one (HF's ``fairseq_offset``), ``<mask>`` last."""
    sp = _spm(spm_path)
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [sp.IdToPiece(i) for i in range(3, sp.GetPieceSize())]
    symbols.append("<mask>")
    if vocab_size is not None and len(symbols) != vocab_size:
        raise VocabularyError(
            f"{spm_path} gives {len(symbols)} XLM-R ids but the PLM has {vocab_size} embeddings")
    return PLMDictionary(symbols, pad=1, eos=2, unk=3, bos=0, mask=len(symbols) - 1, kind="xlmr")


def xlmr_dictionary_from_fairseq(dict_path: str) -> PLMDictionary:
    """XLM-R's published fairseq ``dict.txt``: fairseq specials + file + ``<mask>``."""
    d = Dictionary.load(dict_path)
    symbols = list(d.symbols) + ["<mask>"]
    return PLMDictionary(symbols, pad=d.pad(), eos=d.eos(), unk=d.unk(), bos=d.bos(),
                         mask=len(symbols) - 1, kind="xlmr")


def wordpiece_dictionary(vocab_path: str) -> PLMDictionary:
    """BERT/mBERT ``vocab.txt``: line i is id i."""
    with open(vocab_path, encoding="utf-8") as f:
        symbols = [line.rstrip("\n") for line in f]
    while symbols and symbols[-1] == "":
        symbols.pop()
    try:
        idx = {s: i for i, s in enumerate(symbols)}
        return PLMDictionary(symbols, pad=idx["[PAD]"], eos=idx["[SEP]"], unk=idx["[UNK]"],
                             bos=idx["[CLS]"], mask=idx.get("[MASK]"), kind="wordpiece",
                             allow_duplicates=True)
    except KeyError as e:
        raise VocabularyError(f"{vocab_path} lacks the special token {e.args[0]}") from None


def load_dictionary(path: str, family: Optional[str] = None, vocab_size: Optional[int] = None):
    """A PLM dictionary from a saved ``dict.*.txt``, a tokenizer file, a PLM directory or Hub id."""
    path = local_plm_path(path, need_weights=False)
    if os.path.isdir(path):
        config = os.path.join(path, "config.json")
        if vocab_size is None and os.path.exists(config):
            from .loading import config_from_hf

            vocab_size = config_from_hf(config).vocab_size
        for name, build in (("spiece.model", t5_dictionary), ("dict.txt", None),
                            ("sentencepiece.bpe.model", xlmr_dictionary_from_spm),
                            ("vocab.txt", None)):
            f = os.path.join(path, name)
            if not os.path.exists(f):
                continue
            if name == "dict.txt":
                return xlmr_dictionary_from_fairseq(f)
            if name == "vocab.txt":
                return wordpiece_dictionary(f)
            return build(f, vocab_size)
        raise VocabularyError(
            f"{path} has no tokenizer file (spiece.model, dict.txt, sentencepiece.bpe.model or vocab.txt)")
    if not os.path.exists(path):
        raise VocabularyError(f"dictionary file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(len(HEADER))
    if head == HEADER.encode():
        return PLMDictionary.load_saved(path)
    base = os.path.basename(path)
    if base.endswith(".model"):
        if family == "gpt2" or base == "spiece.model":
            return t5_dictionary(path, vocab_size)
        return xlmr_dictionary_from_spm(path, vocab_size)
    if base == "vocab.txt" or family == "bert":
        return wordpiece_dictionary(path)
    if family == "roberta":
        return xlmr_dictionary_from_fairseq(path)
    raise VocabularyError(
        f"{path} is not a fairseq_plm dictionary; pass the PLM's tokenizer file or directory instead")


def make_encoder(path: str):
    """A function str -> list of pieces: the PLM's own tokenizer, from a PLM directory or its
    spiece.model / sentencepiece.bpe.model / vocab.txt (or a Hub id)."""
    path = local_plm_path(path, need_weights=False)
    tok = tokenizer_file(path) if os.path.isdir(path) else path
    if tok is None or not os.path.exists(tok):
        raise VocabularyError(f"no tokenizer found at {path} (spiece.model, sentencepiece.bpe.model or vocab.txt)")
    if tok.endswith(".model"):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        sp.Load(tok)
        return sp.EncodeAsPieces
    return WordPieceTokenizer(tok).tokenize


def detect_subword(dictionary) -> str:
    """How a plain fairseq (NMT) dictionary's symbols were split: ``sentencepiece`` (pieces
    start with U+2581), ``subword_nmt`` (fastBPE/subword-nmt: ``@@`` continuations) or ``none``,
    as the ``symbol`` of fairseq's ``data_utils.post_process``."""
    symbols = dictionary.symbols[dictionary.nspecial:]
    if sum(s.startswith("\u2581") for s in symbols) * 5 > len(symbols):
        return "sentencepiece"
    if any(s.endswith("@@") for s in symbols):
        return "subword_nmt"
    return "none"


class Retokenizer:
    """NMT token ids -> the same sentence in a PLM's vocabulary: ids decoded with the NMT
    dictionary, subword marks removed (``subword``: a ``post_process`` symbol, or ``auto``),
    and the text re-tokenized by the PLM's tokenizer. Picklable (data loader workers)."""

    def __init__(self, nmt_dictionary, plm_tokenizer: str, plm_dictionary, subword: str = "auto"):
        self.nmt, self.plm, self.path = nmt_dictionary, plm_dictionary, plm_tokenizer
        self.subword = detect_subword(nmt_dictionary) if subword == "auto" else subword
        self._encode = None

    def __getstate__(self):
        return {**self.__dict__, "_encode": None}

    def __call__(self, ids) -> List[int]:
        from fairseq.data.data_utils import post_process

        if self._encode is None:
            self._encode = make_encoder(self.path)
        text = post_process(self.nmt.string(ids), self.subword)
        return [self.plm.index(piece) for piece in self._encode(text)]


def frame(tokens, lengths, bos: int, eos: int, pad: int):
    """Right-padded content [B, T] with ``lengths`` -> ``bos content eos`` [B, T + 2], right
    padded: ``<s> x </s>`` (XLM-R) or ``[CLS] x [SEP]`` (mBERT), as in pre-training."""
    b = tokens.size(0)
    framed = torch.cat([tokens.new_full((b, 1), bos), tokens, tokens.new_full((b, 1), pad)], dim=1)
    return framed.scatter(1, (lengths + 1)[:, None], eos)


def frame_source(src_tokens, bos: int, eos: int, pad: int):
    """fairseq's right-padded ``x </s>`` -> (``bos x eos`` as in pre-training, content lengths)."""
    content = src_tokens.masked_fill(src_tokens.eq(eos), pad)
    lengths = content.ne(pad).long().sum(dim=1)
    return frame(content, lengths, bos, eos, pad), lengths


def tokenizer_file(plm_path: str) -> Optional[str]:
    """The tokenizer model shipped in a PLM directory (or Hub id), if any."""
    plm_path = local_plm_path(plm_path, need_weights=False)
    if not os.path.isdir(plm_path):
        return None
    for name in ("spiece.model", "sentencepiece.bpe.model", "vocab.txt"):
        f = os.path.join(plm_path, name)
        if os.path.exists(f):
            return f
    return None


# --------------------------------------------------------------------- WordPiece

def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """BERT's basic + WordPiece tokenization (greedy longest match, ``##`` continuations)."""

    def __init__(self, vocab_path: str, lowercase: bool = False, max_chars_per_word: int = 100):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n") for line in f}
        self.lowercase = lowercase
        self.max_chars = max_chars_per_word

    def _basic(self, text):
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r":
                continue
            if _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(" " if ch.isspace() else ch)
        words = []
        for w in "".join(out).split():
            if self.lowercase:
                w = "".join(c for c in unicodedata.normalize("NFD", w.lower())
                            if unicodedata.category(c) != "Mn")
            words.extend(self._split_punct(w))
        return words

    @staticmethod
    def _split_punct(w):
        pieces, cur = [], ""
        for ch in w:
            if _is_punctuation(ch):
                if cur:
                    pieces.append(cur)
                pieces.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            pieces.append(cur)
        return pieces

    def _wordpiece(self, word):
        if len(word) > self.max_chars:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end, cur = len(word), None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    cur = sub
                    break
                end -= 1
            if cur is None:
                return ["[UNK]"]
            pieces.append(cur)
            start = end
        return pieces

    def tokenize(self, text: str) -> List[str]:
        return [p for w in self._basic(text) for p in self._wordpiece(w)]

    @staticmethod
    def detokenize(pieces: str) -> str:
        return pieces.replace(" ##", "").strip()


@dataclass
class WordPieceConfig(FairseqDataclass):
    wordpiece_vocab: str = field(default="???", metadata={"help": "path to BERT/mBERT vocab.txt"})
    wordpiece_lowercase: bool = field(default=False, metadata={"help": "uncased model (mBERT is cased)"})


@register_bpe("wordpiece", dataclass=WordPieceConfig)
class WordPieceBPE:
    """``--bpe wordpiece --wordpiece-vocab vocab.txt`` for fairseq-generate/-interactive."""

    def __init__(self, cfg):
        self.tok = WordPieceTokenizer(cfg.wordpiece_vocab, cfg.wordpiece_lowercase)

    def encode(self, x: str) -> str:
        return " ".join(self.tok.tokenize(x))

    def decode(self, x: str) -> str:
        return WordPieceTokenizer.detokenize(x)

    def is_beginning_of_word(self, x: str) -> bool:
        return not x.startswith("##")
