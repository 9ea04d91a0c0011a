"""Expected maximum validation performance (Dodge et al. 2019) against exact enumeration and
Monte Carlo."""

import itertools

import numpy as np
import pytest

from mlp.expected_max import curve, expected_max


def enumerate_max(scores, n):
  """Mean and variance of the max over all N^n equally likely n-tuples drawn with replacement."""
  maxima = np.array([max(t) for t in itertools.product(scores, repeat=n)])
  return maxima.mean(), maxima.var()


@pytest.mark.parametrize(
  "scores",
  [[0.3], [0.1, 0.5], [0.4, 0.2, 0.9, 0.7], [0.5, 0.5, 0.1, 0.5, 0.3], [0.2, 0.2, 0.2]],
)
def test_expected_max_equals_exact_enumeration(scores):
  for n in range(1, 5):
    mean, var = expected_max(scores, n)
    exact_mean, exact_var = enumerate_max(scores, n)
    assert mean == pytest.approx(exact_mean, abs=1e-12)
    assert var == pytest.approx(exact_var, abs=1e-12)


def test_expected_max_agrees_with_monte_carlo_and_is_monotone():
  rng = np.random.default_rng(0)
  scores = rng.beta(5, 3, size=30)
  n = np.arange(1, 41)
  mean, var = expected_max(scores, n)
  draws = rng.choice(scores, size=(100_000, 40))
  for k in (1, 5, 17, 40):
    maxima = draws[:, :k].max(1)
    se = maxima.std() / np.sqrt(len(maxima))
    assert abs(mean[k - 1] - maxima.mean()) < 5 * se
    assert var[k - 1] == pytest.approx(maxima.var(), rel=0.05)
  assert mean[0] == pytest.approx(scores.mean())  # one draw: the mean score
  assert np.all(np.diff(mean) > 0) and mean[-1] < scores.max()
  assert np.all(var >= 0)


def test_curve_rows_and_seconds_and_bad_inputs():
  rows = curve([0.6, 0.8, 0.7], per_trial={"seconds": 20.0, "wall": 5.0})
  assert [r["n"] for r in rows] == [1, 2, 3]
  assert [r["seconds"] for r in rows] == [20.0, 40.0, 60.0]
  assert [r["wall"] for r in rows] == [5.0, 10.0, 15.0]
  mean, var = expected_max([0.6, 0.8, 0.7], 2)
  assert rows[1]["expected_max"] == pytest.approx(float(mean))
  assert rows[1]["std"] == pytest.approx(float(var) ** 0.5)
  assert "seconds" not in curve([0.5])[0]
  assert len(curve([0.5, 0.6], n_max=5)) == 5
  with pytest.raises(ValueError, match="at least one"):
    expected_max([], 1)
  with pytest.raises(ValueError, match=">= 1"):
    expected_max([0.5], 0)
  with pytest.raises(ValueError, match="finite"):
    expected_max([0.5, float("nan")], 1)
