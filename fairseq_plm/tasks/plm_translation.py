"""Translation with a PLM's own vocabulary: ``plm_translation``.

Differences from fairseq's ``translation`` task:
  * dictionaries are PLM dictionaries (ids == the PLM's token ids), loaded from the
    ``dict.*.txt`` that ``fairseq-preprocess --task plm_translation --srcdict <tokenizer>``
    wrote, where ``<tokenizer>`` is the PLM's ``spiece.model`` / ``sentencepiece.bpe.model`` /
    ``dict.txt`` / ``vocab.txt`` or the PLM directory itself;
  * inference (generate, validate) batches never round to a multiple of 8, so every sentence
    of a split is translated/scored;
  * sources are right-padded: a causal PLM reads them left to right from position 0.

Non-autoregressive models of this package (SGA, CTC-NAT: models with
``initialize_output_tokens``) decode with fairseq's ``IterativeRefinementGenerator``
(``--iter-decode-max-iter`` etc.); autoregressive ones with beam search.

Plain fairseq dictionaries (``fairseq-preprocess`` without ``--srcdict``) are accepted too, so
from-scratch baselines (``ctc_nat``) train on their own vocabulary with the same batching.

Target start: fairseq's convention, ``</s>`` (the PLM's EOS) followed by the target tokens;
it separates source and target for a causal PLM, whose vocabulary (mT5) has no BOS.
"""

import logging
from dataclasses import dataclass

import numpy as np
from omegaconf import II

from fairseq.data import Dictionary, data_utils
from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
from fairseq.sequence_generator import SequenceGenerator
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..plm.errors import FairseqPLMError
from ..plm.vocab import VocabularyError, load_dictionary

logger = logging.getLogger(__name__)


class ExactBatchingMixin:
    """Batching that neither drops sentences nor changes on resume.

    * fairseq's ``batch_by_size`` rounds batches to ``--required-batch-size-multiple`` (8)
      and silently drops a final remainder smaller than that (3 sentences with 8: no batch at
      all). Every split keeps every sentence here: the remainder becomes one more batch, and
      inference iterators (every split but train) do not round at all.
    * fairseq builds the training batches once and reuses them across epochs, breaking ties
      between equal-length sentences with a permutation seeded by the epoch they were built
      in; a run resumed at epoch k would build them with another seed and see different
      batches. We seed that tie-break with ``--seed`` alone, so a resumed run continues
      exactly as an uninterrupted one.
    """

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        self.make_batching_exact(split)

    def make_batching_exact(self, split):
        dataset = self.datasets[split]
        dataset.ordered_indices = _SeededOrder(dataset.ordered_indices, self.cfg.seed)
        dataset.batch_by_size = _KeepRemainder(dataset.batch_by_size)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        if dataset is not self.datasets.get("train"):
            kwargs["required_batch_size_multiple"] = 1
            kwargs["skip_remainder_batch"] = False
        return super().get_batch_iterator(dataset, *args, **kwargs)


class _KeepRemainder:
    """``dataset.batch_by_size`` that batches, instead of dropping, what rounding left out."""

    def __init__(self, batch_by_size):
        self.batch_by_size = batch_by_size

    def __call__(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        batches = self.batch_by_size(indices, max_tokens, max_sentences, required_batch_size_multiple)
        if required_batch_size_multiple <= 1:
            return batches
        covered = np.concatenate(batches) if len(batches) else np.zeros(0, dtype=np.int64)
        left = np.asarray(indices, dtype=np.int64)[~np.isin(indices, covered)]  # keeps the size order
        if len(left):
            batches = list(batches) + list(self.batch_by_size(left, max_tokens, max_sentences, 1))
        return batches


class _SeededOrder:
    """``dataset.ordered_indices`` run under a fixed numpy seed (picklable for workers)."""

    def __init__(self, ordered_indices, seed):
        self.ordered_indices, self.seed = ordered_indices, seed

    def __call__(self):
        with data_utils.numpy_seed(self.seed):
            return self.ordered_indices()


@dataclass
class PLMTranslationConfig(TranslationConfig):
    seed: int = II("common.seed")


@register_task("plm_translation", dataclass=PLMTranslationConfig)
class PLMTranslationTask(ExactBatchingMixin, TranslationTask):
    def __init__(self, cfg, src_dict, tgt_dict):
        cfg.left_pad_source = False
        super().__init__(cfg, src_dict, tgt_dict)

    @classmethod
    def load_dictionary(cls, filename):
        try:
            return load_dictionary(filename)
        except VocabularyError:
            if not _is_plain_fairseq_dictionary(filename):
                raise
            return Dictionary.load(filename)

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **kwargs):
        if hasattr(models[0], "initialize_output_tokens"):  # non-autoregressive
            return IterativeRefinementGenerator(
                self.target_dictionary, models=models,
                eos_penalty=getattr(args, "iter_decode_eos_penalty", 0.0),
                max_iter=getattr(args, "iter_decode_max_iter", 10),
                beam_size=getattr(args, "iter_decode_with_beam", 1),
                reranking=getattr(args, "iter_decode_with_external_reranker", False),
                decoding_format=getattr(args, "decoding_format", None),
                adaptive=not getattr(args, "iter_decode_force_max_iter", False),
                retain_history=getattr(args, "retain_iter_history", False))
        limit = getattr(self, "sequence_limit", None)
        if limit is not None and seq_gen_cls is None and not getattr(args, "print_alignment", False):
            seq_gen_cls = PositionCappedGenerator
            extra_gen_cls_kwargs = dict(extra_gen_cls_kwargs or {}, sequence_limit=limit)
        return super().build_generator(models, args, seq_gen_cls=seq_gen_cls,
                                       extra_gen_cls_kwargs=extra_gen_cls_kwargs, **kwargs)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        # models that put prompt, source and target into one position range (single-stage
        # prompting, prompt tuning) tell us the combined limit of |prompt| + |x| + |y|
        self.sequence_limit = getattr(model, "sequence_limit", None)
        return model

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        if not ignore_invalid_inputs and isinstance(max_positions, tuple) and len(max_positions) == 2:
            for sizes, limit, side in ((dataset.src_sizes, max_positions[0], "source"),
                                       (getattr(dataset, "tgt_sizes", None), max_positions[1], "target")):
                if sizes is None or limit is None:
                    continue
                _refuse_too_long(indices, sizes[indices], limit, f"{side} sentences",
                                 f"the {limit} positions the model allows")
        indices = super().filter_indices_by_size(indices, dataset, max_positions, ignore_invalid_inputs)
        limit = getattr(self, "sequence_limit", None)
        if limit is None or getattr(dataset, "tgt_sizes", None) is None:
            return indices
        total = dataset.src_sizes[indices] + dataset.tgt_sizes[indices]
        if not ignore_invalid_inputs:
            _refuse_too_long(indices, total, limit, "sentence pairs",
                             f"the PLM's positions ({limit} for prompt + source + target)")
        bad = indices[total > limit]
        if len(bad):
            logger.warning(f"{len(bad)} pairs longer than the PLM's {limit} positions (prompt + source + target) "
                           f"skipped, e.g. #{bad[0]}")
        return indices[total <= limit]


def _is_plain_fairseq_dictionary(path):
    """``<symbol> <count>`` lines, as ``fairseq-preprocess`` writes its own dictionaries."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for _, line in zip(range(20), f)]
    except (OSError, UnicodeDecodeError):
        return False
    return bool(lines) and all(len(line.rsplit(" ", 1)) == 2 and line.rsplit(" ", 1)[1].lstrip("-").isdigit()
                               or line.endswith("#fairseq:overwrite") for line in lines if line)


def _refuse_too_long(indices, sizes, limit, what, where):
    """One error for inputs beyond the positions: how many, an example, and the way out."""
    bad = sizes > limit
    if bad.any():
        i = int(np.argmax(bad))
        raise FairseqPLMError(
            f"{int(bad.sum())} {what} (e.g. #{indices[i]}, {sizes[i]} tokens) do not fit {where}; "
            f"shorten them or pass --skip-invalid-size-inputs-valid-test to skip them")


class PositionCappedGenerator(SequenceGenerator):
    """Beam search for models whose target positions continue after the source (and prompt):
    hypotheses stop where the PLM's positions end, ``sequence_limit - |longest source|``,
    instead of running past them."""

    def __init__(self, *args, sequence_limit, **kwargs):
        super().__init__(*args, **kwargs)
        self.sequence_limit = sequence_limit

    def _generate(self, sample, *args, **kwargs):
        src = sample["net_input"]["src_tokens"]
        longest = int(src.ne(self.pad).sum(dim=1).max())
        saved = self.max_len
        # _generate decodes at most self.max_len - 1 tokens; the last one's position is
        # offset + max_len - 1 <= sequence_limit - 1
        self.max_len = max(2, min(saved, self.sequence_limit - longest))
        try:
            return super()._generate(sample, *args, **kwargs)
        finally:
            self.max_len = saved
