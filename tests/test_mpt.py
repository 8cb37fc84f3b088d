"""MPT units: template layouts (Eq. 1/9), k-shot sampling, symmetric KL (Eq. 7), the
translator's place in the model (Eq. 4), the verbalizer (Eq. 2-3) and the loss (Eq. 8)."""

import torch
import torch.nn.functional as F
import pytest

from fairseq_plm.criterions.mpt_loss import MPTLoss, symmetric_kl
from fairseq_plm.data.nli import (ClozeTemplate, NLIDataset, NLIExample, NLIWithParallelDataset, read_nli,
                                  read_parallel, sample_k_shot, write_tsv)
from fairseq_plm.models.mpt import TRANSLATORS, MPTModel
from fairseq_plm.plm.bert import BertEncoder
from fairseq_plm.plm.config import preset
from fairseq_plm.plm.errors import FairseqPLMError
from fairseq_plm.plm.vocab import PLMDictionary

WORDS = ["we", "saw", "a", "river", "the", "is", "here", "Yes", "Maybe", "No", "sure"]
SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>", ".", "?"] + ["\u2581" + w for w in WORDS] + ["<mask>"]


def dictionary():
    return PLMDictionary(SYMBOLS, pad=1, eos=2, unk=3, bos=0, mask=len(SYMBOLS) - 1, kind="xlmr")


def encode(text):
    """A whitespace 'sentencepiece': every word is one piece."""
    return ["\u2581" + w for w in text.split()]


def template(position="suffix", m=2, max_length=64):
    return ClozeTemplate(dictionary(), encode, prompt_length=m, position=position, max_length=max_length)


@pytest.mark.parametrize("position", ["prefix", "midfix", "suffix", "endfix"])
def test_template_positions_give_the_intended_layout(position):
    d = dictionary()
    t = template(position)
    ids, start = t.cloze("we saw a river.", "the river is here?")  # final punctuation is the template's own
    w = lambda s: [d.index("\u2581" + x) for x in s.split()]  # noqa: E731
    P, H, p = w("we saw a river"), w("the river is here"), [d.unk()] * 2
    dot, q, mask = [d.index(".")], [d.index("?")], [d.mask_index]
    body = {"prefix": p + P + dot + H + q + mask + dot,       # Prefix X_P . X_H ? _ .
            "midfix": P + dot + p + H + q + mask + dot,       # X_P . Midfix X_H ? _ .
            "suffix": P + dot + H + q + p + mask + dot,       # X_P . X_H ? [p] _ .   (Eq. 1)
            "endfix": P + dot + H + q + mask + p + dot}[position]  # X_P . X_H ? _ Endfix .
    assert ids == [d.bos()] + body + [d.eos()]
    assert ids[start:start + 2] == p and ids.count(d.unk()) == 2 and ids.count(d.mask_index) == 1


def test_template_truncates_the_longer_sentence_and_keeps_the_template():
    d = dictionary()
    t = template(max_length=16)  # fixed part: <s> . ? [p p] <mask> . </s> = 8 tokens
    ids, start = t.cloze("we saw a river we saw a river we saw", "the river")
    assert len(ids) == 16
    assert ids[-5:] == [d.unk(), d.unk(), d.mask_index, d.index("."), d.eos()] and start == 11
    assert ids[1:7] == [d.index("\u2581" + x) for x in "we saw a river we saw".split()]  # cut from the end


def test_pair_format_for_fine_tuning():
    d = dictionary()
    ids, _ = template().pair("we saw", "the river")
    assert ids == [0, d.index("\u2581we"), d.index("\u2581saw"), 2, 2, d.index("\u2581the"), d.index("\u2581river"), 2]


def test_verbalizer_words_must_be_single_tokens():
    d = dictionary()
    assert template().label_word_ids("entailment:Yes|sure,neutral:Maybe,contradiction:No") == \
        [[d.index("\u2581Yes"), d.index("\u2581sure")], [d.index("\u2581Maybe")], [d.index("\u2581No")]]
    with pytest.raises(FairseqPLMError, match="'Perhaps' is not one token"):
        template().label_word_ids("entailment:Yes,neutral:Perhaps,contradiction:No")
    with pytest.raises(FairseqPLMError, match="no word for contradiction"):
        template().label_word_ids("entailment:Yes,neutral:Maybe")


def examples(n_per_label=10):
    return [NLIExample(f"p{i}", f"h{i}", i % 3, "en") for i in range(3 * n_per_label)]


def test_k_shot_sampler_is_balanced_and_seed_deterministic():
    data = examples()
    for k in (1, 2, 4, 8):
        a = sample_k_shot(data, k, seed=3)
        assert [sum(e.label == y for e in a) for y in range(3)] == [k, k, k]
        assert len({e.premise for e in a}) == 3 * k  # no repeats
        assert [e.premise for e in a] == [e.premise for e in sample_k_shot(data, k, seed=3)]
    assert [e.premise for e in sample_k_shot(data, 4, seed=1)] != [e.premise for e in sample_k_shot(data, 4, seed=2)]
    assert len(sample_k_shot(data, 0, seed=1)) == len(data)
    with pytest.raises(FairseqPLMError, match="only 10 'entailment'"):
        sample_k_shot(data, 16, seed=1)


def test_reads_xnli_and_multinli_column_names(tmp_path):
    f = tmp_path / "xnli.tsv"
    f.write_text("language\tgold_label\tsentence1\tsentence2\tpairID\n"
                 "de\tcontradiction\tEr \"sagt\" ja.\tNein.\t1\nen\t-\tno consensus\tx\t2\n", encoding="utf-8")
    assert read_nli(str(f), "en") == [NLIExample('Er "sagt" ja.', "Nein.", 2, "de")]
    g = tmp_path / "mnli.tsv"
    g.write_text("premise\thypo\tlabel\nA man.\tA person.\tcontradictory\nB.\tC.\tentailment\n")
    assert [(e.label, e.language) for e in read_nli(str(g), "en")] == [(2, "en"), (0, "en")]
    g.write_text("premise\thypo\tlabel\nA man.\tA person.\tyes\n")
    with pytest.raises(FairseqPLMError, match=r"mnli.tsv:2: unknown label 'yes'"):
        read_nli(str(g), "en")
    write_tsv(str(tmp_path / "p.tsv"), [{"src_premise": "a", "src_hypothesis": "b", "tgt_premise": "c",
                                         "tgt_hypothesis": "d", "tgt_language": "de"}])
    assert read_parallel(str(tmp_path / "p.tsv"))[0].tgt_premise == "c"


def test_parallel_pairs_are_batched_alongside_the_task_data():
    t = template()
    task = NLIDataset.encode(examples(1), t, "en")  # 3 examples
    par = [NLIExample("we saw", "the river", -1, "en") for _ in range(5)]
    src = NLIDataset.encode(par, t, "en")
    tgt = NLIDataset.encode(par, t, "en")
    tgt.target_lang = [True] * 5
    data = NLIWithParallelDataset(task, src, tgt)
    assert len(data) == 5  # one pass over the larger side, the task data cycled
    assert [data[i]["task"]["label"] for i in range(5)] == [e.label for e in examples(1)] + [0, 1][:2]
    batch = data.collater([data[i] for i in range(4)])
    assert batch["n_task"] == 4 and batch["net_input"]["src_tokens"].size(0) == 12
    assert batch["net_input"]["target_lang"].tolist() == [False] * 8 + [True] * 4
    assert batch["target"].tolist() == [data[i]["task"]["label"] for i in range(4)]


def test_symmetric_kl_is_symmetric_zero_on_identical_inputs_and_matches_the_definition():
    torch.manual_seed(0)
    a, b = torch.randn(4, 50) * 3, torch.randn(4, 50) * 3
    kl = symmetric_kl(a, b)
    assert torch.allclose(kl, symmetric_kl(b, a))
    assert torch.allclose(symmetric_kl(a, a), torch.zeros(4), atol=1e-6)
    p, q = a.softmax(-1), b.softmax(-1)
    direct = (p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)  # KL(P,Q) + KL(Q,P), Eq. 7
    assert torch.allclose(kl, direct, atol=1e-5)
    torch_kl = F.kl_div(q.log(), p, reduction="none").sum(-1) + F.kl_div(p.log(), q, reduction="none").sum(-1)
    assert torch.allclose(kl, torch_kl, atol=1e-5) and (kl > 0).all()


def tiny_plm():
    cfg = preset("xlmr-base", vocab_size=len(SYMBOLS), hidden_size=16, num_layers=2, num_heads=2,
                 intermediate_size=32)
    return BertEncoder(cfg).init_random(0)


def tiny_model(translator="linear-2", label_words=((7,), (8,), (9,)), scoring="mlm"):
    plm = tiny_plm()
    torch.manual_seed(0)
    return MPTModel(plm, 2, translator, [list(w) for w in label_words], len(SYMBOLS) - 1, 1, scoring=scoring).eval()


def batch(target_lang):
    t = template()
    rows = [t.cloze("we saw a river", "the river is here"), t.cloze("we saw", "a river")]
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r, _ in rows], batch_first=True, padding_value=1)
    return {"src_tokens": tokens, "prompt_start": torch.tensor([s for _, s in rows]),
            "target_lang": torch.tensor(target_lang)}


def test_translator_output_feeds_the_target_path_only():
    model = tiny_model()
    english = model(**batch([False, False]))
    english.sum().backward()
    assert all(p.grad is None for p in model.translator.parameters())
    assert model.prompt.embedding.grad.abs().sum() > 0

    model.zero_grad()
    mixed = model(**batch([False, True]))
    mixed[1].sum().backward()  # the target row
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.translator.parameters())
    assert torch.allclose(mixed[0], english[0], atol=1e-6)  # the source row is the English row
    assert not torch.allclose(mixed[1], english[1], atol=1e-4)  # p^T != p^S
    with torch.no_grad():  # changing the translator changes target rows only
        model.translator.net[0].weight.add_(0.5)
        again = model(**batch([False, True]))
    assert torch.equal(again[0], mixed[0]) and (again[1] - mixed[1]).abs().max() > 1e-5


@pytest.mark.parametrize("kind", TRANSLATORS)
def test_translators_map_the_prompt_to_the_prompt_shape(kind):
    model = tiny_model(kind)
    p_s, p_t = model.prompts()
    assert p_s.shape == p_t.shape == (1, 2, 16)
    assert torch.equal(p_s, p_t) == (kind == "none")  # "w/o prompt translator": p^T = p^S
    if kind == "linear-2":  # Eq. 4: d -> 2d -> d
        assert [tuple(m.weight.shape) for m in model.translator.net if hasattr(m, "weight")] == [(32, 16), (16, 32)]


def test_verbalizer_default_is_eq2_w_z_times_p_mlm():
    """Eq. 2: P^CLS = W_Z P^MLM, W_Z the n x l matrix picking the label words (summed per label)."""
    torch.manual_seed(1)
    logits = torch.randn(3, len(SYMBOLS)) * 2
    p_mlm = logits.softmax(-1)
    w_z = torch.zeros(3, len(SYMBOLS))
    w_z[0, 7] = w_z[0, 10] = w_z[1, 8] = w_z[2, 9] = 1.0  # entailment: two words
    direct = p_mlm @ w_z.T  # [B, 3]
    got = tiny_model(label_words=((7, 10), (8,), (9,))).label_log_probs(logits)
    assert torch.allclose(got.exp(), direct, atol=1e-6)
    assert (got.exp().sum(-1) < 1).all()  # the other words keep their mass: not a distribution over labels
    single = tiny_model().label_log_probs(logits)  # one word per label: the full-vocabulary MLM log-prob
    assert torch.allclose(single, logits.log_softmax(-1)[:, [7, 8, 9]], atol=1e-6)


def test_verbalizer_renormalized_switch_divides_by_the_sum_over_labels():
    torch.manual_seed(1)
    logits = torch.randn(3, len(SYMBOLS)) * 2
    single = tiny_model(scoring="renormalized").label_log_probs(logits)
    assert torch.allclose(single, logits[:, [7, 8, 9]].log_softmax(-1), atol=1e-6)
    multi = tiny_model(label_words=((7, 10), (8,), (9,)), scoring="renormalized").label_log_probs(logits)
    p = logits.softmax(-1)
    expect = torch.stack([p[:, 7] + p[:, 10], p[:, 8], p[:, 9]], -1)
    assert torch.allclose(multi.exp(), expect / expect.sum(-1, keepdim=True), atol=1e-6)
    paper = tiny_model(label_words=((7, 10), (8,), (9,))).label_log_probs(logits)
    assert torch.equal(paper.argmax(-1), multi.argmax(-1))  # same predictions
    assert not torch.allclose(paper, multi)  # different training loss
    with pytest.raises(FairseqPLMError, match="verbalizer-scoring 'softmax'"):
        tiny_model(scoring="softmax")


class _Task:
    target_dictionary = dictionary()


def test_loss_is_alpha_weighted_ce_plus_symmetric_kl():
    model = tiny_model()
    t = template()
    rows = [t.cloze("we saw a river", "the river is here"), t.cloze("we saw", "a river"), t.cloze("a", "a")]
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r, _ in rows], batch_first=True, padding_value=1)
    net = {"src_tokens": tokens, "prompt_start": torch.tensor([s for _, s in rows]),
           "target_lang": torch.tensor([False, False, True])}
    sample = {"net_input": net, "target": torch.tensor([2]), "n_task": 1, "ntokens": 10}
    loss, size, log = MPTLoss(_Task(), alpha=0.3)(model, sample)
    out = model(**net)
    ce = -model.label_log_probs(out[:1])[0, 2]
    kld = symmetric_kl(out[1:2], out[2:3])[0]
    assert torch.allclose(loss, 0.3 * ce + 0.7 * kld, atol=1e-5)  # Eq. 8
    assert log["ce_loss"] == pytest.approx(ce.item(), abs=1e-5) and log["kld_loss"] == pytest.approx(kld.item(), abs=1e-5)
    sample = {"net_input": {k: v[:1] for k, v in net.items()}, "target": torch.tensor([2]), "ntokens": 5}
    loss, _, log = MPTLoss(_Task(), alpha=0.3)(model, sample)  # no parallel rows: L = L_CE
    assert torch.allclose(loss, ce, atol=1e-5) and "kld_loss" not in log
    assert torch.allclose(ce, -out[0].log_softmax(-1)[9], atol=1e-5)  # Eq. 2-3 default: CE over the vocabulary


# ------------------------------------------------------------------------------ PCT (Qi et al. 2022)

def pct_template(max_length=64):
    """Template words that are single tokens of the toy vocabulary: "we" / "saw" for English."""
    return ClozeTemplate(dictionary(), encode, max_length=max_length,
                         pct_templates={"en": ("we", "?", "saw"), "xx": ("sure", "?", "here")})


def test_pct_question_layout_uses_the_template_of_the_language():
    d = dictionary()
    t = pct_template()
    w = lambda s: [d.index("\u2581" + x) for x in s.split()]  # noqa: E731
    ids, start = t.pct("a river.", "the river is here", "en")
    # <s> X_P </s></s> Question_l X_H ?_l Answer_l <mask> </s>
    assert ids == [d.bos()] + w("a river") + [d.eos(), d.eos()] + w("we") + w("the river is here") + \
        [d.index("?")] + w("saw") + [d.mask_index, d.eos()] and start == 0
    other, _ = t.pct("a river.", "the river is here", "xx")
    assert other[:4] == ids[:4] and w("sure")[0] in other and w("we")[0] not in other
    with pytest.raises(FairseqPLMError, match="no PCT template for language 'fr'"):
        t.pct("a", "b", "fr")
    short, _ = pct_template(max_length=12).pct("we saw a river we saw a river", "the river is here", "en")
    assert len(short) == 12 and short[-2:] == [d.mask_index, d.eos()]  # cut from the sentences, not the template


def test_pct_templates_cover_xnli_and_extend_from_json(tmp_path):
    from fairseq_plm.data.nli import PCT_TEMPLATES, XNLI_LANGUAGES, read_pct_templates

    assert set(XNLI_LANGUAGES) <= set(PCT_TEMPLATES)
    f = tmp_path / "t.json"
    f.write_text('{"xx": ["Q", "?", "A"], "de": ["F", "?", "A"]}')
    t = read_pct_templates(str(f))
    assert t["xx"] == ("Q", "?", "A") and t["de"] == ("F", "?", "A") and t["fr"] == PCT_TEMPLATES["fr"]
    f.write_text('{"xx": ["Q", "A"]}')
    with pytest.raises(FairseqPLMError, match="expected"):
        read_pct_templates(str(f))


def test_pct_augmented_batch_holds_questions_then_their_augmented_questions():
    from fairseq_plm.data.nli import PCTAugmentedDataset, sample_template_languages

    t = pct_template()
    ex = [NLIExample("we saw", "a river", i % 3, "en") for i in range(5)]
    langs = sample_template_languages(5, ["xx", "en"], seed=3)
    assert langs == sample_template_languages(5, ["xx", "en"], seed=3) and set(langs) <= {"xx", "en"}
    data = PCTAugmentedDataset(NLIDataset.encode(ex, t, "en", input_format="pct"),
                               NLIDataset.encode(ex, t, "en", input_format="pct", template_langs=["xx"] * 5))
    batch = data.collater([data[i] for i in (4, 1)])
    toks = batch["net_input"]["src_tokens"]
    assert batch["n_task"] == 2 and toks.size(0) == 4 and batch["target"].tolist() == [1, 1]
    sure = dictionary().index("\u2581sure")
    assert [bool((r == sure).any()) for r in toks] == [False, False, True, True]


def test_pct_model_is_xlmr_mlm_at_the_mask_and_loss_matches_its_definition():
    from fairseq_plm.criterions.mpt_loss import PCTLoss
    from fairseq_plm.models.mpt import PCTModel

    t = pct_template()
    plm = tiny_plm()
    model = PCTModel(plm, [[7], [8], [9]], len(SYMBOLS) - 1, 1).eval()
    rows = [t.pct("we saw a river", "the river is here", "en")[0], t.pct("a river", "we saw", "en")[0],
            t.pct("we saw a river", "the river is here", "xx")[0], t.pct("a river", "we saw", "xx")[0]]
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows], batch_first=True, padding_value=1)
    out = model(tokens)
    for i, r in enumerate(rows):  # the plain masked LM of XLM-R, row by row, at <mask>
        full = plm.logits(plm(torch.tensor([r])).hidden)[0]
        assert torch.allclose(out[i], full[r.index(len(SYMBOLS) - 1)], atol=1e-5)
    target = torch.tensor([2, 0])
    sample = {"net_input": {"src_tokens": tokens}, "target": target, "n_task": 2, "ntokens": 20}
    loss, _, log = PCTLoss(_Task(), consistency_weight=0.7)(model, sample)
    lp = out.log_softmax(-1)
    ce = -(lp[0, 9] + lp[1, 7]) / 2  # label words: entailment 7, neutral 8, contradiction 9
    ce_aug = -(lp[2, 9] + lp[3, 7]) / 2
    p, q = lp[:2].exp(), lp[2:].exp()
    kl = ((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)).mean()
    assert torch.allclose(loss, ce + ce_aug + 0.7 * kl, atol=1e-5)
    assert log["ce_loss"] == pytest.approx(ce.item(), abs=1e-5) and log["kld_loss"] == pytest.approx(kl.item(), abs=1e-5)
    loss, _, log = PCTLoss(_Task())(model, {"net_input": {"src_tokens": tokens[:2]}, "target": target, "ntokens": 9})
    assert torch.allclose(loss, ce, atol=1e-5) and "kld_loss" not in log  # validation: no augmented rows
