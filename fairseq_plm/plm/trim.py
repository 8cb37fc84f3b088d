"""Vocabulary trimming of a PLM directory: keep the pieces a corpus uses (plus the special
symbols), re-index the embedding and output rows, and rewrite the tokenizer so it still
works; written as a new HuggingFace-format PLM directory that ``--plm`` accepts
(``fairseq-plm-trim-vocab``, the command line of ``cli/trim_vocab.py``).

As multilingual vocabulary-trimming tools do for mT5 / XLM-R: a model used for a few languages
keeps only their pieces, so its embedding and output layers (at mGPT/XLM-R scale about as large
as the body) shrink to the kept pieces. What stays the same:

* the kept pieces keep their order: new id = rank of the old id among the kept ones; the
  special symbols are always kept and, since they come first in every supported layout, keep
  their ids (mT5/mGPT pad 0, eos 1, unk 2; XLM-R <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last;
  mBERT [PAD] 0 ...);
* the tokenizer: for a sentencepiece *unigram* model (mT5/mGPT, XLM-R) only the unused pieces
  are removed from its ModelProto, with their scores unchanged, so the best segmentation of any
  text whose pieces were all kept is unchanged (every segmentation still possible was possible
  before, and the old best is still there); WordPiece's greedy longest match likewise. BPE
  sentencepiece models are refused (their merges need intermediate pieces);
* the body of the network, bit for bit: on in-corpus text the trimmed PLM's logits are the
  original's at the kept pieces.

mT5's 100 sentinel embeddings beyond the sentencepiece model (``<extra_id_*>``) are dropped:
no tokenizer emits them. The ids of the trimmed directory are consistent with the fairseq
dictionary this package builds from it (``plm/vocab.py``), so data must be binarized again with
``--srcdict/--tgtdict <trimmed dir>`` (the tokenized text itself does not change).
``original_ids.txt`` lists, per new id, the original id.
"""

import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from typing import Iterable, List, Optional

import torch

from .errors import FairseqPLMError
from .loading import describe, load_plm
from .vocab import load_dictionary, make_encoder, tokenizer_file

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _proto(path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    return m


def _spm_kind(m):
    from sentencepiece import sentencepiece_model_pb2 as pb

    return pb.TrainerSpec.ModelType.Name(m.trainer_spec.model_type)


def special_ids(dictionary) -> set:
    """Ids a trimmed vocabulary always keeps: pad/eos/unk/bos/mask and, for sentencepiece
    layouts, every id below them (XLM-R's four fairseq specials)."""
    ids = {dictionary.pad(), dictionary.eos(), dictionary.unk(), dictionary.bos()}
    if getattr(dictionary, "mask_index", None) is not None:
        ids.add(dictionary.mask_index)
    if dictionary.kind in ("t5", "xlmr"):
        ids |= set(range(max(dictionary.pad(), dictionary.eos(), dictionary.unk(), dictionary.bos()) + 1))
    return ids


def corpus_ids(plm_dir, dictionary, files: Iterable[str], min_count=1):
    """Ids (and counts) of the pieces the PLM's tokenizer makes of every line of ``files``."""
    encode = make_encoder(plm_dir)
    counts = Counter()
    for path in files:
        if not os.path.exists(path):
            raise FairseqPLMError(f"--corpus {path}: file not found")
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts.update(dictionary.index(p) for p in encode(line.strip()))
    return {i for i, n in counts.items() if n >= min_count}, counts


def pieces_file_ids(path, dictionary):
    """Ids of the pieces listed in ``path`` (first field per line, # comments)."""
    ids = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if fields[0] not in dictionary.indices:
                raise FairseqPLMError(f"{path}, line {n}: {fields[0]!r} is not a piece of the PLM's vocabulary")
            ids.add(dictionary.indices[fields[0]])
    return ids


def _trimmed_spm(spm_path, dictionary, kept: List[int], out_path):
    """Write the sentencepiece model whose pieces are the kept ones, in new-id order."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = _proto(spm_path)
    kind = _spm_kind(m)
    if kind != "UNIGRAM":
        raise FairseqPLMError(f"{spm_path} is a {kind} sentencepiece model; only unigram models (mT5/mGPT, XLM-R) "
                              f"can be trimmed without changing the tokenization")
    by_piece = {p.piece: p for p in m.pieces}
    if dictionary.kind == "t5":
        order = [i for i in kept if i < len(m.pieces)]           # sentencepiece id == PLM id
        pieces = [m.pieces[i] for i in order]
    else:  # xlmr: spm pieces 0..2 (<unk> <s> </s>), then the kept PLM symbols 4..V-2 by string
        head = list(m.pieces[:3])
        body = []
        for i in kept:
            if i < 4 or i == dictionary.mask_index:
                continue
            sym = dictionary.symbols[i]
            if sym not in by_piece:
                raise FairseqPLMError(f"{spm_path} has no piece {sym!r} (id {i} of the PLM's dictionary)")
            body.append(by_piece[sym])
        pieces = head + body
    keep_types = (pb.ModelProto.SentencePiece.UNKNOWN, pb.ModelProto.SentencePiece.CONTROL)
    if m.trainer_spec.byte_fallback:
        keep_types += (pb.ModelProto.SentencePiece.BYTE,)
    missing = [p for p in m.pieces if p.type in keep_types and p.piece not in {q.piece for q in pieces}]
    if missing and dictionary.kind == "t5":
        raise FairseqPLMError(f"{spm_path}: trimming would drop the special piece {missing[0].piece!r}")
    new = pb.ModelProto()
    new.CopyFrom(m)
    del new.pieces[:]
    for p in pieces:
        new.pieces.add().CopyFrom(p)
    if m.trainer_spec.byte_fallback:  # byte pieces must stay (unknown characters fall back to them)
        have = {p.piece for p in new.pieces}
        for p in m.pieces:
            if p.type == pb.ModelProto.SentencePiece.BYTE and p.piece not in have:
                raise FairseqPLMError(f"{spm_path} uses byte fallback: keep its byte pieces (e.g. {p.piece!r}) "
                                      f"with --keep-pieces")
    new.trainer_spec.vocab_size = len(new.pieces)
    with open(out_path, "wb") as f:
        f.write(new.SerializeToString())


def trim_plm(plm_dir, out_dir, corpus: Iterable[str] = (), keep_pieces: Optional[str] = None, min_count=1,
             dtype="auto", check_lines=2000):
    """Write the trimmed PLM to ``out_dir`` (which must not exist) and return a summary dict."""
    plm_dir = os.path.abspath(plm_dir)
    if os.path.exists(out_dir):
        raise FairseqPLMError(f"--out {out_dir} exists; choose a new directory (nothing is overwritten)")
    kind = describe(plm_dir)
    if kind == "preset":
        raise FairseqPLMError(f"--plm {plm_dir}: a preset has no vocabulary to trim; pass a PLM directory")
    tok = tokenizer_file(plm_dir)
    if tok is None:
        raise FairseqPLMError(f"--plm {plm_dir} has no tokenizer file (spiece.model, sentencepiece.bpe.model, "
                              f"vocab.txt)")
    model = load_plm(plm_dir)
    c = model.cfg
    dictionary = load_dictionary(plm_dir, family=c.family, vocab_size=c.vocab_size)
    # (a fairseq XLM-R directory's dict.txt order is kept: the rewritten sentencepiece model
    # lists the kept pieces in that order, looked up by string; the output is in HF format)
    if len(dictionary) > c.vocab_size:
        raise FairseqPLMError(f"{tok} has {len(dictionary)} symbols but the PLM only {c.vocab_size} embeddings")
    files = list(corpus)
    if not files and not keep_pieces:
        raise FairseqPLMError("nothing to keep: pass --corpus FILE... (and/or --keep-pieces FILE)")
    used, counts = corpus_ids(plm_dir, dictionary, files, min_count) if files else (set(), Counter())
    keep = used | special_ids(dictionary)
    if keep_pieces:
        keep |= pieces_file_ids(keep_pieces, dictionary)
    if dictionary.kind == "t5":
        spm_size = len(_proto(tok).pieces)
        keep = {i for i in keep if i < spm_size}  # mT5's <extra_id_*> sentinels go
    kept = sorted(keep)
    index = torch.tensor(kept, dtype=torch.long)

    # the trimmed model: same body, embedding/output rows (and the MLM bias) of the kept ids
    new_cfg = c.replace(vocab_size=len(kept))
    if c.pad_token_id is not None:
        new_cfg = new_cfg.replace(pad_token_id=kept.index(c.pad_token_id))
    trimmed = type(model)(new_cfg)
    state = model.state_dict()
    vocab_keys = {"wte.weight", "lm_head.weight", "word_embeddings.weight", "lm_head.bias"}
    new_state = {k: (v.index_select(0, index) if k in vocab_keys and v.size(0) == c.vocab_size else v)
                 for k, v in state.items()}
    trimmed.load_state_dict(new_state, strict=True)
    target_dtype = _dtype(plm_dir, dtype)
    trimmed.to(target_dtype)

    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".trim-", dir=parent)
    try:
        from .export import save_hf_bert, save_hf_gpt2, save_hf_roberta

        if dictionary.kind in ("t5", "xlmr"):
            new_tok = os.path.join(tmp, "tokenizer.model")
            _trimmed_spm(tok, dictionary, kept, new_tok)
        else:
            new_tok = os.path.join(tmp, "vocab.txt.new")
            with open(new_tok, "w", encoding="utf-8") as f:
                f.write("".join(dictionary.symbols[i] + "\n" for i in kept))
        out_tmp = os.path.join(tmp, "plm")
        if c.family == "gpt2":
            save_hf_gpt2(trimmed, out_tmp, new_tok)
        elif c.family == "roberta":
            save_hf_roberta(trimmed, out_tmp, new_tok)
        else:
            save_hf_bert(trimmed, out_tmp, new_tok)
        with open(os.path.join(out_tmp, "original_ids.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in kept))
        summary = {"source": plm_dir, "corpus": [os.path.abspath(p) for p in files], "keep_pieces": keep_pieces,
                   "min_count": min_count, "kept": len(kept), "of": c.vocab_size,
                   "corpus_tokens": sum(counts.values()), "dtype": str(target_dtype).replace("torch.", "")}
        summary.update(_check(plm_dir, out_tmp, dictionary, kept, files, check_lines))
        with open(os.path.join(out_tmp, "trim_vocab.json"), "w") as f:
            json.dump(summary, f, indent=1)
        umask = os.umask(0)
        os.umask(umask)
        for name in os.listdir(out_tmp):  # ordinary permissions (some writers create files 0600)
            os.chmod(os.path.join(out_tmp, name), 0o666 & ~umask)
        os.rename(out_tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _dtype(plm_dir, dtype):
    """--dtype; ``auto``: config.json's torch_dtype/dtype, else the stored dtype of the weights
    (safetensors), else float32."""
    if dtype != "auto":
        return DTYPES[dtype]
    cfg = os.path.join(plm_dir, "config.json")
    if os.path.exists(cfg):
        with open(cfg, encoding="utf-8") as f:
            c = json.load(f)
        name = c.get("torch_dtype") or c.get("dtype")
        if name in DTYPES:
            return DTYPES[name]
    path = os.path.join(plm_dir, "model.safetensors")
    if os.path.exists(path):
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            kinds = {f.get_slice(k).get_dtype() for k in f.keys()}
        if len(kinds) == 1 and next(iter(kinds)) in SAFETENSORS_DTYPES:
            return SAFETENSORS_DTYPES[kinds.pop()]
    return torch.float32


def _check(old_dir, new_dir, old_dict, kept, files, max_lines):
    """Tokenization of the first ``max_lines`` corpus lines with both tokenizers: same pieces,
    and ids that map back to the original ones. Raises if anything differs."""
    new_dict = load_dictionary(new_dir)
    if [old_dict.symbols[i] for i in kept] != list(new_dict.symbols):
        raise FairseqPLMError("internal error: the trimmed dictionary does not list the kept pieces in order")
    old_enc, new_enc = make_encoder(old_dir), make_encoder(new_dir)
    checked = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if checked >= max_lines:
                    break
                a, b = old_enc(line.strip()), new_enc(line.strip())
                if a != b:
                    raise FairseqPLMError(f"{path}: the trimmed tokenizer splits {line.strip()[:60]!r} differently "
                                          f"({a[:8]} vs {b[:8]})")
                checked += 1
    return {"tokenization_checked_lines": checked}
