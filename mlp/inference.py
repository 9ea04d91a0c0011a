"""Using a saved model: load it, rebuild its network and preprocessing, and classify.

A model saved by :mod:`mlp.study` (``runs/<name>/seed<k>/model.{json,npz}``) carries everything
needed: its network (layers with their dropout rates), params and state, the run config (data
section: data set, split and preprocessing options), and meta (dataset, class_names, input_shape,
preprocessing kind) with the preprocessing statistics as arrays ``preprocess/<name>``.

A seed ensemble (``runs/<name>/ensemble<j>/``, written by :mod:`mlp.ensemble`) is a folder with
``ensemble.json`` naming its member models; it loads as one model whose probabilities are the
mean of its members'.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from mlp import checkpoint, train
from mlp import data as data_lib
from mlp import ensemble as ensemble_lib
from mlp.checkpoint import CheckpointError
from mlp.data import DataError, preprocess

_PREFIX = "preprocess/"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A saved model ready for inference."""

  path: Path  # the model prefix (without .json / .npz)
  model: checkpoint.Model
  spec: train.Spec
  hyper: train.Hyper  # only the dropout rates matter (inference-form scaling)
  dataset: str
  class_names: tuple[str, ...]
  input_shape: tuple[int, ...]
  preprocess_kind: str
  stats: dict[str, np.ndarray]
  members: tuple[LoadedModel, ...] = ()  # a seed ensemble: these models, probabilities averaged

  @property
  def is_image_model(self) -> bool:
    return len(self.input_shape) == 3

  @property
  def data_config(self) -> dict:
    return dict(self.model.config.get("data") or {})


def model_prefix(path: str | os.PathLike) -> Path:
  """A model prefix from a prefix, a .json/.npz file or a run folder holding ``model.json``."""
  p = Path(path)
  if p.is_dir():
    if (p / "model.json").exists() or (p / "model.npz").exists():
      return p / "model"
    raise CheckpointError(f"{p} is a folder without a saved model (model.json + model.npz)")
  return p


def load_model(path: str | os.PathLike) -> LoadedModel:
  """Load a saved model or seed ensemble; CheckpointError (with the reason) if missing, corrupt
  or incomplete."""
  p = Path(path)
  if p.name == ensemble_lib.FILE or (p.is_dir() and (p / ensemble_lib.FILE).exists()):
    return _load_ensemble(p if p.name == ensemble_lib.FILE else p / ensemble_lib.FILE)
  return _load_one(path)


def _load_ensemble(path: Path) -> LoadedModel:
  members = tuple(_load_one(m) for m in ensemble_lib.read_members(path))
  first = members[0]
  for m in members[1:]:
    same = (m.dataset, m.class_names, m.input_shape, m.preprocess_kind) == (
      first.dataset,
      first.class_names,
      first.input_shape,
      first.preprocess_kind,
    ) and all(np.array_equal(m.stats[k], first.stats.get(k)) for k in m.stats)
    if not same:
      raise CheckpointError(
        f"{path}: member {m.path} differs from {first.path} in data set, classes, input shape "
        "or preprocessing; an ensemble's members must take the same inputs"
      )
  return dataclasses.replace(first, path=path.parent / "model", members=members)


def _load_one(path: str | os.PathLike) -> LoadedModel:
  prefix = model_prefix(path)
  m = checkpoint.load(prefix)
  meta = m.meta
  where = f"{prefix}.json"
  try:
    dataset = str(meta["dataset"])
    class_names = tuple(str(c) for c in meta["class_names"])
    input_shape = tuple(int(d) for d in meta["input_shape"])
    kind = str(meta.get("preprocess", "raw"))
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(
      f"{where} lacks the metadata needed for inference ({type(e).__name__}: {e}); "
      "was it saved by mlp.study?"
    ) from e
  if input_shape != m.net.input_shape:
    raise CheckpointError(
      f"{where}: input_shape {input_shape} does not match the network's {m.net.input_shape}"
    )
  if len(class_names) != m.net.num_classes:
    raise CheckpointError(
      f"{where}: {len(class_names)} class names for a model with {m.net.num_classes} outputs"
    )
  if kind not in preprocess.KINDS:
    raise CheckpointError(f"{where}: unknown preprocessing kind {kind!r}")
  stats = {k[len(_PREFIX) :]: v for k, v in m.arrays.items() if k.startswith(_PREFIX)}
  stats.setdefault("kind", np.array(kind))
  need = {"center": ("mean",), "per_image": ("mean",), "standardize": ("mean", "std")}
  need = need.get(kind, ())
  missing = [k for k in need if k not in stats]
  if missing:
    raise CheckpointError(f"{where}: preprocessing {kind!r} but no saved statistics {missing}")
  try:
    spec = train.Spec(net=m.net, batch_size=1)
    hyper = train.make_hyper(learning_rate=1.0, layers=m.hyper)
  except ValueError as e:
    raise CheckpointError(f"{where}: {e}") from e
  return LoadedModel(
    path=prefix,
    model=m,
    spec=spec,
    hyper=hyper,
    dataset=dataset,
    class_names=class_names,
    input_shape=input_shape,
    preprocess_kind=kind,
    stats=stats,
  )


def require_image_model(lm: LoadedModel) -> tuple[tuple[int, int], int]:
  """The model's image size (H, W) and channels; CheckpointError if it does not take images."""
  if not lm.is_image_model or lm.input_shape[-1] not in (1, 3):
    raise CheckpointError(
      f"{lm.path} was trained on {lm.dataset} ({lm.spec.net.num_inputs} input features, shape "
      f"{lm.input_shape}), not on images; use a CIFAR-10 or FER2013 model"
    )
  h, w, c = lm.input_shape
  return (h, w), c


def prepare(lm: LoadedModel, images: np.ndarray) -> np.ndarray:
  """uint8 images (n, H, W, C) -> the model's flat float32 inputs, with the saved statistics."""
  images = np.asarray(images)
  if images.shape[1:] != lm.input_shape:
    raise ValueError(
      f"images have shape {images.shape[1:]}, the model takes {lm.input_shape} "
      "(convert them with mlp.data.images.load_folder)"
    )
  return preprocess.apply(images, lm.stats, lm.preprocess_kind)


def probabilities(lm: LoadedModel, x: np.ndarray) -> np.ndarray:
  """(n, C) class probabilities for already-preprocessed flat inputs ``x`` (an ensemble: the mean
  of its members' probabilities)."""
  x = np.asarray(x, np.float32)
  n_in = lm.spec.net.num_inputs
  if x.ndim != 2 or x.shape[1] != n_in:
    raise ValueError(f"inputs have shape {x.shape}, the model takes (n, {n_in})")
  if lm.members:
    return ensemble_lib.average([probabilities(m, x) for m in lm.members])
  return np.exp(train.log_probs(lm.spec, lm.model.params, lm.model.state, lm.hyper, x))


def predict_images(lm: LoadedModel, images: np.ndarray) -> np.ndarray:
  """(n, C) class probabilities for raw uint8 images (n, H, W, C)."""
  require_image_model(lm)
  return probabilities(lm, prepare(lm, images))


def split_names(lm: LoadedModel) -> tuple[str, ...]:
  """The splits :func:`split_data` can evaluate for this model's data set."""
  if int(lm.data_config.get("cv_folds", 0) or 0):  # trained on a cross-validation fold
    return ("train", "val", "fold")
  known = lm.dataset in data_lib.DATASETS
  return ("train", "val", *(data_lib.entry(lm.dataset).test_splits if known else ()))


def split_data(
  lm: LoadedModel, split: str, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """(flat model inputs, labels) of one split of the data set the model was trained on.

  The split options come from the saved config; image inputs are preprocessed with the saved
  statistics (never refitted); "train" is the training split without added mirror images.
  ``data_dir`` overrides the config's data folder.
  """
  cfg = lm.data_config
  if cfg.get("name") != lm.dataset:
    raise CheckpointError(
      f"{lm.path}: saved config has data set {cfg.get('name')!r} but meta says {lm.dataset!r}"
    )
  names = split_names(lm)
  if split not in names:
    raise ValueError(f"{lm.dataset} has no split {split!r}; choose one of {', '.join(names)}")
  image = data_lib.entry(lm.dataset).image
  d = (data_lib.load_images if image else data_lib.load)(cfg, data_dir)
  x, y = {"train": (d.x_train, d.y_train), "val": (d.x_val, d.y_val), **d.tests}[split]
  if not image:
    checkpoint.check_compatible(lm.model, dataset=d.name, input_dim=d.num_inputs)
    return x, y
  if tuple(d.class_names) != lm.class_names:
    raise DataError(
      f"the {lm.dataset} data found has classes {d.class_names}, the model {lm.class_names}"
    )
  return prepare(lm, x), np.asarray(y, np.int32)


def read_labels(path: str | os.PathLike, class_names: tuple[str, ...]) -> dict[str, int]:
  """A labels file -> {image file name: class index}.

  Format: CSV, one ``file,label`` per line. ``file`` is the image's file name in the folder (a
  path is reduced to its last part); ``label`` is a class name (case-insensitive) or a class
  index 0..C-1. An optional header line ``file,label``, blank lines and lines starting with ``#``
  are skipped. Example (CIFAR-10)::

      file,label
      cat1.png,cat
      plane.jpg,0
  """
  import csv

  path = Path(path)
  if not path.is_file():
    raise DataError(f"labels file {path} not found")
  by_name = {c.lower(): i for i, c in enumerate(class_names)}
  out: dict[str, int] = {}
  with open(path, newline="", encoding="utf-8-sig") as f:
    for n, row in enumerate(csv.reader(f), start=1):
      if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
        continue
      if len(row) != 2:
        raise DataError(f"{path} line {n}: expected 'file,label', got {len(row)} fields")
      name, label = Path(row[0].strip()).name, row[1].strip()
      if n == 1 and (name.lower(), label.lower()) == ("file", "label"):
        continue
      if label.lower() in by_name:
        k = by_name[label.lower()]
      elif label.lstrip("-").isdigit() and 0 <= int(label) < len(class_names):
        k = int(label)
      else:
        raise DataError(
          f"{path} line {n}: label {label!r} is neither a class name ({', '.join(class_names)}) "
          f"nor an index 0..{len(class_names) - 1}"
        )
      if name in out and out[name] != k:
        raise DataError(f"{path} line {n}: {name} is labelled twice, differently")
      out[name] = k
  if not out:
    raise DataError(f"{path} holds no 'file,label' lines")
  return out


def match_labels(names: list[str], labels: dict[str, int], source: str = "labels") -> np.ndarray:
  """Labels of the images ``names`` in order; DataError naming the images without one."""
  missing = [n for n in names if n not in labels]
  if missing:
    more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
    raise DataError(
      f"{source} has no label for {len(missing)} image(s): {', '.join(missing[:5])}{more}"
    )
  return np.array([labels[n] for n in names], np.int32)
