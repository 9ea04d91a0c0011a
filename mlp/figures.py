"""Figures (PNG): loss curves, confusion matrices, training histories, a search's slice plots.

Matplotlib runs headless on the Agg backend; figures are built with the object-oriented
``matplotlib.figure.Figure`` API (no pyplot global state, nothing to close). Every file is written
atomically (mlp.fileio).
"""

import math
import os
import textwrap
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mlp.fileio import atomic_write  # noqa: E402
from mlp.metrics import normalize_rows  # noqa: E402
from mlp.tables import short_names  # noqa: E402

PathLike = str | os.PathLike
DPI = 120


def save_figure(fig: Figure, path: PathLike) -> Path:
  atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
  return Path(path)


# ----------------------------------------------------------------------------- confusion heatmaps


def _draw_confusion(
  ax: Axes,
  cm: np.ndarray,
  names: Sequence[str],
  *,
  normalized: bool,
  vmax: float,
  fontsize: float,
):
  """Annotated heatmap of ``cm`` (rows = true, cols = predicted) on ``ax``, tick labels on both
  axes; returns the image."""
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
  ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize)
  ax.set_yticklabels(names, fontsize=fontsize)
  return im


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: Path, *, title: str, normalized):
  c = cm.shape[0]
  side = max(4.5, 0.6 * c + 2.8)
  fontsize = float(np.clip(14 - 0.6 * c, 5, 11))
  fig = Figure(figsize=(side + 1.0, side), layout="constrained")
  ax = fig.add_subplot()
  vmax = 1.0 if normalized else float(cm.max())
  im = _draw_confusion(ax, cm, names, normalized=normalized, vmax=vmax, fontsize=fontsize)
  ax.set_xlabel("predicted class", fontsize=fontsize + 1)
  ax.set_ylabel("true class", fontsize=fontsize + 1)
  cbar = fig.colorbar(im, ax=ax, shrink=0.8)
  cbar.set_label("fraction of true class" if normalized else "samples")
  ax.set_title(title)
  save_figure(fig, path)


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
  losses are left out of the plot and the subplot is marked "diverged". Every panel has the same
  axes and one y scale (log when the losses of all runs span more than three decades), so that
  runs compare at a glance.
  """
  names = list(curves)
  nrows, ncols = _grid(len(names), ncols)
  fig = Figure(figsize=(3.3 * ncols + 0.4, 2.6 * nrows + 1.0), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
  styles = {"train_loss": ("train", "tab:blue", "-"), "val_loss": ("validation", "tab:orange", "-")}
  every = [run[k] for run in curves.values() for k in styles if k in run]
  _maybe_log_scale(axes.flat[0], every)  # (shared: one scale for the whole grid)
  longest = max((len(_finite(v)) for v in every), default=0)
  if longest > 1:
    axes.flat[0].set_xlim(1, longest)
  for idx, ax in enumerate(axes.flat):
    if idx >= len(names):
      ax.set_visible(False)
      continue
    run = curves[names[idx]]
    diverged = False
    for key, (label, color, ls) in styles.items():
      if key in run:
        diverged |= _plot_series(ax, run[key], label=label, color=color, linestyle=ls, lw=1.3)
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
    if idx + ncols >= len(names):  # nothing below: this panel shows the epochs
      ax.set_xlabel("epoch", fontsize=8)
      ax.xaxis.set_tick_params(labelbottom=True)
  handles = [
    Line2D([], [], color=c, linestyle=ls, lw=1.5, label=lb) for lb, c, ls in styles.values()
  ]
  fig.legend(
    handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False
  )
  fig.suptitle(title, fontsize=12)
  save_figure(fig, path)


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
  short = short_names(class_names)
  cell = max(2.6, 0.38 * c + 1.0)
  fontsize = float(np.clip(11 - 0.6 * c, 4.5, 8))
  fig = Figure(figsize=(cell * ncols + 1.2, cell * nrows + 0.8), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False)
  im = None
  for idx, ax in enumerate(axes.flat):
    if idx >= len(names):
      ax.set_visible(False)
      continue
    im = _draw_confusion(ax, mats[idx], short, normalized=normalize, vmax=vmax, fontsize=fontsize)
    if idx + ncols < len(names):  # tick labels only on the grid's bottom row and left column
      ax.set_xticklabels([])
    if idx % ncols:
      ax.set_yticklabels([])
    ax.set_title(_wrap(names[idx], 30), fontsize=8)
  visible = [ax for ax in axes.flat if ax.get_visible()]
  cbar = fig.colorbar(im, ax=visible, shrink=0.6, aspect=30)
  cbar.set_label("fraction of true class" if normalize else "samples", fontsize=8)
  cbar.ax.tick_params(labelsize=7)
  fig.supxlabel("predicted class", fontsize=9)
  fig.supylabel("true class", fontsize=9)
  fig.suptitle(title, fontsize=12)
  save_figure(fig, path)


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
  save_figure(fig, path)


def plot_slices(
  points: Mapping[str, tuple[Sequence[Any], Sequence[float], Sequence[int]]],
  path: PathLike,
  *,
  metric: str,
  log_x: Collection[str] = (),
  ncols: int = 3,
) -> None:
  """A search's slice plots in a grid: one panel per hyperparameter, the metric of each trial
  against the value it tried, coloured by trial number (later trials darker).

  ``points[name] = (values, metrics, trial numbers)``; names in ``log_x`` get a log x axis;
  categorical values (strings, tuples) are placed at their sorted positions.
  """
  names = list(points)
  nrows, ncols = _grid(len(names), ncols)
  fig = Figure(figsize=(3.6 * ncols, 2.8 * nrows + 0.6), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
  numbers = [n for _, _, ns in points.values() for n in ns]
  top = max(numbers, default=1) or 1
  for idx, ax in enumerate(axes.flat):
    if idx >= len(names):
      ax.set_visible(False)
      continue
    name = names[idx]
    values, ys, ns = points[name]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
      xs = np.asarray(values, dtype=np.float64)
    else:  # categorical: one position per distinct value
      cats = sorted({str(v) for v in values})
      xs = np.asarray([cats.index(str(v)) for v in values], dtype=np.float64)
      ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
    ax.scatter(xs, ys, c=np.asarray(ns) / top, cmap="Blues", vmin=-0.3, vmax=1, s=18)
    if name in log_x:
      ax.set_xscale("log")
    ax.set_title(_wrap(name), fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if idx % ncols == 0:
      ax.set_ylabel(metric, fontsize=8)
  fig.suptitle(f"{metric} by hyperparameter (darker: later trials)", fontsize=11)
  save_figure(fig, path)
