"""Hyperparameter search: worker processes sharing one Optuna study, budget, crash recovery."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from configs import fer2013_search
from mlp import data as data_lib
from mlp import figures, plan, report, resume, search, train
from mlp.checkpoint import CheckpointError
from mlp.search import storage as storage_lib
from tests.data_fixtures import write_fake_fer

ROOT = Path(__file__).resolve().parents[1]
# One static shape, so each worker process compiles once: the tests are about the storage.
ONE_SHAPE = (
  "--config.search.space.layers.high=1",
  "--config.search.space.width.low=16",
  "--config.search.space.width.high=16",
  "--config.search.space.batch_size.high=10",
)
POSTGRES_URL = os.environ.get("MLP_TEST_POSTGRES_URL")


@pytest.fixture(scope="module")
def fer_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("fer")
  write_fake_fer(root, n=140)
  return root


def start_worker(workdir, fer_dir, *flags, storage=None, study="s"):
  cmd = [
    sys.executable,
    "-m",
    "experiments.search",
    "--config=configs/fer2013_search.py:quick",
    f"--workdir={workdir}",
    f"--data_dir={fer_dir}",
    f"--study={study}",
    *ONE_SHAPE,
    "--config.search.budget=4",
    *flags,
  ]
  if storage:
    cmd.append(f"--storage={storage}")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(
    cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def wait_all(procs, timeout=400):
  outs = []
  for p in procs:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    outs.append(out)
  return outs


def load(storage, study, workdir):
  cfg = fer2013_search.get_config("quick")
  return optuna.load_study(
    study_name=study, storage=search.open_storage(storage, Path(workdir), cfg, print)
  )


def check_budget(st, budget, workdirs):
  trials = st.get_trials()
  complete = [t for t in trials if t.state == TrialState.COMPLETE]
  assert len(complete) == budget
  assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
  for t in trials:
    if t.state == TrialState.FAIL:
      assert t.user_attrs["fail_reason"] in ("surplus", "stale", "preempted"), t.user_attrs
  # Each COMPLETE trial was trained once, into its own run folder, and saved (nothing lost).
  run_dirs = [Path(t.user_attrs["run_dir"]) for t in complete]
  assert len(set(run_dirs)) == budget
  assert all((d / "result.json").exists() for d in run_dirs)
  # Every model is saved, except a diverged trial's (a loss past train.diverge x log C).
  for t, d in zip(complete, run_dirs, strict=True):
    assert (d / "model.npz").exists() != bool(t.user_attrs["diverged"]), t.user_attrs
  trained = [p.parent for w in workdirs for p in Path(w).glob("runs/*/seed0/result.json")]
  assert sorted(trained) == sorted(run_dirs)  # surplus trials were never trained
  return complete


@pytest.mark.slow
def test_two_workers_share_a_journal_study_and_hold_the_budget(fer_dir, tmp_path):
  procs = [start_worker(tmp_path, fer_dir) for _ in range(2)]
  outs = wait_all(procs)
  st = load(None, "s", tmp_path)
  complete = check_budget(st, 4, [tmp_path])
  assert len({t.user_attrs["worker"] for t in st.get_trials()}) == 2, outs
  assert all(0 <= t.value <= 1 for t in complete)
  ok = [t for t in complete if not t.user_attrs["diverged"]]  # a diverged trial has no test
  assert all("test_acc/PrivateTest" in t.user_attrs for t in ok)
  assert (tmp_path / "leaderboard.csv").read_text().count("\n") == 5
  for name in ("optimization_history", "parallel_coordinate", "slice", "param_importances"):
    assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 0
  assert st.metric_names == ["val_accuracy"]  # on Optuna's plots and in optuna-dashboard
  best = st.best_trial
  assert (tmp_path / "best" / "model.npz").exists()
  assert (tmp_path / "best" / "eval" / "PrivateTest").is_dir()
  assert f"| 1 | {best.number} |" in (tmp_path / "leaderboard.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not POSTGRES_URL, reason="set MLP_TEST_POSTGRES_URL=postgresql://... to run")
def test_two_workers_on_two_workdirs_share_a_postgres_study(fer_dir, tmp_path):
  study = f"test-{uuid.uuid4().hex[:8]}"
  dirs = [tmp_path / "machine1", tmp_path / "machine2"]
  procs = [start_worker(d, fer_dir, "--nooutputs", storage=POSTGRES_URL, study=study) for d in dirs]
  wait_all(procs)
  st = load(POSTGRES_URL, study, tmp_path)
  try:
    check_budget(st, 4, dirs)
  finally:
    optuna.delete_study(study_name=study, storage=POSTGRES_URL)


@pytest.mark.slow
@pytest.mark.parametrize(
  ("signum", "reason"), [(signal.SIGKILL, "stale"), (signal.SIGTERM, "preempted")]
)
def test_a_killed_workers_trial_is_continued_from_its_checkpoint(signum, reason, fer_dir, tmp_path):
  # Trials of a few hundred epochs (no early stopping) with a checkpoint after each epoch.
  flags = (
    "--nooutputs",
    "--config.search.ask_batch=1",
    "--config.train.max_epochs=300",
    "--config.train.early_stopping=none",
    "--config.train.checkpoint_minutes=0",
  )
  victim = start_worker(tmp_path, fer_dir, *flags)
  deadline = time.monotonic() + 300
  while max(checkpoint_epochs(tmp_path), default=0) < 3:
    assert victim.poll() is None and time.monotonic() < deadline
    time.sleep(0.01)
  running = [
    t.number for t in load(None, "s", tmp_path).get_trials() if t.state == TrialState.RUNNING
  ]
  victim.send_signal(signum)  # SIGTERM: a scheduler preempts it, it stops at the epoch's end
  assert victim.wait(timeout=120) == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
  (at,) = checkpoint_epochs(tmp_path)
  wait_all([start_worker(tmp_path, fer_dir, *flags, "--config.search.budget=3")])
  st = load(None, "s", tmp_path)
  (killed,) = [st.trials[n] for n in running]
  assert killed.state == TrialState.FAIL and killed.user_attrs["fail_reason"] == reason
  (again,) = [t for t in st.trials if t.user_attrs.get("continues") == killed.number]
  assert again.state == TrialState.COMPLETE and again.params == killed.params
  # It trained on from the checkpoint and ends as the trial would have without the kill.
  log = (Path(again.user_attrs["run_dir"]) / "train.log").read_text()
  assert log.count("(from its checkpoint)") == at
  result = json.loads((Path(again.user_attrs["run_dir"]) / "result.json").read_text())
  cfg = quick(budget=3, ask_batch=1)
  cfg.train.max_epochs, cfg.train.early_stopping = 300, "none"
  (run,) = plan.study_plan(search.apply(cfg, killed.params)).runs
  data = data_lib.load(cfg.data, str(fer_dir))
  (group,) = plan.groups(plan.build([run], data.input_shape, data.num_classes))
  fresh = train.fit(group.population(), (data.x_train, data.y_train, data.x_val, data.y_val))
  assert result["history"] == fresh.history[0]
  assert again.intermediate_values == dict(enumerate(fresh.history[0]["val_acc"], start=1))
  assert not Path(killed.user_attrs["run_dir"]).exists()  # its folder is gone, checkpoint used
  check_budget(st, 3, [tmp_path])


def checkpoint_epochs(workdir) -> list[int]:
  out = []
  for path in Path(workdir).glob(f"runs/*/seed0/{resume.FILE}"):
    try:
      out.append(resume.read_header(path.parent)["epoch"])
    except CheckpointError:  # being replaced
      continue
  return out


def quick(**search_overrides):
  cfg = fer2013_search.get_config("quick")
  cfg.search.space.batch_size.high = 10
  for k, v in search_overrides.items():
    cfg.search[k] = v
  return cfg


@pytest.fixture
def no_figures(monkeypatch):
  """In-process searches test the search logic: skip the per-trial evaluation figures."""
  monkeypatch.setattr(report, "evaluation_report", lambda *a, **k: None)
  monkeypatch.setattr(figures, "plot_training_history", lambda *a, **k: None)


def test_sequential_plan_moves_on_with_the_best_value():
  cfg = quick(strategy="sequential", order=("layers", "width", "learning_rate"))
  space = search.space_of(cfg)
  st = optuna.create_study(direction="maximize")
  dists = {
    n: search.space._distribution(space["width" if n.startswith("width") else n])
    for n in search.param_names(space)
  }

  def finish(stage, value_of):
    for j, p in enumerate(stage.points):
      params = {
        k: v for k, v in p.items() if not k.startswith("width") or int(k[5:]) <= p["layers"]
      }
      st.add_trial(
        optuna.trial.create_trial(
          params=params,
          distributions={k: dists[k] for k in params},
          value=value_of(p),
          user_attrs={"stage": stage.index, "point": j},
        )
      )

  s0 = search.sequential_stage(cfg, space, st.trials)
  assert s0.param == "layers" and [p["layers"] for p in s0.points] == [1, 2]
  assert {p["width1"] for p in s0.points} == {16}  # the base config's width
  finish(s0, lambda p: 0.5 if p["layers"] == 2 else 0.4)
  s1 = search.sequential_stage(cfg, space, st.trials)
  assert s1.param == "width1" and [p["width1"] for p in s1.points] == [8, 32]
  assert {p["layers"] for p in s1.points} == {2}  # the best value so far is kept
  finish(s1, lambda p: 0.45)  # worse than width 16: stays at 16
  s2 = search.sequential_stage(cfg, space, st.trials)
  assert s2.param == "width2" and {p["width1"] for p in s2.points} == {16}
  finish(s2, lambda p: 0.6 if p["width2"] == 32 else 0.1)
  s3 = search.sequential_stage(cfg, space, st.trials)
  assert s3.param == "learning_rate"
  assert [p["learning_rate"] for p in s3.points] == pytest.approx([1e-4, 0.1])
  assert {(p["layers"], p["width1"], p["width2"]) for p in s3.points} == {(2, 16, 32)}
  finish(s3, lambda p: 0.1)
  assert search.sequential_stage(cfg, space, st.trials) is None


@pytest.mark.slow
def test_sequential_search_runs_its_plan_and_resumes(fer_dir, tmp_path, no_figures):
  cfg = quick(strategy="sequential", budget=100, order=("layers", "learning_rate"))
  cfg.search.space.width.low = cfg.search.space.width.high = 16
  data = data_lib.load(cfg.data, str(fer_dir))
  st = search.run_worker(
    cfg, tmp_path, data=data, options=search.Options(outputs=False), log=lambda s: None
  )
  trials = [t for t in st.get_trials() if t.state == TrialState.COMPLETE]
  assert [(t.user_attrs["stage"], t.user_attrs["point"]) for t in trials] == [
    (0, 0),
    (0, 1),
    (1, 0),
    (1, 1),
  ]
  best0 = max(trials[:2], key=lambda t: (t.value, -t.number))
  assert {t.params["layers"] for t in trials[2:]} == {best0.params["layers"]}
  # Resuming a finished plan trains nothing more.
  again = search.run_worker(
    cfg, tmp_path, data=data, options=search.Options(outputs=False), log=lambda s: None
  )
  assert len(again.get_trials()) == len(st.get_trials())


@pytest.mark.slow
def test_tpe_search_reaches_budget_and_rejects_a_changed_space(fer_dir, tmp_path, no_figures):
  cfg = quick(strategy="tpe", budget=3)
  cfg.search.space.layers.high = 1
  cfg.search.space.width.low = 16
  data = data_lib.load(cfg.data, str(fer_dir))
  st = search.run_worker(
    cfg, tmp_path, data=data, options=search.Options(outputs=False), log=lambda s: None
  )
  assert sum(t.state == TrialState.COMPLETE for t in st.get_trials()) == 3
  cfg.search.space.width.low = 8
  with pytest.raises(search.SearchError, match="space"):
    search.run_worker(cfg, tmp_path, data=data, log=lambda s: None)
  # Trials on differently prepared data are not comparable either; where the data live is free.
  cfg.search.space.width.low = 16
  cfg.data.data_dir = str(tmp_path / "elsewhere")
  search.open_study(cfg, cfg.name, search.open_storage(None, tmp_path, cfg, lambda s: None))
  cfg.data.preprocess = "center"
  with pytest.raises(search.SearchError, match="data_config"):
    search.run_worker(cfg, tmp_path, data=data, log=lambda s: None)


def test_every_search_writes_its_expected_max_curve(tmp_path):
  from datetime import datetime, timedelta

  import numpy as np

  from mlp.expected_max import expected_max

  cfg = quick(strategy="random", budget=6)
  st = optuna.create_study(direction="maximize")
  dist = {
    "layers": optuna.distributions.IntDistribution(1, 2),
    "width1": optuna.distributions.IntDistribution(8, 64, step=8),
    "l2": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
  }
  t0 = datetime(2026, 1, 1)
  values = [0.31, 0.42, 0.38, 0.45, 0.40]
  for k, v in enumerate(values):  # each 60 s, two workers: trials k and k + 1 side by side
    start = t0 + timedelta(seconds=30 * k)
    st.add_trial(
      optuna.trial.FrozenTrial(
        number=k,
        state=TrialState.COMPLETE,
        value=v,
        datetime_start=start,
        datetime_complete=start + timedelta(seconds=60),
        params={"layers": 1, "width1": 8 * (k + 1), "l2": 1e-3 * (k + 1)},
        distributions=dist,
        user_attrs={},
        system_attrs={},
        intermediate_values={1: v},
        trial_id=k,
      )
    )
  pruned_start = t0 + timedelta(seconds=150)  # a pruned trial: 30 s of compute, no score
  st.add_trial(
    optuna.trial.FrozenTrial(
      number=5,
      state=TrialState.PRUNED,
      value=None,
      datetime_start=pruned_start,
      datetime_complete=pruned_start + timedelta(seconds=30),
      params={"layers": 1, "width1": 16, "l2": 1e-4},
      distributions=dist,
      user_attrs={},
      system_attrs={},
      intermediate_values={1: 0.2},
      trial_id=5,
    )
  )
  summary = search.write_outputs(cfg, st, tmp_path, log=lambda s: None)
  rows = list(csv.DictReader((tmp_path / "expected_max.csv").open()))
  assert [int(r["n"]) for r in rows] == [1, 2, 3, 4, 5]
  mean, var = expected_max(values, np.arange(1, 6))
  assert [float(r["expected_max"]) for r in rows] == pytest.approx(list(mean))
  assert [float(r["std"]) for r in rows] == pytest.approx(list(np.sqrt(var)))
  # Compute: 5 x 60 s + 30 s pruned over 5 complete trials; wall: 0 .. 180 s over 5.
  assert [float(r["seconds"]) for r in rows] == pytest.approx([66.0 * n for n in range(1, 6)])
  assert [float(r["wall_seconds"]) for r in rows] == pytest.approx([36.0 * n for n in range(1, 6)])
  assert (tmp_path / "figures" / "expected_max.png").stat().st_size > 0
  assert summary["expected_max"]["n"] == 5
  assert summary["expected_max"]["expected_max"] == pytest.approx(mean[-1])


def test_space_errors_are_readable():
  cfg = quick()
  cfg.search.space.l2 = dict(scale="log", low=0.0, high=1e-2)
  with pytest.raises(search.SearchError, match="log-scaled"):
    search.space_of(cfg)
  cfg = quick()
  cfg.search.space.width = dict(scale="int", low=100, high=510, step=50)
  with pytest.raises(search.SearchError, match="multiple of step"):
    search.space_of(cfg)
  cfg = quick()
  cfg.search.space.nonsense = dict(scale="linear", low=0, high=1)
  with pytest.raises(search.SearchError, match="nonsense"):
    search.space_of(cfg)


def _journal_with_trials(path: Path, n: int) -> None:
  from optuna.storages.journal import JournalFileBackend

  st = optuna.create_study(
    study_name="s", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path)))
  )
  for i in range(n):
    st.tell(st.ask(), float(i))


def test_a_torn_journal_record_is_set_aside_and_the_study_goes_on(tmp_path):
  """A worker killed mid-write used to leave a fragment that the next append glued onto, after
  which every command failed with a bare JSONDecodeError."""
  path = tmp_path / storage_lib.JOURNAL_NAME
  _journal_with_trials(path, 3)
  os.truncate(path, path.stat().st_size - 40)
  lines = []
  storage = search.open_storage(None, tmp_path, quick(), lines.append)
  (aside,) = tmp_path.glob(f"{storage_lib.JOURNAL_NAME}.torn-*")
  assert aside.stat().st_size > 0 and any("set aside" in m and str(aside) in m for m in lines)
  st = optuna.load_study(study_name="s", storage=storage)
  st.tell(st.ask(), 9.0)  # appends after the last whole record
  again = optuna.load_study(
    study_name="s", storage=search.open_storage(None, tmp_path, quick(), print)
  )
  assert 9.0 in [t.value for t in again.trials if t.state == TrialState.COMPLETE]


def test_a_record_broken_mid_journal_stops_with_the_recovery_command(tmp_path):
  path = tmp_path / storage_lib.JOURNAL_NAME
  _journal_with_trials(path, 2)
  os.truncate(path, path.stat().st_size - 40)
  # What happened before the fix: the next writer glued its record onto the fragment.
  with open(path, "ab") as f:
    f.write(b'{"op_code":0,"worker_id":"w","study_name":"t","directions":[1]}\n')
  with pytest.raises(
    storage_lib.journal.JournalError, match=r"line \d+ is not a valid record"
  ) as e:
    search.open_storage(None, tmp_path, quick(), print)
  assert "head -n" in str(e.value) and str(path) in str(e.value)


def test_leaderboard_says_which_trials_diverged():
  from optuna.distributions import FloatDistribution, IntDistribution

  st = optuna.create_study(direction="maximize")
  dist = {
    "layers": IntDistribution(1, 2),
    "width1": IntDistribution(10, 100),
    "learning_rate": FloatDistribution(1e-4, 1.0, log=True),
  }
  for lr, acc, diverged in ((0.01, 0.4, False), (0.9, 0.0, True)):
    st.add_trial(
      optuna.trial.create_trial(
        params={"layers": 1, "width1": 50, "learning_rate": lr},
        distributions=dist,
        value=acc,
        user_attrs={"diverged": diverged, "epochs": 3},
      )
    )
  rows = search.leaderboard(st)
  assert [(r["val_acc"], r["status"]) for r in rows] == [(0.4, "ok"), (0.0, "diverged")]


def test_a_running_worker_never_appends_after_a_torn_record(tmp_path):
  """A worker already running when another dies mid-write: its next append sets the fragment
  aside first instead of gluing its record onto it."""
  path = tmp_path / storage_lib.JOURNAL_NAME
  lines = []
  storage = search.open_storage(None, tmp_path, quick(), lines.append)
  st = optuna.create_study(study_name="s", storage=storage)
  st.tell(st.ask(), 1.0)
  with open(path, "ab") as f:
    f.write(b'{"op_code":5,"worker_id":"dead","trial_id":0,"us')  # a write cut short
  st.tell(st.ask(), 2.0)  # the same storage object: no repair at open
  assert any("set aside" in m for m in lines)
  assert path.read_bytes().endswith(b"\n")
  fresh = optuna.load_study(
    study_name="s", storage=search.open_storage(None, tmp_path, quick(), print)
  )
  assert sorted(t.value for t in fresh.trials) == [1.0, 2.0]


class PruneOddTrials(optuna.pruners.BasePruner):
  """Prunes odd-numbered trials at their second epoch: a pruner whose choices are known."""

  def prune(self, study, trial):
    return trial.number % 2 == 1 and trial.last_step == 2


@pytest.mark.slow
def test_pruned_trials_end_pruned_count_in_the_budget_and_never_win(
  fer_dir, tmp_path, monkeypatch, no_figures
):
  cfg = quick(budget=4, pruner="median", seed=0)
  cfg.search.space.learning_rate = dict(scale="log", low=1e-3, high=1e-2)  # none diverges
  cfg.train.max_epochs = 4
  cfg.train.early_stopping = "none"
  cfg.search.space.layers.high = 1
  cfg.search.space.width.low = 16
  assert isinstance(search.make_pruner(cfg), optuna.pruners.MedianPruner)
  monkeypatch.setattr(search.strategies, "make_pruner", lambda config: PruneOddTrials())
  reports = []
  monkeypatch.setattr(report, "evaluation_report", lambda out, *a, **k: reports.append(out))
  data = data_lib.load(cfg.data, str(fer_dir))
  st = search.run_worker(cfg, tmp_path, data=data, log=lambda s: None)
  trials = sorted(st.get_trials(), key=lambda t: t.number)
  assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED] * 2
  reported = {Path(out).parent.parent for out in reports}
  for t in trials:  # every epoch's val accuracy was reported, up to the pruning
    assert sorted(t.intermediate_values) == ([1, 2] if t.number % 2 else [1, 2, 3, 4])
    assert t.user_attrs["stop_reason"] == ("pruned" if t.number % 2 else "max_epochs")
    # A pruned run is evaluated on val only: no test split, no report.
    assert ("test_acc/PublicTest" in t.user_attrs) == (t.state == TrialState.COMPLETE)
    assert (Path(t.user_attrs["run_dir"]) in reported) == (t.state == TrialState.COMPLETE)
  assert st.best_trial.number in (0, 2)
  rows = search.leaderboard(st)
  assert [r["rank"] for r in rows] == [1, 2, None, None]
  assert [r["status"] for r in rows[2:]] == ["pruned at epoch 2"] * 2
  assert search.trials_per_hour(trials) > 0


def test_a_seeded_random_search_draws_trial_k_alike_on_every_worker_and_study():
  cfg = quick(seed=7)
  space = search.space_of(cfg)

  def draws(study, n):
    return [search.suggest(study.ask(), space) for _ in range(n)]

  alone = draws(optuna.create_study(sampler=search.make_sampler(cfg)), 6)
  # Two workers (two samplers, one study) asking in turn get exactly the single worker's trials.
  shared = optuna.create_study()
  workers = [search.make_sampler(cfg), search.make_sampler(cfg)]
  both = []
  for k in range(6):
    shared.sampler = workers[k % 2]
    both += draws(shared, 1)
  assert both == alone
  assert len({tuple(sorted(p.items())) for p in alone}) == 6  # trials differ from each other
  other = draws(optuna.create_study(sampler=search.make_sampler(quick(seed=8))), 6)
  assert other != alone
  # Without a seed each worker draws afresh.
  assert isinstance(search.make_sampler(quick()), optuna.samplers.RandomSampler)


def _tpe_draws(samplers, space, n):
  """n trials of one study asked in turn by ``samplers`` (one per worker), each told a score
  that depends on its parameters alone."""
  st = optuna.create_study(direction="maximize")
  out = []
  for k in range(n):
    st.sampler = samplers[k % len(samplers)]
    trial = st.ask()
    params = search.suggest(trial, space)
    out.append(params)
    st.tell(trial, (zlib.crc32(repr(sorted(params.items())).encode()) % 1000) / 1000)
  return out


def test_a_seeded_tpe_search_draws_other_start_up_trials_on_each_worker():
  cfg = quick(strategy="tpe", seed=7, tpe_startup=4)
  space = search.space_of(cfg)
  key = lambda p: tuple(sorted(p.items()))  # noqa: E731
  # Optuna's own seeded TPE: a second worker with the seed repeats the first one's draws.
  plain = [optuna.samplers.TPESampler(seed=7, n_startup_trials=4) for _ in range(2)]
  repeated = _tpe_draws(plain, space, 4)
  assert repeated[0] == repeated[1] and repeated[2] == repeated[3]
  # Ours: the two workers' start-up trials all differ ...
  two = _tpe_draws([search.make_sampler(cfg), search.make_sampler(cfg)], space, 8)
  assert len({key(p) for p in two[:4]}) == 4
  # ... and trial k is the same whichever worker asks it, in the start-up and after it (the
  # model's draws for trial k are seeded by (seed, k) too).
  assert _tpe_draws([search.make_sampler(cfg)], space, 8) == two
  assert _tpe_draws([search.make_sampler(cfg) for _ in range(3)], space, 8) == two
  # Another seed, other trials; no seed, Optuna's sampler with fresh randomness per worker.
  assert (
    _tpe_draws([search.make_sampler(quick(strategy="tpe", seed=8, tpe_startup=4))], space, 4)
    != two[:4]
  )
  assert type(search.make_sampler(quick(strategy="tpe"))) is optuna.samplers.TPESampler


@pytest.mark.parametrize("boot", [0, 2])
def test_a_rung_promotes_nothing_before_pruner_bootstrap_trials_reached_it(boot):
  st = optuna.create_study(
    direction="maximize",
    pruner=search.make_pruner(quick(pruner="successive_halving", pruner_bootstrap=boot)),
  )
  pruned = []
  for value in (0.5, 0.6, 0.7):  # each better than the last: promoted once the rung may promote
    trial = st.ask()
    trial.report(value, 1)
    pruned.append(trial.should_prune())
    st.tell(trial, value)
  assert pruned == ([False] * 3 if boot == 0 else [True, True, False])


@pytest.mark.parametrize("kind", search.PRUNERS)
def test_every_pruner_name_builds_and_a_wrong_one_is_refused(kind):
  cfg = quick(pruner=kind)
  assert isinstance(search.make_pruner(cfg), optuna.pruners.BasePruner)
  with pytest.raises(search.SearchError, match="search.pruner must be one of"):
    search.make_pruner(quick(pruner="asha"))
