"""A search's outputs: the leaderboard (CSV, Markdown), Optuna's plots, best/ and summary.json."""

import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from mlp import figures, fileio, tables
from mlp.search import storage as storage_lib
from mlp.search.space import hparams

Log = Callable[[str], None]


def trials_per_hour(trials: list[FrozenTrial]) -> float | None:
  """Finished trials (COMPLETE or PRUNED) per hour of wall time, first start to last finish."""
  finished = (TrialState.COMPLETE, TrialState.PRUNED)
  done = [t for t in trials if t.state in finished and t.datetime_complete]
  starts = [t.datetime_start for t in trials if t.datetime_start]
  if not done or not starts:
    return None
  hours = (max(t.datetime_complete for t in done) - min(starts)).total_seconds() / 3600
  return len(done) / hours if hours > 0 else None


def leaderboard(st: optuna.Study) -> list[dict[str, Any]]:
  """COMPLETE trials, best validation accuracy first; then PRUNED ones (unranked, never results)."""
  rows = []
  trials = st.get_trials(deepcopy=False)
  done = [t for t in trials if t.state == TrialState.COMPLETE]
  pruned = [t for t in trials if t.state == TrialState.PRUNED]
  ranked = list(enumerate(sorted(done, key=lambda t: (-t.value, t.number)), 1))
  for rank, t in ranked + [(None, t) for t in pruned]:
    row: dict[str, Any] = {"rank": rank, "trial": t.number, "val_acc": t.value}
    if rank is None:  # its last reported val accuracy
      row["status"] = f"pruned at epoch {max(t.intermediate_values, default=0)}"
    else:
      row["status"] = "diverged" if t.user_attrs.get("diverged") else "ok"  # diverged: val_acc 0
    row.update({k: v for k, v in t.user_attrs.items() if k in ("val_loss", "epochs")})
    row.update(hparams(t.params))
    row.update({k: v for k, v in t.user_attrs.items() if k.startswith("test_acc/")})
    row["stage"] = t.user_attrs.get("stage")
    row["worker"] = t.user_attrs.get("worker")
    rows.append(row)
  return rows


def write_outputs(
  config: ml_collections.ConfigDict, st: optuna.Study, workdir: str | Path, *, log: Log = print
) -> dict[str, Any]:
  """Leaderboard (CSV, Markdown), plots (PNG), best/ and summary.json in ``workdir``."""
  workdir = Path(workdir)
  trials = st.get_trials(deepcopy=False)
  rows = leaderboard(st)
  states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
  rate = trials_per_hour(trials)
  summary: dict[str, Any] = {
    "study": st.study_name,
    "strategy": config.search.strategy,
    "budget": int(config.search.budget),
    "states": {k: v for k, v in states.items() if v},
    "trials_per_hour": rate,
  }
  if rows:
    keys = list(dict.fromkeys(k for r in rows for k, v in r.items() if v is not None))
    columns = [(k, k) for k in keys]
    split = config.report.test_split
    notes = [
      f"Trials: {', '.join(f'{k} {v}' for k, v in summary['states'].items())}; budget "
      f"{summary['budget']} ({config.search.strategy} search).",
      "val_acc = best validation accuracy (the objective, patience early stopping restores the "
      f"best epoch); test_acc/{split} = that model on {split}.",
    ]
    if rate:
      notes.append(f"Throughput: {rate:.1f} trials/hour (all workers).")
    tables.write_table(rows, columns, workdir / "leaderboard.csv", None, title=config.report.title)
    tables.write_table(
      rows[: int(config.report.top)],
      columns,
      None,
      workdir / "leaderboard.md",
      title=config.report.title,
      notes=notes,
    )
    if any(t.state == TrialState.COMPLETE for t in trials):
      best = st.best_trial
      summary["best"] = {
        "trial": best.number,
        "val_acc": best.value,
        "params": best.params,
        "user_attrs": best.user_attrs,
      }
      _copy_best(best, workdir, log)
    _plots(st, workdir / "figures", log)
  fileio.atomic_write_json(workdir / "summary.json", summary)
  log(
    f"leaderboard: {workdir / 'leaderboard.md'}; figures: {workdir / 'figures'}; "
    f"best: {workdir / 'best'}"
  )
  return summary


def _copy_best(best: FrozenTrial, workdir: Path, log: Log) -> None:
  """Copy the best trial's run (model, eval reports) to ``workdir/best`` if it is on this disk."""
  src = Path(best.user_attrs.get("run_dir", ""))
  dst = workdir / "best"
  pointer = {"trial": best.number, **best.user_attrs}
  if not (src / "result.json").exists():
    log(
      f"best trial {best.number} ran on {best.user_attrs.get('worker')} in {src}; copy that "
      "folder here (it is not on this machine's disk)"
    )
    fileio.atomic_write_json(workdir / "best.json", pointer)
    return
  marker = dst / "trial.json"
  if marker.exists() and json.loads(marker.read_text()).get("trial") == best.number:
    return
  tmp = workdir / f".best-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(src, tmp)
  fileio.atomic_write_json(
    tmp / "trial.json",
    {"trial": best.number, "val_acc": best.value, "params": best.params, **best.user_attrs},
  )
  old = workdir / f".best-old-{os.getpid()}"
  if dst.exists():
    os.replace(dst, old)
  os.replace(tmp, dst)
  shutil.rmtree(old, ignore_errors=True)
  fileio.atomic_write_json(workdir / "best.json", pointer)


def _plots(st: optuna.Study, out: Path, log: Log) -> None:
  """Optimisation history, parallel coordinates, one slice plot per hyperparameter and the
  hyperparameters' importances (PNG)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from optuna.visualization import matplotlib as ovm

  out.mkdir(parents=True, exist_ok=True)
  done = [t for t in st.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
  always = [n for n in done[0].params if all(n in t.params for t in done)] if done else []
  plots = {
    "optimization_history": lambda: ovm.plot_optimization_history(st),
    "intermediate_values": lambda: ovm.plot_intermediate_values(st),  # pruned trials' curves
    "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(st, params=always),
    "param_importances": lambda: ovm.plot_param_importances(st),  # fANOVA on complete trials
  }
  points: dict[str, tuple[list, list, list]] = {}  # the slice plot, in a grid (not one row)
  for t in done:
    for name, value in t.params.items():
      for column, x in zip(
        points.setdefault(name, ([], [], [])), (value, t.value, t.number), strict=True
      ):
        column.append(x)
  log_x = {
    n
    for t in done
    for n, d in t.distributions.items()
    if isinstance(d, optuna.distributions.FloatDistribution | optuna.distributions.IntDistribution)
    and d.log
  }
  try:
    if points:
      figures.plot_slices(points, out / "slice.png", metric=storage_lib.METRIC, log_x=log_x)
  except Exception as e:  # noqa: BLE001 (a plot must not lose the search's results)
    log(f"figure slice skipped: {e}")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name, draw in plots.items():
      try:
        axes = draw()
      except Exception as e:  # noqa: BLE001 (a plot must not lose the search's results)
        log(f"figure {name} skipped: {e}")
        continue
      fig = np.asarray(axes).ravel()[0].figure
      if name == "parallel_coordinate":
        fig.set_size_inches(max(10, 1.6 * len(always)), 6)
      fig.tight_layout()
      fileio.atomic_write(
        out / f"{name}.png", lambda f, fig=fig: fig.savefig(f, format="png", dpi=100)
      )
      plt.close(fig)
