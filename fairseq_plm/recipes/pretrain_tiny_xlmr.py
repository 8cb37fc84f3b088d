"""Pre-train a tiny XLM-R-layout encoder ("tiny XLM-R") with masked LM on the machine's gettext catalogs.

XLM-R's recipe (Conneau et al. 2020: a RoBERTa encoder trained with masked LM on multilingual
text, sentencepiece unigram vocabulary) scaled down to what a few CPU hours train. This is the
recipe behind ``examples/plms/tiny-xlmr``, the PLM of the SGA, deep fusion and MPT examples.

Pre-training text, from ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo`` (``pretrain_common``):
  * monolingual sentences in English and every listed language, each ``<s> sentence </s>``;
  * bilingual "documents", ``<s> english </s></s> translation </s>`` (XLM-R's pair format);
  * no evaluation sentence of any recipe of this package, nor any translation of one
    (``pretrain_common.held_out_sentences``).

Default languages: SGA's ten supervised and five zero-shot languages (Wu et al. §5.1) and the
XNLI languages the catalogs have (MPT); vocabulary 12,000 pieces.

Masked LM as BERT/RoBERTa: per batch (dynamic masking) 15% of the non-special tokens are chosen;
80% of them become <mask>, 10% a random piece, 10% stay; the loss is on the chosen tokens.

Ids are XLM-R's: <s> 0, <pad> 1, </s> 2, <unk> 3, sentencepiece pieces shifted by one, <mask>
last, exactly the dictionary ``fairseq_plm.plm.vocab.load_dictionary`` builds for the output.

Output: a HuggingFace-format XLM-R directory (config.json, model.safetensors,
sentencepiece.bpe.model, pretrain.json), loaded by ``--plm`` like any published checkpoint;
``checkpoint.pt`` to resume (see ``pretrain_common``).

    python -m fairseq_plm.recipes.pretrain_tiny_xlmr --out examples/plms/tiny-xlmr --minutes 240 --fp16-weights
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
from .gettext_multilingual import SUPERVISED, ZERO_SHOT
from .pretrain_common import BudgetTrainer, add_training_args, initial_model, log, parser, start, \
    tokenizer_for

SPM_NAME = "sentencepiece.bpe.model"
XNLI_IN_CATALOGS = ["el", "bg", "th", "zh_CN", "hi"]  # XNLI languages with catalogs (+ those above)
LANGS = list(SUPERVISED) + list(ZERO_SHOT) + XNLI_IN_CATALOGS


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
    chosen = (torch.rand(ids.shape, generator=generator).to(ids.device) < prob) & maskable
    if not chosen.any():
        chosen.view(-1)[maskable.view(-1).nonzero()[:1]] = True
    r = torch.rand(ids.shape, generator=generator).to(ids.device)
    inputs = ids.masked_fill(chosen & (r < 0.8), mask_id)
    rand = chosen & (r >= 0.8) & (r < 0.9)
    inputs[rand] = torch.randint(first_piece, mask_id, (int(rand.sum()),), generator=generator).to(ids.device)
    return inputs, chosen


def mlm_step(model, ids, dictionary, generator=None):
    """(loss, accuracy, number of predicted tokens) of one masked batch."""
    inputs, chosen = mask_tokens(ids, dictionary, generator=generator)
    hidden = model(inputs).hidden
    logits = model.logits(hidden[chosen])
    target = ids[chosen]
    return F.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean(), len(target)


def main(argv=None):
    p = parser(__doc__, positions=258, langs=LANGS, vocab_size=12000, layers=6, hidden=256, heads=4)
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens (padding included) per batch")
    add_training_args(p, "tiny XLM-R", lr=1e-3)
    args = p.parse_args(argv)
    text = start(args)
    (mono, docs), (vmono, vdocs) = text["train"], text["valid"]
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
    random.Random(args.seed).shuffle(items)
    train = make_batches(items, dictionary.pad(), args.batch_tokens, args.seed)
    valid = make_batches(encode(sp, table, dictionary, vmono, vdocs, cfg.usable_positions), dictionary.pad(),
                         args.batch_tokens, args.seed)
    n_tokens = sum(len(x) for x in items)
    log(f"{n_tokens / 1e6:.2f}M training tokens in {len(items)} sequences ({len(train)} batches of <= "
        f"{args.batch_tokens} tokens); valid {sum(b.numel() for b in valid) / 1e3:.0f}K; vocabulary {len(dictionary)}")
    n_params = sum(p.numel() for p in model.parameters())
    trainer = BudgetTrainer(model, args, lambda m, path: save_hf_roberta(m, path),
                            {"module": "fairseq_plm.recipes.pretrain_tiny_xlmr", "parameters": n_params,
                             "name": "tiny-xlmr: a small multilingual masked LM (XLM-R layout)",
                             "what": "A RoBERTa encoder in XLM-R's layout (positions from padding_idx + 1, XLM-R's "
                                     "fairseq ids: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last), the PLM of this "
                                     "package's SGA, deep fusion and MPT examples and comparisons.",
                             "shape": f"{cfg.num_layers} layers, d={cfg.hidden_size}, {cfg.num_heads} heads, "
                                      f"{cfg.max_positions} positions, {cfg.vocab_size:,}-piece vocabulary",
                             "layout": "XLMRobertaForMaskedLM, model.safetensors + sentencepiece.bpe.model",
                             "training_tokens_per_epoch": n_tokens, **text["stats"]})
    dev = trainer.device

    def loss_fn(ids):
        ids = ids.long()
        return mlm_step(model, ids, dictionary)[0], int(ids.ne(dictionary.pad()).sum())

    def evaluate():
        g = torch.Generator().manual_seed(0)  # the same masks at every evaluation
        stats = [mlm_step(model, b.long().to(dev), dictionary, g) for b in valid]
        n = sum(k for _, _, k in stats)
        loss = sum(l.item() * k for l, _, k in stats) / n
        acc = sum(a.item() * k for _, a, k in stats) / n
        return {"valid_mlm_loss": round(loss, 4), "valid_mlm_acc": round(acc, 4), "valid_masked": n}

    log(f"{cfg.num_layers}-layer d={cfg.hidden_size} XLM-R encoder, {n_params / 1e6:.2f}M parameters, on {dev}"
        f"{' with bf16 autocast' if trainer.autocast_dtype is not None else ''}")
    step = trainer.run(lambda g: train[torch.randint(len(train), (), generator=g).item()], loss_fn, evaluate)
    log(f"saved {cfg.num_layers}-layer d={cfg.hidden_size} XLM-R encoder after {step} steps to {args.out}")


if __name__ == "__main__":
    main()
