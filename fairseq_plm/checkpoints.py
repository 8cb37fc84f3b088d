"""Reading checkpoints without running code, and prompt adapters (``fairseq-plm-export``).

**Safe loading.** A ``.pt`` file is a pickle, and a pickle can call any function while it is
read (``__reduce__``). Every checkpoint this package reads goes through ``load_torch_file``:
torch's ``weights_only=True`` unpickler, which builds tensors and plain containers only, plus
``checkpoint_globals()``, the allowlist of exactly the other types fairseq checkpoints hold
(found by scanning what fairseq-train writes for every method of this package, and what
older fairseq versions wrote: ``argparse.Namespace`` for legacy-registered models, omegaconf
containers and nodes, fairseq's meters, numpy scalars and arrays from logged metrics,
``collections.defaultdict``). The allowlist is added for the duration of our own
``torch.load`` only (``torch.serialization.safe_globals``), not for the whole process.
Anything else is refused with one line naming the file and the type; nothing of the file
runs. A file the user trusts can be opened with full unpickling through the environment
variable ``FAIRSEQ_PLM_TRUST_CHECKPOINTS``: ``1`` for every file, or a list of files
separated by ``os.pathsep``. Never the default.

**Prompt adapters.** ``write_adapter`` turns a checkpoint into a directory in the convention
peft users know: ``adapter_model.safetensors`` (the trained tensors, nothing else) and
``adapter_config.json`` (method, architecture and its options, the training run's fairseq
config, PLM path and fingerprint, data dictionaries' identity, versions). ``read_checkpoint``
reads such a directory into the state dict a ``.pt`` file would give (without its optimizer
state), so every place that takes ``--path`` (generate, interactive, validate, fairseq's
``load_model_ensemble_and_task``) takes an adapter directory too, and no pickle is involved.

**Resuming.** ``newest_complete_checkpoint`` picks the checkpoint a killed run resumes from
(see ``compat.py``).
"""

import argparse
import collections
import functools
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import threading
import typing
import zipfile

import torch

from .plm.errors import FairseqPLMError

logger = logging.getLogger(__name__)

TRUST_ENV = "FAIRSEQ_PLM_TRUST_CHECKPOINTS"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FORMAT = "fairseq_plm-prompt-adapter"
ADAPTER_FORMAT_VERSION = 1
FINGERPRINT_KEY = "plm_fingerprint"  # as plm/frozen.py (not imported: this module loads before the models)

_LOCK = threading.RLock()  # torch's allowlist is process-wide state: one safe load at a time


# ------------------------------------------------------------------ the allowlist

@functools.lru_cache(maxsize=None)
def checkpoint_globals():
    """Every type (other than tensors and plain containers, which torch always allows) that a
    fairseq checkpoint holds, as ``(object, name in the pickle)`` pairs.

    - ``argparse.Namespace``: ``cfg.model`` of models registered the legacy way (CTC-NAT,
      deep fusion's CMLM, fairseq's transformer) and ``args`` of fairseq<0.10 checkpoints,
      e.g. the published fairseq XLM-R ``model.pt``;
    - omegaconf's ``DictConfig``/``ListConfig``, their nodes and metadata, ``typing.Any``:
      fairseq 0.10 stored ``cfg`` as a ``DictConfig``;
    - fairseq's meters (``fairseq.logging.meters``; ``fairseq.meters`` before 0.10);
    - numpy scalars, dtypes and arrays: metrics logged as numpy values (``--eval-bleu``) end
      up in ``extra_state``/``best``;
    - ``collections.defaultdict`` with builtin factories, builtin types by name.
    Calling or building any of these runs no code taken from the file.
    """
    import numpy as np
    from omegaconf import DictConfig, ListConfig, nodes
    from omegaconf.base import ContainerMetadata, Metadata

    from fairseq.logging import meters

    items = [argparse.Namespace, collections.defaultdict, collections.OrderedDict, typing.Any,
             DictConfig, ListConfig, ContainerMetadata, Metadata,
             dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bytearray, bool]
    items += [getattr(nodes, n) for n in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode",
                                         "BytesNode", "PathNode") if hasattr(nodes, n)]
    meter_classes = [getattr(meters, n) for n in ("Meter", "AverageMeter", "SumMeter", "ConcatTensorMeter",
                                                  "TimeMeter", "StopwatchMeter", "MetersDict") if hasattr(meters, n)]
    items += meter_classes
    pairs = [(obj, f"{obj.__module__}.{obj.__qualname__}") for obj in items]
    pairs += [(m, f"fairseq.meters.{m.__name__}") for m in meter_classes]  # fairseq<0.10 module name
    # numpy: the module was renamed numpy.core -> numpy._core in numpy 2; accept both names
    multiarray = getattr(np, "_core", None)
    multiarray = getattr(multiarray, "multiarray", None) or np.core.multiarray
    for name in ("scalar", "_reconstruct"):
        fn = getattr(multiarray, name)
        pairs += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    pairs += [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)  # numpy>=1.25 pickles some dtypes by class
    if dtypes is not None:
        pairs += [(getattr(dtypes, n), f"numpy.dtypes.{n}") for n in dir(dtypes) if n.endswith("DType")
                  and not n.startswith(("Object", "Void"))]
    return tuple(pairs)


# ------------------------------------------------------------------ reading one torch file

def _trusted(path):
    value = os.environ.get(TRUST_ENV, "").strip()
    if value.lower() in ("1", "true", "yes", "all"):
        return True
    if not value:
        return False
    real = os.path.realpath(path)
    return any(p and os.path.realpath(p) == real for p in value.split(os.pathsep))


_REFUSED = [re.compile(p) for p in (
    r"GLOBAL (\S+) was not an allowed global",
    r"unsupported GLOBAL (\S+) whose module",
    r"reduce for unrecognized function (.+?)(?: which belongs|\n|$)",
    r"but got (<class '[^']+'>)",
)]


def refused_type(message):
    """The type or function torch's weights-only unpickler refused, from its error message."""
    for pattern in _REFUSED:
        m = pattern.search(message)
        if m:
            return m.group(1).strip()
    return None


def _first_line(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _sniff(path, what):
    """Refuse what is visibly not a torch file, naming the file and what it is instead."""
    if not os.path.exists(path):
        raise FairseqPLMError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise FairseqPLMError(
            f"{path} is a directory, not a {what} file (nor a prompt adapter written by fairseq-plm-export: "
            f"it has no {ADAPTER_CONFIG})")
    size = os.path.getsize(path)
    if size == 0:
        raise FairseqPLMError(f"{path} is empty (0 bytes), not a {what}: was its writing interrupted?")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):  # torch's zip format: its directory is at the end
        if not zipfile.is_zipfile(path):
            raise FairseqPLMError(f"{path} is truncated ({size:,} bytes, its zip directory is missing): "
                                  f"was its writing interrupted?")
        return
    if head.startswith(b"\x80"):
        return  # torch's legacy pickle format
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        raise FairseqPLMError(
            f"{path} is a safetensors file, not a {what}; a prompt adapter is the directory that holds "
            f"{ADAPTER_WEIGHTS} and {ADAPTER_CONFIG}: pass the directory")
    raise FairseqPLMError(f"{path} is not a torch {what} (it starts with {head[:8]!r})")


def load_torch_file(path, what="checkpoint", mmap=False):
    """``torch.load(path)`` with weights-only unpickling and the checkpoint allowlist.
    Every failure is a FairseqPLMError naming the file; a refused type runs nothing.
    ``mmap``: map a zip-format file's tensors instead of reading them (for reading metadata)."""
    _sniff(path, what)
    if _trusted(path):
        logger.warning(f"{TRUST_ENV}: loading {path} with full unpickling (it can run code)")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise FairseqPLMError(f"cannot read {what} {path}: {_first_line(e)}") from None
    with _LOCK, torch.serialization.safe_globals(list(checkpoint_globals())):
        try:
            return torch.load(path, map_location="cpu", weights_only=True,
                              mmap=bool(mmap) and zipfile.is_zipfile(path))
        except pickle.UnpicklingError as e:
            refused = refused_type(str(e))
            if refused is None and "Weights only load failed" not in str(e):
                raise FairseqPLMError(f"{path} is truncated or corrupt: {_first_line(e)}") from None
            raise FairseqPLMError(
                f"{path}: refused to load: it holds {refused or 'a construct'} , which fairseq checkpoints do "
                f"not hold and which could run code; nothing from the file was run (if you trust this file, "
                f"set {TRUST_ENV}=1 or ={path})".replace(" ,", ",")) from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as e:
            raise FairseqPLMError(f"{path} is truncated or corrupt (cannot read it as a torch {what}: "
                                  f"{_first_line(e)})") from None


def read_checkpoint(path):
    """The raw state dict of a fairseq checkpoint file or of a prompt adapter directory.
    Refuses (one line naming ``path``) anything that is neither."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, ADAPTER_CONFIG)):
        return read_adapter(path)
    state = load_torch_file(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        if isinstance(state, dict):
            keys = ", ".join(map(repr, list(state)[:4])) + (", ..." if len(state) > 4 else "")
            held = f"a dict with keys {keys} but no 'model' state dict"
        else:
            held = f"a {type(state).__name__}"
        raise FairseqPLMError(
            f"{path} is not a fairseq checkpoint: it holds {held}; give a checkpoint written by fairseq-train "
            f"or a prompt adapter directory written by fairseq-plm-export")
    if state.get("cfg") is None and state.get("args") is None:
        raise FairseqPLMError(f"{path} is not a fairseq checkpoint: it has no 'cfg' (nor legacy 'args') entry")
    return state


def is_complete(path):
    """Whether ``path`` is a whole checkpoint file (not truncated, not empty): a zip whose every
    member passes its CRC check, or else a file that loads."""
    try:
        if os.path.getsize(path) == 0:
            return False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return z.testzip() is None
        read_checkpoint(path)
        return True
    except (OSError, zipfile.BadZipFile, FairseqPLMError, RuntimeError, EOFError):
        return False


# ------------------------------------------------------------------ resuming

_CHECKPOINT_NAME = re.compile(r"checkpoint(_last|_best|\d+|_\d+_\d+|\.best_.+){}\.pt")


def newest_complete_checkpoint(save_dir, suffix=""):
    """(path, skipped): the newest (by modification time) whole checkpoint that fairseq-train
    wrote in ``save_dir``, and the newer ones that were skipped as incomplete."""
    pattern = re.compile(_CHECKPOINT_NAME.pattern.format(re.escape(suffix)))
    try:
        names = [n for n in os.listdir(save_dir) if pattern.fullmatch(n)]
    except OSError:
        return None, []
    paths = [os.path.join(save_dir, n) for n in names]
    # newest first; among equally new files checkpoint_last.pt first (fairseq's own choice)
    order = {"_last": 2, "_best": 1}
    paths.sort(key=lambda p: (os.path.getmtime(p), order.get(pattern.fullmatch(os.path.basename(p)).group(1), 0)),
               reverse=True)
    skipped = []
    for p in paths:
        if is_complete(p):
            return p, skipped
        skipped.append(p)
    return None, skipped


def atomic_copy(src, dst):
    """Copy ``src`` to ``dst`` through a temporary name in ``dst``'s directory, so ``dst`` is
    always either its old content or a whole copy (a kill mid-copy leaves only a stray .tmp)."""
    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


# ------------------------------------------------------------------ prompt adapters

def file_identity(path):
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            n += len(block)
    with open(path, "rb") as f:
        entries = sum(1 for _ in f)
    return {"sha256": h.hexdigest(), "bytes": n, "entries": entries}


def _plain_cfg(state):
    """The training run's fairseq config as plain JSON-able data (a legacy ``args`` Namespace
    becomes fairseq's config first)."""
    from omegaconf import OmegaConf

    cfg = state.get("cfg")
    if cfg is None:
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        cfg = convert_namespace_to_omegaconf(state["args"])
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    cfg = {"model": cfg.get("model"), "task": cfg.get("task"), "criterion": cfg.get("criterion"), **cfg}
    namespace = isinstance(cfg.get("model"), argparse.Namespace)
    if namespace:
        cfg["model"] = dict(vars(cfg["model"]))
    return json.loads(json.dumps(cfg, default=str)), namespace


def write_adapter(checkpoint, out_dir, fp16=False, data=None):
    """Export ``checkpoint`` (a .pt file or an adapter directory) as a prompt adapter directory.
    Returns the adapter config written."""
    import fairseq
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY
    from safetensors.torch import save_file

    from . import __version__

    state = read_checkpoint(checkpoint)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FairseqPLMError(f"--output {out_dir} is a file; the adapter is written as a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, ADAPTER_CONFIG)):
        raise FairseqPLMError(f"--output {out_dir} is a non-empty directory that is not a prompt adapter; "
                              f"refusing to write into it")
    cfg, namespace = _plain_cfg(state)
    model_cfg = cfg.get("model") or {}
    arch = model_cfg.get("_name") or model_cfg.get("arch")
    tensors, dtypes = collections.OrderedDict(), {}
    for k, v in state["model"].items():
        if k == FINGERPRINT_KEY:
            continue
        v = v.detach().cpu()
        if fp16 and v.is_floating_point() and v.dtype != torch.float16:
            dtypes[k] = str(v.dtype).replace("torch.", "")
            v = v.half()
        tensors[k] = v.clone().contiguous()  # safetensors stores no shared or strided views
    fingerprint = state["model"].get(FINGERPRINT_KEY)
    data_dir = data or (cfg.get("task") or {}).get("data")
    dictionaries = {}
    if data_dir:
        first = str(data_dir).split(os.pathsep)[0]
        if not os.path.isdir(first):
            raise FairseqPLMError(
                f"the training data directory {first} (from the checkpoint's task config) is not here: pass --data DIR "
                f"holding the dict.*.txt the prompts were trained with")
        for name in sorted(os.listdir(first)):
            if re.fullmatch(r"dict\..+\.txt", name):
                dictionaries[name] = file_identity(os.path.join(first, name))
    history = state.get("optimizer_history") or [{}]
    config = {
        "format": ADAPTER_FORMAT,
        "format_version": ADAPTER_FORMAT_VERSION,
        "method": ARCH_MODEL_NAME_REGISTRY.get(arch, arch),
        "arch": arch,
        "plm": {"path": model_cfg.get("plm"),
                "fingerprint": None if fingerprint is None else bytes(fingerprint.tolist()).hex()},
        "dictionaries": dictionaries or "the PLM's own vocabulary (no dict.*.txt in the data directory)",
        "trained": {"tensors": len(tensors), "parameters": sum(t.numel() for t in tensors.values()),
                    "dtype_on_disk": "float16" if fp16 else "as trained", "restore_dtypes": dtypes,
                    "num_updates": history[-1].get("num_updates", 0),
                    "criterion_name": history[-1].get("criterion_name"),
                    "from_checkpoint": os.path.basename(os.path.normpath(checkpoint))},
        "fairseq_version": fairseq.__version__,
        "fairseq_plm_version": __version__,
        "model_cfg_is_namespace": namespace,
        "cfg": cfg,  # the training run's fairseq config; cfg["model"] holds the architecture's options
    }
    os.makedirs(out_dir, exist_ok=True)
    weights, conf = os.path.join(out_dir, ADAPTER_WEIGHTS), os.path.join(out_dir, ADAPTER_CONFIG)
    save_file(dict(tensors), weights + ".tmp", metadata={"format": "pt", "fairseq_plm": ADAPTER_FORMAT})
    with open(conf + ".tmp", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1, sort_keys=False)
        f.write("\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(weights + ".tmp", 0o666 & ~umask)  # safetensors writes 0600; an adapter is meant to be shared
    os.replace(weights + ".tmp", weights)
    os.replace(conf + ".tmp", conf)
    return config


def read_adapter(path):
    """The state dict (``cfg``, ``model``, no optimizer state) of a prompt adapter directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    conf, weights = os.path.join(path, ADAPTER_CONFIG), os.path.join(path, ADAPTER_WEIGHTS)
    try:
        with open(conf, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FairseqPLMError(f"{conf} is not readable JSON: {_first_line(e)}") from None
    if not isinstance(config, dict) or config.get("format") != ADAPTER_FORMAT or not isinstance(config.get("cfg"), dict):
        raise FairseqPLMError(f"{conf} is not a fairseq_plm prompt adapter config (format {ADAPTER_FORMAT!r} "
                              f"with a 'cfg' entry)")
    if config.get("format_version", 0) > ADAPTER_FORMAT_VERSION:
        raise FairseqPLMError(f"{conf} has adapter format version {config['format_version']}; this fairseq_plm "
                              f"reads up to {ADAPTER_FORMAT_VERSION}: upgrade fairseq_plm")
    if not os.path.exists(weights):
        raise FairseqPLMError(f"{path} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FairseqPLMError(f"{weights} is truncated or corrupt: {_first_line(e)}") from None
    trained = config.get("trained") or {}
    for k, dtype in (trained.get("restore_dtypes") or {}).items():
        if k in tensors:
            tensors[k] = tensors[k].to(getattr(torch, dtype))
    model = collections.OrderedDict(tensors)
    fingerprint = (config.get("plm") or {}).get("fingerprint")
    if fingerprint:
        model[FINGERPRINT_KEY] = torch.tensor(list(bytes.fromhex(fingerprint)), dtype=torch.uint8)
    cfg = dict(config["cfg"])
    if config.get("model_cfg_is_namespace"):
        cfg["model"] = argparse.Namespace(**cfg["model"])
    return {
        "args": None,
        "cfg": cfg,
        "model": model,
        "criterion": None,
        "optimizer_history": [{"criterion_name": trained.get("criterion_name"), "optimizer_name": None,
                               "lr_scheduler_state": {}, "num_updates": trained.get("num_updates", 0)}],
        "task_state": {},
        # no training state: a run given an adapter (--finetune-from-model) starts at epoch 1
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True, "version": 2}},
        "adapter_config": config,
    }
