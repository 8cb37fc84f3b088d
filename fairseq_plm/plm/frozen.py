"""How a fairseq model of this package holds a frozen PLM.

* ``PLMArgs``: the command-line options every model shares (``--plm``, ``--plm-random-init``...).
* ``build_frozen_plm``: loads the PLM, sets ``requires_grad=False`` (fairseq's optimizer and
  fp16 flattening only collect trainable parameters, and "num. trained" counts only those)
  and pins it to eval mode unless ``--plm-dropout`` asks otherwise. Models of one process
  built on the same PLM share one frozen instance (plm/shared.py).
* ``FrozenPLMMixin``: prompt-only checkpoints. ``state_dict`` drops the PLM's tensors and adds
  a fingerprint of its weights; ``load_state_dict`` re-attaches the PLM that ``build_model``
  loaded from ``--plm`` and refuses a checkpoint trained on another PLM.
"""

import hashlib
import re
from dataclasses import dataclass, field

import torch

from fairseq.dataclass import FairseqDataclass

from .errors import FairseqPLMError
from .fairseq_checks import check_dictionary
from .hub import pinned_plm_path
from .loading import load_plm
from .modules import PretrainedLM
from .shared import shared_between_models

FINGERPRINT_KEY = "plm_fingerprint"
_PLM_KEY = re.compile(r"(^|\.)plm\.")


@dataclass
class PLMArgs(FairseqDataclass):
    plm: str = field(
        default="???",
        metadata={"help": "pre-trained LM: a local HuggingFace-format directory (config.json + "
                          "model.safetensors/pytorch_model.bin), a fairseq XLM-R directory "
                          "(model.pt), a Hugging Face Hub id org/name[@revision] (standard cache; "
                          "HF_HUB_OFFLINE=1 reads the cache only), or a preset name (mgpt, "
                          "xlmr-base, xlmr-large, mbert) together with --plm-random-init"},
    )
    plm_random_init: bool = field(
        default=False, metadata={"help": "use random PLM weights of the given shape (tests, benchmarks)"})
    plm_seed: int = field(default=1, metadata={"help": "seed of --plm-random-init weights"})
    plm_dropout: bool = field(
        default=False, metadata={"help": "keep the frozen PLM's dropout active while training"})


@dataclass
class PromptArgs(PLMArgs):
    prompt_length: int = field(default=128, metadata={"help": "prompt length L (MSP §4.1 and SGA: 128)"})


def build_plm(cfg) -> PretrainedLM:
    """The PLM named by ``--plm`` (trainable, as loaded)."""
    # checkpoints remember an absolute path (valid from any cwd) or the Hub id pinned to the
    # commit it resolved to (the same files on another machine)
    cfg.plm = pinned_plm_path(cfg.plm)
    return load_plm(cfg.plm, random_init=cfg.plm_random_init, seed=cfg.plm_seed)


@shared_between_models  # one instance per PLM and process (plm/shared.py)
def build_frozen_plm(cfg) -> PretrainedLM:
    plm = build_plm(cfg)
    plm.freeze(keep_eval=not cfg.plm_dropout)
    plm.fingerprint = fingerprint(plm)
    return plm


def build_task_plm(cfg, task, families, needs):
    """``build_frozen_plm`` for a translation-style task: the PLM must be of one of
    ``families`` (else the error says what the method ``needs``), and both data
    dictionaries must index tokens exactly as the PLM does."""
    plm = build_frozen_plm(cfg)
    if plm.cfg.family not in families:
        raise FairseqPLMError(f"--plm {cfg.plm} is a {plm.cfg.family} model; {needs}")
    for d, lang in ((task.source_dictionary, task.cfg.source_lang), (task.target_dictionary, task.cfg.target_lang)):
        check_dictionary(d, plm, cfg.plm, what=f"dict.{lang}.txt", data=task.cfg.data)
    return plm


@torch.no_grad()
def fingerprint(model: torch.nn.Module) -> torch.Tensor:
    """32-byte digest of a model's weights: names, shapes and a strided sample of exact values
    of every tensor (fast at 560M parameters, and device/dtype independent for fp32 weights)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1).float().cpu()
        step = max(1, flat.numel() // 4096)
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(flat[::step].numpy().tobytes())
    return torch.tensor(list(h.digest()), dtype=torch.uint8)


def is_plm_key(key: str) -> bool:
    return _PLM_KEY.search(key) is not None


class FrozenPLMMixin:
    """Mix into a fairseq model that owns its frozen PLM as ``self.plm``."""

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for k in [k for k in state if is_plm_key(k[len(prefix):])]:
            del state[k]
        state[prefix + FINGERPRINT_KEY] = self.plm.fingerprint.clone()
        return state

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        state = dict(state_dict)
        saved = state.pop(FINGERPRINT_KEY, None)
        if any(is_plm_key(k) for k in state):  # a full checkpoint (PLM included) is fine too
            state = {k: v for k, v in state.items() if not is_plm_key(k)}
        if saved is not None and not torch.equal(saved.cpu(), self.plm.fingerprint):
            raise FairseqPLMError(
                f"this checkpoint was trained on a different PLM than the one loaded from "
                f"--plm={getattr(model_cfg, 'plm', '?')} (weights fingerprint differs); point "
                f"--plm (or --model-overrides \"{{'plm': ...}}\") at the PLM used in training"
            )
        own = {k for k in super().state_dict() if not is_plm_key(k)}
        missing, unexpected = own - set(state), set(state) - own
        if strict and (missing or unexpected):
            raise KeyError(
                f"checkpoint does not fit the model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        return super().load_state_dict(state, strict=False, model_cfg=model_cfg, args=args) \
            if _accepts_model_cfg(super()) else super().load_state_dict(state, strict=False)


def _accepts_model_cfg(parent):
    import inspect

    try:
        return "model_cfg" in inspect.signature(parent.load_state_dict).parameters
    except (TypeError, ValueError):
        return False
