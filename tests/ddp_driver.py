"""Runs fairseq's real training loop (fairseq_cli.train.main) under fairseq's data-parallel
launcher on CPU, and makes every rank dump its trained parameters when it saves a
checkpoint, so the test can compare replicas. Usage: python ddp_driver.py OUT_DIR <fairseq-train args>"""

import os
import sys

import torch

import fairseq_plm  # noqa: F401  (applies the CPU DDP shim)
from fairseq import checkpoint_utils, options
from fairseq.distributed import utils as distributed_utils
from fairseq_cli import train as fairseq_train

OUT = os.environ.get("DDP_DRIVER_OUT")
_save = checkpoint_utils.save_checkpoint


def save_checkpoint(cfg, trainer, epoch_itr, val_loss):
    rank = torch.distributed.get_rank()
    params = {n: p.detach().clone() for n, p in trainer.get_model().named_parameters() if p.requires_grad}
    torch.save({"num_updates": trainer.get_num_updates(), "params": params,
                "world_size": torch.distributed.get_world_size()},
               os.path.join(OUT, f"rank{rank}.pt"))
    return _save(cfg, trainer, epoch_itr, val_loss)


fairseq_train.checkpoint_utils.save_checkpoint = save_checkpoint

if __name__ == "__main__":
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, sys.argv[1:])
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    distributed_utils.call_main(convert_namespace_to_omegaconf(args), fairseq_train.main)
