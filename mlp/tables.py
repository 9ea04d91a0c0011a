"""Results tables: Markdown and CSV files written atomically (mlp.fileio)."""

import csv
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlp.fileio import atomic_write_text

PathLike = str | os.PathLike


def write_text(path: PathLike, text: str) -> Path:
  atomic_write_text(path, text)
  return Path(path)


def write_csv(path: PathLike, rows: Sequence[Sequence[Any]]) -> Path:
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerows(rows)
  return write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- formatting helpers


def _scalar(v: Any) -> Any:
  """numpy / JAX scalars -> Python scalars; everything else unchanged."""
  if isinstance(v, np.generic) or (hasattr(v, "shape") and getattr(v, "shape", None) == ()):
    return np.asarray(v).item()
  return v


def _fmt_float(v: float, spec: str = ".4f") -> str:
  """Markdown number format: ``spec`` (4 decimals), scientific for tiny / huge magnitudes."""
  if not math.isfinite(v):
    return str(v)
  if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
    return f"{v:.3e}"
  return format(v, spec)


def md_cell(v: Any, spec: str | None = None) -> str:
  v = _scalar(v)
  if v is None:
    return ""
  if spec is not None and isinstance(v, int | float) and not isinstance(v, bool):
    text = format(v, spec)
  elif isinstance(v, float):
    text = _fmt_float(v)
  else:
    text = str(v)
  return text.replace("|", "\\|").replace("\n", " ")


def _is_number(v: Any) -> bool:
  v = _scalar(v)
  return isinstance(v, int | float) and not isinstance(v, bool)


_MEAN_STD = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)? ± \d+(\.\d+)?(e[-+]?\d+)?")


def _is_numeric_cell(v: Any) -> bool:
  """A number, or a ``"mean ± std"`` string: cells that read best right-aligned."""
  return _is_number(v) or (isinstance(v, str) and _MEAN_STD.fullmatch(v) is not None)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
  """GitHub Markdown table from already formatted cells; ``right[j]`` right-aligns column j."""
  esc = [str(h).replace("|", "\\|") for h in headers]
  lines = ["| " + " | ".join(esc) + " |"]
  lines.append("|" + "|".join("---:" if r else ":---" for r in right) + "|")
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def abbreviate(name: str, max_len: int = 10) -> str:
  """Shorten a long class name for small plots: each ``_``/space-separated part keeps 4 letters.

  Names of at most ``max_len`` characters are returned unchanged, e.g.
  ``WALKING_UPSTAIRS -> WALK_UPST`` but ``SITTING -> SITTING``.
  """
  if len(name) <= max_len:
    return name
  sep = "_" if "_" in name else " "
  short = sep.join(p[:4] for p in name.split(sep) if p)
  return short if len(short) < len(name) else name[:max_len]


def short_names(names: Sequence[str], max_len: int = 10) -> list[str]:
  short = [abbreviate(str(n), max_len) for n in names]
  return short if len(set(short)) == len(short) else [str(n) for n in names]


# ----------------------------------------------------------------------------- results table


def write_table(
  rows: list[dict],
  columns: list[tuple[str, str]],
  csv_path: PathLike | None,
  md_path: PathLike | None,
  *,
  title: str | None = None,
  notes: Sequence[str] = (),
  formats: Mapping[str, str] | None = None,
) -> None:
  """Write ``rows`` as a CSV file and a Markdown table; ``columns`` are (key, header) pairs.

  CSV: header row of column *keys*, values at full precision (``repr`` of floats), missing or
  ``None`` values empty. Markdown: optional ``# title``, a table with the display *headers*, floats
  with 4 decimals (scientific below 1e-3 / from 1e6; ``formats[key]`` overrides the format spec
  per column), strings (e.g. ``"0.951 ± 0.004"``, ``"diverged"``) as given, and ``notes`` as a
  list under the table. Either path may be ``None`` to skip that file.
  """
  keys = [k for k, _ in columns]
  formats = dict(formats or {})
  if csv_path is not None:
    body = []
    for row in rows:
      vals = [_scalar(row.get(k)) for k in keys]
      body.append(["" if v is None else repr(v) if isinstance(v, float) else v for v in vals])
    write_csv(csv_path, [keys, *body])
  if md_path is not None:
    cells = [[md_cell(row.get(k), formats.get(k)) for k in keys] for row in rows]
    right = [
      any(_is_numeric_cell(row.get(k)) for row in rows)
      and all(_is_numeric_cell(row.get(k)) or row.get(k) is None for row in rows)
      for k in keys
    ]
    md = [f"# {title}", ""] if title else []
    md += [md_table([h for _, h in columns], cells, right), ""]
    if notes:
      md += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    write_text(md_path, "\n".join(md))
