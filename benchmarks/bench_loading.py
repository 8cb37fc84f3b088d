#!/usr/bin/env python
"""Cost of loading a PLM at its true size: peak RSS and wall time of ``load_plm`` per file layout.

A preset's shape (default ``mgpt``: 24 layers, d=1024, 250,100 embeddings, 560M parameters) gets
random weights, saved in each layout users hold (see ``fairseq_plm/plm/loading.py``):

  safetensors          today's save_pretrained: model.safetensors, fp32, tied lm_head omitted
  safetensors-sharded  the same in shards of --shard-mb + model.safetensors.index.json
  safetensors-fp16     model.safetensors in fp16 (loaded as fp32)
  bin-zip              THUMT/mGPT's pytorch_model.bin: torch zip pickle, ``transformer.`` prefix,
                       tied lm_head.weight stored, attn.bias (uint8) / attn.masked_bias buffers
  bin-zip-fp16         the same in fp16
  bin-legacy           openai-community/gpt2's pytorch_model.bin: legacy (non-zip) pickle, no
                       prefix, no lm_head, attn.bias (fp32) / attn.masked_bias buffers

Each layout is loaded in a fresh Python process (imports first, then ``load_plm``), which reports
its RSS before loading, its peak RSS (VmHWM) and the wall time of ``load_plm``; the table gives
them against the fp32 size of the weights. Files go to a temporary directory (--workdir) that is
deleted afterwards (about 2.2 GB per fp32 layout at mGPT size; layouts are written one at a time).

    python benchmarks/bench_loading.py                          # mgpt, all layouts (~11 GB written)
    python benchmarks/bench_loading.py --preset mgpt --layers 2 --layouts safetensors bin-legacy  # quick
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LAYOUTS = ("safetensors", "safetensors-sharded", "safetensors-fp16", "bin-zip", "bin-zip-fp16", "bin-legacy")

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from fairseq_plm.plm.loading import load_plm

def status():
    with open("/proc/self/status") as f:
        d = dict(line.split(":", 1) for line in f)
    return {{k: int(d[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}}

before = status()["VmRSS"]
t0 = time.perf_counter()
model = load_plm({path!r})
wall = time.perf_counter() - t0
after = status()
params = sum(p.numel() for p in model.parameters())
print(json.dumps({{"rss_before": before, "rss_after": after["VmRSS"], "peak": after["VmHWM"],
                  "wall": wall, "params": params}}))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="mgpt", help="a gpt2-family preset (config.py)")
    p.add_argument("--layers", type=int, default=None, help="override the preset's layer count (quick runs)")
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--shard-mb", type=int, default=500, help="shard size of safetensors-sharded")
    p.add_argument("--workdir", default=None, help="where the temporary layout directories go")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


def write_layout(model, layout, path, shard_mb):
    """Save ``model`` (our GPT) in ``layout`` under ``path`` (config.json + weights)."""
    import torch
    from safetensors.torch import save_file

    from fairseq_plm.plm.export import hf_gpt2_config, hf_gpt2_state_dict

    os.makedirs(path)
    c = model.cfg
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_gpt2_config(c), f)
    hf = hf_gpt2_state_dict(model)
    fp16 = layout.endswith("fp16")
    if layout.startswith("safetensors"):
        tensors = {k: (v.half() if fp16 else v).contiguous() for k, v in hf.items()}
        if layout != "safetensors-sharded":
            save_file(tensors, os.path.join(path, "model.safetensors"))
            return
        shards, current, size = [], {}, 0
        for k, v in tensors.items():
            if current and size + v.nbytes > shard_mb << 20:
                shards.append(current)
                current, size = {}, 0
            current[k] = v
            size += v.nbytes
        shards.append(current)
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(path, name))
            weight_map.update({k: name for k in shard})
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": sum(v.nbytes for v in tensors.values())},
                       "weight_map": weight_map}, f)
        return
    n = c.max_positions
    if layout.startswith("bin-zip"):  # THUMT/mGPT: GPT2LMHeadModel saved by transformers 4.x
        state = {k: (v.half() if fp16 else v).contiguous() for k, v in hf.items()}
        state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: one storage, two names
        mask = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        for i in range(c.num_layers):
            state[f"transformer.h.{i}.attn.bias"] = mask
            state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        torch.save(state, os.path.join(path, "pytorch_model.bin"))
        return
    # bin-legacy: openai-community/gpt2 (GPT2Model names, 2019 pickle format)
    state = {k[len("transformer."):]: v.contiguous() for k, v in hf.items()}
    mask = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    for i in range(c.num_layers):
        state[f"h.{i}.attn.bias"] = mask
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, os.path.join(path, "pytorch_model.bin"), _use_new_zipfile_serialization=False)


def measure(path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), path=path)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"loading {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    import torch

    from fairseq_plm.plm.config import preset
    from fairseq_plm.plm.loading import build_model

    cfg = preset(args.preset) if args.layers is None else preset(args.preset, num_layers=args.layers)
    if cfg.family != "gpt2":
        raise SystemExit(f"--preset {args.preset} is a {cfg.family} model; this benchmark writes GPT-2 layouts")
    model = build_model(cfg).init_random(1)
    params = sum(p.numel() for p in model.parameters())
    fp32 = params * 4
    workdir = tempfile.mkdtemp(prefix="bench_loading_", dir=args.workdir)
    results = []
    print(f"{args.preset}: {params / 1e6:.1f}M parameters, fp32 weights {fp32 / 2**30:.2f} GiB; "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, workdir {workdir}", flush=True)
    try:
        for layout in args.layouts:
            path = os.path.join(workdir, layout)
            t0 = time.perf_counter()
            write_layout(model, layout, path, args.shard_mb)
            size = sum(f.stat().st_size for f in Path(path).iterdir())
            r = measure(path)
            shutil.rmtree(path)
            r.update(layout=layout, file_bytes=size, write_s=time.perf_counter() - t0)
            if r["params"] != params:
                raise SystemExit(f"{layout}: loaded {r['params']} parameters, saved {params}")
            results.append(r)
            print(f"{layout:20s} file {size / 2**30:5.2f} GiB  RSS before {r['rss_before'] / 2**30:5.2f} GiB  "
                  f"peak {r['peak'] / 2**30:5.2f} GiB = {r['peak'] / fp32:.2f}x fp32 weights "
                  f"(peak - before {(r['peak'] - r['rss_before']) / fp32:.2f}x)  load {r['wall']:.1f} s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| layout | file GiB | RSS before load GiB | peak RSS GiB | peak / fp32 weights | "
          "(peak - before) / fp32 | load_plm wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['layout']} | {r['file_bytes'] / 2**30:.2f} | {r['rss_before'] / 2**30:.2f} | "
              f"{r['peak'] / 2**30:.2f} | {r['peak'] / fp32:.2f}x | {(r['peak'] - r['rss_before']) / fp32:.2f}x | "
              f"{r['wall']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "params": params, "fp32_bytes": fp32, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
