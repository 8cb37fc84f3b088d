"""The shared backbone layer: prompt-aware PLMs, offline loaders, vocabulary bridge, and the
glue that lets a fairseq model hold a frozen PLM (prompt-only checkpoints)."""

from .bert import BertEncoder
from .config import PRESETS, PLMConfig, preset
from .gpt import GPT
from .loading import PLMLoadError, build_model, load_plm
from .modules import KVCache, PLMOutput, PretrainedLM
from .prompts import DeepPrompt

__all__ = ["BertEncoder", "GPT", "PRESETS", "PLMConfig", "preset", "PLMLoadError", "build_model",
           "load_plm", "KVCache", "PLMOutput", "PretrainedLM", "DeepPrompt"]
