"""Cross-validate a study's runs and scikit-learn baselines on the same folds, and test them.

Workdir layout::

    config.json                     the cross-validation config
    folds/<fold>/                   one study per fold (mlp.study: runs/, results.md, figures/)
    folds/<fold>/baselines/<b>.json a baseline's accuracy, time, per-row correctness on the fold and
                                    the values its inner cross-validation chose (its cache)
    folds/<fold>/correct/<run>.json the same for each of our runs (seed ``config.seed``; with
                                    ``config.ensemble`` = m > 1, its first seed ensemble)
    results.md, results.csv         per-fold accuracies, mean ± std (one row per learner)
    comparisons.md, comparisons.csv paired tests: each of our runs against each baseline
    tuning.md, tuning.csv           each tuned baseline's chosen values and inner accuracy per fold
    figures/cv_accuracy.png         per-fold accuracy of every learner
    runs/cv/<learner>/              TensorBoard: ``cv/accuracy`` per fold (point TensorBoard at
                                    the workdir to see these and every fold's runs together)

``config.cv``: ``folds`` (k), ``scheme`` (``kfold``: k folds; ``5x2``: five replications of
2-fold CV for Dietterich's test), ``seed`` (fold assignment), ``baselines`` (names in
mlp.baselines: ``<learner>`` tuned by inner cross-validation on each fold's training part alone,
``<learner>_default`` untuned), ``alpha``. HAR folds hold out whole subjects (never the test
subjects); image folds are stratified over the training split. Each fold trains the config's runs
with validation carved from the fold's training part (the data config's ``val_subjects`` /
``val_fraction``); baselines, which need no validation, are tuned and trained on the fold's
training part including that carve-out (HAR: inner folds of whole subjects).
Re-running with the same workdir resumes: finished fold studies and baselines are reused.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from mlp import baselines as baselines_lib
from mlp import (
  checkpoint,
  defaults,
  ensemble,
  figures,
  fileio,
  lock,
  plan,
  rundir,
  stats,
  study,
  tables,
  tensorboard,
)
from mlp import data as data_lib
from mlp import results as results_lib
from mlp.plan import Run, StudyPlan

Log = Callable[[str], None]
SCHEMES = ("kfold", "5x2")
SPLIT = "fold"  # the held-out part of each fold, as the fold studies' test split


def cv_of(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``config.cv``, every field a config lacks at its configs/base.py default, checked."""
  cv = defaults.fill(config)["cv"]
  out = {
    "folds": int(cv["folds"]),
    "scheme": str(cv["scheme"]),
    "seed": int(cv["seed"]),
    "baselines": tuple(cv["baselines"]),
    "alpha": float(cv["alpha"]),
  }
  if out["scheme"] not in SCHEMES:
    raise ValueError(f"cv.scheme must be one of {', '.join(SCHEMES)}, got {out['scheme']!r}")
  if out["scheme"] == "kfold" and out["folds"] < 2:
    raise ValueError(f"cv.folds must be at least 2, got {out['folds']}")
  if not 0.0 < out["alpha"] < 1.0:
    raise ValueError(f"cv.alpha must be in (0, 1), got {out['alpha']}")
  baselines_lib.check_names(out["baselines"])
  return out


def folds_of(cv: dict[str, Any]) -> list[tuple[str, int, int, int]]:
  """(label, number of folds, fold index, fold seed) for every fold the scheme trains."""
  if cv["scheme"] == "5x2":
    return [(f"rep{r + 1}-fold{j + 1}", 2, j, cv["seed"] + r) for r in range(5) for j in range(2)]
  return [(f"fold{i + 1}", cv["folds"], i, cv["seed"]) for i in range(cv["folds"])]


def fold_config(config: ml_collections.ConfigDict, folds: int, fold: int, seed: int):
  """The study config of one fold: the data config picks the fold, tests are the fold."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.data.cv_folds = folds
  cfg.data.cv_fold = fold
  cfg.data.cv_seed = seed
  cfg.report.test_split = SPLIT
  return cfg


def _read_json(path: Path) -> dict | None:
  return json.loads(path.read_text()) if path.exists() else None


def _pack(correct: np.ndarray) -> str:
  return "".join("1" if c else "0" for c in correct)


def _unpack(bits: str) -> np.ndarray:
  return np.frombuffer(bits.encode(), np.uint8) == ord("1")


def _our_correct(fold_dir: Path, run: Run, data: data_lib.Dataset, m: int) -> dict:
  """Accuracy and per-row correctness of a trained run on the fold (cached as JSON); with seed
  ensembles of ``m`` > 1 runs, of the first ensemble (the seeds from ``run.seed`` on)."""
  from mlp import inference

  path = fold_dir / "correct" / (f"{run.name}.json" if m == 1 else f"{run.name}_ensemble{m}.json")
  cached = _read_json(path)
  if cached is not None:
    return cached
  x, y = data.tests[SPLIT]
  lm = inference.load_model(
    ensemble.folder(fold_dir, run.name, 0) if m > 1 else rundir.run_dir(fold_dir, run)
  )
  correct = inference.probabilities(lm, x).argmax(1) == y
  out = {"accuracy": float(correct.mean()), "correct": _pack(correct)}
  fileio.atomic_write_json(path, out)
  return out


def _groups(data: data_lib.Dataset) -> np.ndarray | None:
  """The subject (group) of each train + val row, or None for data without groups."""
  if data.groups_train is None or data.groups_val is None:
    return None
  return np.concatenate([data.groups_train, data.groups_val])


def _baseline(
  fold_dir: Path, name: str, data: data_lib.Dataset, seed: int, log: Log, split: str = SPLIT
) -> dict:
  """A baseline tuned by inner cross-validation on train + val (whole subjects for HAR), trained
  there at the chosen values and scored on ``split``; cached as JSON in ``fold_dir`` with what
  the tuning chose, so a resumed run does not tune again (a cache from another grid is not
  reused)."""
  path = fold_dir / "baselines" / f"{name}.json"
  x = np.concatenate([data.x_train, data.x_val])
  y = np.concatenate([data.y_train, data.y_val])
  grid = baselines_lib.grid_text(name, x)
  cached = _read_json(path)
  if cached is not None and cached.get("grid", "") == grid:
    return cached
  x_test, y_test = data.tests[split]
  fit = baselines_lib.fit_predict(name, x, y, x_test, seed, groups=_groups(data))
  correct = fit.pred == y_test
  out = {
    "accuracy": float(correct.mean()),
    "seconds": fit.seconds,
    "correct": _pack(correct),
    "params": fit.tuning["params"],
    "inner_accuracy": fit.tuning["inner_accuracy"],
    "inner": fit.tuning["inner"],
    "grid": grid,
  }
  fileio.atomic_write_json(path, out)
  chosen = baselines_lib.format_params(out["params"])
  log(
    f"{name}: accuracy {out['accuracy']:.4f} ({fit.seconds:.1f}s"
    + (f"; chosen by {out['inner']}: {chosen}" if chosen else "")
    + ")"
  )
  return out


def chosen_text(b: dict) -> str:
  """What a baseline's inner cross-validation chose, with its inner accuracy, as table text."""
  if not b.get("grid"):
    return "untuned"
  if b.get("inner_accuracy") is None:
    return str(b.get("inner", "untuned"))
  params = baselines_lib.format_params(b.get("params"))
  return f"{params} (inner {b['inner_accuracy']:.4f})"


def _inner_note(data: data_lib.Dataset) -> str:
  k = baselines_lib.INNER_FOLDS
  if data.groups_train is not None:
    return f"a {k}-fold inner cross-validation over whole subjects (GroupKFold)"
  return f"a {k}-fold stratified inner cross-validation"


def _check_workdir(config: ml_collections.ConfigDict, workdir: Path) -> None:
  saved = _read_json(workdir / "config.json")

  def same(c: dict) -> dict:  # as runs are compared (a field added since: its default), + sweep
    return {**plan.identity(c), "grid": c.get("grid"), "extra": c.get("extra_runs")}

  if saved is not None and same(saved) != same(fileio.to_jsonable(config.to_dict())):
    raise study.StudyError(
      f"{workdir} holds a cross-validation with a different config; use a new --workdir"
    )


def run_cv(
  config: ml_collections.ConfigDict,
  workdir: str | Path,
  *,
  data_dir: str | None = None,
  log: Log = print,
) -> dict:
  """Train every fold's study and baselines not yet finished, then write tables and tests."""
  workdir = Path(workdir)
  cv = cv_of(config)
  planned = plan.study_plan(config)  # every error in the config before the first fold trains
  _check_workdir(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with lock.hold(workdir, log):  # the fold studies lock their own folders below
    fileio.atomic_write_json(workdir / "config.json", defaults.fill(config))
    per_fold: dict[str, dict[str, dict]] = {}  # learner -> fold -> {"accuracy", "correct"}
    sizes: dict[str, tuple[int, int]] = {}  # fold label -> (train rows incl. val, test rows)
    for n, (label, k, i, seed) in enumerate(folds_of(cv), 1):
      fold_dir = workdir / "folds" / label
      prefix = f"[{label} {n}/{len(folds_of(cv))}]"
      say = lambda m, p=prefix: log(f"{p} {m}")  # noqa: E731
      cfg = fold_config(config, k, i, seed)
      study.run_study(cfg, fold_dir, data_dir=data_dir, log=say)
      data = data_lib.load(cfg.data, data_dir)
      sizes[label] = (len(data.y_train) + len(data.y_val), len(data.tests[SPLIT][1]))
      _score_fold(planned, fold_dir, data, per_fold, label)
      for name in cv["baselines"]:
        per_fold.setdefault(name, {})[label] = _baseline(fold_dir, name, data, cv["seed"], say)
    summary = write_reports(planned, cv, per_fold, sizes, workdir)
  log(f"results: {workdir / 'results.md'}, {workdir / 'comparisons.md'}")
  return summary


def _score_fold(study_plan: StudyPlan, fold_dir: Path, data, per_fold: dict, label: str) -> None:
  """Each run's accuracy and per-row correctness on the fold (its first seed, or ensemble)."""
  for run in study_plan.runs:
    if run.seed == study_plan.seed:
      correct = _our_correct(fold_dir, run, data, study_plan.ensemble)
      per_fold.setdefault(run.name, {})[label] = correct


def compare_on_test(
  config: ml_collections.ConfigDict,
  results: list[dict],
  workdir: str | Path,
  *,
  data_dir: str | None = None,
  log: Log = print,
) -> list[dict]:
  """A finished study's best run by validation against the baselines ``config.report.baselines``
  on the study's test split, with McNemar's test on the per-row errors: ``baselines.{md,csv}``.

  One split, one seed: McNemar's test is the one that fits (Dietterich 1998); the baselines train
  on train + val, since they need no validation for early stopping.
  """
  from mlp import inference

  workdir = Path(workdir)
  planned = plan.study_plan(config)
  names = planned.report.baselines
  baselines_lib.check_names(names)
  if not names:
    return []
  m = planned.ensemble
  if m > 1:  # the study's rows are its seed ensembles
    results = [
      json.loads((ensemble.folder(workdir, n, j) / "result.json").read_text())
      for n, j, _ in ensemble.groups(results, m)
    ]
  best = results_lib.best_run(results, exclude=planned.extra_runs)
  split = planned.report.test_split
  if best is None:
    return []
  where = (
    ensemble.folder(workdir, best["name"], best["ensemble"])
    if m > 1
    else rundir.run_dir(workdir, Run(best["name"], best["seed"], None))
  )
  if not ((where / ensemble.FILE).exists() if m > 1 else checkpoint.exists(where / "model")):
    log(f"baselines: {best['run']} was trained on another machine; compare there (no model here)")
    return []
  data = data_lib.load(planned.data, data_dir)
  x, y = data.tests[split]
  lm = inference.load_model(where)
  ours = inference.probabilities(lm, x).argmax(1) == y
  rows = [{"learner": best["name"], "kind": "ours (best by val)", "accuracy": float(ours.mean())}]
  for name in names:
    b = _baseline(workdir, name, data, planned.seed, log, split=split)
    test = stats.mcnemar(ours, _unpack(b["correct"]))
    rows.append(
      {
        "learner": name,
        "kind": "baseline",
        "accuracy": b["accuracy"],
        "seconds": b["seconds"],
        "diff": float(ours.mean()) - b["accuracy"],
        "p_mcnemar": test.p_value,
        "claim": stats.claim(best["name"], name, test, where=f"the {split} split"),
        "chosen": chosen_text(b),
      }
    )
  tables.write_table(
    rows,
    [("learner", "Learner"), ("kind", "Kind"), ("accuracy", f"Top-1 ({split})")]
    + [("diff", "Ours - it"), ("p_mcnemar", "p McNemar"), ("seconds", "Fit s")]
    + [("chosen", "Chosen by inner CV"), ("claim", "What may be claimed")],
    workdir / "baselines.csv",
    workdir / "baselines.md",
    title=f"{planned.report.title}: best run against scikit-learn baselines",
    notes=[
      f"Best run by validation accuracy ({best['run']}) and baselines (mlp.baselines, trained "
      f"on train + val with the same features) on the {split!r} split ({len(y)} rows).",
    ]
    + (
      [
        "Baselines named <learner> are tuned: their hyperparameters are chosen from a small grid "
        f"(mlp.baselines) by {_inner_note(data)} on train + val only, never the {split} split, "
        "then refitted there; <learner>_default names the untuned learner. Fit s includes the "
        "tuning."
      ]
      if any(baselines_lib.is_tuned(n) for n in names)
      else []
    )
    + [
      "McNemar's test on the rows one learner gets right and the other wrong (one split).",
      "Cross-validation with more tests: python -m experiments.cross_validate (README).",
    ],
    formats={"p_mcnemar": ".3g", "seconds": ".1f"},
  )
  for r in rows[1:]:
    log(
      f"{r['learner']}: {split} top-1 {r['accuracy']:.4f} (ours {rows[0]['accuracy']:.4f}, "
      f"McNemar p = {r['p_mcnemar']:.3g})"
    )
  log(f"baselines: {workdir / 'baselines.md'}")
  return rows


# ------------------------------------------------------------------------------- reporting


def compare(
  a: str, b: str, per_fold: dict[str, dict[str, dict]], cv: dict, sizes: dict[str, tuple]
) -> dict[str, Any]:
  """The paired tests of learner ``a`` against ``b`` on their per-fold accuracies."""
  labels = list(per_fold[a])
  acc_a = np.array([per_fold[a][f]["accuracy"] for f in labels])
  acc_b = np.array([per_fold[b][f]["accuracy"] for f in labels])
  alpha = cv["alpha"]
  n_train = float(np.mean([sizes[f][0] for f in labels]))
  n_test = float(np.mean([sizes[f][1] for f in labels]))
  tests = {
    "corrected_t": stats.corrected_resampled_t(acc_a, acc_b, n_train, n_test, alpha=alpha),
    "wilcoxon": stats.wilcoxon(acc_a, acc_b, alpha=alpha),
  }
  if cv["scheme"] == "5x2":
    tests["t_5x2cv"] = stats.paired_t_5x2cv(acc_a.reshape(5, 2), acc_b.reshape(5, 2), alpha=alpha)
    tests["f_5x2cv"] = stats.f_test_5x2cv(acc_a.reshape(5, 2), acc_b.reshape(5, 2))
  first = labels[0]
  tests["mcnemar"] = stats.mcnemar(
    _unpack(per_fold[a][first]["correct"]), _unpack(per_fold[b][first]["correct"]), alpha=alpha
  )
  main = tests["t_5x2cv"] if cv["scheme"] == "5x2" else tests["corrected_t"]
  where = f"these {len(labels)} folds" if cv["scheme"] == "kfold" else "these 5x2 folds"
  est = tests["corrected_t"]  # the mean over every fold, with its corrected interval
  return {
    "a": a,
    "b": b,
    "mean_diff": est.mean_diff,
    "ci_low": est.ci[0],
    "ci_high": est.ci[1],
    **{f"p_{k}": t.p_value for k, t in tests.items()},
    "claim": stats.claim(a, b, main, alpha=alpha, where=where),
  }


def write_reports(
  study_plan: StudyPlan, cv: dict, per_fold: dict, sizes: dict, workdir: Path
) -> dict:
  """results.{md,csv}, comparisons.{md,csv}, the figure and the TensorBoard summaries."""
  labels = list(sizes)
  rows = []
  for learner, accs in per_fold.items():
    values = [accs[f]["accuracy"] for f in labels]
    kind = "baseline" if learner in baselines_lib.BASELINES else "ours"
    rows.append(
      {
        "learner": learner,
        "kind": kind,
        **dict(zip(labels, values, strict=True)),
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)),
        "chosen": _chosen_over_folds([accs[f] for f in labels]) if kind == "baseline" else None,
      }
    )
  data_name = study_plan.data.name
  title = study_plan.report.title
  notes = [
    f"{data_name}: {len(labels)} folds ({cv['scheme']}, seed {cv['seed']}); "
    + (
      "whole subjects per fold, the study's test subjects unused"
      if not data_lib.entry(data_name).image
      else "stratified over the training split, the official test splits unused"
    )
    + f"; on average {np.mean([s[0] for s in sizes.values()]):.0f} training rows "
    f"(incl. validation) and {np.mean([s[1] for s in sizes.values()]):.0f} held-out rows per fold.",
    "Accuracy on each fold's held-out part; mean and standard deviation (ddof 1) over folds.",
    "Ours: each fold's validation is carved from its training part (early stopping); baselines "
    "train on the whole training part.",
  ]
  m, seed = study_plan.ensemble, study_plan.seed
  if m > 1:
    notes.append(f"Ours: a seed ensemble of {m} runs (seeds {seed}..{seed + m - 1}).")
  if any(r.settings.train.refit for r in study_plan.runs):
    notes.append("Ours: refit on the fold's whole training part for the epochs validation chose.")
  if any(baselines_lib.is_tuned(r["learner"]) for r in rows if r["kind"] == "baseline"):
    notes.append(
      "Baselines named <learner> are tuned on each fold's training part alone by "
      f"{baselines_lib.INNER_FOLDS}-fold inner cross-validation over a small grid "
      "(mlp.baselines; HAR: whole subjects), then refitted there; Chosen: the values picked "
      "and on how many folds (every fold's in tuning.md); <learner>_default: untuned."
    )
  columns = [("learner", "Learner"), ("kind", "Kind")] + [(f, f) for f in labels]
  columns += [("mean", "Mean"), ("std", "Std")]
  if any(r["kind"] == "baseline" for r in rows):
    columns.append(("chosen", "Chosen by inner CV"))
  tables.write_table(
    rows,
    columns,
    workdir / "results.csv",
    workdir / "results.md",
    title=f"Cross-validation: {title}",
    notes=notes,
  )
  _write_tuning(per_fold, labels, workdir, title)
  ours = [r["learner"] for r in rows if r["kind"] == "ours"]
  others = [r["learner"] for r in rows if r["kind"] == "baseline"]
  pairs = [(a, b) for a in ours for b in others]
  pairs += [(a, b) for j, a in enumerate(ours) for b in ours[j + 1 :]]
  comparisons = [compare(a, b, per_fold, cv, sizes) for a, b in pairs]
  p_cols = [k for k in (comparisons[0] if comparisons else {}) if k.startswith("p_")]
  headers = {
    "p_corrected_t": "p corrected t",
    "p_wilcoxon": "p Wilcoxon",
    "p_t_5x2cv": "p 5x2cv t",
    "p_f_5x2cv": "p 5x2cv F",
    "p_mcnemar": f"p McNemar ({labels[0]})",
  }
  main_test = "5x2cv t-test" if cv["scheme"] == "5x2" else "corrected resampled t-test"
  tables.write_table(
    comparisons,
    [("a", "A"), ("b", "B"), ("mean_diff", "Acc A - B")]
    + [("ci_low", "CI low"), ("ci_high", "CI high")]
    + [(k, headers[k]) for k in p_cols]
    + [("claim", "What may be claimed")],
    workdir / "comparisons.csv",
    workdir / "comparisons.md",
    title=f"Paired tests: {title}",
    notes=[
      f"Acc A - B: mean accuracy difference over the folds with its {1 - cv['alpha']:.0%} "
      f"confidence interval from the corrected resampled t-test; the claim uses the {main_test}.",
      "Corrected t: Nadeau & Bengio (2003); Wilcoxon signed-rank on the per-fold differences; "
      "5x2cv: Dietterich (1998) t and Alpaydin (1999) F (scheme 5x2 only); McNemar on the "
      f"held-out rows of {labels[0]} alone (one split).",
      "Folds of one data set test these learners on this data set at this training-set size; "
      "they do not make one learner better in general.",
    ],
    formats={k: ".3g" for k in p_cols},
  )
  _figure(rows, labels, workdir / "figures" / "cv_accuracy.png", title)
  for r in rows:
    with tensorboard.SummaryWriter(workdir / "runs" / "cv" / r["learner"]) as w:
      for j, f in enumerate(labels):
        w.scalar("cv/accuracy", r[f], step=j + 1)
      w.scalar("cv/mean_accuracy", r["mean"], step=0)
  return {"rows": rows, "comparisons": comparisons}


def _chosen_over_folds(folds: list[dict]) -> str:
  """The values a tuned baseline's inner cross-validation chose most often over the folds, with
  on how many folds (``C=10 (5/7 folds)``); the untuned say so."""
  if not any(b.get("grid") for b in folds):
    return "untuned"
  texts = [baselines_lib.format_params(b.get("params")) or "untuned" for b in folds]
  counts = {t: texts.count(t) for t in texts}
  top = max(counts, key=lambda t: (counts[t], -texts.index(t)))
  return f"{top} ({counts[top]}/{len(texts)} folds)"


def _write_tuning(per_fold: dict, labels: list[str], workdir: Path, title: str) -> None:
  """tuning.{md,csv}: what each tuned baseline's inner cross-validation chose on each fold."""
  rows = [
    {
      "learner": learner,
      "fold": f,
      "chosen": baselines_lib.format_params(accs[f].get("params")) or "untuned",
      "inner_accuracy": accs[f].get("inner_accuracy"),
      "accuracy": accs[f]["accuracy"],
      "seconds": accs[f].get("seconds"),
      "inner": accs[f].get("inner"),
      "grid": accs[f].get("grid"),
    }
    for learner, accs in per_fold.items()
    if learner in baselines_lib.BASELINES and any(accs[f].get("grid") for f in labels)
    for f in labels
  ]
  if not rows:
    return
  tables.write_table(
    rows,
    [("learner", "Learner"), ("fold", "Fold"), ("chosen", "Chosen by inner CV")]
    + [("inner_accuracy", "Inner CV accuracy"), ("accuracy", "Held-out fold accuracy")]
    + [("seconds", "Fit s (with tuning)"), ("inner", "Inner folds"), ("grid", "Grid")],
    workdir / "tuning.csv",
    workdir / "tuning.md",
    title=f"Cross-validation: {title}: the baselines' tuning",
    notes=[
      "Each tuned baseline's grid point with the best mean accuracy over inner folds of the "
      "fold's training part (never its held-out part), refitted on the whole training part.",
    ],
    formats={"seconds": ".1f"},
  )


def _figure(rows: list[dict], labels: list[str], path: Path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(labels) + 3), 4))
  x = np.arange(1, len(labels) + 1)
  for r in rows:
    style = "-o" if r["kind"] == "ours" else "--s"
    ax.plot(x, [r[f] for f in labels], style, label=f"{r['learner']} ({r['mean']:.4f})", ms=4)
  ax.set_xticks(x, labels, rotation=30 if len(labels) > 7 else 0)
  ax.set_xlabel("fold")
  ax.set_ylabel("accuracy on the held-out fold")
  ax.set_title(f"Cross-validation: {title}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  figures.save_figure(fig, path)
