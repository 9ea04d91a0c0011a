"""TensorBoard logging (scalars and HParams) through tensorboard's own writer, without TensorFlow.

Layout of a study with the HParams dashboard::

  root/hparams_experiment.pb   write_hparams_config(root, ...): the experiment (hparams, metrics)
  root/<run>/                  SummaryWriter(root / run): the experiment copied from the nearest
                               folder above, session start/end, scalar metrics

TensorBoard lists every folder holding an event file as a run: an experiment summary in an event
file at the root would be an empty run ".". The HParams plugin takes the experiment from whichever
run has one, so each run's events carry a copy. The experiment lists the swept hyperparameters
first, with the ``differs`` flag that the dashboard shows by default (the first five), then the
others; it declares no domains of values, since a resumed study with more runs (seeds, grid
values) would leave older copies with older domains, and the dashboard hides the sessions whose
value is outside a discrete domain.

Events are written with `tensorboard.summary.writer.event_file_writer.EventFileWriter`; the HParams
protos are built by hand with `tensorboard.plugins.hparams` (api_pb2, plugin_data_pb2, metadata)
because `tensorboard.plugins.hparams.summary` imports TensorFlow. Nothing here imports TensorFlow.

HParam values are normalised to what the HParams plugin accepts (bool, number, string): numpy
scalars become Python scalars, sequences such as hidden widths ``(300, 100)`` become ``"300-100"``
(an empty sequence becomes ``"none"``), and ``None`` becomes ``"none"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import struct_pb2
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from mlp import fileio

HParamValue = float | int | str | bool

_STATUSES = {
  "success": api_pb2.STATUS_SUCCESS,
  "failure": api_pb2.STATUS_FAILURE,
  "running": api_pb2.STATUS_RUNNING,
  "unknown": api_pb2.STATUS_UNKNOWN,
}


def hparam_value(value: Any) -> HParamValue:
  """Normalise one hyperparameter value to a bool, int, float or str.

  Sequences are joined with "-" (``(300, 100)`` -> ``"300-100"``); ``None`` and empty sequences
  become ``"none"``. Raises TypeError for other unsupported types (e.g. dicts).
  """
  if isinstance(value, np.generic):
    value = value.item()
  if value is None:
    return "none"
  if isinstance(value, bool | int | float | str):
    return value
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return hparam_value(value.item())
  if isinstance(value, Sequence | np.ndarray) and not isinstance(value, bytes | Mapping):
    parts = [str(hparam_value(v)) for v in value]
    return "-".join(parts) if parts else "none"
  raise TypeError(f"unsupported hyperparameter value {value!r} of type {type(value).__name__}")


def flat_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
  """A tuple of floats (per-layer dropout rates) as one number per element, ``name/i``, so that
  the HParams dashboard filters and plots them as numbers; other values stay as they are."""
  out: dict[str, Any] = {}
  for name, value in hparams.items():
    if isinstance(value, tuple | list) and value and all(isinstance(v, float) for v in value):
      out.update({f"{name}/{i}": v for i, v in enumerate(value)})
    else:
      out[str(name)] = value
  return out


def domains(hparams: Sequence[Mapping[str, Any]]) -> dict[str, list[HParamValue]]:
  """Each (flattened) hyperparameter's values over runs: the domains for write_hparams_config."""
  flat = [flat_hparams(h) for h in hparams]
  names = dict.fromkeys(k for h in flat for k in h)
  return {k: sorted({hparam_value(h[k]) for h in flat if k in h}) for k in names}


def varying(hparams: Sequence[Mapping[str, Any]]) -> list[str]:
  """The (flattened) hyperparameters with more than one value over runs, in first-seen order."""
  return [k for k, values in domains(hparams).items() if len(values) > 1]


def _proto_value(value: HParamValue) -> Any:
  """Returns a google.protobuf.Value holding `value`."""
  out = struct_pb2.Value()
  if isinstance(value, bool):
    out.bool_value = value
  elif isinstance(value, int | float):
    out.number_value = float(value)
  else:
    out.string_value = value
  return out


def _data_type(value: HParamValue) -> int:
  if isinstance(value, bool):
    return api_pb2.DATA_TYPE_BOOL
  if isinstance(value, int | float):
    return api_pb2.DATA_TYPE_FLOAT64
  return api_pb2.DATA_TYPE_STRING


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
  """Summary holding one HParams plugin message (as tensorboard's own summary_v2 builds it)."""
  summary = summary_pb2.Summary()
  summary.value.add(
    tag=tag,
    metadata=hp_metadata.create_summary_metadata(data),
    tensor=hp_metadata.NULL_TENSOR,
  )
  return summary


def _scalar_summary(tag: str, value: float) -> summary_pb2.Summary:
  """Summary in the scalars plugin format (rank-0 float32 tensor, plugin "scalars")."""
  tensor = tensor_pb2.TensorProto(
    dtype=types_pb2.DT_FLOAT,
    tensor_shape=tensor_shape_pb2.TensorShapeProto(),
    float_val=[float(value)],
  )
  summary = summary_pb2.Summary()
  summary.value.add(
    tag=tag, metadata=scalar_metadata.create_summary_metadata("", ""), tensor=tensor
  )
  return summary


class SummaryWriter:
  """Writes scalars and HParams session info for one run into `logdir` (an event file)."""

  def __init__(self, logdir: str | os.PathLike, *, flush_secs: float = 30.0) -> None:
    self.logdir = os.fspath(logdir)
    self._writer: EventFileWriter | None = EventFileWriter(
      self.logdir, max_queue_size=100, flush_secs=flush_secs
    )
    self._session_started = False

  def _add(self, summary: summary_pb2.Summary, step: int) -> None:
    if self._writer is None:
      raise RuntimeError(f"SummaryWriter for {self.logdir} is closed")
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def scalar(self, tag: str, value: float, step: int) -> None:
    """Logs one scalar (shown in TensorBoard's Scalars dashboard)."""
    self._add(_scalar_summary(tag, float(value)), step)

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    """Logs several scalars at the same step."""
    for tag, value in values.items():
      self.scalar(tag, value, step)

  def hparams(self, hparams: Mapping[str, Any], *, trial_id: str | None = None) -> None:
    """Writes the HParams session start for this run with its hyperparameter values, after the
    study's experiment (:func:`write_hparams_config`) when a folder above holds one.

    `trial_id` names the session group (runs with the same id, e.g. different seeds, are grouped);
    it defaults to a hash of the normalised hyperparameters. Values are normalised with
    `hparam_value`. The matching session end is written by `close`.
    """
    experiment = _study_experiment(self.logdir)
    if experiment is not None:
      self._add(_hparams_summary(hp_metadata.EXPERIMENT_TAG, experiment), step=0)
    values = {str(k): hparam_value(v) for k, v in flat_hparams(hparams).items()}
    if trial_id is None:
      blob = json.dumps(values, sort_keys=True, separators=(",", ":"))
      trial_id = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    info = plugin_data_pb2.SessionStartInfo(group_name=trial_id, start_time_secs=time.time())
    for name in sorted(values):
      info.hparams[name].CopyFrom(_proto_value(values[name]))
    data = plugin_data_pb2.HParamsPluginData(session_start_info=info)
    self._add(_hparams_summary(hp_metadata.SESSION_START_INFO_TAG, data), step=0)
    self._session_started = True

  def end_session(self, status: str = "success") -> None:
    """Writes the HParams session end ("success", "failure", "running" or "unknown")."""
    if status not in _STATUSES:
      raise ValueError(f"status must be one of {sorted(_STATUSES)}, got {status!r}")
    info = plugin_data_pb2.SessionEndInfo(status=_STATUSES[status], end_time_secs=time.time())
    data = plugin_data_pb2.HParamsPluginData(session_end_info=info)
    self._add(_hparams_summary(hp_metadata.SESSION_END_INFO_TAG, data), step=0)
    self._session_started = False

  def flush(self) -> None:
    """Writes pending events to disk."""
    if self._writer is not None:
      self._writer.flush()

  def close(self, *, status: str = "success") -> None:
    """Ends the HParams session (if `hparams` was called) with `status`, then closes the file."""
    if self._writer is None:
      return
    if self._session_started:
      self.end_session(status)
    self._writer.close()
    self._writer = None

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self.close(status="success" if exc_type is None else "failure")


EXPERIMENT_FILE = "hparams_experiment.pb"  # a study's HParams experiment, at its logdir's root
EXPERIMENT_DEPTH = 3  # how many folders above its own a run looks for it (root/<name>/seed<k>)


def write_hparams_config(
  logdir: str | os.PathLike,
  hparams: Mapping[str, Sequence[Any] | None],
  metrics: Sequence[str],
  *,
  swept: Sequence[str] | None = None,
) -> None:
  """Writes a study's HParams experiment to ``logdir``/hparams_experiment.pb, for the runs that
  are written below it (:meth:`SummaryWriter.hparams` copies it into each run's events).

  ``hparams`` maps each hyperparameter name to its values over the study's runs (``[(300, 100),
  (500,)]`` become strings as in `hparam_value`; they give its type), or to None when they are
  not known in advance (a search's sampler picks them). ``swept`` names the hyperparameters the
  study varies (a grid's axes): they come first, flagged ``differs``, which the dashboard shows
  by default; without it, those with several values or None. `metrics` are the scalar tags to
  show as metric columns (as logged by `SummaryWriter.scalar` in each run directory).
  """
  infos = {}
  for name, domain in hparams.items():
    info = api_pb2.HParamInfo(name=str(name))
    if domain is not None:
      if isinstance(domain, str | bytes) or not isinstance(domain, Sequence | np.ndarray):
        raise TypeError(f"domain of hparam {name!r} must be a list/tuple of values or None")
      values = list(dict.fromkeys(hparam_value(v) for v in domain))
      if not values:
        raise ValueError(f"domain of hparam {name!r} is empty")
      types = {_data_type(v) for v in values}
      if len(types) != 1:
        raise ValueError(f"domain of hparam {name!r} mixes value types: {values!r}")
      info.type = types.pop()
    if swept is not None:
      info.differs = name in swept
    else:
      info.differs = domain is None or len(values) > 1
    infos[str(name)] = info
  order = [n for n in (swept or ()) if n in infos] + [n for n in infos if n not in (swept or ())]
  metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=str(tag))) for tag in metrics]
  experiment = api_pb2.Experiment(
    hparam_infos=[infos[n] for n in order], metric_infos=metric_infos, time_created_secs=time.time()
  )
  data = plugin_data_pb2.HParamsPluginData(experiment=experiment)
  blob = data.SerializeToString()
  fileio.atomic_write(os.path.join(logdir, EXPERIMENT_FILE), lambda f: f.write(blob))


def _study_experiment(logdir: str) -> plugin_data_pb2.HParamsPluginData | None:
  """The experiment of the study a run folder is in: the nearest hparams_experiment.pb above."""
  here = os.path.abspath(logdir)
  for _ in range(EXPERIMENT_DEPTH + 1):
    path = os.path.join(here, EXPERIMENT_FILE)
    if os.path.isfile(path):
      with open(path, "rb") as f:
        return plugin_data_pb2.HParamsPluginData.FromString(f.read())
    here = os.path.dirname(here)
  return None


def _accumulator(logdir: str | os.PathLike) -> plugin_event_accumulator.EventAccumulator:
  path = os.fspath(logdir)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no TensorBoard log directory at {path}")
  acc = plugin_event_accumulator.EventAccumulator(
    path, size_guidance={plugin_event_accumulator.TENSORS: 0}
  )
  return acc.Reload()


def _tag_to_content(
  acc: plugin_event_accumulator.EventAccumulator, plugin: str
) -> dict[str, bytes]:
  """{tag: plugin content} for `plugin`, empty if the plugin has no data."""
  return dict(acc.PluginTagToContent(plugin)) if plugin in acc.ActivePlugins() else {}


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """Reads back the scalars of one run directory with tensorboard's event accumulator.

  Returns {tag: [(step, value), ...]} in the order written (subdirectories are not read).
  """
  acc = _accumulator(logdir)
  out = {}
  for tag in _tag_to_content(acc, scalar_metadata.PLUGIN_NAME):
    out[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
  return out


def _read_hparams_data(logdir: str | os.PathLike) -> dict[str, bytes]:
  """{hparams tag: plugin content} for one directory."""
  return _tag_to_content(_accumulator(logdir), hp_metadata.PLUGIN_NAME)


def _from_proto_value(value: Any) -> HParamValue:
  kind = value.WhichOneof("kind")
  if kind == "bool_value":
    return value.bool_value
  if kind == "number_value":
    x = value.number_value
    return int(x) if x.is_integer() else x
  if kind == "string_value":
    return value.string_value
  raise ValueError(f"unexpected hparam value kind {kind!r}")


def read_hparams(logdir: str | os.PathLike) -> dict[str, HParamValue]:
  """Reads back the session-start hyperparameters of one run with tensorboard's reader.

  Numbers that are whole come back as int (the HParams plugin stores all numbers as floats).
  Raises LookupError if the run has no session start.
  """
  content = _read_hparams_data(logdir).get(hp_metadata.SESSION_START_INFO_TAG)
  if content is None:
    raise LookupError(f"no HParams session start in {os.fspath(logdir)}")
  info = hp_metadata.parse_session_start_info_plugin_data(content)
  return {name: _from_proto_value(v) for name, v in info.hparams.items()}


def read_experiment(logdir: str | os.PathLike) -> tuple[dict[str, int], list[str]]:
  """Reads back the HParams experiment in a run's events with tensorboard's reader: ({hparam:
  data type (api_pb2.DataType)}, metric tags), hyperparameters in their order. Raises
  LookupError if ``logdir`` has none."""
  content = _read_hparams_data(logdir).get(hp_metadata.EXPERIMENT_TAG)
  if content is None:
    raise LookupError(f"no HParams experiment in {os.fspath(logdir)}")
  exp = hp_metadata.parse_experiment_plugin_data(content)
  return {h.name: h.type for h in exp.hparam_infos}, [m.name.tag for m in exp.metric_infos]


def swept_first(logdir: str | os.PathLike) -> list[str]:
  """The hyperparameters a run's experiment flags ``differs`` (shown by default), in order."""
  content = _read_hparams_data(logdir).get(hp_metadata.EXPERIMENT_TAG)
  if content is None:
    raise LookupError(f"no HParams experiment in {os.fspath(logdir)}")
  exp = hp_metadata.parse_experiment_plugin_data(content)
  return [h.name for h in exp.hparam_infos if h.differs]
