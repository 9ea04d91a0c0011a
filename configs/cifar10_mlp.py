"""CIFAR-10: one hidden layer of 400 ReLU units (the image study's CIFAR-10 net), He-initialised on
standardised pixels, patience 8 on the validation loss. Figures and choices: RESULTS.md.

    python -m experiments.image_study --config=configs/cifar10_mlp.py --data_dir=DIR
    python -m experiments.image_study --config=configs/cifar10_mlp.py:quick   # smoke test
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base.get_config()
  c.name = "cifar10_mlp"
  c.workers = 1  # CPU: train in this process on every core (large batches use XLA's threads)

  c.data.name = "cifar10"
  c.data.val_fraction = 0.1
  c.data.preprocess = "standardize"  # raw | scale | center | per_image | standardize
  c.data.limit_train = 0  # 0: all training images

  c.model.hidden = (400,)

  c.train.learning_rate = 0.005
  c.train.momentum = 0.9
  c.train.l2 = 3e-3
  c.train.lr_decay = 0.95
  c.train.dropout = (0.0, 0.0)  # rate per Dense-layer input: (input, hidden)
  c.train.augment_flip = False  # in the jitted epoch: mirror each image with probability 1/2
  c.train.augment_shift = 0  # ... and translate it by up to this many pixels
  c.train.max_epochs = 50
  c.train.early_stopping = "patience"  # keep the best-val-loss epoch's params
  c.train.patience = 8

  c.report.title = "CIFAR-10, one hidden layer of 400"
  c.report.columns = (
    "Hidden=model.hidden",
    "BS=train.batch_size",
    "LR=train.learning_rate",
    "L2=train.l2",
    "Prep=data.preprocess",
  )
  c.report.topk = 3
  c.report.eval_train = False  # also write the evaluation report of the training split

  if arg == "quick":
    c.name = "cifar10_mlp_quick"
    c.model.hidden = (32,)
    c.train.max_epochs = 3
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r} of configs/cifar10_mlp.py; use :quick or nothing")
  return c
