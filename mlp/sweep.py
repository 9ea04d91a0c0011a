"""Expand a study config into runs, and group runs by the static shape they compile to.

A study config has a base (``model``, ``train``), a ``grid`` that mirrors the base's structure with
a tuple of values per swept field (``grid.train.batch_size = (1, 50)``), ``extra_runs`` (named
override dicts for runs outside the grid), and ``seeds`` (how many seeds per run).
"""

import copy
import hashlib
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from mlp import model, train

# Short names used in run names, e.g. bs1_h300-100_lr0.01_mom0.
SHORT = {
  "train.batch_size": "bs",
  "model.hidden": "h",
  "train.learning_rate": "lr",
  "train.momentum": "mom",
  "train.l2": "l2",
  "train.lr_decay": "decay",
  "train.dropout": "drop",
  "model.layers": "net",
}


class Run(NamedTuple):
  """One training run: a named configuration and a seed."""

  name: str
  seed: int
  config: ml_collections.ConfigDict  # the full config with this run's overrides applied

  @property
  def id(self) -> str:
    return f"{self.name}/seed{self.seed}"


def leaves(cfg: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """(dotted path, value) for every leaf of a nested config, in definition order."""
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping | ml_collections.ConfigDict):
      yield from leaves(value, path + ".")
    else:
      yield path, value


def fmt(value: Any) -> str:
  """Compact text for run names: (300, 100) -> 300-100, 0.001 -> 0.001, 0.0 -> 0."""
  if isinstance(value, list | tuple):
    return "-".join(fmt(v) for v in value)
  if isinstance(value, float):
    return f"{value:g}"
  return str(value)


def _name_part(value: Any) -> str:
  """fmt(value) made safe for a folder name: architecture strings hold spaces and slashes; a very
  long one is cut and tagged with a hash of the whole, so that names stay unique."""
  text = re.sub(r"[^A-Za-z0-9._+-]+", "-", fmt(value))
  if len(text) > 60:
    text = f"{text[:48]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
  return text


def override(cfg: ml_collections.ConfigDict, path: str, value: Any) -> None:
  """Set ``cfg.<path> = value``; an unknown path is an error naming it."""
  *parents, last = path.split(".")
  node = cfg
  for p in parents:
    if p not in node:
      raise KeyError(f"config has no field {path!r} (from the sweep grid or extra_runs)")
    node = node[p]
  if last not in node:
    raise KeyError(f"config has no field {path!r} (from the sweep grid or extra_runs)")
  node[last] = type(node[last])(value) if isinstance(node[last], tuple) else value


# The train fields of the update rule (mlp.optim) and their defaults: the studies' heavy ball.
UPDATE_RULE = {
  "optimizer": "sgd",
  "schedule": "epoch_decay",
  "warmup_epochs": 0.0,
  "label_smoothing": 0.0,
  "beta2": 0.999,
}

# Model and train fields added after runs were saved, with the value that a run saved without them
# was trained with (the data section has its own, mlp.data.with_added_fields).
ADDED_FIELDS = {
  "model": {"layers": "", "init_from": ""},
  "train": {
    "augment_flip": False,
    "augment_shift": 0,
    "refit": False,
    "freeze": "",
    "diverge": 100.0,
    **UPDATE_RULE,
  },
  "data": {"classes": []},
}


def with_added_fields(saved: Mapping, current: Mapping) -> dict:
  """A saved run config with the fields of :data:`ADDED_FIELDS` that ``current`` has filled in."""
  out = dict(saved)
  for section, fields in ADDED_FIELDS.items():
    if isinstance(out.get(section), Mapping) and isinstance(current.get(section), Mapping):
      implied = {k: v for k, v in fields.items() if k in current[section]}
      out[section] = {**implied, **out[section]}
  return out


def check_overrides(config: ml_collections.ConfigDict, paths: Iterable[str]) -> None:
  """ValueError when a command-line override sets a field that the grid sweeps: every run takes
  the grid's value, so the override would be silently dropped."""
  grid = dict(leaves(config.get("grid", {})))
  for path in paths:
    if path in grid:
      values = ", ".join(fmt(v) if isinstance(v, list | tuple) else repr(v) for v in grid[path])
      raise ValueError(
        f"--config.{path} is swept by the grid (grid.{path} = ({values})), so no run would use "
        f"it; to train every run with one value, override the grid: "
        f"--config.grid.{path}='(VALUE,)'"
      )


def _base(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  base = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  for key in ("grid", "extra_runs"):
    if key in base:
      del base[key]
  return base


def expand(config: ml_collections.ConfigDict) -> list[Run]:
  """All runs of a study: the grid's cartesian product, then the extra runs, times the seeds."""
  base = _base(config)
  named: list[tuple[str, ml_collections.ConfigDict]] = []
  order = list(SHORT)  # known axes first, in the study's column order; others after
  axes = sorted(
    leaves(config.get("grid", {})), key=lambda a: order.index(a[0]) if a[0] in order else len(order)
  )
  for values in itertools.product(*(v for _, v in axes)):
    cfg = copy.deepcopy(base)
    for (path, _), value in zip(axes, values, strict=True):
      override(cfg, path, value)
    name = "_".join(
      f"{SHORT.get(p, p.split('.')[-1])}{_name_part(v)}"
      for (p, _), v in zip(axes, values, strict=True)
    )
    named.append((name or config.get("name", "run"), cfg))
  for name, overrides in config.get("extra_runs", {}).items():
    cfg = copy.deepcopy(base)
    for path, value in leaves(overrides):
      override(cfg, path, value)
    named.append((name, cfg))
  seeds = range(int(config.seed), int(config.seed) + int(config.seeds))
  return [Run(name, s, cfg) for name, cfg in named for s in seeds]


def architecture_of(cfg: Mapping, input_shape: Sequence[int]) -> str:
  """A run's architecture string: ``model.layers``, or the MLP of ``model.hidden`` and
  ``train.dropout`` (one rate per Dense-layer input) when ``model.layers`` is absent or empty."""
  arch = cfg["model"].get("layers") or ""
  if arch:
    return str(arch)
  if "hidden" not in cfg["model"] or "dropout" not in cfg["train"]:
    raise ValueError(
      "config has no network: set model.layers to an architecture string, or give model.hidden "
      "and train.dropout"
    )
  rates = tuple(float(r) for r in cfg["train"]["dropout"])
  try:
    return model.mlp_architecture(input_shape, [int(h) for h in cfg["model"]["hidden"]], rates)
  except ValueError as e:
    raise ValueError(f"config fields model.hidden and train.dropout: {e}") from None


def network_of(
  cfg: Mapping, input_shape: Sequence[int], num_classes: int
) -> tuple[model.Net, model.LayerHyper]:
  """(static network, per-layer hyperparameters) of a run on data of this shape."""
  dropout = str(cfg["model"].get("dropout", "regular"))
  return model.parse(architecture_of(cfg, input_shape), input_shape, num_classes, dropout=dropout)


def update_rule(t: Mapping) -> dict[str, Any]:
  """A run's ``train`` update-rule fields, with the defaults of :data:`UPDATE_RULE` filled in."""
  return {k: t.get(k, default) for k, default in UPDATE_RULE.items()}


def spec_of(
  cfg: ml_collections.ConfigDict, input_shape: Sequence[int], num_classes: int
) -> train.Spec:
  """The static shape of a run."""
  t, rule = cfg.train, update_rule(cfg.train)
  net = network_of(cfg, input_shape, num_classes)[0]
  return train.Spec(
    net=net,
    batch_size=int(t.batch_size),
    softmax_grad=cfg.model.softmax_grad,
    flip=bool(t.get("augment_flip", False)),
    shift=int(t.get("augment_shift", 0)),
    frozen=model.parse_freeze(t.get("freeze", ""), net),
    optimizer=str(rule["optimizer"]),
    schedule=str(rule["schedule"]),
    compute_dtype=str(t.get("compute_dtype", "float32")),
  )


def hyper_of(
  cfg: ml_collections.ConfigDict, input_shape: Sequence[int], num_classes: int
) -> train.Hyper:
  """The dynamic hyperparameters of a run (arrays: new values never recompile)."""
  t = cfg.train
  rule = update_rule(t)
  return train.make_hyper(
    learning_rate=float(t.learning_rate),
    momentum=float(t.momentum),
    l2=float(t.l2),
    lr_decay=float(t.lr_decay),
    layers=network_of(cfg, input_shape, num_classes)[1],
    smoothing=float(rule["label_smoothing"]),
    warmup=float(rule["warmup_epochs"]),
    horizon=float(t.max_epochs),  # the cosine schedule anneals over the epoch budget
    beta2=float(rule["beta2"]),
  )


def stopping_of(cfg: ml_collections.ConfigDict) -> train.Stopping:
  t = cfg.train
  return train.Stopping(
    kind=t.early_stopping,
    gap=float(t.gap),
    min_epoch=int(t.gap_min_epoch),
    patience=int(t.patience),
    monitor=str(t.get("monitor", "val_loss")),
    diverge=float(t.get("diverge", 100.0)),
  ).validate()


class Group(NamedTuple):
  """Runs that share one compiled program and one fit loop."""

  spec: train.Spec
  max_epochs: int
  stopping: train.Stopping
  runs: list[Run]
  init_from: str = ""  # a saved model every run of the group starts from (model.init_from)

  def hyper(self) -> train.Hyper:
    net = self.spec.net
    return train.stack([hyper_of(r.config, net.input_shape, net.num_classes) for r in self.runs])

  def keys(self) -> jax.Array:
    return jax.numpy.stack([jax.random.key(r.seed) for r in self.runs])


def group_by_shape(runs: list[Run], input_shape: Sequence[int], num_classes: int) -> list[Group]:
  """Group runs by (static shape, epoch budget, stopping rule), keeping first-seen order."""
  groups: dict[tuple, Group] = {}
  for run in runs:
    if int(run.config.train.max_epochs) < 1:
      raise ValueError(f"train.max_epochs must be >= 1, got {run.config.train.max_epochs}")
    spec = spec_of(run.config, input_shape, num_classes)
    hyper_of(run.config, input_shape, num_classes)  # validate values before any training starts
    init_from = str(run.config.model.get("init_from", "") or "")
    key = (spec, int(run.config.train.max_epochs), stopping_of(run.config), init_from)
    groups.setdefault(key, Group(*key[:3], runs=[], init_from=init_from)).runs.append(run)
  return list(groups.values())


def hparams_of(run: Run) -> dict[str, Any]:
  """The hyperparameters shown in TensorBoard's HParams dashboard and the results table."""
  cfg = run.config
  arch = cfg.model.get("layers")  # an architecture string holds widths and dropout rates
  hp: dict[str, Any] = {"batch_size": int(cfg.train.batch_size)}
  hp.update({"layers": str(arch)} if arch else {"hidden": tuple(cfg.model.hidden)})
  hp["learning_rate"] = float(cfg.train.learning_rate)
  hp["momentum"] = float(cfg.train.momentum)
  hp["l2"] = float(cfg.train.l2)
  hp["lr_decay"] = float(cfg.train.lr_decay)
  hp.update({k: v for k, v in update_rule(cfg.train).items() if v != UPDATE_RULE[k]})  # if set
  if not arch:
    hp["dropout"] = tuple(float(r) for r in cfg.train.dropout)
  hp["seed"] = run.seed
  return hp


def lookup(cfg: Mapping, path: str) -> Any:
  """Value at a dotted path; integer parts index into tuples (``model.hidden.1``)."""
  node: Any = cfg
  for part in path.split("."):
    node = node[int(part)] if part.isdigit() else node[part]
  return np.asarray(node).tolist() if isinstance(node, np.ndarray) else node
