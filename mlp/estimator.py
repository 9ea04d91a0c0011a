"""A scikit-learn-style classifier for arrays, trained by the studies' own jitted code.

    from mlp import MLPClassifier

    clf = MLPClassifier(hidden=(300, 100), learning_rate=0.01, momentum=0.9).fit(x, y)
    clf.predict(x_test), clf.predict_proba(x_test), clf.score(x_test, y_test)

Every setting is a field of a study config's ``train`` or ``model`` section (configs/base.py, at
its defaults): ``dropout`` is the per-layer rates (train.dropout) and ``dropout_kind`` the model's
kind (model.dropout); an unknown name is a TypeError. ``fit`` takes a validation set, or holds out
``validation_fraction`` of the training rows (stratified, seeded), for the stopping rule: the same
config, data and seed give the same numbers as a study's run (mlp.trainer).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from mlp import plan, train
from mlp.data import common
from mlp.defaults import DEFAULTS

RENAMED = {"dropout_kind": ("model", "dropout")}  # train.dropout (rates) keeps the plain name


class MLPClassifier:
  """Fully connected ReLU net with a softmax output and hand-written backprop (mlp.train.fit).

  ``hidden``: the hidden widths (None: configs/base.py's ``model.hidden``, or none when a
  ``layers`` architecture string is given)."""

  def __init__(
    self,
    hidden: tuple[int, ...] | None = None,
    *,
    validation_fraction: float = 0.1,
    seed: int = DEFAULTS.seed,
    **settings: Any,
  ) -> None:
    from mlp.configs import base  # the study configs' defaults

    config = base.get_config()
    if hidden is not None:
      config.model.hidden = tuple(int(h) for h in hidden)
    elif "layers" in settings:  # an architecture string is the network: no MLP fields besides
      del config.model["hidden"], config.train["dropout"]
    for name, value in settings.items():
      section, field = RENAMED.get(name) or next(
        ((s, name) for s in ("train", "model") if name in config[s]), (None, name)
      )
      if section is None:
        raise TypeError(
          f"MLPClassifier got an unknown setting {name!r}; settings are the fields of a config's "
          "train and model sections (configs/base.py), e.g. learning_rate, momentum, dropout"
        )
      config[section][field] = tuple(value) if isinstance(value, list) else value
    if not 0.0 < validation_fraction < 1.0:
      raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    self.config, self.validation_fraction, self.seed = config, float(validation_fraction), seed
    self.settings = {"hidden": None if hidden is None else tuple(hidden), **settings}

  def fit(
    self,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
  ) -> MLPClassifier:
    """Train on ``x`` (n, features) and integer labels ``y`` (classes 0..C-1); validation on
    (x_val, y_val), else on a held-out stratified ``validation_fraction`` of the rows."""
    x, y = np.asarray(x, np.float32), np.asarray(y)
    if x.ndim != 2 or y.shape != (len(x),):
      raise ValueError(f"x must be (n, features) and y (n,), got {x.shape} and {y.shape}")
    self.classes_, y = np.unique(y, return_inverse=True)
    if x_val is None:
      x, y, x_val, y_val = self._hold_out(x, y)
    else:
      x_val = np.asarray(x_val, np.float32)
      y_val = np.searchsorted(self.classes_, np.asarray(y_val))
    self.config.seed = int(self.seed)
    (run,) = plan.study_plan(self.config).runs
    (self.plan_,) = plan.build([run], (x.shape[1],), len(self.classes_))
    (group,) = plan.groups([self.plan_])
    data = (x, y.astype(np.int32), x_val, y_val.astype(np.int32))
    fit = train.fit(group.population(), data)
    self.spec_, self.hyper_ = self.plan_.spec, self.plan_.hyper
    self.params_, self.state_ = jax.tree.map(lambda a: a[0], (fit.params, fit.state))
    self.history_, self.n_epochs_ = fit.history[0], int(fit.epochs[0])
    self.stop_reason_ = fit.stop_reason[0]
    return self

  def _hold_out(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    keep, val = common.stratified_split(y, self.validation_fraction, self.seed)
    return x[keep], y[keep], x[val], y[val]

  def predict_proba(self, x: np.ndarray) -> np.ndarray:
    """(n, classes) probabilities, columns in the order of ``classes_``."""
    if not hasattr(self, "params_"):
      raise RuntimeError("this MLPClassifier is not fitted yet: call fit(x, y) first")
    lp = train.log_probs(self.spec_, self.params_, self.state_, self.hyper_, np.asarray(x))
    return np.exp(lp)

  def predict(self, x: np.ndarray) -> np.ndarray:
    best = self.predict_proba(x).argmax(1)  # (raises first when not fitted)
    return self.classes_[best]

  def score(self, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy on (x, y)."""
    return float(np.mean(self.predict(x) == np.asarray(y)))

  def get_params(self, deep: bool = True) -> dict[str, Any]:  # noqa: ARG002 (scikit-learn API)
    """The constructor's arguments (scikit-learn's clone and grid search use them)."""
    return {**self.settings, "validation_fraction": self.validation_fraction, "seed": self.seed}
