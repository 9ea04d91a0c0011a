"""Shared plumbing for the thin absl entry points in experiments/: workdirs and friendly errors."""

import datetime
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from absl import flags

from mlp.checkpoint import CheckpointError
from mlp.data import DataError

USER_ERRORS = (DataError, CheckpointError, ValueError, KeyError, FileNotFoundError)


def default_workdir(name: str) -> Path:
  """runs/<name>-<YYYYmmdd-HHMMSS>: a new folder per invocation."""
  return Path("runs") / f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def define_data_dir_flag() -> flags.FlagHolder:
  return flags.DEFINE_string(
    "data_dir",
    None,
    "Folder holding the data set in its official layout (else $MLP_DATA_DIR, else the cache "
    "~/.cache/mlp, else download where an official source exists).",
  )


def friendly_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """Turn expected user errors (missing data, bad config values) into a message and exit 2."""

  @functools.wraps(main)
  def wrapped(argv: list[str]) -> None:
    try:
      main(argv)
    except USER_ERRORS as e:
      kind = type(e).__name__
      message = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"\nerror ({kind}): {message}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      print(
        "\ninterrupted: finished runs are saved; run the same command with the same --workdir "
        "to resume (the interrupted run restarts).",
        file=sys.stderr,
      )
      sys.exit(130)

  return wrapped
