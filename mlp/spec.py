"""What a training run is made of: its static program description (:class:`Spec`), its traced
hyperparameters (:class:`Hyper`, arrays: a new value never recompiles) and its stopping rule."""

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from mlp import model

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("epoch_decay", "cosine")
COMPUTE_DTYPES = ("float32", "bfloat16")


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
  momentum: float = 0.0,
  l2: float = 0.0,
  lr_decay: float = 1.0,
  layers: model.LayerHyper = (),
  smoothing: float = 0.0,
  warmup: float = 0.0,
  horizon: float = 1.0,
  beta2: float = 0.999,
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
  softmax_grad: str = "fused"  # "fused" | "jacobian"
  eval_batch: int = 4096
  unroll: int = 2  # lax.scan unroll factor of the minibatch loop (odd values are rounded up)
  flip: bool = False  # augmentation: mirror each training image left-right with probability 1/2
  shift: int = 0  # augmentation: translate each training image by up to this many pixels
  frozen: tuple[int, ...] = ()  # layers (indices into net.layers) whose parameters never change
  optimizer: str = "sgd"  # sgd (heavy ball, Eq. 4) | nesterov | adam | adamw (mlp.optim)
  schedule: str = "epoch_decay"  # epoch_decay (eta decay^epoch) | cosine (mlp.optim)
  compute_dtype: str = "float32"  # float32 | bfloat16: matmuls and convolutions (mixed precision)

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
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(
        f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}"
      )
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.unroll < 1:
      raise ValueError(f"unroll must be >= 1, got {self.unroll}")
    model.check_frozen(self.net, self.frozen)


class Stopping(NamedTuple):
  """Early stopping rule.

  gap:      stop when |val loss - train loss| > ``gap`` after epoch ``min_epoch`` (HAR study);
  patience: stop when the monitored validation metric (``monitor``: "val_loss", lower is better,
            or "val_acc", higher is better) has not beaten its best for ``patience`` epochs, and
            restore the params of the best epoch (image study);
  none:     train for ``max_epochs``.

  Whatever the rule, a member stops as "diverged" once its train or validation loss is not finite
  or exceeds ``diverge`` x log(C), C classes: log(C) is the loss of a uniform guess, so a loss a
  hundred times that (learning rate far too high) is a run that is not learning, even while every
  value is still finite. Diverged runs are marked in every table and never chosen as best.
  """

  kind: str = "none"
  gap: float = 0.05
  min_epoch: int = 50
  patience: int = 4
  monitor: str = "val_loss"
  diverge: float = 100.0

  def validate(self) -> "Stopping":
    if self.kind not in ("gap", "patience", "none"):
      raise ValueError(f"early stopping must be gap/patience/none, got {self.kind!r}")
    if self.monitor not in ("val_loss", "val_acc"):
      raise ValueError(f"early stopping monitor must be val_loss/val_acc, got {self.monitor!r}")
    if not self.diverge > 0:
      raise ValueError(f"train.diverge must be > 0, got {self.diverge}")
    return self
