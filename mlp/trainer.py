"""Where a study's runs are trained: one shape group at a time through :func:`mlp.train.fit`, each
epoch logged to its run folder, each finished run saved (mlp.rundir). Studies and searches alike.
"""

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from mlp import interrupts, progress, resume, rundir, train, transfer
from mlp import plan as plan_lib
from mlp.checkpoint import CheckpointError
from mlp.data import Dataset
from mlp.plan import Group, Plan

Log = Callable[[str], None]


class Context(NamedTuple):
  """What training a study's runs needs besides their plans."""

  data: Dataset
  workdir: Path  # where run folders are saved
  log: Log  # messages (and, without ``events``, epoch and done lines)
  events: Callable[[dict], None] | None = None  # progress events (mlp.progress), if shown
  vectorize: bool = False  # a group as one vmapped population, or run by run


def vectorize_of(vectorize: bool | None) -> bool:
  """A study's ``vectorize``, or by default: vmapped populations on accelerators, one by one on
  CPU."""
  return jax.default_backend() != "cpu" if vectorize is None else bool(vectorize)


class OutOfMemory(ValueError):
  """A run's training step does not fit in the memory of this machine or device."""


def train_group(
  group: Group,
  ctx: Context,
  *,
  done: int = 0,
  total: int = 0,
  on_result: Callable[[dict], None] | None = None,
  prune: Callable[[Plan, int, dict[str, float]], bool] | None = None,
  sources: Mapping[str, Path] | None = None,
  replay: Callable[[Plan, int, dict[str, float]], None] | None = None,
) -> list[dict]:
  """Train the runs of one shape group (as one population, or one by one) and save each.

  ``done`` runs of ``total`` are finished before this group (for the progress prefix).
  ``on_result(result)`` is called as soon as each run is saved. ``prune(plan, epoch, metrics)``,
  asked after every epoch of every run, stops the run there when it says so (a search's pruner).

  A run with a checkpoint (mlp.resume) in its folder, or in ``sources[run id]`` (a run taken
  over from a dead or preempted worker elsewhere), continues from it; ``replay(plan, epoch,
  metrics)`` sees each epoch it had trained (a search reports them to the trial). A Ctrl-C or
  SIGTERM stops training at the end of an epoch, with a checkpoint, or after a run is saved.
  """
  chunks = [group.plans] if ctx.vectorize else [(p,) for p in group.plans]
  data = ctx.data
  arrays = (data.x_train, data.y_train, data.x_val, data.y_val)
  results = []
  with interrupts.safe_points():  # a stop asked for waits for the end of an epoch (fit)
    for chunk in chunks:
      first, last = done + len(results) + 1, done + len(results) + len(chunk)
      prefix = f"[{first}/{total}]" if first == last else f"[{first}-{last}/{total}]"
      sub = group._replace(plans=chunk)
      init = None
      if group.init_from:
        kind = str(data.preprocess.get("kind", "raw"))
        init = transfer.initializer(group.init_from, group.spec.net, data.class_names, kind)
        ctx.log(f"{prefix} {transfer.describe(group.init_from, data.class_names)}")
      found = [_checkpoint_of(p, ctx, prefix, (sources or {}).get(p.id)) for p in chunk]
      files = [rundir.RunFiles(p, ctx.workdir) for p in chunk]  # (checkpoints are kept)
      for plan, f, (start, folder) in zip(chunk, files, found, strict=True):
        if start is not None:
          if folder != f.dir:  # a copy here, so that a kill now does not lose it
            resume.save(f.dir, plan, start)
          _replay(plan, start, f, ctx, prefix, replay)
      writer = resume.Writer(
        chunk, [f.dir for f in files], min(p.checkpoint_minutes for p in chunk)
      )
      hook = _on_epoch(chunk, files, ctx, prefix, prune)
      starts = [s for s, _ in found]
      try:
        fit = train.fit(
          sub.population(init),
          arrays,
          on_epoch=hook,
          vectorize=len(chunk) > 1,
          resume=starts if any(s is not None for s in starts) else None,
          on_state=writer,
        )
      except BaseException as e:
        for f in files:
          f.fail()
        if _out_of_memory(e):
          raise OutOfMemory(_memory_message(chunk, len(data.y_train))) from None
        raise
      finally:
        for f in files:
          f.close_logs()
      refits = _refit(sub, fit, ctx, prefix, init)
      for i, plan in enumerate(chunk):
        params, state = jax.tree.map(lambda a, i=i: a[i], (fit.params, fit.state))
        trained = rundir.Trained(
          params,
          state,
          fit.history[i],
          int(fit.epochs[i]),
          fit.stop_reason[i],
          float(fit.seconds[i]),
          refits.get(i),
        )
        result = rundir.save(plan, trained, data, ctx.workdir)
        resume.remove(files[i].dir)  # the run is saved: its checkpoint is done with
        if found[i][1] is not None and found[i][1] != files[i].dir:
          resume.remove_attempt(found[i][1])  # another worker's failed attempt, now used
        evals = {**({"train": result["train"]} if result.get("train") else {}), **result["tests"]}
        parts = [f"{k} top-1 {v['topk'][0]:.4f}" for k, v in evals.items()]
        parts.append(f"{result['seconds']:.1f}s")
        line = (
          f"{prefix} {plan.id} done: {result['epochs']} epochs ({result['stop_reason']}), "
          + ", ".join(parts)
        )
        files[i].finish(result, line, writer.note())
        if ctx.events is None:
          ctx.log(line)
        else:
          ctx.events(progress.done_event(plan.id, line))
        results.append(result)
        if on_result is not None:
          on_result(result)
        interrupts.stop_now()  # a stop asked for since the end of training: here, run saved
  return results


def _checkpoint_of(
  plan: Plan, ctx: Context, prefix: str, elsewhere: Path | None
) -> tuple[train.LoopState | None, Path | None]:
  """The loop state a run continues from and the folder of its checkpoint: its own run folder,
  else ``elsewhere``; (None, None) to start afresh (an unusable checkpoint is said and left)."""
  own = rundir.run_dir(ctx.workdir, plan)
  folders = [own]
  if elsewhere is not None and Path(elsewhere).resolve() != own.resolve():
    folders.append(Path(elsewhere))
  for folder in folders:
    if not resume.exists(folder):
      continue
    try:
      start = resume.load(folder, plan)
    except CheckpointError as e:
      ctx.log(f"{prefix} {plan.id}: {e}; it trains from the start")
      continue
    where = "" if folder == own else f" ({folder})"
    if start.active[0]:
      ctx.log(f"{prefix} {plan.id} resumes at epoch {start.epoch + 1} from its checkpoint{where}")
    else:
      ctx.log(f"{prefix} {plan.id} had finished training (checkpoint{where}): saving it")
    return start, folder
  return None, None


def _replay(plan: Plan, start: train.LoopState, files: rundir.RunFiles, ctx, prefix, replay):
  """A resumed run's epochs so far into its new folder (curves, metrics.jsonl, train.log)."""
  history = start.history[0]
  for e in range(1, len(history.get("val_loss", [])) + 1):
    row = {k: float(v[e - 1]) for k, v in history.items()}
    files.epoch(e, row, _epoch_line(prefix, plan, e, row, "from its checkpoint"))
    if replay is not None:
      replay(plan, e, row)
  if ctx.events is not None and history.get("val_acc"):
    n = len(history["val_acc"])
    line = f"{prefix} {plan.id} resumed after epoch {n}"
    ctx.events(progress.epoch_event(plan.id, n, plan.max_epochs, history["val_acc"][-1], line))


def _out_of_memory(e: BaseException) -> bool:
  text = str(e)
  return isinstance(e, MemoryError) or (
    isinstance(e, jax.errors.JaxRuntimeError)
    and ("RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text)
  )


def _memory_message(chunk: Sequence[Plan], rows: int) -> str:
  need = sum(plan_lib.step_memory(p, rows) for p in chunk)
  bs = chunk[0].spec.batch_size
  return (
    f"out of memory training {', '.join(p.id for p in chunk)}: batch size {bs} needs about "
    f"{plan_lib.human_bytes(need)} for a training step ({plan_lib.human_bytes(memory_bytes())} "
    "here); use a smaller batch size (config field train.batch_size)"
  )


def memory_bytes() -> int:
  """The memory a training step can use: the accelerator's, or this machine's RAM."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
      return int(stats["bytes_limit"])
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _epoch_line(prefix: str, plan: Plan, epoch: int, row: dict[str, float], when: str) -> str:
  return (
    f"{prefix} {plan.id} epoch {epoch}/{plan.max_epochs}  "
    f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
    f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  ({when})"
  )


def _on_epoch(
  plans: Sequence[Plan], files: Sequence[rundir.RunFiles], ctx: Context, prefix: str, prune
) -> train.EpochCallback:
  """fit's per-epoch callback: each member's epoch logged; the ones ``prune`` stops returned."""
  start = time.perf_counter()
  budget = plans[0].max_epochs

  def on_epoch(epoch: int, members: np.ndarray, m: dict[str, np.ndarray]) -> list[int]:
    stop = []
    for j, i in enumerate(members):
      row = {k: float(v[j]) for k, v in m.items()}
      line = _epoch_line(prefix, plans[i], epoch, row, f"{time.perf_counter() - start:.1f}s")
      files[i].epoch(epoch, row, line)
      if ctx.events is None:
        ctx.log(line)
      else:
        ctx.events(progress.epoch_event(plans[i].id, epoch, budget, row["val_acc"], line))
      if prune is not None and prune(plans[i], epoch, row):
        stop.append(int(i))
        ctx.log(f"{prefix} {plans[i].id} pruned at epoch {epoch}")
    return stop

  return on_epoch


def _refit(group: Group, fit: train.FitResult, ctx: Context, prefix: str, init) -> dict:
  """{member: (params, state, epochs, seconds)} of the runs with ``train.refit``, each trained
  again on train + val for the epochs validation chose (:func:`train.chosen_epochs`)."""
  which = [i for i, p in enumerate(group.plans) if p.refit]
  if not which:
    return {}
  epochs = [train.chosen_epochs(fit.history[i], group.stopping, fit.epochs[i]) for i in which]
  data = ctx.data
  ctx.log(
    f"{prefix} refit on train + val ({len(data.y_train) + len(data.y_val)} rows): "
    + ", ".join(f"{group.plans[i].id} {n} epochs" for i, n in zip(which, epochs, strict=True))
  )
  chosen = group._replace(plans=tuple(group.plans[i] for i in which))
  arrays = (data.x_train, data.y_train, data.x_val, data.y_val)
  out = train.refit(chosen.population(init), arrays, epochs)
  return {
    i: (*jax.tree.map(lambda a, j=j: a[j], (out.params, out.state)), epochs[j], out.seconds[j])
    for j, i in enumerate(which)
  }
