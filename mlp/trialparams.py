"""A study's runs as Optuna sees them: each run's hyperparameters (mlp.plan.hparams, flattened as
TensorBoard's HParams shows them) as the params of its trial, with distributions over the study's
runs, so that optuna-dashboard's parameter panels (history, slice, parallel coordinates,
importance) show what each run trained with.

Numbers become an int or float distribution from the study's lowest to its highest value (log
scale where they are positive and span a factor of 10 or more: learning rates, batch sizes), other
values (hidden widths "300-100", architecture strings, optimizer names, flags) a categorical one.
Every run of a study gets the same distributions, which Optuna's importance evaluators need.
"""

import math
from collections.abc import Sequence
from typing import Any

from optuna.distributions import (
  BaseDistribution,
  CategoricalDistribution,
  FloatDistribution,
  IntDistribution,
)

from mlp import plan, tensorboard
from mlp.plan import Plan, Run

LOG_SPAN = 10.0  # a positive range at least this wide is drawn on a log axis


def values(run: Run | Plan) -> dict[str, Any]:
  """A run's hyperparameters, flattened and normalised as in TensorBoard (``dropout/0``, ...)."""
  run = run.run if isinstance(run, Plan) else run
  flat = tensorboard.flat_hparams(plan.hparams(run))
  return {k: tensorboard.hparam_value(v) for k, v in flat.items()}


def space(runs: Sequence[Run | Plan]) -> dict[str, BaseDistribution]:
  """Each hyperparameter's distribution over ``runs`` (a study's, all of them)."""
  seen: dict[str, list] = {}
  for run in runs:
    for name, value in values(run).items():
      seen.setdefault(name, []).append(value)
  return {name: _distribution(vs) for name, vs in seen.items()}


def _distribution(vs: list) -> BaseDistribution:
  numbers = [v for v in vs if isinstance(v, int | float) and not isinstance(v, bool)]
  if len(numbers) < len(vs) or not all(math.isfinite(v) for v in numbers):
    return CategoricalDistribution(sorted(set(vs), key=lambda v: (str(type(v)), v)))
  low, high = min(numbers), max(numbers)
  log = low > 0 and high / low >= LOG_SPAN
  if all(isinstance(v, int) for v in numbers):
    return IntDistribution(int(low), int(high), log=log)
  return FloatDistribution(float(low), float(high), log=log)


def trial_params(
  run: Run | Plan, distributions: dict[str, BaseDistribution]
) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
  """(params, distributions) of one run's trial: its values, where ``distributions`` has them."""
  params = {k: v for k, v in values(run).items() if k in distributions}
  params = {
    k: float(v) if isinstance(distributions[k], FloatDistribution) else v for k, v in params.items()
  }
  return params, {k: distributions[k] for k in params}
