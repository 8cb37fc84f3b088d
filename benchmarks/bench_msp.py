#!/usr/bin/env python
"""MSP versus single-stage prompting on the same frozen GPT backbone and prompt length.

Measured in one run, implementations interleaved, medians reported:
  * decoding: fairseq's SequenceGenerator, beam 4, every hypothesis forced to the same length
    (min_len = max_len) so both methods run the same number of decoding steps; seconds per
    sentence. Paper (MSP Table 5): 0.11 vs 0.10 s/sent. Target: ratio <= 1.10.
  * training step: forward + cross-entropy (through the model's get_normalized_probs /
    get_targets, as fairseq's criterion) + backward + Adam step on one batch. Paper: 21 h vs
    14 h. Target (issue 18): ratio <= 1.3 (before: <= 1.5).
  * with ``--output-shortlist K``: both methods also with an output layer of K pieces
    (``--output-shortlist``, plm/shortlist.py), interleaved with the full vocabulary; the
    random source/target ids are drawn from the shortlist so both score the same targets.
  * checkpoint bytes per trained parameter (prompt-only checkpoints, incl. Adam state) and
    peak memory (CPU: max RSS of this process; CUDA: torch.cuda.max_memory_allocated).

    python benchmarks/bench_msp.py                          # ~2 min on 2 CPU cores
    python benchmarks/bench_msp.py --preset mgpt --batch 2 --src-len 16 --tgt-len 16 --repeats 3 \
        --output-shortlist 30000
    python benchmarks/bench_msp.py --preset mgpt --device cuda --dtype float16 --batch 32 --tgt-len 40
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
from bench_common import add_common_args, autocast, prepare_plm, random_shortlist, sync, write_json  # noqa: E402


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
    model = MSPModel.build_model(cfg, task)
    prepare_plm(model.plm, args)
    return model.to(args.device), d


def batch(args, vocab, device, seed, shortlist=None):
    """Random source/target ids; with a shortlist, drawn from its pieces (so the full and the
    reduced output layer score the same, in-shortlist, targets)."""
    g = torch.Generator().manual_seed(seed)
    if shortlist is None:
        src = torch.randint(3, vocab, (args.batch, args.src_len), generator=g)
        tgt = torch.randint(3, vocab, (args.batch, args.tgt_len), generator=g)
    else:
        pool = shortlist.ids[shortlist.ids >= 3]
        src = pool[torch.randint(len(pool), (args.batch, args.src_len), generator=g)]
        tgt = pool[torch.randint(len(pool), (args.batch, args.tgt_len), generator=g)]
    prev = torch.cat([torch.ones(args.batch, 1, dtype=torch.long), tgt[:, :-1]], 1)
    return src.to(device), torch.full((args.batch,), args.src_len, device=device), prev.to(device), tgt.to(device)


def time_decode(model, d, src, lengths, args):
    gen = SequenceGenerator([model], d, beam_size=4, max_len_a=0, max_len_b=args.tgt_len, min_len=args.tgt_len)
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths}}
    sync(args.device)
    t = time.perf_counter()
    with torch.no_grad(), autocast(args):
        gen.generate([model], sample)
    sync(args.device)
    return (time.perf_counter() - t) / src.size(0)


def time_train(model, opt, src, lengths, prev, tgt, args):
    """One step of MSP Eq. (7) as fairseq trains it: the model's normalized probabilities and
    targets (over the output shortlist when there is one), cross-entropy, backward, Adam."""
    sync(args.device)
    t = time.perf_counter()
    with autocast(args):
        out = model(src, lengths, prev)
        lprobs = model.get_normalized_probs(out, log_probs=True)
        target = model.get_targets({"target": tgt}, out)
        loss = torch.nn.functional.nll_loss(lprobs.float().flatten(0, 1), target.flatten())
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


def main(argv=None):
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
    p.add_argument("--output-shortlist", type=int, default=0, metavar="K",
                   help="also time both methods with an output shortlist of K pieces (--output-shortlist), "
                        "interleaved with the full vocabulary; 0: full vocabulary only")
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--device", default="cpu")
    add_common_args(p)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    plm, c = plm_dir(args)
    kinds = ["msp", "single-stage"]
    models = {k: build(k, plm, c.vocab_size, args) for k in kinds}
    shortlist = random_shortlist(models["msp"][1], args.output_shortlist)
    vocabs = ["full"] + (["shortlist"] if shortlist is not None else [])
    systems = [(k, v) for v in vocabs for k in kinds]
    opts = {k: torch.optim.Adam([q for q in models[k][0].parameters() if q.requires_grad], lr=1e-3) for k in kinds}
    src, lengths, prev, tgt = batch(args, c.vocab_size, args.device, 0, shortlist)

    def use(system):
        model, d = models[system[0]]
        model.decoder.output_shortlist = shortlist.to(args.device) if system[1] == "shortlist" else None
        return model, d

    dec = {s: [] for s in systems}
    trn = {s: [] for s in systems}
    for s in systems:  # warm-up
        model, d = use(s)
        if not args.skip_decode:
            time_decode(model.eval(), d, src, lengths, args)
        time_train(model.train(), opts[s[0]], src, lengths, prev, tgt, args)
    for r in range(args.repeats):
        for s in (systems if r % 2 == 0 else systems[::-1]):
            model, d = use(s)
            if not args.skip_decode:
                dec[s].append(time_decode(model.eval(), d, src, lengths, args))
            trn[s].append(time_train(model.train(), opts[s[0]], src, lengths, prev, tgt, args))
    med = {s: (statistics.median(dec[s]) if dec[s] else float("nan"), statistics.median(trn[s])) for s in systems}
    cmd = "python " + " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["bench_msp.py", *argv]))
    print(f"# {cmd}")
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, {args.dtype}"
          f"{', compiled' if args.compile else ''}; backbone {c.num_layers} layers, d={c.hidden_size}, "
          f"{c.num_heads} heads, vocab {c.vocab_size}"
          f"{f' (output shortlist: {len(shortlist)} pieces)' if shortlist is not None else ''}; prompt length "
          f"{args.prompt_length}; batch {args.batch}, src {args.src_len}, tgt {args.tgt_len} tokens; beam 4; "
          f"median of {args.repeats}")
    print("| method | output layer | decode s/sent (beam 4) | train step s | trained params | ckpt bytes/param |")
    print("|---|---|---|---|---|---|")
    result = {"command": cmd, "device": args.device, "dtype": args.dtype, "shape": c.to_dict(), "rows": [],
              "ratios": {}}
    for s in systems:
        model = use(s)[0]
        size, n = checkpoint_bytes_per_param(model, opts[s[0]])
        layer = "full" if s[1] == "full" else f"shortlist {len(shortlist)}"
        print(f"| {s[0]} | {layer} | {med[s][0]:.4f} | {med[s][1]:.4f} | {n:,} | {size / n:.2f} |")
        result["rows"].append({"method": s[0], "output": layer, "decode_s_per_sent": med[s][0],
                               "train_step_s": med[s][1], "trained_params": n, "ckpt_bytes_per_param": size / n})
    for v in vocabs:
        rd, rt = med[("msp", v)][0] / med[("single-stage", v)][0], med[("msp", v)][1] / med[("single-stage", v)][1]
        print(f"| **ratio msp / single-stage** | {v} | **{rd:.3f}** (target <= 1.10) | **{rt:.3f}** "
              f"(target <= 1.3) | | |")
        result["ratios"][f"msp/single-stage ({v})"] = {"decode": rd, "train_step": rt}
    if shortlist is not None:
        for k in kinds:
            sd = med[(k, "full")][0] / med[(k, "shortlist")][0]
            st = med[(k, "full")][1] / med[(k, "shortlist")][1]
            print(f"| **speed-up of the shortlist** | {k} | **{sd:.2f}x** | **{st:.2f}x** | | |")
            result["ratios"][f"shortlist speed-up ({k})"] = {"decode": sd, "train_step": st}
    if args.device.startswith("cuda"):
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"# peak GPU memory: {result['peak_gpu_mib']:.0f} MiB")
    else:
        result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"# peak memory (max RSS of the process, both models): {result['max_rss_mib']:.0f} MiB")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
