"""Classification metrics computed on the host with numpy.

Inputs may be numpy or JAX arrays; they are converted with ``np.asarray``. Conventions:

* Confusion matrices are ``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j``
  (rows = true class, columns = predicted class).
* Every ratio whose denominator is zero (0/0) is defined as 0, never NaN, so that empty classes
  and classes that are never predicted give finite numbers.
"""

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
  "ClassStats",
  "class_stats",
  "confusion_matrix",
  "normalize_rows",
  "safe_divide",
  "topk_accuracy",
]


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """Elementwise ``num / den`` as float64 with ``x / 0 := 0``."""
  num = np.asarray(num, dtype=np.float64)
  den = np.asarray(den, dtype=np.float64)
  out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
  np.divide(num, den, out=out, where=den != 0)
  return out


def _check_labels(labels: np.ndarray, num_classes: int, name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    if not np.all(labels == np.round(labels)):
      raise ValueError(f"{name} must hold integer class indices")
  labels = labels.astype(np.int64)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"{name} must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
  return labels


def topk_accuracy(
  probs: np.ndarray, labels: np.ndarray, ks: Sequence[int] | None = None
) -> np.ndarray:
  """Top-k accuracy: fraction of rows whose true label is among the k highest scores.

  ``acc_k = (1/N) sum_n [rank_n < k]``, where ``rank_n`` is the position of ``labels[n]`` in
  ``argsort(-probs[n], kind="stable")``. Ties are therefore broken deterministically in favour of
  the lower class index (the same choice ``np.argmax`` makes, so top-1 accuracy equals the accuracy
  of ``argmax`` predictions). ``probs`` may be any scores (probabilities or logits), shape (N, C);
  ``ks`` defaults to ``1..C``. Returns float64 of shape ``(len(ks),)``; with N = 0 it is all zeros.
  """
  scores = np.asarray(probs, dtype=np.float64)
  if scores.ndim != 2:
    raise ValueError(f"probs must have shape (N, C), got {scores.shape}")
  n, c = scores.shape
  labels = _check_labels(labels, c, "labels")
  if labels.shape[0] != n:
    raise ValueError(f"labels has {labels.shape[0]} entries but probs has {n} rows")
  ks = list(range(1, c + 1)) if ks is None else [int(k) for k in ks]
  for k in ks:
    if not 1 <= k <= c:
      raise ValueError(f"k must be in [1, {c}], got {k}")
  if n == 0:
    return np.zeros(len(ks), dtype=np.float64)
  order = np.argsort(-scores, axis=1, kind="stable")
  rank = np.argmax(order == labels[:, None], axis=1)  # position of the true label, 0-based
  hits_at = np.bincount(rank, minlength=c).cumsum()  # hits_at[k-1] = #rows with rank < k
  return np.array([hits_at[k - 1] / n for k in ks], dtype=np.float64)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
  """Confusion matrix ``cm[i, j] = #{n : labels[n] = i, preds[n] = j}``, int64 of shape (C, C)."""
  labels = _check_labels(labels, num_classes, "labels")
  preds = _check_labels(preds, num_classes, "preds")
  if labels.shape != preds.shape:
    raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in length")
  flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def normalize_rows(cm: np.ndarray) -> np.ndarray:
  """Class-normalised confusion matrix ``cm[i, j] / sum_j cm[i, j]``; an empty row gives zeros."""
  cm = np.asarray(cm, dtype=np.float64)
  if cm.ndim != 2:
    raise ValueError(f"cm must be 2-D, got shape {cm.shape}")
  return safe_divide(cm, cm.sum(axis=1, keepdims=True))


class ClassStats(NamedTuple):
  """Per-class one-vs-rest statistics of a confusion matrix and their macro averages.

  Per-class fields have shape (C,); ``mean_*`` are unweighted means over all C classes (empty
  classes included, contributing their 0/0 := 0 values). ``accuracy = trace(cm) / N`` is the
  correct-classification rate and ``error_rate = 1 - accuracy`` the sample error rate.
  ``support[i]`` is the number of samples of true class i (row sum).
  """

  recall: np.ndarray
  precision: np.ndarray
  f1: np.ndarray
  rate: np.ndarray
  mean_recall: float
  mean_precision: float
  mean_f1: float
  mean_rate: float
  accuracy: float
  error_rate: float
  support: np.ndarray


def class_stats(cm: np.ndarray) -> ClassStats:
  """One-vs-rest statistics from a confusion matrix (rows = true, cols = predicted).

  For class i: ``TP = cm[i, i]``, ``FP = sum_k cm[k, i] - TP``, ``FN = sum_k cm[i, k] - TP``,
  ``TN = N - TP - FP - FN``. Then ``recall = TP / (TP + FN)``, ``precision = TP / (TP + FP)``,
  ``F1 = 2 P R / (P + R)`` and classification rate ``= (TP + TN) / N``. Any 0/0 is defined as 0
  (e.g. precision of a class that is never predicted, recall of a class with no samples).
  ``accuracy = trace(cm) / N`` (0 when N = 0) and ``error_rate = 1 - accuracy``.
  """
  cm = np.asarray(cm)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f"cm must be square, got shape {cm.shape}")
  cm = cm.astype(np.float64)
  n = cm.sum()
  tp = np.diag(cm)
  fp = cm.sum(axis=0) - tp
  fn = cm.sum(axis=1) - tp
  tn = n - tp - fp - fn
  recall = safe_divide(tp, tp + fn)
  precision = safe_divide(tp, tp + fp)
  f1 = safe_divide(2.0 * precision * recall, precision + recall)
  rate = safe_divide(tp + tn, np.full_like(tp, n))
  accuracy = float(safe_divide(tp.sum(), n))

  def mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0

  return ClassStats(
    recall=recall,
    precision=precision,
    f1=f1,
    rate=rate,
    mean_recall=mean(recall),
    mean_precision=mean(precision),
    mean_f1=mean(f1),
    mean_rate=mean(rate),
    accuracy=accuracy,
    error_rate=1.0 - accuracy,
    support=(tp + fn).astype(np.int64),
  )
