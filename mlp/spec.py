"""What a training run is made of: its static program description (:class:`Spec`), its traced
hyperparameters (:class:`Hyper`, arrays: a new value never recompiles), and a population of runs
with their stopping rules (:class:`Population`). Keyword defaults are configs/base.py's."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from mlp import model
from mlp import stopping as stopping_lib
from mlp.defaults import DEFAULTS

_TRAIN, _MODEL = DEFAULTS.train, DEFAULTS.model

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("epoch_decay", "cosine")
COMPUTE_DTYPES = ("float32",)  # bfloat16 is refused: not built (benchmarks/README.md, "bfloat16")
TRAIN_METRICS = ("full", "epoch")


class Hyper(NamedTuple):
  """Per-run hyperparameters; each a scalar array (or (P,) for a population)."""

  learning_rate: jax.Array
  momentum: jax.Array  # heavy-ball or Nesterov mu; Adam's beta1
  l2: jax.Array  # L2 on the weights (AdamW: the decoupled weight decay)
  lr_decay: jax.Array  # per-epoch factor of the epoch_decay schedule
  layers: model.LayerHyper  # per layer: dropout rate, batch-norm momentum, or ()
  smoothing: jax.Array  # label smoothing eps of the targets
  warmup: jax.Array  # epochs of linear learning-rate warm-up (0: none)
  horizon: jax.Array  # epochs over which the cosine schedule anneals to 0
  beta2: jax.Array  # Adam's second-moment decay


def make_hyper(
  *,
  learning_rate: float,
  momentum: float = _TRAIN.momentum,
  l2: float = _TRAIN.l2,
  lr_decay: float = _TRAIN.lr_decay,
  layers: model.LayerHyper = (),
  smoothing: float = _TRAIN.label_smoothing,
  warmup: float = _TRAIN.warmup_epochs,
  horizon: float = 1.0,
  beta2: float = _TRAIN.beta2,
  dtype=np.float32,
) -> Hyper:
  """A single run's :class:`Hyper` as host arrays, checking ranges with readable errors.

  ``layers`` are the per-layer values from :func:`mlp.model.parse` (checked there).
  """
  checks = [
    (learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}"),
    (0 <= momentum < 1, f"momentum must be in [0, 1), got {momentum}"),
    (l2 >= 0, f"l2 must be >= 0, got {l2}"),
    (0 < lr_decay <= 1, f"lr_decay must be in (0, 1], got {lr_decay}"),
    (0 <= smoothing < 1, f"label_smoothing must be in [0, 1), got {smoothing}"),
    (warmup >= 0, f"warmup_epochs must be >= 0, got {warmup}"),
    (horizon > 0, f"the cosine schedule's horizon must be > 0 epochs, got {horizon}"),
    (0 <= beta2 < 1, f"beta2 must be in [0, 1), got {beta2}"),
  ]
  for ok, msg in checks:
    if not ok:
      raise ValueError(msg)
  per_layer = tuple(h if isinstance(h, tuple) else np.asarray(h, dtype) for h in layers)
  a = lambda v: np.asarray(v, dtype)  # noqa: E731
  return Hyper(
    learning_rate=a(learning_rate),
    momentum=a(momentum),
    l2=a(l2),
    lr_decay=a(lr_decay),
    layers=per_layer,
    smoothing=a(smoothing),
    warmup=a(warmup),
    horizon=a(horizon),
    beta2=a(beta2),
  )


def stack(items: Sequence) -> object:
  """Stack a list of pytrees (runs) into one pytree with a leading population axis."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)


@dataclasses.dataclass(frozen=True)
class Spec:
  """The static shape of a run: everything that changes the compiled program."""

  net: model.Net
  batch_size: int
  softmax_grad: str = _MODEL.softmax_grad  # "fused" | "jacobian"
  eval_batch: int = 4096
  unroll: int = 2  # lax.scan unroll factor of the minibatch loop (odd values are rounded up)
  flip: bool = _TRAIN.augment_flip  # augmentation: mirror each image left-right, probability 1/2
  shift: int = _TRAIN.augment_shift  # augmentation: translate each image by up to this many pixels
  frozen: tuple[int, ...] = ()  # layers (indices into net.layers) whose parameters never change
  optimizer: str = _TRAIN.optimizer  # sgd (heavy ball, Eq. 4) | nesterov | adam | adamw (mlp.optim)
  schedule: str = _TRAIN.schedule  # epoch_decay (eta decay^epoch) | cosine (mlp.optim)
  compute_dtype: str = _TRAIN.compute_dtype  # float32 (bfloat16 refused: not built)
  train_metrics: str = _TRAIN.train_metrics  # full | epoch: what the history's train_* hold

  def __post_init__(self):
    if (self.flip or self.shift) and len(self.net.input_shape) != 3:
      raise ValueError(
        f"augmentation (flip, shift) needs image inputs, not shape {self.net.input_shape}"
      )
    if self.shift < 0:
      raise ValueError(f"augmentation shift must be >= 0 pixels, got {self.shift}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
    if self.softmax_grad not in ("fused", "jacobian"):
      raise ValueError(f"softmax_grad must be fused/jacobian, got {self.softmax_grad!r}")
    if self.compute_dtype == "bfloat16":
      raise ValueError(
        "compute_dtype 'bfloat16' is not built yet: steps compute in float32 (XLA:CPU ran "
        "bfloat16 convolutions no faster; benchmarks/README.md); use train.compute_dtype=float32"
      )
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(
        f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}"
      )
    if self.train_metrics not in TRAIN_METRICS:
      raise ValueError(
        f"train_metrics must be one of {', '.join(TRAIN_METRICS)}, got {self.train_metrics!r}"
      )
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.unroll < 1:
      raise ValueError(f"unroll must be >= 1, got {self.unroll}")
    model.check_frozen(self.net, self.frozen)


class Population(NamedTuple):
  """What :func:`mlp.train.fit` trains: P members that share one compiled program."""

  spec: Spec
  hyper: Hyper  # leading axis P
  keys: jax.Array  # (P,) PRNG keys: each member's init, shuffling, dropout and augmentation
  stopping: stopping_lib.Chain  # when each member stops (mlp.stopping)
  init: Callable | None = None  # (params, state) -> (params, state): e.g. mlp.transfer's
