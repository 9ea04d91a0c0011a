"""A search's outputs: the leaderboard (CSV, Markdown), Optuna's plots, the expected-maximum
curves (expected_max.csv, figures/expected_max.png), best/ and summary.json."""

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

from mlp import expected_max as expected_max_lib
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
  curve = expected_max_curve(trials)
  if curve:
    write_expected_max(curve, workdir, config, log)
    summary["expected_max"] = {k: curve[-1][k] for k in ("n", "expected_max", "std")}
  fileio.atomic_write_json(workdir / "summary.json", summary)
  log(
    f"leaderboard: {workdir / 'leaderboard.md'}; figures: {workdir / 'figures'}; "
    f"best: {workdir / 'best'}"
  )
  return summary


def expected_max_curve(trials: list[FrozenTrial]) -> list[dict[str, float]]:
  """The expected best validation accuracy of n = 1..N trials (mlp.expected_max), N the COMPLETE
  trials, with its variance; against time too: ``seconds``, n times the compute seconds a
  complete trial cost (the durations of the COMPLETE and PRUNED trials over the number of
  COMPLETE ones, so a pruner's savings count), and ``wall_seconds``, n times the study's wall
  time (first start to last finish, all workers) per complete trial. Empty without trials."""
  finished = (TrialState.COMPLETE, TrialState.PRUNED)
  done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
  if not done:
    return []
  timed = [t for t in trials if t.state in finished and t.datetime_start and t.datetime_complete]
  per_trial = {}
  if timed:
    spent = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in timed)
    wall = max(t.datetime_complete for t in timed) - min(t.datetime_start for t in timed)
    per_trial = {"seconds": spent / len(done), "wall_seconds": wall.total_seconds() / len(done)}
  return expected_max_lib.curve([t.value for t in done], per_trial=per_trial)


def write_expected_max(
  curve: list[dict[str, float]], workdir: Path, config: ml_collections.ConfigDict, log: Log
) -> None:
  """expected_max.csv and figures/expected_max.png: the curve against trials and wall time."""
  keys = ("n", "expected_max", "std", "variance", "seconds", "wall_seconds")
  tables.write_table(
    curve, [(k, k) for k in keys if k in curve[0]], workdir / "expected_max.csv", None
  )
  try:
    _expected_max_figure(curve, workdir / "figures" / "expected_max.png", config)
  except Exception as e:  # noqa: BLE001 (a plot must not lose the search's results)
    log(f"figure expected_max skipped: {e}")


def _expected_max_figure(curve: list[dict], path: Path, config: ml_collections.ConfigDict) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = np.array([r["n"] for r in curve])
  mean = np.array([r["expected_max"] for r in curve])
  std = np.array([r["std"] for r in curve])
  axes_x = [("n", "trials (n)", 1.0)]
  if "wall_seconds" in curve[0]:
    axes_x.append(("wall_seconds", "wall time (minutes, all workers)", 60.0))
  fig, axes = plt.subplots(1, len(axes_x), figsize=(5.5 * len(axes_x), 4), squeeze=False)
  for ax, (key, label, scale) in zip(axes[0], axes_x, strict=True):
    x = np.array([r[key] for r in curve]) / scale if key != "n" else n
    ax.plot(x, mean, "-", label="expected best val accuracy")
    ax.fill_between(x, mean - std, np.minimum(mean + std, 1.0), alpha=0.25, label="± 1 std")
    ax.set_xscale("log" if len(n) > 10 else "linear")
    ax.set_xlabel(label)
    ax.set_ylabel("expected max val accuracy")
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8, loc="lower right")
  fig.suptitle(
    f"{config.report.title}: expected max over n of {len(n)} trials "
    f"({config.search.strategy} search; Dodge et al. 2019)",
    fontsize=9,
  )
  figures.save_figure(fig, path)
  plt.close(fig)


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
