"""Translation with a PLM's own vocabulary: ``plm_translation``.

Differences from fairseq's ``translation`` task:
  * dictionaries are PLM dictionaries (ids == the PLM's token ids), loaded from the
    ``dict.*.txt`` that ``fairseq-preprocess --task plm_translation --srcdict <tokenizer>``
    wrote, where ``<tokenizer>`` is the PLM's ``spiece.model`` / ``sentencepiece.bpe.model`` /
    ``dict.txt`` / ``vocab.txt`` or the PLM directory itself;
  * inference (generate, validate) batches never round to a multiple of 8, so every sentence
    of a split is translated/scored;
  * sources are right-padded: a causal PLM reads them left to right from position 0.

Target start: fairseq's convention, ``</s>`` (the PLM's EOS) followed by the target tokens;
it separates source and target for a causal PLM, whose vocabulary (mT5) has no BOS.
"""

import logging
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..plm.vocab import load_dictionary

logger = logging.getLogger(__name__)


class EverySentenceMixin:
    """Inference batch iterators keep every sentence: no rounding of batch sizes."""

    def get_batch_iterator(self, dataset, *args, **kwargs):
        if dataset is not self.datasets.get("train"):
            kwargs["required_batch_size_multiple"] = 1
            kwargs["skip_remainder_batch"] = False
        return super().get_batch_iterator(dataset, *args, **kwargs)


@dataclass
class PLMTranslationConfig(TranslationConfig):
    pass


@register_task("plm_translation", dataclass=PLMTranslationConfig)
class PLMTranslationTask(EverySentenceMixin, TranslationTask):
    def __init__(self, cfg, src_dict, tgt_dict):
        cfg.left_pad_source = False
        super().__init__(cfg, src_dict, tgt_dict)

    @classmethod
    def load_dictionary(cls, filename):
        return load_dictionary(filename)
