"""Every default of every config field, in one place; a study's config overrides what differs.

c = base.get_config()   # then: c.name, c.data.name, ... (configs/har.py, configs/cifar10_mlp.py)
c.search = base.search_section()   # the search configs (configs/fer2013_search.py)

The library reads its defaults from here too (mlp.defaults): a field a config lacks (one saved
before the field existed, say) takes the value below, so a new field's default must be what the
code did before it existed. A network is given one way: ``model.layers``, or ``model.hidden`` +
``train.dropout`` (a config that sets ``model.layers`` deletes those two, as configs/fer2013_cnn.py
does; mlp.plan refuses a run that has both).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "study"
  c.seed = 0  # first seed; run k uses seeds seed .. seed + seeds - 1
  c.seeds = 1  # seeds per configuration; with more, tables show mean ± std
  c.vectorize = ml_collections.config_dict.placeholder(bool)  # None: vmap on GPU, one by one on CPU
  # CPU only: worker processes, each with a one-thread XLA pool on its own core; 0 = one per core
  # (for small steps, mlp/workers.py); 1 = this process, every core.
  c.workers = 1
  c.ensemble = 1  # > 1: every this many consecutive seeds form one averaged model (mlp.ensemble)

  c.data = ml_collections.ConfigDict()
  c.data.name = ""  # a data set of the registry (mlp.data.DATASETS)
  c.data.data_dir = ""  # empty: --data_dir flag, else $MLP_DATA_DIR, else cache/download
  c.data.split_seed = 0
  c.data.classes = ()  # class names to keep (empty: all), e.g. to hold classes out

  c.model = ml_collections.ConfigDict()
  c.model.hidden = (300,)  # hidden widths (ReLU)
  c.model.layers = ""  # an architecture string (mlp/layers.py) instead of hidden + train.dropout
  c.model.dropout = (
    "inverted"  # inverted: train keep-mask / (1 - rate); regular: inference x (1 - rate)
  )
  c.model.softmax_grad = "fused"  # fused: (p - y) / B; jacobian: the full softmax Jacobian, Eq. 1-2
  c.model.init_from = ""  # a saved model to start from (transfer learning, mlp/transfer.py)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 100
  c.train.learning_rate = 0.01
  c.train.momentum = 0.0  # heavy-ball momentum, Eq. 4
  c.train.l2 = 0.0
  c.train.lr_decay = 1.0  # learning rate x this per epoch (schedule epoch_decay)
  c.train.optimizer = "sgd"  # sgd (heavy ball, Eq. 4) | nesterov | adam | adamw (momentum: beta1)
  c.train.beta2 = 0.999  # adam, adamw
  c.train.schedule = "epoch_decay"  # epoch_decay | cosine (to 0 over max_epochs)
  c.train.warmup_epochs = 0.0  # linear learning-rate warm-up, per step
  c.train.compute_dtype = "float32"  # float32 only (bfloat16 is refused: not built)
  # What train loss/accuracy each epoch reports: full (the training split evaluated again, which
  # the gap rule needs) or epoch (the running means over its minibatches: no extra pass).
  c.train.train_metrics = "full"
  c.train.label_smoothing = 0.0  # targets (1 - eps) onehot + eps / classes
  c.train.dropout = (0.0, 0.0)  # rate per Dense-layer input: (input, hidden 1, ...)
  c.train.augment_flip = False  # in the jitted epoch: mirror each image with probability 1/2
  c.train.augment_shift = 0  # ... and translate it by up to this many pixels
  c.train.max_epochs = 100
  c.train.early_stopping = "patience"  # gap | patience | none
  c.train.gap = 0.05  # gap: stop when |val loss - train loss| > gap after gap_min_epoch
  c.train.gap_min_epoch = 0
  c.train.patience = 4  # patience: epochs without improvement; the best epoch's params are kept
  c.train.monitor = "val_loss"  # what patience watches: val_loss or val_acc
  c.train.diverge = 100.0  # diverged: a loss above this x log(classes), or not finite
  c.train.refit = False  # train again on train + val for the epochs chosen (train.refit)
  c.train.freeze = ""  # layers that never change: "", "all_but_last" or indices "0-3,5"
  # A run in training writes its checkpoint (mlp/resume.py) after an epoch once this many minutes
  # have passed since the last (0: every epoch); a rerun continues it from there.
  c.train.checkpoint_minutes = 2.0

  c.grid = ml_collections.ConfigDict()  # fields swept: every combination is a run
  c.extra_runs = ml_collections.ConfigDict()  # named runs: overrides of the config

  c.report = ml_collections.ConfigDict()
  c.report.title = ""
  c.report.columns = ()  # "Header=config.path" columns of results.md
  c.report.topk = 5
  c.report.test_split = "test"
  c.report.figure_groups = ()  # config paths that group the loss-curve figures
  c.report.compare_with_best = ""  # an extra run drawn next to the best run
  c.report.eval_train = False  # also write the evaluation report of the training split
  # scikit-learn learners the best run is compared with (baselines.md); mlp.baselines: <name> is
  # tuned by inner cross-validation on train + val, <name>_default is the untuned learner
  c.report.baselines = ()

  c.cv = ml_collections.ConfigDict()  # experiments.cross_validate (mlp/crossval.py)
  c.cv.folds = 7
  c.cv.scheme = "kfold"  # kfold | 5x2 (Dietterich's 5x2cv)
  c.cv.seed = 0  # fold assignment
  c.cv.baselines = ()  # scikit-learn learners on the same folds (mlp.baselines; tuned per fold)
  c.cv.alpha = 0.05  # significance level of the paired tests
  return c


def search_section() -> ml_collections.ConfigDict:
  """The ``search`` section of the search configs (the image study's ranges by default)."""
  s = ml_collections.ConfigDict()
  s.strategy = "random"  # random (Bergstra & Bengio 2012) | sequential | tpe
  s.budget = 14000  # global number of trials, shared by all workers of one study
  s.count_failed = False  # False: budget = COMPLETE trials (failed ones are retried); True: + FAIL
  s.ask_batch = 8  # trials asked at once per worker; same-shape trials train as one population
  # random: trial k's draw depends on (seed, k) alone, on any worker; None: fresh per worker
  s.seed = ml_collections.config_dict.placeholder(int)
  s.tpe_startup = 20  # TPE: random trials before the model kicks in
  # Sequential search: one hyperparameter at a time in this order ("width" = width1, width2, ...),
  # keeping the best value found before moving on; starts from the model/train values.
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
  # compiled programs: step 1 would reproduce the study's space exactly but almost never group.
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
