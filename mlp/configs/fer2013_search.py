"""FER2013 hyperparameter search: the image study's random search over its Table of ranges.

Built on configs/base.py, plus its ``search`` section (base.search_section): the space (per
hyperparameter a range and a scale), the strategy (random | sequential | tpe), the global trial
budget shared by every worker, the ask batch and the order of the sequential search.

    python -m experiments.search --config=configs/fer2013_search.py --study=fer --data_dir=DIR
    python -m experiments.search --config=configs/fer2013_search.py:quick   # smoke test
    python -m experiments.search --config=configs/fer2013_search.py \\
      --config.search.strategy=sequential --storage=postgresql://user:pw@host/db --study=fer-seq
"""

import ml_collections

from mlp.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base.get_config()
  c.name = "fer2013_search"
  c.seed = 0  # init/shuffle seed of every trial (trials differ only in hyperparameters)

  c.data.name = "fer2013"
  c.data.val_fraction = 0.1  # stratified carve-out of Training; tests: PublicTest, PrivateTest
  c.data.preprocess = "standardize"

  c.model.hidden = (300,)  # sequential search start; random/TPE sample it

  c.train.momentum = 0.5
  c.train.l2 = 1e-4
  c.train.lr_decay = 0.95
  c.train.dropout = (0.0, 0.2)
  c.train.max_epochs = 30  # per-trial epoch budget
  c.train.gap_min_epoch = 50

  c.report.title = "FER2013 hyperparameter search"
  c.report.test_split = "PrivateTest"
  c.report.top = 50  # rows in the Markdown leaderboard (the CSV has every trial)

  c.search = base.search_section()

  if arg == "quick":
    c.name = "fer2013_search_quick"
    c.model.hidden = (16,)
    c.train.max_epochs = 3
    c.train.batch_size = 10
    base.quick_search(c.search)
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r} of configs/fer2013_search.py; use :quick or none")
  return c
