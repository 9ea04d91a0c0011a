"""The add-a-class experiment: train without one class, then add it back three ways.

Both stages are ordinary studies (resumable, with TensorBoard and reports); mlp.transfer supplies
the initialisation from the first stage's model.
"""

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

from mlp import data as data_lib
from mlp import plan, rundir, study, tables


def class_accuracies(confusion: Sequence[Sequence[int]], new: int) -> tuple[float, float, float]:
  """(overall, new class, old classes) accuracy from a test confusion matrix (rows = truth)."""
  cm = np.asarray(confusion, np.float64)
  diag = np.diag(cm)
  old = np.arange(len(cm)) != new
  safe = lambda a, b: float(a / b) if b else float("nan")  # noqa: E731
  return (
    safe(diag.sum(), cm.sum()),
    safe(diag[new], cm[new].sum()),
    safe(diag[old].sum(), cm[old].sum()),
  )


def run_transfer(config, workdir: str | os.PathLike, *, data_dir: str | None = None, log=print):
  """Train without ``config.transfer.new_class``, then add it three ways; write transfer.md.

  1. ``base/``: the config's run on every class but the new one.
  2. ``add/``: on every class, three runs: ``scratch`` (the config as is), ``last_layer`` (from
     the base model, every layer but the output frozen: ``config.transfer.last_layer`` overrides)
     and ``fine_tune`` (from the base model, everything trained: ``config.transfer.fine_tune``).
  Both are ordinary studies (resumable). The table gives each way's accuracy on the test split
  overall, on the new class (its recall) and on the old classes, and its training time.
  """
  workdir = Path(workdir)
  t = config.transfer
  new_class = str(t.new_class)
  names = data_lib.load(config.data, data_dir).class_names
  if new_class not in names:
    raise ValueError(
      f"transfer.new_class {new_class!r} is not a class of {config.data.name} ({', '.join(names)})"
    )
  base_cfg = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  base_cfg.name = "base"
  base_cfg.data.classes = tuple(c for c in names if c != new_class)
  for k in ("grid", "extra_runs"):
    base_cfg[k] = ml_collections.ConfigDict()
  (base,) = study.run_study(base_cfg, workdir / "base", data_dir=data_dir, log=log)
  base_model = rundir.run_dir(workdir / "base", plan.study_plan(base_cfg).runs[0]) / "model"
  add_cfg = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  add_cfg.name = "scratch"
  add_cfg.grid = ml_collections.ConfigDict()
  add_cfg.extra_runs = ml_collections.ConfigDict()
  for way in ("last_layer", "fine_tune"):
    overrides = ml_collections.ConfigDict(copy.deepcopy(t[way].to_dict()))
    overrides.model = overrides.get("model", ml_collections.ConfigDict())
    overrides.model.init_from = str(base_model)
    add_cfg.extra_runs[way] = overrides
  results = study.run_study(add_cfg, workdir / "add", data_dir=data_dir, log=log)
  split = config.report.test_split
  new = names.index(new_class)
  rows = []
  base_cm = np.asarray(base["tests"][split]["confusion"])
  rows.append(
    {
      "way": "base (without the new class)",
      "epochs": base["epochs"],
      "overall": None,
      "new": None,
      "old": float(np.trace(base_cm) / base_cm.sum()),
      "seconds": base["seconds"],
    }
  )
  order = ("scratch", "last_layer", "fine_tune")
  for r in sorted(results, key=lambda r: order.index(r["name"])):
    overall, acc_new, acc_old = class_accuracies(r["tests"][split]["confusion"], new)
    rows.append(
      {
        "way": r["name"],
        "epochs": r["epochs"],
        "overall": overall,
        "new": acc_new,
        "old": acc_old,
        "seconds": r["seconds"],
      }
    )
  tables.write_table(
    rows,
    [
      ("way", "Way"),
      ("epochs", "Epochs"),
      ("overall", f"{split} acc"),
      ("new", f"{new_class} acc"),
      ("old", "Old classes acc"),
      ("seconds", "Train s"),
    ],
    workdir / "transfer.csv",
    workdir / "transfer.md",
    title=f"Adding {new_class} to {config.data.name}: three ways",
    notes=[
      f"Accuracies on {split}: overall (all classes), on the rows of {new_class} (its recall), "
      f"and on the rows of the other classes. The base model is scored on the old classes only.",
      "last_layer and fine_tune start from the base model; their time excludes the base model's.",
      f"last_layer: {plan.fmt(t.last_layer.to_dict())}; fine_tune: "
      f"{plan.fmt(t.fine_tune.to_dict())} (overrides of the config).",
    ],
    formats={"seconds": ".1f"},
  )
  log(f"results: {workdir / 'transfer.md'}")
  return rows
