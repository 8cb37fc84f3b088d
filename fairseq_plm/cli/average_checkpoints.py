"""``fairseq-plm-average-checkpoints``: average the trained parameters of several checkpoints.

Works on the prompt-only checkpoints of this package (and on ordinary fairseq checkpoints):
floating-point tensors are averaged; anything else (the PLM fingerprint) must agree across
inputs and is kept. The result loads in fairseq-generate like any checkpoint. Writing is
atomic: a crash never leaves a half-written output.
"""

import argparse
import collections
import os
import re

import torch

from ..plm.errors import command


def last_n_checkpoints(directory, n, update_based=False, upper_bound=None):
    pattern = re.compile(r"checkpoint_\d+_(\d+)\.pt" if update_based else r"checkpoint(\d+)\.pt")
    found = []
    for f in os.listdir(directory):
        m = pattern.fullmatch(f)
        if m and (upper_bound is None or int(m.group(1)) <= upper_bound):
            found.append((int(m.group(1)), os.path.join(directory, f)))
    if len(found) < n:
        raise ValueError(f"found {len(found)} checkpoints in {directory}, --num-*-checkpoints asks for {n}")
    return [p for _, p in sorted(found, reverse=True)[:n]]


def average_checkpoints(paths):
    from ..compat import trusted_checkpoint_loading

    if not paths:
        raise ValueError("no checkpoints to average")
    sums, first = collections.OrderedDict(), None
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        with trusted_checkpoint_loading():
            state = torch.load(path, map_location="cpu")
        if "model" not in state:
            raise ValueError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
        if first is None:
            first = state
        elif set(state["model"]) != set(first["model"]):
            raise ValueError(f"{path} holds different parameters than {paths[0]}")
        for k, v in state["model"].items():
            if torch.is_floating_point(v):
                sums[k] = sums.get(k, 0) + v.double()
            elif not torch.equal(v, first["model"][k]):
                raise ValueError(f"{path}: {k} differs from {paths[0]} (checkpoints of different PLMs?)")
    out = first
    out["model"] = collections.OrderedDict(
        (k, (sums[k] / len(paths)).to(v.dtype) if k in sums else v) for k, v in first["model"].items())
    return out


@command("fairseq-plm-average-checkpoints")
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--inputs", nargs="+", required=True, help="checkpoint files, or one directory with --num-*")
    p.add_argument("--output", required=True)
    p.add_argument("--num-epoch-checkpoints", type=int)
    p.add_argument("--num-update-checkpoints", type=int)
    p.add_argument("--checkpoint-upper-bound", type=int)
    args = p.parse_args(argv)
    paths = args.inputs
    n = args.num_epoch_checkpoints or args.num_update_checkpoints
    if n:
        if len(paths) != 1 or not os.path.isdir(paths[0]):
            p.error("--num-*-checkpoints needs --inputs to be one directory")
        paths = last_n_checkpoints(paths[0], n, args.num_update_checkpoints is not None, args.checkpoint_upper_bound)
    state = average_checkpoints(paths)
    tmp = args.output + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, args.output)
    print(f"averaged {len(paths)} checkpoints into {args.output}: {', '.join(paths)}")


if __name__ == "__main__":
    main()
