"""SGA: the units against a direct computation of Eq. 1-6, padding, gradient partition
(Eq. 7), the frozen PLM, the refinement loop's fixed point, batched decoding."""

import pytest
import torch

from fairseq.iterative_refinement_generator import IterativeRefinementGenerator

from fairseq_plm.criterions.plm_nat_loss import PLMNATLoss
from fairseq_plm.models.sga import SGAConfig, SGAModel
from fairseq_plm.nat.ctc import ctc_collapse
from fairseq_plm.plm.bert import BertEncoder
from fairseq_plm.plm.config import preset
from fairseq_plm.plm.errors import FairseqPLMError
from fairseq_plm.plm.frozen import fingerprint
from fairseq_plm.plm.vocab import PLMDictionary

V = 40
SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, V - 1)] + ["<mask>"]
BOS, PAD, EOS, MASK = 0, 1, 2, V - 1


def tiny_sga(alignment="ctc", denoise=True, seed=0, family="roberta", prompt_length=3):
    d = PLMDictionary(SYMBOLS, pad=PAD, eos=EOS, unk=3, bos=BOS, mask=MASK, kind="xlmr")
    name = "xlmr-base" if family == "roberta" else "mbert"
    cfg = preset(name, num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=V,
                 max_positions=66, pad_token_id=PAD)
    plm = BertEncoder(cfg).init_random(seed).freeze()
    plm.fingerprint = fingerprint(plm)
    torch.manual_seed(seed)
    model = SGAModel.from_plm(SGAConfig(plm="tiny", prompt_length=prompt_length, alignment=alignment,
                                        no_denoising=not denoise, max_target_length=12), plm, d)
    with torch.no_grad():  # move trained parameters away from their init so every unit matters
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    return model.eval(), d


def batch(rows, pad=PAD):
    """Right-padded ``x </s>`` rows, as plm_translation feeds them."""
    width = max(len(r) for r in rows) + 1
    out = torch.full((len(rows), width), pad)
    for i, r in enumerate(rows):
        out[i, :len(r) + 1] = torch.tensor(r + [EOS])
    return out, out.ne(pad).sum(1)


SRC = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
TGT = [[20, 21, 22], [23], [24, 25]]


def test_units_follow_eq_1_to_6():
    model, _ = tiny_sga()
    plm = model.plm
    x = torch.tensor([[BOS, 5, 6, 7, EOS]])
    h_s = plm(x, prefix=model.encoder.prompt(), return_hidden_states=True).hidden_states[1:]  # Eq. 1: layers 1..L
    H, D = plm.cfg.num_heads, plm.cfg.head_dim

    def heads(t):
        return t.view(1, -1, H, D).transpose(1, 2)

    ks = [heads(model.encoder.w_k(h)) for h in h_s]  # Eq. 2
    vs = [heads(model.encoder.w_v(h)) for h in h_s]

    def unit(prompt, canvas):
        # Eq. 3 / 5: per layer concat([K_s; K_u]) as ONE tensor, positions 2.. (XLM-R)
        p = prompt()
        prefix = [(torch.cat([k, pk], 2), torch.cat([v, pv], 2)) for k, v, (pk, pv) in zip(ks, vs, p)]
        framed = torch.tensor([[BOS] + canvas + [EOS]])
        pos = torch.arange(framed.size(1))[None] + 2
        return torch.log_softmax(plm.logits(plm(framed, prefix=prefix, position_ids=pos).hidden)[:, 1:-1], -1)

    enc = model.encoder(*batch([[5, 6, 7]]))
    got = model.unit(model.align_prompt, torch.full((1, 6), MASK), torch.ones(1, 6, dtype=torch.bool), enc)
    want = unit(model.align_prompt, [MASK] * 6)  # Eq. 4: Y_blank = 2 x |x| masks
    allowed = torch.ones(V, dtype=torch.bool)
    allowed[[BOS, PAD, EOS]] = False
    assert torch.allclose(got[..., allowed], want[..., allowed].log_softmax(-1), atol=1e-5)
    assert (got[..., ~allowed] < -1e8).all()  # framing/padding are never generated
    noisy = [7, MASK, 9, 9, MASK, 11]
    got = model.unit(model.denoise_prompt, torch.tensor([noisy]), torch.ones(1, 6, dtype=torch.bool), enc)
    want = unit(model.denoise_prompt, noisy)  # Eq. 6
    assert torch.allclose(got[..., allowed], want[..., allowed].log_softmax(-1), atol=1e-5)


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_padded_batch_equals_sentences_alone(family):
    model, _ = tiny_sga(family=family)
    src, lens = batch(SRC)
    enc = model.encoder(src, lens)
    canvas, mask = model.ctc_canvas(enc)
    assert mask.sum(1).tolist() == [10, 4, 6]  # r x |x| per sentence: no fixed-size canvas
    together = model.unit(model.align_prompt, canvas, mask, enc)
    for i, row in enumerate(SRC):
        e1 = model.encoder(*batch([row]))
        c1, m1 = model.ctc_canvas(e1)
        alone = model.unit(model.align_prompt, c1, m1, e1)
        n = m1.size(1)
        assert torch.allclose(together[i, :n], alone[0], atol=1e-5)


def generate(model, d, rows, max_iter=10, history=False):
    gen = IterativeRefinementGenerator(d, models=[model], max_iter=max_iter, retain_history=history)
    src, lens = batch(rows)
    return gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": lens}})


@pytest.mark.parametrize("alignment", ["ctc", "mask_predict"])
def test_batched_decoding_equals_batch_size_one(alignment):
    model, d = tiny_sga(alignment=alignment)
    together = generate(model, d, SRC)
    for i, row in enumerate(SRC):
        alone = generate(model, d, [row])
        assert together[i][0]["tokens"].tolist() == alone[0][0]["tokens"].tolist()
        assert together[i][0]["steps"] == alone[0][0]["steps"]
    for hyp in together:  # collapsed output: no blanks, framing or padding, no repeated neighbours
        t = hyp[0]["tokens"]
        assert not any(tok in (MASK, PAD, BOS, EOS) for tok in t.tolist())


def _denoiser_as(model, rule):
    """Replace the denoising unit by ``rule(canvas) -> tokens`` (one-hot log-probs)."""
    real_unit = model.unit
    calls = {"n": 0}

    def unit(prompt, canvas, mask, enc):
        if prompt is not model.denoise_prompt:
            return real_unit(prompt, canvas, mask, enc)
        calls["n"] += 1
        out = rule(canvas.clone(), calls["n"])
        return torch.nn.functional.one_hot(out, V).float().mul(1e4).log_softmax(-1)

    model.unit = unit
    return calls


def test_denoising_loop_stops_at_a_fixed_point():
    model, d = tiny_sga()
    aligned = generate(tiny_sga(denoise=False)[0], d, SRC, max_iter=0)

    def settle(canvas, n):  # first loop writes w4 into the first slot, then nothing changes
        canvas[:, 0] = 4
        return canvas

    calls = _denoiser_as(model, settle)
    hyps = generate(model, d, SRC, max_iter=20, history=True)
    assert calls["n"] == 2  # loop 1 changed the output, loop 2 did not: stop (batched, one call per loop)
    for h, a in zip(hyps, aligned):
        assert h[0]["steps"] == 2
        assert h[0]["tokens"].tolist() == ([4] + a[0]["tokens"].tolist()[1:] if a[0]["tokens"][0] != 4
                                           else a[0]["tokens"].tolist()) or h[0]["tokens"][0] == 4
        assert h[0]["history"][-1]["tokens"].tolist() == h[0]["history"][-2]["tokens"].tolist()
    # a denoiser that never settles runs to the maximum number of loops
    model, d = tiny_sga()
    calls = _denoiser_as(model, lambda canvas, n: canvas.fill_(4 + n % 2))
    hyps = generate(model, d, SRC[:1], max_iter=5)
    assert hyps[0][0]["steps"] == 5 and calls["n"] == 5
    # an untrained denoiser may cycle; --iter-decode-max-iter bounds it
    assert generate(tiny_sga()[0], d, SRC, max_iter=3)[0][0]["steps"] <= 3


def test_without_denoiser_the_alignment_is_final():
    model, d = tiny_sga(denoise=False)
    assert model.denoise_prompt is None
    hyp = generate(model, d, SRC[:2], max_iter=10)
    assert all(h[0]["steps"] == 1 for h in hyp)  # step 1 changes nothing: the generator stops
    enc = model.encoder(*batch(SRC[:2]))
    canvas, mask = model.ctc_canvas(enc)
    want, n = ctc_collapse(model.unit(model.align_prompt, canvas, mask, enc).argmax(-1), MASK, PAD, mask)
    assert [h[0]["tokens"].tolist() for h in hyp] == [want[i, :n[i]].tolist() for i in range(2)]


def sample(rows_src, rows_tgt):
    src, lens = batch(rows_src)
    tgt, _ = batch(rows_tgt)
    return {"net_input": {"src_tokens": src, "src_lengths": lens, "prev_output_tokens": tgt},
            "target": tgt, "ntokens": int(tgt.ne(PAD).sum())}


class _Task:
    def __init__(self, d):
        self.target_dictionary = self.source_dictionary = d


@pytest.mark.parametrize("alignment", ["ctc", "mask_predict"])
def test_each_loss_reaches_only_its_own_units(alignment):
    """Eq. 7: L_1(theta_ps, theta_pa) + L_2(theta_ps, theta_pd); W_K, W_V in both."""
    model, d = tiny_sga(alignment=alignment)
    model.train()
    terms = model(**sample(SRC, TGT)["net_input"], tgt_tokens=sample(SRC, TGT)["target"])
    crit = PLMNATLoss(_Task(d))
    groups = {"ps": model.encoder.prompt, "wk": model.encoder.w_k, "wv": model.encoder.w_v,
              "pa": model.align_prompt, "pd": model.denoise_prompt}
    if alignment == "mask_predict":
        groups["len"] = model.encoder.length_head
    align_name = "align-ctc" if alignment == "ctc" else "align-mask-predict"
    expected = {align_name: {"ps", "wk", "wv", "pa"}, "denoise-ctc": {"ps", "wk", "wv", "pd"}}
    if alignment == "mask_predict":
        expected["length"] = {"ps", "len"}
    assert set(terms) == set(expected)
    for name, want in expected.items():
        model.zero_grad()
        terms = model(**sample(SRC, TGT)["net_input"], tgt_tokens=sample(SRC, TGT)["target"])
        loss, _, _ = _one_term(crit, model, terms, name)
        loss.backward()
        got = {g for g, m in groups.items() if any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())}
        assert got == want, (name, got)
        assert all(p.grad is None for p in model.plm.parameters())


def _one_term(crit, model, terms, name):
    class Only:
        blank = model.blank

        def __call__(self, *a, **k):
            return {name: terms[name]}

    return crit(Only(), sample(SRC, TGT))


def test_training_changes_prompts_only_and_plm_stays_frozen():
    model, d = tiny_sga()
    before = {k: v.clone() for k, v in model.plm.state_dict().items()}
    trained_before = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    crit = PLMNATLoss(_Task(d))
    model.train()
    assert not model.plm.training  # pinned to eval: no dropout inside the frozen PLM
    losses = []
    for _ in range(5):
        loss, _, log = crit(model, sample(SRC, TGT))
        assert {"align-ctc-loss", "denoise-ctc-loss"} <= set(log)  # each term logged
        assert loss.item() == pytest.approx(log["align-ctc-loss"] + log["denoise-ctc-loss"], rel=1e-5)  # Eq. 7
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in model.plm.state_dict().items())
    # (a scale alpha below 1 gets no gradient: max(alpha, 1), Eq. 10)
    assert all(not torch.equal(trained_before[n], p) for n, p in model.named_parameters()
               if p.requires_grad and not n.endswith("alpha"))
    state = model.state_dict()
    assert not any(".plm." in k or k.startswith("plm.") for k in state)  # checkpoints hold no PLM weights


def test_mask_predict_decoding_schedule():
    model, d = tiny_sga(alignment="mask_predict")
    enc = model.forward_encoder(batch(SRC))
    lengths = model._predicted_lengths(enc)
    tokens, scores = model.mask_predict(enc)
    assert (tokens.ne(PAD).sum(1) == lengths).all() and not tokens.eq(MASK).any()
    hyps = generate(model, d, SRC, max_iter=3, history=True)
    for i, h in enumerate(hyps):
        hist = h[0]["history"]
        assert len(hist[1]["tokens"]) == lengths[i]  # step 0: Mask-Predict output, predicted length
        if len(hist) > 2:  # step 1: CTC denoiser over the x2 duplicated canvas
            assert len(hist[2]["tokens"]) <= 2 * lengths[i]


# ------------------------------------------------------------------ §4.4 denoiser training

def _recording_denoiser(model):
    """Record the canvases the denoising unit reads (and keep its real output)."""
    real_unit, seen = model.unit, []

    def unit(prompt, canvas, mask, enc):
        out = real_unit(prompt, canvas, mask, enc)
        if prompt is model.denoise_prompt:
            seen.append((canvas.clone(), out.detach().clone()))
        return out

    model.unit = unit
    return seen


@pytest.mark.parametrize("alignment", ["ctc", "mask_predict"])
def test_denoiser_trains_on_its_own_outputs_by_default(alignment):
    """§4.4: pairs (Y, T_i): T_0 the (noised) alignment output, T_1 the denoiser's own output on it."""
    from fairseq_plm.nat.ctc import ctc_collapse_in_place, ctc_loss

    model, d = tiny_sga(alignment=alignment)
    assert model.cfg.denoiser_training == "own_outputs" and model.cfg.denoise_train_steps == 2
    model.train()
    seen = _recording_denoiser(model)
    s = sample(SRC, TGT)
    torch.manual_seed(0)
    terms = model(**s["net_input"], tgt_tokens=s["target"])
    assert len(seen) == 2
    (t0, lp0), (t1, lp1) = seen
    mask = t0.ne(PAD) if alignment == "mask_predict" else model.ctc_canvas(model.encoder(*batch(SRC)))[1]
    collapsed = ctc_collapse_in_place(lp0.argmax(-1), MASK, PAD, mask)[0]
    assert torch.equal(t1[mask], collapsed.masked_fill(collapsed.eq(PAD), MASK)[mask])  # T_1 = B(f(T~_0))
    assert not torch.equal(t1, t0)
    # L_2 is the mean of the two steps' CTC losses (per target token)
    target = s["target"].masked_fill(s["target"].eq(EOS), PAD)
    n = target.ne(PAD).sum()
    want = sum(ctc_loss(lp, mask, target, target.ne(PAD), MASK) for lp in (lp0, lp1)) / (2 * n)
    crit = PLMNATLoss(_Task(d))
    got, _, _ = _one_term(crit, model, terms, "denoise-ctc")
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_noised_t0_switch_trains_on_the_alignment_output_only():
    model, d = tiny_sga()
    model.cfg.denoiser_training = "noised_t0"
    model.train()
    seen = _recording_denoiser(model)
    s = sample(SRC, TGT)
    terms = model(**s["net_input"], tgt_tokens=s["target"])
    assert len(seen) == 1 and terms["denoise-ctc"]["lprobs"].size(0) == len(SRC)
    model.cfg.denoiser_training, model.cfg.denoise_train_steps = "own_outputs", 3
    seen.clear()
    terms = model(**s["net_input"], tgt_tokens=s["target"])
    assert len(seen) == 3 and terms["denoise-ctc"]["lprobs"].size(0) == 3 * len(SRC)


# ------------------------------------------------------------------ Table 4, zero iterations

def test_zero_mask_predict_iterations_align_with_the_ctc_denoiser():
    """Table 4 "# Iter. 0": no Mask-Predict pass; the CTC denoiser reads a blank canvas of
    twice the predicted length; --iter-decode-max-iter 0 keeps that CTC alignment alone."""
    model, d = tiny_sga(alignment="mask_predict")
    model.cfg.mask_predict_iterations = 0
    enc = model.forward_encoder(batch(SRC))
    lengths = model._predicted_lengths(enc)
    seen = _recording_denoiser(model)
    alone = generate(model, d, SRC, max_iter=0)
    (canvas, lp), = seen
    assert canvas.ne(PAD).sum(1).tolist() == (2 * lengths).tolist() and canvas[canvas.ne(PAD)].eq(MASK).all()
    want, n = ctc_collapse(lp.argmax(-1), MASK, PAD, canvas.ne(PAD))
    assert [h[0]["tokens"].tolist() for h in alone] == [want[i, :n[i]].tolist() for i in range(len(SRC))]
    seen.clear()
    looped = generate(model, d, SRC, max_iter=3)
    assert 2 <= len(seen) <= 4  # the alignment, then denoising loops until a fixed point
    assert all(h[0]["steps"] >= 1 for h in looped)
    for i, row in enumerate(SRC):  # batched == one at a time
        assert generate(model, d, [row], max_iter=3)[0][0]["tokens"].tolist() == looped[i][0]["tokens"].tolist()
    no_denoiser, _ = tiny_sga(alignment="mask_predict", denoise=False)
    no_denoiser.cfg.mask_predict_iterations = 0
    with pytest.raises(FairseqPLMError, match="mask_predict_iterations=0 aligns with the CTC denoiser"):
        generate(no_denoiser, d, SRC)


@pytest.mark.parametrize("setting", ["mask_predict", "mask_predict_zero_iterations", "ctc_free"])
def test_predicted_length_is_capped_so_the_canvas_fits_the_plm(setting):
    """A length predictor with more classes than the PLM has positions for the canvas (the
    default --max-target-length 256 on a 256-position XLM-R, with the 2x denoiser canvas) may
    predict a length whose canvas does not fit: it is capped at the model's max target length,
    and decoding runs instead of failing."""
    model, d = tiny_sga(alignment="mask_predict")
    cfg = SGAConfig(plm="tiny", prompt_length=3, max_target_length=64,
                    **({"ctc_canvas": "predicted"} if setting == "ctc_free" else {"alignment": "mask_predict"}))
    torch.manual_seed(0)
    model = SGAModel.from_plm(cfg, model.plm, d).eval()
    if setting == "mask_predict_zero_iterations":
        model.cfg.mask_predict_iterations = 0
    with torch.no_grad():
        model.encoder.length_head.bias.fill_(-100.0)
        model.encoder.length_head.bias[63] = 100.0  # every sentence predicted 63 tokens long
    cap = model.max_positions()[1]
    assert cap == (62 // 2 if setting != "ctc_free" else 62 // model.cfg.upsample_ratio) < 63
    enc = model.forward_encoder(batch(SRC))
    assert model._predicted_lengths(enc).tolist() == [cap] * len(SRC)
    hyps = generate(model, d, SRC, max_iter=2)
    assert len(hyps) == len(SRC) and all(len(h[0]["tokens"]) <= 2 * cap for h in hyps)


def test_ctc_alignment_over_the_predicted_length_for_free_generation():
    """--ctc-canvas predicted (sga_ctc_free): the CTC canvas is r x |y| (gold in training,
    predicted at inference), and a length term trains the predictor."""
    model, d = tiny_sga(alignment="ctc")
    cfg = SGAConfig(plm="tiny", prompt_length=3, ctc_canvas="predicted", max_target_length=12)
    torch.manual_seed(0)
    model = SGAModel.from_plm(cfg, model.plm, d)
    model.train()
    s = sample(SRC, TGT)
    seen = _recording_denoiser(model)
    terms = model(**s["net_input"], tgt_tokens=s["target"])
    assert set(terms) == {"length", "align-ctc", "denoise-ctc"}
    assert terms["align-ctc"]["input_mask"].sum(1).tolist() == [2 * len(t) for t in TGT]  # r x |y|, not r x |x|
    assert seen[0][0].ne(PAD).sum(1).tolist() == [2 * len(t) for t in TGT]
    model.eval()
    enc = model.forward_encoder(batch(SRC))
    predicted = model._predicted_lengths(enc)
    hyps = generate(model, d, SRC, max_iter=0)
    canvas, mask = model.ctc_canvas(enc)
    assert mask.sum(1).tolist() == (2 * predicted).tolist()
    want, n = ctc_collapse(model.unit(model.align_prompt, canvas, mask, enc).argmax(-1), MASK, PAD, mask)
    assert [h[0]["tokens"].tolist() for h in hyps] == [want[i, :n[i]].tolist() for i in range(len(SRC))]
