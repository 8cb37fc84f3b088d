"""What the tiny pre-training recipes (``pretrain_tiny_gpt``, ``pretrain_tiny_xlmr``) share: the
pre-training text from the machine's gettext catalogs, the sentencepiece model, the command
line, and the time-budgeted training loop with warmup + cosine learning rate."""

import argparse
import math
import os
import random
import shutil
import tempfile
import time

import sentencepiece as spm
import torch

from ..data.gettext_corpus import read_catalogs, split_pairs

LANGS = ["de", "fr", "es", "it", "nl", "sv", "pl", "ru"]

# sentencepiece's own ids for the special pieces, as the published models have them
SPM_LAYOUTS = {
    "t5": dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1),  # mT5/mGPT: pad 0, eos 1, unk 2, no BOS
    "xlmr": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),  # XLM-R's sentencepiece.bpe.model
}


def held_out_text(eval_lang="de", valid=200, test=200):
    """Both sides of the evaluation pairs (the quickstart's valid + test split of ``eval_lang``)."""
    try:
        splits = split_pairs(read_catalogs(eval_lang), valid=valid, test=test)
    except FileNotFoundError:
        return set()
    return {s for name in ("valid", "test") for pair in splits[name] for s in pair}


def build_text(langs, eval_lang="de", valid=200, test=200, seed=1, hold_out_everywhere=False):
    """(monolingual sentences, bilingual (english, translation) documents), shuffled.

    ``eval_lang``'s valid/test pairs are always left out. With ``hold_out_everywhere`` their
    English sources and references are also removed from every other language's text (other
    catalogs translate many of the same English messages), so no evaluation sentence is seen.
    """
    held = held_out_text(eval_lang, valid, test) if hold_out_everywhere else set()
    mono, docs = set(), []
    for lang in langs:
        try:
            pairs = read_catalogs(lang)
        except FileNotFoundError:
            continue
        if lang == eval_lang:
            pairs = split_pairs(pairs, valid=valid, test=test)["train"]
        for en, tgt in pairs:
            mono.update(s for s in (en, tgt) if s not in held)
            if en not in held and tgt not in held:
                docs.append((en, tgt))
    rng = random.Random(seed)
    mono = sorted(mono)
    rng.shuffle(mono)
    rng.shuffle(docs)
    return mono, docs


def train_spm(lines, prefix, vocab_size, layout="t5"):
    """Unigram sentencepiece model ``prefix.model`` with the special-piece ids of ``layout``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=f.name, model_prefix=prefix, vocab_size=vocab_size, **SPM_LAYOUTS[layout],
        model_type="unigram", character_coverage=0.9995, input_sentence_size=400000,
        shuffle_input_sentence=True, minloglevel=2)
    os.unlink(f.name)
    os.remove(prefix + ".vocab")
    return prefix + ".model"


def tokenizer_for(args, mono, docs, name, layout):
    """The run's sentencepiece model ``out/name``: copied from ``--init``, or trained on the text
    (monolingual sentences + the first 20k documents)."""
    path = os.path.join(args.out, name)
    if args.init:
        if os.path.abspath(args.init) != os.path.abspath(args.out):
            shutil.copy(os.path.join(args.init, name), path)
        return path
    return train_spm(mono + [a + " " + b for a, b in docs[:20000]], path[: -len(".model")], args.vocab_size,
                     layout)


def parser(doc, positions):
    """The model options both recipes take; each then adds its batch options, then add_training_args."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--langs", nargs="+", default=LANGS)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--positions", type=int, default=positions)
    return p


def add_training_args(p, model_name, lr):
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    p.add_argument("--max-steps", type=int, default=100000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--init", help=f"continue from this previously saved {model_name} (same recipe); its "
                                  "sentencepiece model is reused")
    p.add_argument("--fp16-weights", action="store_true", help="store weights in fp16 (half the file size)")


def initial_model(args, build):
    """``--init``'s model in fp32, or ``build()`` with random weights."""
    if args.init:
        from ..plm.loading import load_plm

        return load_plm(args.init).float()
    return build().init_random(args.seed)


def cosine_lr(peak, step, warmup, frac):
    """Linear warmup over ``warmup`` steps, cosine decay over the fraction ``frac`` of the time budget."""
    return peak * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))


def train_for_budget(model, args, next_batch, loss_fn, evaluate, warmup=200, every=200):
    """AdamW until ``--minutes`` or ``--max-steps`` run out; every ``every`` steps prints a line
    ending in ``evaluate()`` (run under no_grad in eval mode). Returns the number of steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    budget = args.minutes * 60
    start, step = time.time(), 0
    while step < args.max_steps and time.time() - start < budget:
        batch = next_batch()
        lr = cosine_lr(args.lr, step, warmup, min(1.0, (time.time() - start) / budget))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        loss = loss_fn(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % every == 0:
            model.eval()
            with torch.no_grad():
                report = evaluate()
            print(f"[pretrain] step {step} | {time.time() - start:.0f}s | lr {lr:.2e} | train loss {loss.item():.3f} "
                  f"| {report}", flush=True)
    model.eval()
    return step


def save(model, args, save_fn):
    if args.fp16_weights:
        model.half()
    save_fn(model, args.out)
