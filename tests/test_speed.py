"""Hot-path changes that must not change results: segmented attention for decoding steps, the
mask built once per forward, cache_only source stages, beam reorders that skip unchanged rows,
dtype handling under autocast, and the optional torch.compile path (smoke test on CPU)."""

import pytest
import torch
import torch.nn.functional as F

from fairseq_plm.plm import bert, gpt
from fairseq_plm.plm.bert import BertEncoder
from fairseq_plm.plm.config import preset
from fairseq_plm.plm.gpt import GPT
from fairseq_plm.plm.modules import additive_mask, attention_mask, segmented_attention
from fairseq_plm.plm.speed import compile_plm


def tiny_gpt(layers=2):
    cfg = preset("mgpt", num_layers=layers, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=50,
                 max_positions=64)
    return GPT(cfg).init_random(0).freeze()


def tiny_bert():
    cfg = preset("xlmr-base", num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=50,
                 max_positions=66)
    return BertEncoder(cfg).init_random(0).freeze()


def prompt(layers, b=1, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 4, length, 8, generator=g), torch.randn(b, 4, length, 8, generator=g))
            for _ in range(layers)]


@pytest.mark.parametrize("t", [1, 3])
def test_segmented_attention_equals_sdpa_over_concatenated_keys(t):
    torch.manual_seed(0)
    b, h, d = 3, 4, 8
    q = torch.randn(b, h, t, d)
    keys = [torch.randn(1, h, 5, d), torch.randn(b, h, 4, d), torch.randn(b, h, 2 + t, d)]  # shared, per row, own
    values = [torch.randn_like(k) for k in keys]
    pad = torch.zeros(b, 11 + t, dtype=torch.bool)
    pad[1, 5:7] = True  # padded source positions of row 1
    allowed = attention_mask(t, 9, 2, True, pad, q.device)
    ref = F.scaled_dot_product_attention(
        q, torch.cat([k.expand(b, -1, -1, -1) for k in keys], 2), torch.cat([v.expand(b, -1, -1, -1) for v in values], 2),
        attn_mask=allowed)
    ours = segmented_attention(q, keys, values, additive_mask(allowed, q.dtype))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_incremental_decoding_with_a_shared_prompt_equals_the_full_forward():
    """Decoding steps take the segmented path (a batch-1 prompt and per-row activations, never
    concatenated); the full forward takes SDPA over concatenated keys."""
    m = tiny_gpt()
    b = 3
    src = prompt(2, b=b, length=4, seed=2)
    prefix = [[p, s] for p, s in zip(prompt(2), src)]
    prefix_pad = torch.zeros(b, 9, dtype=torch.bool)
    prefix_pad[2, 7:] = True
    ids = torch.randint(3, 50, (b, 6))
    with torch.no_grad():
        full = m(ids, prefix=prefix, prefix_padding_mask=prefix_pad).hidden
        out = m(ids[:, :2], prefix=prefix, prefix_padding_mask=prefix_pad, use_cache=True)
        steps = [out.hidden]
        for i in range(2, 6):
            out = m(ids[:, i:i + 1], prefix=prefix, prefix_padding_mask=prefix_pad, cache=out.cache, use_cache=True,
                    position_ids=torch.tensor([[i]]))
            steps.append(out.hidden)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_the_mask_is_built_once_per_forward(family, monkeypatch):
    module = gpt if family == "gpt" else bert
    calls = []
    real = module.attention_mask
    monkeypatch.setattr(module, "attention_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = tiny_gpt(layers=4) if family == "gpt" else tiny_bert()
    ids = torch.randint(4, 50, (2, 7))
    ids[1, 5:] = 1 if family == "bert" else 0  # padding
    with torch.no_grad():
        m(ids, prefix=prompt(m.cfg.num_layers))
    assert len(calls) == 1


def test_cache_only_gives_the_same_cache_without_the_top_layer_output():
    m = tiny_gpt(layers=3)
    ids = torch.randint(3, 50, (2, 6))
    with torch.no_grad():
        full = m(ids, prefix=prompt(3), use_cache=True)
        only = m(ids, prefix=prompt(3), cache_only=True)
    assert only.hidden is None
    for (k1, v1), (k2, v2) in zip(full.cache.layers, only.cache.layers):
        torch.testing.assert_close(k2, k1)
        torch.testing.assert_close(v2, v1)


def test_beam_reorders_copy_only_rows_that_change_sentence(tiny):
    from fairseq_plm.models.msp import MSPConfig, MSPModel
    from fairseq_plm.tasks.plm_translation import PLMTranslationConfig, PLMTranslationTask

    cfg = PLMTranslationConfig(data=tiny["data"], source_lang="en", target_lang="de", dataset_impl=None,
                               train_subset="train", required_seq_len_multiple=1, seed=1)
    task = PLMTranslationTask.setup_task(cfg)
    model = MSPModel.build_model(MSPConfig(plm=tiny["plm"], prompt_length=3), task).eval()
    src = torch.randint(5, 100, (2, 6))
    with torch.no_grad():
        enc = model.encoder(src, torch.tensor([6, 6]))
    beams = model.encoder.reorder_encoder_out(enc, torch.tensor([0, 0, 0, 1, 1, 1]))   # expansion: copies
    assert beams["src_keys"][0].size(0) == 6
    within = model.encoder.reorder_encoder_out(beams, torch.tensor([2, 0, 0, 4, 5, 3]))  # within sentences
    assert within["src_keys"][0] is beams["src_keys"][0]
    for key in ("src_keys", "src_values", "prefix_padding_mask", "target_offset"):
        ref = beams[key][0].index_select(0, torch.tensor([2, 0, 0, 4, 5, 3]))
        assert torch.equal(within[key][0], ref)
    shrunk = model.encoder.reorder_encoder_out(beams, torch.tensor([3, 4, 5]))          # sentence 0 finished
    assert shrunk["src_keys"][0].size(0) == 3 and torch.equal(shrunk["src_keys"][0], beams["src_keys"][0][3:])


def test_autocast_with_a_float32_prompt():
    """Under autocast (fairseq --amp; CPU bf16 here) the float32 prompt is cast once per forward
    and attention runs in the autocast dtype, with and without the segmented decoding path."""
    m = tiny_gpt()
    ids = torch.randint(3, 50, (2, 5))
    p = prompt(2)
    with torch.no_grad():
        ref = m(ids, prefix=p).hidden
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(ids, prefix=p, use_cache=True)
            step = m(ids[:, :1], prefix=p, cache=out.cache)
    assert out.cache.layers[0][0].dtype == torch.bfloat16
    torch.testing.assert_close(out.hidden.float(), ref, atol=0.1, rtol=0.05)
    assert torch.isfinite(step.hidden).all()


def test_torch_compile_path_gives_the_same_outputs_and_gradients():
    """--plm-compile wraps each block in torch.compile; traced with aot_eager here (inductor
    needs minutes of C++ compilation on this CI machine; benchmarks measure it)."""
    torch._dynamo.reset()
    for m in (tiny_gpt(), tiny_bert()):
        ids = torch.randint(4, 50, (2, 6))
        leaves = [prompt(2), prompt(2)]
        for pair in leaves:
            for k, v in pair:
                k.requires_grad_()
                v.requires_grad_()
        ref = m(ids, prefix=leaves[0]).hidden
        ref.pow(2).sum().backward()
        compile_plm(m, backend="aot_eager")
        out = m(ids, prefix=leaves[1]).hidden
        out.pow(2).sum().backward()
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(leaves[1][0][0].grad, leaves[0][0][0].grad, atol=1e-5, rtol=1e-5)
        assert set(m.state_dict()) == set(type(m)(m.cfg).state_dict())  # checkpoints unchanged
    torch._dynamo.reset()


def test_segmented_path_choice():
    """CPU: always for decoding steps; accelerators: only when concatenation would copy a
    large batch-shared prompt (checked with meta tensors: no device needed)."""
    from fairseq_plm.plm.modules import use_segmented

    def case(device, b, t=1, p=128, h=16, d=64):
        q = torch.empty(b, h, t, d, device=device)
        return use_segmented(q, [(torch.empty(1, h, p, d, device=device),) * 2,
                                 (torch.empty(b, h, 20, d, device=device),) * 2])

    assert case("cpu", 4) and not case("cpu", 4, t=16)
    assert not case("meta", 4)      # batch 1, beam 4: one SDPA kernel over concatenated keys
    assert case("meta", 256)        # batch 64, beam 4: 256 copies of a 128 x 1024 prompt avoided
