"""Write our PLMs back out in HuggingFace format (used by the tiny mGPT / tiny XLM-R recipes,
so the PLMs they pre-train are loaded exactly like published ones)."""

import json
import os
import shutil

from .modules import PretrainedLM


def _save_safetensors(tensors, path):
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, os.path.join(path, "model.safetensors"))


def hf_gpt2_state_dict(model: PretrainedLM):
    """Our GPT's tensors under GPT2LMHeadModel names (Conv1D matrices [in, out], as views);
    no ``lm_head.weight`` when tied, as today's transformers saves it."""
    c = model.cfg
    if c.family != "gpt2":
        raise ValueError("GPT-2 export needs a GPT-2 family model")
    own = model.state_dict()
    out = {"transformer.wte.weight": own["wte.weight"], "transformer.wpe.weight": own["wpe.weight"],
           "transformer.ln_f.weight": own["ln_f.weight"], "transformer.ln_f.bias": own["ln_f.bias"]}
    for i in range(c.num_layers):
        s, o = f"blocks.{i}.", f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            out[o + ln + ".weight"], out[o + ln + ".bias"] = own[s + ln + ".weight"], own[s + ln + ".bias"]
        for dst, src in (("attn.c_attn", "attn.qkv"), ("attn.c_proj", "attn.proj"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            out[o + dst + ".weight"] = own[s + src + ".weight"].t()
            out[o + dst + ".bias"] = own[s + src + ".bias"]
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = own["lm_head.weight"]
    return out


def hf_gpt2_config(c):
    """config.json of a GPT2LMHeadModel with our config ``c``."""
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": c.vocab_size,
        "n_embd": c.hidden_size, "n_layer": c.num_layers, "n_head": c.num_heads,
        "n_inner": c.intermediate_size, "n_positions": c.max_positions,
        "layer_norm_epsilon": c.layer_norm_eps, "activation_function": c.activation,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attention_dropout,
        "pad_token_id": c.pad_token_id, "eos_token_id": 1, "bos_token_id": 1,
        "tie_word_embeddings": c.tie_word_embeddings,
    }


def save_hf_gpt2(model: PretrainedLM, path: str, spm_model: str = None):
    """config.json + model.safetensors in GPT2LMHeadModel layout (+ the tokenizer file)."""
    out = hf_gpt2_state_dict(model)
    os.makedirs(path, exist_ok=True)
    _save_safetensors(out, path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_gpt2_config(model.cfg), f, indent=2)
    if spm_model is not None:
        shutil.copy(spm_model, os.path.join(path, "spiece.model"))


def _hf_bert_tensors(own, c, base):
    """Embeddings + encoder layers in HF BERT/RoBERTa/XLM-R names under ``base`` ("bert."/"roberta."):
    our fused ``qkv`` is split back into query, key and value (in that order)."""
    e = base + "embeddings."
    out = {e + "word_embeddings.weight": own["word_embeddings.weight"],
           e + "position_embeddings.weight": own["position_embeddings.weight"],
           e + "LayerNorm.weight": own["emb_ln.weight"], e + "LayerNorm.bias": own["emb_ln.bias"]}
    # fairseq-converted XLM-R has no token types; HF always adds one embedding, so it gets a zero one
    out[e + "token_type_embeddings.weight"] = own.get(
        "token_type_embeddings.weight", own["word_embeddings.weight"].new_zeros(1, c.hidden_size))
    for i in range(c.num_layers):
        s, o = f"layers.{i}.", f"{base}encoder.layer.{i}."
        for n, w, b in zip(("query", "key", "value"), own[s + "attn.qkv.weight"].chunk(3),
                           own[s + "attn.qkv.bias"].chunk(3)):
            out[o + f"attention.self.{n}.weight"], out[o + f"attention.self.{n}.bias"] = w, b
        for dst, src in (("attention.output.dense", "attn.proj"), ("attention.output.LayerNorm", "attn_ln"),
                         ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2"),
                         ("output.LayerNorm", "mlp_ln")):
            out[o + dst + ".weight"], out[o + dst + ".bias"] = own[s + src + ".weight"], own[s + src + ".bias"]
    return out


def _hf_bert_config(c, model_type, architecture, type_vocab_size, dtype, **extra):
    return {
        "model_type": model_type, "architectures": [architecture], "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "intermediate_size": c.intermediate_size, "max_position_embeddings": c.max_positions,
        "type_vocab_size": type_vocab_size, "layer_norm_eps": c.layer_norm_eps, "hidden_act": c.activation,
        "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attention_dropout,
        "position_embedding_type": "absolute", "tie_word_embeddings": True,
        "dtype": str(dtype).replace("torch.", ""), **extra,
    }


def _save_hf_encoder(model, path, family, base, head, config, tokenizer):
    c = model.cfg
    if c.family != family:
        raise ValueError(f"this exporter writes {family} family models, got {c.family!r}")
    os.makedirs(path, exist_ok=True)
    own = model.state_dict()
    out = _hf_bert_tensors(own, c, base)
    # MLM head; its decoder is tied to the word embeddings, so (as HF saves it) only the bias is stored
    for dst, src in head.items():
        out[dst] = own[src]
    _save_safetensors(out, path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if tokenizer is not None:
        shutil.copy(tokenizer[0], os.path.join(path, tokenizer[1]))


def save_hf_roberta(model: PretrainedLM, path: str, spm_model: str = None):
    """config.json + model.safetensors in XLMRobertaForMaskedLM layout (+ ``sentencepiece.bpe.model``),
    loadable by ``load_plm`` and by ``transformers.XLMRobertaForMaskedLM.from_pretrained``."""
    c = model.cfg
    if c.pad_token_id is None or c.position_offset != c.pad_token_id + 1:
        raise ValueError(f"XLM-R layout needs positions counted from pad + 1; got pad {c.pad_token_id}, "
                         f"position offset {c.position_offset}")
    head = {"lm_head.dense.weight": "lm_head.dense.weight", "lm_head.dense.bias": "lm_head.dense.bias",
            "lm_head.layer_norm.weight": "lm_head.ln.weight", "lm_head.layer_norm.bias": "lm_head.ln.bias",
            "lm_head.bias": "lm_head.bias"}
    config = _hf_bert_config(c, "xlm-roberta", "XLMRobertaForMaskedLM", max(c.type_vocab_size, 1),
                             model.word_embeddings.weight.dtype,
                             pad_token_id=c.pad_token_id, bos_token_id=0, eos_token_id=2)
    _save_hf_encoder(model, path, "roberta", "roberta.", head, config,
                     None if spm_model is None else (spm_model, "sentencepiece.bpe.model"))


def save_hf_bert(model: PretrainedLM, path: str, vocab_txt: str = None):
    """config.json + model.safetensors in BertForMaskedLM layout (+ ``vocab.txt``)."""
    c = model.cfg
    if c.type_vocab_size < 1:
        raise ValueError("BERT layout needs token type embeddings (type_vocab_size >= 1)")
    h = "cls.predictions."
    head = {h + "transform.dense.weight": "lm_head.dense.weight", h + "transform.dense.bias": "lm_head.dense.bias",
            h + "transform.LayerNorm.weight": "lm_head.ln.weight", h + "transform.LayerNorm.bias": "lm_head.ln.bias",
            h + "bias": "lm_head.bias"}
    config = _hf_bert_config(c, "bert", "BertForMaskedLM", c.type_vocab_size, model.word_embeddings.weight.dtype,
                             pad_token_id=c.pad_token_id if c.pad_token_id is not None else 0)
    _save_hf_encoder(model, path, "bert", "bert.", head, config,
                     None if vocab_txt is None else (vocab_txt, "vocab.txt"))
