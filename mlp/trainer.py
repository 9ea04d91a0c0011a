"""Where a study's runs are trained: one shape group at a time through :func:`mlp.train.fit`, each
epoch logged to its run folder, each finished run saved (mlp.rundir). Studies and searches alike.
"""

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from mlp import progress, rundir, train, transfer
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


def train_group(
  group: Group,
  ctx: Context,
  *,
  done: int = 0,
  total: int = 0,
  on_result: Callable[[dict], None] | None = None,
  prune: Callable[[Plan, int, dict[str, float]], bool] | None = None,
) -> list[dict]:
  """Train the runs of one shape group (as one population, or one by one) and save each.

  ``done`` runs of ``total`` are finished before this group (for the progress prefix).
  ``on_result(result)`` is called as soon as each run is saved. ``prune(plan, epoch, metrics)``,
  asked after every epoch of every run, stops the run there when it says so (a search's pruner).
  """
  chunks = [group.plans] if ctx.vectorize else [(p,) for p in group.plans]
  data = ctx.data
  arrays = (data.x_train, data.y_train, data.x_val, data.y_val)
  results = []
  for chunk in chunks:
    first, last = done + len(results) + 1, done + len(results) + len(chunk)
    prefix = f"[{first}/{total}]" if first == last else f"[{first}-{last}/{total}]"
    sub = group._replace(plans=chunk)
    init = None
    if group.init_from:
      kind = str(data.preprocess.get("kind", "raw"))
      init = transfer.initializer(group.init_from, group.spec.net, data.class_names, kind)
      ctx.log(f"{prefix} {transfer.describe(group.init_from, data.class_names)}")
    files = [rundir.RunFiles(p, ctx.workdir) for p in chunk]
    hook = _on_epoch(chunk, files, ctx, prefix, prune)
    try:
      fit = train.fit(sub.population(init), arrays, on_epoch=hook, vectorize=len(chunk) > 1)
    except BaseException:
      for f in files:
        f.fail()
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
      evals = {**({"train": result["train"]} if result.get("train") else {}), **result["tests"]}
      parts = [f"{k} top-1 {v['topk'][0]:.4f}" for k, v in evals.items()]
      parts.append(f"{result['seconds']:.1f}s")
      line = (
        f"{prefix} {plan.id} done: {result['epochs']} epochs ({result['stop_reason']}), "
        + ", ".join(parts)
      )
      files[i].finish(result, line)
      if ctx.events is None:
        ctx.log(line)
      else:
        ctx.events(progress.done_event(plan.id, line))
      results.append(result)
      if on_result is not None:
        on_result(result)
  return results


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
      line = (
        f"{prefix} {plans[i].id} epoch {epoch}/{budget}  "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
        f"({time.perf_counter() - start:.1f}s)"
      )
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
