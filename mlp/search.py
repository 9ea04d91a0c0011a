"""Hyperparameter search on an Optuna study in shared storage; JAX populations do the training.

Any number of workers, on any machines, run :func:`run_worker` on the same study. Each worker
asks trials in batches, groups them by static shape (``sweep.group_by_shape``), trains each group
with ``study.train_group`` (one vmapped population on accelerators, member by member on CPU),
saves every trial as a run (TensorBoard + HParams, metrics, model, evaluation reports) and tells
the study the best validation accuracy (maximised), with val loss, epochs and test accuracies as
user attributes.

Storage: a journal file in the workdir by default (no server; a shared file system also works),
or any SQLAlchemy URL (``postgresql://...``) for many machines.

Budget: ``search.budget`` trials per study (COMPLETE, plus FAIL with ``count_failed``), exactly,
however many workers race. Trials are ranked by number; a trial is kept only if fewer than
``budget`` lower-numbered trials are counted (COMPLETE, RUNNING, WAITING, [FAIL]) when its owner
checks right after asking. Lower numbers exist before a trial does, so every owner sees them; a
surplus trial is failed at once (``fail_reason=surplus``), never trained. Workers keep going until
the budget of finished trials is reached, so a trial lost to a dead worker is replaced.

Dead workers: every in-flight trial has a heartbeat (Optuna's native one on RDB storage, a
``heartbeat`` user attribute on the journal). A RUNNING trial whose heartbeat is older than
``grace_period``, or whose worker process on this host is gone, is marked FAIL by the next worker
that looks (at start and between batches): it is never counted as a result.

Shapes: depth, every width and the batch size are static (one compiled program each). With the
study's step-1 widths (100-500) and batch sizes (50-200), asked trials practically never share a
shape, so every trial compiles and trains alone. ``step`` quantises them (default: width step 50,
9 values; batch step 50, 4 values): trials of one ask batch then share shapes more often (one
vmapped population per shape on a GPU) and the compiled programs are reused by later batches of
the same worker (on CPU the gain is the compile time, a few seconds per trial). The price is a
coarser space; a finished coarse search can be refined by a second study with a narrower range.

Strategies: ``random`` (RandomSampler), ``tpe`` (TPESampler, constant liar for parallel workers)
and ``sequential`` (one hyperparameter at a time in ``search.order``, keeping the best value
before moving on): its trials are enqueued on the same study with ``stage``/``point`` attributes,
so the plan is derived from the stored trials alone and any worker can resume or join it.
"""

import copy
import json
import os
import random
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from mlp import checkpoint, journal, report, study, sweep, tensorboard
from mlp.data import Dataset

Log = Callable[[str], None]
STRATEGIES = ("random", "sequential", "tpe")
SCALES = ("log", "linear", "int", "categorical")
ACTIVE = (TrialState.RUNNING, TrialState.WAITING)
JOURNAL_NAME = "study.journal"


class SearchError(ValueError):
  """The search config, the storage or the stored study are inconsistent."""


# ------------------------------------------------------------------------------ search space


class Param(NamedTuple):
  """One hyperparameter's range and scale."""

  name: str
  scale: str
  low: float = 0.0
  high: float = 0.0
  step: float | None = None
  choices: tuple = ()


def space_of(config: ml_collections.ConfigDict) -> dict[str, Param]:
  """The validated ``search.space`` (``layers`` and ``width`` are required)."""
  if config.model.get("layers"):
    raise SearchError(
      "the search samples MLP widths (model.hidden) and would ignore model.layers; "
      "leave model.layers empty in a search config"
    )
  space = {}
  for name, spec in config.search.space.items():
    spec = dict(spec)
    scale = spec.get("scale")
    if scale not in SCALES:
      raise SearchError(f"search.space.{name}.scale must be one of {SCALES}, got {scale!r}")
    if scale == "categorical":
      choices = tuple(spec.get("choices") or ())
      if not choices:
        raise SearchError(f"search.space.{name} is categorical but has no choices")
      space[name] = Param(name, scale, choices=choices)
      continue
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    if low is None or high is None or not low <= high:
      raise SearchError(f"search.space.{name} needs low <= high, got {low}, {high}")
    if scale == "log" and low <= 0:
      raise SearchError(f"search.space.{name} is log-scaled: low must be > 0, got {low}")
    if scale == "int":
      step = int(step or 1)
      if (int(high) - int(low)) % step:
        raise SearchError(f"search.space.{name}: high - low must be a multiple of step {step}")
      low, high = int(low), int(high)
    space[name] = Param(name, scale, low, high, step)
  for name in ("layers", "width"):
    if name not in space or space[name].scale != "int":
      raise SearchError(f"search.space.{name} is required and must be scale='int'")
  unknown = set(space) - {"layers", "width", "dropout"} - set(config.train.keys())
  if unknown:
    raise SearchError(f"search.space has no train.* field for {sorted(unknown)}")
  return space


def param_names(space: dict[str, Param]) -> list[str]:
  """Optuna parameter names: ``width`` becomes width1 .. width<max layers>."""
  names = []
  for name in space:
    if name == "width":
      names += [f"width{k}" for k in range(1, int(space["layers"].high) + 1)]
    else:
      names.append(name)
  return names


def _distribution(p: Param) -> optuna.distributions.BaseDistribution:
  if p.scale == "categorical":
    return optuna.distributions.CategoricalDistribution(p.choices)
  if p.scale == "int":
    return optuna.distributions.IntDistribution(p.low, p.high, step=p.step)
  return optuna.distributions.FloatDistribution(p.low, p.high, log=p.scale == "log")


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
  """Sample (or read back enqueued) values; widths exist only for the layers in use."""
  params: dict[str, Any] = {}
  for name, p in space.items():
    if name == "width":
      continue
    params[name] = trial._suggest(name, _distribution(p))
  for k in range(1, int(params["layers"]) + 1):
    params[f"width{k}"] = trial._suggest(f"width{k}", _distribution(space["width"]))
  return params


def apply(config: ml_collections.ConfigDict, params: dict[str, Any]) -> ml_collections.ConfigDict:
  """A trial's training config: the base sections with the trial's values (no search section)."""
  cfg = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  del cfg["search"]
  layers = int(params["layers"])
  cfg.model.hidden = tuple(int(params[f"width{k}"]) for k in range(1, layers + 1))
  rate = float(params.get("dropout", 0.0))
  cfg.train.dropout = (float(config.search.input_dropout),) + (rate,) * layers
  for name, value in params.items():
    if name in ("layers", "dropout") or name.startswith("width"):
      continue
    cfg.train[name] = type(cfg.train[name])(value) if cfg.train[name] is not None else value
  return cfg


def base_params(config: ml_collections.ConfigDict, space: dict[str, Param]) -> dict[str, Any]:
  """The base config's values as search parameters (the sequential search's starting point)."""
  hidden = tuple(config.model.hidden)
  rates = tuple(config.train.dropout)
  values: dict[str, Any] = {"layers": len(hidden)}
  for k in range(1, int(space["layers"].high) + 1):
    values[f"width{k}"] = hidden[min(k, len(hidden)) - 1]
  values["dropout"] = rates[1] if len(rates) > 1 else 0.0
  for name in space:
    if name not in values and name != "width":
      values[name] = config.train[name]
  return {n: _snap(space["width" if n.startswith("width") else n], v) for n, v in values.items()}


def _snap(p: Param, value: Any) -> Any:
  """``value`` clipped into the range of ``p`` and onto its step grid."""
  if p.scale == "categorical":
    return value if value in p.choices else p.choices[0]
  value = min(max(value, p.low), p.high)
  if p.scale == "int":
    return int(p.low + round((value - p.low) / p.step) * p.step)
  return float(value)


def grid(p: Param, points: int) -> list[Any]:
  """Values of one hyperparameter tried by the sequential search."""
  if p.scale == "categorical":
    return list(p.choices)
  if p.scale == "int":
    values = list(range(int(p.low), int(p.high) + 1, int(p.step)))
    if len(values) <= points:
      return values
    return sorted({_snap(p, v) for v in np.linspace(p.low, p.high, points)})
  space = np.geomspace if p.scale == "log" else np.linspace
  return [float(v) for v in space(p.low, p.high, points)]


def hparams(params: dict[str, Any]) -> dict[str, Any]:
  """Search parameters as shown in tables and TensorBoard (widths joined into ``hidden``)."""
  out = {"hidden": "-".join(str(params[f"width{k}"]) for k in range(1, params["layers"] + 1))}
  out.update({k: v for k, v in params.items() if not k.startswith("width")})
  return out


# --------------------------------------------------------------------------------- samplers


def make_sampler(config: ml_collections.ConfigDict) -> optuna.samplers.BaseSampler:
  s = config.search
  if s.strategy not in STRATEGIES:
    raise SearchError(f"search.strategy must be one of {STRATEGIES}, got {s.strategy!r}")
  if s.strategy == "tpe":
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      return optuna.samplers.TPESampler(
        seed=s.seed,
        n_startup_trials=int(s.tpe_startup),
        multivariate=True,
        group=True,  # the widths of absent layers are a conditional sub-space
        constant_liar=True,  # running trials of other workers steer new samples away
      )
  return optuna.samplers.RandomSampler(seed=s.seed)


class Stage(NamedTuple):
  """One step of the sequential search: the parameter varied and the points to try."""

  index: int
  param: str
  points: list[dict[str, Any]]


def _best(trials: list[FrozenTrial]) -> FrozenTrial | None:
  done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
  return max(done, key=lambda t: (t.value, -t.number)) if done else None


def sequential_stage(
  config: ml_collections.ConfigDict, space: dict[str, Param], trials: list[FrozenTrial]
) -> Stage | None:
  """The first sequential stage not yet complete (None: the plan is done).

  Stage k varies ``order[k]`` over its grid while every other parameter keeps the best value
  found by stages < k (the base config's values at the start). It is derived from the stored
  trials alone, so every worker computes the same plan.
  """
  order = []
  for name in config.search.order:
    if name not in space:
      raise SearchError(f"search.order names {name!r}, which is not in search.space")
    order += (
      [f"width{k}" for k in range(1, space["layers"].high + 1)] if name == "width" else [name]
    )
  current = base_params(config, space)
  for index, name in enumerate(order):
    mine = [t for t in trials if t.user_attrs.get("stage") == index]
    if index:
      best = _best([t for t in trials if (t.user_attrs.get("stage") or 0) < index])
      if best is not None:
        current = {**current, **best.params}
    if name.startswith("width") and int(name[5:]) > current["layers"]:
      continue  # no such layer in the best net so far
    p = space["width" if name.startswith("width") else name]
    points = [{**current, name: v} for v in grid(p, int(config.search.points))]
    done = {t.user_attrs.get("point") for t in mine if t.state == TrialState.COMPLETE}
    if len(done) < len(points):
      return Stage(index, name, points)
  return None


# ---------------------------------------------------------------------------------- storage


def open_storage(
  url: str | None, workdir: Path, config: ml_collections.ConfigDict, log: Log
) -> optuna.storages.BaseStorage:
  """Journal file (default ``<workdir>/study.journal``, or a path) or an RDB URL with heartbeat."""
  s = config.search
  if url and "://" in url:

    def stale(st: optuna.Study, trial: FrozenTrial) -> None:
      log(f"trial {trial.number} failed: its worker stopped sending heartbeats")

    import sqlalchemy.exc

    # Workers that start together on a fresh database race to create Optuna's tables and enum
    # types; the loser gets a unique-key violation. The tables exist by then: just try again.
    for attempt in range(6):
      try:
        with warnings.catch_warnings():
          warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
          return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=int(s.heartbeat_interval),
            grace_period=int(s.grace_period),
            heartbeat_stale_trial_callback=stale,
          )
      except sqlalchemy.exc.IntegrityError as e:
        if attempt == 5:
          raise
        log(f"another worker is creating the study tables ({type(e.orig).__name__}); retrying")
        time.sleep(0.5 * (attempt + 1) + random.random())
  path = Path(url) if url else Path(workdir) / JOURNAL_NAME
  path.parent.mkdir(parents=True, exist_ok=True)
  journal.repair(path, log)  # a torn last record would corrupt the next append
  # Optuna's file backend with its open-file lock (works on NFS too, unlike symlinks on some
  # servers); each append first sets aside a record torn since (mlp.journal).
  return optuna.storages.JournalStorage(journal.backend(path, log))


def _rdb(storage) -> optuna.storages.RDBStorage | None:
  inner = getattr(storage, "_backend", storage)
  return inner if isinstance(inner, optuna.storages.RDBStorage) else None


def worker_id() -> str:
  return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def fail_stale(st: optuna.Study, grace_period: float, log: Log) -> list[int]:
  """Mark FAIL the RUNNING trials of dead workers; returns their numbers.

  Dead = its worker process on this host is gone, or no heartbeat for ``grace_period`` seconds
  (RDB: Optuna's heartbeat table; journal: the ``heartbeat`` user attribute).
  """
  host = socket.gethostname()
  now = time.time()
  storage = st._storage
  rdb = _rdb(storage) is not None
  failed = []
  for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
    worker = str(t.user_attrs.get("worker", ""))
    w_host, _, pid = worker.rpartition(":")
    reason = None
    if w_host == host and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
      reason = f"worker {worker} is gone"
    elif not rdb:
      beat = t.user_attrs.get("heartbeat")
      if beat is None and t.datetime_start is not None:
        beat = t.datetime_start.timestamp()
      if beat is not None and now - float(beat) > grace_period:
        reason = f"no heartbeat from {worker or 'its worker'} for {now - float(beat):.0f}s"
    if reason and _fail(st, t._trial_id, "stale"):
      log(f"trial {t.number} marked FAIL: {reason}")
      failed.append(t.number)
      run_dir = Path(str(t.user_attrs.get("run_dir", "")))
      if w_host == host and run_dir.name and not (run_dir / "result.json").exists():
        shutil.rmtree(run_dir, ignore_errors=True)  # its dead worker's half-written run folder
  if rdb:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      optuna.storages.fail_stale_trials(st)
  return failed


def _fail(st: optuna.Study, trial_id: int, reason: str) -> bool:
  """Set a trial FAIL with a reason; False if it was already finished by someone else."""
  try:
    st._storage.set_trial_user_attr(trial_id, "fail_reason", reason)
    return bool(st._storage.set_trial_state_values(trial_id, state=TrialState.FAIL))
  except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
    return False


class Heartbeat:
  """A thread that beats for the worker's in-flight trials every ``interval`` seconds."""

  def __init__(self, st: optuna.Study, interval: float):
    self._st, self._interval = st, interval
    self._rdb = _rdb(st._storage)
    self._ids: set[int] = set()
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True)
    self._thread.start()

  def beat(self, trial_id: int) -> None:
    if self._rdb is not None:
      self._rdb.record_heartbeat(trial_id)  # Optuna's heartbeat table (database clock)
    else:
      self._st._storage.set_trial_user_attr(trial_id, "heartbeat", time.time())

  def add(self, trial_id: int) -> None:
    """Keep beating for this trial (its first beat is sent when it is asked)."""
    with self._lock:
      self._ids.add(trial_id)

  def remove(self, trial_id: int) -> None:
    with self._lock:
      self._ids.discard(trial_id)

  def _loop(self) -> None:
    while not self._stop.wait(self._interval):
      with self._lock:
        ids = list(self._ids)
      for trial_id in ids:
        try:
          self.beat(trial_id)
        except Exception:  # noqa: BLE001 (a missed beat is retried; the trial may have ended)
          pass

  def close(self) -> None:
    self._stop.set()
    self._thread.join()


# ----------------------------------------------------------------------------------- worker


def _counted(t: FrozenTrial, count_failed: bool) -> bool:
  if t.state in (TrialState.COMPLETE, *ACTIVE):
    return True
  return (
    count_failed
    and t.state == TrialState.FAIL
    and t.user_attrs.get("fail_reason") not in ("surplus", "duplicate")
  )


def _finished(t: FrozenTrial, count_failed: bool) -> bool:
  return t.state not in ACTIVE and _counted(t, count_failed)


def _fingerprint(config: ml_collections.ConfigDict) -> dict:
  """What must match for trials of a resumed study to be comparable: data, space, strategy."""
  s = config.search
  data = {k: v for k, v in config.data.to_dict().items() if k != "data_dir"}  # where, not what
  return checkpoint.to_jsonable(
    {
      "data": config.data.name,  # all that studies created before "data_config" hold
      "data_config": data,
      "strategy": s.strategy,
      "space": s.space.to_dict(),
      "order": list(s.order) if s.strategy == "sequential" else None,
    }
  )


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
    sampler=make_sampler(config),
    load_if_exists=True,
  )
  mine = _fingerprint(config)
  saved = st.user_attrs.get("search")
  if saved is None:
    st.set_user_attr("search", mine)
    st.set_user_attr("config", checkpoint.to_jsonable(config.to_dict()))
    return st
  # A key the saved fingerprint lacks was added after that study was created: not compared.
  diff = sorted(k for k in mine if k in saved and mine[k] != saved[k])
  if diff:
    raise SearchError(
      f"study {name!r} was created with a different search ({', '.join(diff)} differ); use the "
      "same config, or a new --study name"
    )
  return st


class Worker:
  """One search worker: ask, check the budget, train by shape group, tell; until done."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    st: optuna.Study,
    data: Dataset,
    workdir: Path,
    *,
    log: Log = print,
    max_trials: int | None = None,
    max_minutes: float | None = None,
  ):
    self.deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    self.config, self.st, self.data, self.workdir, self.log = config, st, data, Path(workdir), log
    self.space = space_of(config)
    self.s = config.search
    self.budget = int(self.s.budget)
    self.count_failed = bool(self.s.count_failed)
    self.max_trials = max_trials
    self.trained = 0
    self.vectorize = study.vectorize_of(config)

  def _trials(self) -> list[FrozenTrial]:
    return self.st.get_trials(deepcopy=False)

  def run(self) -> int:
    """Work until the study's budget is reached; returns the number of trials this worker told."""
    hb = self.hb = Heartbeat(self.st, float(self.s.heartbeat_interval))
    try:
      while True:
        fail_stale(self.st, float(self.s.grace_period), self.log)
        trials = self._trials()
        finished = sum(_finished(t, self.count_failed) for t in trials)
        if finished >= self.budget:
          self.log(f"budget reached: {finished}/{self.budget} trials finished")
          break
        if self.max_trials is not None and self.trained >= self.max_trials:
          self.log(f"--max_trials={self.max_trials} reached by this worker")
          break
        if self.deadline is not None and time.monotonic() > self.deadline:
          self.log("--max_minutes reached by this worker; the study can be resumed")
          break
        room = self.budget - sum(_counted(t, self.count_failed) for t in trials)
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
        self.st._storage.set_trial_user_attr(trial._trial_id, "worker", worker_id())
        self.hb.beat(trial._trial_id)  # from now on a dead worker's trial can be detected
        asked.append(trial)
    return asked

  def _check(self, asked: list[optuna.Trial]) -> list[tuple[int, Any]]:
    """Fail surplus/duplicate trials (decided by trial number) and build runs for the rest."""
    trials = self._trials()
    kept = []
    for trial in asked:
      number = trial.number
      ft = next(t for t in trials if t.number == number)
      stage, point = ft.user_attrs.get("stage"), ft.user_attrs.get("point")
      if stage is not None:
        dup = [
          t
          for t in trials
          if t.number != number
          and t.user_attrs.get("stage") == stage
          and t.user_attrs.get("point") == point
          and (t.state == TrialState.COMPLETE or (t.state in ACTIVE and t.number < number))
        ]
        if dup:
          _fail(self.st, trial._trial_id, "duplicate")
          self.log(f"trial {number}: duplicate of trial {dup[0].number}, dropped")
          continue
      ahead = sum(t.number < number and _counted(t, self.count_failed) for t in trials)
      if ahead >= self.budget:
        _fail(self.st, trial._trial_id, "surplus")
        self.log(f"trial {number}: over the budget of {self.budget} (another worker won), dropped")
        continue
      try:
        params = suggest(trial, self.space)
        cfg = apply(self.config, params)
        run = sweep.Run(f"trial{number:05d}", int(self.config.seed), cfg)
        sweep.hyper_of(cfg, self.data.input_shape, self.data.num_classes)
      except (ValueError, KeyError) as e:
        _fail(self.st, trial._trial_id, f"invalid: {e}")
        self.log(f"trial {number}: invalid hyperparameters ({e}), marked FAIL")
        continue
      self.st._storage.set_trial_user_attr(
        trial._trial_id, "run_dir", str(study.run_dir(self.workdir, run))
      )
      kept.append((trial._trial_id, (trial, run)))
    return kept

  def _train(self, kept: list[tuple[int, Any]]) -> None:
    by_run = {item[1].id: item for _, item in kept}
    runs = [run for _, (_, run) in kept]
    groups = sweep.group_by_shape(runs, self.data.input_shape, self.data.num_classes)
    self.log(
      f"training {len(runs)} trials in {len(groups)} shape group(s) "
      f"({'vmapped populations' if self.vectorize else 'member by member'})"
    )
    pending = {trial._trial_id: trial for trial, _ in by_run.values()}

    def tell(result: dict) -> None:  # as soon as each trial is saved, not after its whole group
      trial, _ = by_run[result["run"]]
      self._tell(trial, result)
      pending.pop(trial._trial_id, None)
      self.hb.remove(trial._trial_id)

    try:
      for group in groups:
        study.train_group(
          group,
          self.data,
          self.workdir,
          vectorize=self.vectorize,
          log=self.log,
          done=self.trained,
          total=self.budget,
          on_result=tell,
        )
    except BaseException:
      for trial_id in pending:
        _fail(self.st, trial_id, "error")
        self.hb.remove(trial_id)
      raise

  def _tell(self, trial: optuna.Trial, result: dict) -> None:
    val = result.get("val") or {}
    value = float(val["topk"][0]) if val else 0.0  # diverged: worst accuracy, still a result
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
        self.st._storage.set_trial_user_attr(trial._trial_id, k, v)
      self.st.tell(trial, value)
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as e:
      self.log(f"trial {trial.number} was already finished elsewhere (stale?), not counted: {e}")
      return
    self.trained += 1
    best = self.st.best_trial
    self.log(
      f"trial {trial.number}: val acc {value:.4f} ({attrs['epochs']} epochs); "
      f"best so far {best.value:.4f} (trial {best.number})"
    )


def run_worker(
  config: ml_collections.ConfigDict,
  workdir: str | Path,
  *,
  study_name: str | None = None,
  storage: str | None = None,
  data_dir: str | None = None,
  data: Dataset | None = None,
  max_trials: int | None = None,
  max_minutes: float | None = None,
  log: Log = print,
  outputs: bool = True,
) -> optuna.Study:
  """Join (or create) the study and work on it until its budget is reached; then write outputs."""
  from mlp import data as data_lib

  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  space = space_of(config)  # validates the space before anything is created
  name = study_name or config.name
  st = open_study(config, name, open_storage(storage, workdir, config, log))
  checkpoint.atomic_write_json(workdir / "config.json", config.to_dict())
  tensorboard.write_hparams_config(
    workdir / "runs",
    {
      k: None
      for k in sweep.hparams_of(sweep.Run("x", 0, apply(config, base_params(config, space))))
    },
    list(study.METRIC_TAGS),
  )
  if data is None:
    data = data_lib.load(config.data, data_dir)
  for note in data.notes:
    log(note)
  log(
    f"study {name!r} ({config.search.strategy} search, budget {config.search.budget}) as "
    f"worker {worker_id()}"
  )
  Worker(config, st, data, workdir, log=log, max_trials=max_trials, max_minutes=max_minutes).run()
  if outputs:
    write_outputs(config, st, workdir, log=log)
  return st


# ---------------------------------------------------------------------------------- outputs


def trials_per_hour(trials: list[FrozenTrial]) -> float | None:
  """COMPLETE trials per hour of wall time from the first start to the last completion."""
  done = [t for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete]
  starts = [t.datetime_start for t in trials if t.datetime_start]
  if not done or not starts:
    return None
  hours = (max(t.datetime_complete for t in done) - min(starts)).total_seconds() / 3600
  return len(done) / hours if hours > 0 else None


def leaderboard(st: optuna.Study) -> list[dict[str, Any]]:
  """COMPLETE trials, best validation accuracy first."""
  rows = []
  done = [t for t in st.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
  for rank, t in enumerate(sorted(done, key=lambda t: (-t.value, t.number)), 1):
    row: dict[str, Any] = {"rank": rank, "trial": t.number, "val_acc": t.value}
    row["status"] = "diverged" if t.user_attrs.get("diverged") else "ok"  # diverged: val_acc 0
    row.update({k: v for k, v in t.user_attrs.items() if k in ("val_loss", "epochs")})
    row.update(hparams(t.params))
    row.update({k: v for k, v in t.user_attrs.items() if k.startswith("test_acc/")})
    row["stage"] = t.user_attrs.get("stage")
    row["worker"] = t.user_attrs.get("worker")
    rows.append(row)
  return rows


def write_outputs(
  config: ml_collections.ConfigDict, st: optuna.Study, workdir: str | Path, *, log: Log = print
) -> dict[str, Any]:
  """Leaderboard (CSV, Markdown), plots (PNG), best/ and summary.json in ``workdir``."""
  workdir = Path(workdir)
  trials = st.get_trials(deepcopy=False)
  rows = leaderboard(st)
  states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
  rate = trials_per_hour(trials)
  summary: dict[str, Any] = {
    "study": st.study_name,
    "strategy": config.search.strategy,
    "budget": int(config.search.budget),
    "states": {k: v for k, v in states.items() if v},
    "trials_per_hour": rate,
  }
  if rows:
    keys = list(dict.fromkeys(k for r in rows for k, v in r.items() if v is not None))
    columns = [(k, k) for k in keys]
    split = config.report.test_split
    notes = [
      f"Trials: {', '.join(f'{k} {v}' for k, v in summary['states'].items())}; budget "
      f"{summary['budget']} ({config.search.strategy} search).",
      "val_acc = best validation accuracy (the objective, patience early stopping restores the "
      f"best epoch); test_acc/{split} = that model on {split}.",
    ]
    if rate:
      notes.append(f"Throughput: {rate:.1f} trials/hour (all workers).")
    report.write_table(rows, columns, workdir / "leaderboard.csv", None, title=config.report.title)
    report.write_table(
      rows[: int(config.report.top)],
      columns,
      None,
      workdir / "leaderboard.md",
      title=config.report.title,
      notes=notes,
    )
    best = st.best_trial
    summary["best"] = {
      "trial": best.number,
      "val_acc": best.value,
      "params": best.params,
      "user_attrs": best.user_attrs,
    }
    _copy_best(best, workdir, log)
    _plots(st, workdir / "figures", log)
  checkpoint.atomic_write_json(workdir / "summary.json", summary)
  log(
    f"leaderboard: {workdir / 'leaderboard.md'}; figures: {workdir / 'figures'}; "
    f"best: {workdir / 'best'}"
  )
  return summary


def _copy_best(best: FrozenTrial, workdir: Path, log: Log) -> None:
  """Copy the best trial's run (model, eval reports) to ``workdir/best`` if it is on this disk."""
  src = Path(best.user_attrs.get("run_dir", ""))
  dst = workdir / "best"
  pointer = {"trial": best.number, **best.user_attrs}
  if not (src / "result.json").exists():
    log(
      f"best trial {best.number} ran on {best.user_attrs.get('worker')} in {src}; copy that "
      "folder here (it is not on this machine's disk)"
    )
    checkpoint.atomic_write_json(workdir / "best.json", pointer)
    return
  marker = dst / "trial.json"
  if marker.exists() and json.loads(marker.read_text()).get("trial") == best.number:
    return
  tmp = workdir / f".best-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(src, tmp)
  checkpoint.atomic_write_json(
    tmp / "trial.json",
    {"trial": best.number, "val_acc": best.value, "params": best.params, **best.user_attrs},
  )
  old = workdir / f".best-old-{os.getpid()}"
  if dst.exists():
    os.replace(dst, old)
  os.replace(tmp, dst)
  shutil.rmtree(old, ignore_errors=True)
  checkpoint.atomic_write_json(workdir / "best.json", pointer)


def _plots(st: optuna.Study, out: Path, log: Log) -> None:
  """Optimisation history, parallel coordinates and one slice plot per hyperparameter (PNG)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from optuna.visualization import matplotlib as ovm

  out.mkdir(parents=True, exist_ok=True)
  done = [t for t in st.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
  always = [n for n in done[0].params if all(n in t.params for t in done)] if done else []
  plots = {
    "optimization_history": lambda: ovm.plot_optimization_history(st),
    "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(st, params=always),
    "slice": lambda: ovm.plot_slice(st),
  }
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name, draw in plots.items():
      try:
        axes = draw()
      except Exception as e:  # noqa: BLE001 (a plot must not lose the search's results)
        log(f"figure {name} skipped: {e}")
        continue
      fig = np.asarray(axes).ravel()[0].figure
      if name == "slice":
        fig.set_size_inches(max(8, 3 * len(np.asarray(axes).ravel())), 4)
      elif name == "parallel_coordinate":
        fig.set_size_inches(max(10, 1.6 * len(always)), 6)
      fig.tight_layout()
      checkpoint.atomic_write(
        out / f"{name}.png", lambda f, fig=fig: fig.savefig(f, format="png", dpi=100)
      )
      plt.close(fig)
