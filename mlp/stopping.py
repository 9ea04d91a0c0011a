"""Stopping rules: when a member of a population stops training, one small rule per concern.

Each rule is a frozen dataclass (its settings) with two pure functions, in the spirit of optax's
``GradientTransformation``:

    state = rule.init(n)                               # for n members
    state, stop = rule.update(state, epoch, metrics)   # stop: (n,) bool, after ``epoch`` (1-based)

``metrics`` holds the epoch's (n,) arrays ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``
and ``pruned`` (the members a pruner stopped, mlp.train.fit's ``on_epoch``). :func:`chain`
combines rules; every rule updates its state every epoch, and a member that several rules stop at
once is recorded with the first of them in the chain's order. The order the studies use
(mlp.plan) is

    diverged -> gap | patience -> pruned -> max_epochs

so a diverged member is marked diverged whatever else holds, a member that met its early-stopping
rule on the epoch a pruner stopped it counts as stopped by that rule, and the epoch budget comes
last. A rule never hides another: each looks at every member every epoch.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

Metrics = Mapping[str, np.ndarray]
MONITORS = ("val_loss", "val_acc")


@dataclasses.dataclass(frozen=True)
class Diverged:
  """Stop a member whose train or validation loss is not finite or exceeds ``limit``.

  The studies set ``limit`` = ``train.diverge`` x log(C) for C classes: log(C) is the loss of a
  uniform guess, so a loss a hundred times that is a run that is not learning, even while every
  value is still finite. Diverged runs are marked in every table and never chosen as best.
  """

  limit: float
  reason: ClassVar[str] = "diverged"

  def __post_init__(self):
    if not self.limit > 0:
      raise ValueError(f"the divergence limit must be > 0, got {self.limit} (train.diverge)")

  def init(self, n: int) -> None:  # noqa: ARG002 (every rule's init takes n)
    return None

  def update(self, state: None, epoch: int, m: Metrics) -> tuple[None, np.ndarray]:  # noqa: ARG002
    tr, va = np.asarray(m["train_loss"]), np.asarray(m["val_loss"])
    finite = np.isfinite(tr) & np.isfinite(va)
    return state, ~finite | (np.maximum(tr, va) > self.limit)


@dataclasses.dataclass(frozen=True)
class Gap:
  """Stop once |val loss - train loss| > ``gap`` after epoch ``min_epoch`` (the HAR study)."""

  gap: float
  min_epoch: int
  reason: ClassVar[str] = "gap"

  def init(self, n: int) -> None:  # noqa: ARG002
    return None

  def update(self, state: None, epoch: int, m: Metrics) -> tuple[None, np.ndarray]:
    wide = np.abs(np.asarray(m["val_loss"]) - np.asarray(m["train_loss"])) > self.gap
    return state, wide & (epoch > self.min_epoch)


@dataclasses.dataclass(frozen=True)
class Best:
  """Patience's state: per member the best monitored score so far (lower is better), the epochs
  since it, and whether this epoch set it (whose params mlp.train.fit then keeps)."""

  score: np.ndarray
  wait: np.ndarray
  improved: np.ndarray


@dataclasses.dataclass(frozen=True)
class Patience:
  """Stop when the monitored validation metric (``val_loss``, lower is better, or ``val_acc``,
  higher is better) has not beaten its best for ``epochs`` epochs; the best epoch's params are
  the member's result (the image study's rule)."""

  epochs: int
  monitor: str
  reason: ClassVar[str] = "patience"

  def __post_init__(self):
    if self.monitor not in MONITORS:
      raise ValueError(f"train.monitor must be val_loss or val_acc, got {self.monitor!r}")
    if self.epochs < 1:
      raise ValueError(f"train.patience must be >= 1 epoch, got {self.epochs}")

  def score(self, m: Metrics) -> np.ndarray:
    """The monitored metric as a score where lower is better."""
    value = np.asarray(m[self.monitor], np.float64)
    return value if self.monitor == "val_loss" else -value

  def init(self, n: int) -> Best:
    return Best(np.full(n, np.inf), np.zeros(n, int), np.zeros(n, bool))

  def update(self, state: Best, epoch: int, m: Metrics) -> tuple[Best, np.ndarray]:  # noqa: ARG002
    score = self.score(m)
    improved = score < state.score
    wait = np.where(improved, 0, state.wait + 1)
    return Best(np.where(improved, score, state.score), wait, improved), wait >= self.epochs


@dataclasses.dataclass(frozen=True)
class Pruned:
  """Stop the members a pruner chose (``metrics["pruned"]``; a search's Optuna pruner)."""

  reason: ClassVar[str] = "pruned"

  def init(self, n: int) -> None:  # noqa: ARG002
    return None

  def update(self, state: None, epoch: int, m: Metrics) -> tuple[None, np.ndarray]:  # noqa: ARG002
    return state, np.asarray(m["pruned"], bool)


@dataclasses.dataclass(frozen=True)
class MaxEpochs:
  """Stop after ``epochs`` epochs: the budget."""

  epochs: int
  reason: ClassVar[str] = "max_epochs"

  def __post_init__(self):
    if self.epochs < 1:
      raise ValueError(f"train.max_epochs must be >= 1, got {self.epochs}")

  def init(self, n: int) -> None:  # noqa: ARG002
    return None

  def update(self, state: None, epoch: int, m: Metrics) -> tuple[None, np.ndarray]:
    return state, np.full(len(np.asarray(m["val_loss"])), epoch >= self.epochs)


Rule = Diverged | Gap | Patience | Pruned | MaxEpochs


@dataclasses.dataclass(frozen=True)
class Chain:
  """Rules applied in order; hashable, so that runs with equal rules share a fit loop."""

  rules: tuple[Rule, ...]

  def __post_init__(self):
    if not any(isinstance(r, MaxEpochs) for r in self.rules):
      raise ValueError("a stopping chain needs a MaxEpochs rule: training must end")

  def init(self, n: int) -> tuple:
    return tuple(r.init(n) for r in self.rules)

  def update(self, states: tuple, epoch: int, m: Metrics) -> tuple[tuple, list[str]]:
    """(new states, per member the reason of the first rule that stops it, "" for none)."""
    n = len(np.asarray(m["val_loss"]))
    reasons = [""] * n
    new = []
    for rule, state in zip(self.rules, states, strict=True):
      state, stop = rule.update(state, epoch, m)
      new.append(state)
      for i in np.flatnonzero(stop):
        reasons[i] = reasons[i] or rule.reason
    return tuple(new), reasons

  def find(self, kind: type) -> Any:
    """The chain's rule of this kind, or None."""
    return next((r for r in self.rules if isinstance(r, kind)), None)

  def state_of(self, states: tuple, kind: type) -> Any:
    """The state of the chain's rule of this kind (which must be in the chain)."""
    return next(s for r, s in zip(self.rules, states, strict=True) if isinstance(r, kind))

  @property
  def max_epochs(self) -> int:
    return self.find(MaxEpochs).epochs

  def describe(self) -> list[dict]:
    """The rules as JSON: [{"rule": reason, **settings}, ...] in order."""
    return [{"rule": r.reason, **dataclasses.asdict(r)} for r in self.rules]


def chain(*rules: Rule) -> Chain:
  """Combine rules in this order (see the module docstring)."""
  return Chain(tuple(rules))
