"""``mpt_nli``: few-shot cross-lingual NLI (XNLI) as a cloze task, with an external parallel
corpus batched alongside the training data (MPT, Qiu et al., §III and §IV-A).

Data directory (``.tsv`` with a header or ``.jsonl``; formats in ``fairseq_plm/data/nli.py``):

    train.tsv          source-language (English) training set, e.g. XNLI-MT's multinli.train.en.tsv
    valid.tsv|dev.tsv  source-language development set, e.g. XNLI's xnli.dev.tsv (other languages
                       in it are ignored)
    test.tsv           all test languages in one file with a ``language`` column (xnli.test.tsv),
                       or one file per language, test.<lang>.tsv; split ``test.<lang>`` selects one

Few-shot (§IV-A): ``--k-shot k`` draws k examples per label from the training set and, the same
way, from the development set, with ``--few-shot-seed`` (default ``--seed``); test sets are
used whole. ``--parallel-data`` (PAWS-15 style pairs) adds the cross-lingual alignment input of
Eq. 5 to every training batch (see ``NLIWithParallelDataset``). Text is tokenized on the fly
with the tokenizer of ``--plm``, so there is no binarization step.

Input formats (``--input-format``): ``cloze`` (MPT's template with soft-prompt slots, models
``mpt``/``mpt_sp``), ``pair`` (<s> X_P </s></s> X_H </s>, the FT baseline ``mpt_ft``) and ``pct``
(PCT's discrete cross-lingual template, model ``mpt_pct``): every example is asked with the
template of its own language, and each training example is paired with the same example under
the template of a language drawn from ``--pct-langs`` (see ``PCTAugmentedDataset``).
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..data.nli import (DEFAULT_VERBALIZER, INPUT_FORMATS, LABELS, POSITIONS, XNLI_LANGUAGES, ClozeTemplate,
                        NLIDataset, NLIExample, NLIWithParallelDataset, PCTAugmentedDataset, read_nli, read_parallel,
                        read_pct_templates, sample_k_shot, sample_template_languages)
from ..plm.errors import FairseqPLMError
from ..plm.hub import local_plm_path
from ..plm.vocab import load_dictionary, make_encoder
from .plm_translation import ExactBatchingMixin

logger = logging.getLogger(__name__)


@dataclass
class MPTNLIConfig(FairseqDataclass):
    data: str = field(default="???", metadata={"help": "directory with train/valid(dev)/test NLI files"})
    plm: str = II("model.plm")  # the text is encoded with --plm's tokenizer
    source_lang: str = field(default="en", metadata={"help": "language of the training/dev data (read with p^S)"})
    k_shot: int = field(default=0, metadata={"help": "examples per label sampled from train and dev "
                                                    "(§IV-A: 1, 2, 4, ..., 256); 0 = all"})
    few_shot_seed: Optional[int] = field(default=None, metadata={"help": "seed of the k-shot sample (default: --seed)"})
    parallel_data: Optional[str] = field(
        default=None, metadata={"help": "external parallel corpus (.tsv/.jsonl with src_premise, src_hypothesis, "
                                        "tgt_premise, tgt_hypothesis, tgt_language) for the KL alignment (Eq. 5-7)"})
    prompt_length: int = field(default=4, metadata={"help": "soft prompt length m (§IV-B: 4)"})
    prompt_position: ChoiceEnum(POSITIONS) = field(
        default="suffix", metadata={"help": "where [p] goes in 'Prefix X_P . Midfix X_H ? Suffix <mask> Endfix .' "
                                            "(Eq. 9; Eq. 1 is suffix)"})
    verbalizer: str = field(
        default=DEFAULT_VERBALIZER, metadata={"help": "label words, label:word[|word...] comma-separated; "
                                                      "each word must be one token of the PLM"})
    verbalizer_scoring: ChoiceEnum(["mlm", "renormalized"]) = field(
        default="mlm", metadata={"help": "P^CLS of Eq. 2: mlm = W_Z P^MLM, the label words' probability under the "
                                         "full-vocabulary softmax (the paper); renormalized = divided by its sum over "
                                         "the labels (PET's practice). Same predictions, different training loss"})
    max_length: int = field(default=256, metadata={"help": "maximum input tokens (§IV-B: 256); longer "
                                                          "premise/hypothesis pairs are cut, longest first"})
    input_format: ChoiceEnum(INPUT_FORMATS) = field(
        default="cloze", metadata={"help": "cloze: the MPT template (mpt, mpt_sp); pair: <s> X_P </s></s> X_H </s> "
                                           "for the fine-tuning baseline (mpt_ft); pct: PCT's cross-lingual "
                                           "template question (mpt_pct)"})
    pct_langs: str = field(
        default="", metadata={"help": "PCT: languages whose templates augment each training question (default: "
                                      "--test-langs without --source-lang, XNLI's 14 targets)"})
    pct_templates: Optional[str] = field(
        default=None, metadata={"help": "PCT: JSON file {lang: [question word, question mark, answer word]} adding "
                                        "or replacing template languages"})
    test_langs: str = field(default=",".join(XNLI_LANGUAGES),
                            metadata={"help": "languages that fairseq-plm-mpt-eval reports (Table I columns)"})
    seed: int = II("common.seed")


@register_task("mpt_nli", dataclass=MPTNLIConfig)
class MPTNLITask(ExactBatchingMixin, FairseqTask):
    """Every example of every split is batched (no remainder dropped), see ExactBatchingMixin."""

    def __init__(self, cfg, dictionary, encode):
        super().__init__(cfg)
        self.dictionary = dictionary
        pct_templates = read_pct_templates(getattr(cfg, "pct_templates", None))
        self.template = ClozeTemplate(dictionary, encode, cfg.prompt_length, cfg.prompt_position, cfg.max_length,
                                      pct_templates=pct_templates)
        self.num_labels = len(LABELS)
        self.label_word_ids = self.template.label_word_ids(cfg.verbalizer) if cfg.input_format != "pair" else None

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        path = local_plm_path(cfg.plm, need_weights=False) if cfg.plm and cfg.plm != "???" else cfg.plm
        if not path or path == "???" or not os.path.exists(path):
            raise FairseqPLMError(f"--plm {path!r}: mpt_nli encodes its text with the PLM's tokenizer, so --plm "
                                  f"must be a PLM directory or Hub id (or its tokenizer file)")
        return cls(cfg, load_dictionary(path), make_encoder(path))

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def data_file(self, *stems):
        for stem in stems:
            for ext in (".tsv", ".jsonl"):
                path = os.path.join(self.cfg.data, stem + ext)
                if os.path.exists(path):
                    return path
        return None

    def read_split(self, split):
        src = self.cfg.source_lang
        if split in ("train", "valid"):
            path = self.data_file(*(("train",) if split == "train" else ("valid", "dev")))
            if path is None:
                raise FairseqPLMError(f"no {split} file ({split}.tsv or .jsonl) in --data {self.cfg.data}")
            examples = [e for e in read_nli(path, src) if e.language == src]
            seed = self.cfg.seed if self.cfg.few_shot_seed is None else self.cfg.few_shot_seed
            return sample_k_shot(examples, self.cfg.k_shot, seed + (split == "valid"), what=path)
        lang = split.split(".", 1)[1] if split.startswith("test.") else None
        path = self.data_file(split) if lang else None
        if path is not None:
            return read_nli(path, lang)
        path = self.data_file(split.split(".", 1)[0])
        if path is None:
            raise FairseqPLMError(f"no file for split {split!r} in --data {self.cfg.data} "
                                  f"(expected {split}.tsv or test.tsv with a language column)")
        examples = [e for e in read_nli(path, src) if lang is None or e.language == lang]
        if not examples:
            raise FairseqPLMError(f"{path} has no {lang!r} examples")
        return examples

    def encode(self, examples, target_lang=None, shuffle=True, template_langs=None):
        ds = NLIDataset.encode(examples, self.template, self.cfg.source_lang, input_format=str(self.cfg.input_format),
                               template_langs=template_langs, seed=self.cfg.seed, shuffle=shuffle)
        if target_lang is not None:
            ds.target_lang = [target_lang] * len(ds)
        return ds

    def pct_langs(self):
        """Languages whose templates PCT samples for the augmented questions."""
        spec = getattr(self.cfg, "pct_langs", "") or self.cfg.test_langs
        return [lang for lang in (x.strip() for x in spec.split(",")) if lang and lang != self.cfg.source_lang]

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        examples = self.read_split(split)
        data = self.encode(examples, shuffle=split == "train")
        if split == "train" and self.cfg.input_format == "pct":
            langs = self.pct_langs()
            for lang in langs:  # a clear error now rather than mid-training
                self.template.pct("x", "x", lang)
            augmented = self.encode(examples, template_langs=sample_template_languages(len(examples), langs,
                                                                                       self.cfg.seed))
            data = PCTAugmentedDataset(data, augmented, seed=self.cfg.seed)
            logger.info(f"train: {len(examples)} questions, each with a question under the template of one of "
                        f"{', '.join(langs)} (PCT)")
        if split == "train" and self.cfg.parallel_data:
            if self.cfg.input_format != "cloze":
                raise FairseqPLMError("--parallel-data needs the cloze input (the KL alignment compares <mask> "
                                      "predictions with p^S and p^T); the FT and PCT baselines train without it")
            pairs = read_parallel(self.cfg.parallel_data)
            src = self.encode([NLIExample(p.src_premise, p.src_hypothesis, -1, self.cfg.source_lang) for p in pairs],
                              target_lang=False)
            tgt = self.encode([NLIExample(p.tgt_premise, p.tgt_hypothesis, -1, p.tgt_language) for p in pairs],
                              target_lang=True)
            data = NLIWithParallelDataset(data, src, tgt, seed=self.cfg.seed)
            logger.info(f"train: {len(data.task)} NLI examples with {len(pairs)} parallel pairs "
                        f"from {self.cfg.parallel_data}")
        logger.info(f"{split}: {len(data)} items")
        self.datasets[split] = data
        self.make_batching_exact(split)

    def max_positions(self):
        return None
