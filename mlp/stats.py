"""Paired tests for comparing two learners on the same folds, and what each lets one claim.

Every function takes the two learners' per-fold accuracies (or per-example correctness) as
``a`` and ``b`` and tests the difference ``d = acc_a - acc_b`` (positive: ``a`` is more accurate).
Each returns a :class:`Test` with the two-sided p-value, the mean difference and its confidence
interval. scipy.stats supplies the distributions and the Wilcoxon and binomial tests; the
statistics scipy lacks are written out here from their papers:

- corrected resampled t-test (Nadeau & Bengio 2003, as used by Bouckaert & Frank 2004): k-fold
  estimates share training rows, so the plain paired t-test's variance ``s^2 / k`` is too small;
  the correction inflates it to ``(1/k + n_test/n_train) s^2``.
- 5x2cv paired t-test (Dietterich 1998) and its combined F-test (Alpaydin 1999): five
  replications of 2-fold cross-validation.
- McNemar's test on one held-out split (exact binomial on the discordant pairs when they are
  few, else chi-square with continuity correction).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats as sp


class Test(NamedTuple):
  """One paired test: statistic, two-sided p-value, mean difference a - b and its CI."""

  name: str
  statistic: float
  p_value: float
  mean_diff: float
  ci: tuple[float, float]  # (1 - alpha) confidence interval of mean_diff
  df: float | None = None
  n: int = 0  # folds, or examples for McNemar


def _diffs(a, b) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.size < 2:
    raise ValueError(f"expected two equal-shaped arrays of >= 2 values, got {a.shape}, {b.shape}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("per-fold values must be finite")
  return a - b


def _t_test(name: str, mean: float, se: float, df: float, n: int, alpha: float) -> Test:
  if se == 0.0:  # every fold gives the same difference: no variance to test against
    t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    p = 1.0 if mean == 0.0 else 0.0
  else:
    t = mean / se
    p = float(2.0 * sp.t.sf(abs(t), df))
  half = float(sp.t.ppf(1.0 - alpha / 2.0, df)) * se
  ci = (float(mean - half), float(mean + half))
  return Test(name, float(t), p, float(mean), ci, float(df), n)


def paired_t(a, b, *, alpha: float = 0.05) -> Test:
  """The plain paired t-test, t = mean(d) / sqrt(s^2 / k), df = k - 1 (too liberal for CV)."""
  d = _diffs(a, b)
  k = d.size
  return _t_test("paired t", d.mean(), math.sqrt(d.var(ddof=1) / k), k - 1, k, alpha)


def corrected_resampled_t(a, b, n_train: int, n_test: int, *, alpha: float = 0.05) -> Test:
  """Nadeau & Bengio's corrected resampled t-test over k folds (or k random splits).

      t = mean(d) / sqrt((1/k + n_test/n_train) * s^2),   s^2 = var(d, ddof=1),   df = k - 1

  ``n_train`` / ``n_test``: rows a learner is trained / tested on in one fold (for k-fold CV
  n_test/n_train = 1/(k-1)). The CI is mean(d) +- t_{1-alpha/2, k-1} times the same corrected
  standard error.
  """
  d = _diffs(a, b)
  if n_train <= 0 or n_test <= 0:
    raise ValueError(f"n_train and n_test must be positive, got {n_train}, {n_test}")
  k = d.size
  se = math.sqrt((1.0 / k + n_test / n_train) * d.var(ddof=1))
  return _t_test("corrected t", d.mean(), se, k - 1, k, alpha)


def wilcoxon(a, b, *, alpha: float = 0.05) -> Test:
  """Wilcoxon's signed-rank test on the per-fold differences (scipy.stats.wilcoxon, two-sided).

  With k folds the smallest possible p is 2 / 2^k (0.0156 for k = 7). The CI is the
  Hodges-Lehmann one: order statistics of the k(k+1)/2 Walsh averages (d_i + d_j) / 2, i <= j,
  at the exact signed-rank critical value; ``mean_diff`` is the median of the Walsh averages.
  All-zero differences give p = 1.
  """
  d = _diffs(a, b)
  k = d.size
  walsh = np.sort([(d[i] + d[j]) / 2.0 for i in range(k) for j in range(i, k)])
  estimate = float(np.median(walsh))
  if np.all(d == 0.0):
    return Test("Wilcoxon", 0.0, 1.0, 0.0, (0.0, 0.0), None, k)
  res = sp.wilcoxon(d, alternative="two-sided")
  c = _signed_rank_lower(k, alpha / 2.0)
  # 1-based order statistics c and M + 1 - c of the M Walsh averages; none when k is too small
  # for any signed-rank result to reach alpha (k <= 5 at alpha = 0.05).
  lo, hi = (float(walsh[c - 1]), float(walsh[-c])) if c > 0 else (math.nan, math.nan)
  return Test("Wilcoxon", float(res.statistic), float(res.pvalue), estimate, (lo, hi), None, k)


def _signed_rank_lower(k: int, tail: float) -> int:
  """The largest c with P(W <= c - 1) <= tail for the signed-rank statistic W of k pairs: the
  Hodges-Lehmann interval runs from the c-th smallest to the c-th largest Walsh average."""
  counts = np.zeros(k * (k + 1) // 2 + 1)
  counts[0] = 1.0
  for r in range(1, k + 1):  # each rank r is in the positive sum or not
    counts[r:] = counts[r:] + counts[:-r].copy()
  cdf = np.cumsum(counts) / 2.0**k
  return int(np.searchsorted(cdf, tail, side="right"))


def paired_t_5x2cv(a, b, *, alpha: float = 0.05) -> Test:
  """Dietterich's 5x2cv paired t-test; ``a``, ``b``: (5, 2) accuracies, [replication, fold].

      p_i^(j) = a[i, j] - b[i, j],   pbar_i = (p_i^(1) + p_i^(2)) / 2,
      s_i^2 = (p_i^(1) - pbar_i)^2 + (p_i^(2) - pbar_i)^2,
      t = p_1^(1) / sqrt((1/5) sum_i s_i^2),   df = 5.

  ``mean_diff`` is p_1^(1), the estimate the statistic tests, and the CI is the interval the test
  inverts: p_1^(1) +- t_{1-alpha/2, 5} times its standard error.
  """
  d = _diffs(a, b)
  if d.shape != (5, 2):
    raise ValueError(f"5x2cv needs (5, 2) arrays [replication, fold], got {d.shape}")
  s2 = ((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
  se = math.sqrt(s2.mean())
  return _t_test("5x2cv t", d[0, 0], se, 5, 10, alpha)


def f_test_5x2cv(a, b) -> Test:
  """Alpaydin's combined 5x2cv F-test: f = sum_ij (p_i^(j))^2 / (2 sum_i s_i^2) ~ F(10, 5)."""
  d = _diffs(a, b)
  if d.shape != (5, 2):
    raise ValueError(f"5x2cv needs (5, 2) arrays [replication, fold], got {d.shape}")
  s2 = ((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
  den = 2.0 * s2.sum()
  f = math.inf if den == 0.0 else float((d**2).sum() / den)
  p = 0.0 if math.isinf(f) else float(sp.f.sf(f, 10, 5))
  if np.all(d == 0.0):
    f, p = 0.0, 1.0
  m = float(d.mean())
  return Test("5x2cv F", f, p, m, (math.nan, math.nan), 10.0, 10)


def mcnemar(correct_a, correct_b, *, exact: bool | None = None, alpha: float = 0.05) -> Test:
  """McNemar's test on one test set: ``correct_a``, ``correct_b`` are per-example booleans.

  With n01 = examples only ``a`` gets right and n10 = only ``b`` gets right:
  exact (default when n01 + n10 < 25): two-sided binomial test of n01 ~ Bin(n01 + n10, 1/2);
  else chi^2 = (|n01 - n10| - 1)^2 / (n01 + n10) with one degree of freedom.
  ``mean_diff`` = (n01 - n10) / n, the accuracy difference, with a Wald interval for a paired
  difference of proportions: se = sqrt(n01 + n10 - (n01 - n10)^2 / n) / n.
  """
  ca, cb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  if ca.shape != cb.shape or ca.ndim != 1 or ca.size == 0:
    raise ValueError(f"expected two equal-length 1-D arrays, got {ca.shape}, {cb.shape}")
  n = ca.size
  n01, n10 = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
  disc = n01 + n10
  if exact is None:
    exact = disc < 25
  if disc == 0:
    stat, p = 0.0, 1.0
  elif exact:
    stat, p = float(n01), float(sp.binomtest(n01, disc, 0.5).pvalue)
  else:
    stat = (abs(n01 - n10) - 1.0) ** 2 / disc
    p = float(sp.chi2.sf(stat, 1))
  diff = (n01 - n10) / n
  se = math.sqrt(max(disc - (n01 - n10) ** 2 / n, 0.0)) / n
  z = float(sp.norm.ppf(1.0 - alpha / 2.0))
  name = "McNemar exact" if exact else "McNemar chi2"
  return Test(name, stat, p, diff, (diff - z * se, diff + z * se), None if exact else 1.0, n)


def claim(a: str, b: str, test: Test, *, alpha: float = 0.05, where: str = "these folds") -> str:
  """One sentence on what ``test`` lets one claim about learners ``a`` and ``b``."""
  if test.p_value < alpha:
    better, worse = (a, b) if test.mean_diff > 0 else (b, a)
    return (
      f"{better} is more accurate than {worse} on {where} ({test.name} p = {test.p_value:.3g} "
      f"< {alpha}); this is evidence about this data set and training-set size, not that "
      f"{better} is the better learner in general."
    )
  return (
    f"No significant difference at {alpha} ({test.name} p = {test.p_value:.3g}): on {where}, "
    f"neither {a} nor {b} is shown to be more accurate."
  )
