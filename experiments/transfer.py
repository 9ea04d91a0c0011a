"""Add a class by transfer learning: python -m experiments.transfer --config=configs/X.py.

python -m experiments.transfer --config=configs/fer2013_transfer.py [--workdir=DIR] [--data_dir=DIR]
"""

from absl import app, flags

from mlp import cli


def run(config, workdir, *, data_dir):
  from mlp import transfer_study

  transfer_study.run_transfer(config, workdir, data_dir=data_dir)


main = cli.config_main("fer2013_transfer.py", run, tensorboard="")
flags.adopt_module_key_flags(cli)  # --help lists --config, --workdir, --data_dir

if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
