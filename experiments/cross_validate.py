"""Cross-validation against baselines: python -m experiments.cross_validate --config=configs/X.py.

python -m experiments.cross_validate --config=configs/har_cv.py [--workdir=DIR] [--data_dir=DIR]
python -m experiments.cross_validate --config=configs/har_cv.py:quick   # smoke test
"""

from absl import app, flags

from mlp import cli


def run(config, workdir, *, data_dir):
  from mlp import crossval

  crossval.run_cv(config, workdir, data_dir=data_dir)


main = cli.config_main("har_cv.py", run, tensorboard="")
flags.adopt_module_key_flags(cli)  # --help lists --config, --workdir, --data_dir

if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
