"""Parsers of whitespace-separated text files (UCI HAR's layout) with errors that name the line.

Every error is a :class:`~mlp.data.common.DataError` saying which file and line is wrong and what
to do about it; nothing is silently skipped but blank lines.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mlp.data.common import DataError


def read_text(path: Path) -> str:
  try:
    text = path.read_text(encoding="ascii", errors="strict")
  except UnicodeDecodeError as e:
    raise DataError(f"{path} is not a plain ASCII text file ({e}); replace it.") from e
  if not text.strip():
    raise DataError(f"{path} is empty; replace it with the official file.")
  return text


def parse_matrix(path: Path, ncol: int) -> np.ndarray:
  """Whitespace-separated floats with ``ncol`` per line -> float32 (n, ncol)."""
  text = read_text(path)
  rows, linenos, lines = [], [], text.splitlines()
  with warnings.catch_warnings():
    # older numpy warns and returns a short row on a bad token, newer numpy raises ValueError
    warnings.simplefilter("ignore", DeprecationWarning)
    for i, line in enumerate(lines):
      if not line.strip():
        continue
      try:
        row = np.fromstring(line, dtype=np.float64, sep=" ")
      except ValueError:
        row = None
      if row is None or row.size != ncol:
        _raise_row_error(path, i + 1, line, ncol)
      rows.append(row)
      linenos.append(i + 1)
  x = np.stack(rows).astype(np.float32)
  if not np.isfinite(x).all():
    lineno = linenos[int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])]
    raise DataError(f"{path} line {lineno}: non-finite value. Replace the file.")
  return x


def _raise_row_error(path: Path, lineno: int, line: str, ncol: int) -> None:
  tokens = line.split()
  if len(tokens) != ncol:
    raise DataError(
      f"{path} line {lineno}: {len(tokens)} columns, expected {ncol}. Replace the file with the "
      "official one."
    )
  bad = next((t for t in tokens if not _is_float(t)), "?")
  raise DataError(f"{path} line {lineno}: {bad!r} is not a number. Replace the file.")


def _is_float(token: str) -> bool:
  try:
    float(token)
  except ValueError:
    return False
  return True


def parse_ints(path: Path, lo: int, hi: int, what: str) -> np.ndarray:
  """One integer per line in [lo, hi] -> int32 (n,)."""
  text = read_text(path)
  values = []
  for i, line in enumerate(text.splitlines()):
    s = line.strip()
    if not s:
      continue
    tokens = s.split()
    if len(tokens) != 1:
      raise DataError(f"{path} line {i + 1}: {len(tokens)} columns, expected 1 ({what}).")
    try:
      v = int(tokens[0])
    except ValueError:
      raise DataError(f"{path} line {i + 1}: {tokens[0]!r} is not an integer {what}.") from None
    if not lo <= v <= hi:
      raise DataError(
        f"{path} line {i + 1}: {what} {v} out of range {lo}..{hi}. Replace the file with the "
        "official one."
      )
    values.append(v)
  return np.asarray(values, dtype=np.int32)


def parse_names(path: Path) -> tuple[str, ...]:
  """Lines ``<index> <name>`` (indices 1, 2, ...) -> names."""
  text = read_text(path)
  names = []
  for i, line in enumerate(text.splitlines()):
    s = line.strip()
    if not s:
      continue
    tokens = s.split(maxsplit=1)
    if len(tokens) != 2 or not tokens[0].isdigit():
      raise DataError(f"{path} line {i + 1}: expected '<index> <name>', got {s!r}.")
    if int(tokens[0]) != len(names) + 1:
      raise DataError(f"{path} line {i + 1}: index {tokens[0]}, expected {len(names) + 1}.")
    names.append(tokens[1].strip())
  return tuple(names)
