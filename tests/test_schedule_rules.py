"""How a study's runs are scheduled as trials: enqueue and duplicate rules (mlp.schedule), on
hand-made trials."""

from configs import har as har_config
from mlp import plan
from mlp import schedule as engine
from tests.test_search_rules import C, F, R, W, trial

RUNS = list(plan.study_plan(har_config.get_config("quick")).runs)
A, B = RUNS[0].id, RUNS[1].id


def test_runs_without_a_result_or_an_active_trial_are_enqueued():
  assert engine.to_enqueue(RUNS, [], retry_errors=False) == RUNS
  trials = [trial(0, C, run=A), trial(1, W, run=B)]
  assert [r.id for r in engine.to_enqueue(RUNS[:3], trials, retry_errors=False)] == [RUNS[2].id]
  # A dead worker's run (stale) is retried by the workers; one that failed with an error or was
  # interrupted only by the next command (retry_errors), so that an error is not repeated.
  for reason, workers_retry in (("stale", True), ("error", False), ("interrupted", False)):
    trials = [trial(0, F, run=A, fail_reason=reason)]
    assert (engine.to_enqueue(RUNS[:1], trials, retry_errors=False) == RUNS[:1]) == workers_retry
    assert engine.to_enqueue(RUNS[:1], trials, retry_errors=True) == RUNS[:1]
  # A duplicate dropped after its run's error does not hide that error.
  trials = [trial(0, F, run=A, fail_reason="error"), trial(1, F, run=A, fail_reason="duplicate")]
  assert engine.to_enqueue(RUNS[:1], trials, retry_errors=False) == []


def test_a_claimed_trial_is_dropped_when_its_run_is_taken():
  assert not engine.is_duplicate(trial(3, R, run=A), [trial(3, R, run=A), trial(4, W, run=A)])
  assert engine.is_duplicate(trial(4, R, run=A), [trial(3, W, run=A), trial(4, R, run=A)])
  assert engine.is_duplicate(trial(4, R, run=A), [trial(3, R, run=A), trial(4, R, run=A)])
  assert engine.is_duplicate(trial(3, R, run=A), [trial(3, R, run=A), trial(9, C, run=A)])
  # A stale trial of the run, or another run's trial, does not block the retry.
  assert not engine.is_duplicate(
    trial(4, R, run=A), [trial(3, F, run=A, fail_reason="stale"), trial(4, R, run=A)]
  )
  assert not engine.is_duplicate(trial(4, R, run=A), [trial(3, R, run=B), trial(4, R, run=A)])


def test_waiting_trials_of_finished_runs_are_leftovers():
  trials = [trial(0, C, run=A), trial(1, W, run=B), trial(2, W, run=A), trial(3, R, run=A)]
  assert [t.number for t in engine.leftovers(trials, RUNS)] == [2]  # not B's, not a RUNNING one
  assert engine.leftovers(trials[1:], RUNS) == []  # A unfinished: its WAITING trial is work


def test_the_result_trial_is_the_lowest_numbered_complete_one():
  ts = [trial(1, F, run=A), trial(2, C, run=A), trial(5, C, run=A)]
  assert engine.complete(ts).number == 2
  assert engine.complete(ts[:1]) is None
  grouped = engine.by_run([trial(5, C, run=B), trial(1, C, run=A), trial(0, W, run=B), trial(7, C)])
  assert {k: [t.number for t in v] for k, v in grouped.items()} == {B: [0, 5], A: [1]}
