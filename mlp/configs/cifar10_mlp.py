"""CIFAR-10: one hidden layer of 400 ReLU units (the image study's CIFAR-10 net), He-initialised on
standardised pixels, patience 8 on the validation loss. ``:best``: two hidden layers of 1024 with
batch norm and dropout 0.2, mirrored and shifted training images, Nesterov momentum on a cosine
schedule, label smoothing 0.1; tried: this one candidate only, validation 64.4% (seed 0).
Figures and choices: RESULTS.md.

    python -m experiments.image_study --config=configs/cifar10_mlp.py --data_dir=DIR
    python -m experiments.image_study --config=configs/cifar10_mlp.py:best
    python -m experiments.image_study --config=configs/cifar10_mlp.py:quick   # smoke test
"""

import ml_collections

from mlp.configs import base


def strong_mlp(c: ml_collections.ConfigDict, *, dropout: float, epochs: int) -> None:
  """The ``:best`` recipe (also configs/fer2013_mlp.py's): two hidden layers of 1024 with batch
  norm and dropout, Nesterov momentum on a cosine schedule, label smoothing, shifted images."""
  hidden = f"dense1024 bn relu dropout{dropout}"
  c.model.layers = f"flatten {hidden} {hidden} dense"
  del c.model["hidden"], c.train["dropout"]  # the network is given by model.layers alone
  c.train.batch_size = 128
  c.train.optimizer = "nesterov"
  c.train.learning_rate = 0.05
  c.train.momentum = 0.9
  c.train.l2 = 5e-4
  c.train.lr_decay = 1.0
  c.train.schedule = "cosine"
  c.train.warmup_epochs = 1.0
  c.train.label_smoothing = 0.1
  c.train.augment_shift = 2
  c.train.max_epochs = epochs
  c.train.early_stopping = "none"  # the cosine schedule ends at 0: keep the last epoch
  c.report.columns = ("Layers=model.layers", "Opt=train.optimizer", "Sched=train.schedule")


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
  c.train.max_epochs = 50
  c.train.patience = 8  # early stopping on the validation loss, keeping its best epoch's params

  c.report.title = "CIFAR-10, one hidden layer of 400"
  c.report.columns = (
    "Hidden=model.hidden",
    "BS=train.batch_size",
    "LR=train.learning_rate",
    "L2=train.l2",
    "Prep=data.preprocess",
  )
  c.report.topk = 3

  if arg == "best":
    c.name = "cifar10_mlp_best"
    strong_mlp(c, dropout=0.2, epochs=40)
    c.train.augment_flip = True
    c.report.title = "CIFAR-10, MLP 1024-1024 with batch norm, dropout, augmentation"
  elif arg == "quick":
    c.name = "cifar10_mlp_quick"
    c.model.hidden = (32,)
    c.train.max_epochs = 3
  elif arg not in (None, ""):
    raise ValueError(
      f"unknown variant {arg!r} of configs/cifar10_mlp.py; use :best, :quick or nothing"
    )
  return c
