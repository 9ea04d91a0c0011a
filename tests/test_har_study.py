"""End to end: the HAR ablation (quick variant) on a tiny synthetic data set, official layout."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from configs import har as har_config
from mlp import baselines, checkpoint, inference, plan, rundir, study, tensorboard, train, workers
from mlp import data as data_lib
from mlp import results as results_lib
from mlp import stopping as stopping_lib
from tests.data_fixtures import write_fake_har
from tests.processes import children_of, is_alive

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = (1, 3, 5, 6, 7, 8, 25, 26, 27, 28, 29, 30)


@pytest.fixture(scope="module")
def har_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("har")
  write_fake_har(root, subjects=SUBJECTS, rows_per_subject=30)
  return root


def quick_config(**train_overrides):
  cfg = har_config.get_config("quick")
  cfg.train.max_epochs = 3
  cfg.train.gap_min_epoch = 1
  for k, v in train_overrides.items():
    cfg.train[k] = v
  return cfg


# Loaded by every Python process started with its folder on PYTHONPATH (the worker processes):
# counts the calls that plan a run, and says that it is there (a test that cannot see into the
# workers must not pass).
COUNTING = """
import os
if os.environ.get("MLP_TEST_COUNTS"):
  from tests.test_har_study import count_planning
  count_planning(os.environ["MLP_TEST_COUNTS"])
"""


def count_planning(path: str) -> None:
  """Append "<pid> <function>" to ``path`` for every network parse and every plan built from a
  config in this process, and "<pid> start" now."""
  from mlp import model

  def counted(module, name):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
      with open(path, "a") as f:
        f.write(f"{os.getpid()} {name}\n")
      return real(*args, **kwargs)

    setattr(module, name, wrapper)
    return real

  with open(path, "a") as f:
    f.write(f"{os.getpid()} start\n")
  return [
    (m, n, counted(m, n)) for m, n in ((model, "parse"), (plan, "study_plan"), (plan, "build"))
  ]


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
  """Where the processes of the ``finished`` study say what they planned (count_planning)."""
  folder = tmp_path_factory.mktemp("counting")
  (folder / "sitecustomize.py").write_text(COUNTING)
  return folder / "counts.txt", folder


@pytest.fixture(scope="module")
def finished(har_dir, counts, tmp_path_factory):
  """The quick study trained by two worker processes (mlp.workers), as HAR does on CPU."""
  workdir = tmp_path_factory.mktemp("study")
  cfg = quick_config()
  cfg.workers = 2
  lines = []
  path, folder = counts
  saved = dict(os.environ)
  os.environ["MLP_TEST_COUNTS"] = str(path)
  os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT), saved.get("PYTHONPATH", "")])
  real = count_planning(str(path))
  try:
    results = study.run_study(cfg, workdir, data_dir=str(har_dir), log=lines.append)
  finally:
    os.environ.clear()
    os.environ.update(saved)
    for module, name, function in real:
      setattr(module, name, function)
  return cfg, workdir, results, lines


def test_a_run_is_planned_once_and_workers_never_plan(finished, counts):
  """Every network is parsed once per run, in the process that planned the study; the worker
  processes receive the plans and parse nothing, nor plan anything from a config."""
  cfg, _, results, _ = finished
  calls: dict[int, list[str]] = {}
  for line in counts[0].read_text().splitlines():
    pid, name = line.split()
    calls.setdefault(int(pid), []).append(name)
  parent = calls.pop(os.getpid())
  assert parent.count("parse") == len(results) == 9
  assert parent.count("study_plan") == 1 and parent.count("build") == 1
  assert len(calls) == 2  # the two workers ran the counting code: they would have been seen
  assert all(names == ["start"] for names in calls.values()), calls


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_table_has_every_run_with_topk_on_test(finished):
  cfg, workdir, results, lines = finished
  runs = plan.study_plan(cfg).runs
  assert len(runs) == 9 and len(results) == 9
  rows = read_csv(workdir / "results.csv")
  assert [r["run"] for r in rows] == [r.name for r in runs]
  for row in rows:
    for col in ("BS", "N2", "LR", "Mom", "Epoch", "Dropout"):
      assert row[col] != ""
    topk = [float(row[f"Top-{k}"]) for k in range(1, 6)]
    assert all(0 <= a <= b <= 1 for a, b in zip(topk, topk[1:], strict=False))
  by_name = {r["run"]: r for r in rows}
  assert by_name["dropout"]["Dropout"] == "0.5" and by_name["dropout"]["BS"] == "10"
  md = (workdir / "results.md").read_text()
  assert "| BS | N2 | LR | Mom | Dropout | Epoch | Top-1 |" in md
  # The held-out test split is named in the table and in the log.
  assert "subjects 25-30 held out" in md
  assert any("subjects 25-30 held out" in line for line in lines)


def test_topk_in_table_matches_the_saved_model(finished, har_dir):
  cfg, workdir, results, _ = finished
  data = data_lib.load(cfg.data, str(har_dir))
  rows = {r["run"]: r for r in read_csv(workdir / "results.csv")}
  run = plan.build(plan.study_plan(cfg).runs[:1], data.input_shape, data.num_classes)[0]
  model = checkpoint.load(rundir.run_dir(workdir, run) / "model")
  checkpoint.check_compatible(model, dataset="har", input_dim=561)
  logp = train.log_probs(run.spec, model.params, model.state, run.hyper, data.tests["test"][0])
  acc = float(np.mean(logp.argmax(1) == data.tests["test"][1]))
  np.testing.assert_allclose(float(rows[run.name]["Top-1"]), acc, rtol=1e-6)
  assert model.meta["class_names"][0] == "WALKING"


def test_the_study_ends_with_its_best_run_and_where_its_outputs_are(finished):
  _, workdir, results, lines = finished
  best = results_lib.best_run(results)
  topk = best["tests"]["test"]["topk"]
  assert f"best run by validation accuracy: {best['run']} (val top-1" in lines[-2]
  assert lines[-2].endswith(f"test top-1..{len(topk)} " + " ".join(f"{a:.4f}" for a in topk))
  assert lines[-1].endswith(f"tensorboard --logdir {workdir / 'runs'}")


def test_the_estimator_gives_a_study_runs_numbers(finished, har_dir):
  """mlp.MLPClassifier on arrays, with a study run's settings: the same epochs and accuracy."""
  from mlp import MLPClassifier

  cfg, _, results, _ = finished
  run, result = plan.study_plan(cfg).runs[-1], results[-1]  # the dropout run: regular dropout
  t = run.settings.train
  fields = ("batch_size", "learning_rate", "momentum", "l2", "dropout", "max_epochs")
  fields += ("early_stopping", "gap", "gap_min_epoch", "patience", "monitor")
  clf = MLPClassifier(
    hidden=run.settings.model.hidden,
    random_state=run.seed,
    dropout_kind=run.settings.model.dropout,
    softmax_grad=run.settings.model.softmax_grad,
    **{k: t[k] for k in fields},
  )
  data = data_lib.load(cfg.data, str(har_dir))
  clf.fit(data.x_train, data.y_train, X_val=data.x_val, y_val=data.y_val)
  assert clf.n_epochs_ == result["epochs"] and clf.stop_reason_ == result["stop_reason"]
  x_test, y_test = data.tests["test"]
  assert clf.score(x_test, y_test) == result["tests"]["test"]["topk"][0]
  assert clf.predict_proba(x_test).shape == (len(x_test), len(data.class_names))
  # Any label values (classes_ in sorted order); without a validation set a stratified tenth of
  # the rows is held out for the stopping rule.
  labels = np.asarray(data.class_names)
  held = MLPClassifier(hidden=(32,), learning_rate=0.05, max_epochs=30)
  held.fit(data.x_train, labels[data.y_train])
  assert list(held.classes_) == sorted(labels) and set(held.predict(x_test)) <= set(labels)
  assert held.score(x_test, labels[y_test]) > 0.6
  with pytest.raises(TypeError, match="learning_rat"):
    MLPClassifier(learning_rat=0.1)


def test_worker_progress_reaches_the_study_without_epoch_lines(finished):
  _, _, results, lines = finished
  done = [ln for ln in lines if " done: " in ln]  # relayed from the two worker processes
  assert sorted(ln.split()[1] for ln in done) == sorted(r["run"] for r in results)
  assert not any(" epoch " in ln for ln in lines)  # those are for --verbose and train.log
  assert f"progress: {len(results)}/{len(results)} runs done" in "\n".join(lines)


def test_each_run_keeps_its_own_log(finished):
  cfg, workdir, results, _ = finished
  for run, result in zip(plan.study_plan(cfg).runs, results, strict=True):
    text = (rundir.run_dir(workdir, run) / rundir.TRAIN_LOG).read_text().splitlines()
    *epochs, done, cost = text  # one line per epoch, the result, what its checkpoints cost
    assert len(epochs) == result["epochs"] and f"done: {result['epochs']} epochs" in done
    assert all(f"{run.id} epoch {e + 1}/" in t for e, t in enumerate(epochs))
    assert cost.startswith("checkpoints: 1 written, ")  # (at the end of training: runs are short)


def test_learns_the_synthetic_task(finished):
  _, _, results, _ = finished
  assert max(r["tests"]["test"]["topk"][0] for r in results) > 0.8


def test_tensorboard_events_hold_curves_and_hparams(finished):
  cfg, workdir, results, _ = finished
  for run, result in zip(plan.study_plan(cfg).runs, results, strict=True):
    rdir = rundir.run_dir(workdir, run)
    scalars = tensorboard.read_scalars(rdir)
    assert set(rundir.CURVE_TAGS) <= set(scalars)
    # After the run: what it ended with, at its last epoch, as the HParams dashboard's metrics.
    final = rundir.final_scalars(result)
    assert final["accuracy/test"] == result["tests"]["test"]["topk"][0]
    for tag, value in final.items():
      assert scalars[tag] == [(result["epochs"], pytest.approx(value, rel=1e-6))], tag
    steps = [s for s, _ in scalars["loss/val"]]
    assert steps == list(range(1, result["epochs"] + 1))
    vals = [v for _, v in scalars["loss/train"]]
    np.testing.assert_allclose(vals, result["history"]["train_loss"], rtol=1e-6)
    hp = tensorboard.read_hparams(rdir)
    assert hp["batch_size"] == run.settings.train.batch_size
    assert hp["hidden"] == plan.fmt(run.settings.model.hidden)
    dropout = [hp[f"dropout/{i}"] for i in range(len(run.settings.train.dropout))]
    assert dropout == pytest.approx(list(run.settings.train.dropout))  # numbers, not a string
    # The run folder holds its plan: the network that trained, with its rates.
    saved = json.loads((rdir / "plan.json").read_text())
    assert saved == result["plan"] and saved["run"] == run.id
    assert saved["network"].count("dropout") == (3 if run.name == "dropout" else 0)
  # What the HParams dashboard shows: its session-groups handler (the plugin's HTTP route).
  from tensorboard import context
  from tensorboard.plugins.hparams import api_pb2, list_session_groups

  from tests.test_tensorboard import hparams_backend

  backend, _ = hparams_backend(workdir / "runs")
  request = api_pb2.ListSessionGroupsRequest(
    start_index=0, slice_size=100, allowed_statuses=[api_pb2.STATUS_SUCCESS]
  )
  groups = list_session_groups.Handler(context.RequestContext(), backend, "", request).run()
  shown = {g.name: {m.name.tag: m.value for m in g.metric_values} for g in groups.session_groups}
  assert set(shown) == {r["run"] for r in results}
  for r in results:
    assert shown[r["run"]]["accuracy/test"] == pytest.approx(r["tests"]["test"]["topk"][0])
    assert "learning_rate" not in shown[r["run"]]
  # Each run carries the study's experiment (no event file at the root: no empty run "."), the
  # grid's axes first and flagged to be shown (learning rate: one value in this grid).
  assert not list((workdir / "runs").glob("events.out.tfevents.*"))
  types, metrics = tensorboard.read_experiment(rdir)
  assert tensorboard.swept_first(rdir) == ["batch_size", "hidden", "momentum"]
  assert list(types)[:3] == ["batch_size", "hidden", "momentum"]
  assert metrics[:4] == ["accuracy/val_best", "epochs", "accuracy/test", "loss/test"]
  assert "learning_rate" not in metrics and set(metrics) <= set(scalars)
  assert types["dropout/0"] == types["batch_size"] != types["hidden"]  # numbers; a string


def test_the_studys_trials_hold_each_runs_hyperparameters_and_curve(finished):
  """What optuna-dashboard reads: a trial per run, named by its ``run`` attribute, with the
  run's hyperparameters as params (one set of distributions: the importance panel works) and its
  per-epoch validation accuracy as intermediate values, reported by the worker processes."""
  import optuna

  from mlp import schedule, trialparams

  cfg, workdir, results, _ = finished
  st = schedule.open_study(cfg.name, workdir, log=lambda s: None)
  trials = {t.user_attrs["run"]: t for t in st.get_trials() if t.state.name == "COMPLETE"}
  assert set(trials) == {r["run"] for r in results}
  space = trialparams.space(plan.study_plan(cfg).runs)
  for run, r in zip(plan.study_plan(cfg).runs, results, strict=True):
    t = trials[r["run"]]
    assert t.params == trialparams.trial_params(run, space)[0]
    assert t.distributions == space
    assert list(t.intermediate_values) == list(range(1, r["epochs"] + 1))
    assert list(t.intermediate_values.values()) == pytest.approx(r["history"]["val_acc"])
  assert {"batch_size", "hidden", "momentum"} <= set(optuna.importance.get_param_importances(st))


def test_figures_are_pngs(finished):
  _, workdir, _, _ = finished
  figs = sorted(p.name for p in (workdir / "figures").glob("*.png"))
  assert figs == [
    "best_vs_dropout_confusion.png",
    "best_vs_dropout_loss.png",
    "confusion_matrices.png",
    "loss_curves_1.png",
    "loss_curves_2.png",
    "loss_curves_3.png",
    "loss_curves_4.png",
  ]
  for name in figs:
    assert (workdir / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_run_has_an_evaluation_report(finished):
  cfg, workdir, _, _ = finished
  for run in plan.study_plan(cfg).runs:
    ev = rundir.run_dir(workdir, run) / "eval" / "test"
    assert (ev / "report.md").exists() and (ev / "confusion.csv").exists()


class Killed(Exception):
  pass


@pytest.mark.slow
def test_resume_skips_finished_runs_and_restarts_interrupted(har_dir, tmp_path, monkeypatch):
  cfg = quick_config()
  cfg.workers = 1  # train in this process, so that the patched fit sees the calls
  cfg.grid.train.momentum = (0.0,)  # 5 runs
  runs = plan.study_plan(cfg).runs
  calls, kill_at = [], []
  real_fit = train.fit

  def fit_interrupted_at_the_third_run(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3 and not kill_at:
      kill_at.append(3)
      on_epoch = kwargs["on_epoch"]

      def interrupt(*a):  # after the first epoch is written: a half-written run folder
        on_epoch(*a)
        raise Killed

      kwargs = {**kwargs, "on_epoch": interrupt}
    return real_fit(*args, **kwargs)

  monkeypatch.setattr(train, "fit", fit_interrupted_at_the_third_run)
  workdir = tmp_path / "w"
  with pytest.raises(Killed):  # (pytest.raises lets KeyboardInterrupt through)
    study.run_study(cfg, workdir, data_dir=str(har_dir), log=lambda s: None)
  finished = [r for r in runs if (rundir.run_dir(workdir, r) / "result.json").exists()]
  assert len(finished) == 2
  stamps = {r.id: os.stat(rundir.run_dir(workdir, r) / "result.json").st_mtime_ns for r in finished}
  calls.clear()
  lines = []
  again = study.run_study(cfg, workdir, data_dir=str(har_dir), log=lines.append)
  assert len(calls) == 3  # the interrupted run and the two never started, nothing twice
  assert any("2 of 5 runs already finished" in line for line in lines)
  for r in finished:
    assert os.stat(rundir.run_dir(workdir, r) / "result.json").st_mtime_ns == stamps[r.id]
  assert [r["run"] for r in again] == [r.id for r in runs]
  assert all(r["epochs"] >= 1 for r in again)


def test_workers_give_the_same_numbers_as_one_process(finished, har_dir, tmp_path):
  cfg, _, parallel, lines = finished
  assert any("in 2 worker processes" in line for line in lines)
  single_cfg = quick_config()
  single_cfg.workers = 1
  single = study.run_study(single_cfg, tmp_path, data_dir=str(har_dir), log=lambda s: None)
  assert [r["run"] for r in single] == [r["run"] for r in parallel]
  for a, b in zip(single, parallel, strict=True):
    # Same runs, seeds and programs; only XLA's thread count differs, which can change the
    # order of a reduction's additions (last float32 bits of a mean).
    for k, v in a["history"].items():
      np.testing.assert_allclose(v, b["history"][k], rtol=1e-5, err_msg=f"{a['run']} {k}")
    assert a["epochs"] == b["epochs"]
    for split in a["tests"]:
      np.testing.assert_allclose(a["tests"][split]["topk"], b["tests"][split]["topk"], atol=1e-6)


@pytest.mark.slow
def test_worker_failure_is_reported(har_dir, tmp_path):
  # A job the worker cannot use: it fails before its first run.
  with pytest.raises(
    workers.WorkerError, match="worker 0 exited with code 1 .its error is printed"
  ):
    job = workers.Job((), {"name": "har"}, str(har_dir), None, tmp_path)  # a bad storage
    workers.run(job, 1, log=lambda s: None)
  # A worker killed by a signal printed nothing: the message says what killed it.
  assert "killed by signal SIGKILL (out of memory" in workers._exit_text(1, -signal.SIGKILL)
  assert "printed above" not in workers._exit_text(1, -signal.SIGTERM)


def test_thread_limit_refuses_an_initialised_backend():
  import jax

  jax.devices()
  with pytest.raises(RuntimeError, match="before JAX"):
    workers.limit_xla_threads(0)


@pytest.mark.slow
@pytest.mark.parametrize("monitor", ["val_loss", "val_acc"])
def test_patience_watches_the_configured_metric_and_keeps_its_best(har_dir, tmp_path, monitor):
  cfg = quick_config(early_stopping="patience", patience=2, monitor=monitor, max_epochs=8)
  cfg.workers = 1
  cfg.grid.train.batch_size = (10,)
  cfg.grid.model.hidden = ((64, 16),)
  cfg.grid.train.learning_rate = (0.05,)
  cfg.grid.train.momentum = (0.0,)
  del cfg.extra_runs["dropout"]
  cfg.report.compare_with_best = ""
  (p,) = plan.build(plan.study_plan(cfg).runs, (561,), 6)
  assert p.stopping.find(stopping_lib.Patience).monitor == monitor
  (result,) = study.run_study(cfg, tmp_path, data_dir=str(har_dir), log=lambda s: None)
  h = result["history"]
  best = int(np.argmin(h["val_loss"]) if monitor == "val_loss" else np.argmax(h["val_acc"]))
  # The saved result is evaluated with the restored params of the best epoch of that metric.
  np.testing.assert_allclose(result["val"]["loss"], h["val_loss"][best], rtol=1e-4)
  np.testing.assert_allclose(result["val"]["topk"][0], h["val_acc"][best], atol=1e-6)


def test_changed_config_on_same_workdir_is_refused(finished, har_dir):
  _, workdir, _, _ = finished
  cfg = quick_config(l2=0.5)
  with pytest.raises(study.StudyError, match="different config"):
    study.run_study(cfg, workdir, data_dir=str(har_dir), log=lambda s: None)


def test_runs_saved_before_subject_norm_existed_resume_as_none(finished, har_dir, tmp_path):
  _, src, _, _ = finished
  workdir = tmp_path / "old"
  shutil.copytree(src, workdir)
  (workdir / "study.journal").unlink()  # written before studies lived in storage: adopted
  for path in workdir.glob("runs/*/*/result.json"):
    result = json.loads(path.read_text())
    del result["config"]["data"]["subject_norm"]  # as written before the field was added
    del result["config"]["model"]["layers"]  # ... and before layers were modules
    for section, field in (("train", "compute_dtype"), ("train", "augment_flip"), ("cv", None)):
      if field is None:
        del result["config"][section]  # fields added since: their configs/base.py default
      else:
        del result["config"][section][field]
    path.write_text(json.dumps(result))
  cfg = quick_config()
  with pytest.raises(study.StudyError, match="different config"):
    study.run_study(cfg, workdir, data_dir=str(har_dir), log=lambda s: None)
  cfg.data.subject_norm = "none"  # what those runs were trained with
  lines = []
  study.run_study(cfg, workdir, data_dir=str(har_dir), log=lines.append)
  assert any("9 of 9 runs already finished" in line for line in lines)
  # A field added since is implied only at the value those runs had (its configs/base.py one).
  cfg.cv.folds = 3
  with pytest.raises(study.StudyError, match="different config"):
    study.run_study(cfg, workdir, data_dir=str(har_dir), log=lambda s: None)


def test_inference_matches_the_study(finished, har_dir):
  cfg, workdir, results, _ = finished
  run = plan.study_plan(cfg).runs[0]
  lm = inference.load_model(rundir.run_dir(workdir, run))
  x, y = inference.split_data(lm, "test", str(har_dir))
  # The saved config's per-subject standardisation is applied, not the raw features.
  raw = data_lib.load({**cfg.data.to_dict(), "subject_norm": "none"}, str(har_dir)).tests["test"]
  assert np.array_equal(y, raw[1]) and not np.allclose(x, raw[0])
  probs = inference.probabilities(lm, x)
  acc = float(np.mean(probs.argmax(1) == y))
  assert acc == pytest.approx(results[0]["tests"]["test"]["topk"][0])


@pytest.mark.slow
def test_diverged_run_is_marked_and_the_study_goes_on(har_dir, tmp_path):
  cfg = quick_config()
  cfg.grid.train.learning_rate = (1e30, 0.01)
  cfg.grid.train.batch_size = (50,)
  cfg.grid.model.hidden = ((64, 16),)
  cfg.grid.train.momentum = (0.0,)
  del cfg.extra_runs["dropout"]
  cfg.report.compare_with_best = ""
  study.run_study(cfg, tmp_path, data_dir=str(har_dir), log=lambda s: None)
  rows = {r["run"]: r for r in read_csv(tmp_path / "results.csv")}
  assert rows["bs50_h64-16_lr1e+30_mom0"]["Status"] == "diverged"
  assert rows["bs50_h64-16_lr0.01_mom0"]["Status"] == "ok"
  assert "diverged" in (tmp_path / "results.md").read_text()


def run_cli(*args, env=None):
  return subprocess.run(
    [sys.executable, "-m", "experiments.har_ablation", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    env={**os.environ, **(env or {})},
    timeout=300,
  )


# The entry point with its jitted epoch replaced by a function that raises: the traceback is the
# path from the command line to the step.
FRAMES = """
import json, sys, traceback
from absl import flags
from experiments import har_ablation
from mlp import train

class Stop(Exception):
  pass

def population_epoch(*args, **kwargs):
  raise Stop

train.population_epoch = population_epoch
argv = ["har_ablation", *sys.argv[1:]]
flags.FLAGS(argv)
try:
  har_ablation.main(argv[:1])
except Stop as e:
  print(json.dumps([[f.filename, f.name] for f in traceback.extract_tb(e.__traceback__)]))
"""


def test_the_entry_point_is_at_most_8_frames_from_the_jitted_epoch(har_dir, tmp_path):
  args = ["--config=configs/har.py:quick", "--config.workers=1", f"--data_dir={har_dir}"]
  cmd = [sys.executable, "-c", FRAMES, *args, f"--workdir={tmp_path / 'w'}"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  frames = json.loads(out.stdout.splitlines()[-1])
  start = next(i for i, (file, _) in enumerate(frames) if file.endswith("mlp/cli.py"))
  chain = [f"{Path(file).stem}.{name}" for file, name in frames[start:]]
  # main (the entry point's), run, run_study, work, train_group, fit, _fit_group, the epoch
  assert chain[-1] == "<string>.population_epoch" and "train.fit" in chain, chain
  assert len(chain) <= 8, " -> ".join(chain)


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_the_study_resumes(har_dir, tmp_path):
  args = [
    "--config=configs/har.py:quick",
    f"--data_dir={har_dir}",
    f"--workdir={tmp_path / 'w'}",
    "--config.workers=2",
    "--config.grid.train.momentum=(0.0,)",  # 5 runs
    "--config.train.max_epochs=10",  # ~20 s of work in all: still in flight at the first epoch
    "--config.train.gap_min_epoch=10",
    "--verbose",  # epoch lines: the test sees when training has started
  ]
  cmd = [sys.executable, "-m", "experiments.har_ablation", *args]
  # A handled (not ignored) SIGINT here is reset to the default in the child at exec, so Python
  # raises KeyboardInterrupt there even when this test runs from a background shell.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    p = subprocess.Popen(
      cmd,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      start_new_session=True,  # its own process group, like a terminal's foreground job
    )
  finally:
    signal.signal(signal.SIGINT, previous)
  for line in p.stdout:
    if " epoch " in line:
      break  # a worker has started training
  os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C does: SIGINT to the whole foreground group
  _, err = p.communicate(timeout=120)
  assert p.returncode == 130, err
  assert "interrupted" in err and "resume" in err and "Traceback" not in err
  with pytest.raises(ProcessLookupError):
    os.killpg(p.pid, 0)  # no worker is left behind
  assert not (tmp_path / "w" / "results.csv").exists()
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr
  assert len(read_csv(tmp_path / "w" / "results.csv")) == 5


@pytest.mark.slow
def test_cli_runs_quick_config_and_rejects_unknown_field(har_dir, tmp_path):
  # Mistakes in the config flag: one or two lines and exit status 2, never a traceback.
  bad = run_cli("--config=configs/har.py:quick", "--config.train.no_such_field=1")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert "no field train.no_such_field (from --config.train.no_such_field)" in bad.stderr
  malformed = run_cli("--config=configs/har.py:quick", "--config.train.batch_size=many")
  assert malformed.returncode == 2 and "batch_size" in malformed.stderr
  assert "Traceback" not in malformed.stderr
  variant = run_cli("--config=configs/har.py:nope")
  assert variant.returncode == 2 and "Traceback" not in variant.stderr
  assert "unknown variant 'nope'" in variant.stderr and len(variant.stderr.splitlines()) <= 3
  nofile = run_cli("--config=configs/no_such_config.py")
  assert nofile.returncode == 2 and "Traceback" not in nofile.stderr
  assert "no_such_config.py" in nofile.stderr
  missing = run_cli(
    "--config=configs/har.py:quick",
    f"--data_dir={tmp_path / 'nowhere'}",
    f"--workdir={tmp_path / 'never'}",
  )
  assert missing.returncode == 2
  assert "nowhere" in missing.stderr and "Traceback" not in missing.stderr
  assert not (tmp_path / "never").exists()  # nothing is created before the data loads
  # A field the grid sweeps cannot be overridden directly: no run would use the value.
  gridded = run_cli("--config=configs/har.py:quick", "--config.train.learning_rate=1000")
  assert gridded.returncode == 2 and "Traceback" not in gridded.stderr
  assert "grid.train.learning_rate" in gridded.stderr and "--config.grid." in gridded.stderr
  # An architecture string on this MLP config would train one network and report another (the
  # hidden widths and dropout rates of the grid and the dropout run): refused in one line.
  layered = run_cli(
    "--config=configs/har.py:quick",
    "--config.model.layers=dense8 relu dense",
    f"--workdir={tmp_path / 'never'}",
  )
  assert layered.returncode == 2 and "Traceback" not in layered.stderr
  said = [line for line in layered.stderr.splitlines() if line.strip()]
  assert len(said) == 1 and "model.layers" in said[0] and "model.hidden = 64-16" in said[0]
  bad_norm = run_cli(
    "--config=configs/har.py:quick",
    "--config.data.subject_norm=zscore",
    f"--workdir={tmp_path / 'never'}",
    env={"MLP_DATA_DIR": str(har_dir)},
  )
  assert bad_norm.returncode == 2 and "Traceback" not in bad_norm.stderr
  assert "data.subject_norm" in bad_norm.stderr and "standardize" in bad_norm.stderr
  assert not (tmp_path / "never").exists()
  ok = run_cli(
    "--config=configs/har.py:quick",
    "--config.train.max_epochs=1",
    "--config.grid.train.momentum=(0.0,)",  # 5 runs
    f"--workdir={tmp_path / 'w'}",
    env={"MLP_DATA_DIR": str(har_dir)},
  )
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert len(read_csv(tmp_path / "w" / "results.csv")) == 5
  assert json.loads((tmp_path / "w" / "config.json").read_text())["train"]["max_epochs"] == 1
  # The main job compares its best run with the configured baselines on the test split.
  learners = {r["learner"] for r in read_csv(tmp_path / "w" / "baselines.csv")}
  assert learners >= {"logistic_regression_default", "linear_svm_default", "rbf_svm_default"}
  assert "McNemar" in ok.stdout
  # Off a terminal: a line per finished run and periodic status lines, no epoch lines.
  assert " epoch " not in ok.stdout and ok.stdout.count(" done: 1 epochs") == 5
  assert "progress: 5/5 runs done" in ok.stdout


def test_best_run_is_compared_with_baselines_by_mcnemar(finished, har_dir):
  from mlp import crossval, stats

  cfg, workdir, results, _ = finished
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.report.baselines = ("logistic_regression", "decision_tree")
  rows = crossval.compare_on_test(cfg, results, workdir, data_dir=str(har_dir), log=lambda m: None)
  best = results_lib.best_run(results, exclude=("dropout",))
  assert rows[0]["learner"] == best["name"]
  assert rows[0]["accuracy"] == pytest.approx(best["tests"]["test"]["topk"][0])
  data = data_lib.load(cfg.data, str(har_dir))
  x, y = data.tests["test"]
  lm = inference.load_model(workdir / "runs" / best["name"] / f"seed{best['seed']}")
  ours = inference.probabilities(lm, x).argmax(1) == y
  for r in rows[1:]:
    saved = json.loads((workdir / "baselines" / f"{r['learner']}.json").read_text())
    theirs = np.frombuffer(saved["correct"].encode(), np.uint8) == ord("1")
    assert r["p_mcnemar"] == pytest.approx(stats.mcnemar(ours, theirs).p_value)
    assert r["accuracy"] == pytest.approx(theirs.mean())
  table = read_csv(workdir / "baselines.csv")
  assert [t["learner"] for t in table] == [best["name"], "logistic_regression", "decision_tree"]
  # Tuned by inner cross-validation over whole training subjects: the chosen values are listed.
  for t in table[1:]:
    saved = json.loads((workdir / "baselines" / f"{t['learner']}.json").read_text())
    assert "whole subjects" in saved["inner"] and saved["params"]
    assert t["chosen"].startswith(baselines.format_params(saved["params"]))
  assert "Chosen by inner CV" in (workdir / "baselines.md").read_text()


def test_overrides_of_swept_fields_are_refused_and_others_pass():
  cfg = har_config.get_config("quick")
  plan.check_overrides(cfg, ["train.l2", "grid.train.learning_rate", "data.split_seed"])
  for path in ("train.learning_rate", "model.hidden", "train.batch_size", "train.momentum"):
    with pytest.raises(ValueError, match=f"grid.{path} = "):
      plan.check_overrides(cfg, [path])
  # Values are checked for every run before any training starts.
  for path, value, message in (
    ("grid.train.batch_size", (0,), "batch_size must be >= 1"),
    ("grid.train.learning_rate", (-0.1,), "learning_rate must be > 0"),
    ("train.max_epochs", 0, "max_epochs must be >= 1"),
  ):
    bad = har_config.get_config("quick")
    *parents, last = path.split(".")
    node = bad
    for part in parents:
      node = node[part]
    node[last] = value
    with pytest.raises(ValueError, match=message):
      plan.build(plan.study_plan(bad).runs, (561,), 6)


def _hold_workdir(workdir: Path) -> subprocess.Popen:
  """Another process that owns ``workdir`` (mlp.lock) until it is killed."""
  code = (
    "import sys, time; from mlp import lock; h = lock.hold(sys.argv[1]); h.__enter__(); "
    "print('held', flush=True); time.sleep(300)"
  )
  workdir.mkdir(parents=True, exist_ok=True)
  p = subprocess.Popen(
    [sys.executable, "-c", code, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
  )
  assert p.stdout.readline().strip() == "held"
  return p


@pytest.mark.slow
def test_a_second_launcher_is_refused_and_a_dead_owners_workdir_taken_over(har_dir, tmp_path):
  """Two copies of a study on one workdir used to delete each other's run folders."""
  from mlp import lock

  workdir = tmp_path / "w"
  owner = _hold_workdir(workdir)
  cfg = quick_config()
  cfg.workers = 1
  cfg.grid.train.momentum = (0.0,)  # 5 runs
  try:
    with pytest.raises(lock.WorkdirBusy, match=f"pid {owner.pid} on "):
      study.run_study(cfg, workdir, data_dir=str(har_dir), log=lambda m: None)
    busy = run_cli("--config=configs/har.py:quick", f"--workdir={workdir}", f"--data_dir={har_dir}")
    assert busy.returncode == 2 and "Traceback" not in busy.stderr
    assert "in use by another process" in busy.stderr and str(owner.pid) in busy.stderr
    assert not (workdir / "runs").exists()  # nothing trained, nothing deleted
  finally:
    owner.kill()  # kill -9: the lock file keeps its content, the kernel drops the lock
    owner.wait()
  lines = []
  study.run_study(cfg, workdir, data_dir=str(har_dir), log=lines.append)
  assert any(f"pid {owner.pid}" in m and "without releasing" in m for m in lines)
  assert (workdir / "results.csv").exists()
  assert (workdir / lock.LOCK_NAME).read_text() == ""  # released


@pytest.mark.slow
def test_workers_exit_when_the_study_process_is_killed(har_dir, tmp_path):
  """After kill -9 of the study, its workers used to keep training and race a rerun."""
  cmd = [
    sys.executable,
    "-m",
    "experiments.har_ablation",
    "--config=configs/har.py:quick",
    f"--data_dir={har_dir}",
    f"--workdir={tmp_path / 'w'}",
    "--config.workers=2",
    "--config.train.max_epochs=20000",
    "--config.train.gap_min_epoch=20000",  # runs far longer than the wait below
    "--verbose",
  ]
  p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  for line in p.stdout:
    if " epoch " in line:
      break  # the workers are training
  children = children_of(p.pid)
  assert len(children) == 2
  p.kill()
  p.wait()
  deadline = time.monotonic() + 10
  alive = children
  while alive and time.monotonic() < deadline:
    time.sleep(0.2)
    alive = [c for c in children if is_alive(c)]
  assert not alive, f"workers {alive} outlived the study"


def test_a_full_disk_is_said_plainly(capsys):
  import errno

  from mlp import cli

  def main(argv):
    raise OSError(errno.ENOSPC, "No space left on device", "runs/x/model.npz")

  with pytest.raises(SystemExit) as e:
    cli.friendly_errors(main)(["prog"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "disk full writing runs/x/model.npz" in err and "Traceback" not in err
