"""A search worker: ask, check the budget (mlp.search.rules), train by shape group, tell."""

import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from mlp import fileio, interrupts, lock, plan, resume, rundir, tensorboard, trainer
from mlp.data import Dataset
from mlp.defaults import DEFAULTS
from mlp.plan import Plan
from mlp.search import rules, strategies
from mlp.search import storage as storage_lib
from mlp.search.leaderboard import write_outputs
from mlp.search.space import SearchError, apply, base_params, space_of, suggest
from mlp.search.storage import ACTIVE, LOCAL, Storage, fail_stale, worker_id
from mlp.search.strategies import sequential_stage

Log = Callable[[str], None]


def open_storage(
  url: str | None, workdir: Path, config: ml_collections.ConfigDict, log: Log
) -> optuna.storages.BaseStorage:
  """The search's storage (mlp.search.storage.open_storage) with the config's heartbeat settings."""
  return storage_lib.open_storage(
    url,
    workdir,
    heartbeat_interval=float(config.search.heartbeat_interval),
    grace_period=float(config.search.grace_period),
    log=log,
  )


class Options(NamedTuple):
  """What one worker does this time: stop after ``max_trials`` trials or ``max_minutes`` minutes
  (None: when the study's budget is reached), then write the outputs (leaderboard, figures)."""

  max_trials: int | None = None
  max_minutes: float | None = None
  outputs: bool = True


def _data_config(data: Mapping) -> dict:
  """A data section as compared between a study and a config: what, not where (no data_dir);
  a field added since the study was created at its configs/base.py default."""
  out = {**DEFAULTS.data.to_dict(), **data}
  out.pop("data_dir", None)
  return fileio.to_jsonable(out)


# Search fields that change how workers share a study, not what a trial computes.
OPERATIONAL = ("budget", "count_failed", "ask_batch", "heartbeat_interval", "grace_period")
OPERATIONAL += ("poll_seconds",)


def _settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Every setting that changes what a trial computes or how trials are chosen, as dotted paths:
  the seed, the model and train sections (but for the fields the space sets on every trial,
  unless a sequential search starts from them; and train.checkpoint_minutes), the search
  section but for how workers share it (budget, heartbeats, ...)."""
  space = space_of(config)
  searched = set()
  if config.search.strategy != "sequential":
    searched = {"model.hidden", "train.dropout"} | {f"train.{n}" for n in space if n != "width"}
  skipped = {f"{s}.{f}" for s, f in plan.NOT_IDENTITY} | {f"search.{f}" for f in OPERATIONAL}
  filled = fileio.to_jsonable(
    {k: config[k] for k in ("seed", "model", "train", "search") if k in config}
  )
  return {
    path: value
    for path, value in plan.leaves(filled)
    if path not in searched | skipped and not path.startswith(tuple(f"{p}." for p in searched))
  }


def _fingerprint(config: ml_collections.ConfigDict) -> dict:
  """What must match for trials of a resumed study to be comparable: data, space, strategy and
  every other setting that changes what a trial computes (``settings``)."""
  s = config.search
  return fileio.to_jsonable(
    {
      "data": config.data.name,  # all that studies created before "data_config" hold
      "data_config": _data_config(config.data.to_dict()),
      "strategy": s.strategy,
      "space": s.space.to_dict(),
      "order": list(s.order) if s.strategy == "sequential" else None,
      "settings": _settings(config),
    }
  )


def _differences(mine: dict, saved: dict) -> list[str]:
  """The fingerprint's differing entries, the settings as ``path (study: X, here: Y)``."""
  out = []
  for key in sorted(k for k in mine if k in saved and mine[k] != saved[k]):
    if key != "settings":
      out.append(key)
      continue
    a, b = saved[key], mine[key]
    for path in sorted(set(a) | set(b)):
      if a.get(path, "(none)") != b.get(path, "(none)"):
        out.append(f"{path} (study: {a.get(path, '(none)')}, here: {b.get(path, '(none)')})")
  return out


def open_study(
  config: ml_collections.ConfigDict,
  name: str,
  storage: optuna.storages.BaseStorage,
) -> optuna.Study:
  """Create or load the study, checking it was created with the same space and strategy."""
  st = optuna.create_study(
    study_name=name,
    storage=storage,
    direction="maximize",
    sampler=strategies.make_sampler(config),
    pruner=strategies.make_pruner(config),
    load_if_exists=True,
  )
  storage_lib.name_metric(st)
  mine = _fingerprint(config)
  saved = st.user_attrs.get("search")
  if saved is None:
    st.set_user_attr("search", mine)
    st.set_user_attr("config", fileio.to_jsonable(config.to_dict()))
    return st
  # A key the saved fingerprint lacks was added after that study was created: not compared.
  if "data_config" in saved:
    saved = {**saved, "data_config": _data_config(saved["data_config"])}
  diff = _differences(mine, saved)
  if diff:
    raise SearchError(
      f"study {name!r} was created with other settings ({'; '.join(diff)}): its trials would "
      "not compare with this config's; use the same config, or a new --study name"
    )
  return st


class Worker:
  """One search worker: ask, check the budget, train by shape group, tell; until done."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    st: optuna.Study,
    ctx: trainer.Context,
    options: Options = Options(),  # noqa: B008 (an immutable tuple)
  ):
    minutes = options.max_minutes
    self.deadline = None if minutes is None else time.monotonic() + 60 * minutes
    self.config, self.st, self.ctx = config, st, ctx
    self.data, self.workdir, self.log = ctx.data, Path(ctx.workdir), ctx.log
    self.space = space_of(config)
    self.s = config.search
    self.budget = int(self.s.budget)
    self.count_failed = bool(self.s.count_failed)
    self.max_trials = options.max_trials
    self.trained = 0

  def _trials(self) -> list[FrozenTrial]:
    return self.st.get_trials(deepcopy=False)

  def run(self) -> int:
    """Work until the study's budget is reached; returns the number of trials this worker told."""
    hb = self.hb = storage_lib.Heartbeat(self.st, float(self.s.heartbeat_interval))
    try:
      while True:
        fail_stale(self.st, float(self.s.grace_period), self.log)
        trials = self._trials()
        finished = sum(rules.finished(t, self.count_failed) for t in trials)
        if finished >= self.budget:
          self.log(f"budget reached: {finished}/{self.budget} trials finished")
          break
        if self.max_trials is not None and self.trained >= self.max_trials:
          self.log(f"--max_trials={self.max_trials} reached by this worker")
          break
        if self.deadline is not None and time.monotonic() > self.deadline:
          self.log("--max_minutes reached by this worker; the study can be resumed")
          break
        if self._continue_failed(trials):
          continue  # (asked first: enqueued trials are)
        room = self.budget - sum(rules.counted(t, self.count_failed) for t in trials)
        n = min(int(self.s.ask_batch), room)
        if self.max_trials is not None:
          n = min(n, self.max_trials - self.trained)
        asked = self._ask(n, trials) if n > 0 else []
        if asked is None:
          self.log("sequential search: every stage is complete")
          break
        kept = self._check(asked)
        if not kept:
          time.sleep(float(self.s.poll_seconds))  # other workers hold the rest of the budget
          continue
        for trial_id, _ in kept:
          hb.add(trial_id)
        self._train(kept)
    finally:
      hb.close()
    return self.trained

  def _continue_failed(self, trials: list[FrozenTrial]) -> int:
    """Enqueue a trial with the params of each trial that a dead, preempted or interrupted
    worker left with a checkpoint this worker can read (its ``run_dir``: this workdir, or a
    shared file system) and that no trial continues yet: the new trial resumes from it
    (mlp.resume). Returns how many were enqueued."""
    continued = {t.user_attrs.get("continues") for t in trials}
    n = 0
    for t in trials:
      folder = t.user_attrs.get("run_dir")
      if (
        t.state != TrialState.FAIL
        or t.user_attrs.get("fail_reason") not in rules.CONTINUED
        or t.number in continued
        or not folder
        or not resume.exists(folder)
      ):
        continue
      keep = {k: t.user_attrs[k] for k in ("stage", "point", "varied") if k in t.user_attrs}
      attrs = {**keep, "continues": t.number, "resume_from": folder}
      self.st.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
      self.log(f"trial {t.number} ({t.user_attrs['fail_reason']}) continues from its checkpoint")
      n += 1
    return n

  def _ask(self, n: int, trials: list[FrozenTrial]) -> list[optuna.Trial] | None:
    """Up to n new trials (waiting ones first); None when a sequential plan is finished."""
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    todo: list[dict] = []
    if self.s.strategy == "sequential":
      stage = sequential_stage(self.config, self.space, trials)
      if stage is None and not waiting:
        return None
      if stage is not None:
        taken = {
          t.user_attrs.get("point")
          for t in trials
          if t.user_attrs.get("stage") == stage.index and t.state in (TrialState.COMPLETE, *ACTIVE)
        }
        todo = [
          dict(params=p, user_attrs={"stage": stage.index, "point": j, "varied": stage.param})
          for j, p in enumerate(stage.points)
          if j not in taken
        ]
      n = min(n, waiting + len(todo))
    else:
      todo = [None] * n
    asked = []
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with optimize"
      for i in range(n):
        if i >= waiting and todo:
          item = todo.pop(0)
          if item is not None:
            self.st.enqueue_trial(item["params"], user_attrs=item["user_attrs"])
        trial = self.st.ask()
        storage_lib.storage_of(self.st).set_trial_user_attr(
          storage_lib.trial_id(trial), "worker", worker_id()
        )
        self.hb.beat(
          storage_lib.trial_id(trial)
        )  # from now on a dead worker's trial can be detected
        asked.append(trial)
    return asked

  def _check(self, asked: list[optuna.Trial]) -> list[tuple[int, Any]]:
    """Fail surplus/duplicate trials (decided by trial number) and build runs for the rest."""
    trials = self._trials()
    kept = []
    for trial in asked:
      number = trial.number
      dup = rules.duplicate_of(number, trials)
      if dup is not None:
        storage_lib.fail(self.st, storage_lib.trial_id(trial), "duplicate")
        self.log(f"trial {number}: duplicate of trial {dup.number}, dropped")
        continue
      if rules.is_surplus(number, trials, self.budget, self.count_failed):
        storage_lib.fail(self.st, storage_lib.trial_id(trial), "surplus")
        self.log(f"trial {number}: over the budget of {self.budget} (another worker won), dropped")
        continue
      try:
        (run,) = plan.study_plan(apply(self.config, suggest(trial, self.space))).runs
        run = run._replace(name=f"trial{number:05d}")
        (p,) = plan.build([run], self.data.input_shape, self.data.num_classes)
        plan.check_memory([p], len(self.data.y_train), trainer.memory_bytes())
      except (ValueError, KeyError) as e:
        storage_lib.fail(self.st, storage_lib.trial_id(trial), f"invalid: {e}")
        self.log(f"trial {number}: invalid hyperparameters ({e}), marked FAIL")
        continue
      storage = storage_lib.storage_of(self.st)
      storage.set_trial_user_attr(storage_lib.trial_id(trial), "plan", p.describe())
      folder = rundir.run_dir(self.workdir, p).absolute()  # (others may read its checkpoint)
      storage.set_trial_user_attr(storage_lib.trial_id(trial), "run_dir", str(folder))
      kept.append((storage_lib.trial_id(trial), (trial, p)))
    return kept

  def _train(self, kept: list[tuple[int, Any]]) -> None:
    by_run = {item[1].id: item for _, item in kept}
    plans = [p for _, (_, p) in kept]
    groups = plan.groups(plans)
    self.log(
      f"training {len(plans)} trials in {len(groups)} shape group(s) "
      f"({'vmapped populations' if self.ctx.vectorize else 'member by member'})"
    )
    pending = {storage_lib.trial_id(trial): trial for trial, _ in by_run.values()}
    sources = {  # trials that continue another's checkpoint
      p.id: Path(trial.user_attrs["resume_from"])
      for trial, p in by_run.values()
      if trial.user_attrs.get("resume_from")
    }

    def tell(result: dict) -> None:  # as soon as each trial is saved, not after its whole group
      trial, _ = by_run[result["run"]]
      self._tell(trial, result)
      pending.pop(storage_lib.trial_id(trial), None)
      self.hb.remove(storage_lib.trial_id(trial))

    try:
      for group in groups:
        trainer.train_group(
          group,
          self.ctx,
          done=self.trained,
          total=self.budget,
          on_result=tell,
          prune=self._prune(by_run),
          sources=sources,
          replay=self._replay(by_run),
        )
    except BaseException as e:
      for trial_id in pending:  # a preempted trial is continued from its checkpoint
        storage_lib.fail(self.st, trial_id, interrupts.reason(e))
        self.hb.remove(trial_id)
      raise

  def _replay(self, by_run: dict) -> Callable[[Plan, int, dict], None]:
    """A resumed trial's epochs before its checkpoint, reported to it as they were."""

    def replay(p: Plan, epoch: int, metrics: dict[str, float]) -> None:
      value = float(metrics["val_acc"])
      if np.isfinite(value):
        by_run[p.id][0].report(value, epoch)

    return replay

  def _prune(self, by_run: dict) -> Callable[[Plan, int, dict], bool]:
    """Report each epoch's val accuracy to its trial; True when the study's pruner stops it.
    Members of a population are asked one by one, so each is pruned on its own."""
    pruning = str(self.s.pruner) != "none"

    def prune(p: Plan, epoch: int, metrics: dict[str, float]) -> bool:
      trial, _ = by_run[p.id]
      value = float(metrics["val_acc"])
      if not np.isfinite(value):
        return False  # diverging: the run stops on its own
      trial.report(value, epoch)
      return pruning and trial.should_prune()

    return prune

  def _tell(self, trial: optuna.Trial, result: dict) -> None:
    val = result.get("val") or {}
    value = rundir.objective(result)
    attrs: dict[str, Any] = {
      "val_loss": float(val["loss"]) if val else None,
      "epochs": int(result["epochs"]),
      "stop_reason": result["stop_reason"],
      "diverged": bool(result["diverged"]),
      "seconds": float(result["seconds"]),
    }
    for split, ev in result["tests"].items():
      attrs[f"test_acc/{split}"] = float(ev["topk"][0])
    try:
      for k, v in attrs.items():
        storage_lib.storage_of(self.st).set_trial_user_attr(storage_lib.trial_id(trial), k, v)
      if result["stop_reason"] == "pruned":  # never a result: the leaderboard shows it
        self.st.tell(trial, state=TrialState.PRUNED)
      else:
        self.st.tell(trial, value)
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as e:
      self.log(f"trial {trial.number} was already finished elsewhere (stale?), not counted: {e}")
      return
    self.trained += 1
    what = "pruned" if result["stop_reason"] == "pruned" else "val acc"
    line = f"trial {trial.number}: {what} {value:.4f} ({attrs['epochs']} epochs)"
    if any(t.state == TrialState.COMPLETE for t in self._trials()):
      best = self.st.best_trial
      line += f"; best so far {best.value:.4f} (trial {best.number})"
    self.log(line)


def run_worker(
  config: ml_collections.ConfigDict,
  workdir: str | Path,
  *,
  storage: Storage = LOCAL,
  data: Dataset | str | None = None,
  options: Options = Options(),  # noqa: B008 (an immutable tuple)
  log: Log = print,
) -> optuna.Study:
  """Join (or create) the study and work on it until its budget is reached; then write outputs.

  ``data``: the data set, or the folder to load the config's from (None: $MLP_DATA_DIR, the cache
  or a download)."""
  from mlp import data as data_lib

  workdir = Path(workdir)
  space = space_of(config)  # validates the space before anything is created
  lock.check_workdir(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  name = storage.name or config.name
  st = open_study(config, name, open_storage(storage.url, workdir, config, log))
  fileio.atomic_write_json(workdir / "config.json", config.to_dict())
  if not isinstance(data, Dataset):
    data = data_lib.load(config.data, data)
  (sample,) = plan.study_plan(apply(config, base_params(config, space))).runs
  tensorboard.write_hparams_config(
    workdir / "runs",
    dict.fromkeys(tensorboard.flat_hparams(plan.hparams(sample))),  # (the sampler picks values)
    rundir.metric_tags(data.tests),
  )
  for note in data.notes:
    log(note)
  log(
    f"study {name!r} ({config.search.strategy} search, budget {config.search.budget}) as "
    f"worker {worker_id()}"
  )
  vectorize = trainer.vectorize_of(config.vectorize)
  with resume.noted(workdir):  # a Ctrl-C or SIGTERM says what is saved (mlp.cli)
    Worker(config, st, trainer.Context(data, workdir, log, vectorize=vectorize), options).run()
  if options.outputs:
    write_outputs(config, st, workdir, log=log)
  return st
