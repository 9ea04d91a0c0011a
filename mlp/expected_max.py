"""Expected maximum validation performance after n trials (Dodge et al. 2019, "Show your work").

Given the validation scores v_1..v_N of the N trials a search finished, the expected best score
of a search that had run only n <= N trials is estimated from the empirical distribution of the
N scores. With the scores sorted, v_(1) <= ... <= v_(N), the empirical CDF is
F(v_(i)) = i / N, the maximum of n independent draws from it has CDF F^n, and so (Dodge et al.
2019, Section 3.1, Eq. 1 with the empirical CDF)::

    E[max_n] = sum_i v_(i) * ((i / N)^n - ((i - 1) / N)^n)

    Var[max_n] = sum_i v_(i)^2 * ((i / N)^n - ((i - 1) / N)^n) - E[max_n]^2

the draws being with replacement (n = N does not give the observed maximum but a bit less; n
beyond N is allowed). Tied scores need no care: the weights of a tie telescope to its share.
Multiplying n by the mean duration of a trial gives the curve against compute time. For random
search the trials are independent draws and the estimator is the paper's; for adaptive searches
(TPE, Hyperband) it treats the trials as if they were, which is the paper's usage too.
"""

import numpy as np


def expected_max(scores, n: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(E[max of n draws], Var[max of n draws]) from the empirical distribution of ``scores``.

  ``scores``: the N trials' validation scores (any order, N >= 1); ``n``: a number of trials or
  an array of them (each >= 1). Returns arrays shaped like ``n``. See the module docstring.
  """
  v = np.sort(np.asarray(scores, np.float64).ravel())
  if v.size == 0:
    raise ValueError("expected_max needs at least one score")
  if not np.all(np.isfinite(v)):
    raise ValueError("expected_max needs finite scores")
  n_arr = np.asarray(n)
  if np.any(n_arr < 1) or not np.all(n_arr == np.floor(n_arr)):
    raise ValueError(f"the numbers of trials must be integers >= 1, got {n!r}")
  big_n = v.size
  cdf = np.arange(big_n + 1, dtype=np.float64) / big_n  # F at v_(0)=-inf, v_(1), ..., v_(N)
  powers = cdf[None, :] ** n_arr.reshape(-1, 1).astype(np.float64)  # (len(n), N + 1)
  weights = np.diff(powers, axis=1)  # P(max = v_(i)), each row sums to 1
  mean = weights @ v
  var = np.maximum(weights @ v**2 - mean**2, 0.0)  # rounding can make a point mass slightly < 0
  return mean.reshape(n_arr.shape), var.reshape(n_arr.shape)


def curve(
  scores, n_max: int | None = None, per_trial: dict[str, float] | None = None
) -> list[dict[str, float]]:
  """One row per n = 1..``n_max`` (default N): ``n``, ``expected_max``, ``variance``, ``std``,
  and for each ``per_trial`` entry (e.g. ``{"seconds": mean seconds of a trial}``) that column
  at n times its value: the curve against compute or wall time."""
  scores = np.asarray(scores, np.float64)
  n = np.arange(1, (n_max or scores.size) + 1)
  mean, var = expected_max(scores, n)
  rows = []
  for k, m, s2 in zip(n, mean, var, strict=True):
    row = {"n": int(k), "expected_max": float(m), "variance": float(s2), "std": float(s2**0.5)}
    row.update({name: float(k) * float(v) for name, v in (per_trial or {}).items()})
    rows.append(row)
  return rows
