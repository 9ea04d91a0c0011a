"""Two processes with two workdirs share one ablation study (mlp.schedule): journal, PostgreSQL;
one killed (kill -9) or preempted (SIGTERM) mid-run."""

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from configs import har as har_config
from mlp import plan, resume, trainer
from mlp import schedule as engine
from mlp import study as study_lib
from mlp.checkpoint import CheckpointError
from mlp.search import storage as storage_lib
from tests.data_fixtures import write_fake_har

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("MLP_TEST_POSTGRES_URL")
# 5 runs of a few seconds each, mostly compilation; one process each (the kill hits the trainer).
FLAGS = (
  "--config=configs/har.py:quick",
  "--config.workers=1",
  "--config.grid.train.momentum=(0.0,)",
  "--config.train.max_epochs=6",
  "--config.train.early_stopping=none",
)


@pytest.fixture(scope="module")
def har_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("har")
  write_fake_har(root, subjects=(1, 3, 5, 6, 7, 8, 25, 26, 27, 28, 29, 30), rows_per_subject=30)
  return root


def start(workdir, har_dir, storage, study, *extra, flags=FLAGS):
  cmd = [sys.executable, "-m", "experiments.har_ablation", *flags, f"--workdir={workdir}"]
  cmd += [f"--data_dir={har_dir}", f"--storage={storage}", f"--study={study}", *extra]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(
    cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def open_storage(storage, tmp_path):
  return storage_lib.open_storage(
    storage, tmp_path, heartbeat_interval=5, grace_period=60, log=lambda s: None
  )


def table(workdir):
  with open(Path(workdir) / "results.csv") as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_two_processes_share_a_study_and_survive_kill_9(kind, har_dir, tmp_path):
  if kind == "postgres" and not POSTGRES_URL:
    pytest.skip("set MLP_TEST_POSTGRES_URL=postgresql://... to run (CI starts a server)")
  storage = str(tmp_path / "shared.journal") if kind == "journal" else POSTGRES_URL
  study = f"har-{uuid.uuid4().hex[:8]}"
  a, b = tmp_path / "a", tmp_path / "b"
  pa = start(a, har_dir, storage, study)
  pb = start(b, har_dir, storage, study)
  # Wait until process A is in the middle of a run, then kill -9 it.
  victim = None
  deadline = time.monotonic() + 300
  shared = open_storage(storage, tmp_path)  # one storage object: new ones per poll would pile up
  while victim is None and time.monotonic() < deadline and pa.poll() is None:
    try:
      st = optuna.load_study(study_name=study, storage=shared)
    except KeyError:  # not created yet
      time.sleep(0.2)
      continue
    for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
      if str(t.user_attrs.get("worker", "")).endswith(f":{pa.pid}"):
        victim = t
    time.sleep(0.2)
  assert victim is not None, pa.communicate()[0][-3000:]
  pa.send_signal(signal.SIGKILL)
  pa.wait()
  out_b, _ = pb.communicate(timeout=600)
  assert pb.returncode == 0, out_b[-3000:]

  cfg = har_config.get_config("quick")
  cfg.grid.train.momentum = (0.0,)
  runs = plan.study_plan(cfg).runs
  st = optuna.load_study(study_name=study, storage=shared)
  trials = st.get_trials()
  grouped = engine.by_run(trials)
  assert sorted(grouped) == sorted(r.id for r in runs)
  # Every run has exactly one COMPLETE trial, and nothing is left RUNNING or WAITING.
  for run in runs:
    assert sum(t.state == TrialState.COMPLETE for t in grouped[run.id]) == 1, run.id
  assert not [t for t in trials if t.state in storage_lib.ACTIVE]
  # The killed run was marked stale and trained again by B.
  killed = next(t for t in trials if t.number == victim.number)
  assert killed.state == TrialState.FAIL and killed.user_attrs["fail_reason"] == "stale"
  # B trained it after the kill: through a retry it enqueued ("retrying <run>"), or through the
  # copy both processes enqueued when they started together (then there was nothing to retry).
  again = engine.complete(grouped[victim.user_attrs["run"]])
  assert again.user_attrs["worker"].endswith(f":{pb.pid}")
  for t in trials:
    if t.state == TrialState.FAIL:
      assert t.user_attrs["fail_reason"] in ("stale", "duplicate"), t.user_attrs
  # Trained once: each run's result.json is in exactly one workdir (A's half-written run removed).
  for run in runs:
    rel = Path("runs") / run.name / f"seed{run.seed}" / "result.json"
    assert (a / rel).exists() + (b / rel).exists() == 1, run.id
  # B wrote the full table; --report_only from either workdir writes the same one.
  full = table(b)
  assert [r["run"] for r in full] == [r.name for r in runs]
  p = start(a, har_dir, storage, study, "--report_only")  # the command line, from A's workdir
  out, _ = p.communicate(timeout=300)
  assert p.returncode == 0, out[-3000:]
  cfg.workers, cfg.train.max_epochs, cfg.train.early_stopping = 1, 6, "none"  # as FLAGS
  where = engine.Storage(storage, study)
  study_lib.report_only(cfg, b, storage=where, log=lambda s: None)
  for w in (a, b):
    assert table(w) == full
    assert (w / "figures" / "confusion_matrices.png").stat().st_size > 0


def test_a_worker_drops_the_racing_enqueues_left_when_every_run_is_done(tmp_path):
  """Two processes that start together both enqueue every run; a worker that finds all runs
  finished used to leave the unclaimed copies WAITING in the study forever."""
  runs = plan.build(plan.study_plan(har_config.get_config("quick")).runs[:2], (561,), 6)
  st = engine.open_study("har_ablation_quick", tmp_path, log=lambda s: None)
  assert st.metric_names == ["val_accuracy"]  # named for Optuna's plots and optuna-dashboard
  engine.enqueue(st, runs)
  engine.enqueue(st, runs)  # the other process's copies
  assert all(t.user_attrs["plan"] == runs[t.number % 2].describe() for t in st.get_trials())
  for run in runs:
    st.add_trial(
      optuna.trial.create_trial(value=0.5, distributions={}, params={}, user_attrs={"run": run.id})
    )
  assert engine.work(st, runs, trainer.Context(None, tmp_path, print)) == 0
  trials = st.get_trials()
  assert not [t for t in trials if t.state in storage_lib.ACTIVE]
  assert sum(t.user_attrs.get("fail_reason") == "duplicate" for t in trials) == 4


@pytest.mark.slow
def test_a_preempted_process_hands_its_run_over_with_its_checkpoint(har_dir, tmp_path):
  """SIGTERM (a scheduler's preemption) stops A at the end of an epoch with a checkpoint, its
  trial ends 'preempted', and B trains the run on from A's checkpoint to the same numbers."""
  longer = (
    *[f for f in FLAGS if not f.startswith("--config.train.max_epochs")],
    "--config.train.max_epochs=150",
    "--config.train.checkpoint_minutes=0",
  )
  storage, study = str(tmp_path / "shared.journal"), "har-preempted"
  a, b = tmp_path / "a", tmp_path / "b"
  pa = start(a, har_dir, storage, study, flags=longer)
  pb = start(b, har_dir, storage, study, flags=longer)
  deadline = time.monotonic() + 300
  while not any(_epochs(a)) or max(_epochs(a)) < 3:
    assert pa.poll() is None and time.monotonic() < deadline, pa.communicate()[0][-3000:]
    time.sleep(0.01)
  pa.send_signal(signal.SIGTERM)
  out_a, _ = pa.communicate(timeout=120)
  assert pa.returncode == 143, out_a[-3000:]
  assert "preempted (SIGTERM): " in out_a and "Traceback" not in out_a
  (folder,) = [p.parent for p in a.glob("runs/*/*/checkpoint.npz")]
  at = resume.read_header(folder)["epoch"]
  out_b, _ = pb.communicate(timeout=600)
  assert pb.returncode == 0, out_b[-3000:]
  st = optuna.load_study(study_name=study, storage=open_storage(storage, tmp_path))
  preempted = [t for t in st.get_trials() if t.user_attrs.get("fail_reason") == "preempted"]
  (run_id,) = {t.user_attrs["run"] for t in preempted}
  assert f"{run_id} resumes at epoch {at + 1} from its checkpoint ({folder.absolute()})" in out_b
  assert not folder.exists()  # A's attempt, continued and saved by B
  cfg = har_config.get_config("quick")
  cfg.workers, cfg.grid.train.momentum = 1, (0.0,)
  cfg.train.max_epochs, cfg.train.early_stopping = 150, "none"
  (run,) = [r for r in plan.study_plan(cfg).runs if r.id == run_id]
  reference = study_lib.run_study(
    _only(cfg, run), tmp_path / "reference", data_dir=str(har_dir), log=lambda s: None
  )
  (saved,) = [r for r in engine.results(st.get_trials(), [run]).values()]
  assert saved["history"] == reference[0]["history"] and saved["tests"] == reference[0]["tests"]


def _epochs(workdir: Path) -> list[int]:
  out = []
  for path in workdir.glob("runs/*/*/checkpoint.npz"):
    try:
      out.append(resume.read_header(path.parent)["epoch"])
    except CheckpointError:  # being replaced
      continue
  return out


def _only(cfg, run):
  """``cfg`` cut to the one run ``run`` (its grid values set, no grid, no extra runs)."""
  cfg = cfg.copy_and_resolve_references()
  cfg.train.batch_size = run.settings.train.batch_size
  cfg.model.hidden = run.settings.model.hidden
  cfg.train.learning_rate = run.settings.train.learning_rate
  cfg.train.momentum = run.settings.train.momentum
  cfg.train.dropout = run.settings.train.dropout
  cfg.grid, cfg.extra_runs = {}, {}
  cfg.report.compare_with_best, cfg.report.figure_groups = "", ()
  return cfg
