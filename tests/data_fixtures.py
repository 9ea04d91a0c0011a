"""Writers of tiny synthetic data sets in the official on-disk layouts, for tests.

Each writer puts a learnable data set (class-dependent means plus noise) under ``root`` exactly as
the real one is laid out, so that ``load(data_dir=root)`` reads it like the real thing.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HAR_CLASSES = (
  "WALKING",
  "WALKING_UPSTAIRS",
  "WALKING_DOWNSTAIRS",
  "SITTING",
  "STANDING",
  "LAYING",
)
CIFAR_CLASSES = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)


def _har_split(
  d: Path, split: str, subjects: Sequence[int], rows: int, mu: np.ndarray, rng, files: Sequence[str]
) -> None:
  (d / split).mkdir(parents=True, exist_ok=True)
  ys, ss = [], []
  for s in subjects:
    y = rng.permutation(np.arange(rows) % len(HAR_CLASSES))
    ys.append(y)
    ss.append(np.full(rows, s))
  y = np.concatenate(ys) if ys else np.zeros(0, int)
  s = np.concatenate(ss) if ss else np.zeros(0, int)
  x = np.clip(mu[y] + 0.15 * rng.standard_normal((len(y), mu.shape[1])), -1, 1)
  if "X" in files:
    np.savetxt(d / split / f"X_{split}.txt", x, fmt="%16.7e", delimiter="")
  if "y" in files:
    np.savetxt(d / split / f"y_{split}.txt", y + 1, fmt="%d")
  if "subject" in files:
    np.savetxt(d / split / f"subject_{split}.txt", s, fmt="%d")


def write_fake_har(
  root: str | Path,
  subjects: Sequence[int] = (1, 3, 5, 6, 7, 25, 26, 27),
  rows_per_subject: int = 12,
  with_test: bool | str = False,
  test_subjects: Sequence[int] = (2, 4, 9),
  n_features: int = 561,
  seed: int = 0,
) -> Path:
  """Write ``root/UCI HAR Dataset`` (official layout); returns that folder.

  Every subject has ``rows_per_subject`` rows spread over the 6 classes; features are
  class-dependent means plus noise, so the classes are learnable. ``with_test``: False (train-only
  copy, like the local one), True (full official test/), or "partial" (test/ without X_test.txt).
  """
  d = Path(root) / "UCI HAR Dataset"
  d.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  mu = rng.uniform(-0.6, 0.6, size=(len(HAR_CLASSES), n_features))
  feats = "".join(f"{i + 1} feature-{i + 1}()-X\n" for i in range(n_features))
  (d / "features.txt").write_text(feats)
  (d / "activity_labels.txt").write_text(
    "".join(f"{i + 1} {n}\n" for i, n in enumerate(HAR_CLASSES))
  )
  _har_split(d, "train", subjects, rows_per_subject, mu, rng, ("X", "y", "subject"))
  if with_test == "partial":
    _har_split(d, "test", test_subjects, rows_per_subject, mu, rng, ("y", "subject"))
  elif with_test:
    _har_split(d, "test", test_subjects, rows_per_subject, mu, rng, ("X", "y", "subject"))
  return d


def _cifar_images(labels: np.ndarray, rng) -> np.ndarray:
  """(n, 3072) uint8 R,G,B planes with a class-dependent colour."""
  c = np.arange(10)[:, None]
  base = ((c * np.array([23, 71, 131])) % 200 + 28)[labels]
  img = base[:, :, None] + rng.integers(-20, 21, size=(len(labels), 3, 1024))
  return np.clip(img, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def write_fake_cifar(
  root: str | Path, n_per_class: int = 5, n_test_per_class: int = 2, seed: int = 0
) -> Path:
  """Write ``root/cifar-10-batches-py`` (5 train batches, test batch, meta; pickle protocol 2)."""
  d = Path(root) / "cifar-10-batches-py"
  d.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  y = rng.permutation(np.repeat(np.arange(10), n_per_class))
  x = _cifar_images(y, rng)
  for b, idx in enumerate(np.array_split(np.arange(len(y)), 5)):
    _dump(
      d / f"data_batch_{b + 1}",
      {
        b"batch_label": f"training batch {b + 1} of 5".encode(),
        b"labels": [int(v) for v in y[idx]],
        b"data": x[idx],
        b"filenames": [f"img_{i}.png".encode() for i in idx],
      },
    )
  yt = np.repeat(np.arange(10), n_test_per_class)
  _dump(
    d / "test_batch",
    {
      b"batch_label": b"testing batch 1 of 1",
      b"labels": [int(v) for v in yt],
      b"data": _cifar_images(yt, rng),
      b"filenames": [f"test_{i}.png".encode() for i in range(len(yt))],
    },
  )
  _dump(
    d / "batches.meta",
    {
      b"label_names": [c.encode() for c in CIFAR_CLASSES],
      b"num_cases_per_batch": len(y) // 5,
      b"num_vis": 3072,
    },
  )
  return d


def _dump(path: Path, obj: dict) -> None:
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=2)


def write_fake_fer(root: str | Path, n: int = 70, seed: int = 0) -> Path:
  """Write ``root/fer2013/fer2013.csv``: n rows, emotions cycling 0..6, 80/10/10 usage split."""
  d = Path(root) / "fer2013"
  d.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  lines = ["emotion,pixels,Usage"]
  for i in range(n):
    e = i % 7
    px = np.clip(30 * e + 20 + rng.integers(-15, 16, size=2304), 0, 255)
    k = (i // 7) % 10  # occurrence of this emotion: 8 of 10 Training, 1 PublicTest, 1 PrivateTest
    usage = {7: "PublicTest", 8: "PrivateTest"}.get(k, "Training")
    lines.append(f"{e},{' '.join(map(str, px))},{usage}")
  path = d / "fer2013.csv"
  path.write_text("\n".join(lines) + "\n")
  return path


def one_run_har_config():
  """configs/har.py:quick cut to one run (seed 0) in this process, validated on 2 subjects."""
  from configs import har

  cfg = har.get_config("quick")
  cfg.workers = 1
  cfg.grid = {}
  cfg.extra_runs = {}
  cfg.report.compare_with_best = ""
  cfg.report.figure_groups = ()
  cfg.data.val_subjects = 2
  return cfg
