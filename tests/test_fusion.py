"""Deep fusion: coordinator equations, gradient partition, padding, negatives, task data."""

import math
import os

import pytest
import torch
import torch.nn.functional as F
from fairseq import options, tasks

from fairseq_plm.criterions.fusion_loss import auxiliary_losses
from fairseq_plm.data.token_noise import bert_mask, corrupt_words, word_id_range
from fairseq_plm.models.fusion import Coordinator, masked_mean, tsp_candidates
from fairseq_plm.plm.errors import FairseqPLMError
from fairseq_plm.plm.vocab import Retokenizer, detect_subword, make_encoder

USER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fairseq_plm")
SMALL = ["--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "4"]


def build(setup, *extra, arch="deep_fusion"):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        setup["data"], "--user-dir", USER_DIR, "--task", "fusion_translation", "--arch", arch,
        "--plm", setup["plm"], "--criterion", "deep_fusion_loss", "--cpu", *SMALL, *map(str, extra)])
    task = tasks.setup_task(args)
    model = task.build_model(args)
    task.load_dataset("train")
    return task, model, task.build_criterion(args)


def train_batch(task, n=6):
    dataset = task.datasets["train"]
    return dataset.collater([dataset[i] for i in range(n)])


def groups(model):
    """θ_P (PTM), θ_C (coordinator + task heads), θ_D (decoder) -> {name: param}."""
    out = {"P": {}, "C": {}, "D": {}}
    for name, p in model.named_parameters():
        key = "P" if name.startswith("encoder.plm.") else "D" if name.startswith("decoder.") else "C"
        out[key][name] = p
    return out


def reached(model):
    """Names of the parameters a backward pass gave a non-zero gradient."""
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


# ------------------------------------------------------------------ Eq. 10-13

def test_coordinator_matches_a_direct_computation_of_eq_10_to_13():
    torch.manual_seed(0)
    parts, m, d, d_dec, ffn = 3, 2, 8, 6, 10
    coord = Coordinator(parts, d, d_dec, ffn).eval()
    lengths = [5, 3]
    states = [torch.randn(2, 5, d) for _ in range(parts * m)]
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    c, aggregated = coord(states, pad)

    def ffn_apply(net, x):
        w1, b1, w2, b2 = net[0].weight, net[0].bias, net[3].weight, net[3].bias
        return torch.relu(x @ w1.T + b1) @ w2.T + b2

    for b, length in enumerate(lengths):
        ra = []
        for n in range(parts):  # Eq. (10)
            s = sum(states[n * m + j][b, :length] for j in range(m))
            ra.append(F.layer_norm(ffn_apply(coord.aggregate_ffn[n], s), (d,), coord.aggregate_ln[n].weight,
                                   coord.aggregate_ln[n].bias))
        means = [r.sum(0) / length for r in ra]  # (1/I) sum_i r_i over the real positions
        for n in range(parts):
            e = torch.stack([ffn_apply(coord.score, means[n] * means[k]).squeeze() for k in range(parts)])  # Eq. 13
            alpha = torch.exp(e) / torch.exp(e).sum()                                                     # Eq. 12
            expected = ffn_apply(coord.map, sum(alpha[k] * ra[k] for k in range(parts)))                  # Eq. 11
            torch.testing.assert_close(c[n, b, :length], expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(aggregated[n][b, :length], ra[n], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_the_coordinated_encoder(tiny_fusion):
    task, model, _ = build(tiny_fusion)
    model.eval()
    d = task.source_dictionary
    short = torch.tensor([[d.index("a"), d.index("##b"), d.eos()]])
    long_ = torch.tensor([[d.index("a"), d.index("##c"), d.index("a"), d.index("##b"), d.eos()]])
    padded = torch.cat([torch.cat([short, torch.full((1, 2), d.pad())], dim=1), long_])
    with torch.no_grad():
        alone = model.encoder(short)["coordinated"][0]
        batch = model.encoder(padded)["coordinated"][0]
    n = alone.size(1)  # [CLS] x [SEP]
    torch.testing.assert_close(batch[:, :n, 0], alone[:, :, 0], atol=1e-5, rtol=1e-5)


def test_decoder_layer_n_attends_only_c_n(tiny_fusion):
    """Eq. (14): changing C_N changes the last decoder layer only."""
    task, model, _ = build(tiny_fusion, "--fusion-layers", "2")
    model.eval()
    sample = train_batch(task, 3)
    with torch.no_grad():
        enc = model.encoder(sample["net_input"]["src_tokens"])
        _, a = model.decoder(sample["net_input"]["prev_output_tokens"], encoder_out=enc)
        c = enc["coordinated"][0].clone()
        c[-1] += 1.0
        _, b = model.decoder(sample["net_input"]["prev_output_tokens"], encoder_out={**enc, "coordinated": [c]})
    assert len(a["inner_states"]) == 3  # embeddings + N = 4 / 2 layers
    torch.testing.assert_close(a["inner_states"][1], b["inner_states"][1])
    assert not torch.allclose(a["inner_states"][2], b["inner_states"][2])


@pytest.mark.parametrize("m,n", [(1, 4), (2, 2), (4, 1)])
def test_fusion_layers_set_the_decoder_depth(tiny_fusion, m, n):
    _, model, _ = build(tiny_fusion, "--fusion-layers", m)
    assert len(model.decoder.layers) == n == model.encoder.coordinator.num_parts


def test_bad_fusion_settings_are_refused(tiny_fusion, tiny):
    with pytest.raises(FairseqPLMError, match="--fusion-layers 3 does not divide the PTM's 4 layers"):
        build(tiny_fusion, "--fusion-layers", "3")
    with pytest.raises(FairseqPLMError, match="gpt2 model; deep fusion needs a bidirectional encoder"):
        build(dict(tiny_fusion, plm=tiny["plm"]))


# ------------------------------------------------------------------ gradient partition (Figure 2)

def term_losses(model, criterion, sample):
    """Each term of Eq. (18) on its own, from one training forward."""
    net = sample["net_input"]
    out = model(**net, tgt_tokens=sample["target"], ptm_target=sample["ptm_target"])
    losses = auxiliary_losses(out[1].pop("auxiliary"))
    lprobs = model.get_normalized_probs(out, log_probs=True)
    losses["translation"] = F.nll_loss(lprobs.view(-1, lprobs.size(-1)), sample["target"].view(-1),
                                       ignore_index=task_pad(model))
    return losses


def task_pad(model):
    return model.decoder.dictionary.pad()


@pytest.mark.parametrize("update", ["partitioned", "all_tasks"])
def test_each_loss_trains_exactly_its_parameter_groups(tiny_fusion, update):
    task, model, criterion = build(tiny_fusion, "--ptm-update", update, "--dropout", "0")
    sample = train_batch(task)
    g = groups(model)
    coordinator_last = {n for n in g["C"] if ".aggregate_" in n and n.split(".")[3] == "1"}  # part N = 2
    for term in ("translation", "twp", "tsp", "mlm"):
        model.zero_grad()
        torch.manual_seed(1)
        model.train()
        term_losses(model, criterion, sample)[term].backward()
        got = reached(model)
        on = {k for k in g if got & set(g[k])}
        if term == "translation":
            assert on == ({"C", "D", "P"} if update == "all_tasks" else {"C", "D"})
            assert set(g["D"]) <= got | {n for n in g["D"] if "embed_positions" in n}
            assert not got & {n for n in g["C"] if n.startswith("encoder.heads.")}
            assert {n for n in g["C"] if n.startswith("encoder.coordinator.")} <= got
        elif term == "mlm":
            assert on == {"P"}
            assert {n for n in g["P"] if ".lm_head." in n} <= got
        else:  # TWP, TSP: r^A_N -> the last part's aggregation, its head, the PTM
            assert on == {"C", "P"}
            assert got & set(g["C"]) == coordinator_last | {n for n in g["C"] if n.startswith(f"encoder.heads.{term}.")}
            assert {n for n in g["P"] if ".layers." in n} <= got


def test_frozen_ptm_and_table2_baselines(tiny_fusion):
    _, model, _ = build(tiny_fusion, "--ptm-update", "frozen")
    assert not any(p.requires_grad for p in model.encoder.plm.parameters())
    assert not model.encoder.use_mlm and model.encoder.heads.twp is not None
    _, model, _ = build(tiny_fusion, arch="deep_fusion_mbert_init_encoder")
    assert model.encoder.coordinator is None and len(model.decoder.layers) == 6
    assert not model.encoder.has_auxiliary_tasks
    assert all(p.requires_grad for n, p in model.encoder.plm.named_parameters() if not n.startswith("lm_head."))
    _, model, _ = build(tiny_fusion, arch="deep_fusion_frozen_mbert_encoder")
    assert not any(p.requires_grad for p in model.encoder.plm.parameters())


@pytest.mark.parametrize("bag", ["set", "multiset"])
def test_losses_match_their_equations(tiny_fusion, bag):
    task, model, criterion = build(tiny_fusion, "--dropout", "0", *(["--twp-bag", bag] if bag == "multiset" else []))
    assert model.encoder.cfg.twp_bag == bag  # set: the default
    sample = train_batch(task)
    torch.manual_seed(3)
    model.train()
    enc = model.encoder(sample["net_input"]["src_tokens"])
    aux = model.encoder.auxiliary_outputs(enc, sample["net_input"]["src_tokens"], sample["target"],
                                          sample["ptm_target"])
    losses = auxiliary_losses(aux)
    # Eq. (15)-(16): bag-of-words NLL from r^A_N, averaged over the words of the targets' bags:
    # y_bow "an unordered set containing all words" (set), or every occurrence (multiset)
    r = enc["summary"][0]
    lp = F.log_softmax(model.encoder.heads.twp(r), dim=-1)
    tgt = task.target_dictionary
    rows = [[w for w in row if w not in (tgt.pad(), tgt.eos(), tgt.bos(), tgt.unk())]
            for row in sample["target"].tolist()]
    assert any(len(set(row)) < len(row) for row in rows)  # the batch has repeated words: set != multiset
    bags = [sorted(set(row)) if bag == "set" else row for row in rows]
    nll = [-lp[b, w] for b, words in enumerate(bags) for w in words]
    torch.testing.assert_close(losses["twp"], torch.stack(nll).mean(), atol=1e-5, rtol=1e-5)
    # Eq. (17): softmax over cosine similarities, the positive in column i
    logits = aux["tsp"]["logits"]
    b = logits.size(0)
    assert logits.shape == (b, 2 * b)
    expected = torch.stack([-(logits[i, i] - torch.logsumexp(logits[i][logits[i] > -1e8], 0)) for i in range(b)])
    torch.testing.assert_close(losses["tsp"], expected.mean(), atol=1e-5, rtol=1e-5)
    assert logits[logits > -1e8].abs().max() <= 1.0 + 1e-5  # cosine, temperature 1


# ------------------------------------------------------------------ negatives and masking

def test_synthetic_negatives():
    low, high = 10, 50
    torch.manual_seed(0)
    kinds = set()
    for trial in range(300):
        n = 1 + trial % 12
        tokens = torch.randint(low, high, (n,)).tolist()
        out = corrupt_words(tokens, low, high, ratio=0.5)
        k = max(1, round(0.5 * n))
        assert out != tokens
        assert n - k <= len(out) <= n
        assert all(low <= t < high for t in out)
        if len(out) < n:
            kinds.add("delete")
        elif sorted(out) == sorted(tokens):
            kinds.add("swap")
        else:
            kinds.add("replace")
    assert kinds == {"delete", "swap", "replace"}
    torch.manual_seed(5)
    a = corrupt_words(list(range(20, 40)), low, high)
    torch.manual_seed(5)
    assert corrupt_words(list(range(20, 40)), low, high) == a


@pytest.mark.parametrize("b", [1, 2, 5, 8])
def test_tsp_candidates_are_half_in_batch_half_synthetic(b):
    torch.manual_seed(b)
    allowed = tsp_candidates(b, torch.device("cpu"))
    in_batch, synthetic = allowed[:, :b], allowed[:, b:]
    assert in_batch.diagonal().all() and synthetic.diagonal().all()  # positive; own corruption
    assert (in_batch.sum(1) - 1).tolist() == [min(b - 1, b // 2)] * b
    assert synthetic.sum(1).tolist() == [(b + 1) // 2] * b
    if b > 1:
        assert (in_batch.sum(1) - 1 + synthetic.sum(1)).tolist() == [b] * b  # B negatives


def test_bert_mask():
    torch.manual_seed(0)
    tokens = torch.randint(10, 50, (400, 30))
    maskable = torch.ones_like(tokens, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False
    maskable[0, 1:] = False
    maskable[0, 5] = True  # a one-token sentence still gets its token masked
    inputs, chosen = bert_mask(tokens, maskable, 3, 10, 50)
    assert not (chosen & ~maskable).any() and chosen.any(dim=1).all() and chosen[0, 5]
    assert abs(chosen.float().sum() / maskable.sum() - 0.15) < 0.01
    masked = inputs[chosen].eq(3).float().mean()
    kept = inputs[chosen].eq(tokens[chosen]).float().mean()
    assert abs(masked - 0.8) < 0.03 and abs(kept - 0.1) < 0.03 + 1 / 40
    assert inputs[~chosen].equal(tokens[~chosen])


def test_word_id_range_skips_special_tokens(tiny_fusion, tiny_xlmr):
    for setup in (tiny_fusion, tiny_xlmr):
        task, = [tasks.setup_task(options.parse_args_and_arch(options.get_training_parser(), [
            setup["data"], "--user-dir", USER_DIR, "--task", "fusion_translation", "--arch", "deep_fusion",
            "--plm", setup["plm"]]))]
        d = task.source_dictionary
        low, high = word_id_range(d)
        specials = {d.pad(), d.bos(), d.eos(), d.unk(), d.mask_index}
        assert not specials & set(range(low, high)) and high - low >= len(d) - 10


# ------------------------------------------------------------------ the task's two vocabularies

def test_two_vocabulary_batches_and_ptm_targets(tiny_fusion):
    task, _, _ = build(tiny_fusion)
    src, tgt = task.source_dictionary, task.target_dictionary
    assert (src.pad(), src.eos()) == (0, 8) and (tgt.pad(), tgt.eos()) == (1, 2)
    sample = train_batch(task)
    s, t, prev = sample["net_input"]["src_tokens"], sample["target"], sample["net_input"]["prev_output_tokens"]
    assert s.eq(1).sum() == 0 or s[s.eq(0)].numel() > 0  # source padded with [PAD] 0
    assert (s.ne(0).sum(1) == sample["net_input"]["src_lengths"]).all()
    assert prev[:, 0].eq(tgt.eos()).all() and prev[:, 1:].masked_fill(prev[:, 1:].eq(1), 0).ne(0).any()
    assert (t.ne(1).sum(1) == prev.ne(1).sum(1)).all()
    # ptm_target: each target's text, tokenized by the PTM's WordPiece
    encode = make_encoder(tiny_fusion["plm"])
    with open(os.path.join(tiny_fusion["raw"], "train.de"), encoding="utf-8") as f:
        raw = f.read().split("\n")
    for row, i in zip(sample["ptm_target"], sample["id"].tolist()):
        expected = [src.index(p) for p in encode(raw[i].strip())]
        assert row[row.ne(src.pad())].tolist() == expected


def test_detect_subword():
    class D:
        nspecial = 0

    for symbols, kind in ((["\u2581a", "\u2581b", "c"], "sentencepiece"), (["ab@@", "c"], "subword_nmt"),
                          (["ab", "c"], "none")):
        D.symbols = symbols
        assert detect_subword(D) == kind


def test_retokenizer_is_picklable(tiny_fusion):
    import pickle

    task, _, _ = build(tiny_fusion)
    r = task.retokenizer
    ids = task.target_dictionary.encode_line("\u2581Hallo \u2581Welt", add_if_not_exist=False)
    copy = pickle.loads(pickle.dumps(r))
    assert isinstance(copy, Retokenizer) and copy(ids) == r(ids)


def test_missing_ptm_tokenizer_is_named(tiny_fusion, tmp_path):
    with pytest.raises(FairseqPLMError, match="--ptm-tokenizer"):
        build(tiny_fusion, "--ptm-tokenizer", str(tmp_path / "nope.txt"))


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[False, False, True]])).item() == 2.0
    assert math.isclose(masked_mean(x, torch.tensor([[False, False, False]])).item(), 104 / 3, rel_tol=1e-6)


def test_xlmr_works_as_the_ptm(tiny_xlmr):
    """XLM-R (RoBERTa layout: <s> x </s>, positions from padding_idx + 1) in place of mBERT."""
    task, model, criterion = build(tiny_xlmr, "--fusion-layers", "1")
    assert len(model.decoder.layers) == 2 and model.encoder.plm.cfg.family == "roberta"
    sample = train_batch(task)
    model.train()
    loss, sample_size, log = criterion(model, sample)
    loss.backward()
    assert torch.isfinite(loss) and all(k in log for k in ("twp-loss", "tsp-loss", "mlm-loss"))
    assert model.encoder.plm.layers[0].attn_ln.weight.grad is not None
