"""Vocabulary trimming (plm/trim.py, fairseq-plm-trim-vocab): on in-corpus text the trimmed PLM
tokenizes exactly as the original and gives the original's logits at the kept pieces; the new
directory is accepted by --plm and its ids match the fairseq dictionary built from it."""

import json
import os
import subprocess
import sys

import pytest
import torch

from fairseq_plm.plm.errors import FairseqPLMError
from fairseq_plm.plm.fairseq_checks import check_dictionary
from fairseq_plm.plm.loading import load_plm
from fairseq_plm.plm.trim import trim_plm
from fairseq_plm.plm.vocab import load_dictionary, make_encoder


def lines(path, n=None):
    with open(path, encoding="utf-8") as f:
        out = [line.strip() for line in f]
    return out[:n] if n else out


@pytest.mark.parametrize("setup,lang", [("tiny", "de"), ("tiny_xlmr", "de"), ("tiny_fusion", "en")])
def test_trimmed_plm_tokenizes_and_scores_like_the_original(setup, lang, request, tmp_path):
    s = request.getfixturevalue(setup)
    corpus = os.path.join(s["raw"], f"train.{lang}")
    out = str(tmp_path / "trimmed")
    summary = trim_plm(s["plm"], out, [corpus])
    old, new = load_plm(s["plm"]).eval(), load_plm(out).eval()
    old_dict, new_dict = load_dictionary(s["plm"]), load_dictionary(out)
    kept = [int(x) for x in open(os.path.join(out, "original_ids.txt"))]
    assert summary["kept"] == len(kept) == new.cfg.vocab_size == len(new_dict) < old.cfg.vocab_size
    assert list(new_dict.symbols) == [old_dict.symbols[i] for i in kept]       # ids: ranks of the kept ids
    for name in ("pad", "eos", "unk", "bos"):
        assert getattr(new_dict, name)() == kept.index(getattr(old_dict, name)())
    check_dictionary(new_dict, new, out)                                      # --plm accepts it
    # the same tokenization of every in-corpus line
    enc_old, enc_new = make_encoder(s["plm"]), make_encoder(out)
    text = lines(corpus)
    assert all(enc_old(t) == enc_new(t) for t in text)
    # the same logits at the kept pieces
    kept_t = torch.tensor(kept)
    for t in text[:6]:
        pieces = enc_old(t)[:30]
        ids_old = torch.tensor([[old_dict.index(p) for p in pieces]])
        ids_new = torch.tensor([[new_dict.index(p) for p in pieces]])
        assert torch.equal(kept_t[ids_new], ids_old)
        with torch.no_grad():
            a, b = old(ids_old), new(ids_new)
            torch.testing.assert_close(b.hidden, a.hidden, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(new.logits(b.hidden), old.logits(a.hidden)[..., kept_t], atol=1e-5, rtol=1e-5)
    # text from outside the corpus may need pieces that are gone
    other = "en" if lang == "de" else "de"
    assert not all(enc_old(t) == enc_new(t) for t in lines(os.path.join(s["raw"], f"train.{other}"), 60))


def test_the_command_line_and_its_errors(tiny, tmp_path):
    corpus = os.path.join(tiny["raw"], "train.de")
    out = tmp_path / "mgpt-de"
    run = [sys.executable, "-m", "fairseq_plm.cli.trim_vocab", "--plm", tiny["plm"]]
    p = subprocess.run(run + ["--corpus", corpus, "--out", str(out), "--dtype", "float16"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "pieces kept" in p.stdout and "tokenization identical" in p.stdout
    info = json.load(open(out / "trim_vocab.json"))
    assert info["dtype"] == "float16" and info["kept"] < info["of"]
    assert load_plm(str(out)).cfg.vocab_size == info["kept"]
    # nothing is overwritten; bad input gets one line naming it
    for extra, message in ((["--corpus", corpus, "--out", str(out)], "exists"),
                           (["--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")],
                            "missing.txt: file not found")):
        p = subprocess.run(run + extra, capture_output=True, text=True)
        assert p.returncode != 0 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    bad = tmp_path / "keep.txt"
    bad.write_text("no-such-piece-xyz\n")
    with pytest.raises(FairseqPLMError, match=r"keep.txt, line 1: 'no-such-piece-xyz'"):
        trim_plm(tiny["plm"], str(tmp_path / "y"), [corpus], keep_pieces=str(bad))
    assert not (tmp_path / "y").exists()
