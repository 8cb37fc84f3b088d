"""Pre-train a tiny multilingual GPT ("tiny mGPT") on the machine's gettext catalogs.

This is the recipe behind ``examples/quickstart/tiny-mgpt``: mGPT's recipe (Tan et al. 2022,
App. A.1: a GPT-2 decoder trained as a causal LM on multilingual text with mT5-style
sentencepiece ids) scaled down to what a CPU trains in about half an hour.

Pre-training text, from ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``:
  * monolingual sentences in English and every listed language;
  * bilingual "documents" (an English message followed by its translation), as web text
    holds them. For German, the language the quickstart evaluates, only the quickstart's
    *training* split is used: its valid and test sentences are never seen in pre-training.

Output: a HuggingFace-format GPT-2 directory (config.json, model.safetensors, spiece.model),
loaded by ``--plm`` like any published checkpoint.

    python -m fairseq_plm.recipes.pretrain_tiny_gpt --out examples/quickstart/tiny-mgpt
"""

import argparse
import math
import os
import random
import tempfile
import time

import sentencepiece as spm
import torch

from ..data.gettext_corpus import read_catalogs, split_pairs
from ..plm.config import PLMConfig
from ..plm.export import save_hf_gpt2
from ..plm.gpt import GPT

LANGS = ["de", "fr", "es", "it", "nl", "sv", "pl", "ru"]


def build_text(langs, eval_lang="de", valid=200, test=200, seed=1):
    mono, docs = set(), []
    for lang in langs:
        try:
            pairs = read_catalogs(lang)
        except FileNotFoundError:
            continue
        if lang == eval_lang:
            pairs = split_pairs(pairs, valid=valid, test=test)["train"]
        for en, tgt in pairs:
            mono.add(en)
            mono.add(tgt)
            docs.append((en, tgt))
    rng = random.Random(seed)
    mono = sorted(mono)
    rng.shuffle(mono)
    rng.shuffle(docs)
    return mono, docs


def train_spm(lines, prefix, vocab_size):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(lines))
    # mT5 id layout: pad 0, eos 1, unk 2, no BOS
    spm.SentencePieceTrainer.train(
        input=f.name, model_prefix=prefix, vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        model_type="unigram", character_coverage=0.9995, input_sentence_size=400000,
        shuffle_input_sentence=True, minloglevel=2)
    os.unlink(f.name)
    os.remove(prefix + ".vocab")
    return prefix + ".model"


def pack(sp, mono, docs, block):
    """Token stream: each sentence / document followed by </s> (id 1), cut into blocks."""
    stream = []
    items = [(m,) for m in mono] + docs
    random.Random(2).shuffle(items)
    for item in items:
        for sentence in item:
            stream.extend(sp.EncodeAsIds(sentence))
            stream.append(1)
    n = len(stream) // block
    return torch.tensor(stream[: n * block]).view(n, block)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--langs", nargs="+", default=LANGS)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--positions", type=int, default=256)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    p.add_argument("--max-steps", type=int, default=100000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--init", help="continue from this previously saved tiny GPT (same recipe); its "
                                   "sentencepiece model is reused")
    p.add_argument("--fp16-weights", action="store_true", help="store weights in fp16 (half the file size)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    mono, docs = build_text(args.langs)
    print(f"[pretrain] {len(mono)} monolingual sentences, {len(docs)} bilingual documents", flush=True)
    if args.init:
        import shutil

        if os.path.abspath(args.init) != os.path.abspath(args.out):
            shutil.copy(os.path.join(args.init, "spiece.model"), os.path.join(args.out, "spiece.model"))
        spm_path = os.path.join(args.out, "spiece.model")
    else:
        spm_path = train_spm(mono + [a + " " + b for a, b in docs[:20000]], os.path.join(args.out, "spiece"),
                             args.vocab_size)
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    data = pack(sp, mono, docs, args.block + 1)
    n_valid = max(1, len(data) // 50)
    valid, train = data[:n_valid], data[n_valid:]
    print(f"[pretrain] {train.numel() / 1e6:.2f}M training tokens in blocks of {args.block}", flush=True)

    cfg = PLMConfig(family="gpt2", vocab_size=sp.GetPieceSize(), hidden_size=args.hidden, num_layers=args.layers,
                    num_heads=args.heads, intermediate_size=4 * args.hidden, max_positions=args.positions,
                    activation="gelu_new", pad_token_id=0, dropout=0.1, attention_dropout=0.1)
    if args.init:
        from ..plm.loading import load_plm

        model = load_plm(args.init).float()
        cfg = model.cfg
    else:
        model = GPT(cfg).init_random(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup, budget = 200, args.minutes * 60
    start, step = time.time(), 0

    def lm_loss(batch):
        out = model(batch[:, :-1])
        return torch.nn.functional.cross_entropy(model.logits(out.hidden).flatten(0, 1), batch[:, 1:].flatten())

    while step < args.max_steps and time.time() - start < budget:
        idx = torch.randint(len(train), (args.batch,))
        frac = min(1.0, (time.time() - start) / budget)
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        loss = lm_loss(train[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            model.eval()
            with torch.no_grad():
                v = sum(lm_loss(valid[i:i + 64]).item() for i in range(0, len(valid), 64)) / math.ceil(len(valid) / 64)
            print(f"[pretrain] step {step} | {time.time() - start:.0f}s | lr {lr:.2e} | train loss {loss.item():.3f} "
                  f"| valid loss {v:.3f} (ppl {math.exp(v):.1f})", flush=True)
    model.eval()
    if args.fp16_weights:
        model.half()
    save_hf_gpt2(model, args.out)
    print(f"[pretrain] saved {cfg.num_layers}-layer d={cfg.hidden_size} GPT after {step} steps to {args.out}")


if __name__ == "__main__":
    main()
