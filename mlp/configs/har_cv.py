"""HAR: an MLP cross-validated by subject against scikit-learn baselines, with paired tests.

7 folds of whole subjects over the training subjects (21 with the official test split; 15 in the
train-only copy, whose subjects 25-30 are the study's test and stay unused). Each fold trains the
MLP (validation: 3 of the fold's other subjects) and the baselines on the same per-subject-
standardised features. Default: the ablation's best run by validation (configs/har.py); ``:best``
is configs/har.py:best, the MLP chosen by this cross-validation (results: README.md).

    python -m experiments.cross_validate --config=configs/har_cv.py
    python -m experiments.cross_validate --config=configs/har_cv.py:best   # one ensemble per fold
    python -m experiments.cross_validate --config=configs/har_cv.py:5x2    # Dietterich's 5x2cv
"""

import ml_collections

from mlp.configs import har


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg == "best":
    c = har.get_config("best")
    c.name = "har_cv_best"
    c.seeds = c.ensemble  # one ensemble per fold
    _add_cv(c)
    return c
  c = har.get_config()
  c.name = "har_cv"
  # The ablation's best run by validation accuracy (configs/har.py, val subjects 14, 15, 19).
  c.model.hidden = (300, 200)
  c.train.batch_size = 1
  c.train.learning_rate = 0.001
  c.train.momentum = 0.09
  c.grid = ml_collections.ConfigDict()
  c.extra_runs = ml_collections.ConfigDict()
  c.report.title = "HAR MLP vs baselines"
  c.report.compare_with_best = ""
  c.report.figure_groups = ()
  _add_cv(c)
  if arg == "5x2":
    c.name = "har_cv_5x2"
    c.cv.scheme = "5x2"
  elif arg == "quick":
    c.name = "har_cv_quick"
    c.model.hidden = (64, 16)
    c.train.batch_size = 50
    c.train.learning_rate = 0.01
    c.train.max_epochs = 4
    c.train.gap_min_epoch = 2
    c.cv.folds = 3
    c.cv.baselines = ("logistic_regression", "decision_tree")
  elif arg not in (None, ""):
    raise ValueError(
      f"unknown variant {arg!r} of configs/har_cv.py; use :best, :5x2, :quick or nothing"
    )
  return c


def _add_cv(c: ml_collections.ConfigDict) -> None:
  """The cross-validation settings that differ from configs/base.py's cv section."""
  # Tuned on each fold's training subjects alone (mlp.baselines); <name>_default: untuned.
  c.cv.baselines = har.BASELINES + ("decision_tree",)
