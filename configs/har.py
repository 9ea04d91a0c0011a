"""HAR ablation: a 3-layer perceptron (ReLU, ReLU, softmax) on UCI HAR's 561 features.

The study's grid: batch size (1, 50) x 2nd hidden width (100, 200) x learning rate (0.01, 0.001)
x momentum (0, 0.09) = 16 runs, plus regular dropout 0.5 on the network input and the first
hidden layer of (batch 1, width 100, lr 0.001, momentum 0.09): 17 runs. Gap early stopping.

Features are standardised per subject (``data.subject_norm``, mlp.data.har.normalize_by_subject):
each person's rows use that person's own per-feature mean and std, labels unused. The study does
not say how it fed the features; this was chosen on validation accuracy. Net (300, 200), batch 1,
lr 0.001, momentum 0, 51 epochs; val / test top-1, test = subjects 25-30:

  subject_norm   val subjects 14,15,19 (seeds 0,1,2)          other val draws (split_seed 1, 2)
  none           0.853 / 0.941 (seed 0 only)                  0.839 / 0.935, 0.915 / 0.940
  center         0.959 / 0.966, 0.956 / 0.962, 0.954 / 0.962  0.951 / 0.957, 0.956 / 0.955
  standardize    0.981 / 0.956, 0.983 / 0.955, 0.974 / 0.953  0.984 / 0.955, 0.950 / 0.947

The test subjects are normalised with the statistics of their own rows, as every subject is. On
the full 17-run study the best top-1 on subjects 25-30 is 0.957; without it
(``--config.data.subject_norm=none``) 0.943: the held-out people differ from the 12 training
people more than an MLP bridges. A new person's rows need a recording of that person first, to
compute their statistics.

    python -m experiments.har_ablation --config=configs/har.py
    python -m experiments.har_ablation --config=configs/har.py:quick     # smoke test, ~1 minute
    python -m experiments.har_ablation --config=configs/har.py --config.train.max_epochs=20

``:best`` is not the study: the MLP chosen by 7-fold subject-wise cross-validation on the
training subjects (configs/har_cv.py:best; what was tried and the figures: README.md), trained
as three seed ensembles of five and refit on all 15 training subjects.

    python -m experiments.har_ablation --config=configs/har.py:best
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "har_ablation"
  c.seed = 0  # first seed; run k uses seeds seed .. seed + seeds - 1
  c.seeds = 1  # seeds per configuration; with more, tables show mean ± std
  c.ensemble = 1  # > 1: every this many consecutive seeds form one averaged model (mlp.ensemble)
  c.vectorize = ml_collections.config_dict.placeholder(bool)  # None: vmap on GPU, one by one on CPU
  # CPU only: worker processes, each with a one-thread XLA pool on its own core; 0 = one per core
  # (small steps run 2.3x faster on one thread, mlp/workers.py); 1 = this process, every core.
  c.workers = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "har"
  c.data.data_dir = ""  # empty: --data_dir flag, else $MLP_DATA_DIR, else cache/download
  c.data.val_subjects = 3  # validation = this many training subjects (subject-disjoint)
  c.data.split_seed = 0
  c.data.subject_norm = "standardize"  # none | center | standardize, per subject (see above)
  c.data.classes = ()  # class names to keep (empty: all), e.g. to hold classes out

  c.model = ml_collections.ConfigDict()
  c.model.hidden = (300, 100)  # first hidden width: the study does not state it
  c.model.layers = ""  # an architecture string (mlp/layers.py) instead of hidden + train.dropout
  c.model.dropout = "regular"  # regular: train keep-mask, inference x (1 - rate)
  c.model.softmax_grad = "jacobian"  # backprop through the full softmax Jacobian, Eq. 1-2
  c.model.init_from = ""  # a saved model to start from (transfer learning, mlp/transfer.py)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 50
  c.train.learning_rate = 0.01
  c.train.momentum = 0.0
  c.train.l2 = 0.0
  c.train.lr_decay = 1.0
  c.train.dropout = (0.0, 0.0, 0.0)  # rate per Dense-layer input: (input, hidden 1, hidden 2)
  c.train.max_epochs = 100
  c.train.early_stopping = "gap"  # stop when |val loss - train loss| > gap after gap_min_epoch
  c.train.gap = 0.05
  c.train.gap_min_epoch = 50
  c.train.patience = 4
  c.train.monitor = "val_loss"  # what patience watches: val_loss or val_acc
  c.train.diverge = 100.0  # diverged: a loss above this x log(classes), or not finite
  c.train.refit = False  # train again on train + val for the epochs chosen (train.refit)
  c.train.freeze = ""  # layers that never change: "", "all_but_last" or indices "0-3,5"

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

  c.report = ml_collections.ConfigDict()
  c.report.title = "HAR ablation (Table 1)"
  c.report.columns = (
    "BS=train.batch_size",
    "N2=model.hidden.1",
    "LR=train.learning_rate",
    "Mom=train.momentum",
    "Dropout=train.dropout.0",
  )
  c.report.topk = 5
  c.report.test_split = "test"
  c.report.figure_groups = ("train.batch_size", "model.hidden")
  c.report.compare_with_best = "dropout"
  # scikit-learn learners the best run is compared with on the test split (baselines.md)
  c.report.baselines = ("logistic_regression", "linear_svm", "random_forest")

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
  elif arg == "best":
    c.name = "har_best"
    c.grid = ml_collections.ConfigDict()
    c.extra_runs = ml_collections.ConfigDict()
    c.report.title = "HAR: the MLP chosen by subject-wise cross-validation"
    c.report.columns = ("N=model.hidden", "Dropout=train.dropout", "L2=train.l2")
    c.report.compare_with_best = ""
    c.report.figure_groups = ()
    c.model.hidden = (300, 200)
    c.train.batch_size = 50
    c.train.learning_rate = 0.01
    c.train.momentum = 0.9
    c.train.l2 = 0.003
    c.train.dropout = (0.2, 0.5, 0.0)
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
