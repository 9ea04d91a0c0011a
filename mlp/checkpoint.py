"""Saving and loading networks without pickle: arrays in <path>.npz, the rest in <path>.json.

``<path>.npz`` holds ``param/<layer>/<field>`` (``w``, ``b``, ``scale``, ``shift``) and
``state/<layer>/<field>`` (batch-norm ``mean``, ``var``) per layer, plus extra arrays (e.g.
preprocessing statistics) as ``extra/<name>``. ``<path>.json`` holds the format tag, the network
(architecture string with its dropout rates and momenta, input shape, classes), the shape and
dtype of every array, the config, free-form metadata (dataset, class_names, preprocessing kind,
...) and the sha256 of the .npz. Models of the first format (``mlp-model/1``: ``layer_<i>_w`` /
``layer_<i>_b`` of an MLP, dropout in the meta) still load.

Saving is atomic: each file is written to a temporary file and moved into place with
`os.replace`, any old .json is removed first, and the .npz is written before the .json, so a model
is complete iff its .json exists. Config and meta go through JSON: tuples come back as lists, numpy
scalars/arrays as Python numbers/lists, and dict keys as strings.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from mlp import fileio
from mlp import model as model_lib

FORMAT = "mlp-model/2"
FORMAT_V1 = "mlp-model/1"  # MLPs saved before layers were modules; read, never written
_EXTRA = "extra/"


class CheckpointError(Exception):
  """A saved model is missing, incomplete, corrupt, or not what the caller needs."""


class Model(NamedTuple):
  """A loaded model: its network, numpy params and state, the JSON config, meta, extra arrays."""

  net: model_lib.Net
  hyper: model_lib.LayerHyper  # per layer: dropout rate, batch-norm momentum, or ()
  params: model_lib.Params
  state: model_lib.State
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


def exists(path: str | os.PathLike) -> bool:
  """Whether a complete model is saved at ``path`` (its .json is written last)."""
  return os.path.exists(_prefix(path) + ".json")


def _flat(tree: tuple, kind: str, leaf=np.asarray) -> dict[str, Any]:
  """{"<kind>/<layer>/<field>": leaf(array)} for per-layer NamedTuples (empty layers skipped)."""
  return {
    f"{kind}/{i}/{field}": leaf(getattr(entry, field))
    for i, entry in enumerate(tree)
    for field in getattr(entry, "_fields", ())
  }


def _describe(tensors: Mapping[str, np.ndarray]) -> dict[str, dict]:
  return {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()}


def save(
  path: str | os.PathLike,
  net: model_lib.Net,
  params: model_lib.Params,
  state: model_lib.State = None,
  *,
  hyper: model_lib.LayerHyper | None = None,
  config: Mapping[str, Any],
  meta: Mapping[str, Any] | None = None,
  arrays: Mapping[str, np.ndarray] | None = None,
) -> None:
  """Saves a network's params and state to ``<path>.npz``, its description to ``<path>.json``.

  `path` is a prefix (a trailing .npz/.json is dropped). The .json holds the architecture string
  with the layers' hyperparameters (``hyper``: dropout rates, batch-norm momenta), the input
  shape, and the shape and dtype of every array. Arrays keep their dtype. `arrays` are extra
  numeric arrays (e.g. preprocessing mean/std) stored as ``extra/<name>``.
  """
  prefix = _prefix(path)
  state = state if state is not None else tuple(() for _ in net.layers)
  if hyper is None and any(layer.hyper != () for layer in net.layers):
    raise ValueError(f"{net} has dropout rates or momenta: pass them as hyper=")
  if len(params) != len(net.layers) or len(state) != len(net.layers):
    raise ValueError(f"params/state have {len(params)}/{len(state)} entries for {net}")
  _check_against(
    net, _flat(params, "param"), _flat(state, "state"), f"cannot save {prefix}", ValueError
  )
  tensors = {**_flat(params, "param"), **_flat(state, "state")}
  extras = {}
  for name, value in (arrays or {}).items():
    value = np.asarray(value)
    if value.dtype.hasobject:
      raise ValueError(f"extra array {name!r} has dtype object; only numeric arrays can be saved")
    tensors[_EXTRA + name] = value
    extras[name] = {"shape": list(value.shape), "dtype": str(value.dtype)}
  header = {
    "format": FORMAT,
    "network": {
      "layers": net.describe(hyper),
      "input_shape": list(net.input_shape),
      "num_classes": net.num_classes,
    },
    "tensors": _describe({k: v for k, v in tensors.items() if not k.startswith(_EXTRA)}),
    "arrays": extras,
    "config": fileio.to_jsonable(config, "config"),
    "meta": fileio.to_jsonable(meta or {}, "meta"),
  }
  json_path, npz_path = prefix + ".json", prefix + ".npz"
  # Remove the old .json first, so the model is incomplete (not mismatched) if we crash below.
  if os.path.exists(json_path):
    os.unlink(json_path)
    fileio.fsync_dir(os.path.dirname(json_path) or ".")
  digest = hashlib.sha256()

  def write_npz(f: Any) -> None:
    np.savez(f, **tensors)
    f.flush()
    f.seek(0)
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)

  fileio.atomic_write(npz_path, write_npz)
  header["npz_sha256"] = digest.hexdigest()
  fileio.atomic_write_json(json_path, header)


def _template(net: model_lib.Net) -> tuple[model_lib.Params, model_lib.State]:
  """Shapes and types of ``net``'s params and state, without computing them."""
  import jax

  return jax.eval_shape(lambda: model_lib.init(jax.random.key(0), net))


def _check_against(net, params: dict, state: dict, where: str, error=None) -> None:
  """Raises unless the flat param/state arrays are exactly those ``net`` has, with its shapes."""
  error = error or CheckpointError
  tp, ts = _template(net)
  shape = lambda a: tuple(a.shape)  # noqa: E731
  want = {**_flat(tp, "param", shape), **_flat(ts, "state", shape)}
  have = {k: tuple(np.shape(v)) for k, v in {**params, **state}.items()}
  if set(have) != set(want):
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    raise error(f"{where}: the arrays do not fit {net}: missing {missing}, unexpected {unexpected}")
  for k, shape in want.items():
    if have[k] != shape:
      raise error(f"{where}: {k} has shape {list(have[k])}, but {net} needs {list(shape)}")


def _unflat(template: tuple, tensors: Mapping[str, np.ndarray], kind: str) -> tuple:
  return tuple(
    type(entry)(*(tensors[f"{kind}/{i}/{f}"] for f in entry._fields)) if entry != () else ()
    for i, entry in enumerate(template)
  )


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
  if fmt not in (FORMAT, FORMAT_V1):
    raise CheckpointError(
      f"{json_path} has format {fmt!r}, but this code reads {FORMAT!r} (and {FORMAT_V1!r}) — not "
      "a model saved by mlp.checkpoint, or saved by an incompatible version"
    )
  fields = (("layers", list),) if fmt == FORMAT_V1 else (("network", dict), ("tensors", dict))
  for key, kind in (*fields, ("arrays", dict), ("config", dict), ("meta", dict)):
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

  Params and state come back as numpy arrays with the saved dtype. Raises CheckpointError with
  an explanation if the model is missing, incomplete, corrupt or inconsistent.
  """
  prefix = _prefix(path)
  json_path, npz_path = prefix + ".json", prefix + ".npz"
  header = _read_header(json_path, npz_path)
  tensors = _read_npz(npz_path)
  if header["format"] == FORMAT_V1:
    header, tensors = _from_v1(header, tensors, json_path)

  described = {**header["tensors"], **{_EXTRA + k: v for k, v in header["arrays"].items()}}
  if set(tensors) != set(described):
    missing, unexpected = (
      sorted(set(described) - set(tensors)),
      sorted(set(tensors) - set(described)),
    )
    raise CheckpointError(
      f"{npz_path} does not match {json_path}: missing arrays {missing}, unexpected {unexpected}"
    )
  for name, spec in described.items():
    try:
      shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    except (KeyError, TypeError) as e:
      raise CheckpointError(f"{json_path} is corrupt: bad entry for {name}: {spec!r}") from e
    array = tensors[name]
    if array.shape != shape or array.dtype != dtype:
      raise CheckpointError(
        f"{npz_path} does not match {json_path}: {name} is {array.dtype}{list(array.shape)}, "
        f"the .json says {dtype}{list(shape)}"
      )
  network = header["network"]
  try:
    net, hyper = model_lib.parse(
      network["layers"], network["input_shape"], int(network["num_classes"])
    )
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"{json_path} is corrupt: bad network description ({e})") from e
  params = {k: v for k, v in tensors.items() if k.startswith("param/")}
  state = {k: v for k, v in tensors.items() if k.startswith("state/")}
  _check_against(net, params, state, prefix)
  template_params, template_state = _template(net)
  arrays = {k[len(_EXTRA) :]: v for k, v in tensors.items() if k.startswith(_EXTRA)}

  digest = header.get("npz_sha256")
  if digest is not None and fileio.file_digest(npz_path) != digest:
    raise CheckpointError(
      f"{npz_path} does not match {json_path} (sha256 differs): the .npz was modified, or the "
      "two files come from different saves"
    )
  return Model(
    net,
    hyper,
    _unflat(template_params, tensors, "param"),
    _unflat(template_state, tensors, "state"),
    header["config"],
    header["meta"],
    arrays,
  )


def _from_v1(header: dict, tensors: dict, json_path: str) -> tuple[dict, dict]:
  """A first-format MLP (``layer_<i>_w/b``; input shape, dropout form and rates in meta) as the
  header and tensors of the current format."""
  old, meta = header["layers"], header["meta"]
  expected = {f"layer_{j}_{f}" for j in range(len(old)) for f in "wb"}
  expected |= {_EXTRA + name for name in header["arrays"]}
  if set(tensors) != expected:
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    raise CheckpointError(
      f"{json_path} does not match its .npz: missing arrays {missing}, unexpected {unexpected}"
    )
  try:
    widths = [int(spec["w"][1]) for spec in old]
    input_shape = [int(d) for d in meta.get("input_shape") or [old[0]["w"][0]]]
    rates = [float(r) for r in meta.get("dropout_rates") or [0.0] * len(old)]
    form = meta.get("dropout") if meta.get("dropout") in ("regular", "inverted") else "regular"
    arch = model_lib.mlp_architecture(input_shape, widths[:-1], rates)
    net, hyper = model_lib.parse(arch, input_shape, widths[-1], dropout=form)
    dense = [i for i, layer in enumerate(net.layers) if layer.kind == "dense"]
    renamed = {k: v for k, v in tensors.items() if k.startswith(_EXTRA)}
    described = {}
    for j, i in enumerate(dense):
      for f in "wb":
        renamed[f"param/{i}/{f}"] = tensors[f"layer_{j}_{f}"]
        described[f"param/{i}/{f}"] = {"shape": old[j][f], "dtype": old[j]["dtype"]}
  except (KeyError, IndexError, TypeError, ValueError) as e:
    raise CheckpointError(
      f"{json_path}: a first-format model that does not read as an MLP ({e})"
    ) from e
  network = {"layers": net.describe(hyper), "input_shape": input_shape, "num_classes": widths[-1]}
  return {**header, "network": network, "tensors": described}, renamed


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
  model_in, model_out = model.net.num_inputs, model.net.num_classes
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
