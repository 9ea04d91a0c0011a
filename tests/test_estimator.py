"""mlp.MLPClassifier as a scikit-learn estimator: scikit-learn's own checks, model selection,
pipelines, warm starts and partial fits, image arrays, and its settings as config fields."""

import inspect

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from mlp import MLPClassifier, estimator
from mlp.configs import base

# Small and quick to converge: the checks fit on tiny blobs many times.
SMALL = dict(hidden=(16,), learning_rate=0.1, momentum=0.9, batch_size=16, max_epochs=30)


def blobs(n=240, d=6, c=3, seed=0, spread=3.0):
  centers = np.random.default_rng(7).normal(size=(c, d)) * spread
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, n)
  return centers[y] + rng.normal(size=(n, d)), y


def test_scikit_learns_estimator_checks_pass():
  """Every check of check_estimator passes but the declared ones (none today), each with its
  reason: clone, get/set_params, NotFittedError, n_features_in_, input validation (NaN, empty,
  sparse, 1-D, complex, object), label types, pickling, idempotent fits, invariance of the
  predictions to the rows' order and batch, partial_fit's feature count."""
  clf = MLPClassifier(**SMALL)
  failed = estimator.expected_failed_checks(clf)
  assert all(reason for reason in failed.values())
  results = check_estimator(clf, expected_failed_checks=failed, on_fail=None)
  bad = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
  assert not bad, bad
  assert sum(r["status"] == "passed" for r in results) >= 50


def test_every_setting_is_a_config_field_at_its_default():
  """The constructor's parameters are config fields of the train and model sections (under
  another name where estimator.RENAMED says), at configs/base.py's defaults, or its own."""
  config = base.get_config()
  params = inspect.signature(MLPClassifier).parameters
  for name, p in params.items():
    assert p.kind == p.KEYWORD_ONLY, name
    if name in estimator.OWN:
      continue
    section, field = estimator.RENAMED.get(name) or (
      "model" if name in estimator.MODEL_FIELDS else "train",
      name,
    )
    assert field in config[section], name
    if name not in ("hidden", "layers", "dropout"):  # None: the network's own defaults
      assert p.default == config[section][field], name
  covered = {estimator.RENAMED.get(n, (None, n))[1] for n in params}
  left = set(config.train) - covered
  assert left <= set(estimator.NOT_EXPOSED), left  # each with its reason there


def test_unfitted_and_wrong_inputs_say_what_is_wrong():
  X, y = blobs()
  with pytest.raises(NotFittedError):
    MLPClassifier().predict(X)
  with pytest.raises(ValueError, match="one way"):
    MLPClassifier(hidden=(8,), layers="dense8 relu dense").fit(X, y)
  with pytest.raises(ValueError, match="1 class"):
    MLPClassifier().fit(X, np.zeros(len(X)))
  with pytest.raises(ValueError, match="Unknown label type"):
    MLPClassifier().fit(X, np.linspace(0, 1, len(X)))
  with pytest.raises(ValueError, match="NaN"):
    MLPClassifier().fit(np.where(X > 2, np.nan, X), y)
  clf = MLPClassifier(**{**SMALL, "max_epochs": 2}, early_stopping="none").fit(X, y)
  with pytest.raises(ValueError, match="X has 5 features, but MLPClassifier is expecting 6"):
    clf.predict(X[:, :5])


def test_cross_val_score_a_pipeline_and_clone():
  X, y = blobs()
  pipe = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(**SMALL))])
  scores = cross_val_score(pipe, X, y, cv=3)
  assert scores.shape == (3,) and scores.min() > 0.9
  copy = clone(pipe)
  assert copy.get_params()["mlp__learning_rate"] == SMALL["learning_rate"]
  assert not hasattr(copy.named_steps["mlp"], "classes_")  # an unfitted copy
  assert repr(MLPClassifier(learning_rate=0.5)) == "MLPClassifier(learning_rate=0.5)"


def test_a_grid_search_over_two_learning_rates_trains_two_different_models():
  """set_params reaches the training (the constructor derives nothing): each candidate is its
  own model, and the best one is refit with its own learning rate."""
  X, y = blobs(spread=1.5)  # (overlapping: an untrained network is far from the best)
  grid = {"learning_rate": [1e-5, 0.1]}
  search = GridSearchCV(MLPClassifier(**SMALL), grid, cv=2).fit(X, y)
  slow, fast = search.cv_results_["mean_test_score"]
  assert fast > 0.8 and slow < 0.5, (slow, fast)
  assert search.best_params_ == {"learning_rate": 0.1}
  assert search.best_estimator_.plan_.hyper.learning_rate == np.float32(0.1)
  a, b = (
    clone(search.estimator).set_params(learning_rate=lr).fit(X, y).params_
    for lr in grid["learning_rate"]
  )
  assert not np.allclose(a[0].w, b[0].w)


def test_same_seed_same_model_and_verbose_epoch_lines(capsys):
  X, y = blobs()
  a = MLPClassifier(**SMALL, random_state=3).fit(X, y)
  b = MLPClassifier(**SMALL, random_state=3).fit(X, y)
  np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
  c = MLPClassifier(**SMALL, random_state=4).fit(X, y)
  assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
  assert capsys.readouterr().out == ""
  MLPClassifier(**{**SMALL, "max_epochs": 3}, early_stopping="none", verbose=1).fit(X, y)
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 3 and lines[0].startswith("epoch 1: train loss")


def test_warm_start_and_partial_fit_continue_from_the_fitted_network():
  X, y = blobs()
  first = MLPClassifier(**{**SMALL, "max_epochs": 3}, early_stopping="none").fit(X, y)
  ended = first.params_[0].w.copy()
  # A warm start at a tiny learning rate stays where the first fit ended; a cold one does not.
  warm = first.set_params(warm_start=True, learning_rate=1e-9, max_epochs=1).fit(X, y)
  np.testing.assert_allclose(warm.params_[0].w, ended, atol=1e-6)
  cold = clone(warm).set_params(warm_start=False).fit(X, y)
  assert not np.allclose(cold.params_[0].w, ended, atol=1e-3)
  with pytest.raises(ValueError, match="classes"):
    warm.fit(X[y < 2], y[y < 2])

  inc = MLPClassifier(**SMALL)
  with pytest.raises(ValueError, match="classes="):
    inc.partial_fit(X[:40], y[:40])
  accs = []
  for k in range(4):
    part = slice(60 * k, 60 * (k + 1))
    inc.partial_fit(X[part], y[part], classes=[0, 1, 2])
    accs.append(inc.score(X, y))
  assert inc.n_epochs_ == 4 and len(inc.history_["train_loss"]) == 4
  assert accs[-1] > 0.9
  with pytest.raises(ValueError, match="features"):
    inc.partial_fit(X[:10, :5], y[:10])


def test_a_cnn_on_image_arrays_and_on_flat_rows_with_their_shape():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 160)
  images = rng.normal(size=(160, 8, 8, 1)).astype(np.float32)
  images[y == 1, 2:6, 2:6, 0] += 2.0  # a bright square marks class 1
  cnn = dict(layers="conv4 relu maxpool2 flatten dense", learning_rate=0.05, momentum=0.9)
  cnn.update(batch_size=16, max_epochs=15)
  a = MLPClassifier(**cnn).fit(images, y)
  assert a.plan_.spec.net.input_shape == (8, 8, 1) and a.score(images, y) > 0.9
  flat = images.reshape(160, -1)
  b = MLPClassifier(**cnn, input_shape=(8, 8, 1)).fit(flat, y)
  np.testing.assert_array_equal(a.predict_proba(images), b.predict_proba(flat))
  with pytest.raises(ValueError, match="input_shape"):
    MLPClassifier(**cnn, input_shape=(7, 7, 1)).fit(flat, y)
