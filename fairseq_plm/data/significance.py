"""Significance tests for comparing systems.

* Translation outputs on the same references: sacrebleu's own paired bootstrap resampling
  (Koehn 2004, as Moses' ``bootstrap-hypothesis-difference-significance.pl``) and paired
  approximate randomization (Riezler & Maxwell 2005, as multeval), through
  ``sacrebleu.significance.PairedTest`` (``paired_test``); the first system is the baseline
  every other one is compared with. ``fairseq-plm-score --compare`` prints the table.
  Like multeval, which it follows, sacrebleu counts resampled differences *strictly* greater
  than the observed one; so when resampling can only reproduce the observed difference
  exactly (a difference carried by one or two sentences, under approximate randomization),
  the p-value is its minimum, 1/(trials+1). We keep sacrebleu's numbers except for a system
  whose output is identical to the baseline's, reported with p = 1.
* Accuracies over seeds (MPT Table II: "the p-value is calculated by two-tailed t-tests"):
  ``ttest`` gives the two-tailed p-value of Student's two-sample t-test (default), Welch's
  test, or the paired test (runs paired by seed: same k-shot sample). It uses scipy when it
  is installed and otherwise the Student t distribution computed here (regularized
  incomplete beta function by Lentz's continued fraction); both are tested against published
  values. ``fairseq-plm-mpt-aggregate --ttest`` prints the p-value column.
"""

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

TESTS = {"bs": "paired bootstrap resampling", "ar": "paired approximate randomization"}
TTESTS = ("student", "welch", "paired")


# ------------------------------------------------------------------------------ sacrebleu's paired tests

@dataclass
class SystemResult:
    name: str
    score: float
    mean: Optional[float] = None   # mean over the bootstrap resamples
    ci: Optional[float] = None     # half-width of the 95% confidence interval around ``mean``
    p_value: Optional[float] = None  # against the baseline (None for the baseline itself)


def _metric(name: str, tokenize: str):
    from sacrebleu.metrics import BLEU, CHRF, TER

    if name == "bleu":
        return BLEU(tokenize=tokenize)
    if name == "chrf":
        return CHRF()
    if name == "ter":
        return TER()
    raise ValueError(f"significance tests support bleu, chrf and ter, not {name!r}")


@contextmanager
def _sacrebleu_seed(seed):
    """sacrebleu's tests take their seed from SACREBLEU_SEED (default 12345)."""
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = old


def paired_test(systems: Sequence[Tuple[str, Sequence[str]]], references: Sequence[str], test: str = "bs",
                metric: str = "bleu", tokenize: str = "13a", n_samples: int = 0, seed: int = 12345,
                ar_confidence: int = 1000) -> Tuple[str, List[SystemResult]]:
    """sacrebleu's paired test of ``systems[1:]`` against the baseline ``systems[0]``.

    ``test``: ``bs`` (paired bootstrap resampling, 1000 resamples by default) or ``ar``
    (paired approximate randomization, 10000 trials by default; confidence intervals from
    ``ar_confidence`` bootstrap resamples). Returns (signature, one result per system)."""
    from sacrebleu.significance import PairedTest

    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}: choose from {', '.join(TESTS)}")
    if len(systems) < 2:
        raise ValueError("a paired test needs a baseline and at least one other system")
    for name, hyps in systems:
        if len(hyps) != len(references):
            raise ValueError(f"system {name!r} has {len(hyps)} hypotheses for {len(references)} references")
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # it logs every step at INFO
    with _sacrebleu_seed(seed):
        m = _metric(metric, tokenize)
        tester = PairedTest([(n, list(h)) for n, h in systems], {metric: m}, [list(references)], test_type=test,
                            n_samples=n_samples, n_ar_confidence=ar_confidence if test == "ar" else -1)
        signatures, scores = tester()
    (key, signature), = signatures.items()
    results = [SystemResult(name, r.score, r.mean, r.ci, r.p_value) for name, r in zip(scores["System"], scores[key])]
    for (_, hyps), r in zip(systems[1:], results[1:]):
        # sacrebleu counts resampled differences strictly greater than the observed one, so a
        # system identical to the baseline (observed difference 0, every resample 0) gets its
        # smallest p-value, 1/(n+1); nothing distinguishes the two, so we report p = 1
        if list(hyps) == list(systems[0][1]):
            r.p_value = 1.0
    return signature.format(), results


def format_paired_test(results: Sequence[SystemResult], signature: str, test: str, metric: str = "bleu") -> str:
    """A markdown table; ``*`` marks p < 0.05 (sacrebleu's convention)."""
    label = {"bleu": "BLEU", "chrf": "chrF2", "ter": "TER"}[metric]
    lines = [f"{TESTS[test]}, baseline: {results[0].name} | {signature}",
             f"| System | {label} | mean ± 95% CI | p-value |", "|---|---|---|---|"]
    for i, r in enumerate(results):
        ci = f"{r.mean:.2f} ± {r.ci:.2f}" if r.mean is not None else "-"
        if i == 0:
            p = "(baseline)"
        else:
            p = f"{r.p_value:.4f}" + ("*" if r.p_value < 0.05 else "")
        lines.append(f"| {r.name} | {r.score:.2f} | {ci} | {p} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ t-tests

def _betacf(a, b, x, max_iter=300, eps=3e-16):
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x = {x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_tailed_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t distribution with ``df`` degrees of freedom:
    I_{df / (df + t^2)}(df / 2, 1 / 2)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def _mean_var(xs):
    n = len(xs)
    mean = sum(xs) / n
    return mean, sum((x - mean) ** 2 for x in xs) / (n - 1)


def ttest_statistic(a: Sequence[float], b: Sequence[float], kind: str = "student") -> Tuple[float, float]:
    """(t, degrees of freedom) of a two-sample (``student``: pooled variance; ``welch``) or
    ``paired`` t-test of the means of ``a`` and ``b``."""
    if kind not in TTESTS:
        raise ValueError(f"unknown t-test {kind!r}: choose from {', '.join(TTESTS)}")
    a, b = [float(x) for x in a], [float(x) for x in b]
    if kind == "paired":
        if len(a) != len(b):
            raise ValueError(f"a paired t-test needs as many runs on each side, got {len(a)} and {len(b)}")
        if len(a) < 2:
            raise ValueError("a paired t-test needs at least 2 pairs")
        mean, var = _mean_var([x - y for x, y in zip(a, b)])
        n = len(a)
        return _ratio(mean, math.sqrt(var / n)), n - 1
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a two-sample t-test needs at least 2 runs on each side, got {len(a)} and {len(b)}")
    (ma, va), (mb, vb), na, nb = _mean_var(a), _mean_var(b), len(a), len(b)
    if kind == "student":
        pooled = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)
        return _ratio(ma - mb, math.sqrt(pooled * (1 / na + 1 / nb))), na + nb - 2
    sa, sb = va / na, vb / nb  # Welch: Satterthwaite's degrees of freedom
    df = (sa + sb) ** 2 / (sa ** 2 / (na - 1) + sb ** 2 / (nb - 1)) if sa + sb > 0 else na + nb - 2
    return _ratio(ma - mb, math.sqrt(sa + sb)), df


def _ratio(diff, se):
    if se > 0:
        return diff / se
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)  # no spread: equal means or a certain difference


def ttest(a: Sequence[float], b: Sequence[float], kind: str = "student", use_scipy: Optional[bool] = None):
    """Two-tailed t-test of mean(a) = mean(b): (t, df, p). ``use_scipy`` None = when installed."""
    t, df = ttest_statistic(a, b, kind)
    if use_scipy is None:
        try:
            import scipy.stats  # noqa: F401
            use_scipy = True
        except ImportError:
            use_scipy = False
    if use_scipy and math.isfinite(t):
        from scipy import stats

        p = float(2 * stats.t.sf(abs(t), df))
    else:
        p = t_two_tailed_p(t, df)
    return t, df, p
