"""Optuna storage shared by studies and searches: opening it, heartbeats, dead workers.

Storage: a journal file (default ``<workdir>/study.journal``; no server, a shared file system
also works) or any SQLAlchemy URL (``postgresql://...``) for many machines. A PostgreSQL server
that does not answer is given up after ``CONNECT_TIMEOUT_S`` seconds, or the URL's own
``?connect_timeout=N``.

Dead workers: every in-flight trial has a heartbeat (Optuna's native one on RDB storage, a
``heartbeat`` user attribute on the journal). A RUNNING trial whose heartbeat is older than the
grace period, or whose worker process on this host is gone, is marked FAIL (``fail_reason`` =
``stale``) by the next worker that looks: it is never counted as a result.

Optuna's storage methods (``BaseStorage``) are public; what is not (a study's storage and id, a
trial's id) is reached only through :func:`storage_of`, :func:`study_id` and :func:`trial_id`.
"""

import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlp.search import journal

Log = Callable[[str], None]
JOURNAL_NAME = "study.journal"
METRIC = "val_accuracy"  # the objective of studies and searches
ACTIVE = (TrialState.RUNNING, TrialState.WAITING)
CONNECT_TIMEOUT_S = 10  # a PostgreSQL server that accepts and never answers: given up after this


class Storage(NamedTuple):
  """Where a study's trials live: ``url`` (a journal file path, or ``postgresql://...`` shared by
  many machines; None: the workdir's journal) and the study's ``name`` (None: the config's)."""

  url: str | None = None
  name: str | None = None


LOCAL = Storage()  # the workdir's journal, the study named as its config


class StorageError(ValueError):
  """The storage URL is malformed or the storage cannot be reached."""


# ------------------------------------------------------------- the adapter to Optuna's internals


def storage_of(st: optuna.Study) -> optuna.storages.BaseStorage:
  return st._storage


def study_id(st: optuna.Study) -> int:
  return st._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
  return trial._trial_id


def suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution):
  """A value from any distribution object (Trial's public suggest_* take its fields apart)."""
  return trial._suggest(name, dist)


# ---------------------------------------------------------------------------------- storage


def open_storage(
  url: str | None,
  workdir: Path,
  *,
  heartbeat_interval: float,
  grace_period: float,
  log: Log,
) -> optuna.storages.BaseStorage:
  """Journal file (default ``<workdir>/study.journal``, or a path) or an RDB URL with heartbeat."""
  if url and "://" in url:
    return _open_rdb(url, int(heartbeat_interval), int(grace_period), log)
  path = Path(url) if url else Path(workdir) / JOURNAL_NAME
  path.parent.mkdir(parents=True, exist_ok=True)
  journal.repair(path, log)  # a torn last record would corrupt the next append
  # Optuna's file backend with its open-file lock (works on NFS too, unlike symlinks on some
  # servers); each append first sets aside a record torn since (mlp.search.journal).
  return optuna.storages.JournalStorage(journal.backend(path, log))


def _open_rdb(url: str, interval: int, grace: int, log: Log) -> optuna.storages.RDBStorage:
  import sqlalchemy.exc

  def stale(st: optuna.Study, trial: FrozenTrial) -> None:
    log(f"trial {trial.number} failed: its worker stopped sending heartbeats")

  # Workers that start together on a fresh database race to create Optuna's tables and enum
  # types; the loser gets a unique-key violation. The tables exist by then: just try again.
  engine_kwargs: dict = {"pool_pre_ping": True}
  timeout, given = connect_timeout(url)
  if timeout is not None and not given:
    engine_kwargs["connect_args"] = {"connect_timeout": timeout}
  for attempt in range(6):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
          url,
          engine_kwargs=engine_kwargs,
          heartbeat_interval=interval,
          grace_period=grace,
          heartbeat_stale_trial_callback=stale,
        )
    except sqlalchemy.exc.IntegrityError as e:
      if attempt == 5:
        raise
      log(f"another worker is creating the study tables ({type(e.orig).__name__}); retrying")
      time.sleep(0.5 * (attempt + 1) + random.random())
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.OperationalError, ImportError) as e:
      first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
      if "timeout" in first.lower() and timeout is not None:
        raise StorageError(
          f"the database server {_server(url)} did not answer within {timeout:g} s "
          f"({_hide_password(url)}): check that the server is up and reachable, or give it "
          "longer with ?connect_timeout=SECONDS in the URL"
        ) from None
      raise StorageError(
        f"cannot open the storage {_hide_password(url)}: {first}; check the URL "
        "(postgresql://user:password@host:port/database) and that the server is reachable, or "
        "leave --storage out to use a journal file in the workdir"
      ) from None
  raise AssertionError("unreachable")


def connect_timeout(url: str) -> tuple[float | None, bool]:
  """(seconds, whether the URL gives them): a PostgreSQL URL's own ``?connect_timeout=N``
  (libpq's), else ``CONNECT_TIMEOUT_S``; (None, False) for other databases."""
  import sqlalchemy.engine

  try:
    parsed = sqlalchemy.engine.make_url(url)
  except Exception:  # noqa: BLE001 (a malformed URL is said when the storage opens)
    return None, False
  if parsed.get_backend_name() != "postgresql":
    return None, False
  given = parsed.query.get("connect_timeout")
  try:
    return (float(given), True) if given is not None else (CONNECT_TIMEOUT_S, False)
  except (TypeError, ValueError):
    return None, True  # not a number: the driver says so


def _server(url: str) -> str:
  """host:port of a database URL."""
  import sqlalchemy.engine

  parsed = sqlalchemy.engine.make_url(url)
  return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _hide_password(url: str) -> str:
  head, sep, tail = url.partition("@")
  if not sep or ":" not in head.split("://", 1)[-1]:
    return url
  scheme, _, user = head.rpartition("://")
  return f"{scheme}://{user.split(':')[0]}:***@{tail}"


def name_metric(st: optuna.Study) -> None:
  """Name the objective ``val_accuracy`` in the study, for Optuna's plots and optuna-dashboard
  (they say "Objective Value" otherwise)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    if st.metric_names is None:
      st.set_metric_names([METRIC])


def rdb_of(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
  """The RDB storage behind ``storage`` (Optuna wraps it in a cache), or None (a journal)."""
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


def fail(st: optuna.Study, tid: int, reason: str) -> bool:
  """Set a trial FAIL with a reason; False if it was already finished by someone else."""
  try:
    storage_of(st).set_trial_user_attr(tid, "fail_reason", reason)
    return bool(storage_of(st).set_trial_state_values(tid, state=TrialState.FAIL))
  except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
    return False


def fail_stale(st: optuna.Study, grace_period: float, log: Log) -> list[int]:
  """Mark FAIL the RUNNING trials of dead workers; returns their numbers.

  Dead = its worker process on this host is gone, or no heartbeat for ``grace_period`` seconds
  (RDB: Optuna's heartbeat table; journal: the ``heartbeat`` user attribute). The half-written
  run folder of a dead worker on this host is removed, but for its checkpoint (mlp.resume),
  which the run's next attempt continues from.
  """
  host = socket.gethostname()
  now = time.time()
  rdb = rdb_of(storage_of(st)) is not None
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
    if reason and fail(st, trial_id(t), "stale"):
      log(f"trial {t.number} marked FAIL: {reason}")
      failed.append(t.number)
      run_dir = Path(str(t.user_attrs.get("run_dir", "")))
      if w_host == host and run_dir.name and not (run_dir / "result.json").exists():
        from mlp import resume  # (the checkpoint module needs jax; storage alone does not)

        resume.clear_folder(run_dir)  # its dead worker's half-written files, but its checkpoint
        if run_dir.is_dir() and not any(run_dir.iterdir()):
          run_dir.rmdir()
  if rdb:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      optuna.storages.fail_stale_trials(st)
  return failed


class Heartbeat:
  """A thread that beats for the worker's in-flight trials every ``interval`` seconds."""

  def __init__(self, st: optuna.Study, interval: float):
    self._storage, self._interval = storage_of(st), interval
    self._rdb = rdb_of(self._storage)
    self._ids: set[int] = set()
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True)
    self._thread.start()

  def beat(self, tid: int) -> None:
    if self._rdb is not None:
      self._rdb.record_heartbeat(tid)  # Optuna's heartbeat table (database clock)
    else:
      self._storage.set_trial_user_attr(tid, "heartbeat", time.time())

  def add(self, tid: int) -> None:
    """Keep beating for this trial (its first beat is sent when it is claimed)."""
    with self._lock:
      self._ids.add(tid)

  def remove(self, tid: int) -> None:
    with self._lock:
      self._ids.discard(tid)

  def _loop(self) -> None:
    while not self._stop.wait(self._interval):
      with self._lock:
        ids = list(self._ids)
      for tid in ids:
        try:
          self.beat(tid)
        except Exception:  # noqa: BLE001 (a missed beat is retried; the trial may have ended)
          pass

  def close(self) -> None:
    self._stop.set()
    self._thread.join()
