"""The fields every study config shares, at their defaults; a study's config overrides what differs.

c = base.get_config()   # then: c.name, c.data.name, ... (configs/har.py, configs/cifar10_mlp.py)
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "study"
  c.seed = 0  # first seed; run k uses seeds seed .. seed + seeds - 1
  c.seeds = 1  # seeds per configuration; with more, tables show mean ± std
  c.vectorize = ml_collections.config_dict.placeholder(bool)  # None: vmap on GPU, one by one on CPU
  # CPU only: worker processes, each with a one-thread XLA pool on its own core; 0 = one per core
  # (small steps run 2.3x faster on one thread, mlp/workers.py); 1 = this process, every core.
  c.workers = 1

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
  c.train.compute_dtype = "float32"  # float32 | bfloat16 (matmuls, convolutions; f32 weights)
  c.train.label_smoothing = 0.0  # targets (1 - eps) onehot + eps / classes
  c.train.dropout = (0.0, 0.0)  # rate per Dense-layer input: (input, hidden 1, ...)
  c.train.max_epochs = 100
  c.train.early_stopping = "patience"  # gap | patience | none
  c.train.gap = 0.05  # gap: stop when |val loss - train loss| > gap after gap_min_epoch
  c.train.gap_min_epoch = 0
  c.train.patience = 4  # patience: epochs without improvement; the best epoch's params are kept
  c.train.monitor = "val_loss"  # what patience watches: val_loss or val_acc
  c.train.diverge = 100.0  # diverged: a loss above this x log(classes), or not finite
  c.train.refit = False  # train again on train + val for the epochs chosen (train.refit)
  c.train.freeze = ""  # layers that never change: "", "all_but_last" or indices "0-3,5"

  c.grid = ml_collections.ConfigDict()  # fields swept: every combination is a run
  c.extra_runs = ml_collections.ConfigDict()  # named runs: overrides of the config

  c.report = ml_collections.ConfigDict()
  c.report.title = ""
  c.report.columns = ()  # "Header=config.path" columns of results.md
  c.report.topk = 5
  c.report.test_split = "test"
  c.report.figure_groups = ()  # config paths that group the loss-curve figures
  c.report.compare_with_best = ""  # an extra run drawn next to the best run
  return c
