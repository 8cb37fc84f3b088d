"""Pre-train a tiny multilingual GPT ("tiny mGPT") on the machine's gettext catalogs.

This is the recipe behind ``examples/plms/tiny-mgpt``: mGPT's recipe (Tan et al. 2022,
App. A.1: a GPT-2 decoder trained as a causal LM on multilingual text with mT5-style
sentencepiece ids) scaled down to what a few CPU hours train.

Pre-training text, from ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo`` (``pretrain_common``):
  * monolingual sentences in English and every listed language;
  * bilingual "documents" (an English message followed by its translation), as web text
    holds them;
  * no evaluation sentence of any recipe of this package, nor any translation of one
    (``pretrain_common.held_out_sentences``).
Each sentence / document is followed by </s> (id 1); the stream is cut into blocks.

Default languages: German, which the quickstart evaluates (up-sampled 4x), and the other
Latin-script Western European languages with the most catalog text (Dutch, Danish, Swedish,
French, Spanish, Italian, Portuguese); vocabulary 8,000 pieces.

Output: a HuggingFace-format GPT-2 directory (config.json, model.safetensors, spiece.model,
pretrain.json with the run's compute and validation history), loaded by ``--plm`` like any
published checkpoint; ``checkpoint.pt`` to resume (see ``pretrain_common``).

    python -m fairseq_plm.recipes.pretrain_tiny_gpt --out examples/plms/tiny-mgpt --minutes 240 --fp16-weights
"""

import math
import random

import sentencepiece as spm
import torch

from ..data.gettext_corpus import read_catalogs, split_pairs
from ..plm.config import PLMConfig
from ..plm.export import save_hf_gpt2
from ..plm.gpt import GPT
from .pretrain_common import BudgetTrainer, add_training_args, initial_model, log, parser, start, \
    tokenizer_for

LANGS = ["de", "nl", "da", "sv", "fr", "es", "it", "pt"]


def pack(sp, mono, docs, block, seed=2):
    """Token stream: each sentence / document followed by </s> (id 1), cut into blocks."""
    items = [(m,) for m in mono] + docs
    random.Random(seed).shuffle(items)
    flat = [s for item in items for s in item]
    ids = sp.Encode(flat)
    stream, j = [], 0
    for item in items:
        for _ in item:
            stream.extend(ids[j])
            stream.append(1)
            j += 1
    n = len(stream) // block
    return torch.tensor(stream[: n * block]).view(n, block)


def main(argv=None):
    p = parser(__doc__, positions=256, langs=LANGS, vocab_size=8000, layers=6, hidden=256, heads=4)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    add_training_args(p, "tiny GPT", lr=1e-3)
    p.set_defaults(weights={"de": 4})
    args = p.parse_args(argv)
    text = start(args)
    (mono, docs), (vmono, vdocs) = text["train"], text["valid"]
    sp = spm.SentencePieceProcessor(model_file=tokenizer_for(args, mono, docs, "spiece.model", "t5"))
    train = pack(sp, mono, docs, args.block + 1)
    valid = pack(sp, vmono, vdocs, args.block + 1)
    # the quickstart's En-De valid split as documents: never trained on (held out), so its
    # loss tracks how well the LM continues an English message with its German translation
    ende = split_pairs(read_catalogs("de"), valid=200, test=200)["valid"]
    ende = [torch.tensor(sp.Encode(en) + [1] + sp.Encode(de) + [1]) for en, de in ende]
    log(f"{train.numel() / 1e6:.2f}M training tokens in blocks of {args.block}; valid {valid.numel() / 1e3:.0f}K")

    cfg = PLMConfig(family="gpt2", vocab_size=sp.GetPieceSize(), hidden_size=args.hidden, num_layers=args.layers,
                    num_heads=args.heads, intermediate_size=4 * args.hidden, max_positions=args.positions,
                    activation="gelu_new", pad_token_id=0, dropout=0.1, attention_dropout=0.1)
    model = initial_model(args, lambda: GPT(cfg))
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    trainer = BudgetTrainer(model, args, lambda m, path: save_hf_gpt2(m, path),
                            {"module": "fairseq_plm.recipes.pretrain_tiny_gpt", "parameters": n_params,
                             "name": "tiny-mgpt: a small multilingual GPT (mGPT layout)",
                             "what": "A causal LM in mGPT's layout (GPT-2 blocks, mT5-style sentencepiece ids: pad 0, "
                                     "eos 1, unk 2, no BOS), the PLM of this package's MSP quickstart and "
                                     "`msp_compare`.",
                             "shape": f"{cfg.num_layers} layers, d={cfg.hidden_size}, {cfg.num_heads} heads, "
                                      f"{cfg.max_positions} positions, {cfg.vocab_size:,}-piece vocabulary",
                             "layout": "GPT2LMHeadModel, model.safetensors + spiece.model",
                             "training_tokens_per_epoch": train.numel(), **text["stats"]})
    dev = trainer.device

    def lm_loss(batch):
        out = model(batch[:, :-1])
        target = batch[:, 1:]
        logits = model.logits(out.hidden).float()
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()), target.numel()

    def evaluate():
        v = [lm_loss(valid[i:i + 64].to(dev))[0].item() for i in range(0, len(valid), 64)]
        v = sum(v) / len(v)
        tot = n = 0
        for x in ende:
            x = x.to(dev)[None]
            logits = model.logits(model(x[:, :-1]).hidden).float()
            tot += torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
            n += x.size(1) - 1
        return {"valid_ppl": round(math.exp(v), 2), "ende_valid_doc_ppl": round(math.exp(tot / n), 2)}

    log(f"{cfg.num_layers}-layer d={cfg.hidden_size} GPT, {n_params / 1e6:.2f}M parameters, on {dev}"
        f"{' with bf16 autocast' if trainer.autocast_dtype is not None else ''}")
    step = trainer.run(lambda g: train[torch.randint(len(train), (args.batch,), generator=g)],
                       lm_loss, evaluate)
    log(f"saved {cfg.num_layers}-layer d={cfg.hidden_size} GPT after {step} steps to {args.out}")


if __name__ == "__main__":
    main()
