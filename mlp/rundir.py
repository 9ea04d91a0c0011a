"""Where a run is saved: its folder ``<workdir>/runs/<name>/seed<k>/``.

It holds config.json (the run's settings) and plan.json (what it trained with, mlp.plan), its
TensorBoard events (curves and HParams), metrics.jsonl and train.log (a line per epoch),
model.{npz,json}, history.png, eval/<split>/ reports and result.json, written last: a run folder
without result.json is an interrupted run, emptied when the run is trained again but for its
checkpoint (checkpoint.npz, mlp.resume), which the run continues from and which is deleted once
result.json is written.
"""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from mlp import checkpoint, figures, fileio, metrics, report, resume, tensorboard, train
from mlp import plan as plan_lib
from mlp.data import Dataset
from mlp.plan import Plan, Run

TRAIN_LOG = "train.log"  # a run's epoch and result lines, whatever the console shows
CURVE_TAGS = ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate")


def run_dir(workdir: str | Path, run: Run | Plan) -> Path:
  return Path(workdir) / "runs" / run.name / f"seed{run.seed}"


def metric_tags(test_splits: Iterable[str]) -> list[str]:
  """The HParams dashboard's metric columns: what a run ends with (:func:`final_scalars`)."""
  tests = [f"{m}/{s}" for s in test_splits for m in ("accuracy", "loss")]  # e.g. accuracy/test
  return ["accuracy/val_best", "epochs", *tests, "loss/val", "accuracy/val"]


def final_scalars(result: dict) -> dict[str, float]:
  """A finished run's scalars: best validation accuracy, stopping epoch, test top-1 and loss."""
  out = {"accuracy/val_best": max(result["history"]["val_acc"], default=float("nan"))}
  out["epochs"] = float(result["epochs"])
  for split, ev in result["tests"].items():
    out[f"accuracy/{split}"] = float(ev["topk"][0])
    out[f"loss/{split}"] = float(ev.get("loss", float("nan")))
  return out


def objective(result: dict) -> float:
  """A run's value in a study or search: its validation accuracy (diverged: 0, still a result)."""
  val = result.get("val") or {}
  return float(val["topk"][0]) if val else 0.0


def saved_result(workdir: Path, run: Run) -> dict | None:
  """The run's result.json in ``workdir`` when it was trained with ``run``'s settings."""
  path = run_dir(workdir, run) / "result.json"
  result = json.loads(path.read_text()) if path.exists() else None
  return result if plan_lib.same_run(result, run) else None


class RunFiles:
  """A run folder being trained: a fresh folder (but for the checkpoint of an interrupted
  attempt) with the run's settings and plan, its TensorBoard writer (HParams first) and its
  per-epoch files."""

  def __init__(self, plan: Plan, workdir: Path):
    self.dir = run_dir(workdir, plan)
    resume.clear_folder(self.dir)  # an interrupted attempt's files, all but its checkpoint
    self.dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(self.dir / "config.json", plan_lib.settings_json(plan.run))
    fileio.atomic_write_json(self.dir / "plan.json", plan.describe())
    self.writer = tensorboard.SummaryWriter(self.dir)
    self.writer.hparams(plan_lib.hparams(plan.run), trial_id=plan.id)
    self.metrics = open(self.dir / "metrics.jsonl", "w")  # noqa: SIM115 (closed by close_logs)
    self.log = open(self.dir / TRAIN_LOG, "w")  # noqa: SIM115 (the run's own lines, always)

  def epoch(self, epoch: int, row: dict[str, float], line: str) -> None:
    """One epoch's metrics: TensorBoard curves, a metrics.jsonl record and a train.log line."""
    curves = ("train_loss", "val_loss", "train_acc", "val_acc", "lr")
    self.writer.scalars(dict(zip(CURVE_TAGS, (row[k] for k in curves), strict=True)), step=epoch)
    self.metrics.write(json.dumps({"epoch": epoch, **row}) + "\n")
    self.metrics.flush()
    self.log.write(line + "\n")
    self.log.flush()

  def close_logs(self) -> None:
    self.metrics.close()
    self.log.close()

  def finish(self, result: dict, *lines: str) -> None:
    """The run's final scalars and done line (and notes) in its log; its TensorBoard session
    ends (failure: diverged)."""
    self.writer.scalars(final_scalars(result), step=result["epochs"])
    self.writer.close(status="failure" if result["diverged"] else "success")
    with open(self.dir / TRAIN_LOG, "a") as f:
      f.write("".join(line + "\n" for line in lines))

  def fail(self) -> None:
    self.writer.close(status="failure")


class Trained(NamedTuple):
  """One trained member: what mlp.train.fit gave it, and its refit model if it has one."""

  params: Any
  state: Any
  history: dict[str, list[float]]
  epochs: int
  stop_reason: str
  seconds: float
  refit: tuple | None = None  # (params, state, epochs, seconds) trained on train + val


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


def _finite(tree: Any) -> bool:
  return all(np.all(np.isfinite(a)) for a in jax.tree.leaves(tree))


def save(plan: Plan, trained: Trained, data: Dataset, workdir: Path) -> dict:
  """Evaluate a trained run on val and test splits; save its model, reports and result.json.

  With a refit model the tests, the saved model and the reports are the refit model's, while
  "val" stays the selection model's (the refit model has trained on the validation rows).
  """
  rdir = run_dir(workdir, plan)
  net = plan.spec.net
  diverged = trained.stop_reason == "diverged" or not _finite((trained.params, trained.state))
  # A pruned run is never a result: its val metrics only, no test splits and no reports, so
  # that stopping it early saves its evaluation too.
  pruned = trained.stop_reason == "pruned"
  splits = {"val": (data.x_val, data.y_val), **({} if pruned else data.tests)}
  if plan.eval_train and not pruned:
    splits = {"train": (data.x_train, data.y_train), **splits}
  evals: dict[str, Any] = {}
  selection = params, state = trained.params, trained.state
  if trained.refit is not None:
    params, state = trained.refit[0], trained.refit[1]
    diverged = diverged or not _finite(trained.refit[:2])
  for split, (x, y) in splits.items():
    if diverged or len(y) == 0:
      continue
    p, s = selection if split == "val" else (params, state)
    probs = np.exp(train.log_probs(plan.spec, p, s, plan.hyper, x))
    out = None if pruned else rdir / "eval" / split
    evals[split] = evaluation(probs, y, data, out, f"{plan.id} on {split}")
  settings = plan_lib.settings_json(plan.run)
  if not diverged:
    checkpoint.save(
      rdir / "model",
      net,
      params,
      state,
      hyper=plan.hyper.layers,
      config=settings,
      meta={
        "dataset": data.name,
        "class_names": list(data.class_names),
        "input_shape": list(data.input_shape),
        "preprocess": str(data.preprocess["kind"]),
        "run": plan.id,
      },
      arrays={f"preprocess/{k}": v for k, v in data.preprocess.items()},
    )
  figures.plot_training_history(
    trained.history, rdir / "history.png", title=f"{plan.id} ({data.name})"
  )
  result = {
    "run": plan.id,
    "name": plan.name,
    "seed": plan.seed,
    "config": settings,
    "plan": plan.describe(),
    "hparams": fileio.to_jsonable(plan_lib.hparams(plan.run)),
    "epochs": int(trained.epochs),
    "stop_reason": trained.stop_reason,
    "diverged": bool(diverged),
    "seconds": float(trained.seconds),
    "history": trained.history,
    "val": evals.get("val"),
    **({"train": evals["train"]} if "train" in evals else {}),
    "tests": {k: v for k, v in evals.items() if k not in ("val", "train")},
  }
  if trained.refit is not None:
    result["refit"] = {"epochs": int(trained.refit[2]), "seconds": float(trained.refit[3])}
  fileio.atomic_write_json(rdir / "result.json", result)
  return result
