#!/usr/bin/env python
"""Deep fusion's decoding speed against Transformer-base for M in {1, 2, 4, 6} (paper Table 7),
and what the partitioned multi-task objective costs per training step. Random weights.

Paper (Table 7; #Speedup relative to Transformer-base, WMT14 En-De, GPU):
    M=1 (N=12 decoder layers) 0.41x, M=2 (N=6) 0.52x, M=4 (N=3) 0.93x, M=6 (N=2) 1.21x.

Systems (built in Python, the same classes fairseq-train builds):
  transformer-base  fairseq's ``TransformerModel``, ``transformer_wmt_en_de`` (6+6 layers,
                    d=512, FFN 2048, 8 heads), decoder input/output embeddings shared;
  fusion-M{m}       our ``deep_fusion`` with ``--plm mbert --plm-random-init`` (12 layers,
                    d=768, 12 heads, FFN 3072, 119,547 pieces), ``--fusion-layers m``: the
                    coordinator and N = 12/m decoder layers of d_dec=768, FFN 3072, 12 heads.
  Both target vocabularies have --tgt-vocab (30,000, the paper's) entries.
  ``--small``: the same structure at half width (mBERT-shaped PTM d=384, 6 heads, FFN 1536;
  fusion decoder d=384; Transformer-base d=256, 4 heads, FFN 1024), for a quick CPU run.

(a) decoding: fairseq's ``SequenceGenerator``, batch size 1, beam 4 (the paper), every
    hypothesis forced to exactly --tgt-len tokens (min_len = max_len_b = --tgt-len,
    max_len_a = 0), so every system runs the same number of decoding steps on the same
    fixed-length random sources (--src-len pieces + </s>). Systems are interleaved sentence by
    sentence (the order rotates); medians over sentences x passes. Speed-up = time of
    transformer-base / time of the system (paired median per sentence; on CPU also the ratio
    of median CPU times of this thread, robust to other jobs on the machine).
(b) training step: forward + backward + Adam step through the ``deep_fusion_loss`` criterion,
    for the same model shape (--train-m, default M=2) and the same batch (--batch sentences of
    --src-len source / --tgt-len target pieces, the target also given in the PTM's vocabulary
    for TSP), with all tasks (L_T + L_TWP + L_TSP + L_MLM, partitioned: the PTM is trained by
    the intermediate tasks) versus translation only (``--no-twp --no-tsp --no-mlm``: nothing
    trains the PTM, it is frozen). Alternating, medians.

    OMP_NUM_THREADS=1 python benchmarks/bench_fusion.py --small            # a few min on CPU
    OMP_NUM_THREADS=1 python benchmarks/bench_fusion.py                    # true mBERT sizes
    python benchmarks/bench_fusion.py --device cuda --batch 64             # on a GPU
"""

import argparse
import contextlib
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fairseq_plm  # noqa: E402,F401
from fairseq.data import Dictionary  # noqa: E402
from fairseq.models.transformer import TransformerModel  # noqa: E402
from fairseq.models.transformer.transformer_legacy import transformer_wmt_en_de  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402
from fairseq_plm.criterions.fusion_loss import DeepFusionLoss  # noqa: E402
from fairseq_plm.models.fusion import DeepFusionModel  # noqa: E402
from fairseq_plm.plm.config import preset  # noqa: E402
from fairseq_plm.plm.vocab import PLMDictionary  # noqa: E402

SMALL = dict(ptm=dict(hidden_size=384, num_heads=6, intermediate_size=1536),
             dec=dict(decoder_embed_dim=384, decoder_ffn_embed_dim=1536, decoder_attention_heads=6),
             base=dict(encoder_embed_dim=256, decoder_embed_dim=256, encoder_ffn_embed_dim=1024,
                       decoder_ffn_embed_dim=1024, encoder_attention_heads=4, decoder_attention_heads=4))
# --tiny: a dry run of the script (CI, gpu_check.sh --device cpu), not a measurement
TINY = dict(ptm=dict(hidden_size=64, num_heads=4, intermediate_size=128, num_layers=2, vocab_size=21000),
            dec=dict(decoder_embed_dim=64, decoder_ffn_embed_dim=128, decoder_attention_heads=4),
            base=dict(encoder_embed_dim=64, decoder_embed_dim=64, encoder_ffn_embed_dim=128,
                      decoder_ffn_embed_dim=128, encoder_attention_heads=4, decoder_attention_heads=4,
                      encoder_layers=2, decoder_layers=2))


def sizes(args):
    return TINY if getattr(args, "tiny", False) else SMALL


def ptm(args):
    """--plm value: the mbert preset, or (--small) a HF-format config.json of a half-width mBERT."""
    c = preset("mbert")
    if not (args.small or getattr(args, "tiny", False)):
        return "mbert", c
    c = c.replace(**sizes(args)["ptm"])
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "bert", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
                   "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
                   "intermediate_size": c.intermediate_size, "max_position_embeddings": c.max_positions,
                   "type_vocab_size": 2, "pad_token_id": 0, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}, f)
    return d, c


def mbert_dictionary(size):
    """mBERT's layout: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103."""
    symbols = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    symbols += [f"w{i}" for i in range(len(symbols), size)]
    return PLMDictionary(symbols, pad=0, eos=102, unk=100, bos=101, mask=103, kind="wordpiece")


def nmt_dictionary(size):
    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(f"t{i}")
    return d


def task_of(src, tgt):
    return SimpleNamespace(source_dictionary=src, target_dictionary=tgt,
                           cfg=SimpleNamespace(source_lang="en", target_lang="de", data="(benchmark)"))


def build_fusion(m, plm, task, args, **flags):
    ns = Namespace(plm=plm, plm_random_init=True, plm_seed=1, plm_dropout=False, fusion_layers=m,
                   max_source_positions=1024, max_target_positions=1024, **flags)
    if args.small or getattr(args, "tiny", False):
        for k, v in sizes(args)["dec"].items():
            setattr(ns, k, v)
    torch.manual_seed(0)
    return DeepFusionModel.build_model(ns, task).to(args.device)


def build_base(task, args):
    ns = Namespace(max_source_positions=1024, max_target_positions=1024, share_decoder_input_output_embed=True,
                   **(sizes(args)["base"] if args.small or getattr(args, "tiny", False) else {}))
    transformer_wmt_en_de(ns)
    torch.manual_seed(0)
    return TransformerModel.build_model(ns, task).to(args.device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


AUTOCAST = None  # --dtype: the forward context (bench_common.autocast)


def forward_context():
    return AUTOCAST() if AUTOCAST else contextlib.nullcontext()


def timed_generate(gen, model, sample, device):
    sync(device)
    t, c = time.perf_counter(), time.thread_time()
    with torch.no_grad(), forward_context():
        hyps = gen.generate([model], sample)
    sync(device)
    return time.perf_counter() - t, time.thread_time() - c, hyps[0][0]


def net_input(x, eos, device):
    src = torch.cat([x, x.new_tensor([eos])])[None].to(device)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([src.size(1)], device=device)}}


def decoding(args, plm, src_fusion, src_base, tgt):
    fusion_task, base_task = task_of(src_fusion, tgt), task_of(src_base, tgt)
    models = {"transformer-base": (build_base(base_task, args).eval(), src_base)}
    for m in args.m:
        models[f"fusion-M{m}"] = (build_fusion(m, plm, fusion_task, args).eval(), src_fusion)
    gens = {n: SequenceGenerator([mod], tgt, beam_size=args.beam, max_len_a=0, max_len_b=args.tgt_len,
                                 min_len=args.tgt_len) for n, (mod, _) in models.items()}
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(200, 20000, (args.src_len,), generator=g) for _ in range(args.sentences)]
    names = list(models)

    def sample_for(name, x):  # the same content ids, each model's own </s>
        return net_input(x, models[name][1].eos(), args.device)

    for n in names:  # warm-up
        timed_generate(gens[n], models[n][0], sample_for(n, rows[0]), args.device)
    wall, cpu, out_len = ({n: [] for n in names} for _ in range(3))
    turn = 0
    for _ in range(args.repeats):
        for x in rows:
            for n in names[turn % len(names):] + names[:turn % len(names)]:
                dt, dc, hyp = timed_generate(gens[n], models[n][0], sample_for(n, x), args.device)
                wall[n].append(dt)
                cpu[n].append(dc)
                out_len[n].append(len(hyp["tokens"]) - 1)  # without </s>
            turn += 1
    params = {n: sum(p.numel() for p in models[n][0].parameters()) for n in names}
    dec_layers = {n: len(models[n][0].decoder.layers) for n in names}
    return names, wall, cpu, out_len, params, dec_layers


def training_sample(args, src_fusion, tgt):
    """One training batch: --batch sentences of --src-len / --tgt-len pieces, the target also
    in the PTM's vocabulary (TSP)."""
    g = torch.Generator().manual_seed(1)
    b = args.batch
    src = torch.cat([torch.randint(200, 20000, (b, args.src_len), generator=g),
                     torch.full((b, 1), src_fusion.eos())], dim=1)
    tgt_tokens = torch.cat([torch.randint(tgt.nspecial, len(tgt), (b, args.tgt_len), generator=g),
                            torch.full((b, 1), tgt.eos())], dim=1)
    prev = torch.cat([torch.full((b, 1), tgt.eos()), tgt_tokens[:, :-1]], dim=1)
    ptm_target = torch.randint(200, 20000, (b, args.tgt_len), generator=g)
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.full((b,), args.src_len + 1),
                            "prev_output_tokens": prev},
              "target": tgt_tokens, "ptm_target": ptm_target, "ntokens": b * (args.tgt_len + 1), "nsentences": b}
    return {k: ({kk: vv.to(args.device) for kk, vv in v.items()} if isinstance(v, dict) else
                v.to(args.device) if torch.is_tensor(v) else v) for k, v in sample.items()}


def training_step_fn(args, plm, src_fusion, tgt, **flags):
    """A zero-argument training step (criterion forward, backward, Adam) of deep fusion with
    --train-m and ``flags`` (e.g. no_twp=True), and the model (for the profiler)."""
    task = task_of(src_fusion, tgt)
    sample = training_sample(args, src_fusion, tgt)
    crit = DeepFusionLoss(task, label_smoothing=0.1)
    model = build_fusion(args.train_m, plm, task, args, **flags).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        with forward_context():
            loss, _, _ = crit(model, sample)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, model


def training(args, plm, src_fusion, tgt):
    task = task_of(src_fusion, tgt)
    variants = {"all tasks (L_T+L_TWP+L_TSP+L_MLM)": {},
                "translation only (--no-twp --no-tsp --no-mlm)": dict(no_twp=True, no_tsp=True, no_mlm=True)}
    sample = training_sample(args, src_fusion, tgt)
    crit = DeepFusionLoss(task, label_smoothing=0.1)
    runs = {}
    for name, flags in variants.items():
        model = build_fusion(args.train_m, plm, task, args, **flags).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        runs[name] = (model, torch.optim.Adam(trainable, lr=1e-4), sum(p.numel() for p in trainable))

    def step(name):
        model, opt, _ = runs[name]
        sync(args.device)
        t, c = time.perf_counter(), time.thread_time()
        with forward_context():
            loss, _, log = crit(model, sample)
        opt.zero_grad()
        loss.backward()
        sync(args.device)
        c_opt = time.thread_time()
        opt.step()
        sync(args.device)
        c_end = time.thread_time()
        return time.perf_counter() - t, c_end - c, log, c_end - c_opt

    names = list(variants)
    logs = {n: step(n)[2] for n in names}  # warm-up
    wall, cpu, adam = ({n: [] for n in names} for _ in range(3))
    for r in range(args.train_repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            dt, dc, _, da = step(n)
            wall[n].append(dt)
            cpu[n].append(dc)
            adam[n].append(da)
    return names, wall, cpu, adam, {n: runs[n][2] for n in names}, logs


def main(argv=None):
    global AUTOCAST
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="half-width shapes (same depth and structure)")
    p.add_argument("--tiny", action="store_true", help="a dry run at toy shapes (not a measurement)")
    p.add_argument("--m", type=int, nargs="+", default=[1, 2, 4, 6], help="fusion layers per part M")
    p.add_argument("--tgt-vocab", type=int, default=30000)
    p.add_argument("--sentences", type=int, default=8)
    p.add_argument("--src-len", type=int, default=20)
    p.add_argument("--tgt-len", type=int, default=20)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="decoding passes over the sentences")
    p.add_argument("--batch", type=int, default=16, help="training-step batch (sentences)")
    p.add_argument("--train-m", type=int, default=2)
    p.add_argument("--train-repeats", type=int, default=6)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="every forward under torch.autocast in this dtype (the PTM is trained: weights stay fp32)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.dtype != "float32":
        AUTOCAST = lambda: torch.autocast(args.device.split(":")[0], dtype=getattr(torch, args.dtype))  # noqa: E731
    torch.set_num_threads(args.threads)
    result = {"command": " ".join(shlex.quote(a) for a in (sys.argv if argv is None else ["bench_fusion.py", *argv])),
              "device": args.device, "dtype": args.dtype, "decoding": [], "training": []}
    on_cpu = not args.device.startswith("cuda")
    plm, c = ptm(args)
    src_fusion, tgt = mbert_dictionary(c.vocab_size), nmt_dictionary(args.tgt_vocab)
    src_base = nmt_dictionary(args.tgt_vocab)
    omp = os.environ.get("OMP_NUM_THREADS")
    print(f"# {'OMP_NUM_THREADS=' + omp + ' ' if omp else ''}python {result['command']}")
    reduced = args.small or args.tiny
    dec = sizes(args)["dec"]["decoder_embed_dim"] if reduced else 768
    base = sizes(args)["base"]["encoder_embed_dim"] if reduced else 512
    print(f"# torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, {args.dtype}; PTM "
          f"{'tiny (dry run)' if args.tiny else 'mBERT-shaped, half width' if args.small else 'mBERT (preset)'}: "
          f"{c.num_layers} layers, "
          f"d={c.hidden_size}, {c.num_heads} heads, FFN {c.intermediate_size}, vocab {c.vocab_size}; fusion "
          f"decoder d={dec}; Transformer-base d={base}; target vocab {args.tgt_vocab}; random weights")

    if not args.skip_decode:
        names, wall, cpu, out_len, params, layers = decoding(args, plm, src_fusion, src_base, tgt)
        ref = "transformer-base"

        def med(t, n):
            return statistics.median(t[n]) * 1000

        print(f"\n## (a) decoding, batch 1, beam {args.beam}, {args.sentences} sentences x {args.repeats} passes, "
              f"src {args.src_len} pieces + </s>, exactly {args.tgt_len} target tokens")
        print("| system | decoder layers | params | output tokens (mean) | wall ms/sent | CPU ms/sent "
              "| speed-up vs Transformer-base (wall, paired median) | speed-up (CPU time) | paper (Table 7) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        paper = {1: "0.41x", 2: "0.52x", 3: "-", 4: "0.93x", 6: "1.21x"}
        for n in names:
            sp = statistics.median(b / a for a, b in zip(wall[n], wall[ref]))
            spc = f"{med(cpu, ref) / med(cpu, n):.2f}x" if on_cpu else "-"
            pp = "1.00x" if n == ref else paper.get(int(n.split("M")[1]), "-")
            print(f"| {n} | {layers[n]} | {params[n] / 1e6:.1f}M | {statistics.mean(out_len[n]):.1f} | "
                  f"{med(wall, n):.1f} | {med(cpu, n) if on_cpu else float('nan'):.1f} | {sp:.2f}x | {spc} | {pp} |")
            result["decoding"].append({"system": n, "decoder_layers": layers[n], "params": params[n],
                                       "wall_ms": med(wall, n), "speedup_vs_transformer_base": sp})

    if not args.skip_train:
        names, wall, cpu, adam, trained, logs = training(args, plm, src_fusion, tgt)
        print(f"\n## (b) training step (forward + backward + Adam), deep fusion M={args.train_m}, batch "
              f"{args.batch} sentences, src {args.src_len}+1 / tgt {args.tgt_len}+1 pieces, "
              f"{args.train_repeats} steps each, alternating, medians")
        print("| objective | trained params | wall ms/step | CPU ms/step | of which Adam step (CPU ms) "
              "| relative (wall) | relative (CPU) | terms logged |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        ref = names[1]
        for n in names:
            terms = ", ".join(k for k in logs[n] if k.endswith("-loss"))
            w, cc = statistics.median(wall[n]) * 1000, statistics.median(cpu[n]) * 1000
            rw = w / (statistics.median(wall[ref]) * 1000)
            rc = f"{cc / (statistics.median(cpu[ref]) * 1000):.2f}x" if on_cpu else "-"
            da = f"{statistics.median(adam[n]) * 1000:.0f}" if on_cpu else "-"
            print(f"| {n} | {trained[n] / 1e6:.1f}M | {w:.0f} | {cc if on_cpu else float('nan'):.0f} | {da} | {rw:.2f}x | "
                  f"{rc} | {terms} |")
            result["training"].append({"objective": n, "trained_params": trained[n], "wall_ms": w,
                                       "relative_wall": rw})
    if args.device.startswith("cuda"):
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"# peak GPU memory: {result['peak_gpu_mib']:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
