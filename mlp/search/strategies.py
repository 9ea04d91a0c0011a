"""Search strategies: Optuna's samplers (random, TPE), the sequential plan (one hyperparameter
at a time, derived from the stored trials alone) and the pruners."""

import warnings
import zlib
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from mlp.search.space import Param, SearchError, base_params, grid

STRATEGIES = ("random", "sequential", "tpe")
PRUNERS = ("none", "median", "successive_halving", "hyperband")


def make_sampler(config: ml_collections.ConfigDict) -> optuna.samplers.BaseSampler:
  s = config.search
  if s.strategy not in STRATEGIES:
    raise SearchError(f"search.strategy must be one of {STRATEGIES}, got {s.strategy!r}")
  if s.strategy == "tpe":
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      kwargs = dict(
        n_startup_trials=int(s.tpe_startup),
        multivariate=True,
        group=True,  # the widths of absent layers are a conditional sub-space
        constant_liar=True,  # running trials of other workers steer new samples away
      )
      if s.seed is None:
        return optuna.samplers.TPESampler(**kwargs)
      return NumberedTPESampler(int(s.seed), **kwargs)
  if s.seed is None:
    return optuna.samplers.RandomSampler()
  return NumberedRandomSampler(int(s.seed))


class NumberedRandomSampler(optuna.samplers.BaseSampler):
  """Random search where trial k's parameters are drawn from (seed, k, name) alone.

  Whichever worker asks trial k gets the same parameters, so workers sharing a seed do not
  repeat each other, and two studies with one seed (e.g. with and without a pruner) see the same
  trials in the same order: their comparison is paired.
  """

  def __init__(self, seed: int) -> None:
    self.seed = seed

  def infer_relative_search_space(self, study, trial) -> dict:
    return {}

  def sample_relative(self, study, trial, search_space) -> dict:
    return {}

  def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
    key = [self.seed, trial.number, zlib.crc32(param_name.encode())]
    draw = int(np.random.default_rng(key).integers(2**31))
    return optuna.samplers.RandomSampler(seed=draw).sample_independent(
      study, trial, param_name, param_distribution
    )


class NumberedTPESampler(optuna.samplers.TPESampler):
  """TPE whose random draws for trial k come from (seed, k) alone, on whichever worker asks it.

  Optuna's seeded ``TPESampler(seed=s)`` starts every process's random state at ``s``: workers
  sharing a seed (each its own sampler, one study) drew the same start-up trials, so a search on
  W workers spent its first ``tpe_startup`` trials on ``tpe_startup / W`` distinct points. Here
  the start-up trials are those of :class:`NumberedRandomSampler` (trial k's parameters from
  (seed, k, name)), and once the model takes over, its candidate draws for trial k are seeded by
  (seed, k): two workers asking trials k and k + 1 draw differently, and a rerun asking trial k
  after the same finished trials proposes the same point.
  """

  def __init__(self, seed: int, **kwargs: Any) -> None:
    super().__init__(seed=seed, **kwargs)
    self.seed = seed
    self._random_sampler = NumberedRandomSampler(seed)  # the start-up trials (and fallbacks)

  def _reseed(self, trial: FrozenTrial) -> None:
    key = [self.seed, trial.number, zlib.crc32(b"tpe")]
    self._rng.rng.seed(int(np.random.default_rng(key).integers(2**31)))

  def sample_relative(self, study, trial, search_space) -> dict:
    self._reseed(trial)
    return super().sample_relative(study, trial, search_space)

  def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
    key = [self.seed, trial.number, zlib.crc32(param_name.encode())]
    self._rng.rng.seed(int(np.random.default_rng(key).integers(2**31)))
    return super().sample_independent(study, trial, param_name, param_distribution)


def make_pruner(config: ml_collections.ConfigDict) -> optuna.pruners.BasePruner:
  """``search.pruner``: none | median | successive_halving | hyperband, on epochs of val accuracy.

  Hyperband's resource is the epoch, from ``search.pruner_min_epochs`` to ``train.max_epochs``
  with reduction factor ``search.pruner_reduction``; a rung promotes none of its trials before
  ``search.pruner_bootstrap`` have reached it (so the first trials are not all trained to the
  end); the median rule waits for
  ``search.pruner_startup`` finished trials and ``search.pruner_min_epochs`` epochs.
  """
  s = config.search
  kind = str(s.pruner)
  if kind not in PRUNERS:
    raise SearchError(f"search.pruner must be one of {PRUNERS}, got {kind!r}")
  # The defaults live once, in configs/base.py's search_section.
  low, eta, boot = int(s.pruner_min_epochs), int(s.pruner_reduction), int(s.pruner_bootstrap)
  if kind == "median":
    return optuna.pruners.MedianPruner(n_startup_trials=int(s.pruner_startup), n_warmup_steps=low)
  if kind == "successive_halving":
    return optuna.pruners.SuccessiveHalvingPruner(
      min_resource=low, reduction_factor=eta, bootstrap_count=boot
    )
  if kind == "hyperband":
    return optuna.pruners.HyperbandPruner(
      min_resource=low,
      max_resource=int(config.train.max_epochs),
      reduction_factor=eta,
      bootstrap_count=boot,
    )
  return optuna.pruners.NopPruner()


class Stage(NamedTuple):
  """One step of the sequential search: the parameter varied and the points to try."""

  index: int
  param: str
  points: list[dict[str, Any]]


def _best(trials: list[FrozenTrial]) -> FrozenTrial | None:
  done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
  return max(done, key=lambda t: (t.value, -t.number)) if done else None


def sequential_stage(
  config: ml_collections.ConfigDict, space: dict[str, Param], trials: list[FrozenTrial]
) -> Stage | None:
  """The first sequential stage not yet complete (None: the plan is done).

  Stage k varies ``order[k]`` over its grid while every other parameter keeps the best value
  found by stages < k (the base config's values at the start). It is derived from the stored
  trials alone, so every worker computes the same plan.
  """
  order = []
  for name in config.search.order:
    if name not in space:
      raise SearchError(f"search.order names {name!r}, which is not in search.space")
    order += (
      [f"width{k}" for k in range(1, space["layers"].high + 1)] if name == "width" else [name]
    )
  current = base_params(config, space)
  for index, name in enumerate(order):
    mine = [t for t in trials if t.user_attrs.get("stage") == index]
    if index:
      best = _best([t for t in trials if (t.user_attrs.get("stage") or 0) < index])
      if best is not None:
        current = {**current, **best.params}
    if name.startswith("width") and int(name[5:]) > current["layers"]:
      continue  # no such layer in the best net so far
    p = space["width" if name.startswith("width") else name]
    points = [{**current, name: v} for v in grid(p, int(config.search.points))]
    done = {t.user_attrs.get("point") for t in mine if t.state == TrialState.COMPLETE}
    if len(done) < len(points):
      return Stage(index, name, points)
  return None
