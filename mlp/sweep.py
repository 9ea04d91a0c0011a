"""Kept for callers written before mlp.plan (benchmarks/cnn_speed.py): a config's network, static
program and hyperparameters on data of a given shape, through the plan. Use mlp.plan."""

from collections.abc import Sequence

import ml_collections

from mlp import model, plan
from mlp.plan import check_overrides, fmt, lookup  # noqa: F401 (also sweep.X)


def _plan(cfg: ml_collections.ConfigDict, input_shape: Sequence[int], num_classes: int):
  return plan.build(plan.study_plan(cfg).runs[:1], input_shape, num_classes)[0]


def network_of(
  cfg: ml_collections.ConfigDict, input_shape: Sequence[int], num_classes: int
) -> tuple[model.Net, model.LayerHyper]:
  """(static network, per-layer hyperparameters) of a config's first run."""
  p = _plan(cfg, input_shape, num_classes)
  return p.spec.net, p.hyper.layers


def spec_of(cfg: ml_collections.ConfigDict, input_shape: Sequence[int], num_classes: int):
  """The static program of a config's first run."""
  return _plan(cfg, input_shape, num_classes).spec


def hyper_of(cfg: ml_collections.ConfigDict, input_shape: Sequence[int], num_classes: int):
  """The traced hyperparameters of a config's first run."""
  return _plan(cfg, input_shape, num_classes).hyper


__all__ = ["check_overrides", "fmt", "hyper_of", "lookup", "network_of", "spec_of"]
