"""The search's budget and duplicate rules (mlp.search.rules), on hand-made trials: no storage."""

import datetime

from optuna.trial import FrozenTrial, TrialState

from mlp.search import rules


def trial(number, state, **attrs) -> FrozenTrial:
  now = datetime.datetime.now()
  done = state not in (TrialState.RUNNING, TrialState.WAITING)
  return FrozenTrial(
    number=number,
    state=state,
    value=0.5 if state == TrialState.COMPLETE else None,
    values=None,
    datetime_start=None if state == TrialState.WAITING else now,
    datetime_complete=now if done else None,
    params={},
    distributions={},
    user_attrs=attrs,
    system_attrs={},
    intermediate_values={},
    trial_id=number,
  )


C, P, R, W, F = (
  TrialState.COMPLETE,
  TrialState.PRUNED,
  TrialState.RUNNING,
  TrialState.WAITING,
  TrialState.FAIL,
)


def test_counted_states_and_fail_reasons():
  assert all(rules.counted(trial(0, s), False) for s in (C, P, R, W))
  assert not rules.counted(trial(0, F, fail_reason="stale"), False)
  assert rules.counted(trial(0, F, fail_reason="stale"), True)  # count_failed
  for reason in rules.NOT_COUNTED:  # never an attempt, even with count_failed
    assert not rules.counted(trial(0, F, fail_reason=reason), True)
  assert rules.finished(trial(0, C), False) and rules.finished(trial(0, P), False)
  assert not rules.finished(trial(0, R), False) and not rules.finished(trial(0, W), False)


def test_a_trial_is_surplus_when_budget_lower_numbered_trials_count():
  trials = [trial(0, C), trial(1, F, fail_reason="stale"), trial(2, R), trial(3, R)]
  # budget 2: trials 0 and 2 hold it; trial 3 is surplus, trial 2 is not (only 0 ahead counts).
  assert not rules.is_surplus(2, trials, 2, False)
  assert rules.is_surplus(3, trials, 2, False)
  # Counting failures, the stale trial 1 takes a place: trial 2 is now the surplus one.
  assert rules.is_surplus(2, trials, 2, True)
  # Two workers racing for the last place decide the same way: the lower number wins.
  race = [trial(0, C), trial(1, R), trial(2, R)]
  assert [rules.is_surplus(n, race, 2, False) for n in (1, 2)] == [False, True]


def test_duplicates_of_a_sequential_point():
  s = {"stage": 1, "point": 0}
  assert rules.duplicate_of(5, [trial(5, R)]) is None  # not a sequential trial
  assert rules.duplicate_of(5, [trial(5, R, **s)]) is None
  # A COMPLETE trial of the point, whatever its number, makes a new one a duplicate.
  assert rules.duplicate_of(5, [trial(5, R, **s), trial(7, C, **s)]).number == 7
  # An active one only when lower-numbered: of two racing trials, the higher is dropped.
  race = [trial(5, R, **s), trial(6, R, **s)]
  assert rules.duplicate_of(5, race) is None
  assert rules.duplicate_of(6, race).number == 5
  # A failed (stale) trial of the point is no reason to drop its replacement.
  assert rules.duplicate_of(6, [trial(5, F, fail_reason="stale", **s), trial(6, R, **s)]) is None
  # Another point of the same stage is no duplicate either.
  assert rules.duplicate_of(6, [trial(5, C, stage=1, point=1), trial(6, R, **s)]) is None
