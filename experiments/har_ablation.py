"""HAR ablation: python -m experiments.har_ablation --config=configs/har.py [--workdir=DIR]."""

from absl import app

from mlp import cli

main = cli.study_main("har.py")

if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
