"""Ctrl-C handling shared by the entry points and the worker processes (no mlp imports)."""

import _thread
import sys


def keep_interrupts() -> None:
  """Make a Ctrl-C that lands inside a finaliser or gc callback (jax runs one on every garbage
  collection) interrupt the main thread again instead of printing an "Exception ignored"
  traceback and being lost."""

  def hook(unraisable) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
      _thread.interrupt_main()
    else:
      sys.__unraisablehook__(unraisable)

  sys.unraisablehook = hook
