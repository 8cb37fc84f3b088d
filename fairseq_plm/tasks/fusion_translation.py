"""``fusion_translation``: translation for deep fusion, with two vocabularies from one
``fairseq-preprocess`` run.

* source: the PTM's vocabulary (``fairseq-plm-encode`` + ``--srcdict <PTM>``), so the
  source ids are the PTM's token ids;
* target: the NMT's own vocabulary (fastBPE or sentencepiece pieces, ``--nwordstgt 30000``);
* the target in the PTM's vocabulary, which target sentence prediction (TSP) reads through the
  PTM, is made on the fly for the training batches (``sample["ptm_target"]``): target ids ->
  text (subword marks removed, ``--target-subword``, detected from the target dictionary by
  default) -> the PTM's tokenizer (``--ptm-tokenizer``, default: the one in ``--plm``).

Everything else is ``plm_translation``: exact batching (no sentence dropped at inference, a
resumed run sees the same batches), beam search for the AT model and fairseq's
``IterativeRefinementGenerator`` for the Mask-Predict model.
"""

import os
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.data import LanguagePairDataset, data_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from omegaconf import II

from ..plm.errors import FairseqPLMError
from ..plm.vocab import Retokenizer, tokenizer_file
from fairseq.tasks.translation import load_langpair_dataset

from .plm_translation import PLMTranslationConfig, PLMTranslationTask, check_encoded, pair_count_error


@dataclass
class FusionTranslationConfig(PLMTranslationConfig):
    ptm_tokenizer: str = field(
        default="", metadata={"help": "the PTM's tokenizer (vocab.txt, sentencepiece.bpe.model or the PTM "
                                      "directory) for the target side of TSP; default: the one in --plm"})
    target_subword: ChoiceEnum(["auto", "subword_nmt", "sentencepiece", "none"]) = field(
        default="auto", metadata={"help": "how the target was split into NMT subwords (subword_nmt: fastBPE / "
                                          "subword-nmt '@@ '); auto: read it from the target dictionary"})
    train_subset: str = II("dataset.train_subset")


@register_task("fusion_translation", dataclass=FusionTranslationConfig)
class FusionTranslationTask(PLMTranslationTask):
    retokenizer = None

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        heads = getattr(getattr(model, "encoder", None), "heads", None)
        if getattr(heads, "tsp", None) is not None:
            path = self.cfg.ptm_tokenizer or tokenizer_file(getattr(cfg, "plm", ""))
            if not path or not os.path.exists(path):
                raise FairseqPLMError(
                    f"target sentence prediction needs the PTM's tokenizer: --ptm-tokenizer "
                    f"{self.cfg.ptm_tokenizer or '(unset)'} does not exist and --plm {getattr(cfg, 'plm', '')} "
                    f"has no vocab.txt / sentencepiece.bpe.model; pass --ptm-tokenizer or --no-tsp")
            self.retokenizer = Retokenizer(self.target_dictionary, path, self.source_dictionary,
                                           self.cfg.target_subword)
        return model

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        """As ``translation``, without its demand that both vocabularies share special ids."""
        paths = utils.split_paths(cfg.data)
        if cfg.source_lang is None or cfg.target_lang is None:
            cfg.source_lang, cfg.target_lang = data_utils.infer_language_pair(paths[0])
        if cfg.source_lang is None or cfg.target_lang is None:
            raise FairseqPLMError(f"could not infer the language pair from {paths[0]}: pass -s and -t")
        src_dict, tgt_dict = (cls.load_dictionary(os.path.join(paths[0], f"dict.{lang}.txt"))
                              for lang in (cfg.source_lang, cfg.target_lang))
        return cls(cfg, src_dict, tgt_dict)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        if self.cfg.num_batch_buckets:
            raise FairseqPLMError("--num-batch-buckets is not supported by --task fusion_translation")
        paths = utils.split_paths(self.cfg.data)
        if split != self.cfg.train_subset:
            paths = paths[:1]
        try:
            pair = self._load_pair(paths, split, epoch, combine)
        except AssertionError as e:
            if "same number of examples" not in str(e):
                raise
            raise pair_count_error(self, split) from None
        self.datasets[split] = TwoVocabularyPairDataset(
            pair.src, pair.src_sizes, self.src_dict, pair.tgt, pair.tgt_sizes, tgt_dict=self.tgt_dict,
            left_pad_source=self.cfg.left_pad_source, left_pad_target=self.cfg.left_pad_target,
            shuffle=(split != "test"))
        self.make_batching_exact(split)
        check_encoded(self, split)
        if split == self.cfg.train_subset:
            dataset = self.datasets[split]
            dataset.collater = _WithPTMTarget(dataset.collater, self)

    def _load_pair(self, paths, split, epoch, combine):
        return load_langpair_dataset(  # (its target dictionary only serves raw-text data)
            paths[(epoch - 1) % len(paths)], split, self.cfg.source_lang, self.src_dict, self.cfg.target_lang,
            None, combine=combine, dataset_impl=self.cfg.dataset_impl, upsample_primary=self.cfg.upsample_primary,
            left_pad_source=self.cfg.left_pad_source, left_pad_target=self.cfg.left_pad_target,
            max_source_positions=self.cfg.max_source_positions, max_target_positions=self.cfg.max_target_positions,
            truncate_source=self.cfg.truncate_source, shuffle=(split != "test"),
            pad_to_multiple=self.cfg.required_seq_len_multiple)

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        if constraints is not None:
            raise FairseqPLMError("--constraints is not supported by --task fusion_translation")
        return self.tag_inference_dataset(TwoVocabularyPairDataset(
            src_tokens, src_lengths, self.source_dictionary, tgt_dict=self.target_dictionary,
            left_pad_source=self.cfg.left_pad_source))


class TwoVocabularyPairDataset(LanguagePairDataset):
    """A ``LanguagePairDataset`` whose source and target vocabularies have different special
    ids (mBERT: [PAD] 0, [SEP] 102; a fairseq target dictionary: <pad> 1, </s> 2): the source
    is padded with the source's pad, the target and the decoder input with the target's."""

    def __init__(self, *args, tgt_dict, **kwargs):
        super().__init__(*args, tgt_dict=None, **kwargs)  # (the parent insists on shared special ids)
        self.tgt_dict = tgt_dict

    def collater(self, samples, pad_to_length=None):
        if not samples:
            return {}
        src_pad = self.src_dict.pad()
        sources = [s["source"] for s in samples]
        src_lengths, order = torch.LongTensor([int(s.ne(src_pad).sum()) for s in sources]).sort(descending=True)
        src_tokens = data_utils.collate_tokens(sources, src_pad, left_pad=self.left_pad_source)
        batch = {
            "id": torch.LongTensor([s["id"] for s in samples])[order], "nsentences": len(samples),
            "net_input": {"src_tokens": src_tokens[order], "src_lengths": src_lengths},
            "target": None, "ntokens": int(src_lengths.sum()),
        }
        if samples[0].get("target") is not None:
            pad, eos = self.tgt_dict.pad(), self.tgt_dict.eos()
            targets = [s["target"] for s in samples]
            batch["target"] = data_utils.collate_tokens(targets, pad, left_pad=self.left_pad_target)[order]
            batch["net_input"]["prev_output_tokens"] = data_utils.collate_tokens(
                targets, pad, eos, left_pad=self.left_pad_target, move_eos_to_beginning=True)[order]
            batch["ntokens"] = int(batch["target"].ne(pad).sum())
        return batch


class _WithPTMTarget:
    """``dataset.collater`` that adds ``ptm_target``: each target re-tokenized into the PTM's
    vocabulary, content only (no [CLS]/[SEP]), right-padded with the PTM's pad."""

    def __init__(self, collater, task):
        self.collater, self.task = collater, task

    def __call__(self, samples):
        batch = self.collater(samples)
        retokenize = self.task.retokenizer
        if retokenize is None or not batch:
            return batch
        targets = {s["id"]: s["target"] for s in samples}
        unk = self.task.source_dictionary.unk()
        rows = [torch.tensor(retokenize(targets[int(i)]) or [unk], dtype=torch.long) for i in batch["id"]]
        batch["ptm_target"] = data_utils.collate_tokens(rows, self.task.source_dictionary.pad())
        return batch
