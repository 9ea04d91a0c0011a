"""HAR ablation: a 3-layer perceptron (ReLU, ReLU, softmax) on UCI HAR's 561 features.

The study's grid, batch size (1, 50) x 2nd hidden width (100, 200) x learning rate (0.01, 0.001)
x momentum (0, 0.09), plus regular dropout 0.5 on the input and first hidden layer: 17 runs, gap
early stopping, features standardised per subject. ``:best`` is not the study: the MLP chosen by
subject-wise cross-validation (configs/har_cv.py:best), three refit seed ensembles of five.
Figures: RESULTS.md.

    python -m experiments.har_ablation --config=configs/har.py
    python -m experiments.har_ablation --config=configs/har.py:quick     # smoke test, ~1 minute
    python -m experiments.har_ablation --config=configs/har.py:best
"""

import ml_collections

from mlp.configs import base

# The tuned scikit-learn baselines of the HAR studies (mlp/baselines.py: grids, inner folds).
BASELINES = (
  "logistic_regression",
  "linear_svm",
  "rbf_svm",
  "random_forest",
  "gradient_boosting",
  "sklearn_mlp",
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base.get_config()
  c.name = "har_ablation"
  c.workers = 0  # one worker process per core (mlp/workers.py)

  c.data.name = "har"
  c.data.val_subjects = 3  # validation = this many training subjects (subject-disjoint)
  c.data.subject_norm = "standardize"  # none | center | standardize, per subject (see above)

  c.model.hidden = (300, 100)  # first hidden width: the study does not state it
  c.model.dropout = "regular"  # regular: train keep-mask, inference x (1 - rate)
  c.model.softmax_grad = "jacobian"  # backprop through the full softmax Jacobian, Eq. 1-2

  c.train.batch_size = 50
  c.train.dropout = (0.0, 0.0, 0.0)  # rate per Dense-layer input: (input, hidden 1, hidden 2)
  c.train.early_stopping = "gap"  # stop when |val loss - train loss| > gap after gap_min_epoch
  c.train.gap_min_epoch = 50

  c.grid = ml_collections.ConfigDict()
  c.grid.train = ml_collections.ConfigDict()
  c.grid.train.batch_size = (1, 50)
  c.grid.model = ml_collections.ConfigDict()
  c.grid.model.hidden = ((300, 100), (300, 200))
  c.grid.train.learning_rate = (0.01, 0.001)
  c.grid.train.momentum = (0.0, 0.09)

  c.extra_runs = ml_collections.ConfigDict()
  c.extra_runs.dropout = ml_collections.ConfigDict()
  c.extra_runs.dropout.model = ml_collections.ConfigDict({"hidden": (300, 100)})
  c.extra_runs.dropout.train = ml_collections.ConfigDict(
    {"batch_size": 1, "learning_rate": 0.001, "momentum": 0.09, "dropout": (0.5, 0.5, 0.0)}
  )

  c.report.title = "HAR ablation (Table 1)"
  c.report.columns = (
    "BS=train.batch_size",
    "N2=model.hidden.1",
    "LR=train.learning_rate",
    "Mom=train.momentum",
    "Dropout=train.dropout.0",
  )
  c.report.figure_groups = ("train.batch_size", "model.hidden")
  c.report.compare_with_best = "dropout"
  # scikit-learn learners the best run is compared with on the test split (baselines.md), each
  # tuned by inner cross-validation over whole training subjects (mlp.baselines; the untuned
  # learners are <name>_default, e.g. --config.report.baselines="('linear_svm_default',)")
  c.report.baselines = BASELINES

  if arg == "quick":
    c.name = "har_ablation_quick"
    c.model.hidden = (64, 16)
    c.grid.train.batch_size = (10, 50)
    c.grid.model.hidden = ((64, 16), (64, 32))
    c.grid.train.learning_rate = (0.01,)
    c.grid.train.momentum = (0.0, 0.09)
    c.extra_runs.dropout.model.hidden = (64, 16)
    c.extra_runs.dropout.train.batch_size = 10
    c.train.max_epochs = 4
    c.train.gap_min_epoch = 2
    # A smoke test (CI runs it): untuned baselines, seconds instead of minutes of tuning.
    c.report.baselines = ("logistic_regression_default", "linear_svm_default", "rbf_svm_default")
  elif arg == "best":
    c.name = "har_best"
    c.grid = ml_collections.ConfigDict()
    c.extra_runs = ml_collections.ConfigDict()
    c.report.title = "HAR: the MLP chosen by subject-wise cross-validation"
    c.report.columns = (
      "N=model.hidden",
      "Dropout=train.dropout",
      "L2=train.l2",
      "Smoothing=train.label_smoothing",
    )
    c.report.compare_with_best = ""
    c.report.figure_groups = ()
    c.model.hidden = (300, 200)
    c.train.batch_size = 50
    c.train.learning_rate = 0.01
    c.train.momentum = 0.9
    c.train.l2 = 0.003
    c.train.dropout = (0.2, 0.5, 0.0)
    c.train.label_smoothing = 0.1
    c.train.early_stopping = "none"  # a fixed epoch count, chosen by cross-validation
    c.train.max_epochs = 30
    c.train.refit = True  # the final models train on all 15 training subjects
    c.ensemble = 5
    c.seeds = 15  # three ensembles of five: the table's mean ± std is over the three
  elif arg not in (None, ""):
    raise ValueError(
      f"unknown variant {arg!r} of configs/har.py; use configs/har.py, :quick or :best"
    )
  return c
