"""Train and save runs, for studies and searches alike: one shape group at a time.

A run's folder (``<workdir>/runs/<name>/seed<k>/``) holds its TensorBoard events, metrics.jsonl,
model.{npz,json}, history.png, eval/<split>/ reports and result.json, written last: a run folder
without result.json is an interrupted run, removed when the run is trained again.
"""

import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from mlp import (
  checkpoint,
  figures,
  fileio,
  metrics,
  progress,
  report,
  sweep,
  tensorboard,
  train,
  transfer,
)
from mlp import data as data_lib
from mlp.data import Dataset

Log = Callable[[str], None]

TRAIN_LOG = "train.log"  # a run's epoch and result lines, whatever the console shows
CURVE_TAGS = ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate")


def metric_tags(test_splits: Iterable[str]) -> list[str]:
  """The HParams dashboard's metric columns: what a run ends with (:func:`final_scalars`)."""
  tests = [f"test/{s}/{m}" for s in test_splits for m in ("top1", "loss")]
  return ["accuracy/val_best", "epochs", *tests, "loss/val", "accuracy/val"]


def final_scalars(result: dict) -> dict[str, float]:
  """A finished run's scalars: best validation accuracy, stopping epoch, test top-1 and loss."""
  out = {"accuracy/val_best": max(result["history"]["val_acc"], default=float("nan"))}
  out["epochs"] = float(result["epochs"])
  for split, ev in result["tests"].items():
    out[f"test/{split}/top1"] = float(ev["topk"][0])
    out[f"test/{split}/loss"] = float(ev.get("loss", float("nan")))
  return out


def vectorize_of(config: ml_collections.ConfigDict) -> bool:
  """``config.vectorize``, or by default: vmapped populations on accelerators, one by one on CPU."""
  vectorize = config.get("vectorize")
  return jax.default_backend() != "cpu" if vectorize is None else bool(vectorize)


def run_dir(workdir: Path, run: sweep.Run) -> Path:
  return Path(workdir) / "runs" / run.name / f"seed{run.seed}"


# How runs are executed or combined, not what each run computes.
EXECUTION_FIELDS = ("workers", "vectorize", "ensemble")


def run_config_json(run: sweep.Run) -> dict:
  cfg = run.config.to_dict()
  cfg.get("report", {}).pop("baselines", None)  # compared after the study, not part of a run
  return fileio.to_jsonable({k: v for k, v in cfg.items() if k not in EXECUTION_FIELDS})


def objective(result: dict) -> float:
  """A run's value in a study or search: its validation accuracy (diverged: 0, still a result)."""
  val = result.get("val") or {}
  return float(val["topk"][0]) if val else 0.0


def same_config(result: dict, run: sweep.Run) -> bool:
  """Whether a saved result (result.json, or a trial's) was trained with ``run``'s config."""
  saved, current = result.get("config"), run_config_json(run)
  if isinstance(saved, dict):  # saved before some fields existed: their implied values
    saved = sweep.with_added_fields(saved, current)
    if isinstance(saved.get("data"), dict):
      saved["data"] = data_lib.with_added_fields(saved["data"])
  return saved == current


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
  prune: Callable[[sweep.Run, int, dict[str, float]], bool] | None = None,
  events: Callable[[dict], None] | None = None,
) -> list[dict]:
  """Train the runs of one shape group (as one population, or one by one) and save each.

  ``done`` runs of ``total`` are finished before this group (for the progress prefix).
  ``on_result(result)`` is called as soon as each run is saved. ``prune(run, epoch, metrics)``,
  asked after every epoch of every run, stops the run there when it says so (a search's pruner).
  Each epoch and each finished run is an event for ``events`` (mlp.progress), or without it a
  line for ``log``.
  """
  chunks = [group.runs] if vectorize else [[r] for r in group.runs]
  results = []
  for chunk in chunks:
    first, last = done + len(results) + 1, done + len(results) + len(chunk)
    progress_prefix = f"[{first}/{total}]" if first == last else f"[{first}-{last}/{total}]"
    for result in _train_chunk(
      group, chunk, data, workdir, log=log, prefix=progress_prefix, prune=prune, events=events
    ):
      results.append(result)
      if on_result is not None:
        on_result(result)
  return results


def _train_chunk(group, runs, data, workdir, *, log, prefix, prune=None, events=None) -> list:
  sub = group._replace(runs=runs)
  init = None
  if sub.init_from:
    kind = str(data.preprocess.get("kind", "raw"))
    init = transfer.initializer(sub.init_from, sub.spec.net, data.class_names, kind)
    log(f"{prefix} {transfer.describe(sub.init_from, data.class_names)}")
  writers, logs, texts = [], [], []
  for run in runs:
    rdir = run_dir(workdir, run)
    shutil.rmtree(rdir, ignore_errors=True)  # an interrupted attempt's files
    rdir.mkdir(parents=True)
    fileio.atomic_write_json(rdir / "config.json", run_config_json(run))
    w = tensorboard.SummaryWriter(rdir)
    w.hparams(sweep.hparams_of(run), trial_id=run.id)
    writers.append(w)
    logs.append(open(rdir / "metrics.jsonl", "w"))  # noqa: SIM115 (closed below)
    texts.append(open(rdir / TRAIN_LOG, "w"))  # noqa: SIM115 (the run's own lines, always)
  start = time.perf_counter()

  def on_epoch(epoch: int, members: np.ndarray, m: dict[str, np.ndarray]) -> list[int]:
    stop = []
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
      line = (
        f"{prefix} {runs[i].id} epoch {epoch}/{group.max_epochs}  "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
        f"({time.perf_counter() - start:.1f}s)"
      )
      texts[i].write(line + "\n")
      texts[i].flush()
      if events is None:
        log(line)
      else:
        events(progress.epoch_event(runs[i].id, epoch, group.max_epochs, row["val_acc"], line))
      if prune is not None and prune(runs[i], epoch, row):
        stop.append(int(i))
        log(f"{prefix} {runs[i].id} pruned at epoch {epoch}")
    return stop

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
    for f in logs + texts:
      f.close()
  refits = _refit(sub, runs, fit, data, log=log, prefix=prefix, init=init)
  results = []
  for i, run in enumerate(runs):
    params, state = jax.tree.map(lambda a, i=i: a[i], (fit.params, fit.state))
    result = _finish_run(run, sub.spec, params, state, fit, i, data, workdir, refit=refits.get(i))
    writers[i].scalars(final_scalars(result), step=result["epochs"])
    writers[i].close(status="failure" if result["diverged"] else "success")
    parts = [f"{k} top-1 {v['topk'][0]:.4f}" for k, v in result["tests"].items()]
    parts.append(f"{result['seconds']:.1f}s")
    line = (
      f"{prefix} {run.id} done: {result['epochs']} epochs ({result['stop_reason']}), "
      + ", ".join(parts)
    )
    with open(run_dir(workdir, run) / TRAIN_LOG, "a") as f:
      f.write(line + "\n")
    if events is None:
      log(line)
    else:
      events(progress.done_event(run.id, line))
    results.append(result)
  return results


def _refit(group: sweep.Group, runs, fit: train.FitResult, data: Dataset, *, log, prefix, init):
  """{member: (params, state, epochs, seconds)} of the runs with ``train.refit``, each trained
  again on train + val for the epochs validation chose (:func:`train.chosen_epochs`)."""
  which = [i for i, r in enumerate(runs) if r.config.train.get("refit", False)]
  if not which:
    return {}
  epochs = [train.chosen_epochs(fit.history[i], group.stopping, fit.epochs[i]) for i in which]
  log(
    f"{prefix} refit on train + val ({len(data.y_train) + len(data.y_val)} rows): "
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


def evaluation(
  probs: np.ndarray, y: np.ndarray, data: Dataset, out: Path | None, title: str
) -> dict:
  """Top-k, loss and confusion matrix of ``probs`` on labels ``y``; the report goes to ``out``
  (None: no report)."""
  if out is not None:
    report.evaluation_report(out, y, probs, data.class_names, title=f"{title} ({data.name})")
  return {
    "topk": metrics.topk_accuracy(probs, y).tolist(),
    "loss": float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-30)))),
    "confusion": metrics.confusion_matrix(y, probs.argmax(1), data.num_classes).tolist(),
  }


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
  # A pruned run is never a result: its val metrics only, no test splits and no reports, so
  # that stopping it early saves its evaluation too.
  pruned = fit.stop_reason[i] == "pruned"
  splits = {"val": (data.x_val, data.y_val), **({} if pruned else data.tests)}
  if run.config.get("report", {}).get("eval_train", False) and not pruned:
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
    out = None if pruned else rdir / "eval" / split
    evals[split] = evaluation(probs, y, data, out, f"{run.id} on {split}")
  if not diverged:
    checkpoint.save(
      rdir / "model",
      net,
      params,
      state,
      hyper=hyper.layers,
      config=run_config_json(run),
      meta={
        "dataset": data.name,
        "class_names": list(data.class_names),
        "input_shape": list(data.input_shape),
        "preprocess": str(data.preprocess["kind"]),
        "run": run.id,
      },
      arrays={f"preprocess/{k}": v for k, v in data.preprocess.items()},
    )
  figures.plot_training_history(
    fit.history[i], rdir / "history.png", title=f"{run.id} ({data.name})"
  )
  result = {
    "run": run.id,
    "name": run.name,
    "seed": run.seed,
    "config": run_config_json(run),
    "hparams": fileio.to_jsonable(sweep.hparams_of(run)),
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
  fileio.atomic_write_json(rdir / "result.json", result)
  return result
