"""Image study (CIFAR-10, FER2013): python -m experiments.image_study --config=configs/X.py.

python -m experiments.image_study --config=configs/cifar10_overfit.py --data_dir=DIR
python -m experiments.image_study --config=configs/cifar10_mlp.py --workdir=runs/cifar10
python -m experiments.image_study --config=configs/fer2013_mlp.py:quick
"""

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from mlp import cli, study

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  str(Path(__file__).parents[1] / "configs" / "cifar10_mlp.py"),
  "Study config (configs/cifar10_overfit.py, configs/cifar10_mlp.py, configs/fer2013_mlp.py).",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Output folder; reuse one to resume (default: a new runs/<name>-<time>)."
)
_DATA_DIR = cli.define_data_dir_flag()


@cli.friendly_errors
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = _WORKDIR.value or cli.default_workdir(config.name)
  print(f"workdir: {workdir}  (TensorBoard: tensorboard --logdir {Path(workdir) / 'runs'})")
  study.run_study(config, workdir, data_dir=_DATA_DIR.value)


if __name__ == "__main__":
  app.run(main)
