"""Write our PLMs back out in HuggingFace format (used by the quickstart's tiny mGPT recipe,
so the PLM it pre-trains is loaded exactly like a published one)."""

import json
import os
import shutil

from .modules import PretrainedLM


def save_hf_gpt2(model: PretrainedLM, path: str, spm_model: str = None):
    """config.json + model.safetensors in GPT2LMHeadModel layout (+ the tokenizer file)."""
    from safetensors.torch import save_file

    c = model.cfg
    if c.family != "gpt2":
        raise ValueError("save_hf_gpt2 exports GPT-2 family models only")
    os.makedirs(path, exist_ok=True)
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
    save_file({k: v.detach().contiguous().cpu() for k, v in out.items()},
              os.path.join(path, "model.safetensors"))
    config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": c.vocab_size,
        "n_embd": c.hidden_size, "n_layer": c.num_layers, "n_head": c.num_heads,
        "n_inner": c.intermediate_size, "n_positions": c.max_positions,
        "layer_norm_epsilon": c.layer_norm_eps, "activation_function": c.activation,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attention_dropout,
        "pad_token_id": c.pad_token_id, "eos_token_id": 1, "bos_token_id": 1,
        "tie_word_embeddings": c.tie_word_embeddings,
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if spm_model is not None:
        shutil.copy(spm_model, os.path.join(path, "spiece.model"))
