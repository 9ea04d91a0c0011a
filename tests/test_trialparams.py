"""What optuna-dashboard shows of a study: each run's trial carries its hyperparameters as params
with one set of distributions over the study's runs, and its validation curve."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from mlp import plan, schedule, trialparams
from mlp.configs import har


def quick_plans():
  study = plan.study_plan(har.get_config("quick"))
  return study, plan.build(study.runs, (561,), 6)


def test_a_studys_space_spans_its_runs_values():
  study, plans = quick_plans()
  space = trialparams.space(plans)
  assert space["batch_size"] == IntDistribution(10, 50)  # (a span of 5: linear)
  assert space["hidden"] == CategoricalDistribution(["64-16", "64-32"])
  assert space["momentum"] == FloatDistribution(0.0, 0.09)
  assert space["learning_rate"] == FloatDistribution(0.001, 0.01, log=True)  # (dropout run's)
  assert space["dropout/1"] == FloatDistribution(0.0, 0.5)  # the dropout run's rates
  assert trialparams.space(study.runs) == space  # runs or their plans alike
  params, dists = trialparams.trial_params(plans[0], space)
  assert params["hidden"] == "64-16" and params["batch_size"] == 10
  assert isinstance(params["momentum"], float) and dists == {k: space[k] for k in params}


def test_log_scale_for_positive_values_a_decade_apart():
  assert trialparams._distribution([0.001, 0.1]) == FloatDistribution(0.001, 0.1, log=True)
  assert trialparams._distribution([1, 50]) == IntDistribution(1, 50, log=True)
  assert trialparams._distribution([0.0, 0.1]) == FloatDistribution(0.0, 0.1)
  assert trialparams._distribution([True, False]) == CategoricalDistribution([False, True])


def test_enqueued_and_adopted_trials_carry_params_and_curves(tmp_path):
  study, plans = quick_plans()
  st = schedule.open_study("s", tmp_path, log=lambda s: None)
  schedule.enqueue(st, plans[:2], plans)
  waiting = st.get_trials()
  assert [t.state for t in waiting] == [TrialState.WAITING] * 2
  space = trialparams.space(plans)
  for t, p in zip(waiting, plans[:2], strict=True):
    assert t.user_attrs["run"] == p.id
    assert t.params == trialparams.trial_params(p, space)[0]
    assert t.distributions == {k: space[k] for k in t.params}
  assert schedule.curve({"history": {"val_acc": [0.5, float("nan"), 0.7]}}) == {1: 0.5, 3: 0.7}
  # The Optuna API every dashboard panel reads: completed trials' params, curves and values.
  for t, p, acc in zip(waiting, plans[:2], (0.6, 0.8), strict=True):
    st._storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
    result = {"run": p.id, "history": {"val_acc": [0.4, acc]}, "val": {"topk": [acc]}}
    schedule._tell(st, t._trial_id, result, log=lambda s: None)
  done = st.get_trials()
  assert [t.state for t in done] == [TrialState.COMPLETE] * 2
  assert [t.value for t in done] == pytest.approx([0.6, 0.8])
  assert done[1].intermediate_values == {1: 0.4, 2: 0.8}
  importances = optuna.importance.get_param_importances(st)  # (the dashboard's panel)
  assert set(importances) == set(space)
