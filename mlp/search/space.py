"""The search space: per hyperparameter a range and a scale, and how a trial's values become a
config (``apply``)."""

import copy
from typing import Any, NamedTuple

import ml_collections
import numpy as np
import optuna

from mlp.search import storage as storage_lib

SCALES = ("log", "linear", "int", "categorical")


class SearchError(ValueError):
  """The search config, the storage or the stored study are inconsistent."""


# ------------------------------------------------------------------------------ search space


class Param(NamedTuple):
  """One hyperparameter's range and scale."""

  name: str
  scale: str
  low: float = 0.0
  high: float = 0.0
  step: float | None = None
  choices: tuple = ()


def space_of(config: ml_collections.ConfigDict) -> dict[str, Param]:
  """The validated ``search.space`` (``layers`` and ``width`` are required)."""
  if config.model.get("layers"):
    raise SearchError(
      "the search samples MLP widths (model.hidden) and would ignore model.layers; "
      "leave model.layers empty in a search config"
    )
  space = {}
  for name, spec in config.search.space.items():
    spec = dict(spec)
    scale = spec.get("scale")
    if scale not in SCALES:
      raise SearchError(f"search.space.{name}.scale must be one of {SCALES}, got {scale!r}")
    if scale == "categorical":
      choices = tuple(spec.get("choices") or ())
      if not choices:
        raise SearchError(f"search.space.{name} is categorical but has no choices")
      space[name] = Param(name, scale, choices=choices)
      continue
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    if low is None or high is None or not low <= high:
      raise SearchError(f"search.space.{name} needs low <= high, got {low}, {high}")
    if scale == "log" and low <= 0:
      raise SearchError(f"search.space.{name} is log-scaled: low must be > 0, got {low}")
    if scale == "int":
      step = int(step or 1)
      if (int(high) - int(low)) % step:
        raise SearchError(f"search.space.{name}: high - low must be a multiple of step {step}")
      low, high = int(low), int(high)
    space[name] = Param(name, scale, low, high, step)
  for name in ("layers", "width"):
    if name not in space or space[name].scale != "int":
      raise SearchError(f"search.space.{name} is required and must be scale='int'")
  unknown = set(space) - {"layers", "width", "dropout"} - set(config.train.keys())
  if unknown:
    raise SearchError(f"search.space has no train.* field for {sorted(unknown)}")
  return space


def param_names(space: dict[str, Param]) -> list[str]:
  """Optuna parameter names: ``width`` becomes width1 .. width<max layers>."""
  names = []
  for name in space:
    if name == "width":
      names += [f"width{k}" for k in range(1, int(space["layers"].high) + 1)]
    else:
      names.append(name)
  return names


def _distribution(p: Param) -> optuna.distributions.BaseDistribution:
  if p.scale == "categorical":
    return optuna.distributions.CategoricalDistribution(p.choices)
  if p.scale == "int":
    return optuna.distributions.IntDistribution(p.low, p.high, step=p.step)
  return optuna.distributions.FloatDistribution(p.low, p.high, log=p.scale == "log")


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
  """Sample (or read back enqueued) values; widths exist only for the layers in use."""
  params: dict[str, Any] = {}
  for name, p in space.items():
    if name == "width":
      continue
    params[name] = storage_lib.suggest(trial, name, _distribution(p))
  for k in range(1, int(params["layers"]) + 1):
    params[f"width{k}"] = storage_lib.suggest(trial, f"width{k}", _distribution(space["width"]))
  return params


def apply(config: ml_collections.ConfigDict, params: dict[str, Any]) -> ml_collections.ConfigDict:
  """A trial's training config: the base sections with the trial's values (no search section)."""
  cfg = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  del cfg["search"]
  layers = int(params["layers"])
  cfg.model.hidden = tuple(int(params[f"width{k}"]) for k in range(1, layers + 1))
  rate = float(params["dropout"]) if "dropout" in params else _hidden_rate(config)
  cfg.train.dropout = (float(config.search.input_dropout),) + (rate,) * layers
  for name, value in params.items():
    if name in ("layers", "dropout") or name.startswith("width"):
      continue
    cfg.train[name] = type(cfg.train[name])(value) if cfg.train[name] is not None else value
  return cfg


def base_params(config: ml_collections.ConfigDict, space: dict[str, Param]) -> dict[str, Any]:
  """The base config's values as search parameters (the sequential search's starting point)."""
  hidden = tuple(config.model.hidden)
  values: dict[str, Any] = {"layers": len(hidden)}
  for k in range(1, int(space["layers"].high) + 1):
    values[f"width{k}"] = hidden[min(k, len(hidden)) - 1]
  values["dropout"] = _hidden_rate(config)
  for name in space:
    if name not in values and name != "width":
      values[name] = config.train[name]
  return {n: _snap(space["width" if n.startswith("width") else n], v) for n, v in values.items()}


def _hidden_rate(config: ml_collections.ConfigDict) -> float:
  """The config's dropout rate of the hidden layers (its last train.dropout rate): a trial's
  rate when the space does not search it."""
  return float(tuple(config.train.dropout)[-1])


def _snap(p: Param, value: Any) -> Any:
  """``value`` clipped into the range of ``p`` and onto its step grid."""
  if p.scale == "categorical":
    return value if value in p.choices else p.choices[0]
  value = min(max(value, p.low), p.high)
  if p.scale == "int":
    return int(p.low + round((value - p.low) / p.step) * p.step)
  return float(value)


def grid(p: Param, points: int) -> list[Any]:
  """Values of one hyperparameter tried by the sequential search."""
  if p.scale == "categorical":
    return list(p.choices)
  if p.scale == "int":
    values = list(range(int(p.low), int(p.high) + 1, int(p.step)))
    if len(values) <= points:
      return values
    return sorted({_snap(p, v) for v in np.linspace(p.low, p.high, points)})
  space = np.geomspace if p.scale == "log" else np.linspace
  return [float(v) for v in space(p.low, p.high, points)]


def hparams(params: dict[str, Any]) -> dict[str, Any]:
  """Search parameters as shown in tables and TensorBoard (widths joined into ``hidden``)."""
  out = {"hidden": "-".join(str(params[f"width{k}"]) for k in range(1, params["layers"] + 1))}
  out.update({k: v for k, v in params.items() if not k.startswith("width")})
  return out
