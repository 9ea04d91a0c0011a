"""scikit-learn learners by name, trained on the same features and folds as our networks.

Each is a standard default a reviewer would run first; the features arrive already preprocessed
exactly as the networks get them (HAR: standardised per subject; images: the config's pixel
preprocessing, flattened), so only the learner differs.
"""

import time
from collections.abc import Callable

import numpy as np

# name -> (description for tables, factory(seed) -> an unfitted sklearn estimator)
BASELINES: dict[str, tuple[str, Callable[[int], object]]] = {}


def _register(name: str, description: str):
  def wrap(factory):
    BASELINES[name] = (description, factory)
    return factory

  return wrap


@_register("logistic_regression", "multinomial logistic regression, L2 C=1 (lbfgs)")
def _logistic(seed: int):
  from sklearn.linear_model import LogisticRegression

  return LogisticRegression(C=1.0, max_iter=2000, random_state=seed)


@_register("linear_svm", "linear SVM, C=1, one-vs-rest (liblinear)")
def _linear_svm(seed: int):
  from sklearn.svm import LinearSVC

  return LinearSVC(C=1.0, max_iter=5000, random_state=seed)


@_register("decision_tree", "decision tree, Gini, grown to purity")
def _tree(seed: int):
  from sklearn.tree import DecisionTreeClassifier

  return DecisionTreeClassifier(random_state=seed)


@_register("random_forest", "random forest, 300 trees, sqrt(d) features per split")
def _forest(seed: int):
  from sklearn.ensemble import RandomForestClassifier

  return RandomForestClassifier(n_estimators=300, n_jobs=-1, random_state=seed)


def check_names(names) -> None:
  """ValueError naming the known baselines when one of ``names`` is unknown."""
  unknown = [n for n in names if n not in BASELINES]
  if unknown:
    raise ValueError(
      f"unknown baseline(s) {', '.join(map(repr, unknown))}; known: {', '.join(BASELINES)}"
    )


def fit_predict(
  name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int
) -> tuple[np.ndarray, float]:
  """(predicted labels for ``x_test``, seconds to fit and predict) of baseline ``name``."""
  import warnings

  from sklearn.exceptions import ConvergenceWarning

  check_names([name])
  est = BASELINES[name][1](seed)
  start = time.perf_counter()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # the iteration caps above are the spec
    est.fit(np.asarray(x_train, np.float32), np.asarray(y_train))
    pred = est.predict(np.asarray(x_test, np.float32))
  return np.asarray(pred, np.int64), time.perf_counter() - start
