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


# ------------------------------------------------------------------------------ the catalog task

def write_mo(path, messages):
    """A GNU .mo catalog (UTF-8) of {msgid: msgstr}."""
    import struct

    entries = sorted({"": "Content-Type: text/plain; charset=UTF-8\n", **messages}.items())
    ids = [k.encode() for k, _ in entries]
    strs = [v.encode() for _, v in entries]
    n = len(entries)
    table_o, table_t = 28, 28 + 8 * n
    data = 28 + 16 * n
    offsets_o, offsets_t, blob = [], [], b""
    for s in ids:
        offsets_o.append((len(s), data + len(blob)))
        blob += s + b"\0"
    for s in strs:
        offsets_t.append((len(s), data + len(blob)))
        blob += s + b"\0"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<7I", 0x950412de, 0, n, table_o, table_t, 0, 0))
        for length, off in offsets_o + offsets_t:
            f.write(struct.pack("<2I", length, off))
        f.write(blob)


PROGRAMS = {"alpha1": "pkg-alpha", "alpha2": "pkg-alpha", "beta1": "pkg-beta", "beta2": "pkg-beta", "gamma": "pkg-gamma"}


def fake_locale(root):
    """5 programs in 3 packages, de and fr catalogs; every program has 12 messages in the
    reserved band and 30 outside it; fr lacks a third of the translations. The English text
    names its program (the unit test checks the labels through it)."""
    from fairseq_plm.recipes.pretrain_common import in_reserved_band

    english = {}
    for prog in PROGRAMS:
        inside, outside, i = [], [], 0
        while len(inside) < 12 or len(outside) < 30:
            text = f"{prog} says message {i}"
            (inside if in_reserved_band(text) else outside).append(text)
            i += 1
        english[prog] = inside[:12] + outside[:30]
    german = lambda e: "de " + " ".join(e.split()[::-1])  # noqa: E731
    for prog, msgs in english.items():
        write_mo(os.path.join(root, "de", "LC_MESSAGES", f"{prog}.mo"), {e: german(e) for e in msgs})
        write_mo(os.path.join(root, "fr", "LC_MESSAGES", f"{prog}.mo"),
                 {e: "fr " + e.upper() for j, e in enumerate(msgs) if j % 3})
    write_mo(os.path.join(root, "de", "LC_MESSAGES", "alpha1_copy.mo"),  # a duplicate domain: merged
             {e: german(e) for e in english["alpha1"]})
    return english, german


def test_catalog_task_labels_splits_and_hold_out(tmp_path):
    from fairseq_plm.data.catalog_task import build
    from fairseq_plm.data.nli import read_nli
    from fairseq_plm.recipes.pretrain_common import in_reserved_band

    english, german = fake_locale(str(tmp_path / "locale"))
    out = str(tmp_path / "task")
    info = build(out, ("de", "fr"), str(tmp_path / "locale"), packages={**PROGRAMS, "alpha1_copy": "pkg-alpha"},
                 n_parallel=20, min_test=3, log=lambda m: None)
    assert info["programs"] == 5 and info["packages"] == 3  # alpha1_copy merged into alpha1
    assert sorted(os.listdir(out)) == ["dev.tsv", "parallel.tsv", "parallel_task.tsv", "task.json", "test.de.tsv",
                                       "test.en.tsv", "test.fr.tsv", "train.tsv"]
    prog = lambda e: e.split()[0]  # noqa: E731
    expected = {"entailment": lambda a, b: prog(a) == prog(b),
                "neutral": lambda a, b: prog(a) != prog(b) and PROGRAMS[prog(a)] == PROGRAMS[prog(b)],
                "contradiction": lambda a, b: PROGRAMS[prog(a)] != PROGRAMS[prog(b)]}
    back = {german(e): e for msgs in english.values() for e in msgs}
    splits = {}
    for name, unmap in (("train", None), ("dev", None), ("test.en", None), ("test.de", back)):
        rows = read_nli(os.path.join(out, f"{name}.tsv"), "en")
        pairs = [(unmap[r.premise] if unmap else r.premise, unmap[r.hypothesis] if unmap else r.hypothesis, r)
                 for r in rows]
        for a, b, r in pairs:
            assert expected[("entailment", "neutral", "contradiction")[r.label]](a, b), (a, b, r.label)
            assert a != b
        per_premise = {}
        for a, _, r in pairs:
            per_premise.setdefault(a, []).append(r.label)
        assert all(sorted(v) == [0, 1, 2] for v in per_premise.values())  # balanced for every premise
        splits[name] = {m for a, b, _ in pairs for m in (a, b)}
    assert splits["train"] and not any(in_reserved_band(e) for e in splits["train"])
    for name in ("dev", "test.en", "test.de"):  # never seen by the demo PLM, premises and hypotheses
        assert splits[name] and all(in_reserved_band(e) for e in splits[name])
    assert not splits["dev"] & splits["test.en"] and splits["test.de"] <= splits["test.en"]
    fr = read_nli(os.path.join(out, "test.fr.tsv"), "en")
    assert 0 < len(fr) < info["sizes"]["test.en"] and all(r.language == "fr" for r in fr)
    for name in ("parallel", "parallel_task"):
        pairs = read_parallel(os.path.join(out, f"{name}.tsv"))
        assert len(pairs) == 20 and {p.tgt_language for p in pairs} <= {"de", "fr"}
        assert not any(in_reserved_band(e) for p in pairs for e in (p.src_premise, p.src_hypothesis))
    assert set(info["surface_baselines"]) == {"dev", "en", "de", "fr"}
    assert info["program_knowledge_baseline"]["en"] > 90  # the fake English names its program


def test_xnli_table1_command_set_has_ft_sp_pct_mpt(capsys):
    from fairseq_plm.recipes.mpt_xnli import main

    main(["table1", "--data", "xnli", "--plm", "xlmr", "--out", "runs", "--shots", "4", "--seeds", "1", "--dry-run"])
    trains = [line for line in capsys.readouterr().out.splitlines() if "fairseq-train" in line]
    archs = [line.split("--arch ")[1].split()[0] for line in trains]
    assert archs == ["mpt_ft", "mpt_sp", "mpt_pct", "mpt"]
    pct = trains[2]
    assert "--input-format pct" in pct and "--criterion pct_loss" in pct and "--parallel-data" not in pct
