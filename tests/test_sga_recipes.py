"""SGA recipes: the multilingual gettext corpus (prompt sharing, zero-shot languages; SGA
Table 2 in small) and the one-table comparison script sga_compare (Table 1 in small)."""

import functools
import glob
import json
import os
import re

import pytest

from fairseq_plm.recipes import gettext_multilingual as gm
from tiny import cli, make_corpus, make_tiny_xlmr, make_xlmr_spm

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


def test_sga_compare_prints_one_row_per_system(tmp_path):
    """SGA, CTC-NAT and the AT transformer on a tiny random XLM-R, a handful of updates each."""
    raw, plm = tmp_path / "raw", tmp_path / "plm"
    make_corpus(str(raw), n_train=60, n_valid=8, n_test=10)
    make_tiny_xlmr(str(plm), make_xlmr_spm([raw / "train.en", raw / "train.de"], tmp_path / "spm"))
    out = cli("python", "-m", "fairseq_plm.recipes.sga_compare", "--raw", raw, "--plm", plm, "-s", "en", "-t", "de",
              "--out", tmp_path / "out", "--systems", "sga,ctc_nat,at", "--max-update", "3", "--max-tokens", "2000",
              "--prompt-length", "4", "--lr-sga", "0.005", "--lr-baseline", "0.005", "--baseline-layers", "1",
              "--baseline-embed-dim", "32", "--baseline-ffn-dim", "64", "--baseline-heads", "4",
              "--iter-decode-max-iter", "2", "--batch-size", "4", "--cpu").stdout
    rows = [line.strip("|").split("|") for line in out.splitlines()
            if line.startswith("| ") and not line.startswith(("| system", "| ---"))]
    assert [r[1].strip() for r in rows] == ["sga", "ctc_nat", "at"]
    for label, system, params, bleu, bs1, rel, batched in (map(str.strip, r) for r in rows):
        assert int(params.replace(",", "")) > 0
        assert 0.0 <= float(bleu) <= 100.0
        assert float(bs1) > 0 and float(batched) > 0
        assert re.fullmatch(r"\d+\.\d\dx", rel)
    assert rows[-1][5].strip() == "1.00x"  # the AT transformer is the unit of speed
    assert "BLEU: sacrebleu nrefs:1|case:mixed" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["system"] for r in results] == ["sga", "ctc_nat", "at"]
