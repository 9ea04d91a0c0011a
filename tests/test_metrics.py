"""Tests for mlp.metrics: hand-worked examples, edge cases and brute-force consistency."""

import numpy as np
import pytest

from mlp.metrics import (
  ClassStats,
  class_stats,
  confusion_matrix,
  normalize_rows,
  topk_accuracy,
)

# Hand example (rows = true, cols = predicted), N = 16, trace = 12.
#   class 0: TP=5 FN=1 FP=2 TN=8  -> R=5/6 P=5/7 F1=2TP/(2TP+FP+FN)=10/13 rate=13/16
#   class 1: TP=3 FN=3 FP=1 TN=9  -> R=1/2 P=3/4 F1=6/10                rate=12/16
#   class 2: TP=4 FN=0 FP=1 TN=11 -> R=1   P=4/5 F1=8/9                 rate=15/16
CM = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
RECALL = np.array([5 / 6, 1 / 2, 1.0])
PRECISION = np.array([5 / 7, 3 / 4, 4 / 5])
F1 = np.array([10 / 13, 6 / 10, 8 / 9])
RATE = np.array([13 / 16, 12 / 16, 15 / 16])


def cm_to_labels(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  labels, preds = [], []
  for i in range(cm.shape[0]):
    for j in range(cm.shape[1]):
      labels += [i] * int(cm[i, j])
      preds += [j] * int(cm[i, j])
  return np.array(labels, dtype=np.int64), np.array(preds, dtype=np.int64)


def test_confusion_matrix_hand_example():
  labels, preds = cm_to_labels(CM)
  perm = np.random.default_rng(0).permutation(len(labels))
  cm = confusion_matrix(labels[perm], preds[perm], 3)
  assert cm.dtype == np.int64
  np.testing.assert_array_equal(cm, CM)


def test_confusion_matrix_small_explicit():
  cm = confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 1, 1], 4)
  expected = np.zeros((4, 4), dtype=np.int64)
  expected[0, 0] = expected[1, 2] = expected[2, 2] = expected[2, 1] = expected[1, 1] = 1
  np.testing.assert_array_equal(cm, expected)


def test_confusion_matrix_rejects_out_of_range():
  with pytest.raises(ValueError):
    confusion_matrix([0, 3], [0, 1], 3)
  with pytest.raises(ValueError):
    confusion_matrix([0, 1], [0, -1], 3)
  with pytest.raises(ValueError):
    confusion_matrix([0, 1], [0], 3)


def test_class_stats_hand_example():
  s = class_stats(CM)
  assert isinstance(s, ClassStats)
  np.testing.assert_allclose(s.recall, RECALL)
  np.testing.assert_allclose(s.precision, PRECISION)
  np.testing.assert_allclose(s.f1, F1)
  np.testing.assert_allclose(s.rate, RATE)
  np.testing.assert_allclose(s.mean_recall, 7 / 9)
  np.testing.assert_allclose(s.mean_precision, (5 / 7 + 3 / 4 + 4 / 5) / 3)
  np.testing.assert_allclose(s.mean_f1, (10 / 13 + 6 / 10 + 8 / 9) / 3)
  np.testing.assert_allclose(s.mean_rate, 40 / 48)
  assert s.accuracy == pytest.approx(12 / 16)
  assert s.error_rate == pytest.approx(4 / 16)
  np.testing.assert_array_equal(s.support, [6, 6, 4])


def test_class_stats_edge_cases():
  # Class 0: no samples (empty row) but predicted once -> R = 0/0 := 0, P = 0/1 = 0.
  # Class 2: 3 samples, never predicted (empty column) -> R = 0/3 = 0, P = 0/0 := 0, F1 = 0.
  # Class 1: TP=2 FN=1 FP=3 -> R=2/3, P=2/5, F1=4/8. N=6, TN = (5, 0, 3).
  cm = np.array([[0, 0, 0], [1, 2, 0], [0, 3, 0]])
  s = class_stats(cm)
  np.testing.assert_allclose(s.recall, [0.0, 2 / 3, 0.0])
  np.testing.assert_allclose(s.precision, [0.0, 2 / 5, 0.0])
  np.testing.assert_allclose(s.f1, [0.0, 0.5, 0.0])
  np.testing.assert_allclose(s.rate, [5 / 6, 2 / 6, 3 / 6])
  assert s.accuracy == pytest.approx(1 / 3)
  assert s.error_rate == pytest.approx(2 / 3)
  for field in (s.recall, s.precision, s.f1, s.rate):
    assert np.all(np.isfinite(field))
  np.testing.assert_allclose(normalize_rows(cm), [[0, 0, 0], [1 / 3, 2 / 3, 0], [0, 1, 0]])


def test_class_stats_empty_matrix_is_finite():
  s = class_stats(np.zeros((3, 3), dtype=np.int64))
  assert s.accuracy == 0.0 and s.error_rate == 1.0
  np.testing.assert_array_equal(s.recall, 0.0)
  np.testing.assert_array_equal(s.rate, 0.0)


def test_normalize_rows_hand_example():
  expected = np.array([[5 / 6, 1 / 6, 0], [2 / 6, 3 / 6, 1 / 6], [0, 0, 1]])
  out = normalize_rows(CM)
  assert out.dtype == np.float64
  np.testing.assert_allclose(out, expected)
  np.testing.assert_allclose(out.sum(axis=1), 1.0)


# Top-k hand example. Row 3 ties classes 0 and 1: the stable rule ranks class 0 first.
PROBS = np.array(
  [
    [0.5, 0.3, 0.2],  # label 0 -> rank 0
    [0.1, 0.6, 0.3],  # label 2 -> rank 1
    [0.2, 0.3, 0.5],  # label 0 -> rank 2
    [0.4, 0.4, 0.2],  # label 1 -> rank 1 (tie with class 0, which has the lower index)
  ]
)
LABELS = np.array([0, 2, 0, 1])


def test_topk_hand_example():
  np.testing.assert_allclose(topk_accuracy(PROBS, LABELS), [1 / 4, 3 / 4, 1.0])
  np.testing.assert_allclose(topk_accuracy(PROBS, LABELS, ks=[3, 1]), [1.0, 1 / 4])


def test_topk_tie_breaks_to_lower_index():
  probs = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
  np.testing.assert_allclose(topk_accuracy(probs, [0, 1], ks=[1, 2]), [0.5, 1.0])
  # Top-1 agrees with argmax predictions.
  assert topk_accuracy(PROBS, LABELS, ks=[1])[0] == np.mean(PROBS.argmax(1) == LABELS)


def test_topk_k_equals_c_is_one_and_validates():
  rng = np.random.default_rng(1)
  probs = rng.random((50, 7))
  labels = rng.integers(0, 7, 50)
  assert topk_accuracy(probs, labels, ks=[7])[0] == 1.0
  with pytest.raises(ValueError):
    topk_accuracy(probs, labels, ks=[0])
  with pytest.raises(ValueError):
    topk_accuracy(probs, labels, ks=[8])
  np.testing.assert_array_equal(topk_accuracy(np.zeros((0, 3)), np.zeros(0, int)), [0, 0, 0])


def test_accepts_jax_arrays():
  import jax.numpy as jnp

  np.testing.assert_allclose(
    topk_accuracy(jnp.asarray(PROBS, dtype=jnp.float32), jnp.asarray(LABELS)), [1 / 4, 3 / 4, 1.0]
  )
  labels, preds = cm_to_labels(CM)
  np.testing.assert_array_equal(confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), 3), CM)
  np.testing.assert_allclose(class_stats(jnp.asarray(CM)).recall, RECALL)


@pytest.mark.parametrize("seed", range(5))
def test_brute_force_consistency(seed):
  rng = np.random.default_rng(seed)
  n, c = int(rng.integers(1, 200)), int(rng.integers(2, 9))
  # Integer-valued scores create many ties.
  probs = rng.integers(0, 4, size=(n, c)).astype(np.float32)
  labels = rng.integers(0, c, n)
  preds = probs.argmax(axis=1)

  cm_ref = np.zeros((c, c), dtype=np.int64)
  for t, p in zip(labels, preds, strict=True):
    cm_ref[t, p] += 1
  cm = confusion_matrix(labels, preds, c)
  np.testing.assert_array_equal(cm, cm_ref)

  # Rank = #classes scoring strictly higher + #equal-scoring classes with a lower index.
  acc_ref = []
  for k in range(1, c + 1):
    hits = 0
    for row, y in zip(probs, labels, strict=True):
      rank = sum(row[j] > row[y] or (row[j] == row[y] and j < y) for j in range(c))
      hits += rank < k
    acc_ref.append(hits / n)
  np.testing.assert_allclose(topk_accuracy(probs, labels), acc_ref)

  s = class_stats(cm)
  for i in range(c):
    tp = np.sum((labels == i) & (preds == i))
    fp = np.sum((labels != i) & (preds == i))
    fn = np.sum((labels == i) & (preds != i))
    tn = np.sum((labels != i) & (preds != i))
    r = tp / (tp + fn) if tp + fn else 0.0
    p = tp / (tp + fp) if tp + fp else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    assert s.recall[i] == pytest.approx(r)
    assert s.precision[i] == pytest.approx(p)
    assert s.f1[i] == pytest.approx(f)
    assert s.rate[i] == pytest.approx((tp + tn) / n)
    row = cm[i].sum()
    np.testing.assert_allclose(normalize_rows(cm)[i], cm[i] / row if row else 0.0)
  assert s.accuracy == pytest.approx(np.mean(labels == preds))
  assert s.error_rate == pytest.approx(np.mean(labels != preds))
  assert s.mean_f1 == pytest.approx(np.mean(s.f1))
