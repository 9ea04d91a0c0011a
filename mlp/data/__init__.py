"""Data loaders: UCI HAR, CIFAR-10, FER2013, image folders, and preprocessing.

:func:`load` turns a config's ``data`` section into a :class:`Dataset` of flat float32 model inputs,
the form every study trains on.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from mlp.data import preprocess
from mlp.data.common import DataError, ImageData

__all__ = [
  "DATASETS",
  "DataError",
  "Dataset",
  "Entry",
  "IMAGE_NAMES",
  "ImageData",
  "NAMES",
  "entry",
  "load",
  "load_images",
]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Flat model inputs for one study: train/val plus one or more named test splits."""

  name: str
  x_train: np.ndarray  # float32 (n, D)
  y_train: np.ndarray  # int32 (n,)
  x_val: np.ndarray
  y_val: np.ndarray
  tests: dict[str, tuple[np.ndarray, np.ndarray]]
  class_names: tuple[str, ...]
  input_shape: tuple[int, ...]  # shape of one example before flattening, e.g. (561,), (32, 32, 3)
  preprocess: dict[str, np.ndarray]  # statistics from mlp.data.preprocess.fit, saved with models
  notes: tuple[str, ...] = ()  # human sentences for logs and results tables (e.g. split choices)
  # Group of each train / val row where rows come in groups that must not be split (HAR: the
  # subject id), for grouped inner cross-validation (mlp.baselines); None: independent rows.
  groups_train: np.ndarray | None = None
  groups_val: np.ndarray | None = None

  @property
  def num_inputs(self) -> int:
    return int(np.prod(self.input_shape))

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def load_images(cfg: Mapping, data_dir: str | None = None) -> ImageData:
  """The uint8 images and splits of an image data set (cifar10, fer2013), not preprocessed.

  Uses ``cfg["val_fraction"]``, ``cfg["split_seed"]`` and, for cifar10, ``cfg["limit_train"]``;
  ``cfg["classes"]`` keeps a subset of the classes (:func:`class_subset`). With
  ``cfg["cv_folds"]`` = k > 0 it is cross-validation fold ``cfg["cv_fold"]`` instead
  (:func:`cv_fold_of`).
  """
  d = _load_images(cfg, data_dir)
  names, keep = class_subset(tuple(d.class_names), cfg.get("classes", ()))
  if len(names) < len(d.class_names):
    d = dataclasses.replace(
      d,
      **dict(zip(("x_train", "y_train"), _only(keep, d.x_train, d.y_train), strict=True)),
      **dict(zip(("x_val", "y_val"), _only(keep, d.x_val, d.y_val), strict=True)),
      tests={k: _only(keep, x, y) for k, (x, y) in d.tests.items()},
      class_names=names,
    )
  folds = int(cfg.get("cv_folds", 0) or 0)
  if folds:
    d = cv_fold_of(d, folds, int(cfg.get("cv_fold", 0)), int(cfg.get("cv_seed", 0)), cfg)
  return d


def cv_fold_of(d: ImageData, folds: int, fold: int, seed: int, cfg: Mapping) -> ImageData:
  """Fold ``fold`` of ``folds`` stratified folds of the training split (train + val).

  The fold's rows become the only test split, ``"fold"``; validation is a stratified
  ``val_fraction`` carve-out of the other folds' rows (seed ``split_seed``). The official test
  splits are not used.
  """
  from mlp.data import common
  from mlp.data import folds as folds_lib

  folds_lib.check_fold(fold, folds)
  x = np.concatenate([d.x_train, d.x_val])
  y = np.concatenate([d.y_train, d.y_val])
  where = folds_lib.stratified_folds(y, folds, seed)
  rest = np.flatnonzero(where != fold)
  tr, va = common.stratified_split(y[rest], float(cfg["val_fraction"]), int(cfg["split_seed"]))
  held = where == fold
  return dataclasses.replace(
    d,
    x_train=x[rest[tr]],
    y_train=y[rest[tr]],
    x_val=x[rest[va]],
    y_val=y[rest[va]],
    tests={"fold": (x[held], y[held])},
  )


def _load_images(cfg: Mapping, data_dir: str | None) -> ImageData:
  from mlp.data import cifar10, fer2013

  name = cfg["name"]
  if name not in IMAGE_NAMES:
    raise DataError(f"{name!r} is not an image data set; expected one of {IMAGE_NAMES}")
  data_dir = data_dir or cfg.get("data_dir") or None
  kwargs = dict(val_fraction=float(cfg["val_fraction"]), seed=int(cfg["split_seed"]))
  if name == "cifar10":
    limit = int(cfg.get("limit_train", 0) or 0) or None
    return cifar10.load(data_dir, limit_train=limit, **kwargs)
  return fer2013.load(data_dir, **kwargs)


# Data config fields added after configs were saved with models and runs, per data set, with the
# value an older config (which lacks them) was trained with.
_ADDED_FIELDS = {"har": {"subject_norm": "none"}}


def with_added_fields(cfg: Mapping) -> dict:
  """A data config with the fields added since it may have been saved, at their implied values."""
  return {**_ADDED_FIELDS.get(cfg["name"], {}), **dict(cfg.items())}


def class_subset(class_names: tuple[str, ...], keep) -> tuple[tuple[str, ...], np.ndarray]:
  """(kept class names in their original order, (C,) map old label -> new label or -1).

  ``keep``: the config's ``data.classes``; empty keeps every class. Unknown names are an error.
  """
  keep = tuple(str(k) for k in (keep or ()))
  if not keep:
    return tuple(class_names), np.arange(len(class_names))
  unknown = [k for k in keep if k not in class_names]
  if unknown:
    raise DataError(
      f"config field data.classes names {', '.join(map(repr, unknown))}, not classes of this "
      f"data set ({', '.join(class_names)})"
    )
  if len(set(keep)) < 2:
    raise DataError("config field data.classes must keep at least two classes")
  kept = tuple(c for c in class_names if c in keep)
  mapping = np.full(len(class_names), -1)
  mapping[[class_names.index(c) for c in kept]] = np.arange(len(kept))
  return kept, mapping


def _only(mapping: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  rows = mapping[y] >= 0
  return x[rows], mapping[y[rows]].astype(np.int32)


def _classes_note(cfg: Mapping) -> str:
  kept = tuple(cfg.get("classes", ()) or ())
  return f"; only classes {', '.join(kept)} kept (data.classes)" if kept else ""


def _cv_note(cfg: Mapping) -> str:
  folds = int(cfg.get("cv_folds", 0) or 0)
  if not folds:
    return ""
  return (
    f"; cross-validation fold {int(cfg.get('cv_fold', 0)) + 1} of {folds} (stratified, seed "
    f"{int(cfg.get('cv_seed', 0))}) of the training split held out, the official test splits unused"
  )


def load(cfg: Mapping, data_dir: str | None = None) -> Dataset:
  """Load the data set named by ``cfg["name"]`` with the split and preprocessing options in ``cfg``.

  ``data_dir`` (a ``--data_dir`` flag) overrides ``cfg["data_dir"]``; when both are empty the
  loaders fall back to ``$MLP_DATA_DIR``, then the cache, then a download.
  """
  return entry(cfg["name"]).load(cfg, data_dir or cfg.get("data_dir") or None)


def _load_har(cfg: Mapping, data_dir: str | None) -> Dataset:
  from mlp.data import har

  norm = str(with_added_fields(cfg)["subject_norm"])
  har.check_subject_norm(norm, "config field data.subject_norm")
  d = har.load(
    data_dir,
    val_subjects=int(cfg["val_subjects"]),
    seed=int(cfg["split_seed"]),
    subject_norm=norm,
    cv_folds=int(cfg.get("cv_folds", 0) or 0),
    cv_fold=int(cfg.get("cv_fold", 0)),
    cv_seed=int(cfg.get("cv_seed", 0)),
  )
  tests = {"fold" if d.test_source == "fold" else "test": (d.x_test, d.y_test)}
  names, keep = class_subset(tuple(d.class_names), cfg.get("classes", ()))
  f32 = lambda x, y: _only(keep, x.astype(np.float32), y)  # noqa: E731
  (x_tr, y_tr), (x_va, y_va) = f32(d.x_train, d.y_train), f32(d.x_val, d.y_val)
  subjects = lambda s, y: np.asarray(s)[keep[y] >= 0].astype(np.int32)  # noqa: E731
  return Dataset(
    name="har",
    x_train=x_tr,
    y_train=y_tr,
    x_val=x_va,
    y_val=y_va,
    tests={k: f32(x, y) for k, (x, y) in tests.items()},
    class_names=names,
    input_shape=(d.x_train.shape[1],),
    preprocess=preprocess.fit(d.x_train[:1], "raw"),
    notes=(d.split_note + _classes_note(cfg),),
    groups_train=subjects(d.s_train, d.y_train),
    groups_val=subjects(d.s_val, d.y_val),
  )


def _load_image_set(cfg: Mapping, data_dir: str | None) -> Dataset:
  name = cfg["name"]
  d = load_images(cfg, data_dir)  # classes and folds chosen before preprocessing is fitted
  flip = bool(cfg.get("flip_train", False))
  if flip:  # add the horizontal mirror image of every training image
    d = dataclasses.replace(
      d,
      x_train=np.concatenate([d.x_train, d.x_train[:, :, ::-1]]),
      y_train=np.concatenate([d.y_train, d.y_train]),
    )
  kind = cfg["preprocess"]
  stats = preprocess.fit(d.x_train, kind)
  prep = lambda x: preprocess.apply(x, stats, kind)  # noqa: E731
  return Dataset(
    name=name,
    x_train=prep(d.x_train),
    y_train=d.y_train.astype(np.int32),
    x_val=prep(d.x_val),
    y_val=d.y_val.astype(np.int32),
    tests={k: (prep(x), y.astype(np.int32)) for k, (x, y) in d.tests.items()},
    class_names=tuple(d.class_names),
    input_shape=tuple(d.x_train.shape[1:]),
    preprocess=stats,
    notes=(
      f"{name}: {len(d.y_train)} train"
      + (" (with mirror images)" if flip else "")
      + f" / {len(d.y_val)} val (stratified, "
      f"{cfg['val_fraction']:.0%} of the training split) / "
      + ", ".join(f"{k} {len(y)}" for k, (_, y) in d.tests.items())
      + f"; preprocessing {kind!r} fitted on train"
      + _cv_note(cfg)
      + _classes_note(cfg),
    ),
  )


class Entry(NamedTuple):
  """A data set of the registry: its loader, test splits, and whether its inputs are images."""

  name: str
  load: Callable[[Mapping, str | None], Dataset]
  test_splits: tuple[str, ...]
  image: bool


# The data sets a config's ``data.name`` can name: what load, inference and evaluate read.
DATASETS = {
  "har": Entry("har", _load_har, ("test",), image=False),
  "cifar10": Entry("cifar10", _load_image_set, ("test",), image=True),
  "fer2013": Entry("fer2013", _load_image_set, ("PublicTest", "PrivateTest"), image=True),
}
NAMES = tuple(DATASETS)
IMAGE_NAMES = tuple(k for k, e in DATASETS.items() if e.image)


def entry(name: str) -> Entry:
  """The registry entry of data set ``name``."""
  if name not in DATASETS:
    raise DataError(f"unknown data set {name!r}; expected one of {NAMES} (config field data.name)")
  return DATASETS[name]
