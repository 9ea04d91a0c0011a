"""Paired tests (mlp.stats): worked examples from their sources, and scipy on random inputs."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from mlp import stats

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------ worked examples


def test_corrected_t_matches_the_scikit_learn_example():
  # scikit-learn's example "Statistical comparison of models using grid search": ROC-AUC of an
  # RBF SVC minus a linear SVC over 10x10 repeated stratified 10-fold CV (n_train 90, n_test 10).
  # Every difference is a multiple of 0.04; it prints "Corrected t-value: 0.750, Corrected
  # p-value: 0.227" (one-sided, t.sf(|t|)) and "Uncorrected t-value: 2.611 ... p-value: 0.005".
  u = [
    -1,
    -3,
    0,
    0,
    0,
    1,
    1,
    0,
    1,
    0,
    1,
    1,
    1,
    1,
    1,
    -1,
    0,
    0,
    0,
    0,
    -1,
    -1,
    1,
    -2,
    0,
    1,
    1,
    1,
    0,
    0,
    -1,
    1,
    0,
    0,
    1,
    0,
    0,
    1,
    1,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    2,
    0,
    0,
    0,
    1,
    1,
    1,
    0,
    1,
    -1,
    2,
    0,
    0,
    0,
    0,
    0,
    5,
    -1,
    0,
    1,
    0,
    0,
    0,
    0,
    1,
    1,
    2,
    0,
    1,
    0,
    -1,
    0,
    0,
    1,
    -2,
    1,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    -1,
    0,
    -1,
    0,
    0,
    1,
    2,
    0,
    0,
  ]
  d = 0.04 * np.array(u, np.float64)
  t = stats.corrected_resampled_t(d, np.zeros_like(d), n_train=90, n_test=10)
  assert round(t.statistic, 3) == 0.750
  assert round(t.p_value / 2, 3) == 0.227  # ours is two-sided
  plain = stats.paired_t(d, np.zeros_like(d))
  assert round(plain.statistic, 3) == 2.611 and round(plain.p_value / 2, 3) == 0.005


def test_5x2cv_matches_hand_made_and_library_examples():
  # Hand-made error counts (tonyjward/machine-learning-oop tests/test_statistics.py): t published
  # as -0.830454799; s_i^2 = (2, 0, 18, 4.5, 4.5), so F = 97 / 29 with 10 and 5 df.
  err_a = np.array([[5, 4], [4, 3], [3, 3], [2, 3], [1, 3]], np.float64)
  err_b = np.array([[7, 8], [6, 5], [3, 9], [6, 10], [8, 7]], np.float64)
  t = stats.paired_t_5x2cv(err_a, err_b)
  assert t.statistic == pytest.approx(-0.830454799, abs=1e-9)
  assert t.df == 5
  assert stats.f_test_5x2cv(err_a, err_b).statistic == pytest.approx(97 / 29)
  # mlxtend's tests (paired_ttest_5x2cv, combined_ftest_5x2cv): logistic regression vs a depth-1
  # tree on iris, correct counts of 75 per fold; published t 7.269, p 0.001, F 59.587, p 0.000.
  acc_a = np.array([71, 73, 74, 69, 72, 74, 72, 72, 72, 72]).reshape(5, 2) / 75
  acc_b = np.array([47, 47, 48, 49, 47, 41, 48, 47, 48, 46]).reshape(5, 2) / 75
  t = stats.paired_t_5x2cv(acc_a, acc_b)
  assert round(t.statistic, 3) == 7.269 and round(t.p_value, 3) == 0.001
  f = stats.f_test_5x2cv(acc_a, acc_b)
  assert round(f.statistic, 3) == 59.587 and round(f.p_value, 3) == 0.0


def _from_table(table):
  """Per-example correctness of two learners from McNemar's 2x2 table [[both, a only], [b only,
  neither]] (rows: a right / wrong; columns: b right / wrong)."""
  (both, a_only), (b_only, neither) = table
  ca = np.repeat([True, True, False, False], [both, a_only, b_only, neither])
  cb = np.repeat([True, False, True, False], [both, a_only, b_only, neither])
  return ca, cb


def close(value: float, published: float) -> bool:
  """``value`` equals ``published`` to the digits published (or to 1e-9 relative for long ones)."""
  text = repr(published)
  if "e" in text or len(text.replace("0.", "", 1).lstrip("0")) > 8:
    return value == pytest.approx(published, rel=1e-9)
  digits = len(text.split(".")[1]) if "." in text else 0
  return round(value, digits) == published


@pytest.mark.parametrize(
  "table, chi2_cc, p_cc, p_exact",
  [
    # Armitage & Berry (1994) p. 127, as in StatsDirect's help: 5.785714, P = 0.0162; exact 0.0129.
    ([[20, 12], [2, 16]], 5.785714, 0.0162, 0.0129),
    # Wikipedia "McNemar's test", first example (mlxtend's test_mcnemar_test.py values).
    ([[101, 121], [59, 33]], 20.672222222222221, 5.4500948254271171e-06, 4.4344492637555101e-06),
    # mlxtend's user guide, example 2: chi^2 2.025, p 0.154728923485.
    ([[9945, 25], [15, 15]], 2.025, 0.154728923485, None),
    # Triola, Elementary Statistics (hip protectors): chi^2 0.640.
    ([[309, 10], [15, 2]], 0.64, None, None),
  ],
)
def test_mcnemar_matches_worked_examples(table, chi2_cc, p_cc, p_exact):
  ca, cb = _from_table(table)
  chi = stats.mcnemar(ca, cb, exact=False)
  assert close(chi.statistic, chi2_cc)
  assert p_cc is None or close(chi.p_value, p_cc)
  assert p_exact is None or close(stats.mcnemar(ca, cb, exact=True).p_value, p_exact)


# ------------------------------------------------------------------ scipy-backed, random inputs


@pytest.mark.parametrize("seed", range(5))
def test_wilcoxon_matches_scipy(seed):
  rng = np.random.default_rng(seed)
  a = rng.uniform(0.8, 1.0, 9)
  b = a - rng.normal(0.01, 0.02, 9)
  t = stats.wilcoxon(a, b)
  ref = sp.wilcoxon(a - b)
  assert t.p_value == pytest.approx(ref.pvalue, rel=1e-12)
  assert t.statistic == pytest.approx(ref.statistic)


@pytest.mark.parametrize("seed", range(5))
def test_plain_paired_t_matches_scipy(seed):
  rng = np.random.default_rng(seed)
  a, b = rng.uniform(0.8, 1.0, 7), rng.uniform(0.8, 1.0, 7)
  t = stats.paired_t(a, b)
  ref = sp.ttest_rel(a, b)
  assert t.statistic == pytest.approx(ref.statistic, rel=1e-10)
  assert t.p_value == pytest.approx(ref.pvalue, rel=1e-10)
  ci = ref.confidence_interval(0.95)
  assert t.ci == pytest.approx((ci.low, ci.high), rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_mcnemar_matches_scipy_binomial_and_chi2(seed):
  rng = np.random.default_rng(seed)
  ca, cb = rng.random(300) < 0.8, rng.random(300) < 0.75
  n01, n10 = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
  exact = stats.mcnemar(ca, cb, exact=True)
  assert exact.p_value == pytest.approx(sp.binomtest(n01, n01 + n10, 0.5).pvalue, rel=1e-12)
  chi = stats.mcnemar(ca, cb, exact=False)
  stat = (abs(n01 - n10) - 1) ** 2 / (n01 + n10)
  assert chi.statistic == pytest.approx(stat)
  assert chi.p_value == pytest.approx(sp.chi2.sf(stat, 1))
  # Without the continuity correction, McNemar's chi^2 is scipy's goodness-of-fit chi^2 of the
  # two discordant counts against equal halves; the correction only shrinks the statistic.
  assert sp.chisquare([n01, n10]).statistic >= chi.statistic
  assert exact.mean_diff == pytest.approx(ca.mean() - cb.mean())


# --------------------------------------------------------------------- properties of each test


def test_corrected_t_is_the_plain_t_with_an_inflated_variance():
  a = np.array([0.95, 0.96, 0.94, 0.97, 0.93, 0.95, 0.96])
  b = a - np.array([0.01, 0.02, -0.005, 0.015, 0.01, 0.012, 0.008])
  plain, corr = stats.paired_t(a, b), stats.corrected_resampled_t(a, b, 6000, 1000)
  k = 7
  factor = math.sqrt((1 / k + 1000 / 6000) / (1 / k))
  assert corr.statistic == pytest.approx(plain.statistic / factor)
  assert corr.p_value > plain.p_value
  assert corr.ci[1] - corr.ci[0] == pytest.approx((plain.ci[1] - plain.ci[0]) * factor)


def test_swapping_learners_flips_the_sign_not_the_p_value():
  a, b = RNG.uniform(0.8, 1, (5, 2)), RNG.uniform(0.8, 1, (5, 2))
  for f in (stats.paired_t_5x2cv, stats.f_test_5x2cv):
    ab, ba = f(a, b), f(b, a)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert ab.mean_diff == pytest.approx(-ba.mean_diff)


def test_identical_learners_give_p_one():
  a = np.array([0.9, 0.8, 0.85, 0.95, 0.9])
  assert stats.corrected_resampled_t(a, a, 100, 20).p_value == 1.0
  assert stats.wilcoxon(a, a).p_value == 1.0
  same = np.ones(50, bool)
  assert stats.mcnemar(same, same).p_value == 1.0


def test_hodges_lehmann_interval_uses_the_exact_signed_rank_critical_value():
  # Tables of the signed-rank statistic (two-sided alpha = 0.05): reject when W <= 2 for k = 7,
  # W <= 8 for k = 10; none for k = 5. So the interval cuts 3 and 9 Walsh averages per end.
  assert stats._signed_rank_lower(7, 0.025) == 3
  assert stats._signed_rank_lower(10, 0.025) == 9
  assert stats._signed_rank_lower(5, 0.025) == 0
  d = np.arange(1.0, 8.0)  # Walsh averages of 1..7: the 28 values (i + j) / 2, i <= j
  t = stats.wilcoxon(d, np.zeros(7))
  walsh = sorted((i + j) / 2 for i, j in itertools.combinations_with_replacement(d, 2))
  assert t.ci == (walsh[2], walsh[-3])
  assert t.mean_diff == np.median(walsh)
  assert math.isnan(stats.wilcoxon(d[:5], np.zeros(5)).ci[0])


def test_bad_inputs_are_refused():
  with pytest.raises(ValueError, match="equal-shaped"):
    stats.paired_t([0.9, 0.8], [0.9])
  with pytest.raises(ValueError, match="finite"):
    stats.wilcoxon([0.9, float("nan")], [0.8, 0.7])
  with pytest.raises(ValueError, match=r"\(5, 2\)"):
    stats.paired_t_5x2cv(np.ones((4, 2)), np.ones((4, 2)))
  with pytest.raises(ValueError, match="positive"):
    stats.corrected_resampled_t([0.9, 0.8], [0.7, 0.6], 0, 10)


def test_claim_says_what_the_test_allows():
  sig = stats.Test("corrected t", 3.0, 0.01, -0.02, (-0.03, -0.01), 6.0, 7)
  text = stats.claim("mlp", "svm", sig, where="these 7 folds")
  assert text.startswith("svm is more accurate than mlp on these 7 folds")
  assert "not that svm is the better learner in general" in text
  ns = sig._replace(p_value=0.2)
  assert stats.claim("mlp", "svm", ns).startswith("No significant difference at 0.05")
