"""Ctrl-C and SIGTERM, shared by the entry points and the worker processes (no mlp imports).

SIGTERM is how batch schedulers preempt a job (Slurm, HTCondor, Kubernetes): it is handled like
Ctrl-C. Inside training (:func:`safe_points`) either signal only asks for a stop: the fit loop
finishes its epoch, writes the checkpoints of the runs in training (mlp.resume) and raises at
that safe point (:func:`stop_now`): KeyboardInterrupt for Ctrl-C, :class:`Preempted` for SIGTERM.
Elsewhere (loading data, waiting for worker processes) they raise at once. A second Ctrl-C
raises at once too, for whoever cannot wait for the end of an epoch. The entry points exit with
130 after Ctrl-C and 143 (128 + SIGTERM) after SIGTERM, saying what was saved and the command
that resumes (:func:`resume_command`).
"""

import _thread
import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator


class Preempted(KeyboardInterrupt):
  """SIGTERM: a scheduler preempts the job. A KeyboardInterrupt, so that every cleanup that
  runs on Ctrl-C (locks released, trials ended, worker processes stopped) runs on it too."""


EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_requested: int | None = None  # the signal of a stop asked for inside safe_points
_depth = 0  # how many safe_points blocks the main thread is in
_quiet = False  # a worker process: its study says what happens


def _exception(signum: int) -> KeyboardInterrupt:
  return Preempted() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum: int, frame) -> None:  # noqa: ARG001 (a signal handler's signature)
  global _requested
  if _depth and not (signum == signal.SIGINT and _requested == signal.SIGINT):
    if _requested is None and signum == signal.SIGINT and not _quiet:
      print(
        "\nstopping at the end of this epoch (its checkpoint is written); Ctrl-C again to stop now",
        file=sys.stderr,
        flush=True,
      )
    _requested = signal.SIGTERM if signal.SIGTERM in (signum, _requested) else signum
    return
  _requested = None
  raise _exception(signum)


def install(*, quiet: bool = False) -> None:
  """Handle Ctrl-C and SIGTERM as the module docstring says (the main thread of an entry point
  or, ``quiet``, a worker process); a KeyboardInterrupt that lands in a finaliser is not lost."""
  global _quiet
  _quiet = quiet
  keep_interrupts()
  if threading.current_thread() is threading.main_thread():
    for signum in (signal.SIGINT, signal.SIGTERM):
      if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup'ed: stays ignored
        signal.signal(signum, _handler)


@contextlib.contextmanager
def safe_points() -> Iterator[None]:
  """Inside: a Ctrl-C or SIGTERM waits for the next :func:`requested` check (training)."""
  global _depth
  _depth += 1
  try:
    yield
  finally:
    _depth -= 1


def requested() -> int | None:
  """The signal (SIGINT, SIGTERM) of a stop asked for and not yet honoured, or None."""
  return _requested


def stop_now() -> None:
  """Honour a stop asked for: raise KeyboardInterrupt (Ctrl-C) or Preempted (SIGTERM)."""
  global _requested
  signum, _requested = _requested, None
  if signum is not None:
    raise _exception(signum)


def reason(e: BaseException) -> str:
  """How work stopped by ``e`` ends (a trial's fail reason): preempted (SIGTERM: other workers
  take it over), interrupted (Ctrl-C) or error."""
  if isinstance(e, Preempted):
    return "preempted"
  return "interrupted" if isinstance(e, KeyboardInterrupt) else "error"


def exit_code(e: BaseException) -> int:
  """The exit status of a process stopped by ``e``: 143 after SIGTERM, 130 after Ctrl-C."""
  return EXIT_CODES[signal.SIGTERM if isinstance(e, Preempted) else signal.SIGINT]


def resume_command(workdir: str | os.PathLike | None = None) -> str:
  """The command line of this process, with ``--workdir`` when it was not given (a default
  workdir is new each time): what resumes an interrupted study or search."""
  argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
  if workdir is not None and not any(a.split("=")[0] in ("--workdir", "-workdir") for a in argv):
    argv.append(f"--workdir={workdir}")
  return shlex.join(argv)


def keep_interrupts() -> None:
  """Make a Ctrl-C that lands inside a finaliser or gc callback (jax runs one on every garbage
  collection) interrupt the main thread again instead of printing an "Exception ignored"
  traceback and being lost."""

  def hook(unraisable) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
      signum = signal.SIGTERM if isinstance(unraisable.exc_value, Preempted) else signal.SIGINT
      _thread.interrupt_main(signum)
    else:
      sys.__unraisablehook__(unraisable)

  sys.unraisablehook = hook
