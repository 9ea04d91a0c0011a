"""Refit after selection: train.chosen_epochs, train.refit, and a study run with train.refit."""

import numpy as np
import pytest

from mlp import checkpoint, plan, rundir, study, train
from mlp import data as data_lib
from mlp import stopping as stopping_lib
from tests.data_fixtures import one_run_har_config, write_fake_har


def test_chosen_epochs_is_the_best_monitored_epoch_under_patience():
  h = {"val_loss": [1.0, 0.5, 0.7, 0.5, 0.9], "val_acc": [0.1, 0.6, 0.8, 0.8, 0.2]}
  rules = lambda *r: stopping_lib.chain(*r, stopping_lib.MaxEpochs(5))  # noqa: E731
  patience = lambda monitor: rules(stopping_lib.Patience(2, monitor))  # noqa: E731
  assert train.chosen_epochs(h, patience("val_loss"), 5) == 2
  assert train.chosen_epochs(h, patience("val_acc"), 5) == 3
  h_nan = {"val_loss": [1.0, float("nan"), 0.9]}
  assert train.chosen_epochs(h_nan, patience("val_loss"), 3) == 3
  gap = rules(stopping_lib.Gap(0.1, 0))
  assert train.chosen_epochs(h, gap, 5) == 5  # gap: the epochs it trained


@pytest.fixture(scope="module")
def har_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("har_refit")
  write_fake_har(root, subjects=(1, 3, 5, 6, 7, 8, 25, 26, 27), rows_per_subject=24)
  return root


def refit_config(refit: bool):
  cfg = one_run_har_config()
  cfg.train.early_stopping = "patience"
  cfg.train.patience = 2
  cfg.train.max_epochs = 5
  cfg.train.refit = refit
  return cfg


@pytest.mark.slow
def test_refit_trains_on_train_and_val_for_the_chosen_epochs(har_dir, tmp_path):
  cfg = refit_config(True)
  lines = []
  (result,) = study.run_study(cfg, tmp_path / "w", data_dir=str(har_dir), log=lines.append)
  data = data_lib.load(cfg.data, str(har_dir))
  (p,) = plan.build(plan.study_plan(cfg).runs, data.input_shape, data.num_classes)
  chosen = train.chosen_epochs(result["history"], p.stopping, result["epochs"])
  assert result["refit"]["epochs"] == chosen
  assert any("refit on train + val" in line and f"{chosen} epochs" in line for line in lines)
  # The saved model is the refit one: same init seed, trained on more rows, so different params,
  # and the reported test accuracy is its accuracy.
  saved = checkpoint.load(rundir.run_dir(tmp_path / "w", p) / "model")
  x, y = data.tests["test"]
  acc = np.mean(train.log_probs(p.spec, saved.params, saved.state, p.hyper, x).argmax(1) == y)
  assert result["tests"]["test"]["topk"][0] == pytest.approx(acc)
  both = (data.x_train, data.y_train, data.x_val, data.y_val)
  again = train.refit(plan.groups([p])[0].population(), both, [chosen])
  assert again.epochs.tolist() == [chosen]
  for a, b in zip(checkpoint_leaves(saved.params), checkpoint_leaves(again.params), strict=True):
    np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=1e-6)
  plain = study.run_study(refit_config(False), tmp_path / "p", data_dir=str(har_dir), log=print)[0]
  assert "refit" not in plain
  assert plain["val"] == result["val"]  # "val" is the selection model's, refit or not
  saved_plain = checkpoint.load(rundir.run_dir(tmp_path / "p", p) / "model")
  pairs = zip(checkpoint_leaves(saved.params), checkpoint_leaves(saved_plain.params), strict=True)
  assert not all(np.allclose(a, b) for a, b in pairs)


def checkpoint_leaves(tree):
  import jax

  return [np.asarray(a) for a in jax.tree.leaves(tree)]
