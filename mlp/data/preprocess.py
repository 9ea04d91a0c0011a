"""Turning uint8 images into flat float32 model inputs, with statistics fitted on training data.

Kinds (``x`` is uint8 (n, H, W, C), or (n, D) treated as one channel):

- ``"raw"``: ``x`` as float, unchanged (0..255). No statistics.
- ``"scale"``: ``x / 255``. No statistics.
- ``"center"``: ``x / 255 - mean``, ``mean`` per pixel and channel over the training set.
- ``"standardize"``: ``(x / 255 - mean) / std``, ``mean`` and ``std`` per channel.
- ``"per_image"``: each image to zero mean and unit std over its own values (contrast and
  brightness normalisation), then ``- mean``, ``mean`` per pixel and channel over the training
  set of such images.

``fit`` returns a dict of plain numpy arrays (``kind`` included as a 0-d string array) so that it
can be saved in an .npz next to the model and loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import numpy as np

KINDS = ("raw", "scale", "center", "standardize", "per_image")
_CHUNK = 4096


def _check(x: np.ndarray, kind: str) -> np.ndarray:
  if kind not in KINDS:
    raise ValueError(f"unknown preprocessing kind {kind!r}; expected one of {KINDS}")
  x = np.asarray(x)
  if x.ndim not in (2, 4):
    raise ValueError(f"expected images (n, H, W, C) or rows (n, D), got shape {x.shape}")
  return x


def _channels(x: np.ndarray) -> int:
  return x.shape[-1] if x.ndim == 4 else 1


def _per_image(chunk: np.ndarray) -> np.ndarray:
  """Rows (float, one image each) to zero mean and unit std; constant images become zeros."""
  chunk = chunk - chunk.mean(axis=1, keepdims=True)
  std = np.sqrt(np.mean(chunk * chunk, axis=1, keepdims=True))
  return chunk / np.maximum(std, 1e-6)


def fit(x_train: np.ndarray, kind: str) -> dict[str, np.ndarray]:
  """Statistics of ``kind`` over ``x_train`` (uint8), as plain arrays."""
  x = _check(x_train, kind)
  stats: dict[str, np.ndarray] = {"kind": np.array(kind)}
  if kind in ("raw", "scale"):
    return stats
  n = len(x)
  if n == 0:
    raise ValueError("cannot fit preprocessing statistics on an empty training set")
  flat = x.reshape(n, -1)
  total = np.zeros(flat.shape[1], np.float64)
  total_sq = np.zeros(flat.shape[1], np.float64)  # only standardize needs it
  for i in range(0, n, _CHUNK):
    chunk = flat[i : i + _CHUNK].astype(np.float64) / 255.0
    if kind == "per_image":
      chunk = _per_image(chunk)
    total += chunk.sum(0)
    if kind == "standardize":
      total_sq += (chunk * chunk).sum(0)
  if kind in ("center", "per_image"):
    stats["mean"] = (total / n).astype(np.float32)
    return stats
  c = _channels(x)
  per_c = total.reshape(-1, c).sum(0)
  per_c_sq = total_sq.reshape(-1, c).sum(0)
  count = n * flat.shape[1] / c
  mean = per_c / count
  var = np.maximum(per_c_sq / count - mean * mean, 0.0)
  stats["mean"] = mean.astype(np.float32)
  stats["std"] = np.sqrt(np.maximum(var, 1e-12)).astype(np.float32)
  return stats


def apply(x: np.ndarray, stats: dict[str, np.ndarray], kind: str) -> np.ndarray:
  """``x`` (uint8) -> float32 (n, H*W*C) preprocessed with ``stats`` from ``fit``."""
  x = _check(x, kind)
  if "kind" in stats and str(stats["kind"]) != kind:
    raise ValueError(f"statistics were fitted for {str(stats['kind'])!r}, not {kind!r}")
  n = len(x)
  flat = x.reshape(n, -1)
  out = np.empty(flat.shape, np.float32)
  c = _channels(x)
  if kind in ("center", "per_image"):
    offset = np.asarray(stats["mean"], np.float32).reshape(-1)
    scale = np.ones_like(offset)
  elif kind == "standardize":
    reps = flat.shape[1] // c
    offset = np.tile(np.asarray(stats["mean"], np.float32).reshape(-1), reps)
    scale = np.tile(1.0 / np.asarray(stats["std"], np.float32).reshape(-1), reps)
  else:
    offset = np.zeros(flat.shape[1], np.float32)
    scale = np.ones(flat.shape[1], np.float32)
  if offset.shape[0] != flat.shape[1]:
    raise ValueError(
      f"statistics are for {offset.shape[0]} inputs, got images with {flat.shape[1]} values"
    )
  divisor = np.float32(1.0 if kind == "raw" else 255.0)
  for i in range(0, n, _CHUNK):
    chunk = flat[i : i + _CHUNK].astype(np.float32) / divisor
    if kind == "per_image":
      chunk = _per_image(chunk)
    out[i : i + _CHUNK] = (chunk - offset) * scale
  return out
