#!/usr/bin/env python
"""Where the time goes: torch.profiler over the package's hot paths, as relative shares.

Cases (random weights; the same builders as the speed benchmarks):
  msp-train     one MSP training step (forward, cross-entropy, backward, Adam), bench_msp's setup
  msp-beam      MSP beam search (fairseq SequenceGenerator, beam 4, forced target length)
  sga-decode    SGA decoding of one sentence (IterativeRefinementGenerator, 2 denoising loops)
  fusion-train  one deep-fusion training step, all four tasks (deep_fusion_loss), M=2

Shapes: ``--shape small`` (6 layers, d=512, 8 heads, vocabulary 16,000; fusion: bench_fusion
--small) or ``--shape true`` (mGPT for MSP, XLM-R base for SGA, mBERT for fusion).

Two tables per case:
  * labelled regions: inclusive CPU time of the package's parts (output layer, attention,
    MLP, mask construction, prompt construction, beam search bookkeeping...) as a share of
    the profiled wall of work (the sum of the top-level events);
  * the top operators by self CPU time, as a share of all self CPU time.
Shares within one profile are informative even on a loaded machine; absolute times are not.

    python benchmarks/profile_hotpaths.py --case all --shape small
    python benchmarks/profile_hotpaths.py --case msp-train --shape true --batch 2 --steps 1
    python benchmarks/profile_hotpaths.py --case sga-decode --shape true --output-shortlist 8000
    python benchmarks/profile_hotpaths.py --case all --shape small --json out.json
"""

import argparse
import functools
import json
import os
import shlex
import sys
from types import SimpleNamespace

import torch
from torch.profiler import ProfilerActivity, profile, record_function

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
# --package-root DIR: profile another checkout's package (e.g. the commit before a change:
# `git archive <commit> fairseq_plm | tar -x -C DIR`) with this script and benchmarks
if "--package-root" in sys.argv:
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--package-root") + 1]))
import fairseq_plm  # noqa: E402,F401
import bench_common  # noqa: E402

CASES = ["msp-train", "msp-beam", "sga-decode", "fusion-train"]


# ------------------------------------------------------------------ labelled regions

def label(obj, attr, name):
    """Wrap obj.attr (a function or method) in a profiler range called ``name``."""
    fn = getattr(obj, attr)
    if getattr(fn, "_profile_label", None):
        return

    @functools.wraps(fn)
    def wrapped(*a, **kw):
        with record_function(name):
            return fn(*a, **kw)

    wrapped._profile_label = name
    setattr(obj, attr, wrapped)


def install_labels():
    """Profiler ranges around the package's parts (monkeypatched here, not in the package)."""
    from fairseq.sequence_generator import SequenceGenerator
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
    from fairseq_plm.models import msp, sga
    from fairseq_plm.plm import bert, gpt, modules, prompts

    label(gpt.GPT, "logits", "output layer (LM head)")
    label(bert.BertEncoder, "logits", "output layer (MLM head)")
    label(modules.SelfAttention, "forward", "attention (qkv, prefix, SDPA, proj)")
    label(modules.MLP, "forward", "MLP")
    for mod in (modules, gpt, bert):  # the families import the mask helpers by name (after the change)
        for fn in ("attention_mask", "additive_mask", "compose_padding_mask"):
            if hasattr(mod, fn):
                label(mod, fn, "mask construction")
    label(prompts.DeepPrompt, "forward", "prompt construction")
    label(msp.StagedPromptEncoder, "forward", "MSP source stages (encoder)")
    label(msp.StagedPromptEncoder, "reorder_encoder_out", "beam: reorder encoder out")
    label(msp.PrefixConditionedDecoder, "reorder_incremental_state", "beam: reorder KV cache")
    label(msp.PrefixConditionedDecoder, "forward", "MSP decoding stage (decoder)")
    label(sga.SGAModel, "unit", "SGA unit (alignment/denoising)")
    label(sga.SemanticEncoder, "forward", "SGA semantic encoding")
    label(SequenceGenerator, "_generate", "beam search total")
    label(torch.optim.Adam, "step", "optimizer step (Adam)")
    label(torch.Tensor, "backward", "backward (total)")
    label(IterativeRefinementGenerator, "generate", "refinement total")
    try:
        from fairseq_plm.models import fusion
        label(fusion.FusionEncoder, "forward", "fusion encoder (PTM + coordinator)")
        label(fusion.FusionEncoder, "target_sentence_prediction", "fusion TSP (PTM over targets + negatives)")
        label(fusion.FusionEncoder, "masked_lm", "fusion MLM (PTM over masked source)")
    except ImportError:
        pass


# ------------------------------------------------------------------ cases

def shape_args(args):
    if args.shape == "tiny":
        return dict(layers=2, hidden=64, heads=4, vocab=2000, prompt_length=8)
    return dict(layers=6, hidden=512, heads=8, vocab=16000, prompt_length=128)


def msp_setup(args):
    import bench_msp

    a = SimpleNamespace(preset="mgpt" if args.shape == "true" else None, **shape_args(args),
                        batch=args.batch or (2 if args.shape == "true" else 8),
                        src_len=args.src_len, tgt_len=args.tgt_len, device=args.device,
                        dtype=args.dtype, compile=args.compile)
    plm, c = bench_msp.plm_dir(a)
    model, d = bench_msp.build("msp", plm, c.vocab_size, a)
    shortlist = bench_common.random_shortlist(d, args.output_shortlist)
    if shortlist is not None:
        model.decoder.output_shortlist = shortlist.to(args.device)
    src, lengths, prev, tgt = bench_msp.batch(a, c.vocab_size, args.device, 0, shortlist)
    return bench_msp, a, model, d, (src, lengths, prev, tgt), c


def case_msp_train(args):
    bench_msp, a, model, d, (src, lengths, prev, tgt), c = msp_setup(args)
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    model.train()

    def step():
        bench_msp.time_train(model, opt, src, lengths, prev, tgt, a)

    return step, f"MSP train step, {c.num_layers} layers d={c.hidden_size} V={c.vocab_size}, batch {a.batch}, " \
                 f"src {a.src_len} tgt {a.tgt_len}, prompt 128"


def case_msp_beam(args):
    bench_msp, a, model, d, (src, lengths, prev, tgt), c = msp_setup(args)
    model.eval()
    n = args.sentences

    def step():
        bench_msp.time_decode(model, d, src[:n], lengths[:n], a)

    return step, f"MSP beam 4, {c.num_layers} layers d={c.hidden_size} V={c.vocab_size}, {n} sentence(s) in a " \
                 f"batch, src {a.src_len}, exactly {a.tgt_len} target tokens, prompt 128"


def case_sga_decode(args):
    import bench_sga
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator

    a = SimpleNamespace(preset="xlmr-base" if args.shape == "true" else None, **shape_args(args),
                        device=args.device, src_len=args.src_len, sentences=1, dtype=args.dtype, compile=args.compile)
    enc_cfg, _ = bench_sga.shapes(a)
    sga, d = bench_sga.build_sga(enc_cfg, a)
    shortlist = bench_common.random_shortlist(d, args.output_shortlist, [sga.blank])
    if shortlist is not None:
        sga.output_shortlist = shortlist.to(args.device)
    gen = IterativeRefinementGenerator(d, models=[sga], max_iter=2, adaptive=False)
    x = bench_sga.sentences(a, enc_cfg.vocab_size)[0]
    sample = bench_sga.net_input(x, d.eos(), args.device)

    def step():
        with torch.no_grad(), bench_common.autocast(a):
            gen.generate([sga], sample)

    return step, f"SGA decode, batch 1, 2 denoising loops, {enc_cfg.num_layers} layers d={enc_cfg.hidden_size} " \
                 f"V={enc_cfg.vocab_size}, src {a.src_len} (canvas {2 * a.src_len}), prompt 128"


def case_fusion_train(args):
    import bench_fusion

    a = SimpleNamespace(small=args.shape == "small", tiny=args.shape == "tiny", device=args.device,
                        batch=args.batch or 8, src_len=args.src_len, tgt_len=args.tgt_len,
                        train_m=1 if args.shape == "tiny" else 2, tgt_vocab=30000)
    plm, c = bench_fusion.ptm(a)
    src_fusion, tgt = bench_fusion.mbert_dictionary(c.vocab_size), bench_fusion.nmt_dictionary(a.tgt_vocab)
    step_fn, _ = bench_fusion.training_step_fn(a, plm, src_fusion, tgt)
    return step_fn, f"deep fusion train step (all four tasks), M={a.train_m}, PTM {c.num_layers} layers d={c.hidden_size} " \
                    f"V={c.vocab_size}, batch {a.batch}, src {a.src_len} tgt {a.tgt_len}"


BUILDERS = {"msp-train": case_msp_train, "msp-beam": case_msp_beam, "sga-decode": case_sga_decode,
            "fusion-train": case_fusion_train}


# ------------------------------------------------------------------ report

def summarize(prof, top):
    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events) or 1
    labels = {}
    for e in events:
        if e.key in LABEL_NAMES:
            labels[e.key] = e.cpu_time_total
    ops = sorted((e for e in events if e.key not in LABEL_NAMES), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "total_self_cpu_us": total_self,
        "regions": {k: v / total_self for k, v in sorted(labels.items(), key=lambda kv: -kv[1])},
        "ops": [{"op": e.key, "share": e.self_cpu_time_total / total_self, "calls": e.count} for e in ops[:top]],
    }


LABEL_NAMES = set()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="all", help=f"all, or a comma list of: {', '.join(CASES)}")
    p.add_argument("--shape", choices=["tiny", "small", "true"], default="small",
                   help="tiny: a dry run of the script (2 layers, d=64), not a profile worth reading")
    p.add_argument("--batch", type=int, default=None, help="training batch (default: 8 small, 2 true)")
    p.add_argument("--sentences", type=int, default=1, help="msp-beam: sentences per generate call")
    p.add_argument("--src-len", type=int, default=16)
    p.add_argument("--tgt-len", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="profiled repetitions (after one warm-up)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--output-shortlist", type=int, default=0,
                   help="MSP/SGA: score only this many output pieces (0: the full vocabulary)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--package-root", help="import fairseq_plm from this directory (read before anything else)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    install_labels()
    import fairseq_plm.plm.modules as _m  # noqa: F401
    global LABEL_NAMES
    LABEL_NAMES = {"output layer (LM head)", "output layer (MLM head)", "attention (qkv, prefix, SDPA, proj)", "MLP",
                   "mask construction", "prompt construction", "MSP source stages (encoder)",
                   "beam: reorder encoder out", "beam: reorder KV cache", "MSP decoding stage (decoder)",
                   "SGA unit (alignment/denoising)", "SGA semantic encoding", "beam search total",
                   "refinement total", "fusion encoder (PTM + coordinator)",
                   "fusion TSP (PTM over targets + negatives)", "fusion MLM (PTM over masked source)",
                   "optimizer step (Adam)", "backward (total)"}
    cases = CASES if args.case == "all" else args.case.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"--case {args.case}: unknown {', '.join(unknown)} (choose from {', '.join(CASES)})")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    results = {}
    print(f"# python {os.path.relpath(__file__)} " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}; package "
          f"{os.path.dirname(os.path.dirname(os.path.abspath(fairseq_plm.__file__)))}; profile under load, "
          f"relative shares only")
    for name in cases:
        torch.manual_seed(0)
        step, what = BUILDERS[name](args)
        step()  # warm-up
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
        s = summarize(prof, args.top)
        s["what"] = what
        results[name] = s
        print(f"\n## {name}: {what}; {args.steps} profiled step(s)")
        print("| labelled region (inclusive) | share of self CPU time |")
        print("|---|---:|")
        for k, v in s["regions"].items():
            print(f"| {k} | {100 * v:.1f}% |")
        print("\n| operator (self CPU time) | share | calls |")
        print("|---|---:|---:|")
        for o in s["ops"]:
            print(f"| `{o['op']}` | {100 * o['share']:.1f}% | {o['calls']} |")
        del step
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": argv or sys.argv[1:], "torch": torch.__version__, "device": args.device,
                       "note": "profile under load, relative shares only", "cases": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
