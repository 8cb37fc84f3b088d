"""Helpers shared by the benchmark scripts: precision, device sync, output shortlists, JSON."""

import contextlib
import json
import os

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_common_args(p):
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="float16/bfloat16: the frozen PLM's weights in that dtype and every forward under "
                        "torch.autocast (trained parameters stay float32, as with fairseq's --amp)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the PLM's blocks (fairseq_plm.plm.speed.compile_plm)")
    p.add_argument("--json", help="also write the figures to this JSON file")


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def autocast(args):
    """The forward context for --dtype (a no-op for float32)."""
    if args.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(str(args.device).split(":")[0], dtype=DTYPES[args.dtype])


def prepare_plm(plm, args):
    """--dtype and --compile applied to a frozen PLM (in place); returns it."""
    if args.dtype != "float32":
        plm.to(DTYPES[args.dtype])
    if getattr(args, "compile", False):
        from fairseq_plm.plm.speed import compile_plm

        compile_plm(plm)
    return plm


def random_shortlist(dictionary, k, extra_specials=(), seed=0):
    """A shortlist of ``k`` pieces (the specials and random others): the size of a target
    side's vocabulary, for timing; None for k = 0."""
    if not k:
        return None
    from fairseq_plm.plm.shortlist import kept_specials, shortlist_from_ids

    specials = kept_specials(dictionary, extra_specials)
    g = torch.Generator().manual_seed(seed)
    others = torch.randperm(len(dictionary), generator=g)
    others = [i for i in others.tolist() if i not in specials][:max(0, k - len(specials))]
    return shortlist_from_ids(others, dictionary, extra_specials)


def write_json(path, obj):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)
