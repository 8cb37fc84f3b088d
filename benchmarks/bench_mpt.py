#!/usr/bin/env python
"""MPT training step time relative to SP (soft prompting) on the same backbone.

One training step = forward, loss (``mpt_loss``), backward and an AdamW update of everything
trainable (the PLM is tuned, the paper's setting; ``--freeze-plm`` for prompt-only training):

  SP    b task rows, p^S only, L = L_CE                                 (--translator none)
  MPT   b task rows + b parallel sources (p^S) + b translations (p^T)   (Linear-2 translator)
        in one PLM batch, L = 0.5 L_CE + 0.5 L_KLD over the full vocabulary (Eq. 8)

Inputs are random token ids with cloze templates (``ClozeTemplate`` layout, suffix prompt of
length 4) of lengths drawn uniformly from [--min-len, --max-len] (XNLI pairs and PAWS-X
pairs are a few dozen XLM-R tokens). Weights are random, shapes are XLM-R base's
(250,002-word vocabulary) unless --preset says otherwise. The two methods alternate step by
step in one process; medians are reported.

    OMP_NUM_THREADS=1 python benchmarks/bench_mpt.py                       # XLM-R base, CPU
    python benchmarks/bench_mpt.py --device cuda --steps 20
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
from fairseq_plm.criterions.mpt_loss import MPTLoss  # noqa: E402
from fairseq_plm.models.mpt import MPTModel  # noqa: E402
from fairseq_plm.plm.bert import BertEncoder  # noqa: E402
from fairseq_plm.plm.config import preset  # noqa: E402
from fairseq_plm.plm.vocab import PLMDictionary  # noqa: E402


class _Task:
    def __init__(self, dictionary):
        self.target_dictionary = dictionary


def cloze_batch(gen, n, args, vocab, target_lang):
    """n rows '<s> X_P . X_H ? [p] <mask> . </s>' of random words: (net_input rows)."""
    rows, starts = [], []
    for _ in range(n):
        t = int(torch.randint(args.min_len, args.max_len + 1, (1,), generator=gen))
        words = torch.randint(10, vocab - 1, (t,), generator=gen).tolist()
        half = t // 2
        ids = [0] + words[:half] + [5] + words[half:] + [32]
        starts.append(len(ids))
        ids += [3] * args.prompt_length + [vocab - 1, 5, 2]
        rows.append(torch.tensor(ids))
    return rows, starts, [target_lang] * n


def sample(gen, args, vocab, with_parallel):
    parts = [cloze_batch(gen, args.batch_size, args, vocab, False)]
    if with_parallel:
        parts += [cloze_batch(gen, args.batch_size, args, vocab, False),
                  cloze_batch(gen, args.batch_size, args, vocab, True)]
    rows = [r for p in parts for r in p[0]]
    tokens = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=1)
    net = {"src_tokens": tokens, "prompt_start": torch.tensor([s for p in parts for s in p[1]]),
           "target_lang": torch.tensor([f for p in parts for f in p[2]])}
    out = {"net_input": net, "target": torch.randint(0, 3, (args.batch_size,), generator=gen),
           "ntokens": int(tokens.ne(1).sum())}
    if with_parallel:
        out["n_task"] = args.batch_size
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="xlmr-base")
    p.add_argument("--layers", type=int, help="override the preset's layers (quick checks)")
    p.add_argument("--batch-size", type=int, default=24, help="task examples per step (§IV-B: 24)")
    p.add_argument("--min-len", type=int, default=24)
    p.add_argument("--max-len", type=int, default=56)
    p.add_argument("--prompt-length", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="timed steps per method (after one warm-up)")
    p.add_argument("--freeze-plm", action="store_true")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = preset(args.preset, **({"num_layers": args.layers} if args.layers else {}))
    plm = BertEncoder(cfg).init_random(1).to(args.device)
    vocab = cfg.vocab_size
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, vocab - 1)] + ["<mask>"]
    task = _Task(PLMDictionary(symbols, pad=1, eos=2, unk=3, bos=0, mask=vocab - 1))
    label_words = [[100], [200], [300]]
    if args.freeze_plm:
        plm.requires_grad_(False)
    systems = {}
    for name, translator, alpha in (("SP", "none", 1.0), ("MPT", "linear-2", 0.5)):
        model = MPTModel(plm, args.prompt_length, translator, label_words, vocab - 1, 1).to(args.device).train()
        systems[name] = (model, MPTLoss(task, alpha=alpha), name == "MPT")
    # one AdamW over both models (they share the PLM): a parameter without a gradient in a step
    # (the other method's prompt) is skipped, so each step updates exactly what it trained
    params = list({id(q): q for m, _, _ in systems.values() for q in m.parameters() if q.requires_grad}.values())
    opt = torch.optim.AdamW(params, lr=4e-5)

    gen = torch.Generator().manual_seed(0)
    times = {name: [] for name in systems}
    for step in range(args.steps + 1):
        for name, (model, criterion, parallel) in systems.items():
            s = sample(gen, args, vocab, parallel)
            s = {k: ({kk: vv.to(args.device) for kk, vv in v.items()} if isinstance(v, dict)
                     else v.to(args.device) if torch.is_tensor(v) else v) for k, v in s.items()}
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss, _, _ = criterion(model, s)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if step > 0:
                times[name].append(time.perf_counter() - t0)
    sp, mpt = statistics.median(times["SP"]), statistics.median(times["MPT"])
    print("command: " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"backbone {args.preset} ({cfg.num_layers} layers, d={cfg.hidden_size}, vocab {vocab}), "
          f"PLM {'frozen' if args.freeze_plm else 'tuned'}, batch {args.batch_size}, "
          f"lengths {args.min_len}-{args.max_len}+{args.prompt_length + 7}, device {args.device}, "
          f"threads {torch.get_num_threads()}, {args.steps} timed steps each")
    print("| method | rows per step | step time (median) | relative to SP |")
    print("|---|---|---|---|")
    print(f"| SP  | {args.batch_size} | {sp * 1000:.0f} ms | 1.00x |")
    print(f"| MPT | {3 * args.batch_size} | {mpt * 1000:.0f} ms | {mpt / sp:.2f}x |")


if __name__ == "__main__":
    main()
