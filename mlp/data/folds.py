"""Cross-validation folds: whole subjects per fold (HAR), or stratified by class (images).

Both are seeded and deterministic, so every learner compared on a data set sees the same folds.
"""

import numpy as np


def check_fold(fold: int, folds: int) -> None:
  """ValueError unless 0 <= fold < folds and folds >= 2."""
  if folds < 2:
    raise ValueError(f"cross-validation needs at least 2 folds, got cv_folds={folds}")
  if not 0 <= fold < folds:
    raise ValueError(f"cv_fold must be in [0, {folds}), got {fold}")


def subject_folds(subjects: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
  """The distinct ``subjects`` shuffled by ``seed`` and dealt into ``folds`` groups (sorted each).

  Group sizes differ by at most one (21 subjects, 7 folds: 3 each). Every subject is in exactly
  one group, so no person is both trained on and tested on within a fold.
  """
  subjects = np.unique(np.asarray(subjects))
  if folds < 2 or folds > len(subjects):
    raise ValueError(
      f"cannot deal {len(subjects)} subjects into {folds} folds: use 2..{len(subjects)} folds"
    )
  order = np.random.default_rng(seed).permutation(subjects)
  return [np.sort(g) for g in np.array_split(order, folds)]


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
  """(n,) fold index of each row: each class's rows shuffled by ``seed``, dealt round-robin.

  Every fold gets ``floor`` or ``ceil`` of ``n_c / folds`` rows of each class c, and the fold that
  receives a class's extra rows rotates with the class, so fold sizes differ by at most a few rows.
  """
  y = np.asarray(y)
  if folds < 2:
    raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
  rng = np.random.default_rng(seed)
  out = np.empty(len(y), np.int64)
  offset = 0
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    out[idx] = (np.arange(len(idx)) + offset) % folds
    offset += len(idx)
  return out
