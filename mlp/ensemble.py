"""Seed ensembles: runs of one configuration with different seeds, averaged as one model.

With ``config.ensemble = m`` (> 1) a study's ``seeds`` split into consecutive groups of ``m``
(``seeds`` must be a multiple of ``m``): ensemble ``j`` of run ``NAME`` holds the seeds
``seed + j*m .. seed + (j+1)*m - 1``. Its class probabilities are the mean of its members'

    p_ens(c | x) = (1/m) sum_i p_i(c | x),

and it is evaluated with the same reports as a single run. It is saved as a folder
``runs/NAME/ensemble<j>/`` holding its member models (``members/seed<k>.{npz,json}``, hard links
to the runs' models where the file system allows, else copies), ``ensemble.json`` (their paths,
relative to the folder), ``result.json`` and ``eval/<split>/``. The folder is self-contained: a
member path that leads out of it is refused when it loads. ``mlp.inference.load_model`` loads the
folder as one model, so ``experiments.evaluate`` and ``experiments.predict`` take it as they take
a run.
"""

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlp import fileio
from mlp.checkpoint import CheckpointError

FILE = "ensemble.json"


def size_of(config: Any) -> int:
  """``config.ensemble`` (members per ensemble; 1 = no ensembles), checked against ``seeds``."""
  m, seeds = int(config["ensemble"]), int(config["seeds"])  # (configs/base.py has both)
  if m < 1:
    raise ValueError(f"config field ensemble must be >= 1, got {m}")
  if m > 1 and seeds % m:
    raise ValueError(
      f"config field seeds ({seeds}) must be a multiple of ensemble ({m}): each ensemble takes "
      f"{m} consecutive seeds, e.g. --config.seeds={m * max(1, seeds // m)}"
    )
  return m


def groups(results: Sequence[dict], m: int) -> list[tuple[str, int, list[dict]]]:
  """(run name, ensemble index, member results) for the results of a study, seeds in order."""
  by_name: dict[str, list[dict]] = {}
  for r in results:
    by_name.setdefault(r["name"], []).append(r)
  out = []
  for name, rs in by_name.items():
    rs = sorted(rs, key=lambda r: r["seed"])
    out += [(name, j, rs[j * m : (j + 1) * m]) for j in range(len(rs) // m)]
  return out


def folder(workdir: str | Path, name: str, j: int) -> Path:
  """Where ensemble ``j`` of run ``name`` lives in a study's workdir."""
  return Path(workdir) / "runs" / name / f"ensemble{j}"


def write_members(folder: str | Path, models: Sequence[str | Path]) -> Path:
  """Put the member models (saved model prefixes) into ``folder/members/`` and write
  ``folder/ensemble.json`` naming them."""
  folder = Path(folder)
  (folder / "members").mkdir(parents=True, exist_ok=True)
  rel = []
  for m in models:
    m = Path(m)
    name = f"members/{m.parent.name}"  # the run folder's name: seed<k>
    for suffix in (".npz", ".json"):  # (the .json last: a model is complete once it exists)
      _link(m.with_name(m.name + suffix), folder / (name + suffix))
    rel.append(name)
  fileio.atomic_write_json(folder / FILE, {"format": "mlp-ensemble-1", "members": rel})
  return folder / FILE


def _link(src: Path, dst: Path) -> None:
  """``dst`` as a hard link to ``src`` (no copy of the bytes), else a copy; replaced if there."""
  tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
  tmp.unlink(missing_ok=True)
  try:
    os.link(src, tmp)
  except OSError:  # another file system, or no hard links here
    shutil.copyfile(src, tmp)
  os.replace(tmp, dst)


def read_members(path: str | Path) -> list[Path]:
  """The member model prefixes of an ``ensemble.json``; CheckpointError saying what is wrong."""
  path = Path(path)
  try:
    doc = json.loads(path.read_text())
  except FileNotFoundError:
    raise CheckpointError(f"ensemble file {path} not found") from None
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} is not a readable ensemble file ({e}); re-run the study") from e
  members = doc.get("members") if isinstance(doc, dict) else None
  if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
    raise CheckpointError(f"{path}: expected {{'members': [model paths]}}, a non-empty list")
  inside = path.parent.resolve()
  for m in members:
    target = (path.parent / m).resolve()
    if Path(m).is_absolute() or not target.is_relative_to(inside):
      raise CheckpointError(
        f"{path}: member {m!r} is outside the ensemble's folder {path.parent}; an ensemble's "
        "members live in its folder (members/...): run the study again to rewrite it, or copy "
        "the member models in"
      )
  return [path.parent / m for m in members]


def average(probs: Sequence[np.ndarray]) -> np.ndarray:
  """The ensemble's class probabilities: the mean of the members' (each (n, C))."""
  return np.mean(np.stack(probs), axis=0)
