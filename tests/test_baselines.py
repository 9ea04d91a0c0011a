"""scikit-learn baselines: the registry, tuning by inner cross-validation on the training part only
(whole subjects for HAR), the untuned versions by name, and the per-fold cache."""

import itertools
import json

import numpy as np
import pytest

from mlp import baselines, crossval
from mlp import data as data_lib
from mlp.configs import har as har_config
from tests.data_fixtures import write_fake_har

TUNED = ("logistic_regression", "linear_svm", "rbf_svm", "random_forest", "gradient_boosting")
TUNED += ("sklearn_mlp", "decision_tree")


def blobs(n_groups=6, rows=30, classes=3, d=5, seed=0):
  """Rows in groups (each group a 'subject' with its own offset), learnable classes."""
  rng = np.random.default_rng(seed)
  means = rng.normal(0, 2, size=(classes, d))
  y = np.tile(np.arange(classes), n_groups * rows // classes)
  groups = np.repeat(np.arange(n_groups) + 10, rows)
  x = (
    means[y]
    + rng.normal(0, 1.5, size=(len(y), d))
    + 0.3 * rng.normal(size=(n_groups, d))[groups - 10]
  )
  return x.astype(np.float32), y, groups


def test_every_learner_comes_tuned_and_untuned_with_a_small_grid():
  x, _, _ = blobs()
  for name in TUNED:
    assert baselines.is_tuned(name)
    assert not baselines.is_tuned(f"{name}_default")
    grid = baselines.BASELINES[name].grid(x)
    points = list(itertools.product(*grid.values()))
    assert 2 <= len(points) <= 9, (name, grid)
    for key in grid:  # every grid key is a parameter of the estimator
      assert key in baselines.BASELINES[name].make(0).get_params(), (name, key)
    assert baselines.grid_text(name, x).count(" in {") == len(grid)
    assert baselines.grid_text(f"{name}_default", x) == ""
  with pytest.raises(ValueError, match="unknown baseline.*known: logistic_regression"):
    baselines.check_names(["svm"])
  # The RBF SVM's gamma is in multiples of scikit-learn's "scale" for these features.
  gammas = baselines.BASELINES["rbf_svm"].grid(x)["gamma"]
  scale = 1 / (x.shape[1] * x.astype(np.float64).var())
  assert gammas == pytest.approx([0.03 * scale, 0.1 * scale, 0.3 * scale])


def test_inner_folds_keep_groups_whole_or_stratify():
  x, y, groups = blobs(n_groups=5)
  splits, text = baselines.inner_folds(y, groups, seed=0)
  assert len(splits) == 3 and "subjects" in text
  for train, test in splits:
    assert not set(groups[train]) & set(groups[test])
  assert sorted(np.concatenate([t for _, t in splits])) == list(range(len(y)))
  assert len(baselines.inner_folds(y, groups, seed=0, k=10)[0]) == 5  # at most one per group
  assert baselines.inner_folds(y, np.zeros_like(groups), seed=0) == (
    [],
    "untuned: fewer than 2 groups to cross-validate on",
  )
  splits, text = baselines.inner_folds(y, None, seed=3)
  assert len(splits) == 3 and "stratified" in text
  for _, test in splits:  # every class in every inner fold, in proportion
    counts = np.bincount(y[test], minlength=3)
    assert counts.max() - counts.min() <= 1
  again, _ = baselines.inner_folds(y, None, seed=3)
  assert all((a[1] == b[1]).all() for a, b in zip(splits, again, strict=True))


def test_tuning_picks_the_best_mean_inner_accuracy_by_brute_force():
  from sklearn.model_selection import GroupKFold

  x, y, groups = blobs(n_groups=6, seed=1)
  out = baselines.tune("decision_tree", x, y, seed=0, groups=groups, n_jobs=1)
  grid = baselines.BASELINES["decision_tree"].grid(x)
  means = {}
  for values in itertools.product(*grid.values()):
    params = dict(zip(grid, values, strict=True))
    accs = []
    for tr, te in GroupKFold(3).split(x, y, groups):
      est = baselines.BASELINES["decision_tree"].make(0).set_params(**params).fit(x[tr], y[tr])
      accs.append((est.predict(x[te]) == y[te]).mean())
    means[values] = float(np.mean(accs))
  best = max(means.values())
  assert out["inner_accuracy"] == pytest.approx(best)
  assert means[tuple(out["params"][k] for k in grid)] == pytest.approx(best)
  assert out["points"] == len(means) and "3 inner folds of whole subjects" in out["inner"]
  # Untuned: no search, the fixed settings.
  plain = baselines.tune("decision_tree_default", x, y, seed=0, groups=groups)
  assert plain["params"] == {} and plain["inner"] == "untuned"


def test_fit_predict_refits_the_chosen_values_on_all_training_rows():
  x, y, groups = blobs(n_groups=6, seed=2)
  x_test, _, _ = blobs(n_groups=2, seed=3)
  fit = baselines.fit_predict("logistic_regression", x, y, x_test, 0, groups=groups, n_jobs=1)
  assert fit.tuning["params"]["C"] in baselines.BASELINES["logistic_regression"].grid(x)["C"]
  ref = baselines.BASELINES["logistic_regression"].make(0).set_params(**fit.tuning["params"])
  assert (fit.pred == ref.fit(x, y).predict(x_test)).all()
  assert fit.seconds > 0
  default = baselines.fit_predict("logistic_regression_default", x, y, x_test, 0)
  ref = baselines.BASELINES["logistic_regression_default"].make(0).fit(x, y)
  assert (default.pred == ref.predict(x_test)).all() and default.tuning["params"] == {}


def test_format_params():
  text = baselines.format_params({"C": 10.0, "gamma": 0.0017825, "hidden_layer_sizes": [300]})
  assert text == "C=10, gamma=0.00178, hidden_layer_sizes=(300)"
  assert baselines.format_params(None) == ""


def test_a_fold_baseline_is_tuned_on_the_folds_training_subjects_and_cached(tmp_path, monkeypatch):
  write_fake_har(tmp_path / "har", subjects=(1, 3, 5, 6, 7, 8, 11, 25, 26), rows_per_subject=18)
  cfg = crossval.fold_config(har_config.get_config("quick"), 3, 0, 0)
  cfg.data.val_subjects = 1
  data = data_lib.load(cfg.data, str(tmp_path / "har"))
  seen = {}
  real = baselines.fit_predict

  def spy(name, x, y, x_test, seed, *, groups=None, **kw):
    seen["groups"] = groups
    seen["rows"] = len(y)
    return real(name, x, y, x_test, seed, groups=groups, n_jobs=1)

  monkeypatch.setattr(baselines, "fit_predict", spy)
  lines = []
  fold_dir = tmp_path / "fold"
  out = crossval._baseline(fold_dir, "decision_tree", data, 0, lines.append)
  # Inner folds over the fold's training subjects (train + val) alone, never its held-out ones.
  train_subjects = set(data.groups_train) | set(data.groups_val)
  assert set(seen["groups"]) == train_subjects and seen["rows"] == len(seen["groups"])
  assert len(train_subjects) >= 3 and not train_subjects & {25, 26}
  assert "whole subjects" in out["inner"] and out["params"] and out["inner_accuracy"] is not None
  assert "chosen by 3 inner folds of whole subjects" in lines[0]
  assert json.loads((fold_dir / "baselines" / "decision_tree.json").read_text()) == out
  # A rerun reads the cache (no tuning); a cache of another grid (or an untuned one) is redone.
  seen.clear()
  assert crossval._baseline(fold_dir, "decision_tree", data, 0, lines.append) == out
  assert not seen
  path = fold_dir / "baselines" / "decision_tree.json"
  path.write_text(json.dumps({k: v for k, v in out.items() if k != "grid"}))
  assert crossval._baseline(fold_dir, "decision_tree", data, 0, lines.append)["grid"]
  assert seen
  assert crossval.chosen_text(out).endswith(f"(inner {out['inner_accuracy']:.4f})")
  assert crossval.chosen_text({"grid": ""}) == "untuned"
