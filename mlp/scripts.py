"""The console scripts of an installed mlp (pyproject's ``[project.scripts]``): ``mlp-har-ablation
--config=configs/har.py:quick`` runs what ``python -m experiments.har_ablation`` runs in a checkout,
from any folder (a ``--config`` path that is no file there names a packaged config, mlp.cli)."""

import importlib
import sys

ENTRY_POINTS = (
  "har_ablation",
  "image_study",
  "cross_validate",
  "transfer",
  "search",
  "evaluate",
  "predict",
)


def run(name: str) -> None:
  """Run the entry point ``experiments/<name>.py`` (installed as ``mlp.experiments.<name>``)."""
  from absl import app, flags

  from mlp import cli

  if name not in ENTRY_POINTS:
    raise ValueError(f"no entry point {name!r}; they are {', '.join(ENTRY_POINTS)}")
  module = importlib.import_module(f"mlp.experiments.{name}")
  # --help lists the main module's key flags, and the main module is this script (sys.argv[0]):
  # give it the entry point's, as python -m experiments.<name> has them.
  for flag in flags.FLAGS.get_key_flags_for_module(module):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(module.main, flags_parser=cli.parse_flags)


def har_ablation() -> None:
  run("har_ablation")


def image_study() -> None:
  run("image_study")


def cross_validate() -> None:
  run("cross_validate")


def transfer() -> None:
  run("transfer")


def search() -> None:
  run("search")


def evaluate() -> None:
  run("evaluate")


def predict() -> None:
  run("predict")
