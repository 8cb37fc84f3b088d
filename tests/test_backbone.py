"""Backbone behaviour beyond numerical parity: freezing, presets at true size, bad input."""

import os

import pytest
import torch

from fairseq_plm.models.msp import MSPConfig, MSPModel
from fairseq_plm.plm import GPT, BertEncoder, PLMLoadError, load_plm, preset
from fairseq_plm.plm.errors import FairseqPLMError
from fairseq_plm.plm.modules import KVCache
from fairseq_plm.plm.vocab import PLMDictionary


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected_millions", [("mgpt", 560), ("xlmr-base", 278), ("xlmr-large", 560),
                                                    ("mbert", 178)])
def test_presets_have_the_published_sizes(name, expected_millions):
    cfg = preset(name)
    with torch.device("meta"):
        model = GPT(cfg) if cfg.family == "gpt2" else BertEncoder(cfg)
    n = _count(model)
    assert abs(n / 1e6 - expected_millions) / expected_millions < 0.03, n


def test_mgpt_preset_shape():
    c = preset("mgpt")
    assert (c.num_layers, c.hidden_size, c.num_heads, c.vocab_size) == (24, 1024, 16, 250100)
    assert c.tie_word_embeddings


def test_preset_without_random_init_flag_is_refused():
    with pytest.raises(PLMLoadError, match="--plm-random-init"):
        load_plm("mgpt")


def _task(tiny):
    from fairseq_plm.tasks.plm_translation import PLMTranslationConfig, PLMTranslationTask

    cfg = PLMTranslationConfig(data=tiny["data"], source_lang="en", target_lang="de", dataset_impl=None,
                               train_subset="train", required_seq_len_multiple=1, seed=1)
    return PLMTranslationTask.setup_task(cfg)


def test_plm_is_frozen_pinned_to_eval_and_unchanged_by_training(tiny):
    task = _task(tiny)
    task.load_dataset("train")
    model = MSPModel.build_model(MSPConfig(plm=tiny["plm"], prompt_length=4, single_stage=True), task)
    before = {k: v.clone() for k, v in model.plm.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"encoder.prompts.0.phi", "encoder.prompts.0.alpha"}
    opt = torch.optim.Adam(trainable, lr=0.05)
    model.train()
    assert model.training and not model.plm.training  # dropout of the PLM stays off
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=600).next_epoch_itr(shuffle=False)
    prompt0 = model.encoder.prompts[0].phi.detach().clone()
    for _, sample in zip(range(3), itr):
        net = sample["net_input"]
        logits, _ = model(net["src_tokens"], net["src_lengths"], net["prev_output_tokens"])
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), sample["target"], ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(prompt0, model.encoder.prompts[0].phi)
    for k, v in model.plm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.plm.parameters())


def test_data_dictionary_must_match_the_plm(tiny, tmp_path):
    task = _task(tiny)
    good = task.source_dictionary
    # same size, one symbol swapped: the first differing id is named
    symbols = list(good.symbols)
    symbols[10], symbols[11] = symbols[11], symbols[10]
    task.src_dict = PLMDictionary(symbols, pad=0, eos=1, unk=2, bos=1, kind="t5")
    with pytest.raises(FairseqPLMError, match=r"dict\.en\.txt does not match .*spiece\.model: id 10"):
        MSPModel.build_model(MSPConfig(plm=tiny["plm"], prompt_length=4, single_stage=True), task)
    task.src_dict = PLMDictionary(symbols[:-3], pad=0, eos=1, unk=2, bos=1, kind="t5")
    with pytest.raises(FairseqPLMError, match=r"dict\.en\.txt has \d+ entries but the PLM"):
        MSPModel.build_model(MSPConfig(plm=tiny["plm"], prompt_length=4, single_stage=True), task)


def test_sequence_longer_than_the_plm_positions(tiny):
    plm = load_plm(tiny["plm"])
    n = plm.cfg.max_positions
    with pytest.raises(FairseqPLMError, match=f"beyond the PLM's {n} positions"):
        plm(torch.full((1, n + 1), 5))
    cache = plm(torch.full((1, n - 1), 5), use_cache=True).cache
    with pytest.raises(FairseqPLMError, match="positions"):
        plm(torch.full((1, 2), 5), cache=cache)
    xlmr = BertEncoder(preset("xlmr-base", num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32,
                              vocab_size=50, max_positions=10)).init_random()
    with pytest.raises(FairseqPLMError, match=r"max 8 tokens"):
        xlmr(torch.full((1, 9), 5))


def test_generation_of_a_too_long_source_fails_clearly(trained, tmp_path):
    """A sentence beyond the PLM's positions is reported, not a torch index error."""
    from tiny import cli

    long_src = tmp_path / "long.en"
    long_src.write_text(" ".join(["▁Open"] * 300) + "\n")
    p = cli("fairseq-plm-interactive", trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
            "--task", "plm_translation", "--cpu", "--input", str(long_src), check=False)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert "positions" in last and "--skip-invalid-size-inputs-valid-test" in last
    assert "Traceback" not in p.stderr


def test_kv_cache_reorders_with_the_beam():
    cfg = preset("mgpt", num_layers=2, hidden_size=16, num_heads=2, intermediate_size=32, vocab_size=30)
    gpt = GPT(cfg).init_random().eval()
    x = torch.randint(3, 30, (3, 5))
    cache = gpt(x, use_cache=True).cache
    order = torch.tensor([2, 2, 0])
    step = torch.randint(3, 30, (3, 1))
    a = gpt(step, cache=cache.reorder(order)).hidden
    b = gpt(torch.cat([x[order], step], 1)).hidden[:, -1:]
    assert torch.allclose(a, b, atol=1e-5)
    assert isinstance(cache, KVCache) and cache.length == 5


def test_deep_prompt_changes_the_output_and_accepts_per_example_prompts():
    cfg = preset("xlmr-base", num_layers=2, hidden_size=16, num_heads=2, intermediate_size=32, vocab_size=30,
                 max_positions=20)
    enc = BertEncoder(cfg).init_random().eval()
    x = torch.randint(3, 30, (2, 6))
    prefix = [(torch.randn(2, 2, 3, 8), torch.randn(2, 2, 3, 8)) for _ in range(2)]
    y = enc(x, prefix=prefix, return_hidden_states=True)
    assert len(y.hidden_states) == 3 and not torch.allclose(y.hidden, enc(x).hidden)
    # example 0 alone with its own prompt gives the same as in the batch
    y0 = enc(x[:1], prefix=[(k[:1], v[:1]) for k, v in prefix]).hidden
    assert torch.allclose(y0, y.hidden[:1], atol=1e-5)
    # a fully masked prompt is the same as no prompt
    masked = enc(x, prefix=prefix, prefix_padding_mask=torch.ones(2, 3, dtype=torch.bool)).hidden
    assert torch.allclose(masked, enc(x).hidden, atol=1e-5)


def test_malformed_config_json_names_the_file(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2,
        "activation_function": "swishy"}))
    with pytest.raises(PLMLoadError, match=r"config\.json.*activation 'swishy'"):
        load_plm(str(tmp_path), random_init=True)
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 3}))
    with pytest.raises(PLMLoadError, match=r"config\.json.*not divisible"):
        load_plm(str(tmp_path), random_init=True)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(PLMLoadError, match=r"config\.json is not valid JSON"):
        load_plm(str(tmp_path), random_init=True)


def test_config_json_without_activation_uses_the_family_default(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2}))
    assert load_plm(str(tmp_path), random_init=True).cfg.activation == "gelu_new"
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2,
        "activation_function": "gelu_pytorch_tanh"}))
    assert load_plm(str(tmp_path), random_init=True).cfg.activation == "gelu_new"
