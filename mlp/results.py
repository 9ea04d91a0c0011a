"""Where a study is reported: its table and figures from its runs' results (results.csv/md,
figures/*.png). What each row says a run trained with comes from the study's plan (mlp.plan):
the settings the run was planned with, which resume checks against the stored results."""

from pathlib import Path
from typing import Any

import numpy as np

from mlp import figures, tables
from mlp.plan import StudyPlan, fmt, lookup


def _mean_std(values: list[float], digits: int = 4) -> Any:
  if len(values) == 1:
    return values[0]
  return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _settings(study: StudyPlan) -> dict[str, Any]:
  """{run name: the settings its runs were planned with}."""
  return {r.name: r.settings for r in study.runs}


def summary_rows(study: StudyPlan, results: list[dict]) -> list[dict]:
  """One row per run name: the report's columns (from the run's planned settings; empty where a
  run has no such field), epochs and top-k on the main test split."""
  split = study.report.test_split
  k = study.report.topk
  settings = _settings(study)
  by_name: dict[str, list[dict]] = {}
  for r in results:
    by_name.setdefault(r["name"], []).append(r)
  rows = []
  for name, rs in by_name.items():
    row: dict[str, Any] = {"run": name}
    for header, path in study.report.columns:
      value = lookup(settings[name], path, None)
      row[header] = None if value is None else fmt(value)
    epochs = [r["epochs"] for r in rs]
    row["Epoch"] = epochs[0] if len(epochs) == 1 else _mean_std([float(e) for e in epochs], 1)
    trained = [r["train"]["topk"][0] for r in rs if r.get("train")]  # (report.eval_train)
    if trained:
      row["Train top-1"] = _mean_std(trained)
    ok = [r for r in rs if not r["diverged"] and split in r["tests"]]
    for j in range(k):
      row[f"Top-{j + 1}"] = _mean_std([r["tests"][split]["topk"][j] for r in ok]) if ok else None
    row["Status"] = (
      "diverged" if not ok else ("ok" if len(ok) == len(rs) else f"{len(rs) - len(ok)} diverged")
    )
    row["seeds"] = sum(len(r.get("seeds", [r["seed"]])) for r in rs)
    rows.append(row)
  return rows


def best_run(results: list[dict], *, exclude: tuple[str, ...] = ()) -> dict | None:
  """The finished run with the highest validation accuracy (ties: lower val loss)."""
  ok = [r for r in results if not r["diverged"] and r["val"] and r["name"] not in exclude]
  if not ok:
    return None
  return max(ok, key=lambda r: (r["val"]["topk"][0], -r["val"]["loss"]))


def write_results(
  study: StudyPlan,
  results: list[dict],
  data: Any,
  workdir: Path,
  *,
  ensembles: list[dict] | None = None,
) -> None:
  """results.csv / results.md and the study's figures (``data``: a Dataset, or anything with its
  ``notes`` and ``class_names``); with ``ensembles`` the table's rows and
  the best run are the ensembles' (the figures stay the first seed's runs)."""
  workdir = Path(workdir)
  rows = summary_rows(study, ensembles or results)
  k = study.report.topk
  columns = [("run", "Run")]
  columns += [(header, header) for header, _ in study.report.columns]
  columns += [("Epoch", "Epoch")]
  if any("Train top-1" in row for row in rows):  # an overfitting check: what it exists to show
    columns += [("Train top-1", "Train top-1")]
  columns += [(f"Top-{j + 1}", f"Top-{j + 1}") for j in range(k)]
  columns += [("Status", "Status"), ("seeds", "Seeds")]
  split = study.report.test_split
  kinds = dict.fromkeys(str(r.settings.train.early_stopping) for r in study.runs)
  notes = list(data.notes) + [
    f"Top-k accuracies on the {split!r} split; Epoch = epochs trained "
    f"(early stopping: {', '.join(kinds)})."
    + (
      " Train top-1: the training split evaluated after training."
      if any("Train top-1" in row for row in rows)
      else ""
    )
  ]
  best = best_run(ensembles or results, exclude=study.extra_runs)
  if best is not None:
    notes.append(
      f"Best run by validation accuracy: {best['name']} (val top-1 {best['val']['topk'][0]:.4f})."
    )
  if ensembles:
    m = study.ensemble
    notes.append(
      f"Each row: seed ensembles of {m} runs (probabilities averaged, mlp.ensemble); values are "
      + (f"mean ± std over {study.seeds // m} ensembles." if study.seeds > m else "one ensemble's.")
      + (
        " A refit ensemble's val: its members' mean." if any("refit" in r for r in results) else ""
      )
    )
  elif study.seeds > 1:
    notes.append(f"Values are mean ± std over {study.seeds} seeds.")
  tables.write_table(
    rows,
    columns,
    workdir / "results.csv",
    workdir / "results.md",
    title=study.report.title,
    notes=notes,
  )
  _figures(study, results, data, workdir / "figures", best)


def _figures(study: StudyPlan, results: list[dict], data: Any, out: Path, best) -> None:
  seed0 = [r for r in results if r["seed"] == study.seed]
  split = study.report.test_split
  curves = {r["name"]: r["history"] for r in seed0}
  settings = _settings(study)
  groups: dict[str, list[dict]] = {}
  for r in seed0:
    if r["name"] in study.extra_runs:
      continue
    key = ", ".join(
      f"{p.split('.')[-1]}={fmt(lookup(settings[r['name']], p, ''))}"
      for p in study.report.figure_groups
    )
    groups.setdefault(key, []).append(r)
  for n, (key, rs) in enumerate(groups.items(), 1):
    figures.plot_loss_curves(
      {r["name"]: curves[r["name"]] for r in rs},
      out / f"loss_curves_{n}.png",
      title=f"Train vs validation loss ({key})" if key else "Train vs validation loss",
      ncols=min(4, len(rs)),
    )
  cms = {
    r["name"]: np.asarray(r["tests"][split]["confusion"]) for r in seed0 if split in r["tests"]
  }
  if cms:
    figures.plot_confusion_grid(
      cms, data.class_names, out / "confusion_matrices.png", title=f"Confusion matrices ({split})"
    )
  compare = study.report.compare_with_best
  other = next((r for r in seed0 if r["name"] == compare), None) if compare else None
  if best is not None and other is not None:
    pair = [best, other]
    figures.plot_loss_curves(
      {f"best: {r['name']}" if r is best else r["name"]: curves[r["name"]] for r in pair},
      out / f"best_vs_{compare}_loss.png",
      title=f"Best model vs best with {compare}",
      ncols=2,
    )
    pair_cms = {r["name"]: cms[r["name"]] for r in pair if r["name"] in cms}
    if pair_cms:
      figures.plot_confusion_grid(
        pair_cms,
        data.class_names,
        out / f"best_vs_{compare}_confusion.png",
        title=f"Best model vs best with {compare} ({split})",
        ncols=2,
      )
