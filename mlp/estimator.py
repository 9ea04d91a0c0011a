"""A scikit-learn classifier for arrays, trained by the studies' own jitted code.

    from mlp import MLPClassifier

    clf = MLPClassifier(hidden=(300, 100), learning_rate=0.01, momentum=0.9).fit(X, y)
    clf.predict(X_test), clf.predict_proba(X_test), clf.score(X_test, y_test)
    MLPClassifier(layers="conv32 bn relu maxpool2 flatten dense").fit(images, y)  # (n, H, W, C)

It follows scikit-learn's developer guide (``BaseEstimator``, ``ClassifierMixin``): the
constructor stores its arguments as given and checks nothing; ``fit`` validates the data with
``sklearn.utils.validation``, sets ``classes_`` and ``n_features_in_``; a method of an unfitted
estimator raises ``NotFittedError``; ``clone``, ``get_params``/``set_params``, grid searches and
pipelines work, and ``sklearn.utils.estimator_checks.check_estimator`` passes
(:func:`expected_failed_checks` lists what it cannot pass, with the reason).

Each setting is the field of a study config's ``train`` or ``model`` section of the same name, at
its configs/base.py default (``dropout`` is train.dropout's per-layer rates, ``dropout_kind``
model.dropout, ``random_state`` the seed): a fit is a one-run study's run (mlp.plan, mlp.train), so
with a study run's settings, data and seed it gives that run's numbers. Without ``X_val``, a
stratified ``validation_fraction`` of the rows is held out when the stopping rule needs
validation (early_stopping gap or patience, or refit). Compiled programs are kept in JAX's
persistent cache (mlp.compile_cache): a new process fitting the same shapes does not compile
them again.
"""

from __future__ import annotations

import numbers
import time
from typing import Any

import jax
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from mlp import compile_cache, plan, stopping, train
from mlp.configs import base
from mlp.data import common
from mlp.defaults import DEFAULTS
from mlp.spec import Population

_TRAIN, _MODEL = DEFAULTS.train, DEFAULTS.model
# Parameters that are config fields under another name: (section, field).
RENAMED = {"dropout": ("train", "dropout"), "dropout_kind": ("model", "dropout")}
MODEL_FIELDS = ("hidden", "layers", "dropout_kind", "softmax_grad")
# The estimator's own parameters, which no config has.
OWN = ("input_shape", "validation_fraction", "random_state", "warm_start", "verbose")
# Train fields the estimator does not take, and why.
NOT_EXPOSED = {
  "freeze": "freezing layers is for transfer learning, which starts from a saved study model",
  "checkpoint_minutes": "in-run checkpoints are a study's, for resuming a run in its workdir",
}
EVAL_BUCKET = 8  # predictions pad the rows to a power of two from this: few compiled programs


def expected_failed_checks(estimator: MLPClassifier) -> dict[str, str]:  # noqa: ARG001
  """The scikit-learn estimator checks MLPClassifier is known not to pass, with the reason
  (``check_estimator(..., expected_failed_checks=...)``): none."""
  return {}


class MLPClassifier(ClassifierMixin, BaseEstimator):
  """A network with a softmax output trained by hand-written backprop (:func:`mlp.train.fit`).

  The network: ``hidden`` widths (ReLU; None: configs/base.py's ``model.hidden``) with
  ``dropout`` rates per Dense-layer input (None: no dropout), or an architecture string
  ``layers`` (mlp/layers.py: ``"dense300 relu dense"``, a CNN ``"conv32 relu maxpool2 flatten
  dense"``), one or the other. Images come as (n, H, W, C) arrays, or as flat rows with their
  ``input_shape``. ``warm_start``: a new fit starts from the fitted parameters. ``verbose``: a
  line per epoch. ``random_state``: an int seed (None or a RandomState draw one per fit).
  """

  def __init__(
    self,
    *,
    hidden: tuple[int, ...] | None = None,
    layers: str | None = None,
    dropout: tuple[float, ...] | None = None,
    dropout_kind: str = _MODEL.dropout,
    softmax_grad: str = _MODEL.softmax_grad,
    batch_size: int = _TRAIN.batch_size,
    learning_rate: float = _TRAIN.learning_rate,
    momentum: float = _TRAIN.momentum,
    l2: float = _TRAIN.l2,
    lr_decay: float = _TRAIN.lr_decay,
    optimizer: str = _TRAIN.optimizer,
    beta2: float = _TRAIN.beta2,
    schedule: str = _TRAIN.schedule,
    warmup_epochs: float = _TRAIN.warmup_epochs,
    label_smoothing: float = _TRAIN.label_smoothing,
    compute_dtype: str = _TRAIN.compute_dtype,
    augment_flip: bool = _TRAIN.augment_flip,
    augment_shift: int = _TRAIN.augment_shift,
    max_epochs: int = _TRAIN.max_epochs,
    early_stopping: str = _TRAIN.early_stopping,
    gap: float = _TRAIN.gap,
    gap_min_epoch: int = _TRAIN.gap_min_epoch,
    patience: int = _TRAIN.patience,
    monitor: str = _TRAIN.monitor,
    diverge: float = _TRAIN.diverge,
    train_metrics: str = _TRAIN.train_metrics,
    refit: bool = _TRAIN.refit,
    input_shape: tuple[int, ...] | None = None,
    validation_fraction: float = 0.1,
    random_state: int | np.random.RandomState | None = DEFAULTS.seed,
    warm_start: bool = False,
    verbose: int = 0,
  ) -> None:
    self.hidden = hidden
    self.layers = layers
    self.dropout = dropout
    self.dropout_kind = dropout_kind
    self.softmax_grad = softmax_grad
    self.batch_size = batch_size
    self.learning_rate = learning_rate
    self.momentum = momentum
    self.l2 = l2
    self.lr_decay = lr_decay
    self.optimizer = optimizer
    self.beta2 = beta2
    self.schedule = schedule
    self.warmup_epochs = warmup_epochs
    self.label_smoothing = label_smoothing
    self.compute_dtype = compute_dtype
    self.augment_flip = augment_flip
    self.augment_shift = augment_shift
    self.max_epochs = max_epochs
    self.early_stopping = early_stopping
    self.gap = gap
    self.gap_min_epoch = gap_min_epoch
    self.patience = patience
    self.monitor = monitor
    self.diverge = diverge
    self.train_metrics = train_metrics
    self.refit = refit
    self.input_shape = input_shape
    self.validation_fraction = validation_fraction
    self.random_state = random_state
    self.warm_start = warm_start
    self.verbose = verbose

  def __sklearn_tags__(self):
    tags = super().__sklearn_tags__()
    tags.input_tags.two_d_array = True  # flat rows; (n, H, W, C) images are accepted too
    tags.classifier_tags.multi_label = False
    return tags

  # ------------------------------------------------------------------------------ training

  def fit(self, X: Any, y: Any, *, X_val: Any = None, y_val: Any = None) -> MLPClassifier:
    """Train on ``X`` (n, features), or images (n, H, W, C), and labels ``y`` of any values;
    validation on (X_val, y_val), else on a held-out stratified ``validation_fraction`` of the
    rows when the stopping rule needs one. With ``warm_start`` and a fitted network of the same
    shape and classes, training starts from its parameters."""
    warm = self.warm_start and hasattr(self, "params_")
    previous = (self.classes_, self.input_shape_) if warm else None
    X, y = validate_data(self, X, y, dtype=np.float32, allow_nd=True, reset=not warm)
    check_classification_targets(y)
    classes, y_enc = np.unique(y, return_inverse=True)
    if len(classes) < 2:
      raise ValueError(
        f"{type(self).__name__} needs samples of at least 2 classes; the data has 1 class "
        f"({classes[0]!r})"
      )
    X = self._shaped(X)  # (the network's input shape; train gets flat rows)
    if previous is not None and (
      not np.array_equal(previous[0], classes) or previous[1] != X.shape[1:]
    ):
      raise ValueError(
        "warm_start needs the classes and input shape of the previous fit: classes "
        f"{list(previous[0])} and shape {previous[1]}, got {list(classes)} and {X.shape[1:]}"
      )
    self.classes_ = classes
    self.input_shape_ = tuple(X.shape[1:])
    seed = self._seed()
    p = self._plan(seed)
    data = self._split(X.reshape(len(X), -1), y_enc.astype(np.int32), X_val, y_val, p, seed)
    init = self._warm_init() if warm else None
    population = plan.groups([p])[0].population(init)
    fit = self._fit(population, data)
    params, state = fit.params, fit.state
    if p.refit:
      epochs = train.chosen_epochs(fit.history[0], p.stopping, fit.epochs[0])
      again = train.refit(population, data, [epochs])
      params, state = again.params, again.state
    self._keep(p, fit, params, state)
    return self

  def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
    """One epoch over (X, y), from the fitted parameters (the first call initialises them and
    needs ``classes``, every label there will be). The optimizer's state (momentum) starts afresh
    at each call; only the divergence rule applies."""
    first = not hasattr(self, "params_")
    X, y = validate_data(self, X, y, dtype=np.float32, allow_nd=True, reset=first)
    check_classification_targets(y)
    if first:
      if classes is None:
        raise ValueError("the first call to partial_fit needs classes=, every label there will be")
      classes = np.unique(np.asarray(classes))
      if len(classes) < 2:
        raise ValueError(f"{type(self).__name__} needs at least 2 classes; got 1 class")
      self.classes_ = classes
    elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
      raise ValueError(f"classes= differs from the first call's {list(self.classes_)}")
    unknown = np.setdiff1d(y, self.classes_)
    if len(unknown):
      raise ValueError(f"labels {list(unknown)} are not among classes {list(self.classes_)}")
    X = self._shaped(X)
    if first:
      self.input_shape_ = tuple(X.shape[1:])
    y_enc = np.searchsorted(self.classes_, y).astype(np.int32)
    seed = self._seed() if first else self.seed_
    p = self._plan(seed)
    epochs = 0 if first else self.n_epochs_
    diverged = [r for r in p.stopping.rules if isinstance(r, stopping.Diverged)]
    population = plan.groups([p])[0].population(None if first else self._warm_init())
    population = population._replace(
      keys=jax.vmap(lambda k: jax.random.fold_in(k, epochs))(population.keys),  # new shuffles
      stopping=stopping.chain(*diverged, stopping.MaxEpochs(1)),
    )
    flat = X.reshape(len(X), -1)
    fit = self._fit(population, (flat, y_enc, flat, y_enc))
    self._keep(p, fit, fit.params, fit.state, epochs_before=epochs)
    return self

  def _shaped(self, X: np.ndarray) -> np.ndarray:
    """Rows as the network's inputs: flat rows reshaped to ``input_shape`` when it is given."""
    if self.input_shape is None:
      return X
    shape = tuple(int(d) for d in self.input_shape)
    if int(np.prod(shape)) != int(np.prod(X.shape[1:])):
      raise ValueError(f"input_shape {shape} does not hold rows of shape {X.shape[1:]}")
    return X.reshape(len(X), *shape)

  def _seed(self) -> int:
    if isinstance(self.random_state, numbers.Integral):
      return int(self.random_state)
    return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

  def _config(self, seed: int):
    """A one-run study config with these settings (configs/base.py's defaults for the rest)."""
    config = base.get_config()
    config.seed = seed
    if self.layers is not None:
      if self.hidden is not None or self.dropout is not None:
        raise ValueError(
          "give the network one way: layers='...' (an architecture string), or hidden= "
          "with dropout="
        )
      del config.model["hidden"], config.train["dropout"]
      config.model.layers = str(self.layers)
    else:
      if self.hidden is not None:
        config.model.hidden = tuple(int(h) for h in np.atleast_1d(self.hidden))
      n = len(config.model.hidden) + 1
      rates = (0.0,) * n if self.dropout is None else np.atleast_1d(self.dropout)
      config.train.dropout = tuple(float(r) for r in rates)
    for name in self.get_params():
      if name in OWN or name in ("hidden", "layers", "dropout"):
        continue
      section, field = RENAMED.get(name) or (
        "model" if name in MODEL_FIELDS else "train",
        name,
      )
      value = getattr(self, name)
      config[section][field] = value.item() if isinstance(value, np.generic) else value
    return config

  def _plan(self, seed: int) -> plan.Plan:
    (run,) = plan.study_plan(self._config(seed)).runs
    (p,) = plan.build([run], self.input_shape_, len(self.classes_))
    return p

  def _split(self, X, y, X_val, y_val, p: plan.Plan, seed: int) -> tuple:
    """(x_train, y_train, x_val, y_val): the given validation set, a stratified held-out part
    when the stopping rule or refit needs one, else the training rows (val = train)."""
    if (X_val is None) != (y_val is None):
      raise ValueError("give X_val and y_val together")
    if X_val is not None:
      X_val = validate_data(self, X_val, dtype=np.float32, allow_nd=True, reset=False)
      X_val = self._shaped(X_val).reshape(len(X_val), -1)
      if X_val.shape[1] != X.shape[1]:
        raise ValueError(f"X_val's rows hold {X_val.shape[1]} values, X's {X.shape[1]}")
      y_val = np.asarray(y_val).ravel()
      unknown = np.setdiff1d(y_val, self.classes_)
      if len(unknown):
        raise ValueError(f"y_val labels {list(unknown)} are not among {list(self.classes_)}")
      return X, y, X_val, np.searchsorted(self.classes_, y_val).astype(np.int32)
    needs = p.refit or any(
      isinstance(r, stopping.Gap | stopping.Patience) for r in p.stopping.rules
    )
    if needs:
      if not 0.0 < float(self.validation_fraction) < 1.0:
        raise ValueError(
          f"validation_fraction must be in (0, 1), got {self.validation_fraction}; or give "
          "X_val and y_val, or early_stopping='none'"
        )
      keep, val = common.stratified_split(y, float(self.validation_fraction), seed)
      if len(val) and len(np.unique(y[keep])) == len(self.classes_):
        return X[keep], y[keep], X[val], y[val]
    return X, y, X, y  # too few rows per class to hold some out, or no rule that needs them

  def _warm_init(self):
    params, state = self.params_, self.state_

    def init(fresh_params, fresh_state):  # (the fitted ones, with the population axis)
      del fresh_params, fresh_state
      return jax.tree.map(lambda a: np.asarray(a)[None], (params, state))

    return init

  def _fit(self, population: Population, data: tuple) -> train.FitResult:
    compile_cache.enable()
    start = time.perf_counter()

    def on_epoch(epoch: int, members: np.ndarray, m: dict[str, np.ndarray]) -> None:
      del members
      print(
        f"epoch {epoch}: train loss {m['train_loss'][0]:.4f} acc {m['train_acc'][0]:.4f}  "
        f"val loss {m['val_loss'][0]:.4f} acc {m['val_acc'][0]:.4f}  "
        f"({time.perf_counter() - start:.1f}s)",
        flush=True,
      )

    return train.fit(population, data, on_epoch=on_epoch if self.verbose else None)

  def _keep(self, p: plan.Plan, fit: train.FitResult, params, state, epochs_before: int = 0):
    """The fitted attributes (the population's single member)."""
    self.plan_ = p
    self.seed_ = p.seed
    self.params_, self.state_ = jax.tree.map(lambda a: np.asarray(a[0]), (params, state))
    history = fit.history[0]
    if epochs_before:
      history = {k: [*self.history_[k], *v] for k, v in history.items()}
    self.history_ = history
    self.n_epochs_ = epochs_before + int(fit.epochs[0])
    self.n_iter_ = self.n_epochs_
    self.stop_reason_ = fit.stop_reason[0]

  # ----------------------------------------------------------------------------- inference

  def predict_proba(self, X: Any) -> np.ndarray:
    """(n, classes) probabilities, columns in the order of ``classes_``."""
    check_is_fitted(self)
    X = self._shaped(validate_data(self, X, dtype=np.float32, allow_nd=True, reset=False))
    if X.shape[1:] != self.input_shape_:
      raise ValueError(f"X has rows of shape {X.shape[1:]}; the network takes {self.input_shape_}")
    n = len(X)
    # Padded to a bucket size: one compiled program per bucket, not per row count, and a row's
    # probabilities do not depend on how many rows came with it.
    size = max(EVAL_BUCKET, 1 << max(n - 1, 0).bit_length())
    chunk = self.plan_.spec.eval_batch
    size = size if size <= chunk else -(-n // chunk) * chunk
    padded = np.zeros((size, int(np.prod(self.input_shape_))), np.float32)
    padded[:n] = X.reshape(n, -1)
    compile_cache.enable()
    p = self.plan_
    log_p = train.log_probs(p.spec, self.params_, self.state_, p.hyper, padded)[:n]
    probs = np.exp(log_p.astype(np.float64))
    return probs / probs.sum(axis=1, keepdims=True)

  def predict_log_proba(self, X: Any) -> np.ndarray:
    return np.log(self.predict_proba(X))

  def predict(self, X: Any) -> np.ndarray:
    """The most probable class of each row (a value of ``classes_``)."""
    check_is_fitted(self)
    return self.classes_[self.predict_proba(X).argmax(axis=1)]
