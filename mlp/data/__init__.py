"""Data loaders: UCI HAR, CIFAR-10, FER2013, image folders, and preprocessing.

:func:`load` turns a config's ``data`` section into a :class:`Dataset` of flat float32 model inputs,
the form every study trains on.
"""

import dataclasses
from collections.abc import Mapping

import numpy as np

from mlp.data import preprocess
from mlp.data.common import DataError, ImageData

__all__ = ["DataError", "Dataset", "ImageData", "load", "load_images", "NAMES", "IMAGE_NAMES"]

NAMES = ("har", "cifar10", "fer2013")
IMAGE_NAMES = ("cifar10", "fer2013")


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

  @property
  def num_inputs(self) -> int:
    return int(np.prod(self.input_shape))

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def load_images(cfg: Mapping, data_dir: str | None = None) -> ImageData:
  """The uint8 images and splits of an image data set (cifar10, fer2013), not preprocessed.

  Uses ``cfg["val_fraction"]``, ``cfg["split_seed"]`` and, for cifar10, ``cfg["limit_train"]``.
  """
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


def load(cfg: Mapping, data_dir: str | None = None) -> Dataset:
  """Load the data set named by ``cfg["name"]`` with the split and preprocessing options in ``cfg``.

  ``data_dir`` (a ``--data_dir`` flag) overrides ``cfg["data_dir"]``; when both are empty the
  loaders fall back to ``$MLP_DATA_DIR``, then the cache, then a download.
  """
  name = cfg["name"]
  data_dir = data_dir or cfg.get("data_dir") or None
  if name == "har":
    from mlp.data import har

    norm = str(with_added_fields(cfg)["subject_norm"])
    har.check_subject_norm(norm, "config field data.subject_norm")
    d = har.load(
      data_dir,
      val_subjects=int(cfg["val_subjects"]),
      seed=int(cfg["split_seed"]),
      subject_norm=norm,
    )
    tests = {"test": (d.x_test, d.y_test)}
    return Dataset(
      name="har",
      x_train=d.x_train.astype(np.float32),
      y_train=d.y_train.astype(np.int32),
      x_val=d.x_val.astype(np.float32),
      y_val=d.y_val.astype(np.int32),
      tests={k: (x.astype(np.float32), y.astype(np.int32)) for k, (x, y) in tests.items()},
      class_names=tuple(d.class_names),
      input_shape=(d.x_train.shape[1],),
      preprocess=preprocess.fit(d.x_train[:1], "raw"),
      notes=(d.split_note,),
    )
  if name in IMAGE_NAMES:
    d = load_images(cfg, data_dir)
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
        + f"; preprocessing {kind!r} fitted on train",
      ),
    )
  raise DataError(f"unknown data set {name!r}; expected one of {NAMES} (config field data.name)")
