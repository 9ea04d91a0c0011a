"""Evaluation reports: top-k, per-class precision/recall/F1 and confusion matrices of one model on
one split (Markdown, CSV and PNG files, mlp.tables and mlp.figures)."""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlp.figures import plot_confusion
from mlp.metrics import class_stats, confusion_matrix, normalize_rows, topk_accuracy
from mlp.tables import md_cell, md_table, write_csv, write_text

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- evaluation report


def evaluation_report(
  out_dir: PathLike,
  labels: Any,
  probs: Any,
  class_names: Sequence[str],
  *,
  title: str,
  topk: int | None = None,
) -> dict[str, Path]:
  """Write the evaluation report of one classifier on one split.

  Predictions are ``argmax(probs)`` (lowest index wins ties, matching ``topk_accuracy``). Files in
  ``out_dir``: ``report.md`` (correct-classification rate
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
    "report": out / "report.md",
    "confusion_csv": out / "confusion.csv",
    "confusion_normalized_csv": out / "confusion_normalized.csv",
    "per_class_csv": out / "per_class.csv",
    "confusion_png": out / "confusion.png",
    "confusion_normalized_png": out / "confusion_normalized.png",
  }

  # CSVs: full precision (Python's shortest round-trip float repr).
  corner = "true\\predicted"
  write_csv(
    paths["confusion_csv"],
    [[corner, *names]] + [[nm, *map(int, r)] for nm, r in zip(names, cm, strict=True)],
  )
  write_csv(
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
  write_csv(paths["per_class_csv"], per_class)

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
    md_table(
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
    [md_cell(nm), *(str(int(v)) for v in r), str(int(r.sum()))]
    for nm, r in zip(names, cm, strict=True)
  ]
  rows.append(["**total**", *(str(int(v)) for v in cm.sum(axis=0)), str(n)])
  md += [md_table(headers, rows, right), ""]
  md += [
    "## Confusion matrix (class-normalised)",
    "",
    "Each row divided by the number of samples of its true class (a class without samples: zeros).",
    "",
  ]
  rows = [[md_cell(nm), *(f"{v:.4f}" for v in r)] for nm, r in zip(names, cmn, strict=True)]
  md += [md_table(headers[:-1], rows, right[:-1]), ""]
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
    [md_cell(nm), str(int(st.support[i]))]
    + [f"{float(x[i]):.4f}" for x in (st.recall, st.precision, st.f1, st.rate)]
    for i, nm in enumerate(names)
  ]
  rows.append(
    ["**macro average**", str(n)]
    + [f"{x:.4f}" for x in (st.mean_recall, st.mean_precision, st.mean_f1, st.mean_rate)]
  )
  md += [md_table(stat_headers, rows, [False] + [True] * 5), ""]
  write_text(paths["report"], "\n".join(md))

  plot_confusion(
    cm, names, paths["confusion_png"], title=f"{title}\nconfusion matrix", normalized=False
  )
  plot_confusion(
    cmn,
    names,
    paths["confusion_normalized_png"],
    title=f"{title}\nclass-normalised confusion matrix",
    normalized=True,
  )
  return paths
