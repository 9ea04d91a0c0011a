"""Evaluation reports, results tables and figures (Markdown, CSV and PNG files).

Matplotlib runs headless on the Agg backend; figures are built with the object-oriented
``matplotlib.figure.Figure`` API (no pyplot global state, nothing to close). Every file is written
atomically: to a temporary file in the destination directory, then moved with ``os.replace``.
"""

import csv
import io
import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mlp.checkpoint import atomic_write, atomic_write_text  # noqa: E402
from mlp.metrics import class_stats, confusion_matrix, normalize_rows, topk_accuracy  # noqa: E402

__all__ = [
  "abbreviate",
  "evaluation_report",
  "plot_confusion_grid",
  "plot_loss_curves",
  "plot_training_history",
  "write_table",
]

PathLike = str | os.PathLike
DPI = 120


# ----------------------------------------------------------------------------- atomic file output


def _write_text(path: PathLike, text: str) -> Path:
  atomic_write_text(path, text)
  return Path(path)


def _write_csv(path: PathLike, rows: Sequence[Sequence[Any]]) -> Path:
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerows(rows)
  return _write_text(path, buf.getvalue())


def _save_figure(fig: Figure, path: PathLike) -> Path:
  atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
  return Path(path)


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


def _md_cell(v: Any, spec: str | None = None) -> str:
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


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
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


def _short_names(names: Sequence[str], max_len: int = 10) -> list[str]:
  short = [abbreviate(str(n), max_len) for n in names]
  return short if len(set(short)) == len(short) else [str(n) for n in names]


# ----------------------------------------------------------------------------- confusion heatmaps


def _draw_confusion(
  ax: Axes,
  cm: np.ndarray,
  names: Sequence[str],
  *,
  normalized: bool,
  vmax: float,
  fontsize: float,
  xticks: bool = True,
  yticks: bool = True,
  axis_labels: bool = True,
):
  """Annotated heatmap of ``cm`` (rows = true, cols = predicted) on ``ax``; returns the image."""
  c = cm.shape[0]
  im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=max(vmax, 1e-12), interpolation="nearest")
  for i in range(c):
    for j in range(c):
      v = cm[i, j]
      text = f"{v:.2f}" if normalized else f"{int(v)}"
      color = "white" if v > 0.55 * vmax else "black"
      ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
  ax.set_xticks(range(c))
  ax.set_yticks(range(c))
  if xticks:
    ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize)
  else:
    ax.set_xticklabels([])
  if yticks:
    ax.set_yticklabels(names, fontsize=fontsize)
  else:
    ax.set_yticklabels([])
  if axis_labels:
    ax.set_xlabel("predicted class", fontsize=fontsize + 1)
    ax.set_ylabel("true class", fontsize=fontsize + 1)
  return im


def _plot_confusion(cm: np.ndarray, names: Sequence[str], path: Path, *, title: str, normalized):
  c = cm.shape[0]
  side = max(4.5, 0.6 * c + 2.8)
  fontsize = float(np.clip(14 - 0.6 * c, 5, 11))
  fig = Figure(figsize=(side + 1.0, side), layout="constrained")
  ax = fig.add_subplot()
  vmax = 1.0 if normalized else float(cm.max())
  im = _draw_confusion(ax, cm, names, normalized=normalized, vmax=vmax, fontsize=fontsize)
  cbar = fig.colorbar(im, ax=ax, shrink=0.8)
  cbar.set_label("fraction of true class" if normalized else "samples")
  ax.set_title(title)
  _save_figure(fig, path)


# ----------------------------------------------------------------------------- evaluation report


def evaluation_report(
  out_dir: PathLike,
  labels: Any,
  probs: Any,
  class_names: Sequence[str],
  *,
  title: str,
  prefix: str = "",
  topk: int | None = None,
) -> dict[str, Path]:
  """Write the evaluation report of one classifier on one split.

  Predictions are ``argmax(probs)`` (lowest index wins ties, matching ``topk_accuracy``). Files in
  ``out_dir`` (all names prefixed with ``prefix``): ``report.md`` (correct-classification rate
  ``trace(cm)/N``, sample error rate ``1 - trace(cm)/N``, top-1..top-``topk`` accuracy (default
  all C), raw and class-normalised confusion matrices, per-class recall / precision / F1 /
  classification rate with macro averages), ``confusion.csv``, ``confusion_normalized.csv``,
  ``per_class.csv``, ``confusion.png`` and ``confusion_normalized.png``. Returns the paths under
  the keys ``report``, ``confusion_csv``, ``confusion_normalized_csv``, ``per_class_csv``,
  ``confusion_png`` and ``confusion_normalized_png``.
  """
  probs = np.asarray(probs, dtype=np.float64)
  labels = np.asarray(labels)
  names = [str(n) for n in class_names]
  if probs.ndim != 2 or probs.shape[1] != len(names):
    raise ValueError(f"probs must have shape (N, {len(names)}), got {probs.shape}")
  c = len(names)
  n = probs.shape[0]
  preds = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
  cm = confusion_matrix(labels, preds, c)
  cmn = normalize_rows(cm)
  st = class_stats(cm)
  kmax = c if topk is None else max(1, min(int(topk), c))
  ks = list(range(1, kmax + 1))
  topk_acc = topk_accuracy(probs, labels, ks)

  out = Path(out_dir)
  paths = {
    "report": out / f"{prefix}report.md",
    "confusion_csv": out / f"{prefix}confusion.csv",
    "confusion_normalized_csv": out / f"{prefix}confusion_normalized.csv",
    "per_class_csv": out / f"{prefix}per_class.csv",
    "confusion_png": out / f"{prefix}confusion.png",
    "confusion_normalized_png": out / f"{prefix}confusion_normalized.png",
  }

  # CSVs: full precision (Python's shortest round-trip float repr).
  corner = "true\\predicted"
  _write_csv(
    paths["confusion_csv"],
    [[corner, *names]] + [[nm, *map(int, r)] for nm, r in zip(names, cm, strict=True)],
  )
  _write_csv(
    paths["confusion_normalized_csv"],
    [[corner, *names]] + [[nm, *map(float, r)] for nm, r in zip(names, cmn, strict=True)],
  )
  per_class = [["class", "support", "recall", "precision", "f1", "classification_rate"]]
  for i, nm in enumerate(names):
    per_class.append(
      [nm, int(st.support[i]), *(float(x[i]) for x in (st.recall, st.precision, st.f1, st.rate))]
    )
  per_class.append(
    ["macro_average", n, st.mean_recall, st.mean_precision, st.mean_f1, st.mean_rate]
  )
  _write_csv(paths["per_class_csv"], per_class)

  # Markdown report.
  correct = int(np.trace(cm))
  md = [f"# {title}", ""]
  md += [
    f"- Samples: {n}",
    f"- Correct-classification rate: {st.accuracy:.4f} ({correct} / {n})",
    f"- Sample error rate: {st.error_rate:.4f} ({n - correct} / {n})",
    "",
    "## Top-k accuracy",
    "",
    _md_table(
      ["k", "accuracy"],
      [[str(k), f"{a:.4f}"] for k, a in zip(ks, topk_acc, strict=True)],
      [True, True],
    ),
    "",
    "## Confusion matrix (counts)",
    "",
    "Rows: true class; columns: predicted class.",
    "",
  ]
  headers = ["true \\ predicted", *names, "total"]
  right = [False] + [True] * (c + 1)
  rows = [
    [_md_cell(nm), *(str(int(v)) for v in r), str(int(r.sum()))]
    for nm, r in zip(names, cm, strict=True)
  ]
  rows.append(["**total**", *(str(int(v)) for v in cm.sum(axis=0)), str(n)])
  md += [_md_table(headers, rows, right), ""]
  md += [
    "## Confusion matrix (class-normalised)",
    "",
    "Each row divided by the number of samples of its true class (a class without samples: zeros).",
    "",
  ]
  rows = [[_md_cell(nm), *(f"{v:.4f}" for v in r)] for nm, r in zip(names, cmn, strict=True)]
  md += [_md_table(headers[:-1], rows, right[:-1]), ""]
  md += [
    "## Per-class statistics",
    "",
    "One-vs-rest counts per class: recall = TP/(TP+FN), precision = TP/(TP+FP), "
    "F1 = 2PR/(P+R), classification rate = (TP+TN)/N; 0/0 is taken as 0. "
    "The last row holds unweighted (macro) averages over classes.",
    "",
  ]
  stat_headers = ["class", "support", "recall", "precision", "F1", "classification rate"]
  rows = [
    [_md_cell(nm), str(int(st.support[i]))]
    + [f"{float(x[i]):.4f}" for x in (st.recall, st.precision, st.f1, st.rate)]
    for i, nm in enumerate(names)
  ]
  rows.append(
    ["**macro average**", str(n)]
    + [f"{x:.4f}" for x in (st.mean_recall, st.mean_precision, st.mean_f1, st.mean_rate)]
  )
  md += [_md_table(stat_headers, rows, [False] + [True] * 5), ""]
  _write_text(paths["report"], "\n".join(md))

  _plot_confusion(
    cm, names, paths["confusion_png"], title=f"{title}\nconfusion matrix", normalized=False
  )
  _plot_confusion(
    cmn,
    names,
    paths["confusion_normalized_png"],
    title=f"{title}\nclass-normalised confusion matrix",
    normalized=True,
  )
  return paths


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
    _write_csv(csv_path, [keys, *body])
  if md_path is not None:
    cells = [[_md_cell(row.get(k), formats.get(k)) for k in keys] for row in rows]
    right = [
      any(_is_numeric_cell(row.get(k)) for row in rows)
      and all(_is_numeric_cell(row.get(k)) or row.get(k) is None for row in rows)
      for k in keys
    ]
    md = [f"# {title}", ""] if title else []
    md += [_md_table([h for _, h in columns], cells, right), ""]
    if notes:
      md += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    _write_text(md_path, "\n".join(md))


# ----------------------------------------------------------------------------- figures


def _grid(n: int, ncols: int) -> tuple[int, int]:
  if n < 1:
    raise ValueError("need at least one run to plot")
  ncols = max(1, min(ncols, n))
  return math.ceil(n / ncols), ncols


def _finite(values: Sequence[float]) -> np.ndarray:
  y = np.asarray(values, dtype=np.float64).reshape(-1)
  return np.where(np.isfinite(y), y, np.nan)


def _plot_series(ax: Axes, values: Sequence[float], **kwargs) -> bool:
  """Plot one per-epoch series against epochs 1..E; non-finite values leave gaps.

  Returns True if the series contained a non-finite value (a diverged run).
  """
  y = _finite(values)
  if y.size:
    ax.plot(np.arange(1, y.size + 1), y, marker="." if y.size <= 30 else None, **kwargs)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  return bool(np.isnan(y).any())


def _maybe_log_scale(ax: Axes, series: Sequence[Sequence[float]]) -> None:
  """Log y-axis when the finite values are positive and span more than three decades."""
  ys = [_finite(s) for s in series]
  y = np.concatenate([v[np.isfinite(v)] for v in ys]) if ys else np.zeros(0)
  if y.size and y.min() > 0 and y.max() / y.min() > 1e3:
    ax.set_yscale("log")


def _wrap(title: str, width: int = 34) -> str:
  return "\n".join(textwrap.wrap(str(title), width)) or str(title)


def plot_loss_curves(
  curves: dict[str, dict[str, Sequence[float]]],
  path: PathLike,
  *,
  title: str,
  ncols: int = 4,
) -> None:
  """Grid of train vs validation loss per epoch, one subplot per run; shared legend.

  ``curves[name] = {"train_loss": [...], "val_loss": [...]}`` (either may be missing). Non-finite
  losses are left out of the plot and the subplot is marked "diverged".
  """
  names = list(curves)
  nrows, ncols = _grid(len(names), ncols)
  fig = Figure(figsize=(3.3 * ncols + 0.4, 2.6 * nrows + 1.0), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False)
  styles = {"train_loss": ("train", "tab:blue", "-"), "val_loss": ("validation", "tab:orange", "-")}
  for idx, ax in enumerate(axes.flat):
    if idx >= len(names):
      ax.set_visible(False)
      continue
    run = curves[names[idx]]
    diverged = False
    for key, (label, color, ls) in styles.items():
      if key in run:
        diverged |= _plot_series(ax, run[key], label=label, color=color, linestyle=ls, lw=1.3)
    lengths = [len(_finite(run[k])) for k in styles if k in run]
    if lengths and max(lengths) > 1:
      ax.set_xlim(1, max(lengths))
    _maybe_log_scale(ax, [run[k] for k in styles if k in run])
    if diverged:
      ax.text(
        0.97,
        0.95,
        "diverged",
        transform=ax.transAxes,
        ha="right",
        va="top",
        color="red",
        fontsize=8,
      )
    ax.set_title(_wrap(names[idx]), fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if idx % ncols == 0:
      ax.set_ylabel("loss", fontsize=8)
    if idx + ncols >= len(names):
      ax.set_xlabel("epoch", fontsize=8)
  handles = [
    Line2D([], [], color=c, linestyle=ls, lw=1.5, label=lb) for lb, c, ls in styles.values()
  ]
  fig.legend(
    handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False
  )
  fig.suptitle(title, fontsize=12)
  _save_figure(fig, path)


def plot_confusion_grid(
  cms: dict[str, np.ndarray],
  class_names: Sequence[str],
  path: PathLike,
  *,
  title: str,
  normalize: bool = True,
  ncols: int = 4,
) -> None:
  """Grid of small annotated confusion-matrix heatmaps (rows = true, cols = predicted), one per run.

  ``normalize=True`` shows row-normalised matrices ``cm[i, j] / sum_j cm[i, j]`` on a shared 0-1
  colour scale; otherwise raw counts on a colour scale shared by all runs. Long class names are
  shortened with :func:`abbreviate`.
  """
  names = list(cms)
  nrows, ncols = _grid(len(names), ncols)
  mats = [np.asarray(cms[k]) for k in names]
  c = len(class_names)
  for name, m in zip(names, mats, strict=True):
    if m.shape != (c, c):
      raise ValueError(f"confusion matrix of {name!r} has shape {m.shape}, expected ({c}, {c})")
  mats = [normalize_rows(m) if normalize else m.astype(np.float64) for m in mats]
  vmax = 1.0 if normalize else max(float(m.max()) for m in mats)
  short = _short_names(class_names)
  cell = max(2.6, 0.38 * c + 1.0)
  fontsize = float(np.clip(11 - 0.6 * c, 4.5, 8))
  fig = Figure(figsize=(cell * ncols + 1.2, cell * nrows + 0.8), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False)
  im = None
  for idx, ax in enumerate(axes.flat):
    if idx >= len(names):
      ax.set_visible(False)
      continue
    im = _draw_confusion(
      ax,
      mats[idx],
      short,
      normalized=normalize,
      vmax=vmax,
      fontsize=fontsize,
      xticks=idx + ncols >= len(names),
      yticks=idx % ncols == 0,
      axis_labels=False,
    )
    ax.set_title(_wrap(names[idx], 30), fontsize=8)
  visible = [ax for ax in axes.flat if ax.get_visible()]
  cbar = fig.colorbar(im, ax=visible, shrink=0.6, aspect=30)
  cbar.set_label("fraction of true class" if normalize else "samples", fontsize=8)
  cbar.ax.tick_params(labelsize=7)
  fig.supxlabel("predicted class", fontsize=9)
  fig.supylabel("true class", fontsize=9)
  fig.suptitle(title, fontsize=12)
  _save_figure(fig, path)


_SPLIT_STYLE = {
  "train": ("train", "tab:blue"),
  "val": ("validation", "tab:orange"),
  "valid": ("validation", "tab:orange"),
  "validation": ("validation", "tab:orange"),
  "test": ("test", "tab:green"),
}


def _history_series(history: Mapping[str, Sequence[float]], suffixes: Sequence[str]):
  """(split label, colour, values) for keys ``<split>_<suffix>``, in train/val/test order."""
  out = []
  for split, (label, color) in _SPLIT_STYLE.items():
    for suffix in suffixes:
      key = f"{split}_{suffix}"
      if key in history and label not in [o[0] for o in out]:
        out.append((label, color, history[key]))
  return out


def plot_training_history(
  history: dict[str, Sequence[float]], path: PathLike, *, title: str
) -> None:
  """Loss (left) and accuracy (right) per epoch for one run, train vs validation (and test).

  Reads the keys ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc`` (``*_accuracy``,
  ``validation_*`` and ``test_*`` are accepted too); a panel without data is omitted. The epoch
  with the lowest validation loss is marked.
  """
  panels = [
    ("loss", _history_series(history, ["loss"])),
    ("accuracy", _history_series(history, ["acc", "accuracy"])),
  ]
  panels = [(name, series) for name, series in panels if series]
  if not panels:
    raise ValueError(f"history has no *_loss or *_acc series: keys {sorted(history)}")
  fig = Figure(figsize=(5.2 * len(panels), 4.0), layout="constrained")
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, (ylabel, series) in zip(axes, panels, strict=True):
    for label, color, values in series:
      _plot_series(ax, values, label=label, color=color, lw=1.5)
    if ylabel == "loss":
      val = [v for lb, _, v in series if lb == "validation"]
      if val:
        y = _finite(val[0])
        if np.isfinite(y).any():
          best = int(np.nanargmin(y))
          ax.axvline(best + 1, color="gray", linestyle=":", lw=1)
          right = best + 1 > 0.6 * y.size
          ax.annotate(
            f"min val loss\nepoch {best + 1}",
            (best + 1, y[best]),
            xytext=(-6 if right else 6, 12),
            textcoords="offset points",
            ha="right" if right else "left",
            fontsize=8,
            color="gray",
          )
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
  fig.suptitle(title)
  _save_figure(fig, path)
