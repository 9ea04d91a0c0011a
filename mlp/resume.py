"""Checkpoints of runs in training: a run interrupted (Ctrl-C, SIGTERM, kill -9, a lost machine)
continues from its last one and ends with the numbers of an uninterrupted run.

A run's checkpoint is ``<run folder>/checkpoint.npz``, one file written atomically (a temporary
file renamed into place: a kill leaves the previous checkpoint or the new one, never half of
either). It is a zip without pickle: ``header.json`` (format tag, the run's id and identity, the
epoch, whether it is still training, its stop reason, epochs and seconds, its metrics history)
and one ``.npy`` array per leaf of what the fit loop carries (mlp.train.LoopState, one member):
``params/...``, ``state/...`` (batch-norm statistics), ``opt_state/...`` (the update rule's:
heavy ball's previous params, Adam's moments and count), ``best/...`` (the best epoch's params
and state under a patience rule), ``rules/<i>/<field>`` (the stopping rules' state: best score,
epochs without improvement) and ``key`` (the run's PRNG key data, a check). The learning-rate
schedule's position is the epoch; shuffling, dropout and augmentation fold the epoch and step
into the key, so nothing else is needed.

When: after an epoch once ``train.checkpoint_minutes`` have passed since the last checkpoint
(0: every epoch), when a stop is asked for (mlp.interrupts), and when the run's training ends
(its evaluation and saving can then be interrupted without training again). The checkpoint is
deleted once the run's result.json is written. Members of a population (one vmapped program)
each have their own, so a run resumes wherever it is trained next.
"""

import contextlib
import json
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mlp import fileio, model, optim, stopping, train
from mlp import plan as plan_lib
from mlp.checkpoint import CheckpointError
from mlp.plan import Plan

FORMAT = "mlp-train-checkpoint/1"
FILE = "checkpoint.npz"
HEADER = "header.json"


def path_of(folder: str | Path) -> Path:
  return Path(folder) / FILE


def exists(folder: str | Path) -> bool:
  return path_of(folder).is_file()


def _identity(plan: Plan) -> dict:
  """What a checkpoint must have been trained with to continue ``plan``: its settings (every
  default filled, not the run's name: a search trial may continue another's) and seed."""
  return {"seed": plan.seed, "settings": plan_lib.identity(plan.settings)}


def _named(s: train.LoopState, leaf) -> dict[str, Any]:
  """{name: leaf(array)} for every array of one member's loop state: ``<part>/<tree path>`` of
  params, state, opt_state and best, ``rules/<i>/<field>`` of the stopping rules' states."""
  out = {}
  parts = {"params": s.params, "state": s.state, "opt_state": s.opt_state, "best": s.best}
  for kind, tree in parts.items():
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)  # (best: None, no leaves)
    out.update({f"{kind}/{jax.tree_util.keystr(p)}": leaf(a) for p, a in flat})
  for i, rule in enumerate(s.rules):
    if rule is not None:
      out.update({f"rules/{i}/{k}": leaf(v) for k, v in vars(rule).items()})
  return out


def _template(plan: Plan) -> train.LoopState:
  """One member's loop state under ``plan`` with ShapeDtypeStructs for arrays (nothing
  computed)."""
  net = plan.spec.net
  params, state = jax.eval_shape(lambda: model.init(jax.random.key(0), net, train.DTYPE))
  opt_state = jax.eval_shape(lambda p: optim.init_state(p, plan.spec.optimizer), params)
  one = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct((1, *a.shape), a.dtype), t)  # noqa: E731
  keeps_best = plan.stopping.find(stopping.Patience) is not None
  rules = train.map_rule_states(
    lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), plan.stopping.init(1)
  )
  return train.LoopState(
    epoch=0,
    params=one(params),
    state=one(state),
    opt_state=one(opt_state),
    best=one((params, state)) if keeps_best else None,
    rules=rules,
    active=np.ones(1, bool),
    epochs=np.zeros(1, int),
    reason=[""],
    history=[{}],
    seconds=np.zeros(1),
  )


def save(folder: str | Path, plan: Plan, s: train.LoopState) -> Path:
  """Write one member's loop state ``s`` (leading axis 1) as ``folder/checkpoint.npz``."""
  header = {
    "format": FORMAT,
    "run": plan.id,
    "identity": _identity(plan),
    "epoch": int(s.epoch),
    "active": bool(s.active[0]),
    "epochs": int(s.epochs[0]),
    "stop_reason": s.reason[0],
    "seconds": float(s.seconds[0]),
    "history": s.history[0],
    "written": time.time(),
  }
  arrays = _named(s, np.asarray)
  arrays["key"] = np.asarray(jax.random.key_data(jax.random.key(plan.seed)))

  def write(f) -> None:
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
      z.writestr(HEADER, json.dumps(fileio.to_jsonable(header)))
      for name, a in arrays.items():
        with z.open(f"{name}.npy", "w", force_zip64=True) as out:
          np.lib.format.write_array(out, np.ascontiguousarray(a), allow_pickle=False)

  path = path_of(folder)
  fileio.atomic_write(path, write)
  return path


def read_header(folder: str | Path) -> dict:
  """The header of ``folder``'s checkpoint; CheckpointError if it is unreadable."""
  path = path_of(folder)
  try:
    with zipfile.ZipFile(path) as z:
      header = json.loads(z.read(HEADER))
  except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
    raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})") from None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise CheckpointError(f"{path} is not a training checkpoint of this version ({FORMAT})")
  return header


def load(folder: str | Path, plan: Plan) -> train.LoopState:
  """The loop state of ``plan``'s run (leading axis 1) saved in ``folder``. CheckpointError when
  the checkpoint is unreadable, or was written by a run with other settings or another seed."""
  path = path_of(folder)
  header = read_header(folder)
  if fileio.to_jsonable(_identity(plan)) != header.get("identity"):
    raise CheckpointError(
      f"{path} was written by run {header.get('run')} with other settings than {plan.id}'s"
    )
  t = _template(plan)
  want = _named(t, lambda a: (tuple(a.shape), np.dtype(a.dtype)))
  try:
    with zipfile.ZipFile(path) as z:
      names = {n[: -len(".npy")] for n in z.namelist() if n.endswith(".npy")}
      if names != set(want) | {"key"}:
        missing, extra = sorted(set(want) - names), sorted(names - set(want) - {"key"})
        raise CheckpointError(f"{path} does not fit {plan.id}: missing {missing}, extra {extra}")
      arrays = {}
      for name in names:
        with z.open(f"{name}.npy") as f:
          arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})") from None
  for name, (shape, dtype) in want.items():
    if arrays[name].shape != shape or arrays[name].dtype != dtype:
      raise CheckpointError(
        f"{path}: {name} is {arrays[name].dtype}{list(arrays[name].shape)}, {plan.id} needs "
        f"{dtype}{list(shape)}"
      )
  key = np.asarray(jax.random.key_data(jax.random.key(plan.seed)))
  if not np.array_equal(arrays["key"], key):
    raise CheckpointError(f"{path} holds another PRNG key than seed {plan.seed}'s")

  def tree(kind: str, template: Any) -> Any:
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = [arrays[f"{kind}/{jax.tree_util.keystr(p)}"] for p, _ in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves)

  rules = tuple(
    None if r is None else type(r)(**{k: arrays[f"rules/{i}/{k}"] for k in vars(r)})
    for i, r in enumerate(t.rules)
  )
  return train.LoopState(
    epoch=int(header["epoch"]),
    params=tree("params", t.params),
    state=tree("state", t.state),
    opt_state=tree("opt_state", t.opt_state),
    best=None if t.best is None else tree("best", t.best),
    rules=rules,
    active=np.array([bool(header["active"])]),
    epochs=np.array([int(header["epochs"])]),
    reason=[str(header["stop_reason"])],
    history=[{k: [float(v) for v in vs] for k, vs in header["history"].items()}],
    seconds=np.array([float(header["seconds"])]),
  )


def remove(folder: str | Path) -> None:
  """Delete ``folder``'s checkpoint (its run is saved)."""
  path_of(folder).unlink(missing_ok=True)


def remove_attempt(folder: str | Path) -> None:
  """Delete the run folder of a failed attempt whose checkpoint another attempt continued and
  saved (a dead or preempted worker's, maybe in another workdir); never a finished run's."""
  import shutil

  folder = Path(folder)
  if (folder / "result.json").exists():
    remove(folder)
  else:
    shutil.rmtree(folder, ignore_errors=True)


def clear_folder(folder: str | Path) -> None:
  """Empty a run folder but for its checkpoint (an interrupted attempt's files)."""
  import shutil

  folder = Path(folder)
  if not folder.is_dir():
    return
  for child in folder.iterdir():
    if child.name == FILE:
      continue
    if child.is_dir() and not child.is_symlink():
      shutil.rmtree(child, ignore_errors=True)
    else:
      child.unlink(missing_ok=True)


class Writer:
  """mlp.train.fit's ``on_state`` for a chunk of runs: writes each member's checkpoint into its
  run folder after an epoch once ``minutes`` have passed since the last write (0: every epoch),
  and whenever the loop says it is due (the end of training, a stop asked for). Keeps the time
  it spends, for the run's log."""

  def __init__(self, plans: Sequence[Plan], folders: Sequence[Path], minutes: float):
    self.plans, self.folders, self.minutes = list(plans), list(folders), float(minutes)
    self.last = self.called = time.monotonic()
    self.writes, self.seconds = 0, 0.0
    self.epochs: list[float] = []  # seconds between calls, less the writes: epoch durations

  def __call__(self, ids: np.ndarray, state, now: bool) -> None:
    start = time.monotonic()
    self.epochs.append(start - self.called)
    if now or start - self.last >= 60 * self.minutes:
      s = state()
      for j, i in enumerate(ids):
        save(self.folders[i], self.plans[i], train.members_of(s, [j]))
      self.writes += 1
      self.last = time.monotonic()
      self.seconds += self.last - start
    self.called = time.monotonic()

  def note(self) -> str:
    """What the checkpoints cost, for the run's log: time per write, its share of an epoch (the
    median epoch: the first one compiles) and of this attempt's training time."""
    if not self.writes:
      return "checkpoints: none written"
    each, epoch = self.seconds / self.writes, float(np.median(self.epochs))
    total = sum(self.epochs) + self.seconds
    return (
      f"checkpoints: {self.writes} written, {1000 * each:.1f} ms each ({100 * each / epoch:.2f}% "
      f"of a {epoch:.3f} s epoch), {100 * self.seconds / total:.2f}% of {total:.1f} s of training"
    )


def pending(workdir: str | Path) -> list[tuple[str, int]]:
  """(run id, epoch) of the checkpoints of runs in ``workdir`` that have no result yet."""
  out = []
  for path in sorted(Path(workdir).glob(f"**/runs/*/seed*/{FILE}")):  # (folds/<k>/runs: CV)
    folder = path.parent
    if (folder / "result.json").exists():
      continue
    try:
      header = read_header(folder)
    except CheckpointError:
      continue
    out.append((str(header.get("run", f"{folder.parent.name}/{folder.name}")), header["epoch"]))
  return out


def summary(workdir: str | Path, limit: int = 3) -> str:
  """What an interrupted study or search in ``workdir`` has saved, in a few words: its finished
  runs and the runs that will resume from a checkpoint."""
  finished = len(list(Path(workdir).glob("**/runs/*/seed*/result.json")))
  parts = [f"{finished} finished run{'s' * (finished != 1)} saved"]
  ckpts = pending(workdir)
  if ckpts:
    named = ", ".join(f"{run} at epoch {epoch}" for run, epoch in ckpts[:limit])
    more = f" and {len(ckpts) - limit} more" if len(ckpts) > limit else ""
    parts.append(f"checkpoints of {len(ckpts)} run{'s' * (len(ckpts) != 1)} ({named}{more})")
  return ", ".join(parts)


@contextlib.contextmanager
def noted(workdir: str | Path) -> Iterator[None]:
  """A Ctrl-C or SIGTERM inside carries what ``workdir`` has saved (:func:`summary`) and the
  workdir, for the line an entry point ends with (mlp.cli); an outer block's workdir wins (a
  cross-validation's, over its folds')."""
  try:
    yield
  except KeyboardInterrupt as e:
    e.workdir, e.saved = workdir, summary(workdir)
    raise
