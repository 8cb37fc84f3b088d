"""What the demo-PLM pre-training recipes (``pretrain_tiny_gpt``, ``pretrain_tiny_xlmr``) share:
the pre-training text from the machine's gettext catalogs with every evaluation sentence held
out, the sentencepiece model, the command line, and a resumable, time-budgeted training loop
(AdamW, warmup-stable-decay learning rate, bf16 autocast on CUDA or on CPUs that support it).

Hold-out rule (``held_out_sentences``): no English message of any valid or test split that a
recipe of this package uses, and no translation of one in any language, is in pre-training
text, in any role (monolingual sentence, either side of a bilingual document). The splits are
those the recipes build with their default sizes:

  * the En-De valid/test split of the quickstart, ``fusion_compare`` and ``msp_compare``
    (``split_pairs(read_catalogs("de"))``);
  * every valid/test set of the multilingual X<->En corpus (``gettext_multilingual``: SGA's
    supervised and zero-shot languages);
  * a reserved band of the English hash space (md5 below ``RESERVED_BAND``) from which
    evaluation sets built later (the catalog classification task of ``mpt_data``) are drawn,
    so they are unseen by construction.

Translations are collected from the raw catalogs of every language read (every msgstr of a
held-out msgid, before deduplication), so a second package's translation of the same English
message is held out too.

Resuming: the loop writes ``<out>/checkpoint.pt`` (weights, optimizer, step, time spent, random
states) every ``--save-minutes`` atomically (temporary file, then rename), together with an
export of the current weights in HuggingFace layout, and continues from it when run again with
the same ``--out``. The learning-rate schedule follows the fraction of the *total* budget
spent, so a run stopped and resumed any number of times follows the same schedule as one
uninterrupted run; the rate is flat until the last 20% of the budget (``wsd_lr``), so the
budget can be changed on a resumed run until then.
"""

import argparse
import glob
import gettext
import hashlib
import json
import os
import random
import shlex
import shutil
import sys
import tempfile
import time

import sentencepiece as spm

# oneDNN (bf16 matmuls on CPU) caches one primitive per input shape, up to 1024 by default;
# masked LM batches have a new shape at every step, which grew the process by GBs
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
import torch  # noqa: E402

from ..data.gettext_corpus import _clean, read_catalogs, split_pairs

LOCALE_ROOT = "/usr/share/locale"
# md5(English) / 2**128 below this: reserved for evaluation sets (about 2% of the messages)
RESERVED_BAND = 0.02

# sentencepiece's own ids for the special pieces, as the published models have them
SPM_LAYOUTS = {
    "t5": dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1),  # mT5/mGPT: pad 0, eos 1, unk 2, no BOS
    "xlmr": dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),  # XLM-R's sentencepiece.bpe.model
}


def log(msg):
    print(f"[pretrain {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ text and hold-out

def _band(english):
    """md5 of the English side as a number in [0, 1)."""
    return int(hashlib.md5(english.encode()).hexdigest(), 16) / 2 ** 128


def in_reserved_band(english: str) -> bool:
    return _band(english) < RESERVED_BAND


def evaluation_english(root=LOCALE_ROOT):
    """English sources of every valid/test split the package's recipes build (defaults)."""
    from .gettext_multilingual import build_corpus

    held = set()
    try:
        splits = split_pairs(read_catalogs("de", root), valid=200, test=200)
        held |= {en for name in ("valid", "test") for en, _ in splits[name]}
    except FileNotFoundError:
        pass
    try:
        corpus = build_corpus(root=root)
        held |= {en for split in (corpus.valid, corpus.test) for pairs in split.values() for _, en in pairs}
    except FileNotFoundError:
        pass
    return held


def _raw_translations(lang, english, root):
    """Every msgstr of ``lang``'s catalogs whose msgid (cleaned) is in ``english``."""
    out = set()
    for path in sorted(glob.glob(os.path.join(root, lang, "LC_MESSAGES", "*.mo"))):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except Exception:
            continue
        for src, tgt in catalog.items():
            if isinstance(src, str) and isinstance(tgt, str) and tgt:
                if src in english or _clean(src) in english:
                    out.add(_clean(tgt))
    return out


def held_out_sentences(langs, root=LOCALE_ROOT):
    """(held English, held translations in ``langs``): see the module docstring."""
    english = evaluation_english(root)
    pairs = {lang: read_catalogs(lang, root) for lang in langs if glob.glob(os.path.join(root, lang, "LC_MESSAGES"))}
    english |= {en for ps in pairs.values() for en, _ in ps if in_reserved_band(en)}
    translations = set()
    for lang in pairs:
        translations |= _raw_translations(lang, english, root)
    return english, translations, pairs


def build_text(langs, weights=None, seed=1, root=LOCALE_ROOT, valid_band=0.01):
    """Pre-training text: ``{"train": (mono, docs), "valid": (mono, docs), "stats": {...}}``.

    Every language's (english, translation) pairs with the held-out sentences removed become
    bilingual documents, and their sides monolingual sentences (each English sentence once).
    Pairs whose English falls in the top ``valid_band`` of the md5 range (far from the
    evaluation splits, which take the lowest hashes) form the pre-training validation text and are never trained on.
    ``weights`` (language -> integer factor) repeats a language's training sentences and
    documents, as pre-training mixes up-sample languages.
    """
    weights = weights or {}
    english, translations, pairs = held_out_sentences(langs, root)
    held = english | translations
    split = {"train": ([], []), "valid": ([], [])}
    seen_en, dropped = set(), 0
    for lang, ps in pairs.items():
        k = weights.get(lang, 1)
        for en, t in ps:
            if en in held or t in held:
                dropped += 1
                continue
            name = "valid" if _band(en) >= 1 - valid_band else "train"
            mono, docs = split[name]
            reps = k if name == "train" else 1
            docs.extend([(en, t)] * reps)
            mono.extend([t] * reps)
            if en not in seen_en:
                seen_en.add(en)
                mono.append(en)
    rng = random.Random(seed)
    for mono, docs in split.values():
        rng.shuffle(mono)
        rng.shuffle(docs)
    split["stats"] = {"held_out_english": len(english), "held_out_translations": len(translations),
                      "dropped_pairs": dropped, "languages": sorted(pairs), "weights": weights,
                      "train_sentences": len(split["train"][0]), "train_documents": len(split["train"][1]),
                      "valid_sentences": len(split["valid"][0]), "valid_documents": len(split["valid"][1])}
    return split


def start(args):
    """A recipe's first steps: seed, output directory, and the pre-training text of
    ``args.langs`` (``build_text``), with what was held out logged."""
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    text = build_text(args.langs, args.weights, args.seed)
    (mono, docs) = text["train"]
    log(f"{len(mono)} monolingual sentences, {len(docs)} bilingual documents; held out: "
        f"{text['stats']['held_out_english']} English messages and {text['stats']['held_out_translations']} "
        f"translations ({text['stats']['dropped_pairs']} pairs)")
    return text


def train_spm(lines, prefix, vocab_size, layout="t5"):
    """Unigram sentencepiece model ``prefix.model`` with the special-piece ids of ``layout``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=f.name, model_prefix=prefix, vocab_size=vocab_size, **SPM_LAYOUTS[layout],
        model_type="unigram", character_coverage=0.9995, input_sentence_size=1000000,
        shuffle_input_sentence=True, minloglevel=2)
    os.unlink(f.name)
    os.remove(prefix + ".vocab")
    return prefix + ".model"


def tokenizer_for(args, mono, docs, name, layout):
    """The run's sentencepiece model ``out/name``: the one already there (a resumed run), copied
    from ``--init``, or trained on the (weighted) text."""
    path = os.path.join(args.out, name)
    if os.path.exists(path) and os.path.exists(os.path.join(args.out, "checkpoint.pt")):
        return path
    if args.init:
        if os.path.abspath(args.init) != os.path.abspath(args.out):
            shutil.copy(os.path.join(args.init, name), path)
        return path
    return train_spm(mono + [a + " " + b for a, b in docs[:50000]], path[: -len(".model")], args.vocab_size,
                     layout)


# ------------------------------------------------------------------------------ command line

def _weights(text):
    out = {}
    for item in filter(None, text.split(",")):
        lang, _, k = item.partition("=")
        out[lang.strip()] = int(k)
    return out


def parser(doc, positions, langs, vocab_size, layers, hidden, heads):
    """The model options both recipes take; each then adds its batch options, then add_training_args."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory: weights, tokenizer, checkpoint.pt, README data")
    p.add_argument("--langs", nargs="+", default=langs, help="catalog languages (besides English)")
    p.add_argument("--weights", type=_weights, default={}, help="up-sampling factors, e.g. de=4,fr=2")
    p.add_argument("--vocab-size", type=int, default=vocab_size)
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--hidden", type=int, default=hidden)
    p.add_argument("--heads", type=int, default=heads)
    p.add_argument("--positions", type=int, default=positions)
    return p


def add_training_args(p, model_name, lr):
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--minutes", type=float, default=30.0,
                   help="total compute budget: CPU time per thread on a CPU (time paused or starved by other "
                        "processes does not count), wall-clock time on a GPU; a resumed run counts what it "
                        "already spent")
    p.add_argument("--max-steps", type=int, default=10 ** 9)
    p.add_argument("--warmup", type=int, default=500, help="warmup steps")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--save-minutes", type=float, default=5.0, help="checkpoint + export every this many minutes")
    p.add_argument("--eval-every", type=int, default=500, help="validation every this many steps")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--init", help=f"start from this previously saved {model_name} (same recipe) with a fresh "
                                  "optimizer; its sentencepiece model is reused")
    p.add_argument("--fp16-weights", action="store_true", help="export weights in fp16 (half the file size)")


def device_and_dtype(args):
    dev = args.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(dev)
    if args.threads:
        torch.set_num_threads(args.threads)
    prec = args.precision
    if prec == "auto":
        if dev.type == "cuda":
            prec = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            prec = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return dev, (torch.bfloat16 if prec == "bf16" else None)


def initial_model(args, build):
    """``--init``'s model in fp32, or ``build()`` with random weights."""
    if args.init:
        from ..plm.loading import load_plm

        return load_plm(args.init).float()
    return build().init_random(args.seed)


def wsd_lr(peak, step, warmup, frac, decay=0.2):
    """Warmup-stable-decay: linear warmup over ``warmup`` steps, the peak rate until the last
    ``decay`` fraction of the budget, then a linear decay to 10% of the peak. The rate depends
    on the budget only in the decay phase, so a run's budget can be shortened or extended
    without a jump in the rate as long as the decay has not started."""
    scale = 1.0 if frac < 1 - decay else max(0.1, 1 - 0.9 * (frac - (1 - decay)) / decay)
    return peak * min(1.0, (step + 1) / warmup) * scale


# ------------------------------------------------------------------------------ resumable loop

def _atomic_torch_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export(model, args, save_fn, stats):
    """HuggingFace-format weights of the current model (fp16 with ``--fp16-weights``), written
    next to a temporary copy first so a kill never leaves a half-written model file."""
    import copy

    out = copy.deepcopy(model).cpu().float()
    if args.fp16_weights:
        out.half()
    tmp = os.path.join(args.out, ".export.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_fn(out, tmp)
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(args.out, name))
    os.rmdir(tmp)
    with open(os.path.join(args.out, "pretrain.json"), "w") as f:
        json.dump(stats, f, indent=1)
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(model_card(stats))


def model_card(stats):
    """README.md of an exported demo PLM, from its pretrain.json: what it is, the exact
    commands that made it, its data and hold-out rule, the compute spent, validation."""
    hist = stats["history"]
    metrics = [k for k in (hist[-1] if hist else {}) if k not in ("step", "compute_minutes", "tokens")]
    rows = hist if len(hist) <= 12 else hist[:: max(1, len(hist) // 10)] + [hist[-1]]
    seen, table = set(), []
    for h in rows:
        if h["step"] not in seen:
            seen.add(h["step"])
            table.append(f"| {h['step']:,} | {h['compute_minutes']:.0f} | {h['tokens'] / 1e6:.1f}M | "
                         + " | ".join(str(h[k]) for k in metrics) + " |")
    weights = ", ".join(f"{k} x{v}" for k, v in stats["weights"].items()) or "none"
    return f"""# {stats['name']}

{stats['what']}

{stats['parameters']:,} parameters ({stats['shape']}), stored in {stats['dtype']}; HuggingFace
layout ({stats['layout']}), loaded by `--plm` like a published checkpoint, and by `transformers`.

## How it was made

```bash
{chr(10).join(stats['commands'])}
```

(one command per start; a rerun with the same `--out` resumes from `checkpoint.pt`, which is not
shipped.) Compute: {stats['compute_minutes']:.0f} minutes ({stats['device']}, {stats['threads'] or 'GPU'} thread(s),
CPU time per thread; {stats['precision']}; budget {stats['budget_minutes']:g}), {stats['step']:,} steps, {stats['tokens'] / 1e6:.1f}M training tokens
({stats['training_tokens_per_epoch'] / 1e6:.2f}M per pass over the data).

## Data

The gettext catalogs of this machine (`/usr/share/locale/<lang>/LC_MESSAGES/*.mo`) of
{', '.join(stats['languages'])} (and English): {stats['train_sentences']:,} monolingual sentences and
{stats['train_documents']:,} bilingual (English, translation) documents, as parallel text appears on
the web; up-sampling: {weights}. Validation: {stats['valid_sentences']:,} sentences and
{stats['valid_documents']:,} documents whose English side falls in the top 1% of the md5 range
(never trained on).

**Held out** (`fairseq_plm.recipes.pretrain_common.held_out_sentences`): every English message of
every valid and test split a recipe of this package builds (the En-De split of the quickstart,
`msp_compare` and `fusion_compare`; every split of `gettext_multilingual`), every English message
in the reserved md5 band below {RESERVED_BAND} (where later evaluation sets, such as `mpt_data`'s catalog
task, draw from), and every translation of any of them in any catalog of the languages read:
{stats['held_out_english']:,} English messages and {stats['held_out_translations']:,} translations, which
removed {stats['dropped_pairs']:,} pairs.

## Validation during pre-training

| step | compute min | tokens | {' | '.join(metrics)} |
| ---: | ---: | ---: | {' | '.join('---:' for _ in metrics)} |
{chr(10).join(table)}
"""


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = "CPU"
    return f"{name}, {os.cpu_count()} cores"


class BudgetTrainer:
    """AdamW over ``model`` until the total ``--minutes`` or ``--max-steps`` are spent, resuming
    from ``<out>/checkpoint.pt`` when present. ``next_batch(generator)`` draws a training batch
    (its randomness from ``generator``, whose state is checkpointed); ``loss_fn(batch)`` returns
    (loss, number of target tokens); ``evaluate()`` returns a dict of metrics."""

    def __init__(self, model, args, save_fn, describe):
        self.args, self.save_fn, self.describe = args, save_fn, describe
        self.device, self.autocast_dtype = device_and_dtype(args)
        self.model = model.to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-6,
                                     weight_decay=0.01)
        self.gen = torch.Generator().manual_seed(args.seed)
        self.step, self.spent, self.cpu, self.tokens, self.history, self.commands = 0, 0.0, 0.0, 0, [], []
        self.ckpt = os.path.join(args.out, "checkpoint.pt")
        if os.path.exists(self.ckpt):
            from ..checkpoints import load_torch_file  # weights-only: loading runs no code

            state = load_torch_file(self.ckpt, what="pre-training checkpoint")
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.step, self.spent, self.tokens = state["step"], state["spent"], state["tokens"]
            self.cpu = state.get("cpu", 0.0)
            self.history, self.commands = state.get("history", []), state.get("commands", [])
            log(f"resumed from {self.ckpt}: step {self.step}, {self.spent / 60:.1f} min spent, "
                f"{self.tokens / 1e6:.1f}M tokens")
        command = " ".join(["python -m " + describe["module"]] + [shlex.quote(a) for a in sys.argv[1:]])
        if not self.commands or self.commands[-1] != command:
            self.commands.append(command)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def stats(self):
        return {"step": self.step, "compute_minutes": round(self.spent / 60, 2),
                "process_cpu_minutes": round(self.cpu / 60, 2),
                "tokens": self.tokens,
                "device": _cpu_name() if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
                "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
                "precision": "bf16 autocast" if self.autocast_dtype is not None else "fp32",
                "budget_minutes": self.args.minutes, "history": self.history, "commands": self.commands,
                "dtype": "fp16" if self.args.fp16_weights else "fp32", **self.describe}

    def save(self):
        _atomic_torch_save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                            "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                            "step": self.step, "spent": self.spent, "cpu": self.cpu, "tokens": self.tokens,
                            "history": self.history, "commands": self.commands, "args": vars(self.args)}, self.ckpt)
        export(self.model, self.args, self.save_fn, self.stats())

    def evaluate(self, evaluate):
        self.model.eval()
        with torch.no_grad(), self.autocast():
            report = evaluate()
        self.model.train()
        self.history.append({"step": self.step, "compute_minutes": round(self.spent / 60, 2), "tokens": self.tokens,
                             **report})
        log(f"step {self.step} | {self.spent / 60:.1f} min | {self.tokens / 1e6:.1f}M tokens | "
            + " | ".join(f"{k} {v}" for k, v in report.items()))

    def _clock(self):
        """Seconds of compute: on a CPU the process's CPU time per thread (so time the job is
        paused or starved by other processes is not counted), on a GPU wall-clock time."""
        if self.device.type == "cpu":
            return time.process_time() / torch.get_num_threads()
        return time.time()

    def run(self, next_batch, loss_fn, evaluate):
        args = self.args
        budget = args.minutes * 60
        last_save, t_prev, c_prev, done = time.time(), self._clock(), time.process_time(), False
        self.model.train()
        while not done:
            batch = next_batch(self.gen).to(self.device)
            lr = wsd_lr(args.lr, self.step, args.warmup, self.spent / budget)
            for g in self.opt.param_groups:
                g["lr"] = lr
            with self.autocast():
                loss, n = loss_fn(batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            now = self._clock()
            self.spent += now - t_prev
            self.cpu += time.process_time() - c_prev
            t_prev, c_prev = now, time.process_time()
            self.step += 1
            self.tokens += int(n)
            done = self.step >= args.max_steps or self.spent >= budget
            if self.step % args.eval_every == 0 or done:
                log(f"step {self.step} | lr {lr:.2e} | train loss {loss.item():.3f}")
                self.evaluate(evaluate)
            if done or time.time() - last_save >= args.save_minutes * 60:
                self.save()
                last_save = time.time()
        self.model.eval()
        return self.step
