"""Every patch this package applies to fairseq or torch lives in this one file.

fairseq-fixed 0.12.3.1 predates torch 2.6 and was only ever run on GPUs. Four things
need fixing for our users, and each is applied exactly once, on import of the package
(which fairseq does for ``--user-dir``, and our ``fairseq-plm-*`` entry points do first):

1. ``weights_only``: torch>=2.6 refuses to unpickle fairseq checkpoints, which hold
   ``argparse.Namespace`` / omegaconf objects. fairseq reads every checkpoint through
   ``checkpoint_utils.load_checkpoint_to_cpu`` (generate, resume, fine-tune, ensembles),
   so we wrap that single function and load with ``weights_only=False`` inside it only.
   Other ``torch.load`` calls in the process keep torch's safe default.
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
"""

import contextlib
import logging
import os
import socket
import warnings

import torch

logger = logging.getLogger(__name__)

_APPLIED = False
MARKER = "_fairseq_plm_package_marker"


@contextlib.contextmanager
def trusted_checkpoint_loading():
    """Let torch.load unpickle full fairseq checkpoints inside this block only."""
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
            yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _patch_checkpoint_loading():
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_fairseq_plm", False):
        return

    def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        with trusted_checkpoint_loading():
            return original(path, arg_overrides, load_on_all_ranks)

    load_checkpoint_to_cpu._fairseq_plm = True
    load_checkpoint_to_cpu.__doc__ = original.__doc__
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


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
    _APPLIED = True
