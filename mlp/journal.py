"""A search's journal file: a torn last record is set aside before anyone appends to it.

Optuna's journal storage appends one JSON record per line under a file lock. A worker killed in
the middle of a write leaves a last line without its newline; the next append would glue a new
record onto that fragment, and from then on every reader fails on the glued line. :func:`repair`
runs under the same lock before a storage is opened: it moves the fragment to
``<journal>.torn-<time>`` and truncates the journal to its last whole record, so the study goes on
from the valid records. A line that is broken in the middle of the file (written by an older
version, or edited) cannot be repaired safely: it stops with the command that keeps the records
before it.
"""

import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path


class JournalError(ValueError):
  """The journal holds an invalid record that cannot be set aside automatically."""


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
    cut = data.rfind(b"\n") + 1  # end of the last whole record
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
    if cut == len(data):
      return None
    aside = path.with_name(f"{path.name}.torn-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}")
    aside.write_bytes(data[cut:])
    with open(path, "r+b") as f:
      f.truncate(cut)
      f.flush()
      os.fsync(f.fileno())
  finally:
    lock.release()
  records = data[:cut].count(b"\n")
  log(
    f"{path}: its last record was torn (a worker stopped mid-write); the fragment "
    f"({len(data) - cut} bytes) is set aside as {aside}, the study goes on from the "
    f"{records} whole records"
  )
  return aside
