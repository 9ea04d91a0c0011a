"""UCI HAR hyperparameter search over the same space as configs/fer2013_search.py.

python -m experiments.search --config=configs/har_search.py --study=har --data_dir=DIR
python -m experiments.search --config=configs/har_search.py:quick   # smoke test
"""

import ml_collections

from configs.fer2013_search import quick_search, search_section


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "har_search"
  c.seed = 0
  c.seeds = 1
  c.vectorize = ml_collections.config_dict.placeholder(bool)  # None: vmap on GPU, one by one on CPU

  c.data = ml_collections.ConfigDict()
  c.data.name = "har"
  c.data.data_dir = ""
  c.data.val_subjects = 3  # validation = this many training subjects (subject-disjoint)
  c.data.split_seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.hidden = (300,)
  c.model.dropout = "inverted"
  c.model.softmax_grad = "fused"

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 100
  c.train.learning_rate = 0.01
  c.train.momentum = 0.5
  c.train.l2 = 1e-4
  c.train.lr_decay = 0.95
  c.train.dropout = (0.0, 0.2)
  c.train.max_epochs = 30
  c.train.early_stopping = "patience"
  c.train.patience = 4
  c.train.gap = 0.05
  c.train.gap_min_epoch = 50

  c.report = ml_collections.ConfigDict()
  c.report.title = "UCI HAR hyperparameter search"
  c.report.test_split = "test"
  c.report.top = 50

  c.search = search_section()
  c.search.budget = 500

  if arg == "quick":
    c.name = "har_search_quick"
    c.model.hidden = (16,)
    c.train.max_epochs = 3
    c.train.batch_size = 10
    quick_search(c.search)
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r} of configs/har_search.py; use :quick or none")
  return c
