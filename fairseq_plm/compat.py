"""Every patch this package applies to fairseq or torch lives in this one file.

fairseq-fixed 0.12.3.1 predates torch 2.6 and was only ever run on GPUs. Five things
need fixing for our users, and each is applied exactly once, on import of the package
(which fairseq does for ``--user-dir``, and our ``fairseq-plm-*`` entry points do first):

1. Checkpoints: safe to load, complete, resumable. fairseq reads every checkpoint
   through ``checkpoint_utils.load_checkpoint_to_cpu`` (generate, interactive, validate,
   resume, fine-tune, ``load_model_ensemble_and_task``); we replace that single function.
   **The rule: no code runs when a checkpoint is loaded.** Every checkpoint is unpickled
   with torch's ``weights_only=True`` plus an allowlist of exactly the types fairseq
   checkpoints hold (``checkpoints.checkpoint_globals``), added for our own load only;
   anything else is refused with one line naming the file and the type, and nothing of it
   runs. The only way around it is the explicit opt-in ``FAIRSEQ_PLM_TRUST_CHECKPOINTS=1``
   (or a list of trusted files). The same function also reads prompt adapter directories
   (``fairseq-plm-export``: safetensors + JSON, no pickle at all), and refuses in one line
   a missing, empty, truncated or wrong-type file. ``load_model_ensemble_and_task`` checks
   its paths first (fairseq's own check raises a bare IOError). fairseq's copies of the
   saved checkpoint to ``checkpoint_last.pt``/``checkpoint_best.pt`` are made atomic (temp
   name, then rename), and a resumed run starts from the newest *complete* checkpoint
   (``_resume_from_newest_complete``), saying so in the log, when ``checkpoint_last.pt``
   is missing its last save or is truncated.
2. CPU data-parallel training: fairseq passes ``device_ids=[device_id]`` to
   ``DistributedDataParallel`` even for CPU modules (torch rejects that) and sizes the
   process pool with ``torch.cuda.device_count()`` (0 on CPU, or a ZeroDivisionError
   under torchrun). ``_cpu_call_main`` / ``_cpu_ddp_model`` handle the CPU case and
   defer to fairseq otherwise. Use ``--cpu --distributed-world-size N`` (gloo is
   selected automatically on CPU).
3. ``--user-dir`` uniqueness: fairseq refuses a ``--user-dir`` whose module name is
   already imported from another directory. A checkpoint trained from the source tree
   stores that path; generating with the installed package (or the reverse) would fail.
   ``_AnyFairseqPlmPath`` makes every copy of this package count as the same module.
4. Empty hypotheses: ``fairseq-generate``'s default ``--scoring bleu`` hands each
   hypothesis to a C scorer that crashes the process (segfault) on an empty one. An
   autoregressive hypothesis always holds ``</s>``, but a non-autoregressive one (CTC,
   all blanks) can be empty. ``_patch_bleu_scorer`` scores an empty hypothesis as
   ``</s>`` alone, exactly as fairseq scores an autoregressive model's empty translation.
5. CPU training memory: glibc keeps the heap memory a training step frees for later reuse,
   and with batch shapes that change every step that kept memory only grows. An SGA run on
   the CPU (tiny-xlmr, 4,096 tokens per batch, whose step peaks at 6-8 GiB) reached 13.8 GiB
   of resident memory after 360 updates and was killed by the kernel next to a second job.
   ``_patch_cpu_heap_release`` hands that memory back (``malloc_trim``) after a CPU
   training step once the process holds a quarter of the machine's memory and has grown by
   ``HEAP_RELEASE_BYTES`` since the last release (the check reads /proc/self/statm: 7 us a
   step); CUDA training and non-glibc systems are untouched.
"""

import contextlib
import ctypes
import functools
import logging
import os
import socket

import torch

logger = logging.getLogger(__name__)

_APPLIED = False
MARKER = "_fairseq_plm_package_marker"


def _finish_like_fairseq(state, arg_overrides):
    """What fairseq's ``load_checkpoint_to_cpu`` does after ``torch.load``: overrides, the
    omegaconf config, upgrades of old checkpoints."""
    from fairseq.checkpoint_utils import _upgrade_state_dict
    from fairseq.dataclass.utils import overwrite_args_by_name
    from omegaconf import OmegaConf

    if state.get("args") is not None and arg_overrides is not None:
        for name, value in arg_overrides.items():
            setattr(state["args"], name, value)
    if state.get("cfg") is not None:
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
        if arg_overrides is not None:
            overwrite_args_by_name(state["cfg"], arg_overrides)
    if "adapter_config" in state:  # written in today's format: nothing to upgrade
        return state
    return _upgrade_state_dict(state)


def _patch_checkpoint_loading():
    from fairseq import checkpoint_utils
    from fairseq.file_io import PathManager

    from .checkpoints import ADAPTER_CONFIG, read_checkpoint
    from .plm.errors import FairseqPLMError

    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_fairseq_plm", False):
        return

    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        local = path if os.path.exists(path) else PathManager.get_local_path(path)
        return _finish_like_fairseq(read_checkpoint(local), arg_overrides)

    load_checkpoint_to_cpu._fairseq_plm = True
    load_checkpoint_to_cpu.__doc__ = original.__doc__
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu

    original_ensemble = checkpoint_utils.load_model_ensemble_and_task

    def load_model_ensemble_and_task(filenames, *args, **kwargs):
        for name in filenames:
            if not PathManager.exists(name) and not any(
                    PathManager.exists(name.replace(".pt", f"{s}.pt")) for s in ("-shard0", "_part0")):
                raise FairseqPLMError(f"checkpoint not found: {name} (--path)")
        return original_ensemble(filenames, *args, **kwargs)

    load_model_ensemble_and_task._fairseq_plm = True
    checkpoint_utils.load_model_ensemble_and_task = load_model_ensemble_and_task

    # fairseq copies the checkpoint it saved to checkpoint_last.pt / checkpoint_best.pt with a
    # plain copy: a kill mid-copy left a truncated file. Atomic copies, in checkpoint_utils only.
    checkpoint_utils.PathManager = _CheckpointPathManager(checkpoint_utils.PathManager)

    original_load_checkpoint = checkpoint_utils.load_checkpoint

    def load_checkpoint(cfg, trainer, **passthrough_args):
        with _resume_from_newest_complete(cfg, trainer):
            return original_load_checkpoint(cfg, trainer, **passthrough_args)

    load_checkpoint._fairseq_plm = True
    checkpoint_utils.load_checkpoint = load_checkpoint

    # the trainer only loads what PathManager.isfile accepts: let it take an adapter directory
    # (--finetune-from-model / --restore-file) instead of silently starting from scratch
    import fairseq.trainer as fairseq_trainer

    fairseq_trainer.PathManager = _CheckpointPathManager(
        fairseq_trainer.PathManager, isfile=lambda p: os.path.isfile(os.path.join(p, ADAPTER_CONFIG)))


class _CheckpointPathManager:
    """fairseq's PathManager with an atomic ``copy`` (and, for the trainer, an ``isfile`` that
    also accepts a prompt adapter directory); everything else is delegated."""

    def __init__(self, inner, isfile=None):
        self._inner, self._also_file = inner, isfile

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def copy(self, src_path, dst_path, overwrite=False, **kwargs):
        from .checkpoints import atomic_copy

        if not (os.path.isfile(src_path) and os.path.isdir(os.path.dirname(os.path.abspath(dst_path)))):
            return self._inner.copy(src_path, dst_path, overwrite=overwrite, **kwargs)
        if os.path.exists(dst_path) and not overwrite:
            return False
        return atomic_copy(src_path, dst_path)

    def isfile(self, path):
        return self._inner.isfile(path) or bool(self._also_file and self._also_file(path))


@contextlib.contextmanager
def _resume_from_newest_complete(cfg, trainer):
    """On a default restart (``--restore-file checkpoint_last.pt``), resume from the newest
    complete checkpoint of ``--save-dir`` when checkpoint_last.pt is truncated, or older than
    a complete checkpoint saved after it (a kill between fairseq's save and its copies)."""
    from .checkpoints import newest_complete_checkpoint
    from .plm.errors import FairseqPLMError

    suffix = trainer.checkpoint_suffix or ""
    last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
    chosen = why = None
    if cfg.restore_file == "checkpoint_last.pt" and os.path.isdir(cfg.save_dir):
        # newest first, checkpoint_last.pt first among equally new ones; each file read once
        newest, skipped = newest_complete_checkpoint(cfg.save_dir, suffix)
        if newest is None:
            if os.path.exists(last):
                raise FairseqPLMError(
                    f"{last} is incomplete (truncated or corrupt) and {cfg.save_dir} holds no complete checkpoint "
                    f"to resume from; move it away to start training from update 0")
        elif os.path.abspath(newest) != os.path.abspath(last):
            if last in skipped:
                why = f"{last} is incomplete (truncated or corrupt)"
            elif os.path.exists(last):
                why = f"{last} is older than {newest} (the run was killed while fairseq copied it)"
            elif not (cfg.no_last_checkpoints or cfg.finetune_from_model):
                # (where fairseq never writes one, or a first launch fine-tunes, a missing
                # checkpoint_last.pt means "start afresh")
                why = f"{last} is missing"
            chosen = newest if why else None
        if chosen:
            incomplete = [p for p in skipped if p != last]
            logger.warning(f"{why}; resuming from {newest}, the newest complete checkpoint"
                           + (f" (also skipped as incomplete: {', '.join(incomplete)})" if incomplete else ""))
    if chosen is None:
        yield
        return
    saved = cfg.restore_file, cfg.finetune_from_model
    cfg.restore_file, cfg.finetune_from_model = os.path.abspath(chosen), None
    try:
        yield
    finally:
        cfg.restore_file, cfg.finetune_from_model = saved


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _patch_cpu_distributed():
    from fairseq.distributed import utils as dist_utils
    from fairseq.models import distributed_fairseq_model as dfm
    import fairseq.models as fairseq_models
    import fairseq.trainer as fairseq_trainer

    original_call_main = dist_utils.call_main
    if getattr(original_call_main, "_fairseq_plm", False):
        return

    def call_main(cfg, main, **kwargs):
        dt = cfg.distributed_training
        on_cpu = cfg.common.cpu or not torch.cuda.is_available()
        if not on_cpu or dt.distributed_world_size <= 1 or cfg.common.tpu:
            return original_call_main(cfg, main, **kwargs)
        # CPU data parallel: gloo, one process per replica on this host.
        if dt.distributed_backend == "nccl":
            dt.distributed_backend = "gloo"
        if all(k in os.environ for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")):
            # launched by torchrun: one process per rank already exists
            dt.distributed_init_method = "env://"
            dt.distributed_world_size = int(os.environ["WORLD_SIZE"])
            dt.distributed_rank = int(os.environ["RANK"])
            dt.device_id = int(os.environ.get("LOCAL_RANK", 0))
            dt.distributed_no_spawn = True
            return dist_utils.distributed_main(dt.device_id, main, cfg, kwargs)
        if dt.distributed_init_method is None:
            port = dt.distributed_port if dt.distributed_port > 0 else _free_port()
            dt.distributed_init_method = f"tcp://127.0.0.1:{port}"
        if dt.distributed_no_spawn:
            return dist_utils.distributed_main(dt.device_id, main, cfg, kwargs)
        kwargs["start_rank"] = dt.distributed_rank or 0
        dt.distributed_rank = None  # assigned per spawned process
        torch.multiprocessing.spawn(
            fn=dist_utils.distributed_main,
            args=(main, cfg, kwargs),
            nprocs=dt.distributed_world_size,
            join=True,
        )

    call_main._fairseq_plm = True
    dist_utils.call_main = call_main

    original_ddp = dfm.DistributedFairseqModel

    def DistributedFairseqModel(args, model, process_group, device):
        if device.type != "cpu" or args.ddp_backend not in {"c10d", "pytorch_ddp"}:
            return original_ddp(args, model, process_group, device)
        wrapped = torch.nn.parallel.DistributedDataParallel(
            module=model.to(device),
            device_ids=None,  # torch requires None for CPU modules
            broadcast_buffers=args.broadcast_buffers,
            bucket_cap_mb=args.bucket_cap_mb,
            process_group=process_group,
            find_unused_parameters=args.find_unused_parameters,
            gradient_as_bucket_view=args.gradient_as_bucket_view,
        )
        return dfm.ModuleProxyWrapper(wrapped)

    DistributedFairseqModel._fairseq_plm = True
    dfm.DistributedFairseqModel = DistributedFairseqModel
    fairseq_models.DistributedFairseqModel = DistributedFairseqModel
    if hasattr(fairseq_trainer, "models"):
        fairseq_trainer.models.DistributedFairseqModel = DistributedFairseqModel


class _AnyFairseqPlmPath(list):
    """A package ``__path__`` that also "contains" every other copy of fairseq_plm.

    fairseq's ``import_user_module`` only checks ``module_path in pkg.__path__``;
    iteration (what the import system uses) is unchanged.
    """

    def __contains__(self, item):
        if list.__contains__(self, item):
            return True
        try:
            with open(os.path.join(item, "__init__.py"), encoding="utf-8") as f:
                return MARKER in f.read()
        except OSError:
            return False


def _patch_bleu_scorer():
    from fairseq.scoring import bleu

    add = bleu.Scorer.add

    def add_empty_safe(self, ref, pred):
        if pred.numel() == 0:
            pred = torch.IntTensor([self.eos])
        return add(self, ref, pred)

    bleu.Scorer.add = add_empty_safe


HEAP_RELEASE_BYTES = 1 << 30  # growth since the last release that makes a release worth its page faults
HEAP_RELEASE_SHARE = 0.25      # ... once the process holds this share of the machine's memory


class _HeapRelease:
    """``malloc_trim(0)`` (glibc): freed heap pages go back to the system, live tensors are
    untouched. Due when the process holds more than ``HEAP_RELEASE_SHARE`` of the machine's
    memory and has grown ``HEAP_RELEASE_BYTES`` since the previous release. Below that share
    nothing is done: a released page costs a page fault when the next step touches it again
    (measured: ~10% of an SGA step on the CPU when released after every step). A no-op where
    glibc or /proc is missing."""

    def __init__(self):
        self.baseline = 0
        try:
            self._trim = ctypes.CDLL(None).malloc_trim
            self._page = os.sysconf("SC_PAGE_SIZE")
            self.machine = os.sysconf("SC_PHYS_PAGES") * self._page
            self.resident()
        except (OSError, AttributeError, ValueError):
            self._trim = None

    def resident(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __call__(self, force=False):
        """Releases and returns True when due (or ``force``)."""
        if self._trim is None:
            return False
        if not force:
            now = self.resident()
            if now < HEAP_RELEASE_SHARE * self.machine or now - self.baseline < HEAP_RELEASE_BYTES:
                return False
        self._trim(0)
        self.baseline = self.resident()
        return True


release_freed_heap = _HeapRelease()


def _patch_cpu_heap_release():
    from fairseq.trainer import Trainer

    if not getattr(Trainer.train_step, MARKER, False):
        Trainer.train_step = _releasing_heap_on_cpu(Trainer.train_step)


def _releasing_heap_on_cpu(step):
    """``Trainer.train_step`` followed, on a CPU trainer, by ``release_freed_heap()``."""

    @functools.wraps(step)
    def train_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        if self.device.type == "cpu":
            release_freed_heap()
        return out

    setattr(train_step, MARKER, True)
    return train_step


def make_package_path_unique(package):
    if not isinstance(package.__path__, _AnyFairseqPlmPath):
        package.__path__ = _AnyFairseqPlmPath(package.__path__)


def apply():
    global _APPLIED
    if _APPLIED:
        return
    _patch_checkpoint_loading()
    _patch_cpu_distributed()
    _patch_bleu_scorer()
    _patch_cpu_heap_release()
    _APPLIED = True
