"""Saving and loading MLPs without pickle: weights in ``<path>.npz``, the rest in ``<path>.json``.

``<path>.npz`` holds ``layer_<i>_w`` (fan_in, fan_out) and ``layer_<i>_b`` (fan_out,) for each
layer, plus extra arrays (e.g. preprocessing statistics) as ``extra/<name>``. ``<path>.json``
holds the format tag, layer shapes and dtypes, the config, free-form metadata (dataset,
class_names, input_shape, preprocessing kind, metrics, ...) and the sha256 of the .npz.

Saving is atomic: each file is written to a temporary file and moved into place with
`os.replace`, any old .json is removed first, and the .npz is written before the .json, so a model
is complete iff its .json exists. Config and meta go through JSON: tuples come back as lists, numpy
scalars/arrays as Python numbers/lists, and dict keys as strings.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mlp.model import Dense

FORMAT = "mlp-model/1"
_EXTRA = "extra/"


class CheckpointError(Exception):
  """A saved model is missing, incomplete, corrupt, or not what the caller needs."""


class Model(NamedTuple):
  """A loaded model: numpy parameters plus the JSON-decoded config, meta and extra arrays."""

  params: tuple[Dense, ...]
  config: dict
  meta: dict
  arrays: dict[str, np.ndarray]


def _prefix(path: str | os.PathLike) -> str:
  """The path without a trailing .npz / .json."""
  path = os.fspath(path)
  for suffix in (".npz", ".json"):
    if path.endswith(suffix):
      return path[: -len(suffix)]
  return path


def to_jsonable(obj: Any, where: str = "value") -> Any:
  """Converts `obj` to plain JSON types (tuples -> lists, numpy -> Python, ConfigDict -> dict)."""
  if obj is None or isinstance(obj, bool | int | float | str):
    return obj
  if isinstance(obj, np.floating) and obj.dtype.itemsize < 8:
    return float(str(obj))  # np.float32(0.1) -> 0.1, not 0.10000000149011612
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    if obj.dtype.hasobject:
      raise TypeError(f"{where}: object arrays cannot be stored as JSON")
    return obj.tolist()
  if hasattr(obj, "to_dict") and callable(obj.to_dict):  # ml_collections.ConfigDict
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    out = {}
    for k, v in obj.items():
      if isinstance(k, np.generic):
        k = k.item()
      if not isinstance(k, str | int | float | bool) and k is not None:
        raise TypeError(f"{where}: key {k!r} cannot be a JSON object key")
      out[str(k) if not isinstance(k, str) else k] = to_jsonable(v, f"{where}[{k!r}]")
    return out
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if isinstance(obj, Sequence | set | frozenset) and not isinstance(obj, bytes | bytearray):
    items = sorted(obj) if isinstance(obj, set | frozenset) else obj
    return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
  if hasattr(obj, "__array__"):  # e.g. jax arrays
    return to_jsonable(np.asarray(obj), where)
  raise TypeError(f"{where}: cannot convert {type(obj).__name__} to JSON")


def atomic_write(path: str | os.PathLike, write: Any) -> None:
  """Calls `write(f)` on a new temp file next to `path` (opened "w+b"), fsyncs it, renames it."""
  path = os.fspath(path)
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(
    directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
  )
  # os.open (not mkstemp) so the file gets the usual permissions (0o666 minus umask).
  fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "w+b") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise
  _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
  """Best effort: make a rename in `directory` durable."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically: readers see the old file or the new, never half."""
  atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON atomically (converted with `to_jsonable`)."""
  atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def _check_chain(shapes: Sequence[tuple[tuple[int, ...], tuple[int, ...]]], where: str) -> None:
  """Raises CheckpointError unless the (w, b) shapes form a chain of affine layers."""
  if not shapes:
    raise CheckpointError(f"{where}: model has no layers")
  for i, (w, b) in enumerate(shapes):
    if len(w) != 2 or len(b) != 1 or b[0] != w[1]:
      raise CheckpointError(
        f"{where}: layer {i} has w {w} and b {b}; expected w (fan_in, fan_out), b (fan_out,)"
      )
    if i and shapes[i - 1][0][1] != w[0]:
      raise CheckpointError(
        f"{where}: layer shapes do not chain: layer {i - 1} outputs {shapes[i - 1][0][1]} "
        f"features but layer {i} expects {w[0]}"
      )


def save(
  path: str | os.PathLike,
  params: Sequence[Dense],
  *,
  config: Mapping[str, Any],
  meta: Mapping[str, Any] | None = None,
  arrays: Mapping[str, np.ndarray] | None = None,
) -> None:
  """Saves `params` to ``<path>.npz`` and config/meta/shapes to ``<path>.json`` (atomically).

  `path` is a prefix (a trailing .npz/.json is dropped). Arrays keep their dtype. `arrays` are
  extra numeric arrays (e.g. preprocessing mean/std) stored as ``extra/<name>``.
  """
  prefix = _prefix(path)
  tensors: dict[str, np.ndarray] = {}
  layers = []
  for i, layer in enumerate(params):
    w, b = (np.asarray(x) for x in layer)
    tensors[f"layer_{i}_w"], tensors[f"layer_{i}_b"] = w, b
    layers.append({"w": list(w.shape), "b": list(b.shape), "dtype": str(w.dtype)})
  try:
    _check_chain([(tuple(x["w"]), tuple(x["b"])) for x in layers], f"cannot save {prefix}")
  except CheckpointError as e:
    raise ValueError(str(e)) from None
  extras = {}
  for name, value in (arrays or {}).items():
    value = np.asarray(value)
    if value.dtype.hasobject:
      raise ValueError(f"extra array {name!r} has dtype object; only numeric arrays can be saved")
    tensors[_EXTRA + name] = value
    extras[name] = {"shape": list(value.shape), "dtype": str(value.dtype)}
  for name, value in tensors.items():
    if value.dtype.hasobject:
      raise ValueError(f"{name} has dtype object; only numeric arrays can be saved")
  header = {
    "format": FORMAT,
    "dtype": layers[0]["dtype"],
    "layers": layers,
    "arrays": extras,
    "config": to_jsonable(config, "config"),
    "meta": to_jsonable(meta or {}, "meta"),
  }
  json_path, npz_path = prefix + ".json", prefix + ".npz"
  # Remove the old .json first, so the model is incomplete (not mismatched) if we crash below.
  if os.path.exists(json_path):
    os.unlink(json_path)
    _fsync_dir(os.path.dirname(json_path) or ".")
  digest = hashlib.sha256()

  def write_npz(f: Any) -> None:
    np.savez(f, **tensors)
    f.flush()
    f.seek(0)
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)

  atomic_write(npz_path, write_npz)
  header["npz_sha256"] = digest.hexdigest()
  atomic_write_json(json_path, header)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _read_header(json_path: str, npz_path: str) -> dict:
  prefix = json_path[: -len(".json")]
  if not os.path.exists(json_path):
    if os.path.exists(npz_path):
      raise CheckpointError(
        f"incomplete model at {prefix}: {npz_path} exists but {json_path} does not — the save was "
        "interrupted or is still in progress"
      )
    raise CheckpointError(
      f"no model at {prefix}: expected {json_path} and {npz_path} — was the run finished?"
    )
  try:
    with open(json_path, encoding="utf-8") as f:
      header = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{json_path} is corrupt or truncated (not valid JSON: {e})") from e
  if not isinstance(header, dict):
    raise CheckpointError(f"{json_path} is not a model description (expected a JSON object)")
  fmt = header.get("format")
  if fmt != FORMAT:
    raise CheckpointError(
      f"{json_path} has format {fmt!r}, but this code reads {FORMAT!r} — not a model saved by "
      "mlp.checkpoint, or saved by an incompatible version"
    )
  for key, kind in (("layers", list), ("arrays", dict), ("config", dict), ("meta", dict)):
    if not isinstance(header.get(key), kind):
      raise CheckpointError(
        f"{json_path} is corrupt: field {key!r} missing or not a {kind.__name__}"
      )
  return header


def _read_npz(npz_path: str) -> dict[str, np.ndarray]:
  if not os.path.exists(npz_path):
    raise CheckpointError(f"{npz_path} is missing (its .json exists; the model files were moved?)")
  if not zipfile.is_zipfile(npz_path):
    raise CheckpointError(f"{npz_path} is corrupt or truncated (not a .npz/zip archive)")
  try:
    with np.load(npz_path, allow_pickle=False) as data:
      return {name: data[name] for name in data.files}
  except ValueError as e:
    if "object arrays" in str(e).lower():
      raise CheckpointError(
        f"{npz_path} contains object arrays, which would need pickle; refusing to load it"
      ) from e
    raise CheckpointError(f"{npz_path} is corrupt or truncated ({e})") from e
  except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
    raise CheckpointError(f"{npz_path} is corrupt or truncated ({type(e).__name__}: {e})") from e


def load(path: str | os.PathLike) -> Model:
  """Loads a model saved by `save`; `path` is the prefix or the .npz / .json file.

  Params come back as numpy arrays with the saved dtype. Raises CheckpointError with an
  explanation if the model is missing, incomplete, corrupt or inconsistent.
  """
  prefix = _prefix(path)
  json_path, npz_path = prefix + ".json", prefix + ".npz"
  header = _read_header(json_path, npz_path)
  tensors = _read_npz(npz_path)

  layers = header["layers"]
  expected = {f"layer_{i}_{p}" for i in range(len(layers)) for p in "wb"}
  expected |= {_EXTRA + name for name in header["arrays"]}
  if set(tensors) != expected:
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    raise CheckpointError(
      f"{npz_path} does not match {json_path}: missing arrays {missing}, unexpected {unexpected}"
    )

  def check(name: str, spec: Any) -> np.ndarray:
    array = tensors[name]
    try:
      shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    except (KeyError, TypeError) as e:
      raise CheckpointError(f"{json_path} is corrupt: bad entry for {name}: {spec!r}") from e
    if array.shape != shape or array.dtype != dtype:
      raise CheckpointError(
        f"{npz_path} does not match {json_path}: {name} is {array.dtype}{list(array.shape)}, "
        f"the .json says {dtype}{list(shape)}"
      )
    return array

  params = []
  for i, spec in enumerate(layers):
    if not isinstance(spec, dict):
      raise CheckpointError(f"{json_path} is corrupt: bad entry for layer {i}: {spec!r}")
    dtype = spec.get("dtype")
    w = check(f"layer_{i}_w", {"shape": spec.get("w"), "dtype": dtype})
    b = check(f"layer_{i}_b", {"shape": spec.get("b"), "dtype": dtype})
    params.append(Dense(w, b))
  _check_chain([(p.w.shape, p.b.shape) for p in params], prefix)
  arrays = {name: check(_EXTRA + name, spec) for name, spec in header["arrays"].items()}

  digest = header.get("npz_sha256")
  if digest is not None and _sha256(npz_path) != digest:
    raise CheckpointError(
      f"{npz_path} does not match {json_path} (sha256 differs): the .npz was modified, or the "
      "two files come from different saves"
    )
  return Model(tuple(params), header["config"], header["meta"], arrays)


def _dataset(model: Model) -> str | None:
  for source in (model.meta, model.config):
    name = source.get("dataset")
    if isinstance(name, str):
      return name
  return None


def check_compatible(
  model: Model,
  *,
  dataset: str | None = None,
  input_dim: int | None = None,
  num_classes: int | None = None,
) -> None:
  """Raises CheckpointError if `model` cannot be used on `dataset` / `input_dim` / `num_classes`.

  The model's dataset is ``meta["dataset"]`` (or ``config["dataset"]``); if neither is recorded
  the dataset check is skipped. Shapes are always checked when given.
  """
  model_in, model_out = model.params[0].w.shape[0], model.params[-1].w.shape[1]
  trained_on = _dataset(model)
  if dataset is not None and trained_on is not None and dataset != trained_on:
    theirs = f" ({input_dim})" if input_dim is not None else ""
    raise CheckpointError(
      f"model was trained on {trained_on} ({model_in} inputs), not {dataset}{theirs}"
    )
  if input_dim is not None and input_dim != model_in:
    on = f" (trained on {trained_on})" if trained_on else ""
    data = f"{dataset} has" if dataset else "the data has"
    raise CheckpointError(f"model expects {model_in} inputs{on}, but {data} {input_dim}")
  if num_classes is not None and num_classes != model_out:
    on = f" (trained on {trained_on})" if trained_on else ""
    raise CheckpointError(f"model predicts {model_out} classes{on}, not {num_classes}")
