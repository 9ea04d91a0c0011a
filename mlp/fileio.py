"""Generic file I/O: atomic writes, conversion to JSON types, file digests."""

import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def to_jsonable(obj: Any, where: str = "value") -> Any:
  """Converts `obj` to plain JSON types (tuples -> lists, numpy -> Python, ConfigDict -> dict)."""
  if obj is None or isinstance(obj, bool | int | float | str):
    return obj
  if isinstance(obj, np.floating) and obj.dtype.itemsize < 8:
    return float(str(obj))  # np.float32(0.1) -> 0.1, not 0.10000000149011612
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    if obj.dtype.hasobject:
      raise TypeError(f"{where}: object arrays cannot be stored as JSON")
    return obj.tolist()
  if hasattr(obj, "to_dict") and callable(obj.to_dict):  # ml_collections.ConfigDict
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    out = {}
    for k, v in obj.items():
      if isinstance(k, np.generic):
        k = k.item()
      if not isinstance(k, str | int | float | bool) and k is not None:
        raise TypeError(f"{where}: key {k!r} cannot be a JSON object key")
      out[str(k) if not isinstance(k, str) else k] = to_jsonable(v, f"{where}[{k!r}]")
    return out
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, Sequence | set | frozenset) and not isinstance(obj, bytes | bytearray):
    items = sorted(obj) if isinstance(obj, set | frozenset) else obj
    return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
  if hasattr(obj, "__array__"):  # e.g. jax arrays
    return to_jsonable(np.asarray(obj), where)
  raise TypeError(f"{where}: cannot convert {type(obj).__name__} to JSON")


def atomic_write(path: str | os.PathLike, write: Any) -> None:
  """Calls `write(f)` on a new temp file next to `path` (opened "w+b"), fsyncs it, renames it."""
  path = os.fspath(path)
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(
    directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
  )
  # os.open (not mkstemp) so the file gets the usual permissions (0o666 minus umask).
  fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "w+b") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise
  fsync_dir(directory)


def fsync_dir(directory: str) -> None:
  """Best effort: make a rename in `directory` durable."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically: readers see the old file or the new, never half."""
  atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON atomically (converted with `to_jsonable`)."""
  atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
  """Hex digest of a file with a hashlib algorithm (sha256 by default), read in chunks."""
  h = hashlib.new(algorithm)
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()
