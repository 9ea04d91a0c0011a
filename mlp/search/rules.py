"""The search's budget and duplicate rules: pure functions of the stored trials.

Budget: ``search.budget`` trials per study (COMPLETE and PRUNED, plus FAIL with ``count_failed``),
exactly, however many workers race. Trials are ranked by number; a trial is kept only if fewer than
``budget`` lower-numbered trials are counted (COMPLETE, PRUNED, RUNNING, WAITING, [FAIL]) when its
owner checks right after asking. Lower numbers exist before a trial does, so every owner sees them;
a surplus trial is failed at once (``fail_reason=surplus``), never trained.

Duplicates (sequential search): a trial of a (stage, point) that already has a COMPLETE trial, or a
lower-numbered WAITING or RUNNING one, is dropped (``fail_reason=duplicate``).
"""

from optuna.trial import FrozenTrial, TrialState

from mlp.search.storage import ACTIVE

NOT_COUNTED = ("surplus", "duplicate")  # fail reasons of trials that never were attempts


def counted(t: FrozenTrial, count_failed: bool) -> bool:
  """Whether a trial takes a place in the budget."""
  if t.state in (TrialState.COMPLETE, TrialState.PRUNED, *ACTIVE):
    return True
  return (
    count_failed
    and t.state == TrialState.FAIL
    and t.user_attrs.get("fail_reason") not in NOT_COUNTED
  )


def finished(t: FrozenTrial, count_failed: bool) -> bool:
  """Whether a trial is a finished place in the budget."""
  return t.state not in ACTIVE and counted(t, count_failed)


def is_surplus(number: int, trials: list[FrozenTrial], budget: int, count_failed: bool) -> bool:
  """Whether trial ``number`` is over the budget: ``budget`` lower-numbered trials are counted."""
  ahead = sum(t.number < number and counted(t, count_failed) for t in trials)
  return ahead >= budget


def duplicate_of(number: int, trials: list[FrozenTrial]) -> FrozenTrial | None:
  """The trial that trial ``number``'s sequential (stage, point) already belongs to, if any."""
  me = next(t for t in trials if t.number == number)
  stage, point = me.user_attrs.get("stage"), me.user_attrs.get("point")
  if stage is None:
    return None
  for t in trials:
    if (
      t.number != number
      and t.user_attrs.get("stage") == stage
      and t.user_attrs.get("point") == point
      and (t.state == TrialState.COMPLETE or (t.state in ACTIVE and t.number < number))
    ):
      return t
  return None
