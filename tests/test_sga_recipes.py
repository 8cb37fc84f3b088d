"""SGA recipes: the multilingual gettext corpus (prompt sharing, zero-shot languages; SGA
Table 2 in small) and the one-table comparison script sga_compare (Table 1 in small)."""

import functools
import glob
import json
import os
import re

import pytest

from fairseq_plm.recipes import gettext_multilingual as gm
from tiny import cli, make_corpus, make_tiny_xlmr, make_xlmr_spm, table_rows

LOCALE = "/usr/share/locale"


def with_catalogs(langs):
    return [lang for lang in langs if glob.glob(os.path.join(LOCALE, lang, "LC_MESSAGES", "*.mo"))]


SUPERVISED = with_catalogs(["de", "fr", "ru", "ar"])
ZERO_SHOT = with_catalogs(["kk", "eu"])


@pytest.fixture(scope="module")
def build(monkeypatch_module):
    if len(SUPERVISED) < 2 or not ZERO_SHOT:
        pytest.skip("needs the gettext catalogs of two supervised languages and one zero-shot language")
    monkeypatch_module.setattr(gm, "read_catalogs", functools.lru_cache()(gm.read_catalogs))  # read each once
    return functools.partial(gm.build_corpus, SUPERVISED + ["xx-missing"], ZERO_SHOT, valid=40, test=60)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def corpus(build):
    return build(seed=3)


def test_training_mixes_the_supervised_languages_deterministically(build, corpus):
    assert corpus.supervised == SUPERVISED and corpus.skipped == ["xx-missing"]
    langs = [lang for lang, _, _ in corpus.train]
    assert set(langs) == set(SUPERVISED)
    assert set(langs[:200]) == set(SUPERVISED)                        # shuffled, not one language after another
    assert sum(a != b for a, b in zip(langs, langs[1:])) > len(langs) / 4
    pairs = [(x, en) for _, x, en in corpus.train]
    assert len(set(pairs)) == len(pairs)                              # deduplicated
    assert build(seed=3).train == corpus.train                        # deterministic
    assert build(seed=4).train != corpus.train


def test_zero_shot_languages_are_test_only(corpus):
    assert corpus.zero_shot == ZERO_SHOT
    assert not set(ZERO_SHOT) & {lang for lang, _, _ in corpus.train}
    assert set(corpus.valid) == set(SUPERVISED)
    assert all(len(corpus.test[lang]) == 60 for lang in SUPERVISED + ZERO_SHOT)


def test_no_test_or_valid_english_sentence_is_trained_on(corpus):
    train_en = {en for _, _, en in corpus.train}
    test_en = {en for pairs in corpus.test.values() for _, en in pairs}
    valid_en = {en for pairs in corpus.valid.values() for _, en in pairs}
    assert not test_en & train_en                 # with any language, zero-shot ones included
    assert not valid_en & train_en
    assert not valid_en & test_en
    assert all(len(corpus.valid[lang]) == 40 for lang in SUPERVISED)
    # one global order: the test sets share English sentences (partly multi-way parallel)
    a, b = (corpus.test[lang] for lang in SUPERVISED[:2])
    assert {en for _, en in a} & {en for _, en in b}


def test_files_for_fairseq_preprocess(corpus, tmp_path):
    manifest = gm.write_corpus(corpus, tmp_path)
    lines = lambda name: (tmp_path / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    assert lines("train.src") == [x for _, x, _ in corpus.train]
    assert lines("train.en") == [en for _, _, en in corpus.train]
    assert len(lines("valid.src")) == len(lines("valid.en")) == 40 * len(SUPERVISED)
    assert len(lines("test.src")) == 60 * len(SUPERVISED)
    names = [s["file"] for s in manifest["subsets"].values()]
    assert list(manifest["subsets"]) == ["test"] + [f"test{i}" for i in range(1, len(names))]
    assert names[1:] == [f"test-{lang}" for lang in SUPERVISED + ZERO_SHOT]
    zs = manifest["subsets"][f"test{len(SUPERVISED) + 1}"]
    assert zs["zero_shot"] and lines(zs["file"] + ".en") == [en for _, en in corpus.test[ZERO_SHOT[0]]]
    assert json.loads((tmp_path / "corpus.json").read_text())["train"]["sentences"] == len(corpus.train)
    with pytest.raises(ValueError, match="--target-tags"):
        gm.write_corpus(gm.MultilingualCorpus(corpus.train, corpus.valid, corpus.test, SUPERVISED, []),
                        tmp_path / "enx", direction="en-x")


@pytest.fixture(scope="module")
def tiny_sga_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sga_compare")
    raw, plm = root / "raw", root / "plm"
    make_corpus(str(raw), n_train=60, n_valid=8, n_test=10)
    make_tiny_xlmr(str(plm), make_xlmr_spm([raw / "train.en", raw / "train.de"], root / "spm"))
    return raw, plm


SGA_COMPARE = ["--max-update", "2", "--max-tokens", "2000", "--prompt-length", "4", "--lr-sga", "0.005",
               "--lr-at-init", "0.001", "--iter-decode-max-iter", "2", "--batch-size", "4", "--cpu"]


def test_sga_compare_table_1_rows_and_resume(tiny_sga_data, tmp_path):
    """SGA and XLM-R w. AT initialization on a tiny random XLM-R; a rerun trains and decodes nothing."""
    raw, plm = tiny_sga_data
    args = ["python", "-m", "fairseq_plm.recipes.sga_compare", "--raw", raw, "--plm", plm, "-s", "de", "-t", "en",
            "--out", tmp_path / "out", "--systems", "sga,xlmr_at_init", "--speed-sentences", "4", *SGA_COMPARE]
    out = cli(*args).stdout
    rows = table_rows(out, "Table 1")
    assert [r[1] for r in rows] == ["sga", "xlmr_at_init"]
    for label, system, trained, updates, minutes, bleu, bs1, rel, batched in rows:
        assert int(trained.replace(",", "")) > 0 and int(updates) == 2 and float(minutes) >= 0
        assert 0.0 <= float(bleu) <= 100.0 and float(bs1) > 0 and float(batched) > 0
        assert rel == "n/a"  # no AT transformer in this run
    results = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]["table1"]
    sga, at_init = results
    assert at_init["trained_params"] > 10 * sga["trained_params"]  # every XLM-R parameter vs prompts
    assert "BLEU: sacrebleu nrefs:1|case:mixed" in out
    # batch 1 timed on 4 of the 10 test sentences (1 in 3 by length), BLEU on all 10
    assert "batch-1 speed on 4 test sentences, 1 in 3 of the 10 sorted by length" in out
    for s in ("sga", "xlmr_at_init"):
        bs1 = (tmp_path / "out" / s / "gen-test-bs1.out").read_text()
        batched = (tmp_path / "out" / s / "gen-test-batched.out").read_text()
        assert len(re.findall(r"^H-\d+\t", bs1, flags=re.M)) == 4
        assert len(re.findall(r"^H-\d+\t", batched, flags=re.M)) == 10
    logs = {s: (tmp_path / "out" / s / "train.log").read_text() for s in ("sga", "xlmr_at_init")}
    again = cli(*args).stdout  # resumed: finished systems and decodings are skipped
    assert table_rows(again, "Table 1") == rows
    assert all((tmp_path / "out" / s / "train.log").read_text() == log for s, log in logs.items())
    assert "translate the test set" not in again


def test_sga_compare_table_4_free_generation(tiny_sga_data, tmp_path):
    """Keywords -> English with one sga_mask_predict model: Mask-Predict iterations with and
    without denoising, and the zero-iteration (CTC alignment) rows."""
    raw, plm = tiny_sga_data
    out = cli("python", "-m", "fairseq_plm.recipes.sga_compare", "--raw", raw, "--plm", plm, "-s", "de", "-t", "en",
              "--out", tmp_path / "out", "--systems", "free_gen", "--t4-iterations", "2", "--speed-runs", "0",
              *SGA_COMPARE).stdout
    rows = table_rows(out, "Table 4")
    assert [(r[0], r[1]) for r in rows] == [("w/o denoising", "2"), ("w/o denoising (CTC alignment alone)", "0"),
                                          ("w. denoising", "0"), ("w. denoising", "2")]
    for group, it, bleu, meteor, bs1, batched in rows:
        assert 0.0 <= float(bleu) <= 100.0 and bs1 == "n/a" and float(batched) > 0
    task = tmp_path / "out" / "free_gen" / "raw"
    test_en = (task / "test.en").read_text().splitlines()
    assert test_en == list(dict.fromkeys((raw / "test.en").read_text().splitlines()))  # the held-out English
    assert not set(test_en) & set((task / "train.en").read_text().splitlines())
    assert "Table 1" not in out


def test_sga_compare_help_documents_budget_data_and_plm(capsys):
    from fairseq_plm.recipes import sga_compare

    with pytest.raises(SystemExit):
        sga_compare.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--plm", "--raw", "--minutes", "--max-update", "--systems", "--free-gen-raw", "xlmr_at_init",
                 "free_gen"):
        assert flag in text
    with pytest.raises(SystemExit):
        sga_compare.parse_args(["--plm", "x", "--out", "y"])  # no budget
    assert "give a training budget" in capsys.readouterr().err


def test_keywords_task():
    from fairseq_plm.recipes import keywords_data as kd

    s = "Could not open the file for writing: the disk is full"
    assert kd.content_words(s) == ["open", "file", "writing", "disk", "full"]
    assert sorted(kd.keywords(s)) == sorted(kd.content_words(s)) and kd.keywords(s) == kd.keywords(s)
    assert any(kd.keywords(t) != kd.content_words(t) for t in (s, "Save the current document to a new file name"))
    assert kd.content_words("It is what it is") == []
    assert kd.make_pairs(["It is", s, s]) == [(" ".join(kd.keywords(s)), s)]  # no content word; duplicates


# ------------------------------------------------------------------ Table 3 data: XGLUE QG, MTG

def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_question_generation_data_with_machine_translated_training_questions(trained, tmp_path):
    """XGLUE QG layout from local files; the En->De training questions translated by a
    user-given fairseq model (here the tiny MSP En->De model) through fairseq-plm-interactive."""
    import os

    from fairseq_plm.recipes import sga_generation_data as sgd

    en = (open(os.path.join(trained["raw"], "train.en"), encoding="utf-8").read().splitlines())
    xglue = tmp_path / "QG"
    _write(xglue / "xglue.qg.en.src.train", [f"passage {i}: {s}" for i, s in enumerate(en[:6])])
    _write(xglue / "xglue.qg.en.tgt.train", en[6:12])
    for lang in ("en", "de"):
        for split in ("dev", "test"):
            _write(xglue / f"xglue.qg.{lang}.src.{split}", [f"{lang} {split} passage {i}" for i in range(3)])
            _write(xglue / f"xglue.qg.{lang}.tgt.{split}", [f"{lang} {split} question {i}" for i in range(3)])
    mt = (f"{trained['data']} --path {os.path.join(trained['save'], 'checkpoint_last.pt')} --task plm_translation "
          f"-s {{src}} -t {{tgt}} --beam 2 --max-len-a 0 --max-len-b 8 --cpu --bpe sentencepiece "
          f"--sentencepiece-model {os.path.join(trained['plm'], 'spiece.model')}")
    out = tmp_path / "out"
    cli("python", "-m", "fairseq_plm.recipes.sga_generation_data", "qg", "--xglue", xglue, "--langs", "en,de",
        "--mt", mt, "--out", out)
    lines = lambda p: p.read_text(encoding="utf-8").splitlines()  # noqa: E731
    assert lines(out / "qg" / "en-en" / "train.tgt") == en[6:12]                       # En->En: the originals
    assert lines(out / "qg" / "en-de" / "train.src") == lines(xglue / "xglue.qg.en.src.train")  # English passages
    translated = lines(out / "qg" / "en-de" / "train.tgt")
    assert len(translated) == 6 and translated != en[6:12]                           # questions in "German"
    assert translated == lines(out / "qg" / "mt" / "train.question.de")               # cached for reruns
    assert lines(out / "qg" / "en-de" / "test.src") == lines(xglue / "xglue.qg.de.src.test")  # De->De test
    assert lines(out / "qg" / "en-de" / "valid.tgt") == lines(xglue / "xglue.qg.de.tgt.dev")
    with pytest.raises(ValueError, match="pass --mt"):
        sgd.question_generation(str(xglue), str(tmp_path / "again"), ["de"])


def test_story_generation_data_pairs_multiway_lines(tmp_path):
    from fairseq_plm.recipes import sga_generation_data as sgd

    mtg = tmp_path / "SG"
    for lang in ("en", "de"):
        for split in ("train", "dev", "test"):
            _write(mtg / lang / f"{split}.src", [f"{lang} {split} story start {i}" for i in range(4)])
            _write(mtg / lang / f"{split}.tgt", [f"{lang} {split} story end {i}" for i in range(4)])
    manifest = sgd.story_generation(str(mtg), str(tmp_path / "out"), ["en", "de"])
    assert manifest == {"en-en": {"train": 4, "valid": 4, "test": 4}, "de-en": {"train": 4, "valid": 4, "test": 4}}
    out = tmp_path / "out" / "sg" / "de-en"
    assert (out / "valid.src").read_text().splitlines()[2] == "de dev story start 2"
    assert (out / "valid.tgt").read_text().splitlines()[2] == "en dev story end 2"
    _write(mtg / "de" / "test.src", ["one line"])
    with pytest.raises(ValueError, match="multi-way parallel"):
        sgd.story_generation(str(mtg), str(tmp_path / "out2"), ["de"])
