"""``fairseq-plm-average-checkpoints``: average the trained parameters of several checkpoints.

Works on the prompt-only checkpoints of this package (and on ordinary fairseq checkpoints,
and on prompt adapter directories): floating-point tensors are averaged; anything else (the
PLM fingerprint) must agree across inputs and is kept. Inputs are read with the same safe
loader as every checkpoint of this package (no code in them runs). The result loads in
fairseq-generate like any checkpoint. Writing is atomic: a crash never leaves a half-written
output, and an output that is one of the inputs is refused.
"""

import argparse
import collections
import os
import re
import sys

import torch

from ..plm.errors import FairseqPLMError, command


def last_n_checkpoints(directory, n, update_based=False, upper_bound=None):
    pattern = re.compile(r"checkpoint_\d+_(\d+)\.pt" if update_based else r"checkpoint(\d+)\.pt")
    flag = "--num-update-checkpoints" if update_based else "--num-epoch-checkpoints"
    found = []
    for f in os.listdir(directory):
        m = pattern.fullmatch(f)
        if m and (upper_bound is None or int(m.group(1)) <= upper_bound):
            found.append((int(m.group(1)), os.path.join(directory, f)))
    if len(found) < n:
        kind = "checkpoint_<epoch>_<update>.pt" if update_based else "checkpoint<epoch>.pt"
        hint = ("train with --save-interval-updates N to write them" if update_based else
                "the run was trained with --no-epoch-checkpoints?")
        bound = f" up to {upper_bound}" if upper_bound is not None else ""
        raise FairseqPLMError(
            f"{flag} {n}: {directory} holds {len(found)} {kind} file(s){bound} ({hint}); "
            f"name the files to average with --inputs instead")
    return [p for _, p in sorted(found, reverse=True)[:n]]


def _shape(t):
    return "x".join(map(str, t.shape)) or "scalar"


def average_checkpoints(paths):
    from ..checkpoints import read_checkpoint

    if not paths:
        raise FairseqPLMError("--inputs: no checkpoints to average")
    sums, first = collections.OrderedDict(), None
    for path in paths:
        state = read_checkpoint(path)
        if first is None:
            first = state
        keys, first_keys = set(state["model"]), set(first["model"])
        if keys != first_keys:
            only = sorted(keys - first_keys)[:3] or sorted(first_keys - keys)[:3]
            raise FairseqPLMError(
                f"{path} and {paths[0]} hold different parameters (e.g. {', '.join(only)}): "
                f"checkpoints of different architectures cannot be averaged")
        for k, v in state["model"].items():
            ref = first["model"][k]
            if v.shape != ref.shape:
                raise FairseqPLMError(
                    f"{k} is {_shape(v)} in {path} but {_shape(ref)} in {paths[0]}: checkpoints trained with "
                    f"different settings (e.g. --prompt-length) cannot be averaged")
            if torch.is_floating_point(v):
                sums[k] = sums.get(k, 0) + v.double()
            elif not torch.equal(v, ref):
                raise FairseqPLMError(f"{path}: {k} differs from {paths[0]} (checkpoints of different PLMs?)")
    out = first
    out["model"] = collections.OrderedDict(
        (k, (sums[k] / len(paths)).to(v.dtype) if k in sums else v) for k, v in first["model"].items())
    out.pop("adapter_config", None)  # an adapter directory as first input: the result is a checkpoint
    return out


@command("fairseq-plm-average-checkpoints")
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--inputs", nargs="+", required=True,
                   help="checkpoint files (or adapter directories), or one directory with --num-*")
    p.add_argument("--output", required=True)
    p.add_argument("--num-epoch-checkpoints", type=int)
    p.add_argument("--num-update-checkpoints", type=int)
    p.add_argument("--checkpoint-upper-bound", type=int)
    args = p.parse_args(argv)
    paths = args.inputs
    n = args.num_epoch_checkpoints or args.num_update_checkpoints
    try:
        if n:
            if len(paths) != 1 or not os.path.isdir(paths[0]):
                p.error("--num-*-checkpoints needs --inputs to be one directory")
            paths = last_n_checkpoints(paths[0], n, args.num_update_checkpoints is not None,
                                       args.checkpoint_upper_bound)
        if any(os.path.abspath(args.output) == os.path.abspath(x) for x in paths):
            raise FairseqPLMError(f"--output {args.output} is one of the inputs; refusing to overwrite it")
        state = average_checkpoints(paths)
    except FairseqPLMError as e:
        sys.exit(f"{os.path.basename(sys.argv[0]) or 'fairseq-plm-average-checkpoints'}: error: {e}")
    tmp = args.output + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, args.output)
    print(f"averaged {len(paths)} checkpoints into {args.output}: {', '.join(paths)}")


if __name__ == "__main__":
    main()
