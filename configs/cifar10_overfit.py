"""CIFAR-10 overfitting check: 50 training images, one hidden layer of 100 units, 20 epochs.

The study used lr 1e-4, L2 1.8, batch 10 and 20 epochs on raw 0..255 pixels (cs231n-style tiny
init) and showed training accuracy reaching 100% while validation accuracy stays low. Here, as in
configs/cifar10_mlp.py, the inputs are standardised and the net He-initialised, so lambda is
scaled down by ~64^2 (L2 5e-4) and the step is larger: lr 0.002 with momentum 0.9 (0.01 also
overfits but oscillates), no decay, no early stopping. Train accuracy reaches 1.0 by epoch 4 and
stays there; validation accuracy (5,000 images) stays near chance plus a little (~17%). The
training split also gets an evaluation report, and ``runs/<name>/seed0/history.png`` shows the
curves.

    python -m experiments.image_study --config=configs/cifar10_overfit.py --data_dir=DIR
    python -m experiments.image_study --config=configs/cifar10_overfit.py:quick
"""

import ml_collections

from configs import cifar10_mlp


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
