"""CIFAR-10 overfitting check: 50 training images, one hidden layer of 100 units, 20 epochs; the
training split gets an evaluation report too. Figures: RESULTS.md.

    python -m experiments.image_study --config=configs/cifar10_overfit.py --data_dir=DIR
    python -m experiments.image_study --config=configs/cifar10_overfit.py:quick
"""

import ml_collections

from mlp.configs import cifar10_mlp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = cifar10_mlp.get_config()
  c.name = "cifar10_overfit"
  c.data.limit_train = 50
  c.model.hidden = (100,)
  c.train.batch_size = 10
  c.train.learning_rate = 0.002
  c.train.momentum = 0.9
  c.train.l2 = 5e-4
  c.train.lr_decay = 1.0
  c.train.max_epochs = 20
  c.train.early_stopping = "none"
  c.report.title = "CIFAR-10 overfitting check: 50 training images, one hidden layer of 100"
  c.report.eval_train = True

  if arg == "quick":
    c.name = "cifar10_overfit_quick"
    c.train.max_epochs = 10
  elif arg not in (None, ""):
    raise ValueError(
      f"unknown variant {arg!r} of configs/cifar10_overfit.py; use :quick or nothing"
    )
  return c
