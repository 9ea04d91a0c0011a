"""Run a study (many training runs) in a workdir: resumable, shareable, evaluated and reported.

Workdir layout::

    config.json                    the study config
    study.journal                  the study's runs as Optuna trials (default storage, mlp.engine)
    runs/                          TensorBoard logdir (HParams experiment summary at its root)
      <name>/seed<k>/              one run trained here (mlp.runner)
      <name>/ensemble<j>/          with config.ensemble > 1: a seed ensemble (mlp.ensemble)
    results.csv, results.md        one row per run name (mean ± std over seeds, or ensembles)
    figures/*.png

The runs are trials of an Optuna study (mlp.engine): in the workdir's journal by default, or in
``storage`` (a journal path, or ``postgresql://...``) that processes with their own workdirs, on
any machines, share: each run is trained once, by whichever worker claims it. Running the same
command again resumes: finished runs are skipped and never overwritten, and interrupted ones are
trained again. ``report_only`` writes the table and figures from the storage alone.
"""

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ml_collections
import numpy as np

from mlp import (
  checkpoint,
  engine,
  ensemble,
  fileio,
  lock,
  progress,
  results,
  runner,
  sweep,
  tensorboard,
  workers,
)
from mlp import data as data_lib
from mlp.data import Dataset
from mlp.runner import run_dir
from mlp.search.storage import JOURNAL_NAME

Log = Callable[[str], None]


class StudyError(Exception):
  """The workdir and the config disagree, or the config is malformed."""


def finish_ensembles(
  results: list[dict], m: int, data: Dataset, workdir: Path, *, stored: dict, log: Log
) -> list[dict]:
  """Evaluate and save the seed ensembles of size ``m`` of finished runs (mlp.ensemble).

  An ensemble whose members were not all trained in this workdir (a shared study) is taken from
  ``stored`` (ensemble results saved in the study by a machine that had them), else left out.

  Recomputed from the members' saved models each time (cheap next to training, never stale).
  With ``train.refit`` the saved members are refit models, which trained on the validation rows:
  the ensemble's "val" is then the mean of its members' selection-model values.
  """
  from mlp import inference

  out = []
  for name, j, members in ensemble.groups(results, m):
    folder = ensemble.folder(workdir, name, j)
    seeds = [r["seed"] for r in members]
    models = [run_dir(workdir, sweep.Run(name, s, None)) / "model" for s in seeds]
    if not all(checkpoint.exists(p) for p in models):
      if f"{name}/ensemble{j}" in stored:
        out.append(stored[f"{name}/ensemble{j}"])
      else:
        log(f"{name}/ensemble{j}: members trained elsewhere; run the study there to evaluate it")
      continue
    diverged = any(r["diverged"] for r in members)
    refit = any("refit" in r for r in members)
    evals: dict[str, Any] = {}
    if not diverged:
      ensemble.write_members(folder, models)
      lm = inference.load_model(folder)
      splits = {} if refit else {"val": (data.x_val, data.y_val)}
      for split, (x, y) in {**splits, **data.tests}.items():
        if len(y):
          title = f"{name} ensemble of seeds {', '.join(map(str, seeds))} on {split}"
          evals[split] = runner.evaluation(
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
    fileio.atomic_write_json(folder / "result.json", result)
    out.append(result)
  return out


def run_study(
  config: ml_collections.ConfigDict,
  workdir: str | Path,
  *,
  data_dir: str | None = None,
  log: Log = print,
  data: Dataset | None = None,
  storage: str | None = None,
  study_name: str | None = None,
  verbose: bool = False,
) -> list[dict]:
  """Train every run of ``config`` not yet finished in the study; write results and figures.

  With ``config.workers`` != 1 on CPU the runs are trained in worker processes (mlp.workers);
  a ``data`` object given here keeps training in this process (workers load from ``data_dir``).
  Progress is a bar on a terminal, else periodic lines (mlp.progress); ``verbose`` adds a line
  per epoch of every run.
  """
  workdir = Path(workdir)
  runs = sweep.expand(config)
  data_given = data
  if data is None:
    data = data_lib.load(config.data, data_dir)  # before creating the workdir: no empty folders
  sweep.group_by_shape(runs, data.input_shape, data.num_classes)  # bad values fail before training
  workdir.mkdir(parents=True, exist_ok=True)
  with lock.hold(workdir, log):  # one owner per workdir (a second launcher exits, mlp.lock)
    st = engine.open_study(config, workdir, storage=storage, name=study_name, log=log)
    args = (config, workdir, runs, data, data_given, data_dir, log, st, storage, verbose)
    return _run_study(*args)


def _run_study(config, workdir: Path, runs, data, data_given, data_dir, log: Log, st, url, verbose):
  for note in data.notes:
    log(note)
  fileio.atomic_write_json(workdir / "config.json", config.to_dict())
  tensorboard.write_hparams_config(
    workdir / "runs",
    tensorboard.domains([sweep.hparams_of(r) for r in runs]),
    runner.metric_tags(data.tests),
  )
  try:
    engine.adopt(st, runs, workdir, log)
    trials = st.get_trials(deepcopy=False)
    engine.check_config(trials, runs, st.study_name)
  except engine.EngineError as e:
    raise StudyError(str(e)) from None
  engine.save_dataset_info(st, data)
  finished = engine.results(trials, runs)
  if finished:
    log(f"resuming study {st.study_name!r}: {len(finished)} of {len(runs)} runs already finished")
  todo = engine.to_enqueue(runs, trials, retry_errors=True)
  rows = len(data.y_train)
  cost = {
    r.id: workers.estimated_seconds(r, rows, data.input_shape, data.num_classes) for r in runs
  }
  engine.enqueue(st, sorted(todo, key=lambda r: -cost[r.id]))  # most expensive first
  pending = len(runs) - len(finished)
  n_workers = workers.count(config, pending) if data_given is None else 1
  bar = progress.Progress(
    len(runs),
    len(finished),
    log=log,
    verbose=verbose,
    weights={r.id: cost[r.id] for r in runs if r.id not in finished},
  )
  try:
    if n_workers > 1:
      workers.run(
        workdir,
        n_workers,
        data_dir=data_dir,
        storage=url,
        study_name=st.study_name,
        log=bar.line,
        feed=bar.feed,
      )
    elif pending:
      vectorize = runner.vectorize_of(config)
      engine.work(st, runs, data, workdir, vectorize=vectorize, log=bar.line, events=bar.event)
  finally:
    bar.close()
  trials = st.get_trials(deepcopy=False)
  failed = engine.failures(trials, runs)
  done = engine.results(trials, runs)
  if failed or len(done) < len(runs):
    raise StudyError(
      f"{len(runs) - len(done)} of {len(runs)} runs did not finish ("
      + ", ".join(f"{k}: {v}" for k, v in failed.items())
      + "); finished runs are saved in the study: fix the error and run the same command again"
    )
  return _report(config, runs, done, data, workdir, st, log)


def _report(config, runs, done: dict, data, workdir: Path, st, log: Log) -> list[dict]:
  ordered = [done[r.id] for r in runs if r.id in done]
  m = ensemble.size_of(config)
  ensembles = None
  if m > 1:
    stored = st.user_attrs.get("ensembles", {})
    if isinstance(data, Dataset):
      ensembles = finish_ensembles(ordered, m, data, workdir, stored=stored, log=log)
      mine = {e["run"]: e for e in ensembles}
      if any(stored.get(k) != v for k, v in mine.items()):
        st.set_user_attr("ensembles", {**stored, **fileio.to_jsonable(mine)})
    else:
      ensembles = [
        e for name, e in stored.items() if name.split("/")[0] in {r["name"] for r in ordered}
      ]
  results.write_results(config, ordered, data, workdir, ensembles=ensembles)
  best = results.best_run(ordered)
  if best is not None:  # the study's answer in one line: chosen on validation, scored on test
    tests = "; ".join(
      f"{split} top-1..{len(ev['topk'])} " + " ".join(f"{a:.4f}" for a in ev["topk"])
      for split, ev in best["tests"].items()
    )
    log(
      f"best run by validation accuracy: {best['run']} (val top-1 {best['val']['topk'][0]:.4f})"
      + (f"; {tests}" if tests else "")
    )
  log(
    f"results: {workdir / 'results.md'}; figures: {workdir / 'figures'}; TensorBoard: "
    f"tensorboard --logdir {workdir / 'runs'}"
  )
  return ordered


def report_only(
  config: ml_collections.ConfigDict,
  workdir: str | Path,
  *,
  storage: str | None = None,
  study_name: str | None = None,
  log: Log = print,
) -> list[dict]:
  """Write results.md/csv and the figures from the study in storage alone (no data, no models)."""
  workdir = Path(workdir)
  runs = sweep.expand(config)
  if not storage and not (workdir / JOURNAL_NAME).exists():
    raise StudyError(f"no study in {workdir} (no {JOURNAL_NAME}): give --storage, or run the study")
  workdir.mkdir(parents=True, exist_ok=True)
  st = engine.open_study(config, workdir, storage=storage, name=study_name, log=log)
  trials = st.get_trials(deepcopy=False)
  try:
    engine.check_config(trials, runs, st.study_name)
  except engine.EngineError as e:
    raise StudyError(str(e)) from None
  info = engine.dataset_info(st)
  done = engine.results(trials, runs)
  if info is None or not done:
    raise StudyError(f"study {st.study_name!r} has no finished runs yet")
  if len(done) < len(runs):
    log(f"{len(done)} of {len(runs)} runs finished so far: the table shows those")
  return _report(config, runs, done, SimpleNamespace(**info), workdir, st, log)
