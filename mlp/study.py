"""Run a study (many training runs) in a workdir: resumable, shareable, evaluated and reported.

The one call an entry point makes: the config is planned (mlp.plan), its runs scheduled as
trials (mlp.schedule) for this process or worker processes (mlp.workers), trained (mlp.trainer)
and saved (mlp.rundir), then tabled (mlp.results). Workdir layout::

    config.json                    the study config, every default filled (configs/base.py)
    study.journal                  the study's runs as Optuna trials (default storage)
    runs/                          TensorBoard logdir (HParams experiment summary at its root)
      <name>/seed<k>/              one run trained here (mlp.rundir: config.json, plan.json, ...)
      <name>/ensemble<j>/          with config.ensemble > 1: a seed ensemble (mlp.ensemble)
    results.csv, results.md        one row per run name (mean ± std over seeds, or ensembles)
    figures/*.png

The runs are trials of an Optuna study: in the workdir's journal by default, or in ``storage``
(a journal path, or ``postgresql://...``) that processes with their own workdirs, on any
machines, share: each run is trained once, by whichever worker claims it. Running the same
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
  defaults,
  ensemble,
  fileio,
  lock,
  plan,
  progress,
  results,
  resume,
  rundir,
  schedule,
  tensorboard,
  trainer,
  workers,
)
from mlp import data as data_lib
from mlp.data import Dataset
from mlp.plan import Run, StudyPlan
from mlp.rundir import run_dir
from mlp.schedule import LOCAL, Storage
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
    models = [run_dir(workdir, Run(name, s, None)) / "model" for s in seeds]
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
          evals[split] = rundir.evaluation(
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
  storage: Storage = LOCAL,
  log: Log = print,
  verbose: bool = False,
) -> list[dict]:
  """Train every run of ``config`` not yet finished in the study; write results and figures.

  The config is planned once, before anything trains (every error in it stops the study here).
  With ``config.workers`` != 1 on CPU the runs are trained in worker processes (mlp.workers),
  which receive the plans. Progress is a bar on a terminal, else periodic lines (mlp.progress);
  ``verbose`` adds a line per epoch of every run.
  """
  workdir = Path(workdir)
  study = plan.study_plan(config)
  lock.check_workdir(workdir)
  data = data_lib.load(study.data, data_dir)  # before creating the workdir: no empty folders
  plans = plan.build(study.runs, data.input_shape, data.num_classes)
  rows = len(data.y_train)
  plan.check_memory(plans, rows, trainer.memory_bytes())
  workdir.mkdir(parents=True, exist_ok=True)
  with lock.hold(workdir, log), resume.noted(workdir):  # one owner per workdir (mlp.lock)
    st = schedule.open_study(study.name, workdir, storage, log)
    fileio.atomic_write_json(workdir / "config.json", defaults.fill(config))  # for the record
    finished, cost = _start(st, study, plans, data, workdir, log)
    pending = len(plans) - len(finished)
    n_workers = workers.count(study.workers, pending)
    weights = {p.id: cost[p.id] for p in plans if p.id not in finished}
    bar = progress.Progress(len(plans), len(finished), log=log, verbose=verbose, weights=weights)
    try:
      if n_workers > 1:
        where = Storage(storage.url, st.study_name)
        job = workers.Job(plans, study.data, data_dir, where, workdir)
        workers.run(job, n_workers, log=bar.line, feed=bar.feed)
      elif pending:
        vectorize = trainer.vectorize_of(study.vectorize)
        ctx = trainer.Context(data, workdir, bar.line, bar.event, vectorize)
        schedule.work(st, plans, ctx)
    finally:
      bar.close()
    trials = st.get_trials(deepcopy=False)
    failed = schedule.failures(trials, study.runs)
    done = schedule.results(trials, study.runs)
    if failed or len(done) < len(plans):
      raise StudyError(
        f"{len(plans) - len(done)} of {len(plans)} runs did not finish ("
        + ", ".join(f"{k}: {v}" for k, v in failed.items())
        + "); finished runs are saved in the study: fix the error and run the same command again"
      )
    return _report(study, done, data, workdir, st, log)


def _start(st, study: StudyPlan, plans, data: Dataset, workdir: Path, log: Log) -> tuple:
  """Check the workdir and storage against the plans, enqueue the runs left to train (most
  expensive first); returns ({run id: result} of the finished runs, {run id: estimated cost})."""
  for note in [*data.notes, *plan.batch_notes(plans, len(data.y_train))]:
    log(note)
  every = [plan.hparams(r) for r in study.runs]
  grid = [h for r, h in zip(study.runs, every, strict=True) if r.name not in study.extra_runs]
  tensorboard.write_hparams_config(
    workdir / "runs",
    tensorboard.domains(every),
    rundir.metric_tags(data.tests),
    swept=tensorboard.varying(grid) or tensorboard.varying(every),  # the grid's axes first
  )
  try:
    schedule.adopt(st, study.runs, workdir, log)
    trials = st.get_trials(deepcopy=False)
    schedule.check_config(trials, study.runs, st.study_name)
  except schedule.ScheduleError as e:
    raise StudyError(str(e)) from None
  schedule.save_dataset_info(st, data)
  finished = schedule.results(trials, study.runs)
  if finished:
    log(f"resuming study {st.study_name!r}: {len(finished)} of {len(plans)} runs already finished")
  todo = schedule.to_enqueue(plans, trials, retry_errors=True)
  rows = len(data.y_train)
  cost = {p.id: workers.estimated_seconds(p, rows) for p in plans}
  schedule.enqueue(st, sorted(todo, key=lambda p: -cost[p.id]), plans)  # most expensive first
  return finished, cost


def _report(study: StudyPlan, done: dict, data, workdir: Path, st, log: Log) -> list[dict]:
  ordered = [done[r.id] for r in study.runs if r.id in done]
  m = study.ensemble
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
  results.write_results(study, ordered, data, workdir, ensembles=ensembles)
  best = results.best_run(ordered)
  if best is not None:  # the study's answer in one line: chosen on validation, scored on test
    trained = {"train": best["train"]} if best.get("train") else {}  # (report.eval_train)
    tests = "; ".join(
      f"{split} top-1..{len(ev['topk'])} " + " ".join(f"{a:.4f}" for a in ev["topk"])
      for split, ev in {**trained, **best["tests"]}.items()
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
  storage: Storage = LOCAL,
  log: Log = print,
) -> list[dict]:
  """Write results.md/csv and the figures from the study in storage alone (no data, no models)."""
  workdir = Path(workdir)
  study = plan.study_plan(config)
  if not storage.url and not (workdir / JOURNAL_NAME).exists():
    raise StudyError(f"no study in {workdir} (no {JOURNAL_NAME}): give --storage, or run the study")
  workdir.mkdir(parents=True, exist_ok=True)
  st = schedule.open_study(study.name, workdir, storage, log)
  trials = st.get_trials(deepcopy=False)
  try:
    schedule.check_config(trials, study.runs, st.study_name)
  except schedule.ScheduleError as e:
    raise StudyError(str(e)) from None
  info = schedule.dataset_info(st)
  done = schedule.results(trials, study.runs)
  if info is None or not done:
    raise StudyError(f"study {st.study_name!r} has no finished runs yet")
  if len(done) < len(study.runs):
    log(f"{len(done)} of {len(study.runs)} runs finished so far: the table shows those")
  return _report(study, done, SimpleNamespace(**info), workdir, st, log)
