"""Tiny real fixtures: a parallel corpus from the gettext catalogs, a T5-style sentencepiece
model trained on it, a tiny random GPT saved in HuggingFace format, binarized data."""

import os
import subprocess
import sys

import sentencepiece as spm
import torch

from fairseq_plm.data.gettext_corpus import read_catalogs, split_pairs, write_splits
from fairseq_plm.plm.config import PLMConfig
from fairseq_plm.plm.bert import BertEncoder
from fairseq_plm.plm.config import preset
from fairseq_plm.plm.export import save_hf_gpt2, save_hf_roberta
from fairseq_plm.plm.gpt import GPT
from fairseq_plm.recipes.common import encode_and_binarize

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "fairseq_plm")


def cli(name, *args, env=None, check=True):
    """Run a console script of this venv; return CompletedProcess (stdout+stderr text)."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("OMP_NUM_THREADS", "1")
    p = subprocess.run([os.path.join(BIN, name), *map(str, args)], capture_output=True, text=True, env=full_env)
    if check and p.returncode != 0:
        raise AssertionError(f"{name} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def make_corpus(out_dir, n_train=120, n_valid=13, n_test=13):
    pairs = read_catalogs("de")
    splits = split_pairs(pairs, valid=n_valid, test=n_test)
    splits["train"] = splits["train"][:n_train]
    write_splits(splits, out_dir)
    return splits


def make_spm(text_files, prefix, vocab_size=300):
    spm.SentencePieceTrainer.train(
        input=",".join(map(str, text_files)), model_prefix=str(prefix), vocab_size=vocab_size,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type="unigram", character_coverage=1.0,
        minloglevel=2,
    )
    return f"{prefix}.model"


def make_tiny_gpt(plm_dir, spm_model, extra_ids=4, layers=2, hidden=32, heads=4, seed=0):
    sp = spm.SentencePieceProcessor()
    sp.Load(spm_model)
    cfg = PLMConfig(family="gpt2", vocab_size=sp.GetPieceSize() + extra_ids, hidden_size=hidden,
                    num_layers=layers, num_heads=heads, intermediate_size=4 * hidden, max_positions=256,
                    activation="gelu_new", pad_token_id=0)
    model = GPT(cfg).init_random(seed)
    save_hf_gpt2(model, plm_dir, spm_model)
    return model


def make_tiny_setup(root, **corpus_kw):
    """raw corpus -> spm -> tiny GPT dir -> encoded text -> binarized data. Returns paths."""
    raw, plm, tok, data = (os.path.join(root, d) for d in ("raw", "plm", "tok", "data-bin"))
    make_corpus(raw, **corpus_kw)
    model = make_spm([os.path.join(raw, "train.en"), os.path.join(raw, "train.de")], os.path.join(root, "spm"))
    make_tiny_gpt(plm, model)
    encode_and_binarize(raw, plm, tok, data)
    return {"raw": raw, "plm": plm, "tok": tok, "data": data}


def make_xlmr_spm(text_files, prefix, vocab_size=300):
    """A sentencepiece model with XLM-R's published id layout (<unk> 0, <s> 1, </s> 2)."""
    spm.SentencePieceTrainer.train(input=",".join(map(str, text_files)), model_prefix=str(prefix),
                                   vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
                                   minloglevel=2)
    return f"{prefix}.model"


def make_tiny_xlmr(plm_dir, spm_model, layers=2, hidden=32, heads=4, seed=0):
    """A tiny random XLM-R (HF format): XLM-R ids = 4 fairseq specials + pieces + <mask>."""
    sp = spm.SentencePieceProcessor()
    sp.Load(spm_model)
    cfg = preset("xlmr-base", vocab_size=sp.GetPieceSize() + 2, hidden_size=hidden, num_layers=layers,
                 num_heads=heads, intermediate_size=4 * hidden)  # 514 positions, as XLM-R
    model = BertEncoder(cfg).init_random(seed)
    save_hf_roberta(model, plm_dir, spm_model)
    return model


def make_tiny_xlmr_setup(root, corpus_raw=None, **corpus_kw):
    """raw corpus (or an existing one) -> XLM-R-style spm -> tiny XLM-R dir -> binarized data."""
    raw = corpus_raw or os.path.join(root, "raw")
    plm, tok, data = (os.path.join(root, d) for d in ("plm", "tok", "data-bin"))
    if corpus_raw is None:
        make_corpus(raw, **corpus_kw)
    model = make_xlmr_spm([os.path.join(raw, "train.en"), os.path.join(raw, "train.de")], os.path.join(root, "xspm"))
    make_tiny_xlmr(plm, model)
    encode_and_binarize(raw, plm, tok, data)
    return {"raw": raw, "plm": plm, "tok": tok, "data": data}


def make_shape_only_data(root, dictionary, lines="w5 w6 w7\nw8 w9\n"):
    """Binarized toy train/valid data over a PLM-sized dictionary (no tokenizer: for
    parameter counts at true size). Returns the data-bin path."""
    root = str(root)
    dictionary.save(os.path.join(root, "dict.txt"))
    for split in ("train", "valid"):
        for lang in ("en", "de"):
            with open(os.path.join(root, f"{split}.{lang}"), "w") as f:
                f.write(lines)
    cli("fairseq-preprocess", "--user-dir", USER_DIR, "--task", "plm_translation", "-s", "en", "-t", "de",
        "--trainpref", os.path.join(root, "train"), "--validpref", os.path.join(root, "valid"),
        "--srcdict", os.path.join(root, "dict.txt"), "--tgtdict", os.path.join(root, "dict.txt"),
        "--destdir", os.path.join(root, "bin"), "--workers", "1")
    return os.path.join(root, "bin")


def make_wordpiece_vocab(text_files, path):
    """An mBERT-layout vocab.txt covering the text: mBERT's special ids in order ([PAD] 0,
    [unused*], [UNK], [CLS], [SEP], [MASK]), then single characters (also as ``##`` suffixes,
    so WordPiece never falls back to [UNK]) and frequent word starts."""
    from collections import Counter

    words, chars = Counter(), set()
    for f in text_files:
        with open(f, encoding="utf-8") as fd:
            for line in fd:
                for w in line.split():
                    words[w] += 1
                    chars.update(w)
    pieces = sorted(chars) + ["##" + c for c in sorted(chars)] + [w for w, n in words.most_common(300) if len(w) > 1]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(["[PAD]"] + [f"[unused{i}]" for i in range(5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                          + list(dict.fromkeys(pieces))) + "\n")
    return path


def make_tiny_mbert(plm_dir, vocab_txt, layers=4, hidden=32, heads=4, seed=0):
    """A tiny random mBERT (HF ``BertForMaskedLM`` layout) over ``vocab_txt``."""
    from fairseq_plm.plm.export import save_hf_bert

    with open(vocab_txt, encoding="utf-8") as f:
        size = sum(1 for line in f if line.rstrip("\n"))
    cfg = preset("mbert", vocab_size=size, hidden_size=hidden, num_layers=layers, num_heads=heads,
                 intermediate_size=4 * hidden, max_positions=128)
    model = BertEncoder(cfg).init_random(seed)
    save_hf_bert(model, plm_dir, vocab_txt)
    return model


def make_tiny_fusion_setup(root, corpus_raw, nmt_vocab=200):
    """Deep-fusion data from one fairseq-preprocess run: English source in a tiny mBERT's
    WordPiece vocabulary, German target in its own sentencepiece vocabulary."""
    plm, tok, data = (os.path.join(root, d) for d in ("plm", "tok", "data-bin"))
    os.makedirs(tok, exist_ok=True)
    vocab = make_wordpiece_vocab([os.path.join(corpus_raw, "train.en"), os.path.join(corpus_raw, "train.de")],
                                 os.path.join(root, "vocab.txt"))
    make_tiny_mbert(plm, vocab)
    nmt = make_spm([os.path.join(corpus_raw, "train.de")], os.path.join(root, "nmt"), vocab_size=nmt_vocab)
    sp = spm.SentencePieceProcessor()
    sp.Load(nmt)
    splits = ("train", "valid", "test")
    cli("fairseq-plm-encode", "--tokenizer", plm, "--inputs", *[os.path.join(corpus_raw, f"{s}.en") for s in splits],
        "--outputs", *[os.path.join(tok, f"{s}.en") for s in splits])
    for s in splits:
        with open(os.path.join(corpus_raw, f"{s}.de"), encoding="utf-8") as fin, \
                open(os.path.join(tok, f"{s}.de"), "w", encoding="utf-8") as fout:
            for line in fin:
                fout.write(" ".join(sp.EncodeAsPieces(line.strip())) + "\n")
    cli("fairseq-preprocess", "--user-dir", USER_DIR, "--task", "fusion_translation", "-s", "en", "-t", "de",
        "--trainpref", os.path.join(tok, "train"), "--validpref", os.path.join(tok, "valid"),
        "--testpref", os.path.join(tok, "test"), "--srcdict", plm, "--nwordstgt", "30000",
        "--destdir", data, "--workers", "1")
    return {"raw": corpus_raw, "plm": plm, "tok": tok, "data": data, "nmt_spm": nmt}


def table_rows(out, header=None):
    """The rows of the (first) markdown table in a recipe's output, or of the first one after
    ``header``, as lists of cells."""
    lines = (out if header is None else out[out.index(header):]).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| ---"))
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def translation_task(data, split="test"):
    """A plm_translation task (En-De) on ``data`` with ``split`` loaded."""
    from fairseq_plm.tasks.plm_translation import PLMTranslationConfig, PLMTranslationTask

    cfg = PLMTranslationConfig(data=data, source_lang="en", target_lang="de", dataset_impl=None,
                               train_subset="train", required_seq_len_multiple=1, seed=1)
    t = PLMTranslationTask.setup_task(cfg)
    t.load_dataset(split)
    return t
