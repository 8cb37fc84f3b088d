"""Offline loading of pre-trained LMs from local files in their published formats.

Supported sources:
  * HuggingFace-format directories: ``config.json`` + ``model.safetensors`` (optionally sharded,
    ``model.safetensors.index.json``) or ``pytorch_model.bin``, for GPT-2/mGPT (``gpt2``),
    BERT/mBERT (``bert``) and XLM-R/RoBERTa (``xlm-roberta``/``roberta``).
  * fairseq-format XLM-R/RoBERTa directories: ``model.pt`` (+ ``dict.txt``,
    ``sentencepiece.bpe.model``).
  * a preset name (``mgpt``, ``xlmr-base``, ``xlmr-large``, ``mbert``, ``gpt2``) or a directory
    holding only ``config.json``, with ``random_init=True``: true shapes, random weights.
"""

import json
import os
import re
from typing import Dict

import torch

from .bert import BertEncoder
from .errors import FairseqPLMError
from .config import PRESETS, PLMConfig, preset
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


def config_from_hf(path: str) -> PLMConfig:
    """PLMConfig from a HuggingFace ``config.json``."""
    c = _read_json(path)
    model_type = c.get("model_type")
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


# ---------------------------------------------------------------- weights

def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Tensors of a safetensors / torch file (or a sharded safetensors index)."""
    if not os.path.exists(path):
        raise PLMLoadError(f"weights file not found: {path}")
    try:
        if path.endswith(".index.json"):
            index = _read_json(path)
            state = {}
            for shard in sorted(set(index["weight_map"].values())):
                state.update(read_state_dict(os.path.join(os.path.dirname(path), shard)))
            return state
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except PLMLoadError:
        raise
    except Exception as e:  # corrupt or truncated file
        raise PLMLoadError(f"cannot read weights from {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise PLMLoadError(f"{path} does not hold a state dict")
    return obj


def _strip(state, prefixes):
    for p in prefixes:
        if any(k.startswith(p) for k in state):
            return {k[len(p):] if k.startswith(p) else k: v for k, v in state.items()}
    return state


def map_gpt2(state, cfg):
    """HF GPT-2 names -> ours. GPT-2 uses Conv1D ([in, out]) so its matrices are transposed."""
    state = _strip(state, ["transformer."])
    out = {"wte.weight": state["wte.weight"], "wpe.weight": state["wpe.weight"],
           "ln_f.weight": state["ln_f.weight"], "ln_f.bias": state["ln_f.bias"]}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(cfg.num_layers):
        s, o = f"h.{i}.", f"blocks.{i}."
        for ln in ("ln_1", "ln_2"):
            out[o + ln + ".weight"] = state[s + ln + ".weight"]
            out[o + ln + ".bias"] = state[s + ln + ".bias"]
        for src, dst in (("attn.c_attn", "attn.qkv"), ("attn.c_proj", "attn.proj"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            out[o + dst + ".weight"] = state[s + src + ".weight"].t().contiguous()
            out[o + dst + ".bias"] = state[s + src + ".bias"]
    return out


def _ln(state, name):
    """LayerNorm parameters, accepting TF-era gamma/beta names."""
    w = state.get(name + ".weight", state.get(name + ".gamma"))
    b = state.get(name + ".bias", state.get(name + ".beta"))
    if w is None or b is None:
        raise KeyError(name + ".weight")
    return w, b


def map_hf_bert(state, cfg):
    """HF BERT / RoBERTa / XLM-R names (MaskedLM or bare model) -> ours."""
    state = _strip(state, ["bert.", "roberta."])
    out = {"word_embeddings.weight": state["embeddings.word_embeddings.weight"],
           "position_embeddings.weight": state["embeddings.position_embeddings.weight"]}
    if cfg.type_vocab_size > 0:
        out["token_type_embeddings.weight"] = state["embeddings.token_type_embeddings.weight"]
    out["emb_ln.weight"], out["emb_ln.bias"] = _ln(state, "embeddings.LayerNorm")
    for i in range(cfg.num_layers):
        s, o = f"encoder.layer.{i}.", f"layers.{i}."
        q, k, v = (s + f"attention.self.{n}" for n in ("query", "key", "value"))
        out[o + "attn.qkv.weight"] = torch.cat([state[q + ".weight"], state[k + ".weight"], state[v + ".weight"]])
        out[o + "attn.qkv.bias"] = torch.cat([state[q + ".bias"], state[k + ".bias"], state[v + ".bias"]])
        out[o + "attn.proj.weight"] = state[s + "attention.output.dense.weight"]
        out[o + "attn.proj.bias"] = state[s + "attention.output.dense.bias"]
        out[o + "attn_ln.weight"], out[o + "attn_ln.bias"] = _ln(state, s + "attention.output.LayerNorm")
        out[o + "mlp.fc1.weight"] = state[s + "intermediate.dense.weight"]
        out[o + "mlp.fc1.bias"] = state[s + "intermediate.dense.bias"]
        out[o + "mlp.fc2.weight"] = state[s + "output.dense.weight"]
        out[o + "mlp.fc2.bias"] = state[s + "output.dense.bias"]
        out[o + "mlp_ln.weight"], out[o + "mlp_ln.bias"] = _ln(state, s + "output.LayerNorm")
    if "cls.predictions.transform.dense.weight" in state:  # BERT MLM head
        h = "cls.predictions."
        out["lm_head.dense.weight"] = state[h + "transform.dense.weight"]
        out["lm_head.dense.bias"] = state[h + "transform.dense.bias"]
        out["lm_head.ln.weight"], out["lm_head.ln.bias"] = _ln(state, h + "transform.LayerNorm")
        out["lm_head.bias"] = state.get(h + "bias", state.get(h + "decoder.bias"))
    elif "lm_head.dense.weight" in state:  # RoBERTa / XLM-R MLM head
        out["lm_head.dense.weight"] = state["lm_head.dense.weight"]
        out["lm_head.dense.bias"] = state["lm_head.dense.bias"]
        out["lm_head.ln.weight"], out["lm_head.ln.bias"] = _ln(state, "lm_head.layer_norm")
        out["lm_head.bias"] = state.get("lm_head.bias", state.get("lm_head.decoder.bias"))
    return out


def map_fairseq_roberta(state, cfg):
    """fairseq RoBERTa/XLM-R ``model.pt`` names -> ours."""
    state = _strip(state, ["encoder.sentence_encoder.", "decoder.sentence_encoder."])
    out = {"word_embeddings.weight": state["embed_tokens.weight"],
           "position_embeddings.weight": state["embed_positions.weight"]}
    ln = "layernorm_embedding" if "layernorm_embedding.weight" in state else "emb_layer_norm"
    out["emb_ln.weight"], out["emb_ln.bias"] = state[ln + ".weight"], state[ln + ".bias"]
    for i in range(cfg.num_layers):
        s, o = f"layers.{i}.", f"layers.{i}."
        a = s + "self_attn."
        out[o + "attn.qkv.weight"] = torch.cat([state[a + f"{n}_proj.weight"] for n in "qkv"])
        out[o + "attn.qkv.bias"] = torch.cat([state[a + f"{n}_proj.bias"] for n in "qkv"])
        out[o + "attn.proj.weight"] = state[a + "out_proj.weight"]
        out[o + "attn.proj.bias"] = state[a + "out_proj.bias"]
        out[o + "attn_ln.weight"] = state[s + "self_attn_layer_norm.weight"]
        out[o + "attn_ln.bias"] = state[s + "self_attn_layer_norm.bias"]
        for n in ("fc1", "fc2"):
            out[o + f"mlp.{n}.weight"] = state[s + f"{n}.weight"]
            out[o + f"mlp.{n}.bias"] = state[s + f"{n}.bias"]
        out[o + "mlp_ln.weight"] = state[s + "final_layer_norm.weight"]
        out[o + "mlp_ln.bias"] = state[s + "final_layer_norm.bias"]
    h = next((p for p in ("encoder.lm_head.", "decoder.lm_head.") if p + "dense.weight" in state), None)
    if h is not None:
        out["lm_head.dense.weight"] = state[h + "dense.weight"]
        out["lm_head.dense.bias"] = state[h + "dense.bias"]
        out["lm_head.ln.weight"] = state[h + "layer_norm.weight"]
        out["lm_head.ln.bias"] = state[h + "layer_norm.bias"]
        out["lm_head.bias"] = state[h + "bias"]
    return out


def load_weights(model: PretrainedLM, state, mapper, source: str):
    """Map names and load strictly; every mismatch is reported against ``source``."""
    try:
        mapped = mapper(state, model.cfg)
    except KeyError as e:
        raise PLMLoadError(
            f"{source} lacks the tensor {e.args[0]!r} expected for a {model.cfg.num_layers}-layer "
            f"{model.cfg.family} model (wrong file, or config.json does not match the weights?)"
        ) from None
    layers_in_file = {int(m.group(1)) for k in state
                      if (m := re.search(r"(?:^|\.)(?:h|layer|layers)\.(\d+)\.", k))}
    if layers_in_file and max(layers_in_file) + 1 != model.cfg.num_layers:
        raise PLMLoadError(
            f"{source} holds {max(layers_in_file) + 1} layers but the config says "
            f"{model.cfg.num_layers}: config.json does not match the weights"
        )
    embeddings = mapped.get("word_embeddings.weight")  # BERT family: the MLM head must reuse them
    untied = [k for k in state if embeddings is not None
              and k.endswith(("lm_head.decoder.weight", "predictions.decoder.weight"))
              and not torch.equal(state[k], embeddings)]
    if untied:
        raise PLMLoadError(f"{source} has an MLM output matrix not tied to the word embeddings ({untied[0]}); "
                           f"untied MLM heads are not supported")
    own = model.state_dict()
    if "lm_head.bias" in own and mapped.get("lm_head.bias") is None:
        mapped.pop("lm_head.bias", None)
        mapped.update({k: own[k] for k in own if k.startswith("lm_head.")})  # no MLM head shipped
    missing = sorted(set(own) - set(mapped))
    bad = [f"{k}: file {tuple(mapped[k].shape)} vs config {tuple(own[k].shape)}"
           for k in own if k in mapped and mapped[k].shape != own[k].shape]
    if missing or bad:
        raise PLMLoadError(
            f"weights in {source} do not match the model config: "
            + "; ".join(([f"missing {', '.join(missing[:5])}"] if missing else []) + bad[:5])
        )
    model.load_state_dict({k: mapped[k].to(own[k].dtype) for k in own}, strict=True)
    return model


# ---------------------------------------------------------------- entry point

HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def describe(path: str) -> str:
    """Which format a PLM path is in: 'preset', 'hf', 'fairseq'."""
    if path in PRESETS:
        return "preset"
    if not os.path.isdir(path):
        raise PLMLoadError(
            f"PLM path {path!r} is neither a directory nor a preset ({', '.join(sorted(PRESETS))})"
        )
    if os.path.exists(os.path.join(path, "config.json")):
        return "hf"
    if os.path.exists(os.path.join(path, "model.pt")):
        return "fairseq"
    raise PLMLoadError(
        f"{path} holds neither config.json (HuggingFace format) nor model.pt (fairseq format)"
    )


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
    return PLMConfig(
        family="roberta", vocab_size=emb.size(0), hidden_size=emb.size(1), num_layers=layers,
        num_heads=get("encoder_attention_heads", 12),
        intermediate_size=get("encoder_ffn_embed_dim", 4 * emb.size(1)), max_positions=pos.size(0),
        layer_norm_eps=1e-5, activation=get("activation_fn", "gelu"),
        dropout=get("dropout", 0.1), attention_dropout=get("attention_dropout", 0.1),
        type_vocab_size=0, pad_token_id=1, position_offset=2,
    )


def load_plm(path: str, random_init: bool = False, seed: int = 1) -> PretrainedLM:
    """Build a PLM from ``path`` (directory or preset name); see the module docstring."""
    kind = describe(path)
    if kind == "preset":
        if not random_init:
            raise PLMLoadError(
                f"{path!r} is a preset name, not a checkpoint: pass a directory with the weights, "
                f"or ask for random weights explicitly (--plm-random-init)"
            )
        return build_model(preset(path)).init_random(seed)
    if kind == "hf":
        cfg = config_from_hf(os.path.join(path, "config.json"))
        model = build_model(cfg)
        if random_init:
            return model.init_random(seed)
        weights = next((os.path.join(path, f) for f in HF_WEIGHT_FILES
                        if os.path.exists(os.path.join(path, f))), None)
        if weights is None:
            raise PLMLoadError(
                f"{path} has config.json but no weights ({', '.join(HF_WEIGHT_FILES)}); "
                f"pass --plm-random-init for random weights of this shape"
            )
        mapper = map_gpt2 if cfg.family == "gpt2" else map_hf_bert
        return load_weights(model, read_state_dict(weights), mapper, weights)
    model_pt = os.path.join(path, "model.pt")
    from ..checkpoints import load_torch_file  # weights-only + fairseq's checkpoint types: runs no code

    try:
        ckpt = load_torch_file(model_pt, what="fairseq XLM-R checkpoint")
    except FairseqPLMError as e:
        raise PLMLoadError(str(e)) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise PLMLoadError(f"{model_pt} is not a fairseq checkpoint (no 'model' entry)")
    model = build_model(fairseq_roberta_config(ckpt, model_pt))
    if random_init:
        return model.init_random(seed)
    return load_weights(model, ckpt["model"], map_fairseq_roberta, model_pt)
