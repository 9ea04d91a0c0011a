"""The search's budget and duplicate rules: pure functions of the stored trials.

Budget: ``search.budget`` trials per study (COMPLETE and PRUNED, plus FAIL with ``count_failed``),
exactly, however many workers race. Trials are ranked by number; a trial is kept only if fewer than
``budget`` lower-numbered trials are counted (COMPLETE, PRUNED, RUNNING, WAITING, [FAIL]) when its
owner checks right after asking. Lower numbers exist before a trial does, so every owner sees them;
a surplus trial is failed at once (``fail_reason=surplus``), never trained.

Duplicates: a trial of a sequential search's (stage, point), or one that continues a failed
trial from its checkpoint (``continues``), that already has a COMPLETE trial, or a lower-numbered
WAITING or RUNNING one, is dropped (``fail_reason=duplicate``).
"""

from optuna.trial import FrozenTrial, TrialState

from mlp.search.storage import ACTIVE

NOT_COUNTED = ("surplus", "duplicate")  # fail reasons of trials that never were attempts
CONTINUED = ("stale", "preempted", "interrupted")  # failed trials a new one continues, if it can


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


def _slot(t: FrozenTrial) -> tuple | None:
  """What a trial is one attempt at: a failed trial it continues, or a sequential (stage, point)."""
  if t.user_attrs.get("continues") is not None:
    return ("continues", t.user_attrs["continues"])
  if t.user_attrs.get("stage") is not None:
    return ("stage", t.user_attrs["stage"], t.user_attrs.get("point"))
  return None


def duplicate_of(number: int, trials: list[FrozenTrial]) -> FrozenTrial | None:
  """The trial that trial ``number``'s slot (a continued trial, or a sequential search's stage
  and point) already belongs to, if any."""
  me = next(t for t in trials if t.number == number)
  slot = _slot(me)
  if slot is None:
    return None
  for t in trials:
    if (
      t.number != number
      and _slot(t) == slot
      and (t.state == TrialState.COMPLETE or (t.state in ACTIVE and t.number < number))
    ):
      return t
  return None
