"""Every published checkpoint layout loads (the list and its sources: ``fairseq_plm/plm/loading.py``).

Each test writes a tiny random model in exactly one layout users hold (names, prefix, fused or split
projections, dtype, legacy pickle / zip / safetensors, extra buffers, tied tensors stored or left out),
then loads that very directory twice: with ``load_plm`` and with the reference implementation
(transformers' ``from_pretrained``, or fairseq's own ``load_state_dict`` with its legacy upgrades), and
compares hidden states and logits. A file the reference reads differently from us fails.
"""

import argparse
import json
import os
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (BertConfig, BertForMaskedLM, BertForPreTraining, BertModel,  # noqa: E402
                          GPT2LMHeadModel, XLMRobertaConfig, XLMRobertaForMaskedLM)

from test_backbone_parity import (FFN, HEADS, HIDDEN, LAYERS, VOCAB, XLMR_MAX_LEN, build_fairseq_roberta,  # noqa: E402
                                  close, gpt2_config, randomize, right_padded)

from fairseq_plm.plm.loading import Layout, PLMLoadError, load_plm  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def write(path, config, state, storage):
    """config.json + ``state`` as pytorch_model.bin ("zip" / "legacy" pickle) or model.safetensors."""
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    if storage == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(path, "model.safetensors"))
    else:
        torch.save(state, os.path.join(path, "pytorch_model.bin"), _use_new_zipfile_serialization=storage == "zip")
    return str(path)


def loaded(path):
    layout = Layout()
    model = load_plm(path, layout=layout).eval()
    return model, layout


# ================================================================== GPT-2 family

def gpt2_state(hf, layout):
    """``hf`` (GPT2LMHeadModel) as the hub serves GPT-2 family checkpoints."""
    sd = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    n = hf.config.n_positions
    if layout.startswith("thumt-mgpt"):
        # transformers 4.x GPT2LMHeadModel.save_pretrained(): transformer. prefix, tied lm_head.weight
        # stored (one storage), persistent attn.bias (uint8 causal mask) / attn.masked_bias buffers
        if layout.endswith("fp16"):
            sd = {k: v.half() for k, v in sd.items()}
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
        for i in range(LAYERS):
            sd[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
            sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        return sd, "zip"
    # openai-community/gpt2: GPT2Model names, no lm_head, float attn.bias / masked_bias buffers
    sd = {k[len("transformer."):]: v for k, v in sd.items() if k.startswith("transformer.")}
    for i in range(LAYERS):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return sd, "legacy" if layout == "openai-gpt2-bin" else "safetensors"


GPT2_LAYOUTS = {
    "thumt-mgpt": ("torch zip pickle", "transformer.", ["tied lm_head.weight stored"]),
    "thumt-mgpt-fp16": ("torch zip pickle", "transformer.", ["float16"]),
    "openai-gpt2-bin": ("torch legacy pickle", "", ["tied lm_head omitted"]),
    "openai-gpt2-safetensors": ("safetensors", "", ["tied lm_head omitted"]),
}


@pytest.mark.parametrize("layout", sorted(GPT2_LAYOUTS))
@torch.no_grad()
def test_gpt2_family_layouts_match_transformers(tmp_path, layout):
    hf = randomize(GPT2LMHeadModel(gpt2_config(pad_token_id=0)), 50).eval()
    state, storage = gpt2_state(hf, layout)
    config = dict(hf.config.to_dict(), n_ctx=hf.config.n_positions)  # transformers 4.x wrote every field
    path = write(tmp_path / layout, config, state, storage)

    ref = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    ours, found = loaded(path)
    ids, pad = right_padded([9, 5], 9, pad=0, low=1, seed=51)
    ref_out = ref(ids, attention_mask=(~pad).long(), output_hidden_states=True)
    our_out = ours(ids, return_hidden_states=True)
    keep = ~pad
    for i in range(LAYERS):
        close(our_out.hidden_states[i][keep], ref_out.hidden_states[i][keep], f"{layout} hidden state {i}")
    close(ours.logits(our_out.hidden)[keep], ref_out.logits[keep], f"{layout} logits")
    if layout.endswith("fp16"):  # the file's fp16 values, in an fp32 model
        assert ours.wte.weight.dtype == torch.float32
        assert torch.equal(ours.wte.weight, hf.transformer.wte.weight.half().float())

    storage_kind, prefix, notes = GPT2_LAYOUTS[layout]
    text = found.describe()
    assert found.storage == storage_kind and found.prefix == prefix, text
    assert all(n in text for n in notes), text
    assert found.ignored.get("h.N.attn.bias", found.ignored.get("transformer.h.N.attn.bias")) == LAYERS, text


@torch.no_grad()
def test_gpt2_today_sharded_fp16_matches_transformers(tmp_path):
    hf = randomize(GPT2LMHeadModel(gpt2_config()), 52).eval()
    path = str(tmp_path / "gpt2-sharded-fp16")
    hf.half().save_pretrained(path, max_shard_size="20KB")
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    ref = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    ours, found = loaded(path)
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(53))
    close(ours.logits(ours(ids).hidden), ref(ids).logits, "sharded fp16 logits")
    assert found.storage.startswith("safetensors, ") and found.dtypes == {"float16": sum(found.dtypes.values())}


# ================================================================== mBERT

def bert_cfg(**kw):
    return BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      intermediate_size=FFN, max_position_embeddings=24, type_vocab_size=2, pad_token_id=0,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager", **kw)


def google_config(cfg):
    """bert_config.json as Google released it (what the 2018 hub configs hold): no model_type."""
    keys = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
            "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
            "num_hidden_layers", "type_vocab_size", "vocab_size")
    return {k: cfg.to_dict()[k] for k in keys}


def bert_state(layout):
    hf = randomize(BertForPreTraining(bert_cfg()), 60).eval()
    sd = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    if layout.startswith("google-mbert"):
        # pytorch-pretrained-BERT's conversion of Google's TF checkpoint: LayerNorm gamma/beta,
        # BertForPreTraining heads (MLM + NSP) and pooler, MLM decoder tied (no decoder.bias)
        sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in sd.items() if k != "cls.predictions.decoder.bias"}
        if layout == "google-mbert-bin":
            sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]
            return hf, sd, "legacy", google_config(hf.config)
        del sd["cls.predictions.decoder.weight"]  # the hub's safetensors conversion keeps one copy
        return hf, sd, "safetensors", dict(google_config(hf.config), model_type="bert")
    # transformers 3.x-4.30 BertForMaskedLM.save_pretrained(): position_ids buffer, decoder tied + decoder.bias
    sd = {k: v for k, v in sd.items() if not k.startswith(("cls.seq_relationship", "bert.pooler"))}
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]
    sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"]
    sd["bert.embeddings.position_ids"] = torch.arange(24)[None]
    return hf, sd, "zip", dict(hf.config.to_dict(), architectures=["BertForMaskedLM"])


BERT_LAYOUTS = {
    "google-mbert-bin": ("torch legacy pickle", ["LayerNorm gamma/beta", "tied MLM decoder stored"],
                         {"bert.pooler.dense.weight", "cls.seq_relationship.weight"}),
    "google-mbert-safetensors": ("safetensors", ["LayerNorm gamma/beta", "tied MLM decoder omitted"],
                                 {"bert.pooler.dense.weight", "cls.seq_relationship.weight"}),
    "transformers-4x-bin": ("torch zip pickle", ["tied MLM decoder stored"],
                            {"bert.embeddings.position_ids", "cls.predictions.decoder.bias"}),
}


@pytest.mark.parametrize("layout", sorted(BERT_LAYOUTS))
@torch.no_grad()
def test_mbert_layouts_match_transformers(tmp_path, layout):
    hf, state, storage, config = bert_state(layout)
    path = write(tmp_path / layout, config, state, storage)
    ref = BertForMaskedLM.from_pretrained(path, attn_implementation="eager").eval()
    assert torch.equal(ref.cls.predictions.transform.LayerNorm.weight, hf.cls.predictions.transform.LayerNorm.weight)
    ours, found = loaded(path)
    assert ours.cfg.family == "bert"
    ids, pad = right_padded([10, 6, 3], 10, pad=0, low=1, seed=61)
    types = (torch.arange(10)[None] >= 4).long().expand(3, -1).masked_fill(pad, 0).contiguous()
    ref_out = ref(ids, attention_mask=(~pad).long(), token_type_ids=types, output_hidden_states=True)
    our_out = ours(ids, token_type_ids=types, return_hidden_states=True)
    keep = ~pad
    for i, (a, b) in enumerate(zip(our_out.hidden_states, ref_out.hidden_states)):
        close(a[keep], b[keep], f"{layout} hidden state {i}")
    close(ours.logits(our_out.hidden)[keep], ref_out.logits[keep], f"{layout} MLM logits")

    storage_kind, notes, ignored = BERT_LAYOUTS[layout]
    text = found.describe()
    assert found.storage == storage_kind and found.prefix == "bert.", text
    assert all(n in text for n in notes), text
    assert ignored <= set(found.ignored), text


@torch.no_grad()
def test_bare_bert_model_loads_its_encoder(tmp_path):
    """A BertModel (no prefix, no MLM head): the encoder matches, the head keeps its initialisation."""
    hf = randomize(BertModel(bert_cfg(), add_pooling_layer=True), 62).eval()
    path = str(tmp_path / "bare")
    hf.save_pretrained(path)
    ours, found = loaded(path)
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(63))
    close(ours(ids).hidden, hf(ids).last_hidden_state, "bare BertModel hidden")
    assert found.prefix == "" and "no MLM head" in found.describe()
    assert ours.lm_head.bias.device.type == "cpu" and not ours.lm_head.bias.is_meta


@torch.no_grad()
def test_mbert_untied_decoder_is_refused(tmp_path):
    hf, state, storage, config = bert_state("google-mbert-bin")
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    path = write(tmp_path / "untied", config, state, storage)
    with pytest.raises(PLMLoadError, match="not tied"):
        load_plm(path)


# ================================================================== XLM-R (HF)

def xlmr_hf(seed=70):
    cfg = XLMRobertaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=XLMR_MAX_LEN + 2, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    return randomize(XLMRobertaForMaskedLM(cfg), seed).eval()


def xlmr_ids(seed):
    ids, pad = right_padded([XLMR_MAX_LEN, 7, 3], XLMR_MAX_LEN, pad=1, low=3, seed=seed)
    ids[:, 0] = 0
    return ids, pad


@pytest.mark.parametrize("layout", ["hf-xlmr-2019-bin", "hf-xlmr-safetensors"])
@torch.no_grad()
def test_hf_xlmr_layouts_match_transformers(tmp_path, layout):
    """FacebookAI/xlm-roberta-*: converted from fairseq by transformers 2.x (pooler kept, tied decoder
    stored, legacy pickle); the hub's model.safetensors has the same names, the tied decoder once."""
    hf = xlmr_hf()
    sd = {k: v.detach().clone() for k, v in hf.state_dict().items() if k != "lm_head.decoder.bias"}
    gen = torch.Generator().manual_seed(71)
    sd["roberta.pooler.dense.weight"] = torch.randn(HIDDEN, HIDDEN, generator=gen)
    sd["roberta.pooler.dense.bias"] = torch.randn(HIDDEN, generator=gen)
    if layout == "hf-xlmr-2019-bin":
        sd["lm_head.decoder.weight"] = sd["roberta.embeddings.word_embeddings.weight"]
    else:
        del sd["lm_head.decoder.weight"]
    config = dict(hf.config.to_dict(), architectures=["XLMRobertaForMaskedLM"])
    path = write(tmp_path / layout, config, sd, "legacy" if layout.endswith("bin") else "safetensors")
    ref = XLMRobertaForMaskedLM.from_pretrained(path, attn_implementation="eager").eval()
    ours, found = loaded(path)
    ids, pad = xlmr_ids(72)
    ref_out = ref(ids, attention_mask=(~pad).long(), output_hidden_states=True)
    our_out = ours(ids, return_hidden_states=True)
    keep = ~pad
    for i, (a, b) in enumerate(zip(our_out.hidden_states, ref_out.hidden_states)):
        close(a[keep], b[keep], f"{layout} hidden state {i}")
    close(ours.logits(our_out.hidden)[keep], ref_out.logits[keep], f"{layout} MLM logits")
    assert found.prefix == "roberta." and "roberta.pooler.dense.weight" in found.ignored, found.describe()


@pytest.mark.parametrize("family", ["bert", "xlmr"])
@torch.no_grad()
def test_encoders_today_sharded_fp16_match_transformers(tmp_path, family):
    hf = randomize(BertForMaskedLM(bert_cfg()), 64).eval() if family == "bert" else xlmr_hf(73)
    path = str(tmp_path / f"{family}-sharded")
    hf.half().save_pretrained(path, max_shard_size="20KB")
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    ref = type(hf).from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    ours, found = loaded(path)
    ids, pad = xlmr_ids(74) if family == "xlmr" else right_padded([9, 4], 9, pad=0, low=1, seed=74)
    keep = ~pad
    close(ours.logits(ours(ids).hidden)[keep], ref(ids, attention_mask=(~pad).long()).logits[keep], family)
    assert set(found.dtypes) == {"float16"}


# ================================================================== XLM-R (fairseq, 2019 releases)

def fairseq_2019(state, fused):
    """Today's fairseq RoBERTa state dict as fairseq 0.9 wrote it (xlmr.base/xlmr.large model.pt):
    decoder.* prefix, emb_layer_norm, no version buffer; fused in_proj for fairseq < 0.9."""
    out = {}
    for k, v in state.items():
        if k.endswith(".version"):
            continue
        k = "decoder." + k[len("encoder."):] if k.startswith("encoder.") else k
        out[k.replace(".layernorm_embedding.", ".emb_layer_norm.")] = v
    if fused:
        for i in range(LAYERS):
            a = f"decoder.sentence_encoder.layers.{i}.self_attn."
            out[a + "in_proj_weight"] = torch.cat([out.pop(a + f"{x}_proj.weight") for x in "qkv"])
            out[a + "in_proj_bias"] = torch.cat([out.pop(a + f"{x}_proj.bias") for x in "qkv"])
    return out


def fairseq_2019_args(args):
    """The argparse.Namespace a fairseq 0.9 pre-training run stored (model fields + training flags)."""
    model = ("arch", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
             "max_positions", "dropout", "attention_dropout", "activation_dropout")
    return argparse.Namespace(
        **{k: getattr(args, k) for k in model}, task="multilingual_masked_lm", criterion="masked_lm", optimizer="adam", fp16=True,
        activation_fn="gelu", pooler_activation_fn="tanh", pooler_dropout=0.0, encoder_layerdrop=0.0,
        encoder_learned_pos=True, sample_break_mode="complete", tokens_per_sample=XLMR_MAX_LEN,
        untie_weights_roberta=False, max_update=1500000, lr=[0.0001])


@pytest.mark.parametrize("attention,dtype", [("split", torch.float32), ("fused", torch.float16)])
@torch.no_grad()
def test_fairseq_2019_xlmr_release_matches_fairseq(tmp_path, attention, dtype):
    fs, args, d = build_fairseq_roberta(seed=80)
    state = fairseq_2019({k: v.to(dtype) for k, v in fs.state_dict().items()}, attention == "fused")
    state["decoder.lm_head.weight"] = state["decoder.sentence_encoder.embed_tokens.weight"]  # tied, stored
    out_dir = tmp_path / f"xlmr-2019-{attention}"
    out_dir.mkdir()
    ckpt = {"args": fairseq_2019_args(args), "model": state,
            "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": "FairseqAdam",
                                   "lr_scheduler_state": {"best": None}, "num_updates": 1500000}],
            "extra_state": {"epoch": 1}, "last_optimizer_state": None}
    torch.save(ckpt, out_dir / "model.pt")
    d.save(str(out_dir / "dict.txt"))

    # the reference: fairseq itself reading this state dict through its legacy upgrades
    ref, _, _ = build_fairseq_roberta(seed=81)
    ref.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
    ref.eval()
    ours, found = loaded(str(out_dir))
    ids, pad = right_padded([XLMR_MAX_LEN, 8, 4], XLMR_MAX_LEN, pad=d.pad(), low=4, seed=82)
    ids[:, 0] = d.bos()
    logits, extra = ref(ids, features_only=False, return_all_hiddens=True)
    inner = [h.transpose(0, 1) for h in extra["inner_states"]]
    our_out = ours(ids, return_hidden_states=True)
    keep = ~pad
    for i, (a, b) in enumerate(zip(our_out.hidden_states, inner)):
        close(a[keep], b[keep], f"hidden state {i}")
    close(ours.logits(our_out.hidden)[keep], logits[keep], "MLM logits")
    text = found.describe()
    assert found.prefix == "decoder.sentence_encoder." and "emb_layer_norm" in text, text
    assert ("fused in_proj_weight" in text) == (attention == "fused"), text
    assert "args Namespace" in found.storage and found.dtypes == {str(dtype)[6:]: sum(found.dtypes.values())}


def test_tensorflow_bert_checkpoint_gets_a_clear_error(tmp_path):
    for f in ("bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "vocab.txt"):
        (tmp_path / f).write_text("x")
    with pytest.raises(PLMLoadError, match="TensorFlow"):
        load_plm(str(tmp_path))


def test_truncated_safetensors_shard_names_the_shard(tmp_path):
    hf = GPT2LMHeadModel(gpt2_config())
    path = tmp_path / "sharded"
    hf.save_pretrained(str(path), max_shard_size="20KB")
    shard = sorted(path.glob("model-*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(PLMLoadError) as e:
        load_plm(str(path))
    assert str(shard) in str(e.value) and "truncated" in str(e.value)


def test_read_state_dict_returns_every_tensor_as_stored(tmp_path):
    from fairseq_plm.plm.loading import read_state_dict

    hf = GPT2LMHeadModel(gpt2_config())
    state, storage = gpt2_state(hf, "openai-gpt2-safetensors")
    path = write(tmp_path / "sd", hf.config.to_dict(), state, storage)
    back = read_state_dict(os.path.join(path, "model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    shutil.rmtree(path)
