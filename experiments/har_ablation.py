"""HAR ablation: python -m experiments.har_ablation --config=configs/har.py [--workdir=DIR]."""

from absl import app, flags

from mlp import cli

main = cli.study_main("har.py")
flags.adopt_module_key_flags(cli)  # --help lists --config, --workdir, --data_dir

if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
