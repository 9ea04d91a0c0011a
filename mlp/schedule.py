"""Where a study's runs are scheduled: as trials of an Optuna study, in the storage a search uses,
claimed by workers (processes of mlp.workers, or launchers on other machines sharing the storage).

Every run (grid x extra runs x seeds) is one trial with a ``run`` user attribute and its ``plan``
(mlp.plan). Whoever starts the study enqueues a WAITING trial for each run without a COMPLETE or
active one, most expensive first; workers (processes on any machine, each with its own workdir)
claim WAITING trials in number order, with Optuna's own WAITING -> RUNNING transition (one
winner), train them (mlp.trainer), and tell the result: the value is the validation accuracy, the
``result`` user attribute the whole result (metrics, per-epoch curves, confusion matrices, plan).
Models, reports and TensorBoard events stay in the training machine's workdir.

Each run is trained once: a claimed trial is dropped (FAIL, ``fail_reason=duplicate``) when its run
already has a COMPLETE trial or a lower-numbered WAITING or RUNNING one, and two trials of one run
are only ever both enqueued by a race, which this rule settles the same way for every worker; the
race's WAITING trials left when every run is finished are dropped the same way (:func:`leftovers`).
A worker that dies (kill -9, a lost machine) leaves a RUNNING trial that :func:`storage.fail_stale`
marks FAIL (``stale``); a preempted one (SIGTERM) marks its trials FAIL (``preempted``) itself.
Workers then enqueue the run again, and whoever trains it continues from the checkpoint of the
failed attempt (mlp.resume) when its folder (the trial's ``run_dir``) can be read from here: the
same workdir, or a shared file system. A run that failed with an error, or was interrupted by
Ctrl-C, is not retried by the same command (the error would repeat; the user stopped it): running
the command again retries it.
"""

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlp import fileio, interrupts, plan, progress, resume, rundir, trainer, trialparams
from mlp.data import Dataset
from mlp.plan import Plan, Run
from mlp.search import storage as storage_lib
from mlp.search.storage import LOCAL, Storage

Log = Callable[[str], None]
HEARTBEAT_S = 5.0  # seconds between heartbeats of a worker's in-flight runs
GRACE_S = 60.0  # a RUNNING run without heartbeat for this long is another machine's dead worker
POLL_S = 1.0  # wait between looks while other workers train the last runs
NOT_RETRIED = ("error", "interrupted")  # fail reasons a worker leaves for the next command


class ScheduleError(RuntimeError):
  """Runs failed, or the stored study disagrees with the config."""


def open_study(name: str, workdir: Path, storage: Storage = LOCAL, log: Log = print):
  """Create or load the study ``storage.name`` (or ``name``, the config's) in its storage."""
  optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "Using an existing study"
  st_storage = storage_lib.open_storage(
    storage.url, workdir, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, log=log
  )
  st = optuna.create_study(
    study_name=storage.name or name,
    storage=st_storage,
    direction="maximize",
    load_if_exists=True,
  )
  storage_lib.name_metric(st)
  return st


def by_run(trials: list[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
  """Trials grouped by their run id, in number order."""
  out: dict[str, list[FrozenTrial]] = {}
  for t in sorted(trials, key=lambda t: t.number):
    if "run" in t.user_attrs:
      out.setdefault(str(t.user_attrs["run"]), []).append(t)
  return out


def complete(trials: list[FrozenTrial]) -> FrozenTrial | None:
  """The run's result trial: its lowest-numbered COMPLETE one."""
  return next((t for t in trials if t.state == TrialState.COMPLETE), None)


def to_enqueue(runs: Sequence, trials: list[FrozenTrial], *, retry_errors: bool) -> list:
  """Runs with no COMPLETE and no WAITING or RUNNING trial; with ``retry_errors`` False, also
  not those whose last trial failed with an error or was interrupted (a pure function)."""
  grouped = by_run(trials)
  out = []
  for run in runs:
    ts = grouped.get(run.id, [])
    if any(t.state in (TrialState.COMPLETE, *storage_lib.ACTIVE) for t in ts):
      continue
    failed = [t for t in ts if t.user_attrs.get("fail_reason") != "duplicate"]
    if not retry_errors and failed and failed[-1].user_attrs.get("fail_reason") in NOT_RETRIED:
      continue
    out.append(run)
  return out


def is_duplicate(trial: FrozenTrial, trials: list[FrozenTrial]) -> bool:
  """Whether a claimed trial must be dropped: its run has a COMPLETE trial, or a lower-numbered
  WAITING or RUNNING one (a pure function; see the module docstring)."""
  run = trial.user_attrs.get("run")
  for t in trials:
    if t.number == trial.number or t.user_attrs.get("run") != run:
      continue
    if t.state == TrialState.COMPLETE or (
      t.state in storage_lib.ACTIVE and t.number < trial.number
    ):
      return True
  return False


def leftovers(trials: list[FrozenTrial], runs: Sequence[Run | Plan]) -> list[FrozenTrial]:
  """WAITING trials of finished runs: duplicates from two workers' racing enqueues that nobody
  claimed before the runs were done (a pure function)."""
  grouped = by_run(trials)
  done = {r.id for r in runs if complete(grouped.get(r.id, [])) is not None}
  return [t for t in trials if t.state == TrialState.WAITING and t.user_attrs.get("run") in done]


def enqueue(st: optuna.Study, plans: Sequence[Plan], every: Sequence[Plan] = ()) -> None:
  """A WAITING trial per plan, with the run's id and its plan, and its hyperparameters as params
  with distributions over ``every`` plan of the study (mlp.trialparams: what optuna-dashboard
  shows)."""
  space = trialparams.space(every or plans)
  for p in plans:
    params, distributions = trialparams.trial_params(p, space)
    attrs = {"run": p.id, "plan": p.describe()}
    st.add_trial(
      optuna.trial.create_trial(
        state=TrialState.WAITING, params=params, distributions=distributions, user_attrs=attrs
      )
    )


def check_config(trials: list[FrozenTrial], runs: Sequence[Run], name: str) -> None:
  """Refuse a config whose runs were finished in study ``name`` with different settings."""
  grouped = by_run(trials)
  for run in runs:
    t = complete(grouped.get(run.id, []))
    if t is not None and not plan.same_run(t.user_attrs.get("result", {}), run):
      raise ScheduleError(
        f"run {run.id} of study {name!r} was trained with a different config than the "
        "current one; finished runs are never overwritten: use a new --workdir (or a new --study "
        "name on a shared --storage)"
      )


def results(trials: list[FrozenTrial], runs: Sequence[Run | Plan]) -> dict[str, dict]:
  """{run id: result} of the runs finished among ``trials``."""
  grouped = by_run(trials)
  out = {}
  for run in runs:
    t = complete(grouped.get(run.id, []))
    if t is not None:
      out[run.id] = t.user_attrs["result"]
  return out


def adopt(st: optuna.Study, runs: Sequence[Run], workdir: Path, log: Log) -> int:
  """Add to the study the runs finished in ``workdir`` (result.json) that it lacks: workdirs
  written before studies lived in storage, or a worker killed between saving and telling."""
  grouped = by_run(st.get_trials(deepcopy=False))
  space = trialparams.space(runs)
  n = 0
  for run in runs:
    if complete(grouped.get(run.id, [])) is not None:
      continue
    path = rundir.run_dir(workdir, run) / "result.json"
    if not path.exists():
      continue
    result = json.loads(path.read_text())
    if not plan.same_run(result, run):
      raise ScheduleError(
        f"{path} was trained with a different config than the current one for run {run.id}; "
        "finished runs are never overwritten: use a new --workdir, or delete that run's folder"
      )
    params, distributions = trialparams.trial_params(run, space)
    st.add_trial(
      optuna.trial.create_trial(
        value=rundir.objective(result),
        distributions=distributions,
        params=params,
        intermediate_values=curve(result),
        user_attrs={"run": run.id, "result": result, "adopted": str(path)},
      )
    )
    n += 1
  if n:
    log(f"{n} run(s) finished in {workdir} added to study {st.study_name!r}")
  return n


def work(st: optuna.Study, plans: Sequence[Plan], ctx: trainer.Context) -> int:
  """Claim and train the study's runs until each is COMPLETE or failed with an error; returns
  how many this worker trained. Waits while other workers train the last runs."""
  index = {p.id: i for i, p in enumerate(plans)}
  by_id = {p.id: p for p in plans}
  group_of = {p.id: k for k, g in enumerate(plan.groups(plans)) for p in g.plans}
  hb = storage_lib.Heartbeat(st, HEARTBEAT_S)
  trained = 0
  try:
    while True:
      storage_lib.fail_stale(st, GRACE_S, ctx.log)
      trials = st.get_trials(deepcopy=False)
      grouped = by_run(trials)
      if all(complete(grouped.get(p.id, [])) is not None for p in plans):
        for t in leftovers(trials, plans):
          tid = storage_lib.trial_id(t)
          if storage_lib.storage_of(st).set_trial_state_values(tid, state=TrialState.RUNNING):
            storage_lib.fail(st, tid, "duplicate")  # claimed first: no other worker trains it
        return trained
      retry = to_enqueue(plans, trials, retry_errors=False)
      if retry:
        retried = [p.id for p in retry if grouped.get(p.id)]
        if retried:
          ctx.log(f"retrying {', '.join(retried)} (its worker died or was preempted)")
        enqueue(st, retry, plans)
        continue
      if not any(
        t.state in storage_lib.ACTIVE and t.user_attrs.get("run") in index for t in trials
      ):
        return trained  # the rest failed with errors: the caller reports them
      claimed = _claim(st, trials, index, group_of, ctx.vectorize, hb)
      if not claimed:
        time.sleep(POLL_S)
        continue
      pending = _told_when_saved(st, claimed, by_id, hb, ctx)  # trial id -> run id, to train
      tid_of = {run_id: tid for tid, run_id in pending.items()}

      def tell(result: dict, tid_of=tid_of, pending=pending) -> None:  # as soon as it is saved
        tid = tid_of[result["run"]]
        _tell(st, tid, result, ctx.log)
        pending.pop(tid, None)
        hb.remove(tid)

      def report(p: Plan, epoch: int, row: dict[str, float], tid_of=tid_of) -> bool:
        """Each epoch's validation accuracy, as the trial's intermediate value (live curves in
        optuna-dashboard); never stops a run."""
        if math.isfinite(row["val_acc"]):
          try:
            storage_lib.storage_of(st).set_trial_intermediate_value(
              tid_of[p.id], epoch, row["val_acc"]
            )
          except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass  # ended elsewhere (stale): the run's result is told, and refused, at its end
        return False

      todo = [by_id[run_id] for run_id in pending.values()]
      sources = {p.id: d for p in todo if (d := checkpoint_elsewhere(grouped.get(p.id, [])))}
      try:
        for group in plan.groups(todo):
          first = index[group.plans[0].id]  # the progress prefix: its place in the study's runs
          trainer.train_group(
            group,
            ctx,
            done=first,
            total=len(plans),
            on_result=tell,
            prune=report,
            sources=sources,
          )
      except BaseException as e:
        reason = interrupts.reason(e)  # preempted runs are retried by the other workers
        for tid in pending:
          storage_lib.fail(st, tid, reason)
          hb.remove(tid)
        raise
      trained += len(todo)
  finally:
    hb.close()


def checkpoint_elsewhere(trials: list[FrozenTrial]) -> Path | None:
  """The run folder of a run's latest failed attempt (a dead, preempted or interrupted worker,
  here or on another machine) when it holds a checkpoint that can be read from here."""
  for t in sorted(trials, key=lambda t: -t.number):
    folder = t.user_attrs.get("run_dir")
    if t.state == TrialState.FAIL and folder and resume.exists(folder):
      return Path(folder)
  return None


def _claim(st, trials, index, group_of, vectorize: bool, hb) -> list[tuple[int, str]]:
  """Claim WAITING trials in number order: one run, or (vectorize) one shape group's runs."""
  storage = storage_lib.storage_of(st)
  waiting = sorted(
    (t for t in trials if t.state == TrialState.WAITING and t.user_attrs.get("run") in index),
    key=lambda t: t.number,
  )
  claimed: list[tuple[int, str]] = []
  for t in waiting:
    run_id = str(t.user_attrs["run"])
    if claimed and (not vectorize or group_of[run_id] != group_of[claimed[0][1]]):
      continue
    tid = storage_lib.trial_id(t)
    if not storage.set_trial_state_values(tid, state=TrialState.RUNNING):
      continue  # another worker was first
    storage.set_trial_user_attr(tid, "worker", storage_lib.worker_id())
    hb.beat(tid)
    hb.add(tid)
    if is_duplicate(storage.get_trial(tid), st.get_trials(deepcopy=False)):
      storage_lib.fail(st, tid, "duplicate")
      hb.remove(tid)
      continue
    claimed.append((tid, run_id))
    if not vectorize:
      break
  return claimed


def _told_when_saved(st, claimed, by_id: dict[str, Plan], hb, ctx: trainer.Context) -> dict:
  """Tell the claimed runs whose result this workdir already holds (trained here, killed before
  telling); returns the others, trial id -> run id."""
  storage = storage_lib.storage_of(st)
  pending = {}
  for tid, run_id in claimed:
    p = by_id[run_id]
    folder = rundir.run_dir(ctx.workdir, p).absolute()  # (where others may find its checkpoint)
    storage.set_trial_user_attr(tid, "run_dir", str(folder))
    result = rundir.saved_result(ctx.workdir, p.run)
    if result is None:
      pending[tid] = run_id
      continue
    resume.remove(folder)  # killed between saving the run and deleting its checkpoint
    _tell(st, tid, result, ctx.log)
    hb.remove(tid)
    if ctx.events is not None:
      ctx.events(progress.done_event(p.id, f"{p.id} was trained here before: told the study"))
  return pending


def curve(result: dict) -> dict[int, float]:
  """{epoch: validation accuracy} of a finished run (its trial's intermediate values)."""
  accs = result.get("history", {}).get("val_acc", [])
  return {e: float(a) for e, a in enumerate(accs, 1) if math.isfinite(a)}


def _tell(st: optuna.Study, tid: int, result: dict, log: Log) -> None:
  storage = storage_lib.storage_of(st)
  result = fileio.to_jsonable(result)
  try:
    reported = storage.get_trial(tid).intermediate_values
    for epoch, acc in curve(result).items():  # the epochs not reported live (a resumed run's)
      if epoch not in reported:
        storage.set_trial_intermediate_value(tid, epoch, acc)
    storage.set_trial_user_attr(tid, "result", result)
    storage.set_trial_state_values(
      tid, state=TrialState.COMPLETE, values=[rundir.objective(result)]
    )
  except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as e:
    log(f"run {result['run']}: its trial was already ended elsewhere (stale?): {e}")


def failures(trials: list[FrozenTrial], runs: Sequence[Run]) -> dict[str, str]:
  """{run id: fail reason} of the runs without a result whose last trial failed."""
  grouped = by_run(trials)
  out = {}
  for run in runs:
    ts = [t for t in grouped.get(run.id, []) if t.user_attrs.get("fail_reason") != "duplicate"]
    if ts and complete(ts) is None and ts[-1].state == TrialState.FAIL:
      out[run.id] = str(ts[-1].user_attrs.get("fail_reason", "failed"))
  return out


def dataset_info(st: optuna.Study) -> dict[str, Any] | None:
  return st.user_attrs.get("dataset")


def save_dataset_info(st: optuna.Study, data: Dataset) -> None:
  """What ``--report_only`` needs of the data set on a machine that does not have it."""
  info = {"name": data.name, "class_names": list(data.class_names), "notes": list(data.notes)}
  if st.user_attrs.get("dataset") != info:
    st.set_user_attr("dataset", info)
