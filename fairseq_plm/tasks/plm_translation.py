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

Bad input, each one line (``FairseqPLMError``) instead of a traceback or a silent loss:
  * a split whose source and target files hold different numbers of sentences (names both);
  * a split binarized with a PLM dictionary but never encoded with the PLM's tokenizer (more
    than ``--max-unk-ratio`` of its first sentences' tokens are ``<unk>``);
  * sentences longer than the model's positions: the error names the line of the split (or of
    the interactive input), not an index within a batch;
  * ``--fp16`` training on a CPU and ``--bf16`` (TPU-only in fairseq) training;
  * interactive input: lone surrogates (undecodable bytes kept by Python's surrogateescape)
    become U+FFFD with a warning naming the line, so the line is translated instead of
    ending the run; a line mostly ``<unk>`` (raw text without ``--bpe``) gets a loud warning.
"""

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import II

from fairseq.data import Dictionary, data_utils
from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
from fairseq.sequence_generator import SequenceGenerator
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..data.text_processing import REPLACEMENT, replace_surrogates
from ..plm.errors import FairseqPLMError
from ..plm.vocab import PLMDictionary, VocabularyError, load_dictionary

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
        try:
            super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        except AssertionError as e:
            if "same number of examples" not in str(e):
                raise
            raise pair_count_error(self, split) from None
        self.make_batching_exact(split)
        check_encoded(self, split)

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


def half_precision_problem(fp16, bf16, cpu):
    """Why fairseq cannot train with ``--fp16`` / ``--bf16`` here (None if it can)."""
    if bf16:
        try:
            import torch_xla  # noqa: F401
        except ImportError:
            return ("--bf16 trains on TPUs only in fairseq (it implies --tpu) and torch_xla is not installed: "
                    "drop --bf16 to train in fp32" + ("" if cpu or not torch.cuda.is_available()
                                                      else ", or use --fp16 on this GPU"))
    if fp16 and (cpu or not torch.cuda.is_available()):
        return ("--fp16 training needs a CUDA GPU (fairseq keeps fp32 master weights on it) and this run is on "
                "the CPU" + (" (--cpu)" if cpu else " (no GPU found)") + ": drop --fp16 to train in fp32")
    return None


def unk_share(tokens: torch.Tensor, dictionary) -> float:
    return float(tokens.eq(dictionary.unk()).sum()) / max(1, tokens.numel())


UNK_CHECK_SENTENCES = 2000


@dataclass
class PLMTranslationConfig(TranslationConfig):
    seed: int = II("common.seed")
    max_unk_ratio: float = field(
        default=0.05, metadata={"help": "refuse a split binarized with a PLM dictionary whose first sentences are "
                                        "more than this share <unk> (text never encoded with fairseq-plm-encode); "
                                        "1 disables the check"})
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    cpu: bool = II("common.cpu")


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
        if not from_checkpoint:  # fairseq-train (generation in fp16/bf16 works on a CPU)
            problem = half_precision_problem(_cfg_get(self.cfg, "fp16"), _cfg_get(self.cfg, "bf16"),
                                             _cfg_get(self.cfg, "cpu"))
            if problem:
                raise FairseqPLMError(problem)
        model = super().build_model(cfg, from_checkpoint)
        # models that put prompt, source and target into one position range (single-stage
        # prompting, prompt tuning) tell us the combined limit of |prompt| + |x| + |y|
        self.sequence_limit = getattr(model, "sequence_limit", None)
        return model

    # ---------------------------------------------------------- interactive input

    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        """fairseq-interactive's encoding of a buffer of input lines, line by line, so that one
        line's undecodable bytes cannot end the run (and errors can name the input line)."""
        first = getattr(self, "_interactive_lines", 0)
        self._interactive_lines = first + len(lines)
        self._pending_first_line = first + 1
        tokens = []
        for n, line in enumerate(lines, start=first + 1):
            clean = replace_surrogates(line)
            if clean != line:
                logger.warning(f"input line {n} is not valid UTF-8: invalid bytes replaced by U+FFFD")
            ids = self.source_dictionary.encode_line(encode_fn(clean), add_if_not_exist=False).long()
            self._warn_if_unknown(n, clean, ids)
            tokens.append(ids)
        return tokens, [t.numel() for t in tokens]

    def build_bpe(self, args):
        self.bpe = super().build_bpe(args)
        return self.bpe

    def _warn_if_unknown(self, n, line, ids):
        """Input read without --bpe must already be the PLM's pieces; warn loudly when it is not."""
        d = self.source_dictionary
        if not isinstance(d, PLMDictionary) or getattr(self, "_warned_unknown", False) \
                or getattr(self, "bpe", "unknown") is not None:
            return
        content = ids[:-1] if len(ids) and ids[-1] == d.eos() else ids
        if len(content) and unk_share(content, d) > _cfg_float(self.cfg, "max_unk_ratio", 0.05) \
                and REPLACEMENT not in line:
            self._warned_unknown = True
            logger.warning(
                f"!!! input line {n}: {int(content.eq(d.unk()).sum())} of its {len(content)} tokens are <unk>: without "
                f"--bpe the input must already be the PLM's pieces. Raw text needs --bpe sentencepiece --sentencepiece-model "
                f"<PLM>/spiece.model (XLM-R: <PLM>/sentencepiece.bpe.model; mBERT: --bpe wordpiece "
                f"--wordpiece-vocab <PLM>/vocab.txt), or encode it with fairseq-plm-encode first. "
                f"(Reported once.)")

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        return self.tag_inference_dataset(super().build_dataset_for_inference(src_tokens, src_lengths, constraints))

    def tag_inference_dataset(self, dataset):
        """Remember which input line the dataset's sentence 0 is (errors name input lines)."""
        dataset.first_input_line = getattr(self, "_pending_first_line", None)
        self._pending_first_line = None
        return dataset

    # ---------------------------------------------------------- sizes

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        where = self._line_namer(dataset)
        if not ignore_invalid_inputs and isinstance(max_positions, tuple) and len(max_positions) == 2:
            for sizes, limit, side in ((dataset.src_sizes, max_positions[0], "source"),
                                       (getattr(dataset, "tgt_sizes", None), max_positions[1], "target")):
                if sizes is None or limit is None:
                    continue
                _refuse_too_long(indices, sizes[indices], limit, f"{side} sentences",
                                 f"the {limit} positions the model allows", where)
        if ignore_invalid_inputs and getattr(dataset, "first_input_line", None) is not None:
            _warn_skipped(indices, dataset, max_positions, where)
        indices = super().filter_indices_by_size(indices, dataset, max_positions, ignore_invalid_inputs)
        limit = getattr(self, "sequence_limit", None)
        if limit is None or getattr(dataset, "tgt_sizes", None) is None:
            return indices
        total = dataset.src_sizes[indices] + dataset.tgt_sizes[indices]
        if not ignore_invalid_inputs:
            _refuse_too_long(indices, total, limit, "sentence pairs",
                             f"the PLM's positions ({limit} for prompt + source + target)", where)
        bad = indices[total > limit]
        if len(bad):
            logger.warning(f"{len(bad)} pairs longer than the PLM's {limit} positions (prompt + source + target) "
                           f"skipped, e.g. {where(bad[0])}")
        return indices[total <= limit]

    def _line_namer(self, dataset):
        """index in ``dataset`` -> the line it came from, in words."""
        first = getattr(dataset, "first_input_line", None)
        if first is not None:
            return lambda i: f"line {first + int(i)} of the input"
        split = next((name for name, d in self.datasets.items() if d is dataset), None)
        if split is None:
            return lambda i: f"sentence #{int(i)}"
        return lambda i: f"line {int(i) + 1} of the {split} split (sentence id {int(i)})"


def _is_plain_fairseq_dictionary(path):
    """``<symbol> <count>`` lines, as ``fairseq-preprocess`` writes its own dictionaries."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for _, line in zip(range(20), f)]
    except (OSError, UnicodeDecodeError):
        return False
    return bool(lines) and all(len(line.rsplit(" ", 1)) == 2 and line.rsplit(" ", 1)[1].lstrip("-").isdigit()
                               or line.endswith("#fairseq:overwrite") for line in lines if line)


def _cfg_get(cfg, key):
    """A task config value that may be missing (old checkpoints) or an unresolvable interpolation
    (a task config built outside a full fairseq config, as in tests): False then."""
    try:
        return bool(getattr(cfg, key, False))
    except Exception:
        return False


def _cfg_float(cfg, key, default):
    value = getattr(cfg, key, None)
    return default if value is None else float(value)


def _refuse_too_long(indices, sizes, limit, what, where, line_of):
    """One error for inputs beyond the positions: how many, the first one's line, the way out."""
    bad = sizes > limit
    if bad.any():
        i = int(np.flatnonzero(bad)[np.argmin(np.asarray(indices)[bad])])  # the first line, not the shortest
        n = int(bad.sum())
        what = what if n > 1 else what.replace("sentences", "sentence").replace("pairs", "pair")
        raise FairseqPLMError(
            f"{n} {what} {'do' if n > 1 else 'does'} not fit {where}: {'e.g. ' if n > 1 else ''}"
            f"{line_of(indices[i])} has {sizes[i]} tokens; shorten {'them' if n > 1 else 'it'} or pass "
            f"--skip-invalid-size-inputs-valid-test to skip {'them' if n > 1 else 'it'}")


def _warn_skipped(indices, dataset, max_positions, line_of):
    """fairseq-interactive with --skip-invalid-size-inputs-valid-test drops too-long lines from
    its output: say which input lines get no translation."""
    limit = max_positions[0] if isinstance(max_positions, tuple) else max_positions
    if limit is None:
        return
    bad = [int(i) for i in indices if dataset.src_sizes[i] > limit]
    if bad:
        logger.warning(f"{len(bad)} input lines longer than {limit} tokens get NO translation "
                       f"(--skip-invalid-size-inputs-valid-test): " + ", ".join(line_of(i) for i in bad[:10]))


def pair_count_error(task, split):
    """The one-line error for a split whose source and target hold different numbers of sentences."""
    from fairseq.data import indexed_dataset

    from fairseq import utils

    data = utils.split_paths(task.cfg.data)[0]
    src, tgt = task.cfg.source_lang, task.cfg.target_lang
    counts = []
    for lang in (src, tgt):
        for a, b in ((src, tgt), (tgt, src)):
            prefix = os.path.join(data, f"{split}.{a}-{b}.{lang}")
            if indexed_dataset.dataset_exists(prefix, impl=task.cfg.dataset_impl):
                counts.append((prefix, len(data_utils.load_indexed_dataset(prefix, None, task.cfg.dataset_impl))))
                break
    detail = " but ".join(f"{p} holds {n} sentences" for p, n in counts) if len(counts) == 2 else "they differ"
    return FairseqPLMError(
        f"the {split} split's source and target do not pair up: {detail}; re-run fairseq-plm-preprocess on "
        f"text files with one sentence per line on each side (it refuses files whose line counts differ)")


def check_encoded(task, split):
    """Refuse a split binarized with a PLM dictionary from text that was never encoded with the
    PLM's tokenizer (fairseq-plm-encode): most of its tokens are <unk>. Looks at the first
    ``UNK_CHECK_SENTENCES`` sentences of each side."""
    limit = _cfg_float(task.cfg, "max_unk_ratio", 0.05)
    dataset = task.datasets.get(split)
    if dataset is None or limit >= 1:
        return
    for side, d in (("source", task.source_dictionary), ("target", task.target_dictionary)):
        data = getattr(dataset, "src" if side == "source" else "tgt", None)
        if data is None or not isinstance(d, PLMDictionary) or len(data) == 0:
            continue
        tokens = torch.cat([data[i] for i in range(min(len(data), UNK_CHECK_SENTENCES))])
        tokens = tokens[tokens.ne(d.eos())]
        share = unk_share(tokens, d)
        if share > limit:
            lang = task.cfg.source_lang if side == "source" else task.cfg.target_lang
            raise FairseqPLMError(
                f"the {split} split's {side} ({lang}) in {task.cfg.data} is {share:.0%} <unk> (first "
                f"{min(len(data), UNK_CHECK_SENTENCES)} sentences): it was binarized from text never encoded with "
                f"the PLM's tokenizer; run fairseq-plm-encode --tokenizer <PLM> on the raw text and "
                f"fairseq-plm-preprocess again (or pass --max-unk-ratio 1 to go on anyway)")


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
