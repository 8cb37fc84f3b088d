"""Architecture descriptions of the pre-trained LMs we support, and presets at true size."""

import dataclasses
from dataclasses import dataclass
from typing import Optional

from .errors import FairseqPLMError

ACTIVATION_NAMES = ("gelu", "gelu_new", "relu")


@dataclass
class PLMConfig:
    family: str  # "gpt2" (causal, pre-LN) | "bert" (mBERT layout) | "roberta" (XLM-R layout)
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    layer_norm_eps: float = 1e-5
    activation: str = "gelu"  # "gelu" (erf) | "gelu_new" (tanh approximation, GPT-2)
    dropout: float = 0.1
    attention_dropout: float = 0.1
    type_vocab_size: int = 0  # BERT: 2, RoBERTa/XLM-R: 1, GPT-2: 0
    pad_token_id: Optional[int] = None
    # RoBERTa/XLM-R count positions from padding_idx + 1; BERT and GPT-2 from 0.
    position_offset: int = 0
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.family not in ("gpt2", "bert", "roberta"):
            raise FairseqPLMError(f"unknown PLM family {self.family!r}; expected gpt2, bert or roberta")
        if self.hidden_size % self.num_heads != 0:
            raise FairseqPLMError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.activation not in ACTIVATION_NAMES:
            raise FairseqPLMError(
                f"activation {self.activation!r} is not supported (expected one of {', '.join(ACTIVATION_NAMES)})"
            )

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads

    @property
    def is_causal(self):
        return self.family == "gpt2"

    @property
    def usable_positions(self):
        """How many tokens one sequence (prompt excluded) may hold."""
        return self.max_positions - self.position_offset

    def replace(self, **kwargs):
        return dataclasses.replace(self, **kwargs)

    def to_dict(self):
        return dataclasses.asdict(self)


PRESETS = {
    # THUMT/mGPT (Tan et al. 2022, App. A.1): GPT-2 medium layout, mT5 vocabulary (250,100).
    "mgpt": PLMConfig(
        family="gpt2", vocab_size=250100, hidden_size=1024, num_layers=24, num_heads=16,
        intermediate_size=4096, max_positions=1024, activation="gelu_new", pad_token_id=0,
        dropout=0.1, attention_dropout=0.1,
    ),
    "gpt2": PLMConfig(
        family="gpt2", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
        intermediate_size=3072, max_positions=1024, activation="gelu_new",
    ),
    "xlmr-base": PLMConfig(
        family="roberta", vocab_size=250002, hidden_size=768, num_layers=12, num_heads=12,
        intermediate_size=3072, max_positions=514, type_vocab_size=1, pad_token_id=1,
        position_offset=2,
    ),
    "xlmr-large": PLMConfig(
        family="roberta", vocab_size=250002, hidden_size=1024, num_layers=24, num_heads=16,
        intermediate_size=4096, max_positions=514, type_vocab_size=1, pad_token_id=1,
        position_offset=2,
    ),
    "mbert": PLMConfig(
        family="bert", vocab_size=119547, hidden_size=768, num_layers=12, num_heads=12,
        intermediate_size=3072, max_positions=512, type_vocab_size=2, pad_token_id=0,
        layer_norm_eps=1e-12,
    ),
}


def preset(name: str, **overrides) -> PLMConfig:
    if name not in PRESETS:
        raise FairseqPLMError(f"unknown PLM preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name].replace(**overrides)
