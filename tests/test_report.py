"""Tests for mlp.report: evaluation report on a hand-worked example, tables and figures."""

import csv
import math

import numpy as np
import pytest

from mlp.figures import plot_confusion_grid, plot_loss_curves, plot_training_history
from mlp.report import evaluation_report
from mlp.tables import abbreviate, write_table

NAMES = ["cat", "dog", "bird"]
# Rows = true, cols = predicted; N = 16, trace = 12 (same example as tests/test_metrics.py).
#   cat : TP=5 FN=1 FP=2 TN=8  -> R=5/6=.8333 P=5/7=.7143 F1=10/13=.7692 rate=13/16=.8125
#   dog : TP=3 FN=3 FP=1 TN=9  -> R=1/2=.5000 P=3/4=.7500 F1=6/10=.6000  rate=12/16=.7500
#   bird: TP=4 FN=0 FP=1 TN=11 -> R=1        P=4/5=.8000 F1=8/9=.8889   rate=15/16=.9375
#   macro: R=7/9=.7778 P=.7548 F1=.7527 rate=40/48=.8333
CM = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])


def make_probs(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Samples realising ``cm``; a misclassified sample has its true label second -> top-2 = 1."""
  labels, probs = [], []
  c = cm.shape[0]
  for t in range(c):
    for p in range(c):
      for _ in range(cm[t, p]):
        row = np.full(c, 0.1)
        row[p] = 0.6
        if p != t:
          row[t] = 0.3
        labels.append(t)
        probs.append(row / row.sum())
  return np.array(labels), np.array(probs)


def assert_png(path):
  assert path.exists() and path.stat().st_size > 0
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  try:
    from PIL import Image
  except ImportError:
    return
  with Image.open(path) as im:
    im.verify()
  with Image.open(path) as im:
    assert im.width > 100 and im.height > 100


def read_matrix(path, dtype):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0][1:] == NAMES
  assert [r[0] for r in rows[1:]] == NAMES
  return np.array([[dtype(x) for x in r[1:]] for r in rows[1:]])


def test_evaluation_report_hand_example(tmp_path):
  labels, probs = make_probs(CM)
  paths = evaluation_report(tmp_path / "out", labels, probs, NAMES, title="Toy model")
  expected = {
    "report": "report.md",
    "confusion_csv": "confusion.csv",
    "confusion_normalized_csv": "confusion_normalized.csv",
    "per_class_csv": "per_class.csv",
    "confusion_png": "confusion.png",
    "confusion_normalized_png": "confusion_normalized.png",
  }
  assert {k: p.name for k, p in paths.items()} == expected
  # Only the six outputs: no temporary files left behind.
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(expected.values())

  md = paths["report"].read_text()
  assert md.startswith("# Toy model\n")
  for line in [
    "- Correct-classification rate: 0.7500 (12 / 16)",
    "- Sample error rate: 0.2500 (4 / 16)",
    "| 1 | 0.7500 |",
    "| 2 | 1.0000 |",
    "| 3 | 1.0000 |",
    "| true \\ predicted | cat | dog | bird | total |",
    "| cat | 5 | 1 | 0 | 6 |",
    "| dog | 2 | 3 | 1 | 6 |",
    "| bird | 0 | 0 | 4 | 4 |",
    "| **total** | 7 | 4 | 5 | 16 |",
    "| cat | 0.8333 | 0.1667 | 0.0000 |",
    "| dog | 0.3333 | 0.5000 | 0.1667 |",
    "| bird | 0.0000 | 0.0000 | 1.0000 |",
    "| cat | 6 | 0.8333 | 0.7143 | 0.7692 | 0.8125 |",
    "| dog | 6 | 0.5000 | 0.7500 | 0.6000 | 0.7500 |",
    "| bird | 4 | 1.0000 | 0.8000 | 0.8889 | 0.9375 |",
    "| **macro average** | 16 | 0.7778 | 0.7548 | 0.7527 | 0.8333 |",
  ]:
    assert line in md.splitlines(), line

  np.testing.assert_array_equal(read_matrix(paths["confusion_csv"], int), CM)
  cmn = np.array([[5 / 6, 1 / 6, 0], [2 / 6, 3 / 6, 1 / 6], [0, 0, 4 / 4]])
  np.testing.assert_array_equal(read_matrix(paths["confusion_normalized_csv"], float), cmn)

  with open(paths["per_class_csv"], newline="") as f:
    per_class = list(csv.DictReader(f))
  assert [r["class"] for r in per_class] == [*NAMES, "macro_average"]
  assert [int(r["support"]) for r in per_class] == [6, 6, 4, 16]
  np.testing.assert_allclose([float(r["recall"]) for r in per_class], [5 / 6, 1 / 2, 1, 7 / 9])
  np.testing.assert_allclose([float(r["f1"]) for r in per_class[:3]], [10 / 13, 6 / 10, 8 / 9])
  np.testing.assert_allclose(
    [float(r["classification_rate"]) for r in per_class[:3]], [13 / 16, 12 / 16, 15 / 16]
  )

  assert_png(paths["confusion_png"])
  assert_png(paths["confusion_normalized_png"])


def test_evaluation_report_empty_class_and_topk_limit(tmp_path):
  # Class "bird" has no samples and is never predicted: zeros, not NaN.
  labels = np.array([0, 0, 1, 1])
  probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0], [0.3, 0.7, 0.0]])
  paths = evaluation_report(tmp_path, labels, probs, NAMES, title="Edge", topk=2)
  md = paths["report"].read_text()
  assert "nan" not in md.lower()
  assert "| bird | 0.0000 | 0.0000 | 0.0000 |" in md
  assert "| bird | 0 | 0.0000 | 0.0000 | 0.0000 | 1.0000 |" in md
  assert "| 2 | 1.0000 |" in md.splitlines()
  assert not any(line.startswith("| 3 | ") for line in md.splitlines())  # top-k stops at 2
  np.testing.assert_array_equal(
    read_matrix(paths["confusion_csv"], int), [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
  )


def test_evaluation_report_rejects_bad_shapes(tmp_path):
  with pytest.raises(ValueError):
    evaluation_report(tmp_path, [0, 1], np.ones((2, 4)), NAMES, title="x")


def test_write_table_right_aligns_mean_std_columns(tmp_path):
  rows = [
    {"run": "a", "epochs": "51.0 ± 0.0", "top1": "0.9526 ± 0.0007", "status": "ok"},
    {"run": "b", "epochs": "67.3 ± 23.1", "top1": "1.2e-05 ± 3e-06", "status": "ok"},
  ]
  columns = [("run", "Run"), ("epochs", "Epoch"), ("top1", "Top-1"), ("status", "Status")]
  write_table(rows, columns, None, tmp_path / "t.md")
  assert "|:---|---:|---:|:---|" in (tmp_path / "t.md").read_text(encoding="utf-8").splitlines()


def test_write_table_round_trip(tmp_path):
  rows = [
    {"model": "mlp-a", "acc": 0.951234567891, "lr": 1e-5, "epochs": 30, "ci": "0.951 ± 0.004"},
    {"model": "mlp|b", "acc": np.float64(2 / 3), "lr": 0.1, "epochs": 12, "ci": "diverged"},
    {"model": "mlp-c", "acc": None, "lr": 0.5, "epochs": 7},
  ]
  columns = [
    ("model", "Model"),
    ("acc", "Test accuracy"),
    ("lr", "Learning rate"),
    ("epochs", "Epochs"),
    ("ci", "Accuracy (mean ± sd)"),
  ]
  notes = ["Test split = training subjects 25-30 held out.", "Mean ± sd over 5 seeds."]
  csv_path, md_path = tmp_path / "sub" / "t.csv", tmp_path / "sub" / "t.md"
  write_table(rows, columns, csv_path, md_path, title="Results", notes=notes)

  with open(csv_path, newline="") as f:
    back = list(csv.DictReader(f))
  assert list(back[0]) == [k for k, _ in columns]
  assert float(back[0]["acc"]) == 0.951234567891
  assert float(back[1]["acc"]) == 2 / 3
  assert float(back[0]["lr"]) == 1e-5
  assert int(back[1]["epochs"]) == 12
  assert back[1]["ci"] == "diverged" and back[0]["ci"] == "0.951 ± 0.004"
  assert back[2]["acc"] == "" and back[2]["ci"] == ""
  assert back[1]["model"] == "mlp|b"

  md = md_path.read_text(encoding="utf-8")
  lines = md.splitlines()
  assert lines[0] == "# Results"
  assert "| Model | Test accuracy | Learning rate | Epochs | Accuracy (mean ± sd) |" in lines
  assert "|:---|---:|---:|---:|:---|" in lines
  assert "| mlp-a | 0.9512 | 1.000e-05 | 30 | 0.951 ± 0.004 |" in lines
  assert "| mlp\\|b | 0.6667 | 0.1000 | 12 | diverged |" in lines
  assert "| mlp-c |  | 0.5000 | 7 |  |" in lines
  table_end = max(i for i, line in enumerate(lines) if line.startswith("|"))
  for note in notes:
    assert any(note in line for line in lines[table_end + 1 :])


def test_write_table_formats_and_optional_paths(tmp_path):
  md_path = tmp_path / "t.md"
  write_table(
    [{"lr": 0.25, "x": 1.5}], [("lr", "lr"), ("x", "x")], None, md_path, formats={"lr": ".2g"}
  )
  assert "| 0.25 | 1.5000 |" in md_path.read_text()
  assert not list(tmp_path.glob("*.csv"))


def test_abbreviate():
  assert abbreviate("WALKING_UPSTAIRS") == "WALK_UPST"
  assert abbreviate("WALKING_DOWNSTAIRS") == "WALK_DOWN"
  assert abbreviate("SITTING") == "SITTING"


def _runs(n: int, epochs: int = 25):
  rng = np.random.default_rng(n)
  curves, cms = {}, {}
  for r in range(n):
    name = f"run {r}: lr={0.01 * (r + 1):.2f}, hidden=64, activation=tanh"
    train = 1.8 * np.exp(-np.arange(epochs) / 8) + 0.1 + 0.01 * rng.random(epochs)
    val = train + 0.005 * np.arange(epochs)
    if r == 1:  # a diverged run: blow-up then NaN
      train[10:] = np.inf
      val[10:] = np.nan
    curves[name] = {"train_loss": train.tolist(), "val_loss": val}
    cms[name] = rng.integers(0, 20, (6, 6)) + np.diag(rng.integers(50, 100, 6))
  return curves, cms


HAR = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]


@pytest.mark.parametrize("n", [1, 17])
def test_grid_figures(tmp_path, n):
  curves, cms = _runs(n)
  plot_loss_curves(curves, tmp_path / "loss.png", title=f"Loss curves ({n} runs)")
  plot_confusion_grid(cms, HAR, tmp_path / "cm.png", title="Confusion matrices")
  plot_confusion_grid(cms, HAR, tmp_path / "cm_raw.png", title="Counts", normalize=False, ncols=3)
  for name in ("loss.png", "cm.png", "cm_raw.png"):
    assert_png(tmp_path / name)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "cm_raw.png", "loss.png"]


def test_loss_curve_panels_share_their_axes_and_one_scale(tmp_path, monkeypatch):
  from mlp import figures

  saved = []
  monkeypatch.setattr(figures, "save_figure", lambda fig, path: saved.append(fig))
  # Run 1 spans five decades: every panel is log-scale, not only its own.
  curves = {
    "a": {"train_loss": [1.0, 0.5, 0.4], "val_loss": [1.1, 0.7, 0.6]},
    "b": {"train_loss": [10.0, 1.0, 1e-4, 1e-4, 1e-4]},
    "c": {"train_loss": [2.0, 1.0]},
  }
  plot_loss_curves(curves, tmp_path / "loss.png", title="t", ncols=2)
  axes = [ax for ax in saved[0].axes if ax.get_visible()]
  assert len(axes) == 3 and {ax.get_yscale() for ax in axes} == {"log"}
  assert len({ax.get_ylim() for ax in axes}) == 1 and len({ax.get_xlim() for ax in axes}) == 1
  assert axes[0].get_xlim() == (1, 5)
  saved.clear()
  plot_loss_curves({k: curves[k] for k in "ac"}, tmp_path / "loss.png", title="t")
  assert {ax.get_yscale() for ax in saved[0].axes if ax.get_visible()} == {"linear"}


def test_slice_plots_are_a_grid_with_log_and_categorical_axes(tmp_path, monkeypatch):
  from mlp import figures

  points = {
    "learning_rate": ([1e-4, 1e-2, 1e-3], [0.3, 0.4, 0.45], [0, 1, 2]),
    "hidden": (["300-100", "500", "300-100"], [0.3, 0.4, 0.45], [0, 1, 2]),
    "momentum": ([0.0, 0.9], [0.3, 0.4], [0, 1]),
    "batch_size": ([10, 50], [0.4, 0.45], [1, 2]),
  }
  log_x = ["learning_rate"]
  figures.plot_slices(points, tmp_path / "slice.png", metric="val_accuracy", log_x=log_x)
  assert_png(tmp_path / "slice.png")
  saved = []
  monkeypatch.setattr(figures, "save_figure", lambda fig, path: saved.append(fig))
  figures.plot_slices(points, tmp_path / "s.png", metric="val_accuracy", log_x=log_x)
  axes = [ax for ax in saved[0].axes if ax.get_visible()]
  assert len(saved[0].axes) == 6 and len(axes) == 4  # 2 rows of 3, not one row of 4
  assert [ax.get_xscale() for ax in axes] == ["log", "linear", "linear", "linear"]
  assert [t.get_text() for t in axes[1].get_xticklabels()] == ["300-100", "500"]
  assert axes[0].get_ylabel() == "val_accuracy"


def test_confusion_grid_rejects_wrong_shape(tmp_path):
  with pytest.raises(ValueError):
    plot_confusion_grid({"a": np.eye(3)}, HAR, tmp_path / "x.png", title="x")


def test_plot_training_history(tmp_path):
  e = np.arange(15)
  history = {
    "train_loss": list(np.exp(-e / 4)),
    "val_loss": list(np.exp(-e / 4) + 0.02 * e),
    "train_acc": list(1 - 0.5 * np.exp(-e / 4)),
    "val_acc": list(0.9 - 0.5 * np.exp(-e / 4)),
  }
  plot_training_history(history, tmp_path / "h.png", title="Overfitting run")
  assert_png(tmp_path / "h.png")
  # Loss only is fine too; no loss or accuracy series is an error.
  plot_training_history({"train_loss": [1.0, 0.5]}, tmp_path / "h2.png", title="loss only")
  assert_png(tmp_path / "h2.png")
  with pytest.raises(ValueError):
    plot_training_history({"lr": [0.1]}, tmp_path / "h3.png", title="nothing")
  assert not math.isnan(history["val_loss"][0])
