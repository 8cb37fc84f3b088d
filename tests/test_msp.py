"""MSP and its baselines: stage semantics against a direct computation, cached beam search
against uncached scoring, Table 1/5 parameter counts at mGPT size, CLI training/decoding."""

import os
import re

import pytest
import torch

from fairseq_plm.models.msp import MSPConfig, MSPModel, PrefixTuningConfig, PrefixTuningModel, PromptTuningConfig, \
    PromptTuningModel
from fairseq_plm.plm.prompts import DeepPrompt
from tiny import cli, make_shape_only_data, translation_task

VARIANTS = {
    "msp": (MSPModel, MSPConfig, {}),
    "two_stage": (MSPModel, MSPConfig, {"reencoding_stages": 0}),
    "2nd_reencoding": (MSPModel, MSPConfig, {"reencoding_stages": 2}),
    "sharing": (MSPModel, MSPConfig, {"share_prompts": True}),
    "single_stage": (MSPModel, MSPConfig, {"single_stage": True}),
    "prefix_tuning": (PrefixTuningModel, PrefixTuningConfig, {"prefix_mlp_dim": 16}),
    "prompt_tuning": (PromptTuningModel, PromptTuningConfig, {}),
}


@pytest.fixture(scope="module")
def task(tiny):
    return translation_task(tiny["data"])


def build(name, tiny, task, **kw):
    cls, cfg_cls, extra = VARIANTS[name]
    torch.manual_seed(0)
    model = cls.build_model(cfg_cls(plm=tiny["plm"], prompt_length=5, **{**extra, **kw}), task).eval()
    with torch.no_grad():  # move prompts away from their init so every stage matters
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    return model


def _xy(task, n=1):
    ds = task.dataset("test")
    return ds[0]["source"][None], torch.cat([torch.tensor([task.tgt_dict.eos()]), ds[0]["target"][:-1]])[None]


def test_msp_stages_follow_eq_4_to_6(tiny, task):
    model = build("2nd_reencoding", tiny, task)
    plm, enc = model.plm, model.encoder
    x, y = _xy(task)
    pe, pr1, pr2, pd = (enc.stage_prompt(i)() for i in range(4))

    def cat(prompt, h):
        return [(torch.cat([pk, k], 2), torch.cat([pv, v], 2)) for (pk, pv), (k, v) in zip(prompt, h)]

    with torch.no_grad():
        h_e = plm(x, prefix=pe, use_cache=True).cache.layers                   # Eq. (4)
        h_r = plm(x, prefix=cat(pr1, h_e), use_cache=True).cache.layers         # Eq. (5)
        h_r = plm(x, prefix=cat(pr2, h_r), use_cache=True).cache.layers         # 2nd re-encoding
        ref = plm.logits(plm(y, prefix=cat(pd, h_r)).hidden)                    # Eq. (6), positions from 0
        ours, _ = model(x, torch.tensor([x.size(1)]), y)
    assert torch.allclose(ours, ref, atol=1e-5)
    # the decoding stage never sees the encoding stage's activations directly
    with torch.no_grad():
        wrong = plm.logits(plm(y, prefix=cat(pd, h_e)).hidden)
    assert not torch.allclose(ours, wrong, atol=1e-3)


def test_single_stage_is_one_sequence_behind_one_prompt(tiny, task):
    for name in ("single_stage", "prefix_tuning"):
        model = build(name, tiny, task)
        x, y = _xy(task)
        with torch.no_grad():
            p = model.encoder.stage_prompt(0)()
            ref = model.plm.logits(model.plm(torch.cat([x, y], 1), prefix=p).hidden)[:, x.size(1):]
            ours, _ = model(x, torch.tensor([x.size(1)]), y)
        assert torch.allclose(ours, ref, atol=1e-5), name


def test_prompt_tuning_is_virtual_tokens_at_the_input(tiny, task):
    model = build("prompt_tuning", tiny, task)
    x, y = _xy(task)
    with torch.no_grad():
        v = model.encoder.input_prompt()
        seq = torch.cat([v, model.plm.embed(torch.cat([x, y], 1))], 1)
        ref = model.plm.logits(model.plm(inputs_embeds=seq).hidden)[:, v.size(1) + x.size(1):]
        ours, _ = model(x, torch.tensor([x.size(1)]), y)
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_padded_batch_equals_sentences_alone(tiny, task, name):
    model = build(name, tiny, task)
    ds = task.dataset("test")
    batch = ds.collater([ds[i] for i in range(4)])
    net = batch["net_input"]
    with torch.no_grad():
        logits, _ = model(net["src_tokens"], net["src_lengths"], net["prev_output_tokens"])
        for row, i in enumerate(batch["id"].tolist()):
            one = ds.collater([ds[i]])["net_input"]
            alone, _ = model(one["src_tokens"], one["src_lengths"], one["prev_output_tokens"])
            t = alone.size(1)
            assert torch.allclose(logits[row, :t], alone[0], atol=1e-4), (name, i)


@pytest.mark.parametrize("name", ["msp", "single_stage", "prompt_tuning", "prefix_tuning"])
def test_cached_beam_search_equals_uncached_scoring(tiny, task, name):
    from fairseq.sequence_generator import SequenceGenerator

    model = build(name, tiny, task)
    ds = task.dataset("test")
    sample = ds.collater([ds[i] for i in range(5)])
    gen = SequenceGenerator([model], task.tgt_dict, beam_size=4, max_len_a=0, max_len_b=12, min_len=3)
    with torch.no_grad():
        hyps = gen.generate([model], sample)
    eos = task.tgt_dict.eos()
    for row, beams in enumerate(hyps):
        src = sample["net_input"]["src_tokens"][row]
        src = src[src.ne(task.src_dict.pad())][None]
        for h in beams:
            tokens = h["tokens"][None]
            prev = torch.cat([torch.tensor([[eos]]), tokens[:, :-1]], 1)
            with torch.no_grad():
                logits, _ = model(src, torch.tensor([src.size(1)]), prev)
            lp = torch.log_softmax(logits.float(), -1)[0].gather(-1, tokens[0][:, None])[:, 0]
            assert torch.allclose(lp, h["positional_scores"], atol=1e-4), (name, row)


def test_scaled_reparameterization():
    p = DeepPrompt(num_layers=2, num_heads=2, head_dim=4, length=3)
    assert p.alpha.item() == 1.0                                        # α initialised to 1.0
    bound = (6 / (3 + 8)) ** 0.5
    assert p.phi.abs().max() <= bound and p.phi.std() > bound / 3       # Glorot uniform
    with torch.no_grad():
        p.alpha.fill_(0.3)
    k0 = p()[0][0]
    assert torch.allclose(k0, p.phi[0, 0].view(3, 2, 4).transpose(0, 1)[None])   # max(0.3, 1) = 1
    with torch.no_grad():
        p.alpha.fill_(2.5)
    assert torch.allclose(p()[1][1], 2.5 * p.phi[1, 1].view(3, 2, 4).transpose(0, 1)[None])  # Eq. 8-10


def _graph_ops(tensors):
    seen, todo, names = set(), [t.grad_fn for t in tensors], []
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        names.append(type(f).__name__)
        todo += [g for g, _ in f.next_functions]
    return names


@pytest.mark.parametrize("kind", ["deep", "mlp"])
def test_prompt_layers_backward_once_not_per_layer(kind):
    """The per-layer prompts are split off with unbind, so the backward stacks the layers'
    gradients once. Indexing each layer (p[i, 0]) makes autograd zero-fill and add a gradient of
    the whole prompt tensor per layer and key/value (15% of an MSP step at mGPT's shape). Same
    gradient either way."""
    from fairseq_plm.plm.prompts import MLPDeepPrompt

    torch.manual_seed(0)
    p = DeepPrompt(3, 2, 4, 5) if kind == "deep" else MLPDeepPrompt(3, 2, 4, 5, hidden=8, mid_dim=6)
    layers = p()
    ops = _graph_ops([t for kv in layers for t in kv])
    assert "UnbindBackward0" in ops and "SelectBackward0" not in ops
    weights = [torch.randn_like(t) for kv in layers for t in kv]
    (sum((t * w).sum() for t, w in zip([t for kv in layers for t in kv], weights))).backward()
    got = {n: q.grad.clone() for n, q in p.named_parameters()}
    p.zero_grad()
    # the same prompts by indexing, as a reference
    if kind == "deep":
        full = (torch.clamp(p.alpha, min=1.0) * p.phi).view(3, 2, 5, 2, 4).transpose(2, 3)
    else:
        full = p.mlp(p.embedding).view(5, 3, 2, 2, 4).permute(1, 2, 3, 0, 4)
    ref = [full[i, j][None] for i in range(3) for j in range(2)]
    assert all(torch.equal(a, b) for a, b in zip([t for kv in layers for t in kv], ref))
    (sum((t * w).sum() for t, w in zip(ref, weights))).backward()
    for n, q in p.named_parameters():
        torch.testing.assert_close(got[n], q.grad, msg=n)


# ------------------------------------------------------------------ parameter counts at mGPT size

@pytest.fixture(scope="module")
def mgpt_data(tmp_path_factory):
    """Binarized toy data over a 250,100-entry mT5-sized dictionary (no tokenizer: shapes only)."""
    from fairseq_plm.plm.vocab import PLMDictionary

    d = PLMDictionary(["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(3, 250100)], pad=0, eos=1, unk=2, bos=1,
                      kind="t5")
    return make_shape_only_data(tmp_path_factory.mktemp("mgpt"), d, "w5 w6 w7\nw8 w9\nw10\n")


# MSP Table 1 and Table 5 (#Params.); the paper rounds loosely (3 x 6.29M = 18.87M is "19.0M")
PAPER_COUNTS = [("msp_single_stage", [], 6.3e6), ("msp_two_stage", [], 12.6e6), ("msp", [], 19.0e6),
                ("msp_2nd_reencoding", [], 25.1e6), ("msp_prompt_sharing", [], 6.3e6),
                ("prefix_tuning", [], 26e6), ("prompt_tuning", [], 131e3)]


def test_trained_parameter_counts_match_msp_tables_1_and_5(mgpt_data, tmp_path):
    """fairseq-train's own count for every setting, all in one process (fairseq's train entry
    point per run, tests/train_many.py): the 560M random PLM is built once and shared."""
    import json
    import subprocess
    import sys

    argv = [[str(mgpt_data), "--task", "plm_translation", "--arch", arch, "--plm", "mgpt", "--plm-random-init",
             "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "64", "--max-update", "1", "--cpu", "--no-save",
             "--disable-validation", "--criterion", "label_smoothed_cross_entropy", "--save-dir",
             str(tmp_path / arch), *extra] for arch, extra, _ in PAPER_COUNTS]
    p = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "train_many.py"), json.dumps(argv)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-5000:]
    counts = re.findall(r"shared model params: ([\d,]+) \(num\. trained: ([\d,]+)\)", p.stdout + p.stderr)
    assert len(counts) == len(PAPER_COUNTS), (p.stdout + p.stderr)[-3000:]
    for (arch, _, paper), (total, trained) in zip(PAPER_COUNTS, counts):
        total, trained = int(total.replace(",", "")), int(trained.replace(",", ""))
        assert 550e6 < total - trained < 570e6, (arch, total)  # frozen mGPT: "about 560M"
        assert abs(trained - paper) / paper < 0.015, (arch, trained, paper)


# ------------------------------------------------------------------ every setting through the CLIs

@pytest.mark.parametrize("arch", ["msp", "msp_two_stage", "msp_2nd_reencoding", "msp_prompt_sharing",
                                  "msp_single_stage", "prefix_tuning", "prompt_tuning"])
def test_each_setting_trains_and_decodes(tiny, tmp_path, arch):
    save = tmp_path / "ckpt"
    cli("fairseq-plm-train", tiny["data"], "--plm", tiny["plm"], "--task", "plm_translation", "--arch", arch,
        "--prompt-length", "4", "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "1000", "--max-update", "4",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--cpu", "--save-dir", save,
        "--no-epoch-checkpoints", *(["--prefix-mlp-dim", "16"] if arch == "prefix_tuning" else []))
    gen = ["--task", "plm_translation", "--beam", "4", "--max-len-a", "0", "--max-len-b", "6", "--cpu",
           "--batch-size", "6"]
    out = cli("fairseq-plm-generate", tiny["data"], "--path", save / "checkpoint_last.pt", *gen).stdout
    assert sorted(int(i) for i in re.findall(r"^H-(\d+)\t", out, flags=re.M)) == list(range(13))
    if arch in ("msp", "prefix_tuning", "prompt_tuning"):  # the exported prompt adapter translates the same
        from test_adapters import assert_adapter_generates_the_same

        assert_adapter_generates_the_same(tiny["data"], save / "checkpoint_last.pt", gen, out, tmp_path / "adapter")


def test_single_stage_pairs_must_fit_the_plm_positions_together(tiny, task):
    import numpy as np

    from fairseq_plm.plm.errors import FairseqPLMError

    model = build("prompt_tuning", tiny, task)
    assert model.sequence_limit == model.plm.cfg.max_positions - 5
    assert build("msp", tiny, task).sequence_limit is None
    ds = task.dataset("test")
    total = ds.src_sizes + ds.tgt_sizes
    task.sequence_limit = int(np.median(total))
    idx = np.arange(len(ds))
    with pytest.raises(FairseqPLMError, match="do not fit the PLM's positions"):
        task.filter_indices_by_size(idx, ds, None, ignore_invalid_inputs=False)
    kept = task.filter_indices_by_size(idx, ds, None, ignore_invalid_inputs=True)
    assert (total[kept] <= task.sequence_limit).all() and 0 < len(kept) < len(ds)
    task.sequence_limit = None


@pytest.mark.parametrize("name", ["single_stage", "prompt_tuning"])
def test_generation_stops_at_the_end_of_the_plm_positions(tiny, task, name):
    """Target positions continue after the source: a long source leaves little room, and
    beam search must stop there instead of failing mid-batch."""
    from argparse import Namespace

    model = build(name, tiny, task)
    task.sequence_limit = model.sequence_limit
    try:
        limit = model.sequence_limit
        src = torch.randint(10, 200, (2, limit - 12))
        src[1, -30:] = task.src_dict.pad()  # a shorter second sentence
        sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(task.src_dict.pad()).sum(1)}, "id": torch.arange(2)}
        gen = task.build_generator([model], Namespace(beam=2, max_len_a=0, max_len_b=200, min_len=1))
        with torch.no_grad():
            hyps = gen.generate([model], sample)
        assert all(len(h["tokens"]) <= 12 for beams in hyps for h in beams)
        assert all(len(beams) == 2 for beams in hyps)
    finally:
        task.sequence_limit = None
