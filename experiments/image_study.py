"""Image study (CIFAR-10, FER2013): python -m experiments.image_study --config=configs/X.py.

python -m experiments.image_study --config=configs/cifar10_overfit.py --data_dir=DIR
python -m experiments.image_study --config=configs/cifar10_mlp.py --workdir=runs/cifar10
python -m experiments.image_study --config=configs/fer2013_mlp.py:quick
"""

from absl import app, flags

from mlp import cli

main = cli.study_main("cifar10_mlp.py")
flags.adopt_module_key_flags(cli)  # --help lists --config, --workdir, --data_dir

if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
