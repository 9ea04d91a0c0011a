"""Where a run is planned: a study's config expanded into runs once, and each run resolved into a
typed, frozen :class:`Plan` before anything trains.

    study = plan.study_plan(config)                          # runs, report and execution settings
    plans = plan.build(study.runs, input_shape, num_classes)  # each run's network parsed once
    for group in plan.groups(plans): ...                      # runs that share a compiled program

A study config has a base (``model``, ``train``, ...), a ``grid`` that mirrors the base's structure
with a tuple of values per swept field (``grid.train.batch_size = (1, 50)``), ``extra_runs``
(named override dicts for runs outside the grid) and ``seeds`` (seeds per run). A run's settings
are the config with its overrides, every field it lacks at its configs/base.py default
(mlp.defaults). Its network is ``model.layers`` when that is set, else the MLP of ``model.hidden``
and ``train.dropout``; a run given both ways is refused (:func:`study_plan`).

A :class:`Plan` is what the run trains with: the static program (:class:`mlp.spec.Spec`, its
network built), the traced hyperparameters (:class:`mlp.spec.Hyper`) and the stopping rules
(mlp.stopping). It is saved in the run folder (``plan.json``), told to the study's trials,
written to TensorBoard's HParams and shown in the tables; nothing after planning reads a config.
"""

import copy
import dataclasses
import hashlib
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from mlp import data as data_lib
from mlp import defaults, ensemble, model, spec, stopping
from mlp.defaults import DEFAULTS
from mlp.fileio import to_jsonable

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
# Fields of the study as a whole (how runs are executed, combined and compared), not of a run.
STUDY_FIELDS = ("grid", "extra_runs", "workers", "vectorize", "ensemble")
# Spec and Hyper fields whose config field has another name; the others take train.<name> or
# model.<name>, so a new field of either flows from its config field without code here.
RENAMED = {
  "flip": "augment_flip",
  "shift": "augment_shift",
  "smoothing": "label_smoothing",
  "warmup": "warmup_epochs",
  "horizon": "max_epochs",  # the cosine schedule anneals over the epoch budget
}
# Settings that change how a run is executed, not what it computes: not part of its identity.
NOT_IDENTITY = (("train", "checkpoint_minutes"),)
# Train fields shown in HParams (with the fixed ones of :func:`hparams`) when not at their default.
SHOWN_IF_SET = ("optimizer", "schedule", "warmup_epochs", "label_smoothing", "beta2")
SHOWN_IF_SET += ("compute_dtype", "augment_flip", "augment_shift", "freeze")
EARLY_STOPPING = ("gap", "patience", "none")


class Run(NamedTuple):
  """One run of a study: a name, a seed and its settings (the config with its overrides, every
  default filled; frozen)."""

  name: str
  seed: int
  settings: ml_collections.FrozenConfigDict

  @property
  def id(self) -> str:
    return f"{self.name}/seed{self.seed}"


class Report(NamedTuple):
  """How a study's results are tabled and drawn (the config's ``report`` section, checked)."""

  title: str
  columns: tuple[tuple[str, str], ...]  # (header, settings path), e.g. ("N2", "model.hidden.1")
  topk: int
  test_split: str
  figure_groups: tuple[str, ...]  # settings paths that group the loss-curve figures
  compare_with_best: str  # an extra run drawn next to the best run
  baselines: tuple[str, ...]  # scikit-learn learners the best run is compared with


@dataclasses.dataclass(frozen=True)
class StudyPlan:
  """A study: its runs, the data set they share, and how they are executed and reported."""

  name: str
  runs: tuple[Run, ...]
  data: ml_collections.FrozenConfigDict  # the data section every run shares
  report: Report
  extra_runs: tuple[str, ...]  # names of the runs outside the grid
  seed: int  # the first seed
  seeds: int  # seeds per configuration
  ensemble: int  # members per seed ensemble (1: none; mlp.ensemble)
  workers: int  # CPU worker processes (0: one per core; mlp.workers)
  vectorize: bool | None  # vmapped populations (None: on accelerators)


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
  """Everything one run trains with, resolved and checked."""

  run: Run
  spec: spec.Spec  # the static program: network, batch size, update rule, augmentation, ...
  hyper: spec.Hyper  # the traced values: learning rate, momentum, ..., per-layer rates
  stopping: stopping.Chain  # divergence, early stopping, pruning and the epoch budget
  init_from: str  # a saved model every run of its group starts from ("" for none)
  refit: bool  # trained again on train + val for the epochs validation chose
  eval_train: bool  # an evaluation report of the training split too
  checkpoint_minutes: float  # at most this often a checkpoint while it trains (mlp.resume)

  @property
  def name(self) -> str:
    return self.run.name

  @property
  def seed(self) -> int:
    return self.run.seed

  @property
  def id(self) -> str:
    return self.run.id

  @property
  def settings(self) -> ml_collections.FrozenConfigDict:
    return self.run.settings

  @property
  def max_epochs(self) -> int:
    return self.stopping.max_epochs

  def describe(self) -> dict[str, Any]:
    """The plan as JSON (plan.json, the study's trials, result.json)."""
    net, layer_hyper = self.spec.net, jax.tree.map(lambda v: float(str(v)), self.hyper.layers)
    fields = {f.name: getattr(self.spec, f.name) for f in dataclasses.fields(self.spec)}
    del fields["net"]
    # str() first: the float32 value's shortest repr (0.001), not its float64 expansion
    values = {k: float(str(v)) for k, v in self.hyper._asdict().items() if k != "layers"}
    return to_jsonable(
      {
        "run": self.id,
        "network": net.describe(layer_hyper),
        "input_shape": net.input_shape,
        "num_classes": net.num_classes,
        "spec": fields,
        "hyper": values,
        "stopping": self.stopping.describe(),
        "init_from": self.init_from,
        "refit": self.refit,
        "eval_train": self.eval_train,
        "hparams": hparams(self.run),
      }
    )


class Group(NamedTuple):
  """Runs that share one compiled program and one fit loop."""

  spec: spec.Spec
  stopping: stopping.Chain
  init_from: str
  plans: tuple[Plan, ...]

  def population(self, init=None) -> spec.Population:
    """The group's runs as one :class:`mlp.spec.Population` (hyperparameters stacked)."""
    keys = jax.numpy.stack([jax.random.key(p.seed) for p in self.plans])
    return spec.Population(
      self.spec, spec.stack([p.hyper for p in self.plans]), keys, self.stopping, init
    )


# ------------------------------------------------------------------------------- the study


def study_plan(config: ml_collections.ConfigDict) -> StudyPlan:
  """A study config's runs (grid x extra runs x seeds) and settings, every default filled and
  every field the runs share checked; a ValueError names the field and what to do."""
  filled = defaults.fill(config)
  _check_network_given_once(config, filled)
  runs = tuple(_expand(filled))
  data = ml_collections.FrozenConfigDict(filled["data"])
  for run in runs:
    changed = [k for k in data if run.settings.data.get(k) != data[k]]
    if changed:
      raise ValueError(
        f"run {run.id} changes data.{changed[0]}: a study's runs share one data set; sweep it "
        "in a study of its own"
      )
  r = filled["report"]
  columns = []
  for column in r["columns"]:
    header, sep, path = str(column).partition("=")
    if not sep or not header or not path:
      raise ValueError(f"report.columns entry {column!r} must read Header=field.path")
    columns.append((header, path))
  report = Report(
    title=str(r["title"]),
    columns=tuple(columns),
    topk=int(r["topk"]),
    test_split=str(r["test_split"]),
    figure_groups=tuple(r["figure_groups"]),
    compare_with_best=str(r["compare_with_best"]),
    baselines=tuple(r["baselines"]),
  )
  seeds = int(filled["seeds"])
  if seeds < 1:
    raise ValueError(
      f"config field seeds must be >= 1 (seeds per run: seed .. seed + seeds - 1), got {seeds}"
    )
  workers = int(filled["workers"])
  if workers < 0:
    raise ValueError(f"workers must be >= 0 (0 = one per CPU core), got {workers}")
  return StudyPlan(
    name=str(filled["name"]),
    runs=runs,
    data=data,
    report=report,
    extra_runs=tuple(filled["extra_runs"]),
    seed=int(filled["seed"]),
    seeds=int(filled["seeds"]),
    ensemble=ensemble.size_of(filled),
    workers=workers,
    vectorize=filled["vectorize"],
  )


def _check_network_given_once(config: ml_collections.ConfigDict, filled: dict) -> None:
  """ValueError when a config sets model.layers and keeps model.hidden or train.dropout: the
  layers would train and the table would show the other two (configs/base.py's docstring)."""
  if not filled["model"]["layers"]:
    return
  kept = [f"{s}.{f}" for s, f in defaults.MLP_FIELDS if f in config.get(s, {})]
  if kept:
    values = ", ".join(f"{k} = {fmt(lookup(filled, k))}" for k in kept)
    raise ValueError(
      f"model.layers ({filled['model']['layers']!r}) gives the network, and this config also "
      f"sets {values}, which would not train but would be reported; a network is given one way: "
      "use a config that deletes model.hidden and train.dropout (as configs/fer2013_cnn.py "
      "does), or leave model.layers empty"
    )


def _expand(filled: dict) -> Iterator[Run]:
  """The runs of a filled config: the grid's cartesian product, then the extra runs, x seeds."""
  base = {k: v for k, v in filled.items() if k not in STUDY_FIELDS}
  base["report"] = {k: v for k, v in base["report"].items() if k != "baselines"}
  named: list[tuple[str, dict]] = []
  order = list(SHORT)  # known axes first, in the study's column order; others after
  axes = sorted(
    leaves(filled["grid"]), key=lambda a: order.index(a[0]) if a[0] in order else len(order)
  )
  for values in itertools.product(*(v for _, v in axes)):
    sets = {path: value for (path, _), value in zip(axes, values, strict=True)}
    name = "_".join(f"{SHORT.get(p, p.split('.')[-1])}{_name_part(v)}" for p, v in sets.items())
    named.append((name or str(filled["name"]), _with(base, sets)))
  for name, overrides in filled["extra_runs"].items():
    named.append((name, _with(base, dict(leaves(overrides)))))
  seeds = range(int(filled["seed"]), int(filled["seed"]) + int(filled["seeds"]))
  for name, settings in named:
    frozen = ml_collections.FrozenConfigDict(settings)
    yield from (Run(name, s, frozen) for s in seeds)


def _with(base: dict, sets: dict[str, Any]) -> dict:
  """A run's settings: ``base`` with ``sets`` (path -> value); a run whose overrides give it an
  architecture string has no model.hidden or train.dropout (and may not set them)."""
  cfg = copy.deepcopy(base)
  for path, value in sets.items():
    override(cfg, path, value)
  if cfg["model"]["layers"] and not base["model"]["layers"]:
    mlp = [p for p in sets if p.startswith(("model.hidden", "train.dropout"))]
    if mlp:
      raise ValueError(
        f"a run sets model.layers and {mlp[0]}: a network is given one way (model.layers, or "
        "model.hidden with train.dropout)"
      )
    for section, field in defaults.MLP_FIELDS:
      cfg[section].pop(field, None)
  return cfg


def leaves(cfg: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """(dotted path, value) for every leaf of a nested config, in definition order."""
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping | ml_collections.ConfigDict):
      yield from leaves(value, path + ".")
    else:
      yield path, value


def override(cfg: dict, path: str, value: Any) -> None:
  """Set ``cfg[...path...] = value``; an unknown path is an error naming it."""
  *parents, last = path.split(".")
  node = cfg
  for p in [*parents, last]:
    if not isinstance(node, Mapping | ml_collections.ConfigDict) or p not in node:
      raise KeyError(f"config has no field {path!r} (from the sweep grid or extra_runs)")
    if p != last:
      node = node[p]
  node[last] = type(node[last])(value) if isinstance(node[last], tuple) else value


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


# ------------------------------------------------------------------------------ the plans


def build(runs: Iterable[Run], input_shape: Sequence[int], num_classes: int) -> tuple[Plan, ...]:
  """The plan of each run on data of this shape: its network parsed once, every value checked
  (a ValueError names the run and the field)."""
  shape = tuple(int(d) for d in input_shape)
  return tuple(_plan(run, shape, int(num_classes)) for run in runs)


def _plan(run: Run, input_shape: tuple[int, ...], num_classes: int) -> Plan:
  s = run.settings
  try:
    net, layer_hyper = model.parse(
      _architecture(s, input_shape), input_shape, num_classes, dropout=str(s.model.dropout)
    )
    rules = _stopping(s.train, num_classes)  # first: max_epochs is also the cosine horizon
    if s.train.early_stopping == "gap" and s.train.train_metrics != "full":
      raise ValueError(
        "train.early_stopping=gap compares validation with the training loss at the epoch's end"
        ": it needs train.train_metrics=full"
      )
    return Plan(
      run=run,
      spec=_spec(s, net),
      hyper=_hyper(s, layer_hyper),
      stopping=rules,
      init_from=str(s.model.init_from),
      refit=bool(s.train.refit),
      eval_train=bool(s.report.eval_train),
      checkpoint_minutes=_checkpoint_minutes(s.train),
    )
  except ValueError as e:
    raise ValueError(f"run {run.id}: {e}") from None


def _checkpoint_minutes(t: Mapping) -> float:
  minutes = float(t["checkpoint_minutes"])
  if not minutes >= 0:
    raise ValueError(f"train.checkpoint_minutes must be >= 0 (0: every epoch), got {minutes}")
  return minutes


def _architecture(s: Mapping, input_shape: Sequence[int]) -> str:
  """A run's architecture string: ``model.layers``, or the MLP of ``model.hidden`` and
  ``train.dropout`` (one rate per Dense-layer input)."""
  if s["model"]["layers"]:
    return str(s["model"]["layers"])
  rates = tuple(float(r) for r in s["train"]["dropout"])
  try:
    return model.mlp_architecture(input_shape, [int(h) for h in s["model"]["hidden"]], rates)
  except ValueError as e:
    raise ValueError(f"config fields model.hidden and train.dropout: {e}") from None


def _field(s: Mapping, name: str) -> Any:
  """The config value of a Spec or Hyper field (train.<name>, else model.<name>), or KeyError."""
  key = RENAMED.get(name, name)
  for section in ("train", "model"):
    if key in s[section]:
      return s[section][key]
  raise KeyError(name)


def _spec(s: Mapping, net: model.Net) -> spec.Spec:
  """The static program of a run: each Spec field from its config field (where it has one)."""
  values = {}
  for f in dataclasses.fields(spec.Spec):
    if f.name not in ("net", "frozen"):
      try:
        value = _field(s, f.name)
      except KeyError:
        continue  # not a config field (eval_batch, unroll): the Spec's own value
      values[f.name] = f.type(value) if f.type in (int, float, bool, str) else value
  frozen = model.parse_freeze(str(s["train"]["freeze"]), net)
  return spec.Spec(net=net, frozen=frozen, **values)


def _hyper(s: Mapping, layer_hyper: model.LayerHyper) -> spec.Hyper:
  """The traced hyperparameters of a run: each Hyper field from its config field."""
  names = [n for n in spec.Hyper._fields if n != "layers"]
  return spec.make_hyper(layers=layer_hyper, **{n: float(_field(s, n)) for n in names})


def _stopping(t: Mapping, num_classes: int) -> stopping.Chain:
  """A run's stopping rules in the documented order (mlp.stopping)."""
  kind = str(t["early_stopping"])
  if kind not in EARLY_STOPPING:
    raise ValueError(
      f"train.early_stopping must be one of {', '.join(EARLY_STOPPING)}, got {kind!r}"
    )
  if t["monitor"] not in stopping.MONITORS:
    raise ValueError(f"train.monitor must be val_loss or val_acc, got {t['monitor']!r}")
  if not float(t["diverge"]) > 0:
    raise ValueError(f"train.diverge must be > 0, got {t['diverge']}")
  rules: list[stopping.Rule] = [stopping.Diverged(float(t["diverge"]) * math.log(num_classes))]
  if kind == "gap":
    rules.append(stopping.Gap(float(t["gap"]), int(t["gap_min_epoch"])))
  elif kind == "patience":
    rules.append(stopping.Patience(int(t["patience"]), str(t["monitor"])))
  return stopping.chain(*rules, stopping.Pruned(), stopping.MaxEpochs(int(t["max_epochs"])))


def step_memory(p: Plan, rows: int) -> int:
  """A lower bound, in bytes, of what one training step of ``p`` holds: its batch (padded to
  ``spec.batch_size`` rows when the training split has fewer) gathered and augmented, and every
  layer's output kept for the backward pass, its gradient and a temporary, in float32."""
  net, bs = p.spec.net, p.spec.batch_size
  del rows  # a batch has batch_size rows whatever the split's size: the padding is real memory
  per_row = 2 * net.num_inputs + 3 * sum(math.prod(s) for s in net.shapes()[1:])
  return 4 * bs * per_row


def human_bytes(n: float) -> str:
  for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
    if n < 1000 or unit == "PB":
      return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
    n /= 1000
  raise AssertionError("unreachable")


def check_memory(plans: Iterable[Plan], rows: int, available: int) -> None:
  """ValueError naming the first run whose training step cannot fit in ``available`` bytes
  (:func:`step_memory`): one line before training, instead of an out-of-memory error in it."""
  for p in plans:
    need = step_memory(p, rows)
    if need > available:
      bs = p.spec.batch_size
      fits = f"; the {rows} training rows fit in one batch of {rows}" if bs > rows else ""
      raise ValueError(
        f"run {p.id}: batch size {bs} needs about {human_bytes(need)} of memory for one training "
        f"step, more than the {human_bytes(available)} here: use a smaller batch size (config "
        f"field train.batch_size){fits}"
      )


def batch_notes(plans: Iterable[Plan], rows: int) -> list[str]:
  """A line per batch size larger than the ``rows`` training rows: such a run trains on one
  batch per epoch, padded (the padding rows weigh 0 in the loss; batch norm sees repeats)."""
  big: dict[int, list[str]] = {}
  for p in plans:
    if p.spec.batch_size > rows:
      big.setdefault(p.spec.batch_size, []).append(p.id)
  return [
    f"batch size {bs} is larger than the {rows} training rows: each epoch is one batch, padded "
    f"to {bs} rows ({len(ids)} run{'s' * (len(ids) != 1)}: {', '.join(ids[:3])}"
    f"{', ...' if len(ids) > 3 else ''})"
    for bs, ids in big.items()
  ]


def groups(plans: Iterable[Plan]) -> list[Group]:
  """Plans grouped by (static program, stopping rules, initial model), first-seen order."""
  out: dict[tuple, list[Plan]] = {}
  for p in plans:
    out.setdefault((p.spec, p.stopping, p.init_from), []).append(p)
  return [Group(*key, plans=tuple(ps)) for key, ps in out.items()]


# ------------------------------------------------------------- what the run folder and tables show


def hparams(run: Run) -> dict[str, Any]:
  """The hyperparameters shown in TensorBoard's HParams dashboard and the study's trials."""
  s = run.settings
  t = s.train
  hp: dict[str, Any] = {"batch_size": int(t.batch_size)}
  hp.update(
    {"layers": str(s.model.layers)} if s.model.layers else {"hidden": tuple(s.model.hidden)}
  )
  hp["learning_rate"] = float(t.learning_rate)
  hp["momentum"] = float(t.momentum)
  hp["l2"] = float(t.l2)
  hp["lr_decay"] = float(t.lr_decay)
  hp.update({k: t[k] for k in SHOWN_IF_SET if t[k] != DEFAULTS.train[k]})
  if not s.model.layers:
    hp["dropout"] = tuple(float(r) for r in t.dropout)
  hp["seed"] = run.seed
  return hp


def identity(settings: Mapping) -> dict:
  """What must match for a saved run to be the run of these settings: the settings with every
  default filled (a field added since it was saved at the value it trained with), without the
  study's fields, and without model.hidden / train.dropout when model.layers gave the network
  (they never trained)."""
  out = defaults.fill(settings)
  for key in (*STUDY_FIELDS, "seeds"):  # (more seeds: the runs already trained are the same)
    out.pop(key, None)
  out["report"].pop("baselines", None)
  out["cv"].pop("baselines", None)  # trained beside the runs, never part of them
  for section, field in NOT_IDENTITY:
    out[section].pop(field, None)
  if out["model"]["layers"]:
    for section, field in defaults.MLP_FIELDS:
      out[section].pop(field, None)
  out["data"] = data_lib.with_added_fields(out["data"])
  return to_jsonable(out)


def same_run(saved: Mapping | None, run: Run) -> bool:
  """Whether a saved result (result.json, or a trial's) was trained with ``run``'s settings."""
  config = (saved or {}).get("config")
  return isinstance(config, Mapping) and identity(config) == identity(run.settings)


def settings_json(run: Run) -> dict:
  """A run's settings as JSON (its config.json, and result.json's "config")."""
  return to_jsonable(run.settings.to_dict())


# ------------------------------------------------------------------------------- helpers


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


_MISSING = object()


def lookup(cfg: Mapping, path: str, default: Any = _MISSING) -> Any:
  """Value at a dotted path; integer parts index into tuples (``model.hidden.1``). A path the
  settings lack gives ``default`` when one is given (a table's empty cell), else a KeyError."""
  node: Any = cfg
  try:
    for part in path.split("."):
      node = node[int(part)] if part.isdigit() else node[part]
  except (KeyError, IndexError, TypeError, AttributeError):
    if default is _MISSING:
      raise KeyError(f"no field {path!r}") from None
    return default
  return np.asarray(node).tolist() if isinstance(node, np.ndarray) else node
