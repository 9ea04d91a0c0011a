"""CIFAR-10: 60,000 32x32 RGB images in 10 classes, from the official python batches.

Expected layout under the data directory::

  cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}

Each batch is a python pickle of a dict with b"data" (uint8 (N, 3072): the R, G and B planes of a
32x32 image), b"labels" and b"filenames". Pickle is the official distribution format of this data
set, so it is read here (and only here) with a restricted unpickler that admits numpy arrays only.
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from mlp.data import common
from mlp.data.common import DataError, ImageData

DIRNAME = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
FILES = (*TRAIN_BATCHES, "test_batch", "batches.meta")


def find_root(data_dir: str | None = None, *, download: bool = True) -> Path:
  """The ``cifar-10-batches-py`` dir: argument > $MLP_DATA_DIR > cache > download to cache."""
  base, origin = common.configured_data_dir(data_dir)
  if base is not None:
    root = base if (base / "batches.meta").is_file() and not (base / DIRNAME).is_dir() else None
    root = root or base / DIRNAME
    _require(root, origin)
    return root
  cache = common.cache_dir()
  root = cache / DIRNAME
  if (root / "batches.meta").is_file():
    _require(root, "cache folder")
    return root
  if not download:
    raise common.missing_error(
      "CIFAR-10",
      root / "batches.meta",
      f"cache folder; set {common.CACHE_DIR_ENV} to move it",
      "Or allow the download from the official source.",
    )
  download_to_cache(cache)
  return root


def _require(root: Path, origin: str) -> None:
  for name in FILES:
    if not (root / name).is_file():
      raise common.missing_error("CIFAR-10", root / name, origin)


def download_to_cache(cache: Path) -> Path:
  """Download the official tarball (md5-checked) and extract ``cifar-10-batches-py`` safely."""
  archive = common.download(
    URL, cache / "downloads" / "cifar-10-python.tar.gz", checksum=("md5", MD5)
  )
  staging = cache / ".cifar-staging"
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir(parents=True)
  try:
    try:
      with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
          parts = PurePosixPath(member.name).parts
          if not member.isfile() or not parts or parts[0] != DIRNAME or ".." in parts:
            continue  # skip links, directories and anything outside the data set folder
          if member.name.startswith("/"):
            continue
          dest = staging.joinpath(*parts)
          dest.parent.mkdir(parents=True, exist_ok=True)
          with tar.extractfile(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (tarfile.TarError, EOFError, OSError) as e:
      raise DataError(
        f"{archive} is not a valid .tar.gz ({e}); delete it and download again."
      ) from e
    for name in FILES:
      if not (staging / DIRNAME / name).is_file():
        raise DataError(f"the downloaded archive {archive} has no '{DIRNAME}/{name}'.")
    target = cache / DIRNAME
    if target.exists():
      shutil.rmtree(target)
    (staging / DIRNAME).rename(target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  archive.unlink(missing_ok=True)
  return cache / DIRNAME


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickler that can rebuild numpy arrays and nothing else (no arbitrary code)."""

  _ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
  }

  def find_class(self, module: str, name: str):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
    if module == "_codecs":
      import _codecs

      return _codecs.encode
    if module.startswith("numpy") and "multiarray" in module:
      mod = getattr(np, "_core", None) or np.core
      return getattr(mod.multiarray, name)
    return getattr(np, name)


def read_pickle(path: Path) -> dict:
  """Unpickle one official batch file (encoding="bytes"); DataError if it is not a dict."""
  data = path.read_bytes()
  if not data:
    raise DataError(f"{path} is empty; replace it with the official file.")
  try:
    obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
  except Exception as e:
    raise DataError(f"{path} is not a valid CIFAR-10 pickle ({e}); replace it.") from e
  if not isinstance(obj, dict):
    raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict; replace it.")
  return obj


def read_batch(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """One batch -> (uint8 (n, 32, 32, 3), int32 labels)."""
  d = read_pickle(path)
  if b"data" not in d or b"labels" not in d:
    raise DataError(f"{path} lacks b'data' or b'labels'; replace it with the official file.")
  x = np.asarray(d[b"data"])
  if x.ndim != 2 or x.shape[1] != 3072 or x.dtype != np.uint8:
    raise DataError(
      f"{path}: b'data' is {x.dtype} {x.shape}, expected uint8 (N, 3072); replace the file."
    )
  try:
    y = np.asarray(d[b"labels"], dtype=np.int64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise DataError(f"{path}: b'labels' are not integers ({e}); replace the file.") from e
  if len(y) != len(x):
    raise DataError(f"{path}: {len(y)} labels for {len(x)} images; replace the file.")
  bad = np.flatnonzero((y < 0) | (y >= num_classes))
  if bad.size:
    i = int(bad[0])
    raise DataError(
      f"{path}: label {int(y[i])} out of range 0..{num_classes - 1} at record {i}; replace the "
      "file."
    )
  return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), y.astype(np.int32)


def load(
  data_dir: str | None = None,
  *,
  val_fraction: float = 0.1,
  seed: int = 0,
  download: bool = True,
  limit_train: int | None = None,
) -> ImageData:
  """Load CIFAR-10 with a stratified validation carve-out from the 50,000 training images.

  ``limit_train`` keeps a seeded random subset of that many training images (after the carve-out).
  """
  root = find_root(data_dir, download=download)
  meta = read_pickle(root / "batches.meta")
  names = meta.get(b"label_names")
  if not isinstance(names, list) or not names:
    raise DataError(f"{root / 'batches.meta'} lacks b'label_names'; replace it.")
  class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
  parts = [read_batch(root / name, len(class_names)) for name in TRAIN_BATCHES]
  x = np.concatenate([p[0] for p in parts])
  y = np.concatenate([p[1] for p in parts])
  x_test, y_test = read_batch(root / "test_batch", len(class_names))
  train_idx, val_idx = common.stratified_split(y, val_fraction, seed)
  if limit_train is not None and limit_train < len(train_idx):
    rng = np.random.default_rng(seed + 1)
    train_idx = np.sort(rng.choice(train_idx, size=max(limit_train, 0), replace=False))
  return ImageData(
    x_train=x[train_idx],
    y_train=y[train_idx],
    x_val=x[val_idx],
    y_val=y[val_idx],
    tests={"test": (x_test, y_test)},
    class_names=class_names,
    name="cifar10",
  )
