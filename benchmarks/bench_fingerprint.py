#!/usr/bin/env python
"""Cost of the exact PLM fingerprint (``fairseq_plm.plm.frozen.fingerprint``) at a PLM's true size.

Builds the preset's shape with random fp32 weights, writes them to a weights file in a
temporary directory (the PLM directory the cache is keyed on), and times:

* ``exact, cold``: SHA-256 over every byte of every tensor (no cache entry yet), i.e. what the
  first load of a PLM pays;
* ``exact, cached``: the same call again: a cache hit (stat of the directory's files);
* ``sampled v1``: the old fingerprint (a strided sample of ~4096 values per tensor), for
  comparison;
* ``file sha256``: reading and hashing the weights file itself, for comparison.

The directory (2.2 GB for mGPT's 560M parameters) is deleted at the end.

    python benchmarks/bench_fingerprint.py                  # mGPT (560M parameters)
    python benchmarks/bench_fingerprint.py --preset gpt2 --layers 2 --vocab 1000   # a quick check
"""

import argparse
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairseq_plm.plm import frozen  # noqa: E402
from fairseq_plm.plm.config import preset  # noqa: E402
from fairseq_plm.plm.loading import build_model  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mgpt")
    p.add_argument("--layers", type=int, help="override the preset's number of layers")
    p.add_argument("--vocab", type=int, help="override the preset's vocabulary size")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the weights file (deleted after)")
    args = p.parse_args()
    overrides = {k: v for k, v in (("num_layers", args.layers), ("vocab_size", args.vocab)) if v}
    model = build_model(preset(args.preset, **overrides)).init_random(1)
    n_params = sum(t.numel() for t in model.state_dict().values())
    unique = sum(p.numel() for p in model.parameters())
    plm_dir = tempfile.mkdtemp(prefix="bench_fingerprint_", dir=args.dir)
    cache_dir = tempfile.mkdtemp(prefix="bench_fingerprint_cache_", dir=args.dir)
    os.environ[frozen.CACHE_ENV] = cache_dir
    try:
        from safetensors.torch import save_file

        weights = os.path.join(plm_dir, "model.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, weights)
        size = os.path.getsize(weights)
        os.sync() if hasattr(os, "sync") else None
        cold, t_cold = timed(lambda: frozen.fingerprint(model, source=plm_dir))
        warm, t_warm = timed(lambda: frozen.fingerprint(model, source=plm_dir))
        assert torch.equal(cold, warm)
        _, t_v1 = timed(lambda: frozen.sampled_fingerprint_v1(model))

        def file_hash():
            h = hashlib.sha256()
            with open(weights, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
            return h.hexdigest()

        _, t_file = timed(file_hash)
    finally:
        shutil.rmtree(plm_dir, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; preset {args.preset} {overrides or ''}: "
          f"{unique:,} parameters ({n_params:,} state values incl. tied/buffers), fp32; "
          f"weights file {size / 1e9:.2f} GB")
    print("| fingerprint | seconds | GB/s |")
    print("|---|---|---|")
    hashed = unique * 4 / 1e9
    print(f"| exact (v2), cold: SHA-256 of every tensor byte | {t_cold:.2f} | {hashed / t_cold:.2f} |")
    print(f"| exact (v2), cached (cache hit) | {t_warm:.4f} | - |")
    print(f"| sampled (v1, old) | {t_v1:.3f} | - |")
    print(f"| file sha256 (read + hash model.safetensors) | {t_file:.2f} | {size / 1e9 / t_file:.2f} |")
    print(f"# peak RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    main()
