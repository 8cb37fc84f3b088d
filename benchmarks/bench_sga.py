#!/usr/bin/env python
"""SGA (non-autoregressive, frozen XLM-R-layout encoder) versus MSP (autoregressive, frozen GPT)
decoding speed at batch size 1, and what SGA's denoising costs. Both backbones have the same
shape (layers, width, heads, FFN, vocabulary) and both methods use prompts of length 128;
weights are random.

SGA paper (Wu et al. 2023) Table 1 "Speed" (time per test sentence, batch size 1, relative to
a Transformer): SGA 3.0x, SGA w/o denoising 6.8x, MSP 0.2x. Targets here:
  * SGA at least 5x faster than MSP with beam 4 (the paper: 3.0 / 0.2 = 15x);
  * SGA with denoising about 2.3x slower than without (the paper: 6.8 / 3.0).

Systems, each decoding one sentence at a time (batch size 1):
  msp-beam4        encoding + re-encoding stage, then the decoding stage with fairseq's
                   SequenceGenerator, beam 4, default length penalty (1.0), every hypothesis
                   forced to exactly --tgt-len tokens (min_len = max_len_b = --tgt-len,
                   max_len_a = 0): a random-weight AT model never stops at a natural length.
  sga-fixed-K      fairseq's IterativeRefinementGenerator(max_iter=K, adaptive=False): semantic
                   encoding, CTC alignment over 2|x| slots, exactly K denoising loops
                   (--denoise-loops). The headline: it does not depend on whether random
                   weights happen to reach a fixed point.
  sga-adaptive     IterativeRefinementGenerator(max_iter=--max-iter, adaptive=True), as
                   fairseq-generate runs it: stops when a loop no longer changes the output
                   (the loops actually run are reported).
  sga-no-denoise   the same model with max_iter=0: semantic encoding + CTC alignment only.

SGA's cost does not depend on the output length: every unit runs over the canvas, whose
length is fixed by the source (--upsample-ratio x |x|, 2 x 20 = 40 slots by default).

Implementations are interleaved sentence by sentence (the order rotates), medians reported.

    OMP_NUM_THREADS=1 python benchmarks/bench_sga.py                  # ~2 min on CPU, 1 thread
    OMP_NUM_THREADS=1 python benchmarks/bench_sga.py --preset xlmr-base --sentences 2 --repeats 1 \
        --output-shortlist 30000                                      # + rows with an output shortlist
    python benchmarks/bench_sga.py --preset xlmr-base --device cuda    # true XLM-R base shapes
    python benchmarks/bench_sga.py --preset xlmr-large --device cuda   # = mGPT's shape for the GPT
"""

import argparse
import os
import shlex
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fairseq_plm  # noqa: E402,F401
from fairseq.iterative_refinement_generator import IterativeRefinementGenerator  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402
from fairseq_plm.models.msp import MSPConfig, MSPModel, PrefixConditionedDecoder  # noqa: E402
from fairseq_plm.models.sga import SGAConfig, SGAModel  # noqa: E402
from fairseq_plm.plm.bert import BertEncoder  # noqa: E402
from fairseq_plm.plm.config import preset  # noqa: E402
from fairseq_plm.plm.frozen import fingerprint  # noqa: E402
from fairseq_plm.plm.gpt import GPT  # noqa: E402
from fairseq_plm.plm.vocab import PLMDictionary  # noqa: E402
from bench_common import add_common_args, autocast, prepare_plm, random_shortlist, sync, write_json  # noqa: E402


def shapes(args):
    """(XLM-R-layout config for SGA, GPT config for MSP) with the same layers, width, heads,
    FFN and vocabulary."""
    if args.preset:
        enc = preset(args.preset)
    else:
        enc = preset("xlmr-base", num_layers=args.layers, hidden_size=args.hidden, num_heads=args.heads,
                     intermediate_size=4 * args.hidden, vocab_size=args.vocab)
    gpt = preset("mgpt", num_layers=enc.num_layers, hidden_size=enc.hidden_size, num_heads=enc.num_heads,
                 intermediate_size=enc.intermediate_size, vocab_size=enc.vocab_size)
    return enc, gpt


def build_sga(c, args):
    v = c.vocab_size  # XLM-R layout: <s> <pad> </s> <unk> ... <mask>
    d = PLMDictionary(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, v - 1)] + ["<mask>"],
                      pad=1, eos=2, unk=3, bos=0, mask=v - 1, kind="xlmr")
    plm = BertEncoder(c).init_random(1).freeze()
    plm.fingerprint = fingerprint(plm)
    prepare_plm(plm, args)
    torch.manual_seed(0)
    model = SGAModel.from_plm(SGAConfig(plm="(benchmark)", prompt_length=args.prompt_length), plm, d)
    return model.to(args.device).eval(), d


def build_msp(c, args):
    v = c.vocab_size  # mT5/mGPT layout: <pad> </s> <unk> ...
    d = PLMDictionary(["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(3, v)], pad=0, eos=1, unk=2, bos=1)
    plm = GPT(c).init_random(1).freeze()
    plm.fingerprint = fingerprint(plm)
    prepare_plm(plm, args)
    torch.manual_seed(0)
    cfg = MSPConfig(plm="(benchmark)", prompt_length=args.prompt_length)  # 1 re-encoding stage: 3 stages
    model = MSPModel(MSPModel.build_encoder(cfg, d, plm), PrefixConditionedDecoder(d, plm))
    return model.to(args.device).eval(), d


def sentences(args, vocab):
    """``x </s>`` rows (as the translation task feeds them); content ids 4..V-2 are ordinary
    tokens in both vocabularies. Returns per-sentence (content ids) lists."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(4, vocab - 1, (args.src_len,), generator=g) for _ in range(args.sentences)]


def net_input(x, eos, device):
    src = torch.cat([x, x.new_tensor([eos])])[None].to(device)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([src.size(1)], device=device)}}


def timed(gen, model, sample, device):
    """(wall seconds, CPU seconds of this thread, best hypothesis). With one intra-op thread
    every CPU op runs in this thread, so its CPU time is the compute without the time the
    process waited for a core (robust to other jobs on the machine); on CUDA it is meaningless."""
    sync(device)
    t, c = time.perf_counter(), time.thread_time()
    with torch.no_grad(), autocast(ARGS):
        hyps = gen.generate([model], sample)
    sync(device)
    return time.perf_counter() - t, time.thread_time() - c, hyps[0][0]


ARGS = None


def set_shortlist(model, shortlist):
    """Switch a model's output layer between the full vocabulary (None) and a shortlist."""
    if isinstance(model, SGAModel):
        model.output_shortlist = shortlist
    else:
        model.decoder.output_shortlist = shortlist


def main(argv=None):
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["xlmr-base", "xlmr-large"],
                   help="true XLM-R shapes for both backbones (xlmr-large = mGPT's 24 layers, d=1024, 16 heads)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=16000)
    p.add_argument("--prompt-length", type=int, default=128)
    p.add_argument("--sentences", type=int, default=20)
    p.add_argument("--src-len", type=int, default=20)
    p.add_argument("--tgt-len", type=int, default=20, help="MSP's forced target length")
    p.add_argument("--denoise-loops", type=int, default=2, help="sga-fixed: denoising loops (adaptive=False)")
    p.add_argument("--max-iter", type=int, default=10, help="sga-adaptive: at most this many denoising loops")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5, help="passes over the sentences")
    p.add_argument("--output-shortlist", type=int, default=0, metavar="K",
                   help="also time msp-beam4, sga-fixed-K and sga-no-denoise with an output shortlist of K pieces")
    p.add_argument("--skip-adaptive", action="store_true", help="leave out sga-adaptive (saves time)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    add_common_args(p)
    args = ARGS = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    enc_cfg, gpt_cfg = shapes(args)
    sga, sga_dict = build_sga(enc_cfg, args)
    msp, msp_dict = build_msp(gpt_cfg, args)
    k = args.denoise_loops
    systems = {  # name -> (generator, model, eos of its dictionary, output shortlist or None)
        "msp-beam4": (SequenceGenerator([msp], msp_dict, beam_size=args.beam, max_len_a=0, max_len_b=args.tgt_len,
                                        min_len=args.tgt_len), msp, msp_dict.eos(), None),
        f"sga-fixed-{k}": (IterativeRefinementGenerator(sga_dict, models=[sga], max_iter=k, adaptive=False),
                           sga, sga_dict.eos(), None),
        "sga-adaptive": (IterativeRefinementGenerator(sga_dict, models=[sga], max_iter=args.max_iter), sga,
                         sga_dict.eos(), None),
        "sga-no-denoise": (IterativeRefinementGenerator(sga_dict, models=[sga], max_iter=0), sga, sga_dict.eos(),
                           None),
    }
    if args.skip_adaptive:
        del systems["sga-adaptive"]
    sl = {}
    if args.output_shortlist:
        sl["msp"] = random_shortlist(msp_dict, args.output_shortlist).to(args.device)
        sl["sga"] = random_shortlist(sga_dict, args.output_shortlist, [sga.blank]).to(args.device)
        for name in ("msp-beam4", f"sga-fixed-{k}", "sga-no-denoise"):
            gen, model, eos, _ = systems[name]
            systems[f"{name}+SL"] = (gen, model, eos, sl["msp" if name.startswith("msp") else "sga"])
    names = list(systems)
    rows = sentences(args, enc_cfg.vocab_size)

    def run(name, x):
        gen, model, eos, shortlist = systems[name]
        set_shortlist(model, shortlist)
        return timed(gen, model, net_input(x, eos, args.device), args.device)

    for name in names:  # warm-up
        run(name, rows[0])
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    out_len = {n: [] for n in names}
    loops = {n: [] for n in names}
    turn = 0
    for _ in range(args.repeats):
        for x in rows:
            order = names[turn % len(names):] + names[:turn % len(names)]  # rotate: every system in every slot
            turn += 1
            for name in order:
                dt, dc, hyp = run(name, x)
                wall[name].append(dt)
                cpu[name].append(dc)
                n = len(hyp["tokens"])
                out_len[name].append(n - 1 if name.startswith("msp") else n)  # MSP's hypotheses end in </s>
                loops[name].append(hyp.get("steps", 0))
    on_cpu = not args.device.startswith("cuda")

    def med(t, n):
        return statistics.median(t[n]) * 1000

    def paired(t, a, b):
        """median over (sentence, pass) of a/b: both timed on the same sentence, back to back"""
        return statistics.median(x / y for x, y in zip(t[a], t[b]))

    def ratio(a, b):
        s = f"wall {paired(wall, a, b):.2f}x"
        return s + (f", CPU time {med(cpu, a) / med(cpu, b):.2f}x" if on_cpu else "")

    cmd = " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["bench_sga.py", *argv]))
    omp = os.environ.get("OMP_NUM_THREADS")
    print(f"# {'OMP_NUM_THREADS=' + omp + ' ' if omp else ''}python {cmd}")
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, {args.dtype}"
          f"{', compiled' if args.compile else ''}; backbones "
          f"{enc_cfg.num_layers} layers, d={enc_cfg.hidden_size}, {enc_cfg.num_heads} heads, FFN "
          f"{enc_cfg.intermediate_size}, vocab {enc_cfg.vocab_size} (SGA: XLM-R-layout encoder, MSP: GPT), random "
          f"weights; prompt length {args.prompt_length}; batch size 1; {args.sentences} sentences x "
          f"{args.repeats} passes, src {args.src_len} tokens (+ </s>); MSP: beam {args.beam}, exactly "
          f"{args.tgt_len} target tokens; SGA: CTC canvas {sga.cfg.upsample_ratio * args.src_len} slots; "
          f"medians over sentences x passes" + (f"; +SL: output shortlist of {args.output_shortlist} pieces"
                                                if args.output_shortlist else ""))
    print("| system | forward passes per sentence | denoising loops run (mean) | output tokens (mean) "
          "| wall ms/sentence | CPU ms/sentence | speed-up vs msp-beam4 (wall: paired median; CPU time) |")
    print("|---|---|---|---|---|---|---|")
    passes = {"msp-beam4": f"2 source stages + {args.tgt_len} incremental steps x beam {args.beam}",
              f"sga-fixed-{k}": f"encoding + alignment + {k} denoising (fixed, adaptive=False)",
              "sga-adaptive": f"encoding + alignment + <= {args.max_iter} denoising (adaptive)",
              "sga-no-denoise": "encoding + alignment (max_iter=0)"}
    result = {"command": cmd, "device": args.device, "dtype": args.dtype, "rows": [], "ratios": {}}
    for n in names:
        lp = "-" if n.startswith("msp") else f"{statistics.mean(loops[n]):.2f}"
        c = f"{med(cpu, n):.2f}" if on_cpu else "-"
        base = "msp-beam4+SL" if n.endswith("+SL") else "msp-beam4"
        print(f"| {n} | {passes[n.replace('+SL', '')]} | {lp} | {statistics.mean(out_len[n]):.1f} | "
              f"{med(wall, n):.2f} | {c} | {ratio(base, n)} |")
        result["rows"].append({"system": n, "wall_ms": med(wall, n), "cpu_ms": med(cpu, n) if on_cpu else None,
                               "speedup_vs_msp_wall": paired(wall, base, n)})
    print(f"| **SGA ({k} denoising loops) vs MSP beam {args.beam}: speed-up** | | | | | | "
          f"**{ratio('msp-beam4', f'sga-fixed-{k}')}** (target >= 5x; paper 3.0/0.2 = 15x) |")
    result["ratios"]["sga/msp speed-up (full)"] = paired(wall, "msp-beam4", f"sga-fixed-{k}")
    if args.output_shortlist:
        print(f"| **SGA ({k} loops) vs MSP beam {args.beam}, both with the shortlist: speed-up** | | | | | | "
              f"**{ratio('msp-beam4+SL', f'sga-fixed-{k}+SL')}** (target >= 5x) |")
        print(f"| **shortlist speed-up: sga-fixed-{k} / sga-fixed-{k}+SL** | | | | | | "
              f"**{ratio(f'sga-fixed-{k}', f'sga-fixed-{k}+SL')}** |")
        print(f"| **shortlist speed-up: msp-beam4 / msp-beam4+SL** | | | | | | "
              f"**{ratio('msp-beam4', 'msp-beam4+SL')}** |")
        result["ratios"]["sga/msp speed-up (shortlist)"] = paired(wall, "msp-beam4+SL", f"sga-fixed-{k}+SL")
        result["ratios"]["shortlist speed-up (sga)"] = paired(wall, f"sga-fixed-{k}", f"sga-fixed-{k}+SL")
        result["ratios"]["shortlist speed-up (msp)"] = paired(wall, "msp-beam4", "msp-beam4+SL")
    print(f"| **denoising cost: sga-fixed-{k} / sga-no-denoise** | | | | | | "
          f"**{ratio(f'sga-fixed-{k}', 'sga-no-denoise')}** slower (paper 6.8/3.0 = 2.27x) |")
    result["ratios"]["denoising cost"] = paired(wall, f"sga-fixed-{k}", "sga-no-denoise")
    if "sga-adaptive" in systems:
        print(f"| **denoising cost: sga-adaptive / sga-no-denoise** | | | | | | "
              f"**{ratio('sga-adaptive', 'sga-no-denoise')}** slower |")
    if args.device.startswith("cuda"):
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"# peak GPU memory: {result['peak_gpu_mib']:.0f} MiB")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
