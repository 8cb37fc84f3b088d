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

import math
import os
import random

import sentencepiece as spm
import torch

from ..plm.config import PLMConfig
from ..plm.export import save_hf_gpt2
from ..plm.gpt import GPT
from .pretrain_common import add_training_args, build_text, initial_model, parser, save, tokenizer_for, \
    train_for_budget


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
    p = parser(__doc__, positions=256)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    add_training_args(p, "tiny GPT", lr=2e-3)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    mono, docs = build_text(args.langs)
    print(f"[pretrain] {len(mono)} monolingual sentences, {len(docs)} bilingual documents", flush=True)
    sp = spm.SentencePieceProcessor(model_file=tokenizer_for(args, mono, docs, "spiece.model", "t5"))
    data = pack(sp, mono, docs, args.block + 1)
    n_valid = max(1, len(data) // 50)
    valid, train = data[:n_valid], data[n_valid:]
    print(f"[pretrain] {train.numel() / 1e6:.2f}M training tokens in blocks of {args.block}", flush=True)

    cfg = PLMConfig(family="gpt2", vocab_size=sp.GetPieceSize(), hidden_size=args.hidden, num_layers=args.layers,
                    num_heads=args.heads, intermediate_size=4 * args.hidden, max_positions=args.positions,
                    activation="gelu_new", pad_token_id=0, dropout=0.1, attention_dropout=0.1)
    model = initial_model(args, lambda: GPT(cfg))
    cfg = model.cfg

    def lm_loss(batch):
        out = model(batch[:, :-1])
        return torch.nn.functional.cross_entropy(model.logits(out.hidden).flatten(0, 1), batch[:, 1:].flatten())

    def evaluate():
        v = sum(lm_loss(valid[i:i + 64]).item() for i in range(0, len(valid), 64)) / math.ceil(len(valid) / 64)
        return f"valid loss {v:.3f} (ppl {math.exp(v):.1f})"

    step = train_for_budget(model, args, lambda: train[torch.randint(len(train), (args.batch,))], lm_loss, evaluate)
    save(model, args, save_hf_gpt2)
    print(f"[pretrain] saved {cfg.num_layers}-layer d={cfg.hidden_size} GPT after {step} steps to {args.out}")


if __name__ == "__main__":
    main()
