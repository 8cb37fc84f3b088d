"""Vocabulary bridge: dictionary ids equal the PLM tokenizer's ids."""

import os

import pytest
import sentencepiece as spm

from fairseq_plm.plm.vocab import (PLMDictionary, VocabularyError, WordPieceTokenizer, load_dictionary,
                                   t5_dictionary, xlmr_dictionary_from_fairseq, xlmr_dictionary_from_spm)
from tiny import make_corpus, make_spm


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    splits = make_corpus(str(d), n_train=400)
    return d, splits


@pytest.fixture(scope="module")
def t5_spm(corpus):
    d, _ = corpus
    return make_spm([d / "train.en", d / "train.de"], d / "t5spm", vocab_size=400)


@pytest.fixture(scope="module")
def xlmr_spm(corpus):
    d, _ = corpus
    # XLM-R's sentencepiece model: <unk> 0, <s> 1, </s> 2 (as published)
    spm.SentencePieceTrainer.train(input=f"{d}/train.en,{d}/train.de", model_prefix=str(d / "xspm"),
                                   vocab_size=400, minloglevel=2)
    return str(d / "xspm.model")


def test_t5_dictionary_keeps_sentencepiece_ids(t5_spm, corpus, tmp_path):
    sp = spm.SentencePieceProcessor(model_file=t5_spm)
    d = t5_dictionary(t5_spm, vocab_size=sp.GetPieceSize() + 100)
    assert (d.pad(), d.eos(), d.unk()) == (0, 1, 2) and len(d) == sp.GetPieceSize() + 100
    assert d[len(d) - 1] == "<extra_id_0>" and d[sp.GetPieceSize()] == "<extra_id_99>"
    for line in corpus[1]["test"][:20]:
        pieces = sp.EncodeAsPieces(line[1])
        assert d.encode_line(" ".join(pieces), add_if_not_exist=False, append_eos=False).tolist() == \
            sp.EncodeAsIds(line[1])
    # the saved dict.*.txt reloads with identical ids (fairseq's format would shift them by 4)
    d.save(str(tmp_path / "dict.de.txt"))
    again = load_dictionary(str(tmp_path / "dict.de.txt"))
    assert isinstance(again, PLMDictionary) and again.symbols == d.symbols
    assert (again.pad(), again.eos(), again.unk(), again.bos()) == (0, 1, 2, 1)


def test_xlmr_dictionary_matches_fairseq_xlmr_pipeline(xlmr_spm, corpus, tmp_path):
    """fairseq's own XLM-R pipeline (sentencepiece BPE + Dictionary.load(dict.txt) + <mask>)
    is the reference for the ids we derive from the sentencepiece model alone (HF layout)."""
    from argparse import Namespace

    from fairseq.data import Dictionary
    from fairseq.data.encoders.sentencepiece_bpe import SentencepieceBPE

    sp = spm.SentencePieceProcessor(model_file=xlmr_spm)
    with open(tmp_path / "dict.txt", "w") as f:  # as published: pieces after the specials
        for i in range(3, sp.GetPieceSize()):
            f.write(f"{sp.IdToPiece(i)} 1\n")
    ref = Dictionary.load(str(tmp_path / "dict.txt"))
    ref.add_symbol("<mask>")
    bpe = SentencepieceBPE(Namespace(sentencepiece_model=xlmr_spm, sentencepiece_enable_sampling=False,
                                     sentencepiece_alpha=None))
    ours = xlmr_dictionary_from_spm(xlmr_spm)
    assert len(ours) == len(ref) and ours.mask_index == ref.index("<mask>") == len(ref) - 1
    assert (ours.bos(), ours.pad(), ours.eos(), ours.unk()) == (0, 1, 2, 3)
    for _, text in corpus[1]["test"][:30]:
        pieces = bpe.encode(text)
        assert ours.encode_line(pieces, add_if_not_exist=False).tolist() == \
            ref.encode_line(pieces, add_if_not_exist=False).tolist()


def test_xlmr_fairseq_dict_txt_gives_the_same_ids(xlmr_spm, tmp_path):
    sp = spm.SentencePieceProcessor(model_file=xlmr_spm)
    # XLM-R's published dict.txt: the pieces after the specials, in sentencepiece order
    with open(tmp_path / "dict.txt", "w") as f:
        for i in range(3, sp.GetPieceSize()):
            f.write(f"{sp.IdToPiece(i)} 1\n")
    assert xlmr_dictionary_from_fairseq(str(tmp_path / "dict.txt")).symbols == xlmr_dictionary_from_spm(xlmr_spm).symbols


def _vocab_file(path, corpus):
    words = set()
    for en, de in corpus:
        for w in (en + " " + de).split():
            words.add(w.strip(".,;:!?()»«\"'"))
    pieces = sorted({w[:4] for w in words if w} | {"##" + w[i:i + 3] for w in words for i in range(1, len(w), 3)})
    with open(path, "w") as f:
        f.write("\n".join(["[PAD]"] + [f"[unused{i}]" for i in range(5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                          + [c for c in ".,;:!?()»«\"'-/"] + pieces) + "\n")


def test_wordpiece_matches_transformers_bert_tokenizer(corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = tmp_path / "vocab.txt"
    _vocab_file(vocab, corpus[1]["train"])
    hf = transformers.BertTokenizer(vocab=str(vocab), do_lower_case=False, tokenize_chinese_chars=True)
    ours = WordPieceTokenizer(str(vocab))
    texts = [t for pair in corpus[1]["test"][:40] for t in pair] + ["Ça va? 你好世界 — ok!", "tab\there"]
    for text in texts:
        assert ours.tokenize(text) == hf.tokenize(text), text
    d = load_dictionary(str(vocab))
    assert (d.pad(), d.unk(), d.bos(), d.eos(), d.mask_index) == (0, 6, 7, 8, 9)
    assert d.index(ours.tokenize(texts[0])[0]) == hf.convert_tokens_to_ids(hf.tokenize(texts[0]))[0]


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(VocabularyError, match="not found"):
        load_dictionary(str(tmp_path / "nope.txt"))
    (tmp_path / "broken.model").write_bytes(b"not a model")
    with pytest.raises(VocabularyError, match="broken.model"):
        load_dictionary(str(tmp_path / "broken.model"))
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(VocabularyError, match=r"vocab.txt lacks the special token"):
        load_dictionary(str(tmp_path / "vocab.txt"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(VocabularyError, match="no tokenizer file"):
        load_dictionary(str(tmp_path / "empty"))
