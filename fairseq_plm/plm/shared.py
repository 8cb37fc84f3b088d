"""One frozen PLM per process, shared by every model built on it.

Prompting a frozen PLM exists so that one copy of it serves many tasks, each adding only its
prompts (MSP §1: 19M trained parameters next to mGPT's 560M). Without sharing, every model
fairseq builds loads its own copy: an ensemble (``--path a.pt:b.pt``), a second direction in
the Python API (``fairseq_plm.api``) or a recipe building several systems doubles memory.

``build_frozen_plm`` (plm/frozen.py) goes through ``shared_between_models``: a model asking for
a frozen PLM gets the instance another model of this process already holds when

* it names the same PLM: the same resolved directory with the same files (name, size and
  modification time of every file in it), or the same preset name and seed with
  ``--plm-random-init``; a PLM reached another way (a copy elsewhere, a hub id) is loaded, and
  replaced by an existing instance whose weights fingerprint and config are identical;
* and that instance is still frozen as loaded: no parameter requires gradients, dropout is
  pinned off (``--plm-dropout`` PLMs are never shared) and no parameter was written in place
  since (torch's version counters; a PLM someone modified is not handed to another model).

Only frozen PLMs are shared: a trainable PLM (deep fusion's fine-tuned PTM, MPT without
``--freeze-plm``) is built through ``build_plm`` and stays private to its model.

The registry holds weak references: a PLM is freed with the last model that uses it.
Models sharing a PLM share its device and dtype too: move them together (fairseq does so for
an ensemble; ``fairseq_plm.api.Translator`` does so for its directions).

Sharing is on by default; ``FAIRSEQ_PLM_SHARE=0`` in the environment or ``with
sharing(False):`` turns it off (e.g. to measure what it saves).
"""

import contextlib
import os
import threading
import weakref

import torch

from .config import PRESETS

_LOCK = threading.RLock()
_BY_SOURCE = {}        # source key -> _Entry
_ENTRIES = []          # every live entry, for the fingerprint look-up
_ENABLED = [None]      # None: follow FAIRSEQ_PLM_SHARE


class _Entry:
    def __init__(self, plm, source):
        self.ref = weakref.ref(plm)
        self.source = source
        self.versions = _versions(plm)

    def get(self):
        """The instance if it is alive and still exactly as it was registered, else None."""
        plm = self.ref()
        if plm is None or not _still_frozen(plm) or _versions(plm) != self.versions:
            return None
        return plm


def _versions(plm):
    return tuple(p._version for p in plm.parameters())


def _still_frozen(plm):
    return getattr(plm, "keep_eval", False) and not any(p.requires_grad for p in plm.parameters())


def enabled() -> bool:
    if _ENABLED[0] is not None:
        return _ENABLED[0]
    return os.environ.get("FAIRSEQ_PLM_SHARE", "1").strip().lower() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def sharing(on: bool):
    """Turn sharing on or off inside the block (models built there get their own PLM)."""
    with _LOCK:
        old, _ENABLED[0] = _ENABLED[0], bool(on)
    try:
        yield
    finally:
        with _LOCK:
            _ENABLED[0] = old


def source_key(cfg):
    """What identifies the PLM ``cfg`` asks for without loading it, or None when only its
    weights can tell (then the fingerprint decides)."""
    path = cfg.plm
    if os.path.isdir(path):
        real = os.path.realpath(path)
        files = []
        for name in sorted(os.listdir(real)):
            f = os.path.join(real, name)
            if os.path.isfile(f):
                st = os.stat(f)
                files.append((name, st.st_size, st.st_mtime_ns))
        return ("dir", real, tuple(files), bool(cfg.plm_random_init), cfg.plm_seed if cfg.plm_random_init else None)
    if path in PRESETS and cfg.plm_random_init:
        return ("preset", path, cfg.plm_seed)
    return None


def _forget_dead():
    _ENTRIES[:] = [e for e in _ENTRIES if e.ref() is not None]
    for k in [k for k, e in _BY_SOURCE.items() if e.ref() is None]:
        del _BY_SOURCE[k]


def _same_weights(a, b):
    fa, fb = getattr(a, "fingerprint", None), getattr(b, "fingerprint", None)
    return (fa is not None and fb is not None and a.cfg == b.cfg and fa.shape == fb.shape
            and torch.equal(fa.cpu(), fb.cpu()))


def shared_between_models(build):
    """Decorate ``build(cfg) -> frozen PLM`` so that models of one process share instances."""

    def build_shared(cfg):
        if getattr(cfg, "plm_dropout", False) or not enabled():
            return build(cfg)
        with _LOCK:
            _forget_dead()
            key = source_key(cfg)
            entry = _BY_SOURCE.get(key) if key is not None else None
            plm = entry.get() if entry is not None else None
            if plm is not None:
                if os.path.isdir(cfg.plm):  # as build_plm does: checkpoints remember absolute paths
                    cfg.plm = os.path.abspath(cfg.plm)
                return plm
            plm = build(cfg)
            if not _still_frozen(plm):
                return plm
            twin = next((p for p in (e.get() for e in _ENTRIES) if p is not None and _same_weights(p, plm)), None)
            if twin is not None:
                plm = twin  # the fresh copy is dropped
            else:
                _ENTRIES.append(_Entry(plm, key))
            if key is not None:
                _BY_SOURCE[key] = next(e for e in _ENTRIES if e.ref() is plm)
            return plm

    build_shared.__name__ = build.__name__
    build_shared.__doc__ = build.__doc__
    build_shared.__wrapped__ = build
    return build_shared


def live_instances():
    """The shared PLMs alive in this process (for tests and diagnostics)."""
    with _LOCK:
        _forget_dead()
        return [p for p in (e.ref() for e in _ENTRIES) if p is not None]
