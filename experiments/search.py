"""Hyperparameter search worker: run as many as you like, on any machines, on one shared study.

    python -m experiments.search --config=configs/fer2013_search.py --study=fer \
      [--storage=postgresql://user:pw@host:5432/db] [--workdir=DIR] [--data_dir=DIR]

Without --storage the study lives in <workdir>/study.journal (no server; give the same --workdir,
or --storage=/shared/fs/fer.journal, to every worker). Re-running the command resumes the study;
it stops when the global budget (--config.search.budget) of trials is reached.
"""

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from mlp import cli

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  str(cli.CONFIGS / "fer2013_search.py"),
  cli.CONFIG_HELP,
  lock_config=True,
)
_STUDY = flags.DEFINE_string("study", None, "Study name (default: the config's name).")
_STORAGE = flags.DEFINE_string(
  "storage",
  None,
  "Optuna storage: a database URL (postgresql://..., sqlite:///...) or a journal file path "
  "(default: <workdir>/study.journal).",
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Output folder for this machine's trials (default: runs/search-<study>)."
)
_MAX_TRIALS = flags.DEFINE_integer(
  "max_trials", None, "Stop this worker after it has finished this many trials."
)
_MAX_MINUTES = flags.DEFINE_float(
  "max_minutes", None, "Ask no new trials after this many minutes (in-flight ones finish)."
)
_REPORT_ONLY = flags.DEFINE_bool(
  "report_only", False, "Only write the leaderboard, figures and best/ of the study; no training."
)
_OUTPUTS = flags.DEFINE_bool(
  "outputs", True, "Write the leaderboard, figures and best/ when this worker finishes."
)
_DATA_DIR = cli.define_data_dir_flag()

flags.adopt_module_key_flags(cli)  # --help lists --data_dir and --strict_data


@cli.friendly_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from mlp import search  # (jax: after the flags, so that --help is quick)

  config = _CONFIG.value
  name = _STUDY.value or config.name
  workdir = Path(_WORKDIR.value or Path("runs") / f"search-{name}")
  print(f"workdir: {workdir}  (TensorBoard: tensorboard --logdir {workdir / 'runs'})", flush=True)
  if _REPORT_ONLY.value:
    storage = search.open_storage(_STORAGE.value, workdir, config, print)
    search.write_outputs(config, search.open_study(config, name, storage), workdir)
    return
  from mlp.schedule import Storage

  search.run_worker(
    config,
    workdir,
    storage=Storage(_STORAGE.value, name),
    data=_DATA_DIR.value,
    options=search.Options(_MAX_TRIALS.value, _MAX_MINUTES.value, _OUTPUTS.value),
    log=lambda s: print(s, flush=True),
  )


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
