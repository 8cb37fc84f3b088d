"""Cross-lingual NLI data for MPT (Qiu et al.): files, few-shot sampling, cloze template and
the fairseq datasets that batch NLI examples together with an external parallel corpus.

File formats (``.tsv`` with a header line, or ``.jsonl`` with one object per line):

* NLI: columns ``premise``, ``hypothesis``, ``label`` and optionally ``language`` (default:
  the task's ``--source-lang``). XNLI's and MultiNLI's own column names are accepted as
  aliases (``sentence1``/``sentence2``/``gold_label``, XNLI-MT's ``hypo``), so
  ``xnli.test.tsv`` and ``multinli.train.en.tsv`` are read as they are. Labels are
  ``entailment``, ``neutral``, ``contradiction`` (also ``contradictory`` and the HuggingFace
  ids 0/1/2); rows labelled ``-`` (no annotator consensus in MultiNLI) are skipped.
* parallel (PAWS-15 style): columns ``src_premise``, ``src_hypothesis`` (source language),
  ``tgt_premise``, ``tgt_hypothesis`` (their translation) and ``tgt_language``.

Template (MPT Eq. 1, positions of Eq. 9), with XLM-R's ``<s>``/``</s>`` around it:

    prefix   <s> [p] X_P . X_H ? <mask> . </s>
    midfix   <s> X_P . [p] X_H ? <mask> . </s>
    suffix   <s> X_P . X_H ? [p] <mask> . </s>      (default, the paper's Eq. 1)
    endfix   <s> X_P . X_H ? <mask> [p] . </s>

``[p]`` is m slots that the model fills with soft-prompt vectors (they hold ``<unk>`` in the
token ids). Sentence-final punctuation of X_P and X_H is dropped so the template's own "."
and "?" are not doubled. Over-long inputs lose tokens from the longer sentence first.

PCT's cross-lingual template (Qi et al. 2022, the PCT baseline of MPT Table I) in XLM-R's
sentence-pair layout, with the template words in language l (``PCT_TEMPLATES``)::

    <s> X_P </s></s> Question_l: X_H ?_l Answer_l: <mask> </s>
"""

import csv
import json
import os
from dataclasses import dataclass
from typing import Callable, List, Sequence

import numpy as np
import torch

from fairseq.data import FairseqDataset, data_utils

from ..plm.errors import FairseqPLMError

LABELS = ("entailment", "neutral", "contradiction")
# XNLI's 15 languages in the column order of MPT Table I
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
POSITIONS = ("prefix", "midfix", "suffix", "endfix")
# PET's / Zhao & Schütze's NLI verbalizer: "X_P . X_H ? <mask>" answered Yes / Maybe / No
DEFAULT_VERBALIZER = "entailment:Yes,neutral:Maybe,contradiction:No"
INPUT_FORMATS = ("cloze", "pair", "pct")

# PCT's cross-lingual templates (Qi et al. 2022): (question word, question mark, answer word)
# per language, read as "Question: X_H ? Answer: <mask>". Our own translations of the two
# template words for XNLI's 15 languages (PCT's set) and a few more; the question mark is the
# language's own where it has one (Arabic script). A JSON file {lang: [question, mark,
# answer]} given to --pct-templates adds or replaces languages.
PCT_TEMPLATES = {
    "en": ("Question:", "?", "Answer:"), "ar": ("سؤال:", "؟", "جواب:"), "bg": ("Въпрос:", "?", "Отговор:"),
    "de": ("Frage:", "?", "Antwort:"), "el": ("Ερώτηση:", "?", "Απάντηση:"), "es": ("Pregunta:", "?", "Respuesta:"),
    "fr": ("Question :", "?", "Réponse :"), "hi": ("प्रश्न:", "?", "उत्तर:"), "ru": ("Вопрос:", "?", "Ответ:"),
    "sw": ("Swali:", "?", "Jibu:"), "th": ("คำถาม:", "?", "คำตอบ:"), "tr": ("Soru:", "?", "Cevap:"),
    "ur": ("سوال:", "؟", "جواب:"), "vi": ("Câu hỏi:", "?", "Trả lời:"), "zh": ("问题:", "?", "答案:"),
    # beyond XNLI
    "he": ("שאלה:", "?", "תשובה:"), "it": ("Domanda:", "?", "Risposta:"), "ja": ("質問:", "?", "答え:"),
    "ko": ("질문:", "?", "답변:"), "nl": ("Vraag:", "?", "Antwoord:"), "pl": ("Pytanie:", "?", "Odpowiedź:"),
    "pt": ("Pergunta:", "?", "Resposta:"), "ro": ("Întrebare:", "?", "Răspuns:"),
}

_NLI_COLUMNS = {"premise": ("premise", "sentence1"), "hypothesis": ("hypothesis", "hypo", "sentence2"),
                "label": ("label", "gold_label"), "language": ("language", "lang")}
_PARALLEL_COLUMNS = {c: (c,) for c in ("src_premise", "src_hypothesis", "tgt_premise", "tgt_hypothesis",
                                       "tgt_language")}
_LABEL_ALIASES = {"contradictory": "contradiction", "0": "entailment", "1": "neutral", "2": "contradiction"}
_FINAL_PUNCT = ".?!。？！"


@dataclass
class NLIExample:
    premise: str
    hypothesis: str
    label: int
    language: str


@dataclass
class ParallelPair:
    src_premise: str
    src_hypothesis: str
    tgt_premise: str
    tgt_hypothesis: str
    tgt_language: str


# ------------------------------------------------------------------------------ files

def _rows(path):
    """Dicts of a .tsv (header line, no quoting: XNLI/MultiNLI text holds bare quotes) or .jsonl."""
    if not os.path.exists(path):
        raise FairseqPLMError(f"data file not found: {path}")
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise FairseqPLMError(f"{path}:{n}: not a JSON object ({e})") from None
            return
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise FairseqPLMError(f"{path} is empty (expected a header line)")
        for n, cells in enumerate(reader, 2):
            if not cells:
                continue
            if len(cells) != len(header):
                raise FairseqPLMError(f"{path}:{n}: {len(cells)} tab-separated fields, the header has {len(header)}")
            yield n, dict(zip(header, cells))


def _pick(row, columns, path, n, optional=()):
    out = {}
    for name, aliases in columns.items():
        key = next((a for a in aliases if a in row), None)
        if key is None:
            if name in optional:
                continue
            raise FairseqPLMError(f"{path}:{n}: no {name!r} column (accepted names: {', '.join(aliases)})")
        out[name] = str(row[key])
    return out


def parse_label(value: str, where: str) -> int:
    name = _LABEL_ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in LABELS:
        raise FairseqPLMError(f"{where}: unknown label {value!r} (expected one of {', '.join(LABELS)})")
    return LABELS.index(name)


def read_nli(path: str, default_language: str) -> List[NLIExample]:
    examples = []
    for n, row in _rows(path):
        r = _pick(row, _NLI_COLUMNS, path, n, optional=("language",))
        if r["label"].strip() == "-":
            continue
        examples.append(NLIExample(r["premise"], r["hypothesis"], parse_label(r["label"], f"{path}:{n}"),
                                   r.get("language", default_language).strip() or default_language))
    return examples


def read_pct_templates(path: str = None) -> dict:
    """PCT_TEMPLATES, with the languages of a JSON file ``{lang: [question, mark, answer]}``
    added or replaced."""
    templates = dict(PCT_TEMPLATES)
    if not path:
        return templates
    if not os.path.exists(path):
        raise FairseqPLMError(f"--pct-templates {path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            extra = json.load(f)
    except json.JSONDecodeError as e:
        raise FairseqPLMError(f"--pct-templates {path}: not JSON ({e})") from None
    for lang, value in (extra.items() if isinstance(extra, dict) else [(None, extra)]):
        if lang is None or not isinstance(value, (list, tuple)) or len(value) != 3 or \
                not all(isinstance(v, str) for v in value):
            raise FairseqPLMError(f"--pct-templates {path}: expected {{lang: [question word, question mark, "
                                  f"answer word]}}, got {lang!r}: {value!r}")
        templates[lang] = tuple(value)
    return templates


def read_parallel(path: str) -> List[ParallelPair]:
    pairs = [ParallelPair(**_pick(row, _PARALLEL_COLUMNS, path, n)) for n, row in _rows(path)]
    if not pairs:
        raise FairseqPLMError(f"{path} holds no parallel pairs")
    return pairs


def write_tsv(path, rows: Sequence[dict]):
    """Rows (dicts with the same keys) as a .tsv in the format ``_rows`` reads."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    keys = list(rows[0])
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(keys) + "\n")
        for r in rows:
            cells = [str(r[k]) for k in keys]
            if any("\t" in c or "\n" in c for c in cells):
                raise FairseqPLMError(f"{path}: a field holds a tab or newline: {cells}")
            f.write("\t".join(cells) + "\n")


# ------------------------------------------------------------------------------ few-shot sampling

def sample_k_shot(examples: Sequence, k: int, seed: int, what: str = "data") -> list:
    """k examples of every label (3k in all), drawn without replacement with ``seed``, in a
    seeded random order (MPT §IV-A following Zhao & Schütze). k <= 0 keeps everything."""
    if k <= 0:
        return list(examples)
    rng = np.random.RandomState(seed)
    chosen = []
    for label in range(len(LABELS)):
        pool = [i for i, e in enumerate(examples) if e.label == label]
        if len(pool) < k:
            raise FairseqPLMError(f"--k-shot {k}: {what} has only {len(pool)} {LABELS[label]!r} examples")
        chosen.extend(pool[i] for i in rng.permutation(len(pool))[:k])
    return [examples[i] for i in rng.permutation(chosen)]


# ------------------------------------------------------------------------------ template

def parse_verbalizer(spec: str):
    """``label:word|word,label:word`` -> one list of label words per label, in LABELS order."""
    words = {}
    for part in spec.split(","):
        label, sep, ws = part.partition(":")
        label = label.strip()
        if not sep or label not in LABELS or not ws.strip():
            raise FairseqPLMError(f"--verbalizer {spec!r}: expected label:word[|word...] for each of "
                                  f"{', '.join(LABELS)}, got {part!r}")
        words[label] = [w.strip() for w in ws.split("|") if w.strip()]
    missing = [lab for lab in LABELS if lab not in words]
    if missing:
        raise FairseqPLMError(f"--verbalizer {spec!r} gives no word for {', '.join(missing)}")
    return [words[lab] for lab in LABELS]


class ClozeTemplate:
    """Token ids of MPT's cloze input (Eq. 1/5/9) and of the plain sentence pair (FT)."""

    def __init__(self, dictionary, encode: Callable[[str], List[str]], prompt_length=4, position="suffix",
                 max_length=256, pct_templates=None):
        if position not in POSITIONS:
            raise FairseqPLMError(f"--prompt-position {position!r}: expected one of {', '.join(POSITIONS)}")
        if dictionary.mask_index is None:
            raise FairseqPLMError("the PLM's vocabulary has no mask token; MPT needs a masked LM (XLM-R, mBERT)")
        self.d, self.encode_pieces = dictionary, encode
        self.m, self.position, self.max_length = prompt_length, position, max_length
        self.bos, self.eos, self.mask = dictionary.bos(), dictionary.eos(), dictionary.mask_index
        self.prompt_slot = dictionary.unk()
        self.dot, self.question = self.symbol("."), self.symbol("?")
        self.pct_templates = pct_templates if pct_templates is not None else PCT_TEMPLATES

    def ids(self, text: str) -> List[int]:
        return [self.d.index(p) for p in self.encode_pieces(text)]

    def symbol(self, s: str) -> List[int]:
        """A punctuation mark as it follows a word ("." is its own piece in XLM-R)."""
        if s in self.d.indices:
            return [self.d.index(s)]
        return [i for i in self.ids(s) if self.d[i] != "\u2581"]

    def label_word_ids(self, spec: str) -> List[List[int]]:
        out = []
        for words in parse_verbalizer(spec):
            ids = []
            for w in words:
                pieces = self.encode_pieces(w)
                if len(pieces) != 1 or self.d.index(pieces[0]) == self.d.unk():
                    raise FairseqPLMError(f"--verbalizer: label word {w!r} is not one token of the PLM's "
                                          f"vocabulary (it encodes as {pieces}); choose single-token words")
                ids.append(self.d.index(pieces[0]))
            out.append(ids)
        return out

    def _sentences(self, premise, hypothesis, budget):
        p = self.ids(premise.strip().rstrip(_FINAL_PUNCT).strip())
        h = self.ids(hypothesis.strip().rstrip(_FINAL_PUNCT).strip())
        while len(p) + len(h) > budget:  # longest first
            if len(p) >= len(h):
                p.pop()
            else:
                h.pop()
        return p, h

    def cloze(self, premise: str, hypothesis: str):
        """(ids, prompt_start): the template filled in, and where the m prompt slots begin."""
        fixed = 3 + 2 * len(self.dot) + len(self.question) + self.m  # <s> </s> <mask> . ? . [p]
        p, h = self._sentences(premise, hypothesis, self.max_length - fixed)
        slots = [self.prompt_slot] * self.m
        parts = {
            "prefix": [slots, p, self.dot, h, self.question, [self.mask], self.dot],
            "midfix": [p, self.dot, slots, h, self.question, [self.mask], self.dot],
            "suffix": [p, self.dot, h, self.question, slots, [self.mask], self.dot],
            "endfix": [p, self.dot, h, self.question, [self.mask], slots, self.dot],
        }[self.position]
        ids, start = [self.bos], None
        for part in parts:
            if part is slots:
                start = len(ids)
            ids.extend(part)
        return ids + [self.eos], start

    def pair(self, premise: str, hypothesis: str):
        """XLM-R's sentence-pair input for fine-tuning: <s> X_P </s> </s> X_H </s>."""
        p, h = self._sentences(premise, hypothesis, self.max_length - 4)
        return [self.bos] + p + [self.eos, self.eos] + h + [self.eos], 0

    def pct(self, premise: str, hypothesis: str, lang: str):
        """PCT's cloze question with the template of ``lang`` (Qi et al. 2022):
        <s> X_P </s></s> Question_l: X_H ?_l Answer_l: <mask> </s>. Returns (ids, 0)."""
        if lang not in self.pct_templates:
            raise FairseqPLMError(f"no PCT template for language {lang!r} (known: {', '.join(sorted(self.pct_templates))}); "
                                  f"add one with --pct-templates FILE ({{\"{lang}\": [question word, mark, answer word]}})")
        question, mark, answer = self.pct_templates[lang]
        q, m, a = self.ids(question), self.symbol(mark), self.ids(answer)
        fixed = 5 + len(q) + len(m) + len(a)  # <s> </s> </s> <mask> </s> and the template words
        p, h = self._sentences(premise, hypothesis, self.max_length - fixed)
        return [self.bos] + p + [self.eos, self.eos] + q + h + m + a + [self.mask, self.eos], 0

    def encode_example(self, example, input_format: str, lang: str = None):
        """(ids, prompt_start) of an NLIExample in ``input_format`` (cloze, pair or pct; a PCT
        question uses the template of ``lang``, default the example's language)."""
        if input_format == "pair":
            return self.pair(example.premise, example.hypothesis)
        if input_format == "pct":
            return self.pct(example.premise, example.hypothesis, lang or example.language)
        return self.cloze(example.premise, example.hypothesis)


# ------------------------------------------------------------------------------ datasets

class _SizeOrderedDataset(FairseqDataset):
    """Batches by length: ``sizes`` per item, a ``seed``-ed shuffle (unless ``shuffle`` is
    False) then a stable sort by size, as fairseq's LanguagePairDataset orders them."""

    shuffle = True

    def __len__(self):
        return len(self.sizes)

    def size(self, i):
        return int(self.sizes[i])

    def ordered_indices(self):
        order = np.random.RandomState(self.seed).permutation(len(self)) if self.shuffle else np.arange(len(self))
        return order[np.argsort(self.sizes[order], kind="mergesort")]


class NLIDataset(_SizeOrderedDataset):
    """Encoded NLI examples. ``target_lang`` marks examples outside the source language: the
    model reads them with the translated prompt p^T (MPT §III-C, inference)."""

    def __init__(self, tokens: List[List[int]], prompt_starts: List[int], labels: List[int],
                 target_lang: List[bool], pad: int, seed: int = 1, shuffle: bool = True):
        self.tokens = [torch.tensor(t, dtype=torch.long) for t in tokens]
        self.prompt_starts, self.labels, self.target_lang = prompt_starts, labels, target_lang
        self.sizes = np.array([len(t) for t in tokens], dtype=np.int64)
        self.pad, self.seed, self.shuffle = pad, seed, shuffle

    @classmethod
    def encode(cls, examples, template: ClozeTemplate, source_lang: str, pair=False, input_format=None,
               template_langs=None, **kw):
        """``template_langs``: per example, the language of its PCT template (default: its own)."""
        input_format = input_format or ("pair" if pair else "cloze")
        langs = template_langs or [None] * len(examples)
        enc = [template.encode_example(e, input_format, lang) for e, lang in zip(examples, langs)]
        return cls([t for t, _ in enc], [s for _, s in enc], [e.label for e in examples],
                   [e.language != source_lang for e in examples], template.d.pad(), **kw)

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        return {"id": i, "tokens": self.tokens[i], "prompt_start": self.prompt_starts[i],
                "label": self.labels[i], "target_lang": self.target_lang[i]}

    def num_tokens(self, i):
        return int(self.sizes[i])

    def collater(self, samples):
        if not samples:
            return {}
        return {"id": torch.tensor([s["id"] for s in samples]), "nsentences": len(samples),
                "ntokens": sum(len(s["tokens"]) for s in samples),
                "net_input": net_input(samples, self.pad),
                "target": torch.tensor([s["label"] for s in samples])}


def net_input(rows, pad):
    """One PLM batch: right-padded tokens, where each row's prompt slots start, and whether
    the row is read with the target prompt."""
    return {"src_tokens": data_utils.collate_tokens([r["tokens"] for r in rows], pad),
            "src_lengths": torch.tensor([len(r["tokens"]) for r in rows]),
            "prompt_start": torch.tensor([r["prompt_start"] for r in rows]),
            "target_lang": torch.tensor([bool(r["target_lang"]) for r in rows])}


class NLIWithParallelDataset(_SizeOrderedDataset):
    """The task data batched alongside the external parallel corpus (MPT Fig. 1-2).

    Item i is task example i mod N with parallel pair i mod M, so an epoch is one pass over
    the larger of the two and the smaller one is cycled (the paper's note on Fig. 5: with
    2000/8000 parallel pairs it trains 15/4 epochs instead of 50 to keep training time equal,
    i.e. an epoch walks the external corpus). A batch of b items is one PLM batch of 3b rows:
    b task examples (prompt by language, normally p^S), b parallel sources with p^S and their
    b translations with p^T (Eq. 5); ``sample["n_task"]`` = b.
    """

    def __init__(self, task_data: NLIDataset, src: NLIDataset, tgt: NLIDataset, seed: int = 1):
        self.task, self.src, self.tgt, self.seed = task_data, src, tgt, seed
        n, m = len(task_data), len(src)
        idx = np.arange(max(n, m))
        self.task_index, self.par_index = idx % n, idx % m
        self.sizes = np.maximum(task_data.sizes[self.task_index],
                                np.maximum(src.sizes[self.par_index], tgt.sizes[self.par_index]))

    def __getitem__(self, i):
        j = int(self.par_index[i])
        return {"id": i, "task": self.task[int(self.task_index[i])], "src": self.src[j], "tgt": self.tgt[j]}

    def num_tokens(self, i):
        return 3 * int(self.sizes[i])

    def collater(self, samples):
        if not samples:
            return {}
        rows = [s["task"] for s in samples] + [s["src"] for s in samples] + [s["tgt"] for s in samples]
        return {"id": torch.tensor([s["id"] for s in samples]), "nsentences": len(samples),
                "ntokens": sum(len(r["tokens"]) for r in rows), "n_task": len(samples),
                "net_input": net_input(rows, self.task.pad),
                "target": torch.tensor([s["task"]["label"] for s in samples])}


class PCTAugmentedDataset(_SizeOrderedDataset):
    """PCT's training data (Qi et al. 2022): every question (English template) with its
    augmented question, the same example under the template of a sampled other language.

    A batch of b items is one PLM batch of 2b rows: the b original questions, then their b
    augmented questions in the same order; ``sample["n_task"]`` = b, ``target`` the b labels
    (shared by both halves).
    """

    def __init__(self, original: NLIDataset, augmented: NLIDataset, seed: int = 1):
        if len(original) != len(augmented):
            raise ValueError("PCTAugmentedDataset needs one augmented question per question")
        self.original, self.augmented, self.seed = original, augmented, seed
        self.sizes = np.maximum(original.sizes, augmented.sizes)

    def __getitem__(self, i):
        return {"id": i, "original": self.original[i], "augmented": self.augmented[i]}

    def num_tokens(self, i):
        return 2 * int(self.sizes[i])

    def collater(self, samples):
        if not samples:
            return {}
        rows = [s["original"] for s in samples] + [s["augmented"] for s in samples]
        return {"id": torch.tensor([s["id"] for s in samples]), "nsentences": len(samples),
                "ntokens": sum(len(r["tokens"]) for r in rows), "n_task": len(samples),
                "net_input": net_input(rows, self.original.pad),
                "target": torch.tensor([s["original"]["label"] for s in samples])}


def sample_template_languages(n: int, langs: Sequence[str], seed: int) -> List[str]:
    """PCT's augmentation: a template language drawn uniformly for each of n examples, once
    (as PCT's own code draws it when the data is loaded), seeded."""
    if not langs:
        raise FairseqPLMError("PCT needs at least one language to sample augmented templates from (--pct-langs)")
    rng = np.random.RandomState(seed)
    return [langs[i] for i in rng.randint(len(langs), size=n)]
