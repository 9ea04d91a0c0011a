"""scikit-learn learners by name, trained on the same features and folds as our networks.

The features arrive already preprocessed exactly as the networks get them (HAR: standardised per
subject; images: the config's pixel preprocessing, flattened), so only the learner differs.

Every learner comes twice:

- ``<name>`` (e.g. ``rbf_svm``): **tuned**. Its hyperparameters are chosen from a small grid
  (:data:`BASELINES`' ``grid``, at most 9 points, written out in :func:`grid_text`) by an inner
  cross-validation on the training part it is given, and only there (:func:`tune`): 3 folds of
  whole groups where the rows have groups (HAR: subjects, ``GroupKFold``), else 3 stratified folds
  (seeded); the grid point with the best mean inner accuracy (on a tie the first in
  scikit-learn's ParameterGrid order) is refitted on the whole training part. The inner folds run
  in parallel (``GridSearchCV(n_jobs=-1)``). With fewer than 2 groups (or a class with fewer than
  2 rows) there is nothing to cross-validate and the learner keeps its fixed settings (said in
  ``tuning``).
- ``<name>_default``: **untuned**, the learner at the fixed settings in its description (mostly
  scikit-learn's defaults), the baselines the study compared with before tuning.

Grids (``gamma`` in multiples of scikit-learn's ``"scale"``, 1 / (d Var(x)), so one grid fits
561 features and 2304 pixels):

- logistic_regression: C in {0.001, 0.01, 0.1, 1} (on HAR the inner folds chose 0.01, the
  smallest of {0.01, 0.1, 1, 10}, and C = 10 cost most of the tuning's time)
- linear_svm: C in {0.0001, 0.001, 0.01, 0.1, 1}
- rbf_svm: C in {1, 10, 100} x gamma in {0.03, 0.1, 0.3} x scale (on HAR the inner folds chose
  the smallest gamma of {0.3, 1, 3} and then of {0.1, 0.3, 1} x scale: the grid moved down)
- decision_tree: max_depth in {8, 16, None} x min_samples_leaf in {1, 5}
- random_forest (300 trees): max_features in {sqrt, 0.2} x max_depth in {16, None}
- gradient_boosting (HistGradientBoostingClassifier, 100 rounds at most, early stopping on 10%):
  learning_rate in {0.1, 0.3} x max_leaf_nodes in {15, 31} (kept to 4 points: a grid of 6 at 200
  rounds took over 450 CPU seconds on HAR without finishing)
- sklearn_mlp (MLPClassifier, Adam, early stopping on 10%): hidden_layer_sizes in {(100,),
  (300,)} x alpha in {1e-4, 1e-3, 1e-2}
"""

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

INNER_FOLDS = 3  # inner cross-validation folds of the tuning
_FAILED = "untuned: every grid point failed in the inner folds (too few rows?)"


@dataclasses.dataclass(frozen=True)
class Baseline:
  """A learner: its table description, a factory ``make(seed)`` of the unfitted estimator at its
  fixed settings, and the tuning grid ``grid(x)`` (None: never tuned)."""

  description: str
  make: Callable[[int], Any]
  grid: Callable[[np.ndarray], dict[str, list]] | None = None


BASELINES: dict[str, Baseline] = {}


def _register(name: str, description: str, grid=None, default: str | None = None):
  """Registers ``name`` (tuned over ``grid``) and ``name_default`` (untuned, ``default``)."""

  def wrap(factory):
    BASELINES[name] = Baseline(description, factory, grid)
    BASELINES[f"{name}_default"] = Baseline(default or description, factory, None)
    return factory

  return wrap


def _scale(x: np.ndarray) -> float:
  """scikit-learn's ``gamma="scale"``: 1 / (number of features x variance of x)."""
  var = float(np.asarray(x, np.float64).var())
  return 1.0 / (x.shape[1] * var) if var > 0 else 1.0


@_register(
  "logistic_regression",
  "multinomial logistic regression, L2, C by inner CV (lbfgs)",
  grid=lambda x: {"C": [0.001, 0.01, 0.1, 1.0]},
  default="multinomial logistic regression, L2 C=1 (lbfgs)",
)
def _logistic(seed: int):
  from sklearn.linear_model import LogisticRegression

  return LogisticRegression(C=1.0, max_iter=2000, random_state=seed)


@_register(
  "linear_svm",
  "linear SVM, one-vs-rest, C by inner CV (liblinear)",
  grid=lambda x: {"C": [0.0001, 0.001, 0.01, 0.1, 1.0]},
  default="linear SVM, C=1, one-vs-rest (liblinear)",
)
def _linear_svm(seed: int):
  from sklearn.svm import LinearSVC

  return LinearSVC(C=1.0, max_iter=5000, random_state=seed)


@_register(
  "rbf_svm",
  "RBF-kernel SVM, one-vs-one, C and gamma by inner CV (libsvm)",
  grid=lambda x: {"C": [1.0, 10.0, 100.0], "gamma": [f * _scale(x) for f in (0.03, 0.1, 0.3)]},
  default="RBF-kernel SVM, C=1, gamma=scale, one-vs-one (libsvm)",
)
def _rbf_svm(seed: int):
  from sklearn.svm import SVC

  return SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)


@_register(
  "decision_tree",
  "decision tree, Gini, depth and leaf size by inner CV",
  grid=lambda x: {"max_depth": [8, 16, None], "min_samples_leaf": [1, 5]},
  default="decision tree, Gini, grown to purity",
)
def _tree(seed: int):
  from sklearn.tree import DecisionTreeClassifier

  return DecisionTreeClassifier(random_state=seed)


@_register(
  "random_forest",
  "random forest, 300 trees, features per split and depth by inner CV",
  grid=lambda x: {"max_features": ["sqrt", 0.2], "max_depth": [16, None]},
  default="random forest, 300 trees, sqrt(d) features per split",
)
def _forest(seed: int):
  from sklearn.ensemble import RandomForestClassifier

  return RandomForestClassifier(n_estimators=300, n_jobs=-1, random_state=seed)


@_register(
  "gradient_boosting",
  "gradient-boosted trees (histogram), learning rate and leaves by inner CV, early stopping",
  grid=lambda x: {"learning_rate": [0.1, 0.3], "max_leaf_nodes": [15, 31]},
  default="gradient-boosted trees (histogram), learning rate 0.1, 31 leaves, early stopping",
)
def _boosting(seed: int):
  from sklearn.ensemble import HistGradientBoostingClassifier

  return HistGradientBoostingClassifier(
    max_iter=100, early_stopping=True, validation_fraction=0.1, random_state=seed
  )


@_register(
  "sklearn_mlp",
  "scikit-learn's MLPClassifier (ReLU, Adam), width and L2 alpha by inner CV, early stopping",
  grid=lambda x: {"hidden_layer_sizes": [(100,), (300,)], "alpha": [1e-4, 1e-3, 1e-2]},
  default="scikit-learn's MLPClassifier, 100 ReLU units, alpha 1e-4, Adam, early stopping",
)
def _sklearn_mlp(seed: int):
  from sklearn.neural_network import MLPClassifier

  return MLPClassifier(early_stopping=True, max_iter=200, random_state=seed)


def check_names(names: Sequence[str]) -> None:
  """ValueError naming the known baselines when one of ``names`` is unknown."""
  unknown = [n for n in names if n not in BASELINES]
  if unknown:
    raise ValueError(
      f"unknown baseline(s) {', '.join(map(repr, unknown))}; known: {', '.join(BASELINES)}"
    )


def is_tuned(name: str) -> bool:
  """Whether baseline ``name`` is tuned by inner cross-validation."""
  check_names([name])
  return BASELINES[name].grid is not None


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.3g}"
  if isinstance(value, tuple | list):  # a width tuple (a list once read back from JSON)
    return "(" + ", ".join(map(str, value)) + ")"
  return str(value)


def format_params(params: Mapping[str, Any] | None) -> str:
  """``{"C": 10.0, "gamma": 0.0018}`` as ``C=10, gamma=0.0018`` (empty for None)."""
  return ", ".join(f"{k}={_format(v)}" for k, v in (params or {}).items())


def grid_text(name: str, x: np.ndarray | None = None) -> str:
  """Baseline ``name``'s grid as text (``x``: the features the data-dependent values are for)."""
  check_names([name])
  grid = BASELINES[name].grid
  if grid is None:
    return ""
  values = grid(np.ones((2, 1)) if x is None else x)
  return "; ".join(f"{k} in {{{', '.join(_format(v) for v in vs)}}}" for k, vs in values.items())


def inner_folds(
  y: np.ndarray, groups: np.ndarray | None, seed: int, k: int = INNER_FOLDS
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
  """The inner cross-validation's (train rows, test rows) pairs and a sentence saying what they
  are: ``k`` folds of whole groups (``GroupKFold``) when ``groups`` is given, else ``k``
  stratified folds (shuffled, ``seed``); fewer when there are fewer groups (or rows of the
  smallest class); no folds when fewer than 2."""
  from sklearn.model_selection import GroupKFold, StratifiedKFold

  y = np.asarray(y)
  dummy = np.zeros((len(y), 1))
  if groups is not None:
    groups = np.asarray(groups)
    k = min(k, len(np.unique(groups)))
    if k < 2:
      return [], "untuned: fewer than 2 groups to cross-validate on"
    splits = list(GroupKFold(n_splits=k).split(dummy, y, groups))
    return splits, f"{k} inner folds of whole subjects (GroupKFold)"
  k = min(k, int(np.unique(y, return_counts=True)[1].min()) if len(y) else 0)
  if k < 2:
    return [], "untuned: a class has fewer than 2 rows to cross-validate on"
  splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(dummy, y))
  return splits, f"{k} stratified inner folds (seed {seed})"


def _with_params(est, params: Mapping[str, Any]):
  return est.set_params(**params) if params else est


def tune(
  name: str,
  x: np.ndarray,
  y: np.ndarray,
  seed: int,
  *,
  groups: np.ndarray | None = None,
  folds: int = INNER_FOLDS,
  n_jobs: int = -1,
) -> dict[str, Any]:
  """Choose baseline ``name``'s hyperparameters by inner cross-validation on ``(x, y)`` alone.

  Returns ``params`` (the chosen grid point; {} when untuned), ``inner_accuracy`` (its mean inner
  accuracy; None when untuned), ``inner`` (a sentence on the folds), ``grid`` (:func:`grid_text`)
  and ``points`` (grid points tried). ``groups`` (HAR: subject ids) keeps each group in one fold.
  """
  from sklearn.model_selection import GridSearchCV

  check_names([name])
  b = BASELINES[name]
  x = np.asarray(x, np.float32)
  y = np.asarray(y)
  if b.grid is None:
    return {"params": {}, "inner_accuracy": None, "inner": "untuned", "grid": "", "points": 0}
  grid = b.grid(x)
  splits, inner = inner_folds(y, groups, seed, folds)
  out = {"grid": grid_text(name, x), "inner": inner}
  if not splits:
    return {**out, "params": {}, "inner_accuracy": None, "points": 0}
  est = b.make(seed)
  if "n_jobs" in est.get_params():
    est.set_params(n_jobs=1)  # the grid's fits run in parallel instead
  search = GridSearchCV(est, grid, cv=splits, scoring="accuracy", n_jobs=n_jobs, refit=False)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # convergence at the iteration caps is part of the spec
    try:
      search.fit(x, y)
    except ValueError as e:  # every fit failed (e.g. too few rows for an early-stopping split)
      if "fits failed" not in str(e):
        raise
      return {**out, "params": {}, "inner_accuracy": None, "points": 0, "inner": _FAILED}
  scores = np.asarray(search.cv_results_["mean_test_score"], np.float64)
  if not np.isfinite(scores).any():
    return {**out, "params": {}, "inner_accuracy": None, "points": 0, "inner": _FAILED}
  best = int(np.flatnonzero(scores == np.nanmax(scores))[0])  # ties: the first in ParameterGrid
  chosen = {k: search.cv_results_["params"][best][k] for k in grid}
  return {**out, "params": chosen, "inner_accuracy": float(scores[best]), "points": len(scores)}


@dataclasses.dataclass(frozen=True)
class Fit:
  """A baseline's predictions on the test rows, the seconds it took (tuning included) and what
  the tuning chose (:func:`tune`'s dict)."""

  pred: np.ndarray
  seconds: float
  tuning: dict[str, Any]


def fit_predict(
  name: str,
  x_train: np.ndarray,
  y_train: np.ndarray,
  x_test: np.ndarray,
  seed: int,
  *,
  groups: np.ndarray | None = None,
  n_jobs: int = -1,
) -> Fit:
  """Baseline ``name`` tuned on the training rows (:func:`tune`; ``groups``: their subjects),
  fitted on all of them at the chosen values and its predicted labels for ``x_test``."""
  from sklearn.exceptions import ConvergenceWarning

  check_names([name])
  start = time.perf_counter()
  x = np.asarray(x_train, np.float32)
  y = np.asarray(y_train)
  tuning = tune(name, x, y, seed, groups=groups, n_jobs=n_jobs)
  est = _with_params(BASELINES[name].make(seed), tuning["params"])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # the iteration caps above are the spec
    est.fit(x, y)
    pred = est.predict(np.asarray(x_test, np.float32))
  return Fit(np.asarray(pred, np.int64), time.perf_counter() - start, tuning)
