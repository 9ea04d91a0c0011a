"""Planning (mlp.plan, mlp.defaults): a config resolved once into typed, frozen plans, every
default in configs/base.py, a network given one way."""

import ast
import dataclasses
import json
import math
from pathlib import Path

import ml_collections
import pytest

from configs import base, fer2013_cnn, har
from mlp import plan, results, spec, stopping
from mlp.defaults import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def planned(cfg, shape=(561,), classes=6):
  return plan.build(plan.study_plan(cfg).runs, shape, classes)


def test_a_field_a_config_lacks_takes_its_configs_base_default():
  cfg = har.get_config("quick")
  del cfg.train["beta2"], cfg.model["softmax_grad"], cfg.report["columns"]
  p = planned(cfg)[0]
  assert p.settings.train.beta2 == DEFAULTS.train.beta2
  assert p.spec.softmax_grad == DEFAULTS.model.softmax_grad
  assert float(p.hyper.beta2) == pytest.approx(DEFAULTS.train.beta2)
  assert plan.study_plan(cfg).report.columns == ()
  with pytest.raises(AttributeError):  # frozen: what a run trains with is settled once
    p.settings.train.beta2 = 0.5
  with pytest.raises(dataclasses.FrozenInstanceError):
    p.refit = True


def test_an_mlp_config_with_an_architecture_string_is_refused_in_one_line():
  cfg = har.get_config("quick")
  cfg.model.layers = "dense8 relu dense"
  with pytest.raises(ValueError, match="model.layers") as e:
    plan.study_plan(cfg)
  assert "model.hidden = 64-16" in str(e.value) and "\n" not in str(e.value)
  cnn = fer2013_cnn.get_config("quick")  # deletes model.hidden and train.dropout: one way
  (p,) = planned(cnn, (48, 48, 1), 7)
  assert p.spec.net.layers[0].kind == "conv" and "hidden" not in p.settings.model


def test_a_run_that_sets_model_layers_has_no_mlp_fields_and_the_table_shows_what_trained():
  cfg = har.get_config("quick")
  cfg.extra_runs.small = ml_collections.ConfigDict({"model": {"layers": "dense8 relu dense"}})
  study = plan.study_plan(cfg)
  small = next(r for r in study.runs if r.name == "small")
  assert "hidden" not in small.settings.model and "dropout" not in small.settings.train
  p = plan.build([small], (561,), 6)[0]
  assert p.spec.net.describe() == "dense8 relu dense6"
  assert plan.hparams(small)["layers"] == "dense8 relu dense" and "hidden" not in plan.hparams(
    small
  )
  result = {"name": "small", "seed": 0, "epochs": 1, "diverged": False, "tests": {}}
  (row,) = results.summary_rows(study, [result])
  assert row["N2"] is None and row["Dropout"] is None and row["BS"] == "50"  # nothing made up
  cfg.extra_runs.small.train = ml_collections.ConfigDict({"dropout": (0.5, 0.0)})
  with pytest.raises(ValueError, match="model.layers and train.dropout"):
    plan.study_plan(cfg)


def test_the_runs_of_a_study_share_one_data_set():
  cfg = har.get_config("quick")
  cfg.grid.data = ml_collections.ConfigDict({"split_seed": (0, 1)})
  with pytest.raises(ValueError, match="changes data.split_seed"):
    plan.study_plan(cfg)


def test_every_spec_and_hyper_field_comes_from_its_config_field():
  cfg = base.get_config()
  cfg.data.name = "cifar10"
  cfg.model.layers, cfg.model.softmax_grad = "flatten dense", "jacobian"
  del cfg.model["hidden"], cfg.train["dropout"]
  t = cfg.train
  t.batch_size, t.optimizer, t.schedule = 7, "adam", "cosine"
  t.augment_flip, t.augment_shift, t.freeze = True, 2, "all_but_last"
  t.learning_rate, t.momentum, t.l2, t.lr_decay, t.beta2 = 0.2, 0.3, 0.04, 0.5, 0.6
  t.label_smoothing, t.warmup_epochs, t.max_epochs = 0.7, 0.8, 9
  (p,) = planned(cfg, (4, 4, 3), 5)
  for f in dataclasses.fields(spec.Spec):
    if f.name in ("net", "frozen", "eval_batch", "unroll"):
      continue
    config_field = {"flip": "augment_flip", "shift": "augment_shift"}.get(f.name, f.name)
    section = cfg.model if config_field in cfg.model else cfg.train
    assert getattr(p.spec, f.name) == section[config_field], f.name
  assert p.spec.frozen == ()  # "flatten dense": the only layer with params is the last
  got = {k: float(v) for k, v in p.hyper._asdict().items() if k != "layers"}
  assert got == pytest.approx(
    dict(
      learning_rate=0.2,
      momentum=0.3,
      l2=0.04,
      lr_decay=0.5,
      smoothing=0.7,
      warmup=0.8,
      horizon=9.0,
      beta2=0.6,
    )
  )


def test_bfloat16_steps_are_refused_not_ignored():
  cfg = har.get_config("quick")
  cfg.train.compute_dtype = "bfloat16"
  with pytest.raises(ValueError, match="compute_dtype 'bfloat16' is not built yet"):
    planned(cfg)


@pytest.mark.parametrize("kind", ["gap", "patience", "none"])
def test_the_stopping_rules_come_in_the_documented_order(kind):
  cfg = har.get_config("quick")
  cfg.train.early_stopping = kind
  rules = planned(cfg)[0].stopping.rules
  middle = {"gap": [stopping.Gap], "patience": [stopping.Patience], "none": []}[kind]
  assert [type(r) for r in rules] == [
    stopping.Diverged,
    *middle,
    stopping.Pruned,
    stopping.MaxEpochs,
  ]
  assert rules[0].limit == pytest.approx(cfg.train.diverge * math.log(6))
  cfg.train.early_stopping = "sometimes"
  with pytest.raises(ValueError, match="train.early_stopping must be one of gap, patience, none"):
    planned(cfg)


def test_runs_group_by_program_and_rules_and_a_plan_says_what_it_trains():
  plans = planned(har.get_config("quick"))
  groups = plan.groups(plans)
  assert sum(len(g.plans) for g in groups) == len(plans) == 9
  assert len(groups) == 5  # (batch 10, 50) x (h 64-16, 64-32), and the dropout run
  pop = groups[0].population()
  assert pop.keys.shape == (len(groups[0].plans),) and pop.hyper.learning_rate.shape[0] == 2
  described = json.loads(json.dumps(plans[-1].describe()))  # plain JSON
  assert described["network"].startswith("dropout0.5/regular dense64 relu dropout0.5/regular")
  assert described["hyper"]["learning_rate"] == 0.001 and described["spec"]["batch_size"] == 10
  assert [r["rule"] for r in described["stopping"]] == ["diverged", "gap", "pruned", "max_epochs"]


def test_a_saved_run_matches_when_fields_added_since_take_their_default():
  run = plan.study_plan(har.get_config("quick")).runs[0]
  saved = json.loads(json.dumps(plan.settings_json(run)))
  del saved["train"]["compute_dtype"], saved["train"]["augment_flip"], saved["cv"]
  assert plan.same_run({"config": saved}, run)
  saved["train"]["compute_dtype"] = "bfloat16"  # a value other than the implied one
  assert not plan.same_run({"config": saved}, run)
  # A network given by model.layers never trained model.hidden: a config saved with both still
  # matches the same run planned from a config without it.
  cnn = plan.study_plan(fer2013_cnn.get_config("quick")).runs[0]
  old = {**plan.settings_json(cnn), "model": {**plan.settings_json(cnn)["model"], "hidden": [1]}}
  assert plan.same_run({"config": old}, cnn)


def _literal(node: ast.AST):
  try:
    return ast.literal_eval(node)
  except ValueError:
    return ...


# Left as they are, each for its reason (the note lists them).
ELSEWHERE = {
  ("stats.py", "alpha"),  # each statistical test's conventional significance level
}


def test_a_study_given_more_seeds_keeps_the_runs_it_trained():
  one = har.get_config("quick")
  three = har.get_config("quick")
  three.seeds = 3
  saved = {"config": json.loads(json.dumps(plan.settings_json(plan.study_plan(one).runs[0])))}
  (run,) = [r for r in plan.study_plan(three).runs if r.id == plan.study_plan(one).runs[0].id]
  assert plan.same_run(saved, run)  # (a run's seed is its folder's: runs/<name>/seed<k>)
  three.train.l2 = 0.123  # what a run trains with still counts
  assert not plan.same_run(saved, plan.study_plan(three).runs[0])


def test_no_default_is_written_twice():
  """No function or dataclass of mlp/ repeats a configs/base.py default under the field's name,
  and no code reads a config field with a fallback value (``cfg.get("diverge", 100.0)``): a
  default lives in configs/base.py alone. The math (backprop, layers, model) and the data
  loaders, which take no config, are not scanned."""
  fields: dict[str, list] = {}
  search = {k: v for k, v in base.search_section().items() if k != "space"}  # (its ranges)
  for path, value in plan.leaves({**base.get_config().to_dict(), **search}):
    if value is not None:  # None: "not given", not a value
      fields.setdefault(path.split(".")[-1], []).append(value)
  found = []
  for path in sorted((ROOT / "mlp").rglob("*.py")):
    if path.name in ("backprop.py", "layers.py", "model.py") or path.parent.name == "data":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
      if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get":
        key = _literal(node.args[0]) if node.args else None
        if len(node.args) == 2 and key in fields and _literal(node.args[1]) is not ...:
          found.append(f"{where} .get({key!r}, ...)")
      named = []
      if isinstance(node, ast.FunctionDef):
        a = node.args
        positional = a.posonlyargs + a.args
        named = list(zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True))
        named += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d]
        named = [(k.arg, d) for k, d in named]
      elif isinstance(node, ast.ClassDef):
        named = [
          (s.target.id, s.value)
          for s in node.body
          if isinstance(s, ast.AnnAssign) and s.value is not None and isinstance(s.target, ast.Name)
        ]
      for name, default in named:
        if (path.name, name) not in ELSEWHERE and _literal(default) in fields.get(name, []):
          found.append(f"{where} {name}={ast.unparse(default)}")
  assert not found, "defaults written again outside configs/base.py:\n" + "\n".join(found)
