"""MPT data recipes: PAWS-15 built by translating English PAWS pairs with a fairseq model (a
fake translator for the plumbing, this package's fairseq-plm-interactive with a tiny trained
model for the real output format)."""

import os
import random
import sys

import pytest

from tiny import cli

from fairseq_plm.data.nli import read_parallel
from fairseq_plm.plm.errors import FairseqPLMError
from fairseq_plm.recipes.mpt_data import paws15_translate, parse_translations

ENGLISH = ["Open the file", "Save all documents", "Close the window", "Print the page", "Delete the folder",
           "Copy the text", "Quit the program", "Show hidden files"]
# a "translator": every line reversed word by word, tagged with the target language
FAKE = f"{sys.executable} -c \"import sys; [print('{{lang}}:', ' '.join(l.split()[::-1])) for l in sys.stdin]\""


def paws_file(path, n=6):
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        f.write("id\tsentence1\tsentence2\tlabel\n")
        for i in range(n):
            a, b = rng.sample(ENGLISH, 2)
            f.write(f"{i + 1}\t{a}.\t{b}.\t{i % 2}\n")
    return str(path)


def test_parse_translations_reads_fairseq_output_or_plain_lines():
    out = "S-1\tb\nH-1\t-0.1\tB x\nD-1\t-0.1\tB\nP-1\t0\nS-0\ta\nD-0\t-0.2\tA\nD-0\t-0.9\tA2\n"
    assert parse_translations(out, 2, "x") == ["A", "B"]  # id order, first hypothesis
    assert parse_translations("one\ntwo\n", 2, "x") == ["one", "two"]
    with pytest.raises(FairseqPLMError, match="no translation .* of input line 2"):
        parse_translations("D-0\t-1\tA\n", 2, "x")
    with pytest.raises(FairseqPLMError, match="3 output lines"):
        parse_translations("a\nb\nc\n", 2, "x")


def test_paws15_translate_mixes_languages_and_resumes_from_its_cache(tmp_path):
    english = paws_file(tmp_path / "train.tsv")
    work = str(tmp_path / "work")
    rows = paws15_translate(english, FAKE, ("de", "fr", "sw"), n=5, seed=1, work_dir=work, log=lambda m: None)
    assert len(rows) == 5 and {r["tgt_language"] for r in rows} <= {"de", "fr", "sw"}
    for r in rows:  # both sentences, translated into the pair's language
        assert r["tgt_premise"] == f"{r['tgt_language']}: " + " ".join(r["src_premise"].split()[::-1])
        assert r["tgt_hypothesis"].startswith(r["tgt_language"] + ":")
    assert sorted(os.listdir(work)) == ["de.txt", "fr.txt", "sw.txt"]
    # a second run reuses every cached language: the (now failing) command is never run
    again = paws15_translate(english, "false", ("de", "fr", "sw"), n=5, seed=1, work_dir=work, log=lambda m: None)
    assert again == rows
    everything = paws15_translate(english, "false", ("de", "fr", "sw"), n=5, seed=1, work_dir=work,
                                  all_pairs=True, log=lambda m: None)
    assert len(everything) == 15 and [r["tgt_language"] for r in everything[:3]] == ["de", "fr", "sw"]
    with pytest.raises(FairseqPLMError, match="--translate for ur: false exited with status 1"):
        paws15_translate(english, "false", ("ur",), n=5, work_dir=work, log=lambda m: None)
    with pytest.raises(FairseqPLMError, match="has only 6 pairs"):
        paws15_translate(english, FAKE, ("de",), n=50, log=lambda m: None)


def test_paws15_translate_with_a_tiny_fairseq_model(trained, tmp_path):
    """The recipe's command line with this package's fairseq-plm-interactive as the translator
    (the tiny En-De MSP model of the test suite) and a per-language override."""
    english = paws_file(tmp_path / "train.tsv", n=4)
    out = str(tmp_path / "parallel.tsv")
    interactive = " ".join([os.path.join(os.path.dirname(sys.executable), "fairseq-plm-interactive"),
                            trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
                            "--task", "plm_translation", "--cpu", "--beam", "2", "--max-len-b", "20",
                            "--buffer-size", "8", "--batch-size", "8", "--bpe", "sentencepiece",
                            "--sentencepiece-model", os.path.join(trained["plm"], "spiece.model")])
    p = cli(sys.executable, "-m", "fairseq_plm.recipes.mpt_data", "paws15-translate", "--english", english,
            "--out", out, "--n", "3", "--langs", "de,xx", "--translate", interactive, "--lang-command",
            f"xx={FAKE}", "--all-pairs")
    assert "wrote 6 parallel pairs" in p.stdout
    rows = read_parallel(out)
    assert [r.tgt_language for r in rows] == ["de", "xx"] * 3
    with open(os.path.join(out + ".work", "de.txt"), encoding="utf-8") as f:
        german = f.read().split("\n")[:-1]
    assert len(german) == 6 and [r.tgt_premise for r in rows if r.tgt_language == "de"] == german[0::2]
    assert all("\u2581" not in t for t in german)  # detokenized (D- lines)
