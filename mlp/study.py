"""Run a study (many training runs) in a workdir: resumable, logged, evaluated and reported.

Workdir layout::

    config.json                    the study config
    runs/                          TensorBoard logdir (HParams experiment summary at its root)
      <name>/seed<k>/              one run: events, metrics.jsonl, model.{npz,json}, history.png,
                                   eval/<split>/ reports, result.json (written last = finished)
      <name>/ensemble<j>/          with config.ensemble > 1: a seed ensemble (mlp.ensemble)
    results.csv, results.md        one row per run name (mean ± std over seeds, or ensembles)
    figures/*.png

Re-running on the same workdir resumes: finished runs (result.json present) are skipped and never
overwritten; a run folder without result.json (interrupted) is removed and that run trained again.
"""

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from mlp import (
  checkpoint,
  ensemble,
  lock,
  metrics,
  report,
  sweep,
  tensorboard,
  train,
  transfer,
  workers,
)
from mlp import data as data_lib
from mlp.data import Dataset

Log = Callable[[str], None]
METRIC_TAGS = ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate")


class StudyError(Exception):
  """The workdir and the config disagree, or the config is malformed."""


def vectorize_of(config: ml_collections.ConfigDict) -> bool:
  """``config.vectorize``, or by default: vmapped populations on accelerators, one by one on CPU."""
  vectorize = config.get("vectorize")
  return jax.default_backend() != "cpu" if vectorize is None else bool(vectorize)


def run_dir(workdir: Path, run: sweep.Run) -> Path:
  return Path(workdir) / "runs" / run.name / f"seed{run.seed}"


# How runs are executed or combined, not what each run computes.
EXECUTION_FIELDS = ("workers", "vectorize", "ensemble")


def _run_config_json(run: sweep.Run) -> dict:
  cfg = run.config.to_dict()
  cfg.get("report", {}).pop("baselines", None)  # compared after the study, not part of a run
  return checkpoint.to_jsonable({k: v for k, v in cfg.items() if k not in EXECUTION_FIELDS})


def _load_finished(workdir: Path, run: sweep.Run) -> dict | None:
  """The saved result of a finished run, checking it was trained with the same config."""
  rdir = run_dir(workdir, run)
  path = rdir / "result.json"
  if not path.exists():
    if rdir.exists():
      shutil.rmtree(rdir)  # interrupted: start this run again from scratch
    return None
  result = json.loads(path.read_text())
  saved, current = result.get("config"), _run_config_json(run)
  if isinstance(saved, dict):  # saved before some fields existed: their implied values
    saved = sweep.with_added_fields(saved, current)
    if isinstance(saved.get("data"), dict):
      saved["data"] = data_lib.with_added_fields(saved["data"])
  if saved != current:
    raise StudyError(
      f"{path} was trained with a different config than the current one for run {run.id}; "
      "finished runs are never overwritten: use a new --workdir, or delete that run's folder"
    )
  return result


def train_group(
  group: sweep.Group,
  data: Dataset,
  workdir: Path,
  *,
  vectorize: bool,
  log: Log,
  done: int,
  total: int,
  on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
  """Train the runs of one shape group (as one population, or one by one) and save each.

  ``done`` runs of ``total`` are finished before this group (for the progress prefix).
  ``on_result(result)`` is called as soon as each run is saved.
  """
  chunks = [group.runs] if vectorize else [[r] for r in group.runs]
  results = []
  for chunk in chunks:
    first, last = done + len(results) + 1, done + len(results) + len(chunk)
    progress = f"[{first}/{total}]" if first == last else f"[{first}-{last}/{total}]"
    for result in _train_chunk(group, chunk, data, workdir, log=log, progress=progress):
      results.append(result)
      if on_result is not None:
        on_result(result)
  return results


def _train_chunk(group, runs, data, workdir, *, log, progress) -> list[dict]:
  sub = group._replace(runs=runs)
  init = None
  if sub.init_from:
    kind = str(data.preprocess.get("kind", "raw"))
    init = transfer.initializer(sub.init_from, sub.spec.net, data.class_names, kind)
    log(f"{progress} {transfer.describe(sub.init_from, data.class_names)}")
  writers, logs = [], []
  for run in runs:
    rdir = run_dir(workdir, run)
    rdir.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_json(rdir / "config.json", _run_config_json(run))
    w = tensorboard.SummaryWriter(rdir)
    w.hparams(sweep.hparams_of(run), trial_id=run.id)
    writers.append(w)
    logs.append(open(rdir / "metrics.jsonl", "w"))  # noqa: SIM115 (closed below)
  start = time.perf_counter()

  def on_epoch(epoch: int, members: np.ndarray, m: dict[str, np.ndarray]) -> None:
    for j, i in enumerate(members):
      row = {k: float(v[j]) for k, v in m.items()}
      writers[i].scalars(
        {
          "loss/train": row["train_loss"],
          "loss/val": row["val_loss"],
          "accuracy/train": row["train_acc"],
          "accuracy/val": row["val_acc"],
          "learning_rate": row["lr"],
        },
        step=epoch,
      )
      logs[i].write(json.dumps({"epoch": epoch, **row}) + "\n")
      logs[i].flush()
      log(
        f"{progress} {runs[i].id} epoch {epoch}/{group.max_epochs}  "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
        f"({time.perf_counter() - start:.1f}s)"
      )

  try:
    fit = train.fit(
      sub.spec,
      sub.hyper(),
      sub.keys(),
      (data.x_train, data.y_train, data.x_val, data.y_val),
      max_epochs=sub.max_epochs,
      stopping=sub.stopping,
      vectorize=len(runs) > 1,
      on_epoch=on_epoch,
      init=init,
    )
  except BaseException:
    for w in writers:
      w.close(status="failure")
    raise
  finally:
    for f in logs:
      f.close()
  refits = _refit(sub, runs, fit, data, log=log, progress=progress, init=init)
  results = []
  for i, run in enumerate(runs):
    params, state = jax.tree.map(lambda a, i=i: a[i], (fit.params, fit.state))
    result = _finish_run(run, sub.spec, params, state, fit, i, data, workdir, refit=refits.get(i))
    writers[i].close(status="failure" if result["diverged"] else "success")
    log(
      f"{progress} {run.id} done: {result['epochs']} epochs ({result['stop_reason']}), "
      + ", ".join(f"{k} top-1 {v['topk'][0]:.4f}" for k, v in result["tests"].items())
      + f", {result['seconds']:.1f}s"
    )
    results.append(result)
  return results


def _refit(group: sweep.Group, runs, fit: train.FitResult, data: Dataset, *, log, progress, init):
  """{member: (params, state, epochs, seconds)} of the runs with ``train.refit``, each trained
  again on train + val for the epochs validation chose (:func:`train.chosen_epochs`)."""
  which = [i for i, r in enumerate(runs) if r.config.train.get("refit", False)]
  if not which:
    return {}
  epochs = [train.chosen_epochs(fit.history[i], group.stopping, fit.epochs[i]) for i in which]
  log(
    f"{progress} refit on train + val ({len(data.y_train) + len(data.y_val)} rows): "
    + ", ".join(f"{runs[i].id} {n} epochs" for i, n in zip(which, epochs, strict=True))
  )
  out = train.refit(
    group.spec,
    jax.tree.map(lambda h: np.asarray(h)[which], group.hyper()),
    group.keys()[np.asarray(which)],
    (data.x_train, data.y_train, data.x_val, data.y_val),
    epochs,
    init=init,
  )
  return {
    i: (*jax.tree.map(lambda a, j=j: a[j], (out.params, out.state)), epochs[j], out.seconds[j])
    for j, i in enumerate(which)
  }


def _evaluation(probs: np.ndarray, y: np.ndarray, data: Dataset, out: Path, title: str) -> dict:
  """Top-k, loss and confusion matrix of ``probs`` on labels ``y``; the report goes to ``out``."""
  report.evaluation_report(out, y, probs, data.class_names, title=f"{title} ({data.name})")
  return {
    "topk": metrics.topk_accuracy(probs, y).tolist(),
    "loss": float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-30)))),
    "confusion": metrics.confusion_matrix(y, probs.argmax(1), data.num_classes).tolist(),
  }


def finish_ensembles(results: list[dict], m: int, data: Dataset, workdir: Path) -> list[dict]:
  """Evaluate and save the seed ensembles of size ``m`` of finished runs (mlp.ensemble).

  Recomputed from the members' saved models each time (cheap next to training, never stale).
  With ``train.refit`` the saved members are refit models, which trained on the validation rows:
  the ensemble's "val" is then the mean of its members' selection-model values.
  """
  from mlp import inference

  out = []
  for name, j, members in ensemble.groups(results, m):
    folder = ensemble.folder(workdir, name, j)
    seeds = [r["seed"] for r in members]
    diverged = any(r["diverged"] for r in members)
    refit = any("refit" in r for r in members)
    evals: dict[str, Any] = {}
    if not diverged:
      ensemble.write_members(
        folder, [run_dir(workdir, sweep.Run(name, s, None)) / "model" for s in seeds]
      )
      lm = inference.load_model(folder)
      splits = {} if refit else {"val": (data.x_val, data.y_val)}
      for split, (x, y) in {**splits, **data.tests}.items():
        if len(y):
          title = f"{name} ensemble of seeds {', '.join(map(str, seeds))} on {split}"
          evals[split] = _evaluation(
            inference.probabilities(lm, x), y, data, folder / "eval" / split, title
          )
      if refit:
        evals["val"] = {
          "topk": np.mean([r["val"]["topk"] for r in members], axis=0).tolist(),
          "loss": float(np.mean([r["val"]["loss"] for r in members])),
        }
    result = {
      "run": f"{name}/ensemble{j}",
      "name": name,
      "seed": seeds[0],
      "seeds": seeds,
      "ensemble": j,
      "config": members[0]["config"],
      "epochs": float(np.mean([r["epochs"] for r in members])),
      "diverged": diverged,
      "seconds": float(sum(r["seconds"] for r in members)),
      "val": evals.get("val"),
      "tests": {k: v for k, v in evals.items() if k != "val"},
    }
    checkpoint.atomic_write_json(folder / "result.json", result)
    out.append(result)
  return out


def _finish_run(
  run, spec, params, state, fit: train.FitResult, i: int, data: Dataset, workdir, *, refit=None
) -> dict:
  """Evaluate a trained run on val and test splits, save model, reports and result.json.

  ``refit`` = (params, state, epochs, seconds) of the run trained again on train + val: the
  tests, the saved model and the reports are then the refit model's, while "val" stays the
  selection model's (the refit model has trained on the validation rows).
  """
  rdir = run_dir(workdir, run)
  net = spec.net
  hyper = sweep.hyper_of(run.config, net.input_shape, net.num_classes)
  diverged = fit.stop_reason[i] == "diverged" or not all(
    np.all(np.isfinite(a)) for a in jax.tree.leaves((params, state))
  )
  splits = {"val": (data.x_val, data.y_val), **data.tests}
  if run.config.get("report", {}).get("eval_train", False):
    splits = {"train": (data.x_train, data.y_train), **splits}
  evals: dict[str, Any] = {}
  selection = (params, state)
  if refit is not None:
    params, state = refit[0], refit[1]
    diverged = diverged or not all(np.all(np.isfinite(a)) for a in jax.tree.leaves(refit[:2]))
  for split, (x, y) in splits.items():
    if diverged or len(y) == 0:
      continue
    p, s = selection if split == "val" else (params, state)
    probs = np.exp(train.log_probs(spec, p, s, hyper, x))
    evals[split] = _evaluation(probs, y, data, rdir / "eval" / split, f"{run.id} on {split}")
  if not diverged:
    checkpoint.save(
      rdir / "model",
      net,
      params,
      state,
      hyper=hyper.layers,
      config=_run_config_json(run),
      meta={
        "dataset": data.name,
        "class_names": list(data.class_names),
        "input_shape": list(data.input_shape),
        "preprocess": str(data.preprocess["kind"]),
        "run": run.id,
      },
      arrays={f"preprocess/{k}": v for k, v in data.preprocess.items()},
    )
  report.plot_training_history(
    fit.history[i], rdir / "history.png", title=f"{run.id} ({data.name})"
  )
  result = {
    "run": run.id,
    "name": run.name,
    "seed": run.seed,
    "config": _run_config_json(run),
    "hparams": checkpoint.to_jsonable(sweep.hparams_of(run)),
    "epochs": int(fit.epochs[i]),
    "stop_reason": fit.stop_reason[i],
    "diverged": bool(diverged),
    "seconds": float(fit.seconds[i]),
    "history": fit.history[i],
    "val": evals.get("val"),
    **({"train": evals["train"]} if "train" in evals else {}),
    "tests": {k: v for k, v in evals.items() if k not in ("val", "train")},
  }
  if refit is not None:
    result["refit"] = {"epochs": int(refit[2]), "seconds": float(refit[3])}
  checkpoint.atomic_write_json(rdir / "result.json", result)
  return result


def run_study(
  config: ml_collections.ConfigDict,
  workdir: str | Path,
  *,
  data_dir: str | None = None,
  log: Log = print,
  data: Dataset | None = None,
) -> list[dict]:
  """Train every run of ``config`` not yet finished in ``workdir``; write results and figures.

  With ``config.workers`` != 1 on CPU the runs are trained in worker processes (mlp.workers);
  a ``data`` object given here keeps training in this process (workers load from ``data_dir``).
  """
  workdir = Path(workdir)
  runs = sweep.expand(config)
  m = ensemble.size_of(config)
  data_given = data
  if data is None:
    data = data_lib.load(config.data, data_dir)  # before creating the workdir: no empty folders
  workdir.mkdir(parents=True, exist_ok=True)
  with lock.hold(workdir, log):  # one owner per workdir (a second launcher exits, mlp.lock)
    return _run_study(config, workdir, runs, data, data_given, data_dir, log, m)


def _run_study(config, workdir: Path, runs, data, data_given, data_dir, log: Log, m: int) -> list:
  for note in data.notes:
    log(note)
  sweep.group_by_shape(runs, data.input_shape, data.num_classes)  # bad values fail before training
  checkpoint.atomic_write_json(workdir / "config.json", config.to_dict())
  hp = [sweep.hparams_of(r) for r in runs]
  tensorboard.write_hparams_config(
    workdir / "runs",
    {k: sorted({tensorboard.hparam_value(h[k]) for h in hp}) for k in hp[0]},
    list(METRIC_TAGS),
  )
  results: dict[str, dict] = {}
  pending = []
  for run in runs:
    done = _load_finished(workdir, run)
    if done is None:
      pending.append(run)
    else:
      results[run.id] = done
  if results:
    log(f"resuming {workdir}: {len(results)} of {len(runs)} runs already finished, skipped")
  n_workers = workers.count(config, len(pending)) if data_given is None else 1
  if n_workers > 1:
    workers.run(workdir, pending, n_workers, data=data, data_dir=data_dir, log=log)
    for run in pending:
      result = _load_finished(workdir, run)
      if result is None:
        raise StudyError(f"run {run.id} did not finish in a worker process; run again to resume")
      results[run.id] = result
  else:
    vectorize = vectorize_of(config)
    for group in sweep.group_by_shape(pending, data.input_shape, data.num_classes):
      for r in train_group(
        group, data, workdir, vectorize=vectorize, log=log, done=len(results), total=len(runs)
      ):
        results[r["run"]] = r
  ordered = [results[r.id] for r in runs]
  ensembles = finish_ensembles(ordered, m, data, workdir) if m > 1 else None
  write_results(config, ordered, data, workdir, ensembles=ensembles)
  log(f"results: {workdir / 'results.md'}; figures: {workdir / 'figures'}")
  return ordered


# ------------------------------------------------------------------------------- reporting


def _mean_std(values: list[float], digits: int = 4) -> Any:
  if len(values) == 1:
    return values[0]
  return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def summary_rows(config: ml_collections.ConfigDict, results: list[dict]) -> list[dict]:
  """One row per run name: the configured columns, epochs and top-k on the main test split."""
  split = config.report.test_split
  k = int(config.report.topk)
  by_name: dict[str, list[dict]] = {}
  for r in results:
    by_name.setdefault(r["name"], []).append(r)
  rows = []
  for name, rs in by_name.items():
    row: dict[str, Any] = {"run": name}
    for spec in config.report.columns:
      header, path = spec.split("=")
      value = sweep.lookup(rs[0]["config"], path)
      row[header] = sweep.fmt(value)
    epochs = [r["epochs"] for r in rs]
    row["Epoch"] = epochs[0] if len(epochs) == 1 else _mean_std([float(e) for e in epochs], 1)
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
  config: ml_collections.ConfigDict,
  results: list[dict],
  data: Dataset,
  workdir: Path,
  *,
  ensembles: list[dict] | None = None,
) -> None:
  """results.csv / results.md and the study's figures; with ``ensembles`` the table's rows and
  the best run are the ensembles' (the figures stay the first seed's runs)."""
  workdir = Path(workdir)
  rows = summary_rows(config, ensembles or results)
  k = int(config.report.topk)
  columns = [("run", "Run")]
  columns += [(c.split("=")[0], c.split("=")[0]) for c in config.report.columns]
  columns += [("Epoch", "Epoch")] + [(f"Top-{j + 1}", f"Top-{j + 1}") for j in range(k)]
  columns += [("Status", "Status"), ("seeds", "Seeds")]
  split = config.report.test_split
  notes = list(data.notes) + [
    f"Top-k accuracies on the {split!r} split; Epoch = epochs trained "
    f"(early stopping: {config.train.early_stopping})."
  ]
  best = best_run(ensembles or results, exclude=tuple(config.get("extra_runs", {}).keys()))
  if best is not None:
    notes.append(
      f"Best run by validation accuracy: {best['name']} (val top-1 {best['val']['topk'][0]:.4f})."
    )
  if ensembles:
    m = ensemble.size_of(config)
    notes.append(
      f"Each row: seed ensembles of {m} runs (probabilities averaged, mlp.ensemble); values are "
      + (
        f"mean ± std over {int(config.seeds) // m} ensembles."
        if int(config.seeds) > m
        else "one ensemble's."
      )
      + (
        " A refit ensemble's val: its members' mean." if any("refit" in r for r in results) else ""
      )
    )
  elif int(config.seeds) > 1:
    notes.append(f"Values are mean ± std over {config.seeds} seeds.")
  report.write_table(
    rows,
    columns,
    workdir / "results.csv",
    workdir / "results.md",
    title=config.report.title,
    notes=notes,
  )
  _figures(config, results, data, workdir / "figures", best)


def _figures(config, results: list[dict], data: Dataset, out: Path, best: dict | None) -> None:
  seed0 = [r for r in results if r["seed"] == int(config.seed)]
  split = config.report.test_split
  curves = {r["name"]: r["history"] for r in seed0}
  group_paths = list(config.report.figure_groups)
  groups: dict[str, list[dict]] = {}
  for r in seed0:
    if r["name"] in config.get("extra_runs", {}):
      continue
    key = ", ".join(
      f"{p.split('.')[-1]}={sweep.fmt(sweep.lookup(r['config'], p))}" for p in group_paths
    )
    groups.setdefault(key, []).append(r)
  for n, (key, rs) in enumerate(groups.items(), 1):
    report.plot_loss_curves(
      {r["name"]: curves[r["name"]] for r in rs},
      out / f"loss_curves_{n}.png",
      title=f"Train vs validation loss ({key})" if key else "Train vs validation loss",
      ncols=min(4, len(rs)),
    )
  cms = {
    r["name"]: np.asarray(r["tests"][split]["confusion"]) for r in seed0 if split in r["tests"]
  }
  if cms:
    report.plot_confusion_grid(
      cms, data.class_names, out / "confusion_matrices.png", title=f"Confusion matrices ({split})"
    )
  compare = config.report.get("compare_with_best")
  other = next((r for r in seed0 if r["name"] == compare), None) if compare else None
  if best is not None and other is not None:
    pair = [best, other]
    report.plot_loss_curves(
      {f"best: {r['name']}" if r is best else r["name"]: curves[r["name"]] for r in pair},
      out / f"best_vs_{compare}_loss.png",
      title=f"Best model vs best with {compare}",
      ncols=2,
    )
    pair_cms = {r["name"]: cms[r["name"]] for r in pair if r["name"] in cms}
    if pair_cms:
      report.plot_confusion_grid(
        pair_cms,
        data.class_names,
        out / f"best_vs_{compare}_confusion.png",
        title=f"Best model vs best with {compare} ({split})",
        ncols=2,
      )
