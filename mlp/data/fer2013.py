"""FER2013: 35,887 48x48 grey faces in 7 emotions, from the official ``fer2013.csv``.

Expected layout under the data directory::

  fer2013/fer2013.csv   (header ``emotion,pixels,Usage``; pixels: 2304 space-separated 0..255)

There is no public download URL (Kaggle needs a login), so a missing file is an error that says
where to get it. The parsed uint8 arrays are cached as an .npz keyed by the CSV's fingerprint.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mlp.data import common
from mlp.data.common import DataError, ImageData

DIRNAME = "fer2013"
FILENAME = "fer2013.csv"
KAGGLE_URL = (
  "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-"
  "challenge/data"
)
CLASS_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
USAGES = ("Training", "PublicTest", "PrivateTest")
HEADER = "emotion,pixels,Usage"
SIDE = 48


def find_csv(data_dir: str | None = None) -> Path:
  """The ``fer2013.csv`` path: argument > $MLP_DATA_DIR > cache folder (no download exists)."""
  base, origin = common.configured_data_dir(data_dir)
  if base is None:
    base, origin = common.cache_dir(), f"cache folder, {common.CACHE_DIR_ENV}"
  if (base / FILENAME).is_file() and not (base / DIRNAME).is_dir():
    return base / FILENAME
  path = base / DIRNAME / FILENAME
  if not path.is_file():
    raise common.missing_error(
      "FER2013",
      path,
      origin,
      f"It cannot be downloaded automatically: get fer2013.csv (login needed) from {KAGGLE_URL} "
      f"(inside fer2013.tar.gz) and put it at DIR/{DIRNAME}/{FILENAME}.",
    )
  return path


def parse_csv(path: Path) -> dict[str, np.ndarray]:
  """The CSV -> {"x": uint8 (n, 48, 48), "y": int32 (n,), "usage": int8 index into USAGES}."""
  try:
    text = path.read_text(encoding="ascii")
  except UnicodeDecodeError as e:
    raise DataError(f"{path} is not a plain ASCII CSV ({e}); replace it.") from e
  lines = text.splitlines()
  del text
  if not lines or not "".join(lines).strip():
    raise DataError(f"{path} is empty; replace it with the official fer2013.csv.")
  if lines[0].strip().replace(" ", "") != HEADER:
    raise DataError(f"{path} line 1: header {lines[0][:60]!r}, expected {HEADER!r}.")
  n_pix = SIDE * SIDE
  x = np.empty((len(lines) - 1, n_pix), np.uint8)
  y = np.empty(len(lines) - 1, np.int32)
  usage = np.empty(len(lines) - 1, np.int8)
  usage_index = {u: i for i, u in enumerate(USAGES)}
  n = 0
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    for i, line in enumerate(lines[1:], start=2):
      if not line.strip():
        continue
      parts = line.split(",")
      if len(parts) != 3:
        raise DataError(f"{path} line {i}: {len(parts)} fields, expected 3 ({HEADER}).")
      try:
        e = int(parts[0])
      except ValueError:
        raise DataError(f"{path} line {i}: emotion {parts[0]!r} is not an integer.") from None
      if not 0 <= e < len(CLASS_NAMES):
        raise DataError(f"{path} line {i}: emotion {e} out of range 0..{len(CLASS_NAMES) - 1}.")
      u = usage_index.get(parts[2].strip())
      if u is None:
        raise DataError(f"{path} line {i}: Usage {parts[2]!r}, expected one of {USAGES}.")
      try:
        px = np.fromstring(parts[1], dtype=np.int32, sep=" ")
      except ValueError:
        px = None
      if px is None or px.size != n_pix:
        tokens = parts[1].split()
        if len(tokens) != n_pix:
          raise DataError(f"{path} line {i}: {len(tokens)} pixels, expected {n_pix}.")
        bad = next((t for t in tokens if not t.isdigit()), "?")
        raise DataError(f"{path} line {i}: pixel {bad!r} is not an integer 0..255.")
      if px.min() < 0 or px.max() > 255:
        v = int(px[(px < 0) | (px > 255)][0])
        raise DataError(f"{path} line {i}: pixel value {v} out of range 0..255.")
      x[n], y[n], usage[n] = px, e, u
      n += 1
  if n == 0:
    raise DataError(f"{path} has a header but no rows; replace it with the official fer2013.csv.")
  return {"x": x[:n].reshape(n, SIDE, SIDE), "y": y[:n], "usage": usage[:n]}


def load_arrays(path: Path) -> dict[str, np.ndarray]:
  """Parsed arrays of the CSV, from the .npz cache while the file is unchanged."""
  key = common.fingerprint([path])
  cached = common.load_parsed("fer2013", path, key)
  if cached is not None:
    return cached
  arrays = parse_csv(path)
  common.save_parsed("fer2013", path, key, arrays)
  return arrays


def load(data_dir: str | None = None, *, val_fraction: float = 0.1, seed: int = 0) -> ImageData:
  """Load FER2013: val is a stratified carve-out of Training; tests are PublicTest, PrivateTest."""
  path = find_csv(data_dir)
  a = load_arrays(path)
  x, y, usage = a["x"][..., None], a["y"], a["usage"]
  train = np.flatnonzero(usage == 0)
  if train.size == 0:
    raise DataError(f"{path} has no Training rows; replace it with the official fer2013.csv.")
  tr, va = common.stratified_split(y[train], val_fraction, seed)
  tests = {}
  for k, name in enumerate(USAGES[1:], start=1):
    m = usage == k
    tests[name] = (x[m], y[m])
  return ImageData(
    x_train=x[train[tr]],
    y_train=y[train[tr]],
    x_val=x[train[va]],
    y_val=y[train[va]],
    tests=tests,
    class_names=CLASS_NAMES,
    name="fer2013",
  )
