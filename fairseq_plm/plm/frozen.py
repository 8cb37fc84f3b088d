"""How a fairseq model of this package holds a frozen PLM.

* ``PLMArgs``: the command-line options every model shares (``--plm``, ``--plm-random-init``...).
* ``build_frozen_plm``: loads the PLM, sets ``requires_grad=False`` (fairseq's optimizer and
  fp16 flattening only collect trainable parameters, and "num. trained" counts only those)
  and pins it to eval mode unless ``--plm-dropout`` asks otherwise. Models of one process
  built on the same PLM share one frozen instance (plm/shared.py).
* ``FrozenPLMMixin``: prompt-only checkpoints. ``state_dict`` drops the PLM's tensors and adds
  an exact fingerprint of its weights (``fingerprint``); ``load_state_dict`` re-attaches the
  PLM that ``build_model`` loaded from ``--plm`` and refuses a checkpoint trained on another
  PLM, even one differing in a single value.
"""

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from fairseq.dataclass import FairseqDataclass

from .errors import FairseqPLMError
from .fairseq_checks import check_dictionary
from .hub import pinned_plm_path
from .loading import load_plm
from .modules import PretrainedLM
from .shared import shared_between_models

logger = logging.getLogger(__name__)

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
    plm.fingerprint = fingerprint(plm, source=None if cfg.plm_random_init else cfg.plm)
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


# ---------------------------------------------------------------- PLM fingerprint
#
# Version 2 (this one): 0x02 followed by a SHA-256 over every tensor of the PLM's state: its
# name, shape and every byte of its values (floating-point tensors as float32, so the digest
# does not depend on the dtype or device the PLM is held in; a tensor tied to an earlier one is
# recorded as that tie; values are hashed in 64 MiB chunks, in parallel, see _exact_digest). Exact: one changed value anywhere (an added token's embedding row, a
# fine-tuned copy) gives another digest. Hashing reads every weight once (about 2.2 GB for a
# 560M-parameter PLM, see benchmarks/RESULTS.md); the digest of a PLM read from a directory is
# then cached, keyed by the directory's real path, the size, mtime, ctime and inode of every file
# in it and the names and shapes of the state, so later loads of an unchanged PLM skip it.
# Version 1 (checkpoints written before): 32 bytes hashing a strided sample (~4096 values) of
# each tensor. Such checkpoints still load when the PLM matches that sample, with a warning.

FINGERPRINT_VERSION = 2
CACHE_ENV = "FAIRSEQ_PLM_CACHE"


def fingerprint_cache_file():
    """``$FAIRSEQ_PLM_CACHE/plm_fingerprints.json`` (``off`` or empty: no cache), else
    ``$XDG_CACHE_HOME/fairseq_plm/`` or ``~/.cache/fairseq_plm/``. A cache that cannot be read
    or written (read-only home, full disk) is skipped: the digest is computed each time."""
    root = os.environ.get(CACHE_ENV)
    if root is not None:
        return None if root.strip().lower() in ("", "off", "0", "none") else os.path.join(root, "plm_fingerprints.json")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fairseq_plm", "plm_fingerprints.json")


def _state_tensors(model):
    """(name, tensor or the name of the earlier tensor it is tied to) in name order."""
    seen = {}
    for name, t in sorted(model.state_dict().items()):
        key = (t.device, t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            yield name, seen[key]
            continue
        if key is not None:
            seen[key] = name
        yield name, t


def _layout(model) -> str:
    """Names, shapes and ties of the state (what the cache key needs besides the files)."""
    h = hashlib.sha256()
    for name, t in _state_tensors(model):
        h.update((f"{name}={t}" if isinstance(t, str) else f"{name}:{_kind(t)}:{tuple(t.shape)}").encode() + b";")
    return h.hexdigest()


def _kind(t):
    return "float" if torch.is_floating_point(t) else str(t.dtype)


_CHUNK = 1 << 24  # values per hashed chunk (64 MiB of fp32): big tensors hash in parallel too


def _chunk_digest(flat, start, stop):
    part = flat[start:stop]
    part = (part.float() if torch.is_floating_point(part) else part).contiguous()
    return hashlib.sha256(memoryview(part.view(torch.uint8).numpy())).digest()


@torch.no_grad()
def _exact_digest(model) -> bytes:
    """SHA-256 over each tensor's name, kind and shape followed by the SHA-256 of each 64 MiB
    chunk of its values (chunks are hashed by ``torch.get_num_threads()`` threads, at most 8:
    hashlib releases the GIL)."""
    entries = []
    for name, t in _state_tensors(model):
        if isinstance(t, str):
            entries.append((f"{name}={t};".encode(), []))
            continue
        flat = t.detach().cpu().reshape(-1)
        chunks = [(flat, s, min(s + _CHUNK, flat.numel())) for s in range(0, flat.numel(), _CHUNK)]
        entries.append((f"{name}:{_kind(t)}:{tuple(t.shape)};".encode(), chunks))
    workers = max(1, min(8, torch.get_num_threads()))
    h = hashlib.sha256()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [[pool.submit(_chunk_digest, *c) for c in chunks] for _, chunks in entries]
        for (head, _), done in zip(entries, futures):
            h.update(head)
            for f in done:
                h.update(f.result())
    return h.digest()


def _cache_key(source, model):
    """Key of a PLM directory's digest: real path, every file's identity, the state's layout."""
    if not source or not os.path.isdir(source):
        return None
    try:
        files = []
        for entry in sorted(os.scandir(source), key=lambda e: e.name):
            st = os.stat(entry.path)  # (follows links: HF hub snapshots link to blobs)
            if entry.is_file():
                files.append([entry.name, os.path.realpath(entry.path), st.st_size, st.st_mtime_ns,
                              st.st_ctime_ns, st.st_ino])
    except OSError:
        return None
    blob = json.dumps([FINGERPRINT_VERSION, os.path.realpath(source), files, _layout(model)])
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_cache(path):
    try:
        with open(path, encoding="utf-8") as f:
            cache = json.load(f)
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path, key, digest, source, keep=256):
    try:
        cache = _read_cache(path)
        cache[key] = {"digest": digest.hex(), "plm": os.path.realpath(source), "time": int(time.time())}
        if len(cache) > keep:  # forget the oldest entries
            cache = dict(sorted(cache.items(), key=lambda kv: kv[1].get("time", 0) if isinstance(kv[1], dict)
                                else 0)[-keep:])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".plm_fingerprints.", dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(cache, f, indent=0)
        os.replace(tmp, path)
    except OSError as e:
        logger.debug(f"PLM fingerprint cache {path} not written: {e}")


def fingerprint(model: torch.nn.Module, source: str = None) -> torch.Tensor:
    """The PLM's exact fingerprint (version 2, see above): 33 uint8 values. ``source``: the
    directory the weights were read from, to cache the digest (None: always compute)."""
    cache, key = fingerprint_cache_file(), None
    if cache is not None and source is not None:
        key = _cache_key(source, model)
    digest = None
    if key is not None:
        entry = _read_cache(cache).get(key)
        try:
            digest = bytes.fromhex(entry["digest"]) if isinstance(entry, dict) else None
        except (KeyError, ValueError, TypeError):
            digest = None
    if digest is None or len(digest) != 32:
        digest = _exact_digest(model)
        if key is not None:
            _write_cache(cache, key, digest, source)
    return torch.tensor([FINGERPRINT_VERSION, *digest], dtype=torch.uint8)


@torch.no_grad()
def sampled_fingerprint_v1(model: torch.nn.Module) -> torch.Tensor:
    """The version-1 fingerprint of checkpoints written before version 2: names, shapes and a
    strided sample of each tensor's values (kept to check those checkpoints)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1).float().cpu()
        step = max(1, flat.numel() // 4096)
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(flat[::step].numpy().tobytes())
    return torch.tensor(list(h.digest()), dtype=torch.uint8)


def check_fingerprint(saved: torch.Tensor, plm, plm_path) -> None:
    """Refuse a checkpoint whose PLM fingerprint is not the loaded PLM's (one line, with the
    way out); accept a version-1 fingerprint that matches on its sample, with a warning."""
    saved = saved.cpu()
    if saved.numel() == 32:  # version 1
        if torch.equal(saved, sampled_fingerprint_v1(plm)):
            logger.warning(
                f"this checkpoint carries a version-1 PLM fingerprint, which checks only a sample of the "
                f"weights; the PLM {plm_path} matches that sample. Checkpoints saved from now on (e.g. by continued "
                f"training) carry the exact fingerprint")
            return
    elif torch.equal(saved, plm.fingerprint.cpu()):
        return
    raise FairseqPLMError(
        f"this checkpoint was trained on a different PLM than the one loaded from {plm_path} (weights fingerprint "
        f"differs): load it with the PLM it was trained on, --model-overrides \"{{'plm': '/path/to/that/plm'}}\" "
        f"(fairseq-generate, -interactive, -validate, fairseq-plm-mpt-eval --plm), or --plm when resuming "
        f"fairseq-train")


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
        if saved is not None:
            check_fingerprint(saved, self.plm, getattr(model_cfg, "plm", "?"))
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
