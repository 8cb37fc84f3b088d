#!/usr/bin/env python
"""Size on disk of a prompt adapter (``fairseq-plm-export``) per trained parameter, next to the
training checkpoint it comes from (prompt + Adam's two moments).

Target (issue 17): 4 bytes per trained parameter in fp32, 2 with ``--fp16``, plus a few KB.

Two sources:
  * ``--checkpoints a.pt b.pt ...``: real checkpoints written by fairseq-train (e.g. the tests'
    tiny runs); each is exported with and without --fp16 and measured.
  * ``--preset-shapes`` (default when no checkpoint is given): MSP, single-stage, prefix tuning
    and prompt tuning at mGPT's true shape, SGA at XLM-R large's, prompt length 128. The models
    are built on torch's meta device (no 560M-parameter PLM in memory); their trained tensors,
    with the paper's shapes, are filled with random values and saved as a fairseq checkpoint
    with Adam state, then exported. No training: sizes only.

    python benchmarks/bench_adapter_size.py                    # preset shapes, ~1 min, < 1 GB RAM
    python benchmarks/bench_adapter_size.py --checkpoints ckpt/checkpoint_best.pt
"""

import argparse
import os
import struct
import sys
import tempfile
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fairseq_plm  # noqa: E402,F401
from fairseq_plm.checkpoints import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_checkpoint, write_adapter  # noqa: E402


def header_bytes(path):
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def arch_of(checkpoint):
    cfg = read_checkpoint(checkpoint)["cfg"]["model"]
    return cfg["_name"] if isinstance(cfg, dict) else getattr(cfg, "_name", None) or cfg.arch


def measure(name, checkpoint, out_root):
    state = read_checkpoint(checkpoint)
    params = sum(v.numel() for k, v in state["model"].items() if k != "plm_fingerprint")
    row = [name, f"{params:,}", f"{os.path.getsize(checkpoint) / params:.2f}"]
    for fp16 in (False, True):
        out = os.path.join(out_root, f"{os.path.basename(os.path.dirname(checkpoint))}-{name}-{int(fp16)}")
        write_adapter(checkpoint, out, fp16=fp16, data=None)
        weights = os.path.join(out, ADAPTER_WEIGHTS)
        size = os.path.getsize(weights)
        row += [f"{size:,}", f"{(size - header_bytes(weights)) / params:.2f}", f"{header_bytes(weights):,}"]
    row.append(f"{os.path.getsize(os.path.join(out, ADAPTER_CONFIG)):,}")
    return row


def preset_checkpoints(root, prompt_length):
    """fairseq-style checkpoints (cfg, trained tensors, Adam state) at the papers' shapes."""
    from omegaconf import OmegaConf

    from fairseq_plm.models.msp import MSPConfig, MSPModel, PrefixConditionedDecoder, PrefixTuningConfig, \
        PrefixTuningModel, PromptTuningConfig, PromptTuningModel
    from fairseq_plm.models.sga import SGAConfig, SGAModel
    from fairseq_plm.plm.config import preset
    from fairseq_plm.plm.frozen import is_plm_key
    from fairseq_plm.plm.loading import build_model
    from fairseq_plm.plm.vocab import PLMDictionary

    def dictionary(size, mask=False):
        words = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, size - int(mask))]
        return PLMDictionary(words + (["<mask>"] if mask else []), pad=1, eos=2, unk=3, bos=0,
                             mask=size - 1 if mask else None, kind="xlmr")

    settings = [("msp (3 stages)", "msp", MSPModel, MSPConfig(), "mgpt"),
                ("single-stage", "msp_single_stage", MSPModel, MSPConfig(single_stage=True), "mgpt"),
                ("prefix tuning", "prefix_tuning", PrefixTuningModel, PrefixTuningConfig(), "mgpt"),
                ("prompt tuning", "prompt_tuning", PromptTuningModel, PromptTuningConfig(), "mgpt"),
                ("sga (XLM-R large)", "sga_xlmr_large", SGAModel, SGAConfig(), "xlmr-large")]
    for name, arch, model_cls, cfg, plm_name in settings:
        cfg.prompt_length, cfg.plm = prompt_length, plm_name
        with torch.device("meta"):
            plm = build_model(preset(plm_name))
            plm.fingerprint = torch.zeros(32, dtype=torch.uint8)
            if model_cls is SGAModel:
                model = SGAModel.from_plm(cfg, plm, dictionary(plm.cfg.vocab_size, mask=True))
            else:
                d = dictionary(plm.cfg.vocab_size)
                model = model_cls(model_cls.build_encoder(cfg, d, plm), PrefixConditionedDecoder(d, plm))
        trained = {k: torch.randn(v.shape) for k, v in model.named_parameters()
                   if not is_plm_key(k) and v.requires_grad}
        model_state = dict(trained, plm_fingerprint=torch.zeros(32, dtype=torch.uint8))
        adam = {"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}
                          for i, v in enumerate(trained.values())}, "param_groups": [{"params": list(range(len(trained)))}]}
        model_cfg = dict(OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True), _name=arch)
        state = {"args": None, "cfg": {"model": model_cfg, "task": {"_name": "plm_translation", "data": None}},
                 "model": model_state, "last_optimizer_state": adam,
                 "optimizer_history": [{"criterion_name": "x", "optimizer_name": "FairseqAdam", "num_updates": 1,
                                        "lr_scheduler_state": {}}], "extra_state": {}}
        path = os.path.join(root, arch, "checkpoint_best.pt")
        os.makedirs(os.path.dirname(path))
        torch.save(state, path)
        del model, plm
        yield name, path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="*", default=[])
    p.add_argument("--prompt-length", type=int, default=128)
    args = p.parse_args()
    print("| checkpoint | trained params | .pt bytes/param (with Adam) | adapter fp32 bytes | fp32 bytes/param "
          "(w/o header) | fp32 header | adapter --fp16 bytes | fp16 bytes/param (w/o header) | fp16 header | "
          "adapter_config.json bytes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        sources = [(arch_of(c), c) for c in args.checkpoints] or \
            list(preset_checkpoints(os.path.join(root, "ckpt"), args.prompt_length))
        for name, path in sources:
            print("| " + " | ".join(measure(name, path, root)) + " |", flush=True)


if __name__ == "__main__":
    main()
