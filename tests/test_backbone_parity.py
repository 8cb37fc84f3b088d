"""Numerical parity of our PLM backbones with the reference implementations.

Each test builds a tiny randomly initialised model with ``transformers`` (or fairseq's own
RoBERTa), writes it to disk with today's ``save_pretrained`` / fairseq, loads it back with
``load_plm`` and compares hidden states of every layer and output logits in fp32 / eval mode.
The layouts of the published checkpoints (hub .bin files, legacy pickles, fp16, the 2019 fairseq
XLM-R releases) are covered by ``test_plm_layouts.py``.

Every parameter (layer-norm gains and biases included) is re-randomised so that a swapped or
dropped tensor in the name mapping cannot hide behind HF's default init (LN = 1/0, biases = 0),
and the weight scale is large enough for attention to be far from uniform, so that masking and
position bugs change the outputs.
"""

import argparse
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

transformers = pytest.importorskip("transformers")
from transformers import (BertConfig, BertForMaskedLM, DynamicCache, GPT2Config,  # noqa: E402
                          GPT2LMHeadModel, XLMRobertaConfig, XLMRobertaForMaskedLM)

from fairseq_plm.plm.bert import BertEncoder  # noqa: E402
from fairseq_plm.plm.gpt import GPT  # noqa: E402
from fairseq_plm.plm.loading import PLMLoadError, load_plm  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ATOL = 1e-5
RTOL = 1e-5
VOCAB = 100
HIDDEN = 32
LAYERS = 2
HEADS = 4
FFN = 64


def close(ours, ref, what=""):
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int):
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # tied parameters are visited once
        noise = torch.randn(p.shape, generator=gen)
        if p.dim() >= 2:
            p.copy_(noise * 0.15)
        elif name.endswith("weight"):  # layer-norm gains
            p.copy_(1.0 + 0.1 * noise)
        else:
            p.copy_(0.1 * noise)
    return model


def save_hf(model, path, fmt):
    """Write ``model`` as a HuggingFace directory with the weights as ``fmt``:
    "safetensors" (one file), "sharded" (safetensors + index) or "bin" (pytorch_model.bin,
    full state dict incl. tied duplicates, as transformers<5 wrote it with
    ``safe_serialization=False``; transformers 5 only writes safetensors)."""
    path = str(path)
    if fmt == "sharded":
        model.save_pretrained(path, max_shard_size="20KB")
        assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
        assert not os.path.exists(os.path.join(path, "model.safetensors"))
    else:
        model.save_pretrained(path)
    if fmt == "bin":
        os.remove(os.path.join(path, "model.safetensors"))
        torch.save({k: v.clone() for k, v in model.state_dict().items()},
                   os.path.join(path, "pytorch_model.bin"))
    return path


def weights_file(path):
    for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if os.path.exists(os.path.join(path, f)):
            return os.path.join(path, f)
    raise AssertionError(f"no weights in {path}")


def right_padded(lengths, max_len, pad, low, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, VOCAB, (len(lengths), max_len), generator=gen)
    mask = torch.arange(max_len)[None] >= torch.tensor(lengths)[:, None]  # True = pad
    return ids.masked_fill(mask, pad), mask


# ================================================================== GPT-2

def gpt2_config(**kw):
    base = dict(vocab_size=VOCAB, n_positions=40, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                n_inner=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                bos_token_id=1, eos_token_id=1, attn_implementation="eager")
    base.update(kw)
    return GPT2Config(**base)


def make_gpt2(tmp_path, fmt="safetensors", seed=0, **kw):
    hf = randomize(GPT2LMHeadModel(gpt2_config(**kw)), seed).eval()
    ours = load_plm(save_hf(hf, tmp_path / f"gpt2-{fmt}", fmt)).eval()
    assert isinstance(ours, GPT)
    return hf, ours


def hf_kv(cache):
    """(keys, values) per layer of a transformers DynamicCache, [B, H, S, D]."""
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


def check_gpt2_outputs(hf, ours, hf_out, our_out, keep=None):
    """HF's last hidden state is after ln_f; ours lists pre-ln_f layer outputs and returns
    the ln_f output as ``hidden``. ``keep`` ([B, T] bool) selects the positions compared."""
    sel = (lambda x: x) if keep is None else (lambda x: x[keep])
    hs_hf, hs_ours = hf_out.hidden_states, our_out.hidden_states
    assert len(hs_hf) == len(hs_ours) == LAYERS + 1
    for i in range(LAYERS):
        close(sel(hs_ours[i]), sel(hs_hf[i]), f"hidden state {i}")
    close(sel(ours.ln_f(hs_ours[-1])), sel(hs_hf[-1]), "last layer (after ln_f)")
    close(sel(our_out.hidden), sel(hs_hf[-1]), "final hidden")
    close(sel(ours.logits(our_out.hidden)), sel(hf_out.logits), "logits")


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "sharded"])
@torch.no_grad()
def test_gpt2_forward_matches_hf(tmp_path, fmt):
    hf, ours = make_gpt2(tmp_path, fmt)
    # unpadded batch: the plain causal path
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))
    check_gpt2_outputs(hf, ours, hf(ids, output_hidden_states=True),
                       ours(ids, return_hidden_states=True))
    # right-padded batch: attention_mask (1 = token) vs padding_mask (True = pad)
    ids, pad = right_padded([12, 9, 4], 12, pad=7, low=0, seed=2)
    hf_out = hf(ids, attention_mask=(~pad).long(), output_hidden_states=True)
    our_out = ours(ids, padding_mask=pad, return_hidden_states=True)
    check_gpt2_outputs(hf, ours, hf_out, our_out, keep=~pad)


@torch.no_grad()
def test_gpt2_pad_token_id_infers_padding(tmp_path):
    """With pad_token_id in config.json (as mGPT has), padding comes from the ids."""
    hf, ours = make_gpt2(tmp_path, pad_token_id=0)
    assert ours.cfg.pad_token_id == 0
    ids, pad = right_padded([10, 6], 10, pad=0, low=1, seed=3)
    hf_out = hf(ids, attention_mask=(~pad).long(), output_hidden_states=True)
    check_gpt2_outputs(hf, ours, hf_out, ours(ids, return_hidden_states=True), keep=~pad)


@torch.no_grad()
def test_gpt2_incremental_decoding_matches_full_forward(tmp_path):
    hf, ours = make_gpt2(tmp_path)
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(4))
    full = ours(ids, use_cache=True)
    close(ours.logits(full.hidden), hf(ids).logits, "full forward logits")

    # the cache holds exactly HF's keys/values
    hf_cache = DynamicCache(config=hf.config)
    hf(ids, past_key_values=hf_cache, use_cache=True)
    assert full.cache.length == 10
    for i, ((k, v), (hk, hv)) in enumerate(zip(full.cache.layers, hf_kv(hf_cache))):
        close(k, hk, f"cached keys, layer {i}")
        close(v, hv, f"cached values, layer {i}")

    # a 4-token chunk, then one token at a time through our KVCache
    out = ours(ids[:, :4], use_cache=True)
    steps = [out.hidden]
    cache = out.cache
    for t in range(4, 10):
        out = ours(ids[:, t:t + 1], cache=cache, use_cache=True)
        cache = out.cache
        assert cache.length == t + 1
        steps.append(out.hidden)
    close(torch.cat(steps, dim=1), full.hidden, "incremental vs full hidden")

    # reorder (beam search) keeps rows consistent
    order = torch.tensor([2, 0, 0])
    reordered = full.cache.reorder(order)
    nxt = torch.randint(0, VOCAB, (3, 1), generator=torch.Generator().manual_seed(5))
    a = ours(nxt, cache=reordered).hidden
    b = ours(torch.cat([ids[order], nxt], dim=1)).hidden[:, -1:]
    close(a, b, "step after cache reorder")


@torch.no_grad()
def test_gpt2_incremental_decoding_with_padded_cache(tmp_path):
    """Padding inside the first chunk is remembered by the cache (KVCache.padding_mask)."""
    hf, ours = make_gpt2(tmp_path)
    first, pad = right_padded([6, 3], 6, pad=9, low=0, seed=6)
    cont = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(7))
    out = ours(first, padding_mask=pad, use_cache=True)
    assert out.cache.padding_mask is not None and out.cache.padding_mask.equal(pad)
    hidden = []
    cache = out.cache
    for t in range(cont.size(1)):
        out = ours(cont[:, t:t + 1], cache=cache, use_cache=True)
        cache = out.cache
        hidden.append(out.hidden)
    full_mask = torch.cat([(~pad).long(), torch.ones_like(cont)], dim=1)
    ref = hf(torch.cat([first, cont], dim=1), attention_mask=full_mask, output_hidden_states=True)
    close(torch.cat(hidden, dim=1), ref.hidden_states[-1][:, 6:], "continuation after padded chunk")


@torch.no_grad()
def test_gpt2_prefix_matches_hf_past_key_values(tmp_path):
    hf, ours = make_gpt2(tmp_path)
    P, T = 5, 8
    gen = torch.Generator().manual_seed(8)
    pre_ids = torch.randint(0, VOCAB, (3, P), generator=gen)
    ids, pad = right_padded([T, 6, 3], T, pad=11, low=0, seed=9)

    past = DynamicCache(config=hf.config)
    hf(pre_ids, past_key_values=past, use_cache=True)
    kv = hf_kv(past)
    assert len(kv) == LAYERS and kv[0][0].shape == (3, HEADS, P, HIDDEN // HEADS)
    positions = torch.arange(P, P + T)[None]  # HF continues positions after the past

    # (1) plain prompt, unpadded input
    ref = hf(ids, past_key_values=DynamicCache(hf_kv(past)), output_hidden_states=True)
    got = ours(ids, prefix=kv, position_ids=positions, return_hidden_states=True)
    check_gpt2_outputs(hf, ours, ref, got)
    # the prompt is not part of the cache / presents
    assert ours(ids, prefix=kv, position_ids=positions, use_cache=True).cache.length == T

    # (2) padded input and a partly masked prompt
    prefix_pad = torch.zeros(3, P, dtype=torch.bool)
    prefix_pad[1, :2] = True
    prefix_pad[2, 3] = True
    attn = torch.cat([(~prefix_pad).long(), (~pad).long()], dim=1)
    ref = hf(ids, past_key_values=DynamicCache(hf_kv(past)), attention_mask=attn,
             output_hidden_states=True)
    got = ours(ids, prefix=kv, position_ids=positions, prefix_padding_mask=prefix_pad,
               padding_mask=pad, return_hidden_states=True)
    check_gpt2_outputs(hf, ours, ref, got, keep=~pad)

    # (3) one prompt ([1, H, P, D]) shared by the whole batch
    shared = [(k[:1], v[:1]) for k, v in kv]
    expanded = DynamicCache([(k.expand(3, -1, -1, -1).clone(), v.expand(3, -1, -1, -1).clone())
                             for k, v in shared])
    ref = hf(ids, past_key_values=expanded, output_hidden_states=True)
    got = ours(ids, prefix=shared, position_ids=positions, return_hidden_states=True)
    check_gpt2_outputs(hf, ours, ref, got)


def test_gpt2_prefix_gradients_match_hf(tmp_path):
    """Deep-prompt training: gradients w.r.t. the prompt keys/values agree with HF's."""
    hf, ours = make_gpt2(tmp_path)
    ours.freeze()
    for p in hf.parameters():
        p.requires_grad_(False)
    P, T = 4, 7
    gen = torch.Generator().manual_seed(10)
    ids = torch.randint(0, VOCAB, (2, T), generator=gen)
    prompt = [(torch.randn(1, HEADS, P, HIDDEN // HEADS, generator=gen),
               torch.randn(1, HEADS, P, HIDDEN // HEADS, generator=gen)) for _ in range(LAYERS)]

    leaves_ours = [(k.clone().requires_grad_(), v.clone().requires_grad_()) for k, v in prompt]
    out = ours(ids, prefix=leaves_ours, position_ids=torch.arange(P, P + T)[None])
    ours.logits(out.hidden).logsumexp(-1).sum().backward()

    leaves_hf = [(k.clone().requires_grad_(), v.clone().requires_grad_()) for k, v in prompt]
    cache = DynamicCache([(k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1)) for k, v in leaves_hf])
    hf(ids, past_key_values=cache).logits.logsumexp(-1).sum().backward()

    for i, ((k, v), (hk, hv)) in enumerate(zip(leaves_ours, leaves_hf)):
        close(k.grad, hk.grad, f"prompt key grad, layer {i}")
        close(v.grad, hv.grad, f"prompt value grad, layer {i}")


# ================================================================== XLM-R (HF)

XLMR_MAX_LEN = 12


def make_xlmr(tmp_path, fmt, seed=20):
    cfg = XLMRobertaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=XLMR_MAX_LEN + 2, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager",
    )
    hf = randomize(XLMRobertaForMaskedLM(cfg), seed).eval()
    ours = load_plm(save_hf(hf, tmp_path / f"xlmr-{fmt}", fmt)).eval()
    assert isinstance(ours, BertEncoder)
    assert ours.cfg.family == "roberta" and ours.cfg.position_offset == 2
    assert ours.cfg.usable_positions == XLMR_MAX_LEN
    return hf, ours


def check_encoder(hf_out, our_out, ours, keep):
    hs_hf, hs_ours = hf_out.hidden_states, our_out.hidden_states
    assert len(hs_hf) == len(hs_ours) == LAYERS + 1
    for i, (a, b) in enumerate(zip(hs_ours, hs_hf)):
        close(a[keep], b[keep], f"hidden state {i}")
    close(our_out.hidden[keep], hs_hf[-1][keep], "final hidden")
    close(ours.logits(our_out.hidden)[keep], hf_out.logits[keep], "MLM logits")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@torch.no_grad()
def test_xlmr_matches_hf(tmp_path, fmt):
    hf, ours = make_xlmr(tmp_path, fmt)
    # the longest row uses every position up to max_position_embeddings - 1
    ids, pad = right_padded([XLMR_MAX_LEN, 7, 3], XLMR_MAX_LEN, pad=1, low=3, seed=21)
    ids[:, 0] = 0  # <s>
    hf_out = hf(ids, attention_mask=(~pad).long(), output_hidden_states=True)
    our_out = ours(ids, return_hidden_states=True)  # padding inferred from pad_token_id=1
    check_encoder(hf_out, our_out, ours, ~pad)

    # positions count from padding_idx + 1; pads sit at padding_idx, as in HF
    hf_pos = hf.roberta.embeddings.create_position_ids_from_input_ids(ids, 1)
    assert ours.default_position_ids(ids, pad, ids.size(1), ids.device).equal(hf_pos)
    assert int(hf_pos[0].min()) == 2 and int(hf_pos[0].max()) == XLMR_MAX_LEN + 1

    # an explicit padding_mask gives the same result
    again = ours(ids, padding_mask=pad, return_hidden_states=True)
    close(again.hidden[~pad], our_out.hidden[~pad], "explicit padding_mask")

    # left padding: the first real token of every row sits at position padding_idx + 1
    shift = (~pad).sum(1)
    left = torch.stack([row.roll(XLMR_MAX_LEN - int(n)) for row, n in zip(ids, shift)])
    lpad = left.eq(1)
    assert lpad[1:, 0].all() and not lpad[:, -1].any()
    check_encoder(hf(left, attention_mask=(~lpad).long(), output_hidden_states=True),
                  ours(left, return_hidden_states=True), ours, ~lpad)

    # unpadded batch: no mask at all
    ids = ids[:, :3]
    check_encoder(hf(ids, output_hidden_states=True), ours(ids, return_hidden_states=True),
                  ours, torch.ones_like(ids, dtype=torch.bool))


def test_xlmr_too_long_input_is_rejected(tmp_path):
    _, ours = make_xlmr(tmp_path, "safetensors")
    ids = torch.randint(3, VOCAB, (1, XLMR_MAX_LEN + 1))
    with pytest.raises(ValueError, match="position"):
        ours(ids)


# ================================================================== BERT (HF)

@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@torch.no_grad()
def test_bert_matches_hf(tmp_path, fmt):
    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=32, type_vocab_size=2, pad_token_id=0,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager",
    )
    hf = randomize(BertForMaskedLM(cfg), 30).eval()
    ours = load_plm(save_hf(hf, tmp_path / f"bert-{fmt}", fmt)).eval()
    assert isinstance(ours, BertEncoder) and ours.cfg.family == "bert"
    assert ours.cfg.position_offset == 0 and ours.cfg.type_vocab_size == 2

    lengths = [10, 8, 5]
    ids, pad = right_padded(lengths, 10, pad=0, low=1, seed=31)
    # sentence B (token type 1) from position 4 on, for the real tokens of each row
    types = (torch.arange(10)[None] >= 4).long().expand(3, -1).masked_fill(pad, 0).contiguous()
    assert types.sum() > 0
    hf_out = hf(ids, attention_mask=(~pad).long(), token_type_ids=types, output_hidden_states=True)
    our_out = ours(ids, token_type_ids=types, return_hidden_states=True)
    check_encoder(hf_out, our_out, ours, ~pad)

    # token types matter: all-zero types give different outputs than HF with types
    zero = ours(ids, return_hidden_states=True)
    assert not torch.allclose(zero.hidden[~pad], hf_out.hidden_states[-1][~pad], atol=1e-3)
    zero_hf = hf(ids, attention_mask=(~pad).long(), output_hidden_states=True)
    check_encoder(zero_hf, zero, ours, ~pad)


# ================================================================== XLM-R (fairseq)

def build_fairseq_roberta(seed=40):
    from fairseq.data import Dictionary
    from fairseq.models.roberta import RobertaModel

    d = Dictionary()  # <s>=0, <pad>=1, </s>=2, <unk>=3
    for i in range(VOCAB - 5):
        d.add_symbol(f"tok{i}")
    d.add_symbol("<mask>")

    class Task:
        source_dictionary = d

        def max_positions(self):
            return XLMR_MAX_LEN

    args = argparse.Namespace(
        arch="roberta_base", encoder_layers=LAYERS, encoder_embed_dim=HIDDEN,
        encoder_ffn_embed_dim=FFN, encoder_attention_heads=HEADS, max_positions=XLMR_MAX_LEN,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )
    torch.manual_seed(seed)
    model = RobertaModel.build_model(args, Task())
    return randomize(model, seed).eval(), args, d


@pytest.mark.parametrize("layout", ["args", "cfg"])
@torch.no_grad()
def test_fairseq_xlmr_matches_fairseq(tmp_path, layout):
    fs, args, d = build_fairseq_roberta()
    out_dir = tmp_path / f"fairseq-xlmr-{layout}"
    out_dir.mkdir()
    state = {k: v.clone() for k, v in fs.state_dict().items()}
    if layout == "args":  # today's state dict names with an argparse args (a fairseq 0.9-0.10 run);
        # the 2019 xlmr.base / xlmr.large releases themselves: test_plm_layouts.py
        ckpt = {"args": args, "model": state}
    else:  # fairseq >= 0.10: args None, model config under cfg["model"]
        from omegaconf import OmegaConf

        ckpt = {"args": None, "cfg": {"model": OmegaConf.create(vars(args))}, "model": state}
    torch.save(ckpt, out_dir / "model.pt")
    d.save(str(out_dir / "dict.txt"))

    ours = load_plm(str(out_dir)).eval()
    assert isinstance(ours, BertEncoder)
    assert (ours.cfg.family, ours.cfg.num_layers, ours.cfg.num_heads, ours.cfg.hidden_size,
            ours.cfg.intermediate_size, ours.cfg.vocab_size, ours.cfg.pad_token_id) == \
        ("roberta", LAYERS, HEADS, HIDDEN, FFN, len(d), d.pad())
    assert ours.cfg.usable_positions == XLMR_MAX_LEN

    ids, pad = right_padded([XLMR_MAX_LEN, 8, 4], XLMR_MAX_LEN, pad=d.pad(), low=4, seed=41)
    lengths = (~pad).sum(1)
    ids[:, 0] = d.bos()
    ids[torch.arange(3), lengths - 1] = d.eos()

    logits, extra = fs(ids, features_only=False, return_all_hiddens=True)
    inner = [h.transpose(0, 1) for h in extra["inner_states"]]  # T x B x C -> B x T x C
    our_out = ours(ids, return_hidden_states=True)
    keep = ~pad
    assert len(inner) == len(our_out.hidden_states) == LAYERS + 1
    for i, (a, b) in enumerate(zip(our_out.hidden_states, inner)):
        close(a[keep], b[keep], f"hidden state {i}")
    close(ours.logits(our_out.hidden)[keep], logits[keep], "MLM logits")

    features, _ = fs(ids, features_only=True)
    close(our_out.hidden[keep], features[keep], "features_only output")


# ================================================================== bad input

def test_config_with_more_layers_than_weights(tmp_path):
    hf = GPT2LMHeadModel(gpt2_config())
    path = save_hf(hf, tmp_path / "more-layers", "safetensors")
    gpt2_config(n_layer=LAYERS + 1).to_json_file(os.path.join(path, "config.json"))
    with pytest.raises(PLMLoadError) as e:
        load_plm(path)
    assert weights_file(path) in str(e.value)


def test_config_with_fewer_layers_than_weights(tmp_path):
    """Weights the config has no place for must not be dropped silently."""
    hf = GPT2LMHeadModel(gpt2_config())
    path = save_hf(hf, tmp_path / "fewer-layers", "safetensors")
    gpt2_config(n_layer=LAYERS - 1).to_json_file(os.path.join(path, "config.json"))
    with pytest.raises(PLMLoadError) as e:
        load_plm(path)
    assert weights_file(path) in str(e.value)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_config_with_wrong_hidden_size(tmp_path, fmt):
    hf = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                    num_attention_heads=HEADS, intermediate_size=FFN))
    path = save_hf(hf, tmp_path / f"wrong-hidden-{fmt}", fmt)
    BertConfig(vocab_size=VOCAB, hidden_size=2 * HIDDEN, num_hidden_layers=LAYERS,
               num_attention_heads=HEADS, intermediate_size=FFN).to_json_file(
        os.path.join(path, "config.json"))
    with pytest.raises(PLMLoadError) as e:
        load_plm(path)
    assert weights_file(path) in str(e.value)
    assert "do not match" in str(e.value)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_truncated_weights_file(tmp_path, fmt):
    hf = GPT2LMHeadModel(gpt2_config())
    path = save_hf(hf, tmp_path / f"truncated-{fmt}", fmt)
    f = weights_file(path)
    data = Path(f).read_bytes()
    Path(f).write_bytes(data[: len(data) // 2])
    with pytest.raises(PLMLoadError) as e:
        load_plm(path)
    assert f in str(e.value)


def test_truncated_fairseq_checkpoint(tmp_path):
    fs, args, d = build_fairseq_roberta()
    out_dir = tmp_path / "fairseq-truncated"
    out_dir.mkdir()
    torch.save({"args": args, "model": fs.state_dict()}, out_dir / "model.pt")
    data = (out_dir / "model.pt").read_bytes()
    (out_dir / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PLMLoadError) as e:
        load_plm(str(out_dir))
    assert str(out_dir / "model.pt") in str(e.value)


def test_config_without_weights(tmp_path):
    path = tmp_path / "config-only"
    path.mkdir()
    gpt2_config().to_json_file(str(path / "config.json"))
    with pytest.raises(PLMLoadError, match="no weights"):
        load_plm(str(path))
    assert isinstance(load_plm(str(path), random_init=True), GPT)  # explicit random init works


def test_missing_directory(tmp_path):
    missing = str(tmp_path / "does-not-exist")
    with pytest.raises(PLMLoadError) as e:
        load_plm(missing)
    assert missing in str(e.value)


def test_empty_directory(tmp_path):
    with pytest.raises(PLMLoadError, match="config.json"):
        load_plm(str(tmp_path))


@pytest.mark.parametrize("name", ["xlmr-base", "mgpt", "mbert"])
def test_preset_needs_random_init(name):
    with pytest.raises(PLMLoadError, match="preset"):
        load_plm(name)


def test_gpt2_pad_equal_to_eos_does_not_mask_eos(tmp_path):
    """HF GPT-2 fine-tunes often set pad_token_id = eos_token_id; then ids can't tell padding."""
    hf, ours = make_gpt2(tmp_path, pad_token_id=1)
    assert ours.cfg.pad_token_id is None
