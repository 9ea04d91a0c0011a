"""Shared plumbing for the thin absl entry points in experiments/: workdirs and friendly errors."""

import contextlib
import datetime
import errno
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from mlp import compile_cache, interrupts
from mlp.data import common

CONFIGS = Path(__file__).resolve().parent / "configs"  # the study configs, installed with mlp
HELP_FLAGS = {"-?", "--help", "--helpshort", "--helpfull", "--helpxml"}
CONFIG_HELP = (
  "Config file[:variant]. Override any field with --config.<field>=VALUE, e.g. "
  "--config.train.learning_rate=0.01 --config.model.hidden='(300, 100)'."
)


def user_errors() -> tuple[type[Exception], ...]:
  """The exceptions a user's input causes (missing data, bad values, a busy workdir or storage).

  Imported on first use so that a mistake in a flag is reported before jax and the study modules
  load (a second, not several)."""
  from mlp.checkpoint import CheckpointError
  from mlp.data import DataError
  from mlp.lock import WorkdirBusy, WorkdirUnusable
  from mlp.search.storage import StorageError
  from mlp.study import StudyError
  from mlp.workers import WorkerError

  return (
    DataError,
    CheckpointError,
    WorkerError,
    WorkdirBusy,
    WorkdirUnusable,
    StudyError,
    StorageError,
    ValueError,
    KeyError,
    FileNotFoundError,
  )


def default_workdir(name: str) -> Path:
  """runs/<name>-<YYYYmmdd-HHMMSS>: a new folder per invocation."""
  return Path("runs") / f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def define_data_dir_flag() -> flags.FlagHolder:
  if "strict_data" not in flags.FLAGS:
    flags.DEFINE_bool(
      "strict_data",
      False,
      "Stop when a data file differs from the official one (default: warn and go on).",
    )
  return flags.DEFINE_string(
    "data_dir",
    None,
    "Folder holding the data set in its official layout (else $MLP_DATA_DIR, else the cache "
    "~/.cache/mlp, else download where an official source exists).",
  )


def one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001
  """A warning as a command line says it: ``warning: <message>``."""
  return f"warning: {message}\n"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (``app.run(main, flags_parser=parse_flags)``), with a mistake in a flag
  or a config override (unknown field or variant, wrong type, missing file) said in a line or
  two and exit status 2 instead of a traceback."""
  argv = [packaged_config(a) for a in ("--help" if a == "-h" else a for a in argv)]
  warnings.formatwarning = one_line_warning  # this is a command line: no source listings
  try:
    return flags.FLAGS(argv)
  except SystemExit as e:  # absl ends --help with status 1; asking for help is no error
    if e.code == 1 and HELP_FLAGS & set(argv[1:]):
      sys.exit(0)
    raise
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    text = str(e).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(e, AttributeError | KeyError):  # an override names a field the config lacks
      text = unknown_field_message(e, argv)
    elif "Traceback" in text and lines:  # the config file raised: keep its own message
      text = f"{lines[0].rstrip(':')}: {lines[-1]}"
    elif "No such file" in text or "Attempted" in text:
      text = " ".join(lines)
    print(
      f"error: {text}\nOverrides look like --config.train.learning_rate=0.01; --help lists the "
      "flags.",
      file=sys.stderr,
    )
    sys.exit(2)


def packaged_config(arg: str) -> str:
  """``--config=PATH[:variant]`` as given, or, when PATH is no file here but names a config of
  the package (``configs/har.py``, ``har.py``, ``har``), that file: the README's commands work
  from any folder with mlp installed."""
  flag, sep, value = arg.partition("=")
  if flag not in ("--config", "-config") or not sep:
    return arg
  path, colon, variant = value.partition(":")
  if not path or Path(path).exists():
    return arg
  name = Path(path).name
  packaged = CONFIGS / (name if name.endswith(".py") else f"{name}.py")
  return f"{flag}={packaged}{colon}{variant}" if packaged.is_file() else arg


def unknown_field_message(e: BaseException, argv: Sequence[str]) -> str:
  """What an override of a field the config lacks says: the field as given on the command line
  and ml_collections' suggestion, e.g. ``the config has no field train.max_epoch (from
  --config.train.max_epoch); did you mean "max_epochs"?``."""
  while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(message))
    e = e.args[0]
  text = str(e.args[0]) if e.args else str(e)
  first, *rest = [line.strip() for line in text.splitlines() if line.strip()] or [""]
  key = first.strip("'\"")
  used = [
    a.split("=")[0]
    for a in argv
    if a.startswith("--config.") and key in a.split("=")[0].split(".")[1:]
  ]
  field = used[0][len("--config.") :] if len(used) == 1 else key
  out = f"the config has no field {field}" + (f" (from {', '.join(used)})" if used else "")
  hint = " ".join(rest)
  if hint.lower().startswith("did you mean"):
    suggestion = hint.split(" instead of ")[0]
    out += f"; {suggestion[0].lower()}{suggestion[1:]}?"
  return out


@contextlib.contextmanager
def errors_said() -> Iterator[None]:
  """Expected user errors (missing data, bad config values, a path that cannot be used) inside
  as a message and exit 2; Ctrl-C and SIGTERM (mlp.interrupts) as a line saying what was saved
  and the command that resumes, and exit 130 and 143 (a context, not a wrapper: no frame between
  an entry point and the study)."""
  # absl shows INFO logs; jax's "Unable to initialize backend 'tpu'" is one, and not news on a
  # CPU or GPU machine. Its warnings (e.g. a GPU without a CUDA jaxlib) still show.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  compile_cache.enable()  # before jax loads: this process and its workers (mlp.compile_cache)
  interrupts.install()
  if "strict_data" in flags.FLAGS and flags.FLAGS.strict_data:
    os.environ[common.STRICT_ENV] = "1"  # read by the loaders, here and in worker processes
  try:
    yield
  except user_errors() as e:
    kind = type(e).__name__
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"\nerror ({kind}): {message}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    if e.errno == errno.ENOSPC:
      print(
        f"\nerror: disk full{f' writing {e.filename}' if e.filename else ''}: free some space "
        "and run the same command with the same --workdir again (finished runs are saved).",
        file=sys.stderr,
      )
      sys.exit(2)
    if not e.filename:  # not about a path the user gave: a bug, with its traceback
      raise
    print(f"\nerror ({type(e).__name__}): {path_error(e)}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt as e:
    what = "preempted (SIGTERM)" if isinstance(e, interrupts.Preempted) else "interrupted"
    saved = getattr(e, "saved", None) or "finished runs are saved"
    workdir = getattr(e, "workdir", None)
    print(f"\n{what}: {saved}; resume: {interrupts.resume_command(workdir)}", file=sys.stderr)
    sys.exit(interrupts.exit_code(e))


# What to do about an OSError on a path (the workdir, data, a model): by errno.
PATH_ADVICE = {
  errno.EACCES: "check its permissions, or choose another path (--workdir, --data_dir, ...)",
  errno.EPERM: "check its permissions, or choose another path (--workdir, --data_dir, ...)",
  errno.EROFS: "the file system is read-only: choose another path (--workdir, ...)",
  errno.EEXIST: "a file is in the way of a folder: move it, or choose another path",
  errno.ENOTDIR: "a file is in the way of a folder: move it, or choose another path",
  errno.EISDIR: "a folder is where a file was expected: give the file's path",
  errno.ENAMETOOLONG: "use a shorter path",
}


def path_error(e: OSError) -> str:
  """An OSError on a path in one line: the path, what went wrong and what to do."""
  where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
  advice = PATH_ADVICE.get(e.errno, "check the path")
  return f"{where}: {e.strerror or e}; {advice}"


def friendly_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """``main`` with expected user errors said in a line and exit 2 (:func:`errors_said`)."""

  @functools.wraps(main)
  def wrapped(argv: list[str]) -> None:
    with errors_said():
      main(argv)

  return wrapped


def config_main(
  default_config: str, run: Callable[..., object], tensorboard: str = "runs"
) -> Callable[[list[str]], None]:
  """Flags (--config, --workdir, --data_dir) and the main function of an entry point that calls
  ``run(config, workdir, data_dir=...)``; ``tensorboard``: the logdir inside the workdir."""
  config_flag = config_flags.DEFINE_config_file(
    "config", str(CONFIGS / default_config), CONFIG_HELP, lock_config=True
  )
  workdir_flag = flags.DEFINE_string(
    "workdir", None, "Output folder; reuse one to resume (default: a new runs/<name>-<time>)."
  )
  data_dir_flag = define_data_dir_flag()

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with errors_said():
      config = config_flag.value
      try:
        config.get("name")
      except OSError as e:  # config_flags defers a missing or unreadable file until first use
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise FileNotFoundError(f"cannot load the --config file: {lines[-1]}") from None
      from mlp import plan, resume

      overrides = config_flags.get_override_values(flags.FLAGS[config_flag.name])
      plan.check_overrides(config, overrides)
      workdir = Path(workdir_flag.value or default_workdir(config.name))
      print(f"workdir: {workdir}  (TensorBoard: tensorboard --logdir {workdir / tensorboard})")
      with resume.noted(workdir):  # a stop says what this workdir holds and how to resume
        run(config, workdir, data_dir=data_dir_flag.value)

  return main


def study_main(default_config: str) -> Callable[[list[str]], None]:
  """The main function of a study entry point (mlp.study.run_study)."""
  storage = flags.DEFINE_string(
    "storage",
    None,
    "Where the study's runs live (mlp.schedule): a journal file path, or postgresql://user:pw@host"
    "/db shared by processes on many machines, each with its own --workdir (default: "
    "<workdir>/study.journal).",
  )
  study_name = flags.DEFINE_string(
    "study", None, "Study name in --storage (default: the config's name)."
  )
  report_only = flags.DEFINE_bool(
    "report_only",
    False,
    "Write results.md/csv and the figures from the storage alone (no data, no training).",
  )
  verbose = flags.DEFINE_bool(
    "verbose",
    False,
    "Print a line per epoch of every run (each run's train.log always has them); by default a "
    "progress bar on a terminal, else a status line every 20 s.",
  )

  def run(config, workdir, *, data_dir):
    from mlp import crossval, study
    from mlp.schedule import Storage

    where = Storage(storage.value, study_name.value)
    if report_only.value:
      study.report_only(config, workdir, storage=where)
      return
    results = study.run_study(
      config, workdir, data_dir=data_dir, storage=where, verbose=verbose.value
    )
    crossval.compare_on_test(config, results, workdir, data_dir=data_dir)

  return config_main(default_config, run)
