"""Pre-train a tiny XLM-R-layout encoder ("tiny XLM-R") with masked LM on the machine's gettext catalogs.

XLM-R's recipe (Conneau et al. 2020: a RoBERTa encoder trained with masked LM on multilingual
text, sentencepiece unigram vocabulary) scaled down to what a CPU trains in about half an hour.

Pre-training text, from ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo`` (as ``pretrain_tiny_gpt``):
  * monolingual sentences in English and every listed language, each ``<s> sentence </s>``;
  * bilingual "documents", ``<s> english </s></s> translation </s>`` (XLM-R's pair format).
  For German, the language the quickstart evaluates, only the quickstart's *training* split is
  used, and the English sources and German references of its valid and test pairs are also
  removed from every other language's text: no evaluation sentence is seen in pre-training.

Masked LM as BERT/RoBERTa: per batch (dynamic masking) 15% of the non-special tokens are chosen;
80% of them become <mask>, 10% a random piece, 10% stay; the loss is on the chosen tokens.

Ids are XLM-R's: <s> 0, <pad> 1, </s> 2, <unk> 3, sentencepiece pieces shifted by one, <mask>
last, exactly the dictionary ``fairseq_plm.plm.vocab.load_dictionary`` builds for the output.

Output: a HuggingFace-format XLM-R directory (config.json, model.safetensors,
sentencepiece.bpe.model), loaded by ``--plm`` like any published checkpoint.

    python -m fairseq_plm.recipes.pretrain_tiny_xlmr --out tiny-xlmr --minutes 40
"""

import os
import random

import sentencepiece as spm
import torch
import torch.nn.functional as F

from ..plm.bert import BertEncoder
from ..plm.config import PLMConfig
from ..plm.export import save_hf_roberta
from ..plm.vocab import xlmr_dictionary_from_spm
from .pretrain_common import add_training_args, build_text, held_out_text, initial_model, parser, save, \
    tokenizer_for, train_for_budget

SPM_NAME = "sentencepiece.bpe.model"


def spm_to_dictionary(sp, dictionary):
    """sentencepiece id -> id in the XLM-R dictionary (looked up by piece, as fairseq-preprocess
    maps the pieces ``fairseq-plm-encode`` writes)."""
    table = [dictionary.index(sp.IdToPiece(i)) for i in range(sp.GetPieceSize())]
    assert table[:3] == [dictionary.unk(), dictionary.bos(), dictionary.eos()], table[:3]
    assert all(table[i] == i + 1 for i in range(3, len(table))), "pieces must sit at their id + 1"
    return table


def encode(sp, table, dictionary, mono, docs, max_len):
    """Every sentence as ``<s> ... </s>``, every document as ``<s> en </s></s> translation </s>``,
    in dictionary ids, cut to ``max_len`` tokens."""
    bos, eos = dictionary.bos(), dictionary.eos()
    flat = mono + [s for d in docs for s in d]
    ids = [[table[i] for i in piece_ids] for piece_ids in sp.Encode(flat)]
    items = [[bos] + x + [eos] for x in ids[:len(mono)]]
    for j in range(len(mono), len(flat), 2):
        items.append([bos] + ids[j] + [eos, eos] + ids[j + 1] + [eos])
    return [x if len(x) <= max_len else x[:max_len - 1] + [eos] for x in items]


def make_batches(items, pad, batch_tokens, seed):
    """Length-bucketed padded batches of at most ``batch_tokens`` tokens (padding included)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(items), generator=g).tolist()
    order = sorted(range(len(items)), key=lambda i: (len(items[i]), noise[i]))
    batches, i = [], 0
    while i < len(order):
        rows = 1
        while i + rows < len(order) and (rows + 1) * len(items[order[i + rows]]) <= batch_tokens:
            rows += 1
        chunk = [items[k] for k in order[i:i + rows]]
        width = len(chunk[-1])
        t = torch.full((len(chunk), width), pad, dtype=torch.int32)
        for r, x in enumerate(chunk):
            t[r, :len(x)] = torch.tensor(x, dtype=torch.int32)
        batches.append(t)
        i += rows
    return batches


def mask_tokens(ids, dictionary, prob=0.15, generator=None):
    """BERT/RoBERTa masking. Returns (inputs, chosen): ``prob`` of the non-special tokens are
    chosen (at least one per batch); of those 80% -> <mask>, 10% -> a random piece, 10% kept."""
    mask_id = dictionary.mask_index
    first_piece = dictionary.unk() + 1  # <s> <pad> </s> <unk> are never chosen nor drawn
    maskable = ids >= first_piece
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & maskable
    if not chosen.any():
        chosen.view(-1)[maskable.view(-1).nonzero()[:1]] = True
    r = torch.rand(ids.shape, generator=generator)
    inputs = ids.masked_fill(chosen & (r < 0.8), mask_id)
    rand = chosen & (r >= 0.8) & (r < 0.9)
    inputs[rand] = torch.randint(first_piece, mask_id, (int(rand.sum()),), generator=generator)
    return inputs, chosen


def mlm_step(model, ids, dictionary, generator=None):
    """(loss, accuracy, number of predicted tokens) of one masked batch."""
    inputs, chosen = mask_tokens(ids, dictionary, generator=generator)
    hidden = model(inputs).hidden
    logits = model.logits(hidden[chosen])
    target = ids[chosen]
    return F.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean(), len(target)


def main(argv=None):
    p = parser(__doc__, positions=258)
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens (padding included) per batch")
    add_training_args(p, "tiny XLM-R", lr=1e-3)
    p.add_argument("--warmup", type=int, default=200, help="warmup steps")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    held = held_out_text()
    mono, docs = build_text(args.langs, hold_out_everywhere=True)
    print(f"[pretrain] {len(mono)} monolingual sentences, {len(docs)} bilingual documents "
          f"({len(held)} evaluation sentences held out of every language)", flush=True)
    sp = spm.SentencePieceProcessor(model_file=tokenizer_for(args, mono, docs, SPM_NAME, "xlmr"))
    dictionary = xlmr_dictionary_from_spm(os.path.join(args.out, SPM_NAME))
    table = spm_to_dictionary(sp, dictionary)

    cfg = PLMConfig(family="roberta", vocab_size=len(dictionary), hidden_size=args.hidden, num_layers=args.layers,
                    num_heads=args.heads, intermediate_size=4 * args.hidden, max_positions=args.positions,
                    layer_norm_eps=1e-5, activation="gelu", type_vocab_size=1, pad_token_id=dictionary.pad(),
                    position_offset=dictionary.pad() + 1, dropout=0.1, attention_dropout=0.1)
    model = initial_model(args, lambda: BertEncoder(cfg))
    cfg = model.cfg
    if cfg.vocab_size != len(dictionary):
        raise SystemExit(f"--init model has {cfg.vocab_size} embeddings, its dictionary {len(dictionary)} symbols")

    items = encode(sp, table, dictionary, mono, docs, cfg.usable_positions)
    random.Random(args.seed).shuffle(items)  # valid: sentences and documents alike
    n_valid = max(1, min(len(items) // 100, 2000))
    valid = make_batches(items[:n_valid], dictionary.pad(), args.batch_tokens, args.seed)
    train = make_batches(items[n_valid:], dictionary.pad(), args.batch_tokens, args.seed)
    n_tokens = sum(len(x) for x in items[n_valid:])
    print(f"[pretrain] {n_tokens / 1e6:.2f}M training tokens in {len(items) - n_valid} sequences "
          f"({len(train)} batches of <= {args.batch_tokens} tokens); vocabulary {len(dictionary)}", flush=True)

    def evaluate():
        g = torch.Generator().manual_seed(0)  # the same masks at every evaluation
        stats = [mlm_step(model, b.long(), dictionary, g) for b in valid]
        n = sum(k for _, _, k in stats)
        loss = sum(l.item() * k for l, _, k in stats) / n
        acc = sum(a.item() * k for _, a, k in stats) / n
        return f"valid mlm loss {loss:.3f} | valid mlm acc {acc:.3f} ({n} masked tokens)"

    step = train_for_budget(model, args, lambda: train[torch.randint(len(train), ()).item()].long(),
                            lambda ids: mlm_step(model, ids, dictionary)[0], evaluate, warmup=args.warmup)
    save(model, args, save_hf_roberta)
    print(f"[pretrain] saved {cfg.num_layers}-layer d={cfg.hidden_size} XLM-R encoder after {step} steps "
          f"to {args.out}")


if __name__ == "__main__":
    main()
