"""Tests for mlp.tensorboard: events read back with tensorboard's own readers and HParams plugin."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
  api_pb2,
  backend_context,
  get_experiment,
  list_session_groups,
)
from tensorboard.plugins.hparams import metadata as hp_metadata

from mlp import tensorboard as tb

ROOT = str(Path(__file__).resolve().parents[1])
METRICS = ["val/accuracy", "train/loss"]


def write_study(root, swept=None):
  """A two-run study: experiment config at root, one SummaryWriter per run."""
  tb.write_hparams_config(
    root,
    {"lr": [0.1, 0.01], "hidden": [(300, 100), (500,)], "batch_norm": [True, False], "seed": None},
    METRICS,
    swept=swept,
  )
  for i, (lr, hidden) in enumerate([(0.1, (300, 100)), (0.01, (500,))]):
    with tb.SummaryWriter(root / f"run{i}") as writer:
      writer.hparams({"lr": lr, "hidden": hidden, "batch_norm": True, "seed": i}, trial_id=f"t{i}")
      for step in range(3):
        writer.scalars({"val/accuracy": 0.5 + 0.1 * step + i, "train/loss": 1.0 / (step + 1)}, step)


def hparams_backend(root):
  """The HParams plugin backend over `root`, as TensorBoard would build it."""
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(root))
  multiplexer.Reload()
  provider = data_provider.MultiplexerDataProvider(multiplexer, str(root))
  tb_context = base_plugin.TBContext(
    logdir=str(root), multiplexer=multiplexer, data_provider=provider
  )
  return backend_context.Context(tb_context), provider


def test_scalars_round_trip(tmp_path):
  with tb.SummaryWriter(tmp_path) as writer:
    writer.scalar("loss", 2.5, step=0)
    writer.scalar("loss", np.float32(1.25), step=10)
    writer.scalars({"acc": 0.75, "lr": 1e-3}, step=10)
  scalars = tb.read_scalars(tmp_path)
  assert scalars["loss"] == [(0, 2.5), (10, 1.25)]
  assert scalars["acc"] == [(10, 0.75)]
  assert scalars["lr"][0][0] == 10 and scalars["lr"][0][1] == pytest.approx(1e-3)
  assert set(scalars) == {"loss", "acc", "lr"}


def test_flush_makes_data_visible_before_close(tmp_path):
  writer = tb.SummaryWriter(tmp_path)
  writer.scalar("x", 1.0, step=3)
  writer.flush()
  assert tb.read_scalars(tmp_path) == {"x": [(3, 1.0)]}
  writer.close()
  writer.close()  # idempotent
  with pytest.raises(RuntimeError, match="closed"):
    writer.scalar("x", 2.0, step=4)


def test_scalars_dashboard_sees_scalars(tmp_path):
  write_study(tmp_path)
  _, provider = hparams_backend(tmp_path)
  listing = provider.list_scalars(context.RequestContext(), experiment_id="", plugin_name="scalars")
  assert set(listing) == {"run0", "run1"}
  assert set(listing["run0"]) == set(METRICS)


def test_hparams_round_trip(tmp_path):
  with tb.SummaryWriter(tmp_path) as writer:
    writer.hparams(
      {
        "lr": np.float32(0.5),
        "hidden": (300, 100),
        "linear": (),
        "act": "relu",
        "bn": False,
        "n": 3,
      }
    )
  assert tb.read_hparams(tmp_path) == {
    "lr": 0.5,
    "hidden": "300-100",
    "linear": "none",
    "act": "relu",
    "bn": False,
    "n": 3,
  }


def test_read_hparams_without_session(tmp_path):
  with tb.SummaryWriter(tmp_path) as writer:
    writer.scalar("x", 1.0, 0)
  with pytest.raises(LookupError, match="no HParams session start"):
    tb.read_hparams(tmp_path)


def test_hparam_value():
  assert tb.hparam_value((300, 100)) == "300-100"
  assert tb.hparam_value([512]) == "512"
  assert tb.hparam_value(np.int64(4)) == 4 and isinstance(tb.hparam_value(np.int64(4)), int)
  assert tb.hparam_value(None) == "none"
  with pytest.raises(TypeError, match="unsupported hyperparameter value"):
    tb.hparam_value({"a": 1})


def test_hparams_plugin_data(tmp_path):
  write_study(tmp_path)
  backend, _ = hparams_backend(tmp_path)
  content = backend.hparams_metadata(context.RequestContext(), "")
  assert set(content) == {"run0", "run1"}  # each run carries the experiment: no empty run "."
  experiment = hp_metadata.parse_experiment_plugin_data(content["run0"][hp_metadata.EXPERIMENT_TAG])
  infos = {info.name: info for info in experiment.hparam_infos}
  assert set(infos) == {"lr", "hidden", "batch_norm", "seed"}
  assert infos["lr"].type == api_pb2.DATA_TYPE_FLOAT64
  assert infos["hidden"].type == api_pb2.DATA_TYPE_STRING
  assert infos["batch_norm"].type == api_pb2.DATA_TYPE_BOOL
  assert not any(i.HasField("domain_discrete") for i in infos.values())  # (never stale)
  assert [m.name.tag for m in experiment.metric_infos] == METRICS

  start = hp_metadata.parse_session_start_info_plugin_data(
    content["run0"][hp_metadata.SESSION_START_INFO_TAG]
  )
  assert start.group_name == "t0" and start.hparams["hidden"].string_value == "300-100"
  end = hp_metadata.parse_session_end_info_plugin_data(
    content["run0"][hp_metadata.SESSION_END_INFO_TAG]
  )
  assert end.status == api_pb2.STATUS_SUCCESS


def test_hparams_plugin_sessions(tmp_path):
  write_study(tmp_path)
  backend, _ = hparams_backend(tmp_path)
  request = api_pb2.GetExperimentRequest()
  experiment = get_experiment.Handler(context.RequestContext(), backend, "", request).run()
  assert {info.name for info in experiment.hparam_infos} == {"lr", "hidden", "batch_norm", "seed"}

  request = api_pb2.ListSessionGroupsRequest(
    start_index=0,
    slice_size=10,
    allowed_statuses=[api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_UNKNOWN],
  )
  groups = list_session_groups.Handler(context.RequestContext(), backend, "", request).run()
  by_name = {g.name: g for g in groups.session_groups}
  assert set(by_name) == {"t0", "t1"}
  t1 = by_name["t1"]
  assert t1.hparams["lr"].number_value == 0.01 and t1.hparams["hidden"].string_value == "500"
  assert [s.name for s in t1.sessions] == ["run1"]
  assert t1.sessions[0].status == api_pb2.STATUS_SUCCESS
  metrics = {m.name.tag: (m.training_step, m.value) for m in t1.metric_values}
  assert metrics["val/accuracy"] == (2, pytest.approx(1.7))
  assert metrics["train/loss"] == (2, pytest.approx(1 / 3))


def test_failed_run_status(tmp_path):
  with pytest.raises(ZeroDivisionError):
    with tb.SummaryWriter(tmp_path) as writer:
      writer.hparams({"lr": 0.1})
      raise ZeroDivisionError
  content = tb._read_hparams_data(tmp_path)
  end = hp_metadata.parse_session_end_info_plugin_data(content[hp_metadata.SESSION_END_INFO_TAG])
  assert end.status == api_pb2.STATUS_FAILURE


def test_default_trial_id_is_stable(tmp_path):
  for name in ("a", "b"):
    with tb.SummaryWriter(tmp_path / name) as writer:
      writer.hparams({"lr": 0.1, "hidden": (3,)})
  backend, _ = hparams_backend(tmp_path)
  content = backend.hparams_metadata(context.RequestContext(), "")
  groups = {
    hp_metadata.parse_session_start_info_plugin_data(
      content[run][hp_metadata.SESSION_START_INFO_TAG]
    ).group_name
    for run in ("a", "b")
  }
  assert len(groups) == 1


def test_bad_domains(tmp_path):
  with pytest.raises(ValueError, match="mixes value types"):
    tb.write_hparams_config(tmp_path, {"x": [1, "a"]}, [])
  with pytest.raises(ValueError, match="empty"):
    tb.write_hparams_config(tmp_path, {"x": []}, [])
  with pytest.raises(TypeError, match="list/tuple of values or None"):
    tb.write_hparams_config(tmp_path, {"x": "abc"}, [])


def test_does_not_import_tensorflow(tmp_path):
  code = textwrap.dedent(
    f"""
    import sys
    from mlp import tensorboard as tb
    root = {str(tmp_path)!r}
    tb.write_hparams_config(root, {{"lr": [0.1, 0.01], "hidden": [(3, 2)]}}, ["loss"])
    with tb.SummaryWriter(root + "/run") as w:
      w.hparams({{"lr": 0.1, "hidden": (3, 2)}})
      w.scalar("loss", 1.0, 0)
    assert tb.read_scalars(root + "/run") == {{"loss": [(0, 1.0)]}}
    assert tb.read_hparams(root + "/run")["hidden"] == "3-2"
    loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
    print("TF:", loaded)
    """
  )
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
  )
  assert result.returncode == 0, result.stderr
  assert "TF: []" in result.stdout


def test_read_scalars_edge_cases(tmp_path):
  with pytest.raises(FileNotFoundError, match="no TensorBoard log directory"):
    tb.read_scalars(tmp_path / "missing")
  assert tb.read_scalars(tmp_path) == {}
  tb.write_hparams_config(tmp_path, {"lr": None}, ["loss"])
  assert tb.read_scalars(tmp_path) == {}  # the experiment summary is not a scalar


def test_dropout_rates_are_numbers_and_the_experiment_reads_back(tmp_path):
  runs = [{"hidden": (300, 100), "dropout": (0.0, 0.5), "bs": 10}, {"hidden": (64,), "bs": 50}]
  assert tb.flat_hparams(runs[0]) == {
    "hidden": (300, 100),
    "dropout/0": 0.0,
    "dropout/1": 0.5,
    "bs": 10,
  }
  assert tb.domains(runs) == {
    "hidden": ["300-100", "64"],
    "dropout/0": [0.0],
    "dropout/1": [0.5],
    "bs": [10, 50],
  }
  tb.write_hparams_config(tmp_path / "study", tb.domains(runs), ["accuracy/test"])
  with tb.SummaryWriter(tmp_path / "study" / "run" / "seed0") as writer:
    writer.hparams(runs[0])
  types, metrics = tb.read_experiment(tmp_path / "study" / "run" / "seed0")
  assert metrics == ["accuracy/test"]
  assert types["dropout/1"] == types["bs"] == api_pb2.DATA_TYPE_FLOAT64
  assert types["hidden"] == api_pb2.DATA_TYPE_STRING
  assert tb.read_hparams(tmp_path / "study" / "run" / "seed0")["dropout/1"] == 0.5
  with tb.SummaryWriter(tmp_path / "alone") as writer:  # outside any study: no experiment
    writer.hparams(runs[0])
  with pytest.raises(LookupError, match="no HParams experiment"):
    tb.read_experiment(tmp_path / "alone")


def test_the_swept_hyperparameters_come_first_and_are_shown_by_default(tmp_path):
  """What the dashboard gets from TensorBoard's own handler: the swept hyperparameters flagged
  ``differs`` and first (it ticks the first five), the constants after; runs, no root run."""
  write_study(tmp_path, swept=["lr", "hidden"])
  backend, provider = hparams_backend(tmp_path)
  request = api_pb2.GetExperimentRequest()
  experiment = get_experiment.Handler(context.RequestContext(), backend, "", request).run()
  infos = [(i.name, i.differs) for i in experiment.hparam_infos]
  assert infos[:2] == [("hidden", True), ("lr", True)]  # (the plugin sorts by name within)
  assert {n for n, d in infos[2:]} == {"batch_norm", "seed"} and not any(d for _, d in infos[2:])
  runs = provider.list_runs(context.RequestContext(), experiment_id="")
  assert sorted(r.run_name for r in runs) == ["run0", "run1"]
  # Without ``swept``: what has several values (a None domain: picked by a search) differs.
  write_study(tmp_path / "b")
  assert tb.swept_first(tmp_path / "b" / "run0") == ["lr", "hidden", "batch_norm", "seed"]
