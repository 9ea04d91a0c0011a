"""A search's journal file: a torn last record is set aside before anyone appends to it.

Optuna's journal storage appends one JSON record per line under a file lock. A worker killed in
the middle of a write leaves a last line without its newline; the next append would glue a new
record onto that fragment, and from then on every reader fails on the glued line. Under the same
lock, :func:`repair` (when a storage is opened) and every append of :func:`backend` (for workers
already running) move such a fragment to ``<journal>.torn-<time>`` and truncate the journal to its
last whole record, so the study goes on from the valid records. A line broken in the middle of
the file (written by an older version, or edited) cannot be repaired safely: it stops with the
command that keeps the records before it.
"""

import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path


class JournalError(ValueError):
  """The journal holds an invalid record that cannot be set aside automatically."""


def backend(path: str | Path, log: Callable[[str], None] = print):
  """Optuna's journal file backend (with its open-file lock, which works on NFS) whose every
  append first sets aside a torn last record, so that a worker that was already running when
  another died mid-write never writes after the fragment."""
  from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

  class _Backend(JournalFileBackend):
    def __init__(self, file_path: str, lock_obj: JournalFileOpenLock) -> None:
      super().__init__(file_path, lock_obj=lock_obj)
      self._mlp_path, self._mlp_lock = Path(file_path), lock_obj

    def append_logs(self, logs: list[dict]) -> None:  # as Optuna's, plus the set-aside
      text = "\n".join(json.dumps(entry, separators=(",", ":")) for entry in logs) + "\n"
      self._mlp_lock.acquire()
      try:
        _set_aside_torn(self._mlp_path, log)
        with open(self._mlp_path, "ab") as f:
          f.write(text.encode("utf-8"))
          f.flush()
          os.fsync(f.fileno())
      finally:
        self._mlp_lock.release()

  return _Backend(str(path), JournalFileOpenLock(str(path)))


def _set_aside_torn(path: Path, log: Callable[[str], None]) -> Path | None:
  """Move a last line without its newline to ``<path>.torn-<time>``; call under the lock."""
  with open(path, "rb") as f:
    size = f.seek(0, os.SEEK_END)
    if size == 0:
      return None
    f.seek(size - 1)
    if f.read(1) == b"\n":
      return None
    f.seek(0)
    data = f.read()
  cut = data.rfind(b"\n") + 1  # end of the last whole record
  aside = path.with_name(f"{path.name}.torn-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}")
  aside.write_bytes(data[cut:])
  with open(path, "r+b") as f:
    f.truncate(cut)
    f.flush()
    os.fsync(f.fileno())
  records = data[:cut].count(b"\n")
  log(
    f"{path}: its last record was torn (a worker stopped mid-write); the fragment "
    f"({len(data) - cut} bytes) is set aside as {aside}, the study goes on from the "
    f"{records} whole records"
  )
  return aside


def repair(path: str | Path, log: Callable[[str], None] = print) -> Path | None:
  """Set aside a torn last record of the journal at ``path``; returns where it went (or None).

  Raises JournalError naming the file, the line and the recovery command when a record before
  the last one is not valid JSON.
  """
  from optuna.storages.journal import JournalFileOpenLock

  path = Path(path)
  if not path.is_file():
    return None
  lock = JournalFileOpenLock(str(path))  # the lock Optuna's writers take
  lock.acquire()
  try:
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    for n, line in enumerate(data[:cut].splitlines(), start=1):
      try:
        json.loads(line)
      except ValueError as e:
        raise JournalError(
          f"{path} line {n} is not a valid record ({e}); the study cannot be read past it. To "
          f"keep the {n - 1} records before it (later trials are lost), run:\n"
          f"  cp '{path}' '{path}.bak' && head -n {n - 1} '{path}.bak' > '{path}'\n"
          "then run the same command again."
        ) from None
    return _set_aside_torn(path, log)
  finally:
    lock.release()
