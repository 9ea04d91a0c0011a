"""FER2013 CNNs: the default, sized for 45 minutes on 2 CPU cores (batch norm, two convolutions
in the late blocks, augmentation, a cosine schedule), the study's Keras CNN (``:study``) and a
larger one for a GPU (``:large``). Figures: RESULTS.md.

    python -m experiments.image_study --config=configs/fer2013_cnn.py --data_dir=DIR
    python -m experiments.image_study --config=configs/fer2013_cnn.py:study
    python -m experiments.image_study --config=configs/fer2013_cnn.py:quick   # smoke test
    python -m experiments.image_study --config=configs/fer2013_cnn.py:large   # for a GPU
"""

import ml_collections

from mlp.configs import fer2013_mlp

STUDY = (
  "conv64/5x5/s1/valid relu maxpool5/s2 "
  "conv64/3x3/s1/valid relu conv64/3x3/s1/valid relu avgpool3/s2 "
  "conv128/3x3/s1/valid relu conv128/3x3/s1/valid relu avgpool3/s2 "
  "flatten dense1024 relu dropout0.2 dense1024 relu dropout0.2 dense"
)
DEFAULT = (
  "conv32 maxpool2 bn relu "  # pool first: batch norm and ReLU then run at 24x24, not 48x48
  "conv64 bn relu maxpool2 "
  "conv128 bn relu conv128 bn relu maxpool2 "
  "conv256 bn relu conv256 bn relu maxpool2 "
  "flatten dropout0.4 dense256 bn relu dropout0.4 dense"
)
LARGE = (
  "conv64 bn relu conv64 bn relu maxpool2 "
  "conv128 bn relu conv128 bn relu maxpool2 "
  "conv256 bn relu conv256 bn relu maxpool2 "
  "conv512 bn relu conv512 bn relu maxpool2 "
  "flatten dropout0.5 dense1024 bn relu dropout0.5 dense"
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = fer2013_mlp.get_config()
  c.name = "fer2013_cnn"
  c.data.flip_train = False  # mirrors are drawn per step by train.augment_flip instead
  del c.model["hidden"]
  c.model.layers = DEFAULT
  c.model.dropout = "inverted"
  c.train.batch_size = 128
  c.train.learning_rate = 0.05
  c.train.momentum = 0.9
  c.train.l2 = 5e-4
  c.train.schedule = "cosine"
  c.train.warmup_epochs = 2.0
  c.train.label_smoothing = 0.1
  del c.train["dropout"]  # the rates are in model.layers
  c.train.augment_flip = True
  c.train.augment_shift = 4
  c.train.max_epochs = 40
  c.train.patience = 40  # never stops before the schedule ends; the best epoch's params are kept
  c.train.monitor = "val_acc"
  c.train.train_metrics = "epoch"  # no second pass over the training set per epoch
  c.report.title = "FER2013 CNN"
  c.report.columns = (
    "Layers=model.layers",
    "BS=train.batch_size",
    "LR=train.learning_rate",
    "Mom=train.momentum",
    "L2=train.l2",
    "Aug=train.augment_shift",
  )

  if arg == "study":
    c.name = "fer2013_cnn_study"
    c.model.layers = STUDY
    c.train.learning_rate = 0.01
    c.train.schedule = "epoch_decay"
    c.train.lr_decay = 0.95
    c.train.warmup_epochs = 0.0
    c.train.label_smoothing = 0.0
    c.train.l2 = 0.0
    c.train.patience = 6
    c.train.augment_flip = False
    c.train.augment_shift = 0
    c.train.max_epochs = 40  # patience 6 on val accuracy stops it first
  elif arg == "large":
    c.name = "fer2013_cnn_large"
    c.model.layers = LARGE
    c.train.max_epochs = 60
    c.train.patience = 60
  elif arg == "quick":
    c.name = "fer2013_cnn_quick"
    c.model.layers = "conv4 bn relu maxpool5/s2 conv8/3x3/s2/valid relu flatten dropout0.5 dense"
    c.train.max_epochs = 2
  elif arg not in (None, ""):
    raise ValueError(
      f"unknown variant {arg!r} of configs/fer2013_cnn.py; use :study, :large, :quick or nothing"
    )
  return c
