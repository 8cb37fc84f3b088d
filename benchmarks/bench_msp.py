#!/usr/bin/env python
"""MSP versus single-stage prompting on the same frozen GPT backbone and prompt length.

Measured in one run, implementations interleaved, medians reported:
  * decoding: fairseq's SequenceGenerator, beam 4, every hypothesis forced to the same length
    (min_len = max_len) so both methods run the same number of decoding steps; seconds per
    sentence. Paper (MSP Table 5): 0.11 vs 0.10 s/sent. Target: ratio <= 1.10.
  * training step: forward + backward + Adam step on one batch. Paper: 21 h vs 14 h.
    Target: ratio <= 1.5.
  * checkpoint bytes per trained parameter (prompt-only checkpoints, incl. Adam state) and
    peak memory (CPU: max RSS of this process; CUDA: torch.cuda.max_memory_allocated).

    python benchmarks/bench_msp.py                          # ~2 min on 2 CPU cores
    python benchmarks/bench_msp.py --preset mgpt --device cuda --batch 32 --tgt-len 40
"""

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fairseq_plm  # noqa: E402,F401
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402
from fairseq_plm.models.msp import MSPConfig, MSPModel  # noqa: E402
from fairseq_plm.plm.config import preset  # noqa: E402
from fairseq_plm.plm.vocab import PLMDictionary  # noqa: E402


def plm_dir(args):
    """A HF-format config.json (random weights are built from it with --plm-random-init)."""
    d = tempfile.mkdtemp()
    c = preset(args.preset) if args.preset else preset("mgpt", num_layers=args.layers, hidden_size=args.hidden,
                                                          num_heads=args.heads, intermediate_size=4 * args.hidden,
                                                          vocab_size=args.vocab)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "gpt2", "vocab_size": c.vocab_size, "n_embd": c.hidden_size, "n_layer": c.num_layers,
                   "n_head": c.num_heads, "n_inner": c.intermediate_size, "n_positions": c.max_positions,
                   "activation_function": "gelu_new", "pad_token_id": 0, "eos_token_id": 1}, f)
    return d, c


def build(kind, plm, vocab, args):
    d = PLMDictionary(["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(3, vocab)], pad=0, eos=1, unk=2, bos=1)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d,
                           cfg=SimpleNamespace(source_lang="src", target_lang="tgt", data="(benchmark)"))
    cfg = MSPConfig(plm=plm, plm_random_init=True, prompt_length=args.prompt_length,
                    single_stage=kind == "single-stage")
    model = MSPModel.build_model(cfg, task).to(args.device)
    return model, d


def batch(args, vocab, device, seed):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (args.batch, args.src_len), generator=g)
    tgt = torch.randint(3, vocab, (args.batch, args.tgt_len), generator=g)
    prev = torch.cat([torch.ones(args.batch, 1, dtype=torch.long), tgt[:, :-1]], 1)
    return src.to(device), torch.full((args.batch,), args.src_len, device=device), prev.to(device), tgt.to(device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_decode(model, d, src, lengths, args):
    gen = SequenceGenerator([model], d, beam_size=4, max_len_a=0, max_len_b=args.tgt_len, min_len=args.tgt_len)
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths}}
    sync(args.device)
    t = time.perf_counter()
    with torch.no_grad():
        gen.generate([model], sample)
    sync(args.device)
    return (time.perf_counter() - t) / src.size(0)


def time_train(model, opt, src, lengths, prev, tgt, args):
    sync(args.device)
    t = time.perf_counter()
    logits, _ = model(src, lengths, prev)
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    sync(args.device)
    return time.perf_counter() - t


def checkpoint_bytes_per_param(model, opt):
    state = {"model": model.state_dict(), "last_optimizer_state": opt.state_dict()}
    with tempfile.NamedTemporaryFile(suffix=".pt") as f:
        torch.save(state, f.name)
        size = os.path.getsize(f.name)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return size, n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["mgpt"], help="true mGPT shapes (random weights)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=16000)
    p.add_argument("--prompt-length", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--src-len", type=int, default=24)
    p.add_argument("--tgt-len", type=int, default=24)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    plm, c = plm_dir(args)
    kinds = ["msp", "single-stage"]
    models = {k: build(k, plm, c.vocab_size, args) for k in kinds}
    opts = {k: torch.optim.Adam([q for q in models[k][0].parameters() if q.requires_grad], lr=1e-3) for k in kinds}
    src, lengths, prev, tgt = batch(args, c.vocab_size, args.device, 0)
    dec = {k: [] for k in kinds}
    trn = {k: [] for k in kinds}
    for k in kinds:  # warm-up
        time_decode(models[k][0].eval(), models[k][1], src, lengths, args)
        time_train(models[k][0].train(), opts[k], src, lengths, prev, tgt, args)
    for r in range(args.repeats):
        for k in (kinds if r % 2 == 0 else kinds[::-1]):
            model, d = models[k]
            dec[k].append(time_decode(model.eval(), d, src, lengths, args))
            trn[k].append(time_train(model.train(), opts[k], src, lengths, prev, tgt, args))
    med = {k: (statistics.median(dec[k]), statistics.median(trn[k])) for k in kinds}
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"# {cmd}")
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}; backbone "
          f"{c.num_layers} layers, d={c.hidden_size}, {c.num_heads} heads, vocab {c.vocab_size}; prompt length "
          f"{args.prompt_length}; batch {args.batch}, src {args.src_len}, tgt {args.tgt_len} tokens; beam 4; "
          f"median of {args.repeats}")
    print("| method | decode s/sent (beam 4) | train step s | trained params | ckpt bytes/param |")
    print("|---|---|---|---|---|")
    for k in kinds:
        size, n = checkpoint_bytes_per_param(models[k][0], opts[k])
        print(f"| {k} | {med[k][0]:.4f} | {med[k][1]:.4f} | {n:,} | {size / n:.2f} |")
    print(f"| **ratio msp / single-stage** | **{med['msp'][0] / med['single-stage'][0]:.3f}** (target <= 1.10) | "
          f"**{med['msp'][1] / med['single-stage'][1]:.3f}** (target <= 1.5) | | |")
    if args.device.startswith("cuda"):
        print(f"# peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    else:
        print(f"# peak memory (max RSS of the process, both models): "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
