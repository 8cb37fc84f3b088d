#!/usr/bin/env python
"""Forward+backward speed of our PLM backbones against transformers, same shapes, same weights.

What is timed (one step = forward + backward, PLM parameters frozen, fp32, eval mode):

* gpt2 / "deep prompt": gradients flow only to a deep prompt: per-layer prefix keys and values
  ([1, H, P, D] leaf tensors, shared by the batch). Ours gets them as ``prefix=``; transformers'
  GPT2LMHeadModel gets the same tensors (expanded to the batch) as ``past_key_values`` in a
  fresh DynamicCache, with positions continuing after the prompt in both. Loss: next-token
  cross-entropy over the full vocabulary.
* xlmr / "inputs_embeds": transformers' XLMRobertaModel has no prefix input, so both
  implementations run on plain input with gradients to ``inputs_embeds`` (a leaf tensor); no
  prompt. Loss: mean of squared final hidden states. An extra row times our BertEncoder with a
  deep prompt (gradients to the prompt) at the same shapes; it has no transformers counterpart.

The tiny random transformers model is saved with ``save_pretrained`` and loaded back with
``load_plm``, so both sides hold identical weights; before timing, losses and gradients of
both implementations are compared and the max abs difference is printed.

Runs of the two implementations are interleaved (alternating which goes first), after warm-up,
and medians are reported with the ratio ours/HF measured in this one run.

    python benchmarks/bench_backbone.py                      # defaults, ~1 min on 2 CPU cores
    python benchmarks/bench_backbone.py --family gpt2 --device cuda --layers 24 --hidden 1024 \
        --heads 16 --seq-len 256 --batch 16 --prefix-len 64
"""

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import transformers  # noqa: E402
from transformers import (DynamicCache, GPT2Config, GPT2LMHeadModel, XLMRobertaConfig,  # noqa: E402
                          XLMRobertaModel)

from fairseq_plm.plm.loading import load_plm  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--family", choices=["gpt2", "xlmr", "both"], default="both")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prefix-len", type=int, default=16)
    p.add_argument("--vocab", type=int, default=8000, help="vocabulary size of the tiny models")
    p.add_argument("--repeats", type=int, default=60, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per implementation")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--hf-attn", default="sdpa", choices=["sdpa", "eager"],
                   help="transformers attention implementation (ours always uses SDPA)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--preset", choices=["mgpt", "xlmr-base"],
                   help="take layers/hidden/heads/vocab of this PLM (gpt2 family: mgpt, xlmr: xlmr-base)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="both models and the inputs in this dtype")
    p.add_argument("--compile", action="store_true", help="torch.compile our blocks (fairseq_plm.plm.speed)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.preset:
        from fairseq_plm.plm.config import preset

        c = preset(args.preset)
        args.layers, args.hidden, args.heads, args.vocab = c.num_layers, c.hidden_size, c.num_heads, c.vocab_size
    return args


DTYPE = torch.float32


def same_weights(hf, path, device, compile_ours=False):
    """Save the transformers model and load it back with our loader: identical weights."""
    hf.save_pretrained(path)
    ours = load_plm(path).freeze().to(device=device, dtype=DTYPE)
    if compile_ours:
        from fairseq_plm.plm.speed import compile_plm

        compile_plm(ours)
    return ours, freeze(hf).to(device=device, dtype=DTYPE)


@torch.no_grad()
def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        p.copy_(noise * 0.05 if p.dim() >= 2 else
                (1.0 + 0.05 * noise if name.endswith("weight") else 0.05 * noise))
    return model


def freeze(model):
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns, repeats, warmup, device):
    """fns: {name: zero-arg step}. Returns {name: [ms, ...]} with runs interleaved and the
    order alternating every round, so slow drift (thermal, other load) hits both alike."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync(device)
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append((time.perf_counter() - t0) * 1e3)
    return times


def quartiles(xs):
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    return tuple(statistics.quantiles(xs, n=4))


def max_diff(a, b):
    return float((a.detach().float() - b.detach().float()).abs().max())


# ------------------------------------------------------------------ GPT-2, deep prompt

def bench_gpt2(args, device, tmp):
    cfg = GPT2Config(
        vocab_size=args.vocab, n_positions=args.prefix_len + args.seq_len, n_embd=args.hidden,
        n_layer=args.layers, n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, attn_implementation=args.hf_attn,
    )
    ours, hf = same_weights(randomize(GPT2LMHeadModel(cfg), args.seed), os.path.join(tmp, "gpt2"), device,
                            args.compile)

    b, t, p, h, d = args.batch, args.seq_len, args.prefix_len, args.heads, args.hidden // args.heads
    gen = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, args.vocab, (b, t), generator=gen).to(device)
    positions = torch.arange(p, p + t, device=device)[None]
    prompt0 = [(torch.randn(1, h, p, d, generator=gen).to(device, DTYPE),
                torch.randn(1, h, p, d, generator=gen).to(device, DTYPE)) for _ in range(args.layers)]
    leaves = {n: [(k.clone().requires_grad_(), v.clone().requires_grad_()) for k, v in prompt0]
              for n in ("ours", "hf")}

    def lm_loss(logits):
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))

    def step_ours():
        out = ours(ids, prefix=leaves["ours"], position_ids=positions)
        loss = lm_loss(ours.logits(out.hidden))
        loss.backward()
        return loss.detach()

    def step_hf():
        past = DynamicCache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1))
                             for k, v in leaves["hf"]])
        loss = lm_loss(hf(input_ids=ids, past_key_values=past, use_cache=False).logits)
        loss.backward()
        return loss.detach()

    def zero_grads():
        for kv in leaves.values():
            for x in (t_ for pair in kv for t_ in pair):
                x.grad = None

    la, lb = step_ours(), step_hf()
    grad_diff = max(max_diff(a.grad, c.grad) for pa, pb in zip(leaves["ours"], leaves["hf"])
                    for a, c in zip(pa, pb))
    grad_max = max(float(x.grad.abs().max()) for pair in leaves["hf"] for x in pair)
    check = (f"loss diff {abs(la.item() - lb.item()):.1e}, prompt grad max diff {grad_diff:.1e} "
             f"(max abs grad {grad_max:.1e})")
    zero_grads()

    def timed(step):
        def run():
            step()
            zero_grads()
        return run

    times = time_interleaved({"ours": timed(step_ours), "hf": timed(step_hf)},
                             args.repeats, args.warmup, device)
    return [dict(family="gpt2", mode=f"deep prompt P={p} (HF: past_key_values)",
                 ours=times["ours"], hf=times["hf"], check=check)]


# ------------------------------------------------------------------ XLM-R

def bench_xlmr(args, device, tmp):
    max_len = max(args.seq_len, 8)
    cfg = XLMRobertaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
        max_position_embeddings=max_len + 2, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, layer_norm_eps=1e-5, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation=args.hf_attn,
    )
    ours, hf = same_weights(randomize(XLMRobertaModel(cfg, add_pooling_layer=False), args.seed),
                            os.path.join(tmp, "xlmr"), device, args.compile)

    b, t, p, h, d = args.batch, args.seq_len, args.prefix_len, args.heads, args.hidden // args.heads
    gen = torch.Generator().manual_seed(args.seed + 2)
    ids = torch.randint(3, args.vocab, (b, t), generator=gen).to(device)
    with torch.no_grad():
        emb0 = ours.embed(ids)
    embeds = {n: emb0.clone().requires_grad_() for n in ("ours", "hf")}

    def step_ours():
        loss = ours(inputs_embeds=embeds["ours"]).hidden.pow(2).mean()
        loss.backward()
        return loss.detach()

    def step_hf():
        loss = hf(inputs_embeds=embeds["hf"]).last_hidden_state.pow(2).mean()
        loss.backward()
        return loss.detach()

    la, lb = step_ours(), step_hf()
    check = (f"loss diff {abs(la.item() - lb.item()):.1e}, inputs_embeds grad max diff "
             f"{max_diff(embeds['ours'].grad, embeds['hf'].grad):.1e} "
             f"(max abs grad {float(embeds['hf'].grad.abs().max()):.1e})")

    prompt = [(torch.randn(1, h, p, d, generator=gen).to(device, DTYPE).requires_grad_(),
               torch.randn(1, h, p, d, generator=gen).to(device, DTYPE).requires_grad_())
              for _ in range(args.layers)]

    def step_ours_prompt():
        ours(ids, prefix=prompt).hidden.pow(2).mean().backward()

    def clear():
        for e in embeds.values():
            e.grad = None
        for k, v in prompt:
            k.grad = v.grad = None

    def timed(step):
        def run():
            step()
            clear()
        return run

    clear()
    times = time_interleaved({"ours": timed(step_ours), "hf": timed(step_hf),
                              "ours_prompt": timed(step_ours_prompt)},
                             args.repeats, args.warmup, device)
    return [
        dict(family="xlmr", mode="inputs_embeds grad, no prompt (HF has no prefix input)",
             ours=times["ours"], hf=times["hf"], check=check),
        dict(family="xlmr", mode=f"ours only: deep prompt P={p} (no HF counterpart)",
             ours=times["ours_prompt"], hf=None, check="-"),
    ]


# ------------------------------------------------------------------ main

def main(argv=None):
    global DTYPE
    args = parse_args(argv)
    DTYPE = getattr(torch, args.dtype)
    if args.hidden % args.heads:
        sys.exit(f"--hidden {args.hidden} is not divisible by --heads {args.heads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_backbone_") as tmp:
        if args.family in ("gpt2", "both"):
            rows += bench_gpt2(args, device, tmp)
        if args.family in ("xlmr", "both"):
            rows += bench_xlmr(args, device, tmp)

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, device: {dev}")
    print(f"# {args.dtype}{', ours compiled' if args.compile else ''}, eval mode, PLM frozen; forward+backward "
          f"per step; {args.warmup} warm-up + "
          f"{args.repeats} timed steps each, implementations interleaved; HF attention: "
          f"{args.hf_attn}")
    shape = (f"L={args.layers} C={args.hidden} H={args.heads} T={args.seq_len} B={args.batch} "
             f"P={args.prefix_len} V={args.vocab}")
    print()
    print("| family | what gets gradients | shapes | ours median ms | HF median ms | ours/HF "
          "| paired ours/HF median [IQR] | speed ours vs HF (HF/ours, paired; target >= 1.1x) | parity check |")
    print("|---|---|---|---|---|---|---|---|---|")
    out = []
    for r in rows:
        o = statistics.median(r["ours"])
        entry = {"family": r["family"], "mode": r["mode"], "shape": shape, "ours_ms": o, "check": r["check"]}
        if r["hf"] is None:
            hf_ms, ratio, paired, speed = "n/a", "n/a", "n/a", "n/a"
        else:
            hm = statistics.median(r["hf"])
            hf_ms, ratio = f"{hm:.2f}", f"{o / hm:.2f}"
            # runs of the same round are adjacent in time: their ratio cancels slow drift
            q1, q2, q3 = quartiles([a / b for a, b in zip(r["ours"], r["hf"])])
            paired = f"{q2:.2f} [{q1:.2f}-{q3:.2f}]"
            speed = f"{1 / q2:.2f}x"
            entry.update(hf_ms=hm, ours_over_hf_paired=q2, speed_vs_hf=1 / q2)
        out.append(entry)
        print(f"| {r['family']} | {r['mode']} | {shape} | {o:.2f} | {hf_ms} | {ratio} | {paired} | {speed} "
              f"| {r['check']} |")
    print()
    cmd = shlex.join(["python", os.path.relpath(__file__, os.getcwd())] + (sys.argv[1:] if argv is None else argv))
    print("command: " + cmd)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"command": cmd, "device": str(device), "dtype": args.dtype, "rows": out}, f, indent=1)
    return out


if __name__ == "__main__":
    main()
