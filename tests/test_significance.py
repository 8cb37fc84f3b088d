"""Significance tests: sacrebleu's paired bootstrap / approximate randomization through
``fairseq-plm-score --compare``, and the two-tailed t-tests of ``fairseq-plm-mpt-aggregate``
(MPT Table II) against published values."""

import json
import os
import subprocess
import sys

import pytest

from tiny import cli

from fairseq_plm.data.significance import betainc, paired_test, t_two_tailed_p, ttest

# Student's sleep data (Cushny & Peebles), as R's datasets::sleep: extra hours of sleep, 10
# patients under two drugs. R 4.x prints for t.test(extra ~ group, data = sleep):
#   Welch:  t = -1.8608, df = 17.776, p-value = 0.07939
#   var.equal = TRUE: t = -1.8608, df = 18, p-value = 0.07919
#   paired = TRUE:    t = -4.0621, df = 9,  p-value = 0.002833
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


@pytest.mark.parametrize("use_scipy", [True, False])
def test_ttests_reproduce_r_on_the_sleep_data(use_scipy):
    t, df, p = ttest(SLEEP_1, SLEEP_2, "welch", use_scipy=use_scipy)
    assert (round(t, 4), round(df, 3), round(p, 5)) == (-1.8608, 17.776, 0.07939)
    t, df, p = ttest(SLEEP_1, SLEEP_2, "student", use_scipy=use_scipy)
    assert (round(t, 4), df, round(p, 5)) == (-1.8608, 18, 0.07919)
    t, df, p = ttest(SLEEP_1, SLEEP_2, "paired", use_scipy=use_scipy)
    assert (round(t, 4), df, round(p, 6)) == (-4.0621, 9, 0.002833)


@pytest.mark.parametrize("t,df,p", [(12.706, 1, 0.05), (4.303, 2, 0.05), (2.776, 4, 0.05), (4.604, 4, 0.01),
                                    (2.228, 10, 0.05), (3.169, 10, 0.01), (2.042, 30, 0.05), (1.960, 10 ** 7, 0.05)])
def test_own_t_distribution_matches_the_critical_values_table(t, df, p):
    """Two-tailed critical values of Student's t (any statistics textbook's table, 3 decimals)."""
    assert t_two_tailed_p(t, df) == pytest.approx(p, rel=2e-3)
    assert t_two_tailed_p(-t, df) == t_two_tailed_p(t, df) and t_two_tailed_p(0.0, df) == pytest.approx(1.0)


def test_incomplete_beta_closed_forms():
    for x in (0.01, 0.3, 0.77, 0.999):
        assert betainc(2.5, 1.0, x) == pytest.approx(x ** 2.5, rel=1e-12)
        assert betainc(1.0, 3.5, x) == pytest.approx(1 - (1 - x) ** 3.5, rel=1e-12)
    assert betainc(7.0, 7.0, 0.5) == pytest.approx(0.5, abs=1e-14)


def test_ttest_edge_cases():
    assert ttest([1, 1, 1], [1, 1, 1], use_scipy=False)[2] == 1.0  # no difference, no spread
    assert ttest([2, 2, 2], [1, 1, 1], use_scipy=False)[2] == 0.0  # a certain difference
    with pytest.raises(ValueError, match="at least 2 runs"):
        ttest([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="as many runs"):
        ttest([1.0, 2.0], [1.0, 2.0, 3.0], "paired")


REFS = ["the cat sat on the mat", "a dog barked loudly", "it is raining today", "open the file now",
        "save all open documents", "the printer is out of paper"] * 5
BASE = ["the cat sat on mat", "a dog barked", "it rains today", "open file now", "save all documents",
        "printer is out of paper"] * 5
BETTER = [r if i % 3 else b for i, (r, b) in enumerate(zip(REFS, BASE))]
CLOSE = [REFS[0]] + BASE[1:]  # one sentence better


def test_paired_tests_are_sacrebleus(tmp_path):
    """The same scores, means, confidence intervals and p-values as the sacrebleu command line."""
    files = {}
    for name, lines in (("ref", REFS), ("base", BASE), ("better", BETTER), ("close", CLOSE)):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n".join(lines) + "\n")
    for test in ("bs", "ar"):
        _, ours = paired_test([("base", BASE), ("better", BETTER), ("close", CLOSE)], REFS, test=test)
        p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "sacrebleu"), str(files["ref"]), "-i",
                            str(files["base"]), str(files["better"]), str(files["close"]), f"--paired-{test}",
                            "-f", "json"], capture_output=True, text=True, check=True)
        theirs = json.loads(p.stdout)
        for r, s in zip(ours, theirs):
            assert r.score == pytest.approx(s["BLEU"]["score"]) and r.p_value == s["BLEU"]["p_value"]
            if test == "bs":
                assert r.mean == pytest.approx(s["BLEU"]["mean"]) and r.ci == pytest.approx(s["BLEU"]["ci"])
        assert ours[1].p_value < 0.01  # clearly better
        if test == "bs":
            assert ours[2].p_value > 0.1  # one sentence: no evidence


def test_score_compare_cli(tmp_path, capsys):
    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(REFS) + "\n")
    gen = tmp_path / "better.gen"  # a fairseq-generate output, sentences out of order
    gen.write_text("".join(f"S-{i}\tsrc\nT-{i}\t{REFS[i]}\nH-{i}\t-0.5\t{BETTER[i]}\nD-{i}\t-0.5\t{BETTER[i]}\n"
                           for i in reversed(range(len(REFS)))))
    base = tmp_path / "base.txt"
    base.write_text("\n".join(BASE) + "\n")
    out = cli("fairseq-plm-score", "--compare", base, gen, base, "--names", "base,better,copy", "--ref", ref,
              "--n-samples", "200").stdout
    assert "paired bootstrap resampling, baseline: base | nrefs:1|bs:200|seed:12345" in out
    assert "paired approximate randomization, baseline: base" in out and "ar:200" in out
    assert out.count("| base | ") == 2 and "(baseline)" in out
    assert out.count("| copy | ") == 2 and out.count("| 1.0000 |") == 2  # identical to the baseline
    better = [line for line in out.splitlines() if line.startswith("| better |")]
    assert len(better) == 2 and all(line.endswith("*|") or "*" in line for line in better)
    from fairseq_plm.cli.score import main  # the rest in-process (the console script is checked above)

    main(["--compare", str(base), str(gen), "--ref", str(ref), "--paired", "bs", "--n-samples", "100"])
    only_bs = capsys.readouterr().out
    assert "approximate randomization" not in only_bs and "bootstrap" in only_bs
    other = tmp_path / "other.gen"
    other.write_text("T-0\tsomething else\nD-0\t-1\tx\n")
    for argv, message in ((["--compare", base, gen], "plain hypothesis file: give the references with --ref"),
                          (["--compare", gen, other], "differ from those of"),
                          (["--compare", base, "--ref", ref], "at least two systems"),
                          (["--compare", base, gen, "--ref", ref, "--paired", "t"], "--paired 't'")):
        with pytest.raises(SystemExit):
            main([str(a) for a in argv])
        assert message in capsys.readouterr().err


def test_aggregate_t_test_column(tmp_path, capsys):
    from fairseq_plm.cli.mpt_eval import aggregate

    paths = []
    for name, values in (("MPT", SLEEP_2), ("SP", SLEEP_1)):
        for seed, v in enumerate(values, 1):
            paths.append(tmp_path / f"{name}{seed}.json")
            paths[-1].write_text(json.dumps({"name": name, "accuracy": {"en": v}, "avg": v, "seed": seed,
                                             "trained_params": 1234567, "num_updates": 10, "last_num_updates": 20}))
    out = cli("fairseq-plm-mpt-aggregate", *paths).stdout
    assert "| Method | EN | Avg. | p-value | params | updates |" in out
    sp = next(line for line in out.splitlines() if line.startswith("| SP (n=10)"))
    assert sp.endswith("| 7.9e-02 | 1.23M | 20 |")  # Student: p = 0.07919
    assert "| MPT (n=10) |" in out and "two-tailed student t-test" in out
    paths = [str(x) for x in paths]
    aggregate(paths + ["--ttest", "paired"])
    assert "| 2.8e-03 |" in capsys.readouterr().out  # paired by seed: p = 0.002833
    aggregate(paths + ["--ttest", "welch", "--baseline", "SP"])
    mpt = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| MPT (n=10)"))
    assert "| 7.9e-02 |" in mpt  # Welch: p = 0.07939
    with pytest.raises(SystemExit, match="--baseline 'FT'"):
        aggregate(paths + ["--baseline", "FT"])
