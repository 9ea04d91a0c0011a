"""FER2013: train without one emotion, then add it three ways (scratch, last layer, fine-tuning).

The net is configs/fer2013_mlp.py's (one hidden layer of 457, dropout 0.5). ``last_layer`` starts
from the 6-class model with every layer but the output frozen; ``fine_tune`` starts from it and
trains everything at a tenth of the learning rate. The added emotion is Surprise (11% of the
training faces); ``:disgust`` adds Disgust (1.5%), too rare for this net to predict at all.

    python -m experiments.transfer --config=configs/fer2013_transfer.py --data_dir=DIR
    python -m experiments.transfer --config=configs/fer2013_transfer.py:disgust
    python -m experiments.transfer --config=configs/fer2013_transfer.py:quick
"""

import ml_collections

from mlp.configs import fer2013_mlp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = fer2013_mlp.get_config("quick" if arg == "quick" else None)
  c.name = "fer2013_transfer"
  c.transfer = ml_collections.ConfigDict()
  c.transfer.new_class = "Disgust" if arg == "disgust" else "Surprise"
  c.transfer.last_layer = ml_collections.ConfigDict({"train": {"freeze": "all_but_last"}})
  c.transfer.fine_tune = ml_collections.ConfigDict(
    {"train": {"learning_rate": c.train.learning_rate / 10}}
  )
  c.report.title = f"FER2013: adding {c.transfer.new_class}"
  if arg not in (None, "", "quick", "disgust"):
    raise ValueError(
      f"unknown variant {arg!r} of configs/fer2013_transfer.py; use :quick, :disgust or nothing"
    )
  return c
