"""Loading pre-trained LMs from the files users actually hold.

``load_plm(path)`` takes a local directory, a Hugging Face Hub id (``org/name[@revision]``,
resolved through the standard cache by ``hub.py``) or a preset name (with ``random_init``).

Published layouts, each with a parity test (``tests/test_plm_layouts.py``: a tiny file in exactly
that layout, loaded by us and by transformers or fairseq, same logits):

GPT-2 family (mGPT, GPT-2): HF GPT-2 names; Conv1D matrices are stored [in, out] and transposed here.
  * ``THUMT/mGPT`` (the MSP paper's PLM; its model card loads it with ``MT5Tokenizer`` and
    ``GPT2LMHeadModel``): ``config.json`` written by transformers 4.x (every field, model_type gpt2),
    ``pytorch_model.bin`` (torch zip pickle) of a ``GPT2LMHeadModel``: ``transformer.`` prefix, the tied
    ``lm_head.weight`` stored, the persistent buffers of transformers 4.x (``attn.bias`` causal mask,
    ``attn.masked_bias``); ``spiece.model`` (mT5's sentencepiece). fp32 or fp16.
  * ``openai-community/gpt2`` ``pytorch_model.bin``: ``GPT2Model`` names (no prefix, no ``lm_head``:
    tied), ``h.N.attn.bias`` / ``h.N.attn.masked_bias`` buffers, the pre-1.6 legacy (non-zip) pickle
    format; its ``model.safetensors`` has the same names.
  * today's ``save_pretrained`` (transformers >= 4.35 and 5): ``model.safetensors`` or shards +
    ``model.safetensors.index.json``, tied ``lm_head`` omitted, any float dtype.
BERT family (mBERT):
  * ``google-bert/bert-base-multilingual-cased`` ``pytorch_model.bin``: a ``BertForPreTraining``
    converted from Google's TF checkpoint by pytorch-pretrained-BERT: ``bert.`` prefix, LayerNorm
    ``gamma`` / ``beta`` (transformers renames them on load, as we do), MLM head ``cls.predictions.*``
    with the tied ``decoder.weight`` stored, NSP head ``cls.seq_relationship.*`` and pooler (unused
    here), legacy pickle; its ``model.safetensors`` has the same names (tied tensor once).
  * transformers 3.x-4.30 ``save_pretrained`` (zip pickle): ``LayerNorm.weight/bias``, the persistent
    ``embeddings.position_ids`` buffer, ``cls.predictions.decoder.bias`` next to ``cls.predictions.bias``.
  * today's ``save_pretrained`` (safetensors, sharded or not); a bare ``BertModel`` (no MLM head: the
    head keeps its initialisation).
XLM-R / RoBERTa:
  * ``FacebookAI/xlm-roberta-{base,large}`` ``pytorch_model.bin``: ``XLMRobertaForMaskedLM`` converted
    from fairseq by transformers 2.x: ``roberta.`` prefix, one (zero) token-type embedding, pooler
    (unused), ``lm_head.decoder.weight`` tied and stored, legacy pickle; ``model.safetensors``: same names.
  * fairseq's released ``xlmr.base`` / ``xlmr.large`` ``model.pt`` (2019 tarballs, fairseq 0.9):
    ``{'args': argparse.Namespace, 'model': ...}`` with ``decoder.sentence_encoder.*``,
    ``emb_layer_norm``, ``decoder.lm_head.*`` (tied ``weight`` stored); self-attention as
    ``q_proj/k_proj/v_proj`` or, in checkpoints of fairseq < 0.9 (the 2019 RoBERTa releases), one fused
    ``in_proj_weight/in_proj_bias`` (rows q, k, v) -- the renames fairseq's own
    ``RobertaModel.upgrade_state_dict_named`` / ``MultiheadAttention.upgrade_state_dict_named`` apply.
  * today's fairseq (>= 0.10): ``encoder.sentence_encoder.*``, ``layernorm_embedding``,
    ``encoder.lm_head.*``, ``args`` None and the model config under ``cfg['model']``.
Not supported (one clear error): TF checkpoints (``bert_model.ckpt.*``), TF/Flax/ONNX weights,
MLM heads not tied to the word embeddings.

Memory: the model is built on the meta device and every tensor goes straight into its parameter
(safetensors: read into its final buffer with plain reads, no mmap; torch pickles: the unpickled tensor
itself becomes the parameter, each source released once used), so peak RSS is about the fp32 weights
plus one tensor (``benchmarks/bench_loading.py``, figures in ``benchmarks/RESULTS.md``).
"""

import json
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .bert import BertEncoder, MLMHead
from .config import PRESETS, PLMConfig, preset
from .errors import FairseqPLMError
from .gpt import GPT
from .modules import PretrainedLM


class PLMLoadError(FairseqPLMError):
    """A PLM could not be loaded; the message names the file or setting at fault."""


def build_model(cfg: PLMConfig) -> PretrainedLM:
    return GPT(cfg) if cfg.family == "gpt2" else BertEncoder(cfg)


# ---------------------------------------------------------------- configs

def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PLMLoadError(f"{path} is not valid JSON: {e}") from None


def _activation(c, key, default):
    """The activation named in config.json; HF's gelu_pytorch_tanh is GPT-2's gelu_new."""
    name = c.get(key, default)
    return "gelu_new" if name == "gelu_pytorch_tanh" else name


def _gpt2_pad(c):
    """GPT-2 fine-tunes often set pad = eos (or bos); then padding can't be told from ids."""
    pad = c.get("pad_token_id")
    return None if pad is not None and pad in (c.get("eos_token_id"), c.get("bos_token_id")) else pad


_ARCHITECTURE_TYPES = (("GPT2", "gpt2"), ("XLMRoberta", "xlm-roberta"), ("Roberta", "roberta"), ("Bert", "bert"))


def _model_type(c):
    """``model_type``; configs written before transformers 2.x (Google's BERT configs) lack it:
    then the architecture name, or GPT-2's / BERT's own field names, tell."""
    if c.get("model_type"):
        return c["model_type"]
    for arch in c.get("architectures") or []:
        for prefix, model_type in _ARCHITECTURE_TYPES:
            if arch.startswith(prefix):
                return model_type
    if "n_embd" in c:
        return "gpt2"
    if c.get("type_vocab_size") == 2 and "hidden_size" in c:  # Google's bert_config.json
        return "bert"
    return None


def config_from_hf(path: str) -> PLMConfig:
    """PLMConfig from a HuggingFace ``config.json``."""
    c = _read_json(path)
    model_type = _model_type(c)
    try:
        if model_type == "gpt2":
            d = c["n_embd"]
            return PLMConfig(
                family="gpt2", vocab_size=c["vocab_size"], hidden_size=d, num_layers=c["n_layer"],
                num_heads=c["n_head"], intermediate_size=c.get("n_inner") or 4 * d,
                max_positions=c.get("n_positions", c.get("n_ctx", 1024)),
                layer_norm_eps=c.get("layer_norm_epsilon", 1e-5),
                activation=_activation(c, "activation_function", "gelu_new"),
                dropout=c.get("resid_pdrop", 0.1), attention_dropout=c.get("attn_pdrop", 0.1),
                pad_token_id=_gpt2_pad(c),
                tie_word_embeddings=c.get("tie_word_embeddings", True),
            )
        if model_type in ("bert", "xlm-roberta", "roberta"):
            roberta = model_type != "bert"
            pad = c.get("pad_token_id", 1 if roberta else 0)
            return PLMConfig(
                family="roberta" if roberta else "bert", vocab_size=c["vocab_size"],
                hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
                num_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
                max_positions=c["max_position_embeddings"],
                layer_norm_eps=c.get("layer_norm_eps", 1e-12),
                activation=_activation(c, "hidden_act", "gelu"),
                dropout=c.get("hidden_dropout_prob", 0.1),
                attention_dropout=c.get("attention_probs_dropout_prob", 0.1),
                type_vocab_size=c.get("type_vocab_size", 2), pad_token_id=pad,
                position_offset=pad + 1 if roberta else 0,
            )
    except KeyError as e:
        raise PLMLoadError(f"{path} lacks the field {e.args[0]!r} needed for a {model_type} model") from None
    except FairseqPLMError as e:
        raise PLMLoadError(f"{path}: {e}") from None
    raise PLMLoadError(
        f"{path}: model_type {model_type!r} is not supported (expected gpt2, bert, xlm-roberta or roberta)"
    )


# ---------------------------------------------------------------- weight files

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class WeightFile:
    """Tensors of one checkpoint: ``names``, ``shape``/``dtype`` without reading data, ``build``
    (one parameter from one or more tensors, which the file then forgets), ``equal``."""

    kind = "?"

    def __init__(self, path):
        self.path = path

    def names(self) -> List[str]:
        raise NotImplementedError

    def shape(self, name) -> Tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, name) -> torch.dtype:
        raise NotImplementedError

    def build(self, op, sources, shape, dtype) -> torch.Tensor:
        """A new contiguous ``dtype`` tensor of ``shape`` from ``sources``: "copy" one tensor,
        "t" transpose a matrix, "cat" concatenate along dim 0."""
        raise NotImplementedError

    def equal(self, a, b) -> bool:
        raise NotImplementedError

    def discard(self, names):
        pass


class TorchWeightFile(WeightFile):
    """A ``torch.save``d state dict (zip or legacy pickle), unpickled at once: a tensor already in
    the model's dtype becomes the parameter as it is; every tensor is dropped once used."""

    def __init__(self, path, state, kind):
        super().__init__(path)
        self.state = state
        self.kind = kind

    def names(self):
        return list(self.state)

    def shape(self, name):
        return tuple(self.state[name].shape)

    def dtype(self, name):
        return self.state[name].dtype

    def build(self, op, sources, shape, dtype):
        if op == "copy":
            t = self.state.pop(sources[0])
            if t.dtype == dtype and t.is_contiguous() and t.untyped_storage().nbytes() == t.nbytes:
                return t  # no copy: the unpickled storage becomes the parameter
            return t.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
        out = torch.empty(shape, dtype=dtype)
        if op == "t":
            out.copy_(self.state.pop(sources[0]).t())
        else:
            row = 0
            for name in sources:
                t = self.state.pop(name)
                out[row:row + t.size(0)].copy_(t)
                row += t.size(0)
        return out

    def equal(self, a, b):
        x, y = self.state[a], self.state[b]
        return x.shape == y.shape and (x.data_ptr() == y.data_ptr() or torch.equal(x, y))

    def discard(self, names):
        for n in names:
            self.state.pop(n, None)


class SafetensorsFile(WeightFile):
    """One or several (sharded) ``.safetensors`` files. Headers are parsed up front; tensor data is
    read with plain reads into the parameter's own buffer (through one small staging buffer when
    it must be converted or transposed), so nothing is mapped, held twice, or left as a hole in
    the heap."""

    STAGING_BYTES = 1 << 22

    def __init__(self, path, shards):
        super().__init__(path)
        self.kind = "safetensors" if len(shards) == 1 else f"safetensors, {len(shards)} shards"
        self.entries = {}  # name -> (file, dtype, shape, start, end) with absolute byte offsets
        for shard in shards:
            for name, entry in _safetensors_header(shard).items():
                if name in self.entries:
                    raise PLMLoadError(f"{shard}: tensor {name!r} is also in {self.entries[name][0]}")
                self.entries[name] = entry
        self._staging = None

    def names(self):
        return list(self.entries)

    def shape(self, name):
        return self.entries[name][2]

    def dtype(self, name):
        return self.entries[name][1]

    def _read_into(self, f, name, start, buf):
        """Bytes [start, start + len(buf)) of tensor ``name`` into the uint8 tensor ``buf``."""
        path, _, _, begin, _ = self.entries[name]
        f.seek(begin + start)
        view = memoryview(buf.numpy())
        got = 0
        while got < len(view):
            n = f.readinto(view[got:])
            if not n:
                raise PLMLoadError(f"{path} is truncated: tensor {name!r} ends beyond the end of the file")
            got += n

    def _fill(self, name, out, transpose=False):
        """Tensor ``name`` into ``out`` (contiguous; its transpose when ``transpose``)."""
        path, stored, shape, begin, end = self.entries[name]
        with open(path, "rb") as f:
            if stored == out.dtype and not transpose:
                self._read_into(f, name, 0, out.view(-1).view(torch.uint8))
                return
            if self._staging is None:
                self._staging = torch.empty(self.STAGING_BYTES, dtype=torch.uint8)
            row_bytes = (shape[-1] if shape else 1) * stored.itemsize
            rows = max(1, self.STAGING_BYTES // row_bytes)
            if row_bytes > self.STAGING_BYTES:  # one row does not fit: plain elementwise chunks
                rows, row_bytes = 1, (self.STAGING_BYTES // stored.itemsize) * stored.itemsize
            flat = out.view(-1)
            for first in range(0, end - begin, rows * row_bytes):
                n = min(rows * row_bytes, end - begin - first)
                buf = self._staging[:n]
                self._read_into(f, name, first, buf)
                chunk = buf.view(stored)
                if transpose:  # rows r..r+k of the [a, b] file matrix are columns r..r+k of out [b, a]
                    r = first // row_bytes
                    out[:, r:r + n // row_bytes].copy_(chunk.view(-1, shape[1]).t())
                else:
                    e = first // stored.itemsize
                    flat[e:e + chunk.numel()].copy_(chunk)

    def build(self, op, sources, shape, dtype):
        out = torch.empty(shape, dtype=dtype)
        if op == "copy":
            self._fill(sources[0], out)
        elif op == "t":
            self._fill(sources[0], out, transpose=True)
        else:
            row = 0
            for name in sources:
                n = self.shape(name)[0]
                self._fill(name, out[row:row + n])
                row += n
        return out

    def equal(self, a, b):
        """Compare chunk by chunk (an MLM decoder stored next to the embedding it is tied to)."""
        if self.shape(a) != self.shape(b) or self.dtype(a) != self.dtype(b):
            return False
        size = self.entries[a][4] - self.entries[a][3]
        step = 1 << 24
        with open(self.entries[a][0], "rb") as fa, open(self.entries[b][0], "rb") as fb:
            for i in range(0, size, step):
                x, y = (torch.empty(min(step, size - i), dtype=torch.uint8) for _ in "ab")
                self._read_into(fa, a, i, x)
                self._read_into(fb, b, i, y)
                if not torch.equal(x, y):
                    return False
        return True


def _safetensors_header(path):
    """{name: (path, dtype, shape, start, end)} from a safetensors header, validated against the file size."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8:
                raise ValueError(f"header length {n} exceeds the file size {size}")
            header = json.loads(f.read(n))
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in _SAFETENSORS_DTYPES:
                raise ValueError(f"tensor {name!r} has dtype {info['dtype']}, which is not supported")
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, end = (8 + n + int(o) for o in info["data_offsets"])
            numel = 1
            for s in shape:
                numel *= s
            if end - start != numel * dtype.itemsize:
                raise ValueError(f"tensor {name!r}: {end - start} bytes for shape {shape} {info['dtype']}")
            if end > size:
                raise ValueError(f"truncated: tensor {name!r} ends at byte {end} of {size}")
            out[name] = (path, dtype, shape, start, end)
        return out
    except FileNotFoundError:
        raise PLMLoadError(f"weights file not found: {path}") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise PLMLoadError(f"{path} is not a valid safetensors file: {e}") from None


def _is_zip(path):
    import zipfile

    return zipfile.is_zipfile(path)


def _torch_state(path):
    """A weights-only ``torch.load`` of a state dict (what transformers and the hub's .bin files hold)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated file
        raise PLMLoadError(f"cannot read weights from {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise PLMLoadError(f"{path} does not hold a state dict of tensors")
    return obj


def open_weights(path: str) -> WeightFile:
    """The tensors of a safetensors / torch file, or of the shards a ``*.index.json`` lists."""
    if not os.path.exists(path):
        raise PLMLoadError(f"weights file not found: {path}")
    if path.endswith(".index.json"):
        index = _read_json(path)
        try:
            shards = sorted(set(index["weight_map"].values()))
        except (KeyError, AttributeError, TypeError):
            raise PLMLoadError(f"{path} has no weight_map (not a sharded-checkpoint index)") from None
        shards = [os.path.join(os.path.dirname(path), s) for s in shards]
        if path.endswith(".safetensors.index.json"):
            return SafetensorsFile(path, shards)
        state = {}
        for shard in shards:
            state.update(_torch_state(shard))
        return TorchWeightFile(path, state, f"torch pickle, {len(shards)} shards")
    if path.endswith(".safetensors"):
        return SafetensorsFile(path, [path])
    kind = "torch zip pickle" if _is_zip(path) else "torch legacy pickle"
    return TorchWeightFile(path, _torch_state(path), kind)


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """All tensors of a weights file (or sharded index) as a dict, as stored."""
    weights = open_weights(path)
    return {n: weights.build("copy", [n], weights.shape(n), weights.dtype(n)) for n in weights.names()}


# ---------------------------------------------------------------- name mapping
# A mapper turns the file's tensor names into a plan {our name: (op, [file names])}:
#   "copy" one tensor, "t" transpose a matrix (GPT-2's Conv1D), "cat" concatenate along dim 0
#   (separate q, k, v projections -> our fused qkv). A missing name raises KeyError(name).

@dataclass
class Layout:
    """What ``load_plm`` found in the files (reported by ``fairseq-plm-inspect``)."""

    format: str = ""  # "HuggingFace" / "fairseq" / "preset"
    weights: str = ""  # the weights file, relative to the PLM directory
    storage: str = ""  # "safetensors", "torch zip pickle", "torch legacy pickle", ...
    dtypes: Dict[str, int] = field(default_factory=dict)  # parameter count (elements) per file dtype
    prefix: str = ""
    notes: List[str] = field(default_factory=list)
    ignored: Dict[str, int] = field(default_factory=dict)  # unused tensors, grouped by name pattern

    def describe(self) -> str:
        parts = [self.format]
        if self.weights:
            parts.append(f"{self.weights} ({self.storage})")
        if self.dtypes:
            parts.append("/".join(self.dtypes))
        if self.prefix or self.format != "preset":
            parts.append(f"prefix {self.prefix!r}" if self.prefix else "no name prefix")
        parts += self.notes
        if self.ignored:
            parts.append("ignored: " + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in self.ignored.items()))
        return "; ".join(parts)


class _Names:
    """File names seen through a stripped prefix; ``[short]`` gives the full name or KeyError(short)."""

    def __init__(self, names, prefixes):
        self.all = set(names)
        self.prefix = next((p for p in prefixes if any(n.startswith(p) for n in names)), "")
        self.short = {(n[len(self.prefix):] if self.prefix and n.startswith(self.prefix) else n): n
                      for n in names}

    def __getitem__(self, short):
        return self.short[short]

    def __contains__(self, short):
        return short in self.short

    def get(self, short):
        return self.short.get(short)


def map_gpt2(names, cfg, layout):
    """HF GPT-2 names -> ours. GPT-2 uses Conv1D ([in, out]) so its matrices are transposed."""
    n = _Names(names, ["transformer."])
    layout.prefix = n.prefix
    plan = {k: ("copy", [n[k]]) for k in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")}
    if not cfg.tie_word_embeddings:
        plan["lm_head.weight"] = ("copy", [n["lm_head.weight"]])
    elif "lm_head.weight" in n:
        layout.notes.append("tied lm_head.weight stored (not read)")
    else:
        layout.notes.append("tied lm_head omitted")
    for i in range(cfg.num_layers):
        s, o = f"h.{i}.", f"blocks.{i}."
        for ln in ("ln_1", "ln_2"):
            plan[o + ln + ".weight"] = ("copy", [n[s + ln + ".weight"]])
            plan[o + ln + ".bias"] = ("copy", [n[s + ln + ".bias"]])
        for src, dst in (("attn.c_attn", "attn.qkv"), ("attn.c_proj", "attn.proj"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            plan[o + dst + ".weight"] = ("t", [n[s + src + ".weight"]])
            plan[o + dst + ".bias"] = ("copy", [n[s + src + ".bias"]])
    layout.notes.append("Conv1D [in, out] matrices")
    return plan


def _ln(n, name, layout):
    """LayerNorm parameters, accepting the gamma/beta names of pytorch-pretrained-BERT."""
    if name + ".weight" in n:
        return n[name + ".weight"], n[name + ".bias"]
    if name + ".gamma" in n:
        if "LayerNorm gamma/beta names" not in layout.notes:
            layout.notes.append("LayerNorm gamma/beta names")
        return n[name + ".gamma"], n[name + ".beta"]
    raise KeyError(name + ".weight")


def map_hf_bert(names, cfg, layout):
    """HF BERT / RoBERTa / XLM-R names (MaskedLM, PreTraining or bare model) -> ours."""
    n = _Names(names, ["bert.", "roberta."])
    layout.prefix = n.prefix
    e = "embeddings."
    plan = {"word_embeddings.weight": ("copy", [n[e + "word_embeddings.weight"]]),
            "position_embeddings.weight": ("copy", [n[e + "position_embeddings.weight"]])}
    if cfg.type_vocab_size > 0:
        plan["token_type_embeddings.weight"] = ("copy", [n[e + "token_type_embeddings.weight"]])
    w, b = _ln(n, e + "LayerNorm", layout)
    plan["emb_ln.weight"], plan["emb_ln.bias"] = ("copy", [w]), ("copy", [b])
    for i in range(cfg.num_layers):
        s, o = f"encoder.layer.{i}.", f"layers.{i}."
        q, k, v = (s + f"attention.self.{x}" for x in ("query", "key", "value"))
        plan[o + "attn.qkv.weight"] = ("cat", [n[q + ".weight"], n[k + ".weight"], n[v + ".weight"]])
        plan[o + "attn.qkv.bias"] = ("cat", [n[q + ".bias"], n[k + ".bias"], n[v + ".bias"]])
        for dst, src in (("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                         ("mlp.fc2", "output.dense")):
            plan[o + dst + ".weight"] = ("copy", [n[s + src + ".weight"]])
            plan[o + dst + ".bias"] = ("copy", [n[s + src + ".bias"]])
        for dst, src in (("attn_ln", "attention.output.LayerNorm"), ("mlp_ln", "output.LayerNorm")):
            w, b = _ln(n, s + src, layout)
            plan[o + dst + ".weight"], plan[o + dst + ".bias"] = ("copy", [w]), ("copy", [b])
    heads = [("cls.predictions.", "transform.dense", "transform.LayerNorm"),  # BERT MLM head
             ("lm_head.", "dense", "layer_norm")]  # RoBERTa / XLM-R MLM head
    for h, dense, norm in heads:
        if h + dense + ".weight" in n:
            plan["lm_head.dense.weight"] = ("copy", [n[h + dense + ".weight"]])
            plan["lm_head.dense.bias"] = ("copy", [n[h + dense + ".bias"]])
            w, b = _ln(n, h + norm, layout)
            plan["lm_head.ln.weight"], plan["lm_head.ln.bias"] = ("copy", [w]), ("copy", [b])
            bias = n.get(h + "bias") or n.get(h + "decoder.bias")
            if bias is None:
                raise KeyError(h + "bias")
            plan["lm_head.bias"] = ("copy", [bias])
            decoder = n.get(h + "decoder.weight")
            plan["?tied:" + (decoder or "")] = ("tied", [decoder, n[e + "word_embeddings.weight"]])
            break
    return plan


def map_fairseq_roberta(names, cfg, layout):
    """fairseq RoBERTa/XLM-R ``model.pt`` names -> ours (fairseq 0.9 and today's)."""
    n = _Names(names, ["encoder.sentence_encoder.", "decoder.sentence_encoder."])
    layout.prefix = n.prefix
    plan = {"word_embeddings.weight": ("copy", [n["embed_tokens.weight"]]),
            "position_embeddings.weight": ("copy", [n["embed_positions.weight"]])}
    ln = "layernorm_embedding" if "layernorm_embedding.weight" in n else "emb_layer_norm"
    if ln == "emb_layer_norm":
        layout.notes.append("emb_layer_norm (fairseq < 0.10 name)")
    plan["emb_ln.weight"], plan["emb_ln.bias"] = ("copy", [n[ln + ".weight"]]), ("copy", [n[ln + ".bias"]])
    fused = "layers.0.self_attn.in_proj_weight" in n
    layout.notes.append("fused in_proj_weight (fairseq < 0.9)" if fused else "q_proj/k_proj/v_proj")
    for i in range(cfg.num_layers):
        s, o = f"layers.{i}.", f"layers.{i}."
        a = s + "self_attn."
        if fused:  # fairseq's in_proj: rows q, k, v -- our qkv order
            plan[o + "attn.qkv.weight"] = ("copy", [n[a + "in_proj_weight"]])
            plan[o + "attn.qkv.bias"] = ("copy", [n[a + "in_proj_bias"]])
        else:
            plan[o + "attn.qkv.weight"] = ("cat", [n[a + f"{x}_proj.weight"] for x in "qkv"])
            plan[o + "attn.qkv.bias"] = ("cat", [n[a + f"{x}_proj.bias"] for x in "qkv"])
        for dst, src in (("attn.proj", "self_attn.out_proj"), ("attn_ln", "self_attn_layer_norm"),
                         ("mlp.fc1", "fc1"), ("mlp.fc2", "fc2"), ("mlp_ln", "final_layer_norm")):
            plan[o + dst + ".weight"] = ("copy", [n[s + src + ".weight"]])
            plan[o + dst + ".bias"] = ("copy", [n[s + src + ".bias"]])
    h = next((p for p in ("encoder.lm_head.", "decoder.lm_head.") if p + "dense.weight" in n.all), None)
    if h is not None:
        for dst, src in (("lm_head.dense", "dense"), ("lm_head.ln", "layer_norm")):
            plan[dst + ".weight"] = ("copy", [h + src + ".weight"])
            plan[dst + ".bias"] = ("copy", [h + src + ".bias"])
        plan["lm_head.bias"] = ("copy", [h + "bias"])
        if h + "weight" in n.all:
            plan["?tied:" + h + "weight"] = ("tied", [h + "weight", n["embed_tokens.weight"]])
    return plan


def _group(name):
    """A pattern for an unused tensor name (layer numbers replaced), for the inspector."""
    return re.sub(r"\.\d+\.", ".N.", name)


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _planned_shape(op, shapes):
    if op == "t":
        return tuple(reversed(shapes[0]))
    if op == "cat":
        return (sum(s[0] for s in shapes),) + tuple(shapes[0][1:])
    return shapes[0]


def _set_parameter(model, name, tensor):
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    setattr(module, leaf, nn.Parameter(tensor, requires_grad=getattr(module, leaf).requires_grad))


def load_weights(model: PretrainedLM, weights: WeightFile, mapper, source: str, layout: Optional[Layout] = None):
    """Map names, check every parameter's shape, then move each tensor into its parameter.
    ``model`` may live on the meta device: every parameter is replaced. Mismatches are reported
    against ``source``."""
    cfg = model.cfg
    layout = layout if layout is not None else Layout()
    names = weights.names()
    try:
        plan = mapper(names, cfg, layout)
    except KeyError as e:
        raise PLMLoadError(
            f"{source} lacks the tensor {e.args[0]!r} expected for a {cfg.num_layers}-layer "
            f"{cfg.family} model (wrong file, or config.json does not match the weights?)"
        ) from None
    layers_in_file = {int(m.group(1)) for k in names
                      if (m := re.search(r"(?:^|\.)(?:h|layer|layers)\.(\d+)\.", k))}
    if layers_in_file and max(layers_in_file) + 1 != cfg.num_layers:
        raise PLMLoadError(
            f"{source} holds {max(layers_in_file) + 1} layers but the config says "
            f"{cfg.num_layers}: config.json does not match the weights"
        )
    # an MLM decoder matrix stored next to the embeddings must be the embeddings (tied)
    for key in [k for k in plan if k.startswith("?tied:")]:
        _, (decoder, embeddings) = plan.pop(key)
        if decoder is None:
            layout.notes.append("tied MLM decoder omitted")
        elif not weights.equal(decoder, embeddings):
            raise PLMLoadError(f"{source} has an MLM output matrix not tied to the word embeddings "
                               f"({decoder}); untied MLM heads are not supported")
        else:
            layout.notes.append(f"tied MLM decoder stored ({decoder}, not read)")
    own = dict(model.named_parameters())
    fresh_head = "lm_head.bias" in own and "lm_head.bias" not in plan  # no MLM head shipped
    if fresh_head:
        layout.notes.append("no MLM head in the file: head left at its initialisation")
    expected = {k: tuple(p.shape) for k, p in own.items() if not (fresh_head and k.startswith("lm_head."))}
    missing = sorted(set(expected) - set(plan))
    bad = []
    for k in expected:
        if k in plan:
            shape = _planned_shape(plan[k][0], [weights.shape(s) for s in plan[k][1]])
            if shape != expected[k]:
                bad.append(f"{k}: file {shape} vs config {expected[k]}")
    if missing or bad:
        raise PLMLoadError(
            f"weights in {source} do not match the model config: "
            + "; ".join(([f"missing {', '.join(missing[:5])}"] if missing else []) + bad[:5])
        )
    used = {s for k in expected for s in plan[k][1]}
    unused = [k for k in names if k not in used]
    layout.ignored = dict(Counter(_group(k) for k in unused))
    dtypes = Counter()
    for name in used:
        dtypes[str(weights.dtype(name)).replace("torch.", "")] += _numel(weights.shape(name))
    layout.dtypes = dict(dtypes)
    weights.discard(unused)  # tied copies and buffers: release them before the big allocations
    # largest first: converting a file of another dtype (fp16) then peaks at the fp16 file plus the
    # fp32 embedding, below the fp32 model that follows
    for k in sorted(expected, key=lambda k: -own[k].numel()):
        op, sources = plan[k]
        _set_parameter(model, k, weights.build(op, sources, own[k].shape, own[k].dtype))
    if fresh_head:
        model.lm_head = MLMHead(cfg)
    return model


# ---------------------------------------------------------------- fairseq model.pt

def read_fairseq_checkpoint(path: str, what: str = "fairseq XLM-R checkpoint") -> dict:
    """The one place that unpickles a fairseq ``model.pt`` (args are an argparse.Namespace, or an
    omegaconf config under ``cfg``)."""
    from ..checkpoints import load_torch_file  # weights-only + fairseq's checkpoint types: runs no code

    try:
        ckpt = load_torch_file(path, what=what)
    except FairseqPLMError as e:
        raise PLMLoadError(str(e)) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise PLMLoadError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    return ckpt


def fairseq_roberta_config(ckpt: dict, path: str) -> PLMConfig:
    args = ckpt.get("args")
    if args is None and ckpt.get("cfg") is not None:
        args = ckpt["cfg"]["model"]
    get = (lambda k, d=None: getattr(args, k, d)) if args is not None and not isinstance(args, dict) \
        else (lambda k, d=None: (args or {}).get(k, d))
    if get("untie_weights_roberta", False):
        raise PLMLoadError(f"{path}: untie_weights_roberta checkpoints are not supported")
    state = ckpt["model"]
    emb = next((v for k, v in state.items() if k.endswith("sentence_encoder.embed_tokens.weight")), None)
    pos = next((v for k, v in state.items() if k.endswith("sentence_encoder.embed_positions.weight")), None)
    if emb is None or pos is None:
        raise PLMLoadError(f"{path} is not a fairseq RoBERTa/XLM-R checkpoint (no sentence_encoder embeddings)")
    layers = get("encoder_layers") or 1 + max(
        int(k.split("layers.")[1].split(".")[0]) for k in state if ".layers." in k)
    try:
        return PLMConfig(
            family="roberta", vocab_size=emb.size(0), hidden_size=emb.size(1), num_layers=layers,
            num_heads=get("encoder_attention_heads", 12),
            intermediate_size=get("encoder_ffn_embed_dim", 4 * emb.size(1)), max_positions=pos.size(0),
            layer_norm_eps=1e-5, activation=get("activation_fn", "gelu"),
            dropout=get("dropout", 0.1), attention_dropout=get("attention_dropout", 0.1),
            type_vocab_size=0, pad_token_id=1, position_offset=2,
        )
    except FairseqPLMError as e:
        raise PLMLoadError(f"{path}: {e}") from None


# ---------------------------------------------------------------- entry point

HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


def describe(path: str) -> str:
    """Which format a PLM path is in: 'preset', 'hf', 'fairseq' (hub ids: resolve them first)."""
    if path in PRESETS:
        return "preset"
    if not os.path.isdir(path):
        raise PLMLoadError(
            f"PLM path {path!r} is neither a directory, a Hugging Face Hub id (org/name[@revision]) "
            f"nor a preset ({', '.join(sorted(PRESETS))})"
        )
    if os.path.exists(os.path.join(path, "config.json")):
        return "hf"
    if os.path.exists(os.path.join(path, "model.pt")):
        return "fairseq"
    if any(f.startswith("bert_model.ckpt") for f in os.listdir(path)):
        raise PLMLoadError(f"{path} holds a TensorFlow BERT checkpoint; convert it to PyTorch first "
                           f"(transformers' BERT conversion script) and pass the converted directory")
    raise PLMLoadError(
        f"{path} holds neither config.json (HuggingFace format) nor model.pt (fairseq format)"
    )


def hf_weights_file(path: str) -> Optional[str]:
    return next((os.path.join(path, f) for f in HF_WEIGHT_FILES if os.path.exists(os.path.join(path, f))), None)


def _on_meta(cfg):
    with torch.device("meta"):
        return build_model(cfg)


def load_plm(path: str, random_init: bool = False, seed: int = 1, layout: Optional[Layout] = None) -> PretrainedLM:
    """Build a PLM from ``path`` (directory, hub id or preset name); see the module docstring.
    ``layout``, if given, is filled with what was found (format, names, dtypes, ignored tensors)."""
    from .hub import local_plm_path

    layout = layout if layout is not None else Layout()
    path = local_plm_path(path, need_weights=not random_init)
    kind = describe(path)
    if kind == "preset":
        if not random_init:
            raise PLMLoadError(
                f"{path!r} is a preset name, not a checkpoint: pass a directory with the weights, "
                f"or ask for random weights explicitly (--plm-random-init)"
            )
        layout.format = "preset"
        return build_model(preset(path)).init_random(seed)
    if kind == "hf":
        layout.format = "HuggingFace"
        cfg = config_from_hf(os.path.join(path, "config.json"))
        if random_init:
            return build_model(cfg).init_random(seed)
        weights = hf_weights_file(path)
        if weights is None:
            raise PLMLoadError(
                f"{path} has config.json but no weights ({', '.join(HF_WEIGHT_FILES)}); "
                f"pass --plm-random-init for random weights of this shape"
            )
        layout.weights = os.path.basename(weights)
        files = open_weights(weights)
        layout.storage = files.kind
        mapper = map_gpt2 if cfg.family == "gpt2" else map_hf_bert
        return load_weights(_on_meta(cfg), files, mapper, weights, layout)
    model_pt = os.path.join(path, "model.pt")
    layout.format, layout.weights = "fairseq", "model.pt"
    ckpt = read_fairseq_checkpoint(model_pt)
    cfg = fairseq_roberta_config(ckpt, model_pt)
    if random_init:
        return build_model(cfg).init_random(seed)
    layout.storage = ("torch zip pickle" if _is_zip(model_pt) else "torch legacy pickle") + \
        (", args Namespace" if ckpt.get("args") is not None else ", cfg")
    state = ckpt.pop("model")
    del ckpt  # optimizer state and the like
    if not all(torch.is_tensor(v) for v in state.values()):
        state = {k: v for k, v in state.items() if torch.is_tensor(v)}
    files = TorchWeightFile(model_pt, state, layout.storage)
    return load_weights(_on_meta(cfg), files, map_fairseq_roberta, model_pt, layout)
