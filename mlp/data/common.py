"""Shared pieces of the data loaders: errors, directory resolution, downloads, caches, splits.

Where a data set is looked for, in order:

1. the explicit ``data_dir`` argument (the ``--data_dir`` flag);
2. the environment variable ``MLP_DATA_DIR``;
3. the cache folder (``MLP_CACHE_DIR``, default ``~/.cache/mlp``);
4. a download from the official source into the cache folder (where one exists).

An explicit directory (1 or 2) is authoritative: if the data set is not there, loading stops with a
``DataError`` rather than silently using another copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from mlp import fileio

DATA_DIR_ENV = "MLP_DATA_DIR"
CACHE_DIR_ENV = "MLP_CACHE_DIR"
POINTER_HINT = (
  f"pass --data_dir DIR (or set {DATA_DIR_ENV}=DIR) where DIR holds the data set in its official "
  "layout"
)

# The opener used for downloads; tests replace it so that they never touch the network.
_urlopen: Callable = urllib.request.urlopen


class DataError(Exception):
  """A data set is missing or malformed; the message names the file and what to do."""


@dataclasses.dataclass(frozen=True)
class ImageData:
  """An image classification data set as uint8 arrays (n, H, W, C) with int32 labels."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  tests: dict[str, tuple[np.ndarray, np.ndarray]]
  class_names: tuple[str, ...]
  name: str


def cache_dir() -> Path:
  """The cache folder: ``$MLP_CACHE_DIR`` or ``~/.cache/mlp``."""
  env = os.environ.get(CACHE_DIR_ENV)
  return Path(env).expanduser() if env else Path.home() / ".cache" / "mlp"


def configured_data_dir(data_dir: str | os.PathLike | None) -> tuple[Path | None, str]:
  """The explicitly configured data directory and where it came from ("argument"/env/None)."""
  if data_dir is not None and str(data_dir) != "":
    return Path(data_dir).expanduser(), "--data_dir argument"
  env = os.environ.get(DATA_DIR_ENV)
  if env:
    return Path(env).expanduser(), f"environment variable {DATA_DIR_ENV}"
  return None, ""


def missing_error(what: str, path: Path, origin: str, extra: str = "") -> DataError:
  """A DataError for a data set (or one of its files) that is not where it was looked for."""
  searched = f"searched {path.parent}" + (f" (from the {origin})" if origin else "")
  msg = f"{what}: {path} not found; {searched}. To fix it, {POINTER_HINT}."
  if extra:
    msg += " " + extra
  return DataError(msg)


# --------------------------------------------------------------------------------------------------
# Checksums and fingerprints


def git_blob_sha1(path: Path) -> str:
  """The git blob id of a file: sha1(b"blob <size>\\0" + content)."""
  h = hashlib.sha1()
  h.update(b"blob %d\0" % path.stat().st_size)
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def verify_checksum(path: Path, expected: str, algorithm: str) -> None:
  """Raise DataError naming ``path`` if its checksum (hashlib name or "git-blob") differs."""
  got = git_blob_sha1(path) if algorithm == "git-blob" else fileio.file_digest(path, algorithm)
  if got != expected.lower():
    raise DataError(
      f"checksum mismatch for {path}: {algorithm} is {got}, expected {expected}. The file is "
      "corrupt or not the official one; delete it and download it again."
    )


STRICT_ENV = "MLP_STRICT_DATA"  # "1": a file that differs from the official one is an error


def differing_files(root: Path, expected: Mapping[str, tuple[str, str]]) -> list[str]:
  """The files (relative to ``root``) present but not matching their official checksum;
  ``expected`` maps a relative path to (algorithm: hashlib name or "git-blob", hex digest)."""
  out = []
  for rel, (algorithm, digest) in expected.items():
    path = Path(root) / rel
    if path.is_file():
      got = git_blob_sha1(path) if algorithm == "git-blob" else fileio.file_digest(path, algorithm)
      if got != digest.lower():
        out.append(rel)
  return out


def report_differing(name: str, root: Path, files: Iterable[str]) -> None:
  """Warn (or, with ``MLP_STRICT_DATA=1`` / ``--strict_data``, raise DataError) about files that
  differ from the official ones: a truncated or damaged copy would train on wrong values."""
  files = [str(f) for f in files]
  if not files:
    return
  msg = (
    f"{name} in {root}: {', '.join(files)} differ{'s' if len(files) == 1 else ''} from the "
    "official file (sha256). A truncated or damaged copy trains on wrong values: delete the "
    "folder and download it again. If you changed it on purpose, this is only a warning "
    "(--strict_data or MLP_STRICT_DATA=1 makes it an error)."
  )
  if os.environ.get(STRICT_ENV, "") == "1":
    raise DataError(msg)
  print(f"warning: {msg}", file=sys.stderr)


def fingerprint(paths: Iterable[Path]) -> str:
  """A hex key for a set of source files from their absolute path, size and mtime_ns."""
  h = hashlib.sha256()
  for p in paths:
    p = Path(p).absolute()
    if p.exists():
      st = p.stat()
      h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
      h.update(f"{p}\0absent\n".encode())
  return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Parsed-array cache (.npz, never pickle)


def _parsed_cache_path(name: str, root: Path) -> Path:
  root_key = hashlib.sha256(str(Path(root).absolute()).encode()).hexdigest()[:16]
  return cache_dir() / "parsed" / f"{name}-{root_key}.npz"


def load_parsed(name: str, root: Path, key: str) -> dict[str, np.ndarray] | None:
  """Arrays cached for data set ``name`` at ``root`` if their fingerprint ``key`` still matches."""
  path = _parsed_cache_path(name, root)
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      if "_fingerprint" not in z.files or str(z["_fingerprint"]) != key:
        return None
      return {k: z[k] for k in z.files if k != "_fingerprint"}
  except Exception as e:  # a broken cache file is rebuilt, never fatal
    warnings.warn(f"ignoring unreadable cache {path}: {e}", stacklevel=2)
    return None


def save_parsed(name: str, root: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
  """Store parsed arrays (atomically) for the next load; failures only warn."""
  path = _parsed_cache_path(name, root)
  tmp = path.with_name(path.name + f".{os.getpid()}.part")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
      np.savez(f, _fingerprint=np.array(key), **arrays)
    os.replace(tmp, path)
  except OSError as e:
    warnings.warn(f"could not write cache {path}: {e}", stacklevel=2)
    tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Downloads


def _human(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1024 or unit == "GB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return f"{n:.1f} GB"


def download(
  url: str,
  dest: Path,
  *,
  checksum: tuple[str, str] | None = None,
  chunk_size: int = 1 << 16,
) -> Path:
  """Download ``url`` to ``dest`` via ``dest.part``, with a progress bar on stderr.

  ``checksum`` is ``(algorithm, hex)``; on mismatch the partial file is deleted and DataError
  raised. The final file appears only when complete and verified.
  """
  dest = Path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  part = dest.with_name(dest.name + ".part")
  try:
    with _urlopen(url, timeout=60) as resp, open(part, "wb") as out:
      headers = getattr(resp, "headers", None)
      total_s = headers.get("Content-Length") if headers is not None else None
      total = int(total_s) if total_s and str(total_s).isdigit() else None
      done, last = 0, 0.0
      while True:
        chunk = resp.read(chunk_size)
        if not chunk:
          break
        out.write(chunk)
        done += len(chunk)
        now = time.monotonic()
        if now - last > 0.2:
          _progress(dest.name, done, total)
          last = now
      _progress(dest.name, done, total)
      sys.stderr.write("\n")
      sys.stderr.flush()
    if total is not None and done != total:
      raise DataError(
        f"download of {url} to {part} is incomplete ({done} of {total} bytes); try again."
      )
    if checksum is not None:
      verify_checksum(part, checksum[1], checksum[0])
  except DataError:
    part.unlink(missing_ok=True)
    raise
  except OSError as e:
    part.unlink(missing_ok=True)
    raise DataError(
      f"could not download {url} to {dest}: {e}. Download it by hand and {POINTER_HINT}."
    ) from e
  os.replace(part, dest)
  return dest


def _progress(name: str, done: int, total: int | None) -> None:
  if total:
    frac = min(done / total, 1.0)
    bar = "#" * int(frac * 30)
    line = f"\r{name}: [{bar:<30}] {_human(done)}/{_human(total)} {frac * 100:5.1f}%"
  else:
    line = f"\r{name}: {_human(done)}"
  sys.stderr.write(line)
  sys.stderr.flush()


# --------------------------------------------------------------------------------------------------
# Splits


def stratified_split(
  y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Sorted (train_idx, val_idx) with ``round(n_c * val_fraction)`` of each class c in val."""
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
  y = np.asarray(y)
  rng = np.random.default_rng(seed)
  val_parts = []
  for c in np.unique(y):
    idx = np.flatnonzero(y == c)
    k = int(round(len(idx) * val_fraction))
    if k:
      val_parts.append(rng.permutation(idx)[:k])
  val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
  mask = np.ones(len(y), bool)
  mask[val_idx] = False
  return np.flatnonzero(mask), val_idx.astype(np.int64)
