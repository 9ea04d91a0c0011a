"""One owner per workdir: a study holds an exclusive lock on ``<workdir>/lock.json`` while it runs.

The lock is an ``flock`` on that file, so the kernel releases it when the owner dies, even by
``kill -9``: a lock left by a dead process is never in the way, and the next owner says it took
over. The file records the owner (pid, host, start time, command) for the message a second
launcher gets (``WorkdirBusy``, exit 2).
"""

import contextlib
import datetime
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

try:
  import fcntl
except ImportError:  # not POSIX: no locking
  fcntl = None

LOCK_NAME = "lock.json"


class WorkdirBusy(RuntimeError):
  """Another live process owns the workdir."""


class WorkdirUnusable(RuntimeError):
  """The workdir is a file, or cannot be created or written."""


def check_workdir(workdir: str | Path) -> None:
  """WorkdirUnusable, in one line with what to do, when ``workdir`` is a file or lies under one,
  or when it (or the folder it would be created in) cannot be written; nothing is created."""
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirUnusable(
      f"--workdir {workdir} is a file, not a folder: choose another --workdir, or move the file"
    )
  existing = next((p for p in (workdir, *workdir.absolute().parents) if p.exists()), None)
  if existing is not None and not existing.is_dir():
    raise WorkdirUnusable(
      f"--workdir {workdir} cannot be created: {existing} is a file; choose another --workdir"
    )
  if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
    what = "is not writable" if existing == workdir else f"cannot be created in {existing}"
    raise WorkdirUnusable(
      f"--workdir {workdir} {what}: make it writable (chmod u+w "
      f"{existing}) or choose another --workdir"
    )


def _read(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    return json.loads(os.read(fd, 1 << 16) or b"{}")
  except ValueError:
    return {}


def _describe(owner: dict) -> str:
  return (
    f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {owner.get('started', '?')}"
    + (f": {owner['command']}" if owner.get("command") else "")
  )


@contextlib.contextmanager
def hold(workdir: str | Path, log: Callable[[str], None] = print) -> Iterator[None]:
  """Own ``workdir`` for the duration of the block; WorkdirBusy if a live process owns it."""
  if fcntl is None:
    yield
    return
  path = Path(workdir) / LOCK_NAME
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    owner = _read(fd)
    os.close(fd)
    raise WorkdirBusy(
      f"{workdir} is in use by another process ({_describe(owner)}); wait for it to finish, stop "
      "it, or use another --workdir"
    ) from None
  try:
    previous = _read(fd)
    if previous:  # a clean owner empties the file on release
      log(f"{workdir}: its previous owner ({_describe(previous)}) stopped without releasing it")
    me = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "started": f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}",
      "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(me).encode())
    os.fsync(fd)
    yield
  finally:
    os.ftruncate(fd, 0)  # released: the next owner finds it empty
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
