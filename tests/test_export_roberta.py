"""save_hf_roberta / save_hf_bert: our encoders written in HuggingFace MaskedLM layout load back
identically with ``load_plm`` and with ``transformers``' own classes."""

import json

import pytest
import sentencepiece as spm
import torch

from fairseq_plm.plm.bert import BertEncoder
from fairseq_plm.plm.config import PLMConfig
from fairseq_plm.plm.export import save_hf_bert, save_hf_roberta
from fairseq_plm.plm.loading import load_plm
from fairseq_plm.plm.vocab import load_dictionary

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

HIDDEN, LAYERS, HEADS, MAX_LEN = 32, 2, 4, 12
WORDS = "the a file folder open save close print window error name new old list copy".split()


@torch.no_grad()
def randomize(model, seed=3):
    """Every tensor random (LN gains/biases too), so a dropped or swapped tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        p.copy_(noise * 0.15 if p.dim() >= 2 else (1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise))
    return model


def xlmr_spm(tmp_path):
    """A tiny sentencepiece model in XLM-R's layout (<unk> 0, <s> 1, </s> 2, no pad)."""
    gen = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (8,), generator=gen)) for _ in range(200)]
    text = tmp_path / "text.txt"
    text.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "spm"), vocab_size=30,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, model_type="unigram",
                                   character_coverage=1.0, minloglevel=2)
    return str(tmp_path / "spm.model")


def padded_batch(vocab, pad, lengths, seed=5):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=gen)
    pads = torch.arange(max(lengths))[None] >= torch.tensor(lengths)[:, None]
    return ids.masked_fill(pads, pad), ~pads


def export_and_reload(model, path, save, hf_class, tokenizer=None):
    model.eval()
    save(model, str(path), tokenizer)
    ours = load_plm(str(path)).eval()
    hf, info = hf_class.from_pretrained(str(path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return ours, hf.eval()


@torch.no_grad()
def test_roberta_export_loads_back_in_ours_and_transformers(tmp_path):
    spm_model = xlmr_spm(tmp_path)
    vocab = spm.SentencePieceProcessor(model_file=spm_model).GetPieceSize() + 2  # XLM-R: +<pad>, +<mask>
    cfg = PLMConfig(family="roberta", vocab_size=vocab, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                    intermediate_size=2 * HIDDEN, max_positions=MAX_LEN + 2, type_vocab_size=1, pad_token_id=1,
                    position_offset=2, dropout=0.0, attention_dropout=0.0)
    model = randomize(BertEncoder(cfg))
    ours, hf = export_and_reload(model, tmp_path / "xlmr", save_hf_roberta, transformers.XLMRobertaForMaskedLM,
                                 spm_model)
    config = json.loads((tmp_path / "xlmr" / "config.json").read_text())
    assert config["model_type"] == "xlm-roberta" and config["architectures"] == ["XLMRobertaForMaskedLM"]
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (1, 0, 2)
    assert ours.cfg == model.cfg
    assert len(load_dictionary(str(tmp_path / "xlmr"))) == vocab
    assert (tmp_path / "xlmr" / "sentencepiece.bpe.model").read_bytes() == open(spm_model, "rb").read()

    ids, keep = padded_batch(vocab, pad=1, lengths=[MAX_LEN, 7, 3])  # right-padded: positions must skip pads
    expected = model.logits(model(ids).hidden)
    torch.testing.assert_close(ours.logits(ours(ids).hidden), expected, atol=0, rtol=0)
    ref = hf(input_ids=ids, attention_mask=keep.long()).logits
    torch.testing.assert_close(ref[keep], expected[keep], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_bert_export_loads_back_in_ours_and_transformers(tmp_path):
    cfg = PLMConfig(family="bert", vocab_size=50, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                    intermediate_size=2 * HIDDEN, max_positions=MAX_LEN, type_vocab_size=2, pad_token_id=0,
                    layer_norm_eps=1e-12, dropout=0.0, attention_dropout=0.0)
    model = randomize(BertEncoder(cfg))
    ours, hf = export_and_reload(model, tmp_path / "bert", save_hf_bert, transformers.BertForMaskedLM)
    assert ours.cfg == model.cfg
    ids, keep = padded_batch(50, pad=0, lengths=[MAX_LEN, 5])
    types = (torch.arange(MAX_LEN) >= 4).long()[None].expand(2, -1)
    expected = model.logits(model(ids, token_type_ids=types).hidden)
    torch.testing.assert_close(ours.logits(ours(ids, token_type_ids=types).hidden), expected, atol=0, rtol=0)
    ref = hf(input_ids=ids, attention_mask=keep.long(), token_type_ids=types).logits
    torch.testing.assert_close(ref[keep], expected[keep], atol=1e-5, rtol=1e-5)


def test_roberta_export_rejects_other_layouts(tmp_path):
    gpt_like = BertEncoder(PLMConfig(family="bert", vocab_size=20, hidden_size=8, num_layers=1, num_heads=2,
                                     intermediate_size=16, max_positions=8, type_vocab_size=2, pad_token_id=0))
    with pytest.raises(ValueError):
        save_hf_roberta(gpt_like, str(tmp_path / "x"))


def test_tiny_xlmr_recipe_ids_and_masking_match_the_exported_dictionary(tmp_path):
    """The recipe's token ids are those of the dictionary built for the saved directory (as the
    pieces fairseq-plm-encode writes map through it), and its masking follows BERT's 15% / 80-10-10."""
    from fairseq_plm.recipes.pretrain_tiny_xlmr import encode, mask_tokens, spm_to_dictionary

    spm_model = xlmr_spm(tmp_path)
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    cfg = PLMConfig(family="roberta", vocab_size=sp.GetPieceSize() + 2, hidden_size=8, num_layers=1, num_heads=2,
                    intermediate_size=16, max_positions=MAX_LEN + 2, type_vocab_size=1, pad_token_id=1,
                    position_offset=2)
    save_hf_roberta(BertEncoder(cfg), str(tmp_path / "xlmr"), spm_model)
    d = load_dictionary(str(tmp_path / "xlmr"))
    mono, docs = ["open the new file", "print the error list zzz"], [("copy the name", "old window")]
    table = spm_to_dictionary(sp, d)
    items = encode(sp, table, d, mono, docs, 100)
    pieces = [[d.index(p) for p in sp.EncodeAsPieces(s)] for s in mono + list(docs[0])]
    assert items == [[0] + pieces[0] + [2], [0] + pieces[1] + [2], [0] + pieces[2] + [2, 2] + pieces[3] + [2]]
    assert d.unk() in pieces[1]  # "zzz" is not in the vocabulary: <unk> 3
    assert encode(sp, table, d, mono[:1], [], 6) == [items[0][:5] + [2]]  # cut to the positions, </s> kept

    ids = torch.randint(4, len(d) - 1, (400, 50), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1], ids[:200, 30:] = d.bos(), d.eos(), d.pad()
    inputs, chosen = mask_tokens(ids, d, generator=torch.Generator().manual_seed(2))
    assert not chosen[ids < 4].any() and torch.equal(inputs[~chosen], ids[~chosen])
    frac = chosen.sum() / (ids >= 4).sum()
    masked = (inputs[chosen] == d.mask_index).float().mean()
    kept = (inputs[chosen] == ids[chosen]).float().mean()
    assert abs(frac - 0.15) < 0.01 and abs(masked - 0.8) < 0.03 and abs(kept - 0.1) < 0.03
