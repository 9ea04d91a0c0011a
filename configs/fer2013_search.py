"""FER2013 hyperparameter search: the image study's random search over its Table of ranges.

Base sections (data/model/train/report) as in configs/har.py, plus ``search``: the space (per
hyperparameter a range and a scale), the strategy (random | sequential | tpe), the global trial
budget shared by every worker, the ask batch and the order of the sequential search.

    python -m experiments.search --config=configs/fer2013_search.py --study=fer --data_dir=DIR
    python -m experiments.search --config=configs/fer2013_search.py:quick   # smoke test
    python -m experiments.search --config=configs/fer2013_search.py \\
      --config.search.strategy=sequential --storage=postgresql://user:pw@host/db --study=fer-seq
"""

import ml_collections


def quick_search(search: ml_collections.ConfigDict) -> None:
  """Shrink a search section for smoke tests: a tiny space, budget and fast heartbeats."""
  search.budget = 6
  search.ask_batch = 2
  search.points = 2
  search.tpe_startup = 2
  search.heartbeat_interval = 1
  search.grace_period = 5
  search.poll_seconds = 0.2
  search.space.layers = dict(scale="int", low=1, high=2, step=1)
  search.space.width = dict(scale="int", low=8, high=32, step=8)
  search.space.batch_size = dict(scale="int", low=10, high=20, step=10)


def search_section() -> ml_collections.ConfigDict:
  """The ``search`` section shared by the search configs (the study's ranges by default)."""
  s = ml_collections.ConfigDict()
  s.strategy = "random"  # random (Bergstra & Bengio 2012) | sequential | tpe
  s.budget = 14000  # global number of trials, shared by all workers of one study
  s.count_failed = False  # False: budget = COMPLETE trials (failed ones are retried); True: + FAIL
  s.ask_batch = 8  # trials asked at once per worker; same-shape trials train as one population
  # random: trial k's draw depends on (seed, k) alone, on any worker; None: fresh per worker
  s.seed = ml_collections.config_dict.placeholder(int)
  s.tpe_startup = 20  # TPE: random trials before the model kicks in
  # Sequential search: one hyperparameter at a time in this order ("width" = width1, width2, ...),
  # keeping the best value found before moving on; starts from the model/train values above.
  s.order = (
    "layers",
    "width",
    "learning_rate",
    "batch_size",
    "momentum",
    "l2",
    "lr_decay",
    "dropout",
  )
  s.points = 5  # values tried per hyperparameter by the sequential search (all, for few choices)
  s.input_dropout = 0.0  # dropout rate on the network input; "dropout" is the hidden-layer rate
  s.heartbeat_interval = 30  # seconds between heartbeats of a worker's in-flight trials
  s.grace_period = 120  # a RUNNING trial without heartbeat for this long is marked FAIL
  s.poll_seconds = 5.0  # wait between checks while other workers finish the last trials
  # Stopping hopeless trials early on their per-epoch val accuracy (Optuna's pruners):
  # none | median | successive_halving | hyperband (epochs from pruner_min_epochs to max_epochs)
  s.pruner = "none"
  s.pruner_min_epochs = 1
  s.pruner_reduction = 4  # successive halving / hyperband: keep 1 in this many at each rung
  s.pruner_bootstrap = 2  # successive halving / hyperband: trials at a rung before it promotes
  s.pruner_startup = 5  # median: finished trials before pruning starts
  # Scales: log | linear (floats), int (integers; ``step`` quantises), categorical (``choices``).
  # Width and batch size are quantised (``step``) so that asked trials share static shapes and
  # compiled programs: step 1 reproduces the study's space exactly but almost never groups.
  s.space = ml_collections.ConfigDict()
  s.space.layers = dict(scale="int", low=1, high=3, step=1)
  s.space.width = dict(scale="int", low=100, high=500, step=50)  # per hidden layer
  s.space.learning_rate = dict(scale="log", low=1e-4, high=1e-1)
  s.space.l2 = dict(scale="log", low=1e-6, high=1e-2)
  s.space.batch_size = dict(scale="int", low=50, high=200, step=50)
  s.space.lr_decay = dict(scale="linear", low=0.9, high=1.0)
  s.space.dropout = dict(scale="linear", low=0.0, high=0.5)
  s.space.momentum = dict(scale="linear", low=0.1, high=0.9)
  return s


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "fer2013_search"
  c.seed = 0  # init/shuffle seed of every trial (trials differ only in hyperparameters)
  c.seeds = 1
  c.vectorize = ml_collections.config_dict.placeholder(bool)  # None: vmap on GPU, one by one on CPU

  c.data = ml_collections.ConfigDict()
  c.data.name = "fer2013"
  c.data.data_dir = ""  # empty: --data_dir flag, else $MLP_DATA_DIR, else cache
  c.data.val_fraction = 0.1  # stratified carve-out of Training; tests: PublicTest, PrivateTest
  c.data.split_seed = 0
  c.data.preprocess = "standardize"

  c.model = ml_collections.ConfigDict()
  c.model.hidden = (300,)  # sequential search start; random/TPE sample it
  c.model.dropout = "inverted"
  c.model.softmax_grad = "fused"

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 100
  c.train.learning_rate = 0.01
  c.train.momentum = 0.5
  c.train.l2 = 1e-4
  c.train.lr_decay = 0.95
  c.train.dropout = (0.0, 0.2)
  c.train.max_epochs = 30  # per-trial epoch budget
  c.train.early_stopping = "patience"
  c.train.patience = 4
  c.train.monitor = "val_loss"  # what patience watches: val_loss or val_acc
  c.train.gap = 0.05
  c.train.gap_min_epoch = 50

  c.report = ml_collections.ConfigDict()
  c.report.title = "FER2013 hyperparameter search"
  c.report.test_split = "PrivateTest"
  c.report.top = 50  # rows in the Markdown leaderboard (the CSV has every trial)

  c.search = search_section()

  if arg == "quick":
    c.name = "fer2013_search_quick"
    c.model.hidden = (16,)
    c.train.max_epochs = 3
    c.train.batch_size = 10
    quick_search(c.search)
  elif arg not in (None, ""):
    raise ValueError(f"unknown variant {arg!r} of configs/fer2013_search.py; use :quick or none")
  return c
