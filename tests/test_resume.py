"""Checkpoints of runs in training (mlp.resume): a run stopped after any epoch continues from its
checkpoint and ends with the numbers of an uninterrupted run, bit for bit on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

from mlp import defaults, interrupts, lock, plan, resume, train
from mlp.checkpoint import CheckpointError
from tests.data_fixtures import write_fake_fer, write_fake_har
from tests.processes import children_of


class Killed(Exception):
  pass


def plans_of(layers: str, input_shape, *, seeds=1, **train_fields):
  """Plans of a one-configuration study (``seeds`` runs) on data of ``input_shape``, 3 classes."""
  cfg = defaults.fill({"name": "t", "seeds": seeds, "model": {"layers": layers}})
  cfg["train"].update(train_fields)
  return plan.build(plan.study_plan(cfg).runs, input_shape, 3)


def blobs(n, shape, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, n).astype(np.int32)
  centers = np.random.default_rng(1).normal(size=(3, int(np.prod(shape)))) * 2
  return (centers[y] + rng.normal(size=(n, centers.shape[1]))).astype(np.float32), y


def data_of(shape):
  x, y = blobs(96, shape)
  xv, yv = blobs(40, shape, seed=1)
  return x, y, xv, yv


def checkpointed_fit(group, data, folders, *, kill_after=None, resume_from=None, vectorize=False):
  """fit with a checkpoint of every member after every epoch; Killed after epoch ``kill_after``
  (once its checkpoints are written), as kill -9 would stop it then."""
  writer = resume.Writer(group.plans, folders, minutes=0)

  def on_state(ids, state, now):
    writer(ids, state, now)
    if kill_after is not None and state().epoch == kill_after:
      raise Killed

  starts = None
  if resume_from is not None:
    starts = [resume.load(f, p) for f, p in zip(resume_from, group.plans, strict=True)]
  return train.fit(group.population(), data, resume=starts, on_state=on_state, vectorize=vectorize)


def assert_same(a: train.FitResult, b: train.FitResult):
  leaves = lambda r: jax.tree.leaves((r.params, r.state))  # noqa: E731
  for x, y in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  assert a.history == b.history
  assert list(a.epochs) == list(b.epochs) and a.stop_reason == b.stop_reason


CASES = {
  # an MLP with dropout, heavy-ball momentum and patience (the best epoch's params kept)
  "mlp_patience": (
    "dropout0.2 dense16 relu dropout0.3 dense",
    (12,),
    dict(max_epochs=9, patience=2, momentum=0.9, learning_rate=0.05),
  ),
  # a CNN with batch norm, augmentation, Adam on a cosine schedule with warm-up
  "cnn_adam_cosine": (
    "conv4 bn relu maxpool2 flatten dense",
    (6, 6, 1),
    dict(
      max_epochs=7,
      early_stopping="none",
      optimizer="adam",
      schedule="cosine",
      warmup_epochs=2.0,
      augment_flip=True,
      augment_shift=1,
      learning_rate=0.01,
      batch_size=32,
    ),
  ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kill_after", [1, 3])
def test_a_run_resumed_from_its_checkpoint_ends_bit_for_bit_as_an_uninterrupted_one(
  case, kill_after, tmp_path
):
  layers, shape, fields = CASES[case]
  (group,) = plan.groups(plans_of(layers, shape, **fields))
  data = data_of(shape)
  whole = train.fit(group.population(), data, vectorize=False)
  folder = [tmp_path / "run"]
  with pytest.raises(Killed):
    checkpointed_fit(group, data, folder, kill_after=kill_after)
  assert resume.read_header(folder[0])["epoch"] == kill_after
  again = checkpointed_fit(group, data, folder, resume_from=folder)
  assert_same(again, whole)
  assert whole.epochs[0] > kill_after  # it did train on after the checkpoint


def test_a_population_resumes_member_by_member_and_at_different_epochs(tmp_path):
  """Members of a vmapped population each have a checkpoint; a kill between two members' writes
  leaves them at different epochs, and each continues from its own."""
  layers, shape, fields = CASES["mlp_patience"]
  (group,) = plan.groups(plans_of(layers, shape, seeds=3, **fields))
  data = data_of(shape)
  whole = train.fit(group.population(), data, vectorize=True)
  folders = [tmp_path / f"m{i}" for i in range(3)]
  with pytest.raises(Killed):
    checkpointed_fit(group, data, folders, kill_after=2, vectorize=True)
  behind = resume.load(folders[1], group.plans[1])  # as if killed before member 1's next write
  with pytest.raises(Killed):
    checkpointed_fit(group, data, folders, kill_after=3, resume_from=folders, vectorize=True)
  resume.save(folders[1], group.plans[1], behind)
  assert [resume.read_header(f)["epoch"] for f in folders] == [3, 2, 3]
  again = checkpointed_fit(group, data, folders, resume_from=folders, vectorize=True)
  # Members resumed together train as one program again: the same numbers as the whole run's
  # population (the one resumed alone is compared with its own single run).
  for i in (0, 2):
    np.testing.assert_array_equal(again.epochs[i], whole.epochs[i])
    assert again.history[i] == whole.history[i]
  alone = train.fit(group.population(), data, vectorize=False)
  assert again.history[1] == alone.history[1]


def test_a_checkpoint_of_other_settings_or_a_damaged_one_is_refused(tmp_path):
  layers, shape, fields = CASES["mlp_patience"]
  (group,) = plan.groups(plans_of(layers, shape, **fields))
  folder = tmp_path / "run"
  with pytest.raises(Killed):
    checkpointed_fit(group, data_of(shape), [folder], kill_after=1)
  assert resume.load(folder, group.plans[0]).epoch == 1
  (other,) = plans_of(layers, shape, **{**fields, "learning_rate": 0.01})
  with pytest.raises(CheckpointError, match="other settings"):
    resume.load(folder, other)
  (seed1,) = [p for p in plans_of(layers, shape, seeds=2, **fields) if p.seed == 1]
  with pytest.raises(CheckpointError, match="other settings"):
    resume.load(folder, seed1)
  # The interval is how a run is saved, not what it computes: a checkpoint fits either way.
  (often,) = plans_of(layers, shape, **{**fields, "checkpoint_minutes": 0.0})
  assert resume.load(folder, often).epoch == 1
  path = resume.path_of(folder)
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(CheckpointError, match="unreadable"):
    resume.load(folder, group.plans[0])


def test_a_checkpoint_holds_no_pickle(tmp_path):
  layers, shape, fields = CASES["cnn_adam_cosine"]
  (group,) = plan.groups(plans_of(layers, shape, **fields))
  with pytest.raises(Killed):
    checkpointed_fit(group, data_of(shape), [tmp_path], kill_after=2)
  with zipfile.ZipFile(resume.path_of(tmp_path)) as z:
    names = z.namelist()
  assert "header.json" in names
  assert any(n.startswith("opt_state/") for n in names)  # Adam's moments and count
  assert any(n.startswith("state/") for n in names)  # batch-norm statistics
  with np.load(resume.path_of(tmp_path), allow_pickle=False) as npz:
    assert all(npz[n[:-4]].dtype != object for n in names if n.endswith(".npy"))


def test_ctrl_c_and_sigterm_wait_for_the_end_of_an_epoch_in_training_and_not_elsewhere():
  saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  hook = sys.unraisablehook

  def signal_me(signum):
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # (Python runs the handler between two bytecodes of the main thread)

  try:
    # (A shell's background job starts with SIGINT ignored, which install() keeps ignored.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.install(quiet=True)
    with interrupts.safe_points():
      signal_me(signal.SIGTERM)  # no exception here: training goes on to the end of its epoch
      assert interrupts.requested() == signal.SIGTERM
      with pytest.raises(interrupts.Preempted):
        interrupts.stop_now()
      assert interrupts.requested() is None
      signal_me(signal.SIGINT)
      assert interrupts.requested() == signal.SIGINT
      with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait
        signal_me(signal.SIGINT)
    with pytest.raises(interrupts.Preempted):  # outside training: at once
      signal_me(signal.SIGTERM)
    assert interrupts.requested() is None
  finally:
    for signum, handler in saved.items():
      signal.signal(signum, handler)
    sys.unraisablehook = hook
  assert interrupts.exit_code(interrupts.Preempted()) == 143
  assert interrupts.exit_code(KeyboardInterrupt()) == 130
  assert interrupts.reason(interrupts.Preempted()) == "preempted"


def test_the_resume_command_names_the_workdir(monkeypatch):
  monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "experiments.har_ablation", "--verbose"])
  assert interrupts.resume_command("runs/x y") == (
    "python -m experiments.har_ablation --verbose '--workdir=runs/x y'"
  )
  monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "m", "--workdir=w"])
  assert interrupts.resume_command("w") == "python -m m --workdir=w"


# ------------------------------------------------------------------- end to end: command lines

ROOT = Path(__file__).resolve().parents[1]
CNN = (
  "experiments.image_study",
  "--config=configs/fer2013_cnn.py:quick",
  "--config.train.max_epochs=6",
  "--config.train.checkpoint_minutes=0",  # a checkpoint after every epoch (tiny epochs here)
  "--verbose",  # epoch lines: the test sees where training is
)
HAR = (
  "experiments.har_ablation",
  "--config=configs/har.py:quick",
  "--config.workers=2",
  "--config.grid.train.momentum=(0.0,)",  # 5 runs
  "--config.train.max_epochs=30",
  "--config.train.early_stopping=none",
  "--config.train.checkpoint_minutes=0",
  "--verbose",
)


@pytest.fixture(scope="module")
def fer_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("fer")
  write_fake_fer(root, n=700)  # epochs of a fifth of a second: a kill lands between two
  return root


@pytest.fixture(scope="module")
def har_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("har")
  write_fake_har(root, subjects=(1, 3, 5, 6, 7, 8, 25, 26, 27, 28, 29, 30), rows_per_subject=30)
  return root


def command(entry, data_dir, workdir):
  return [sys.executable, "-m", *entry, f"--data_dir={data_dir}", f"--workdir={workdir}"]


def run(entry, data_dir, workdir):
  out = subprocess.run(
    command(entry, data_dir, workdir), cwd=ROOT, capture_output=True, text=True, timeout=600
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def start(entry, data_dir, workdir):
  return subprocess.Popen(
    command(entry, data_dir, workdir),
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def checkpoint_epochs(workdir) -> dict[str, int]:
  """{run id: epoch} of the checkpoints in a workdir (a checkpoint being replaced: skipped)."""
  out = {}
  for path in Path(workdir).glob(f"runs/*/*/{resume.FILE}"):
    try:
      out[resume.read_header(path.parent)["run"]] = resume.read_header(path.parent)["epoch"]
    except CheckpointError:
      continue
  return out


def wait_for_checkpoint(p, workdir, epoch, timeout=300):
  """Read the process's lines until one of its runs has a checkpoint at ``epoch`` or later."""
  deadline = time.monotonic() + timeout
  while max(checkpoint_epochs(workdir).values(), default=0) < epoch:
    assert p.poll() is None, p.communicate()[1][-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.01)


def results_of(workdir) -> dict[str, dict]:
  """Every run's result.json, less its wall time."""
  out = {}
  for path in sorted(Path(workdir).glob("runs/*/*/result.json")):
    result = json.loads(path.read_text())
    del result["seconds"]
    out[result["run"]] = result
  return out


def models_of(workdir) -> dict[str, dict[str, np.ndarray]]:
  out = {}
  for path in sorted(Path(workdir).glob("runs/*/*/model.npz")):
    with np.load(path) as npz:
      out[str(path.relative_to(workdir))] = {k: npz[k] for k in npz.files}
  return out


def assert_same_study(workdir, reference):
  assert results_of(workdir) == results_of(reference)
  a, b = models_of(workdir), models_of(reference)
  assert sorted(a) == sorted(b) and a
  for name in a:
    for k in a[name]:
      np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=f"{name} {k}")
  assert (Path(workdir) / "results.md").read_text() == (Path(reference) / "results.md").read_text()
  assert not list(Path(workdir).glob(f"runs/*/*/{resume.FILE}"))  # deleted once saved


@pytest.fixture(scope="module")
def cnn_reference(fer_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cnn_reference")
  run(CNN, fer_dir, workdir)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_a_cnn_run_stopped_after_its_third_epoch_resumes_and_ends_as_an_uninterrupted_one(
  how, fer_dir, cnn_reference, tmp_path
):
  p = start(CNN, fer_dir, tmp_path)
  wait_for_checkpoint(p, tmp_path, 3)
  p.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
  _, err = p.communicate(timeout=120)
  (at,) = checkpoint_epochs(tmp_path).values()
  assert 3 <= at < 6
  if how == "SIGTERM":
    assert p.returncode == 143, err[-3000:]
    said = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert len(said) == 1 and said[0].startswith("preempted (SIGTERM): "), err[-3000:]
    assert f"at epoch {at}" in said[0] and f"--workdir={tmp_path}" in said[0]
    assert (tmp_path / lock.LOCK_NAME).read_text() == ""  # released
  else:
    assert p.returncode == -signal.SIGKILL
  out = run(CNN, fer_dir, tmp_path)
  assert f"resumes at epoch {at + 1} from its checkpoint" in out
  assert f"epoch {at}/6" not in out.split("resumes at epoch")[1]  # no epoch trained twice
  assert_same_study(tmp_path, cnn_reference)


@pytest.fixture(scope="module")
def har_references(har_dir, tmp_path_factory):
  """{mode: workdir} of uninterrupted HAR studies, made when first asked for."""
  made = {}

  def reference(mode):
    if mode not in made:
      made[mode] = tmp_path_factory.mktemp(f"har_reference_{mode}")
      run(HAR_MODES[mode], har_dir, made[mode])
    return made[mode]

  return reference


# Worker processes; or one process training each shape group as one vmapped population (two
# seeds per run: populations of two).
HAR_MODES = {
  "workers": HAR,
  "population": (*HAR, "--config.workers=1", "--config.vectorize=true", "--config.seeds=2"),
}


@pytest.mark.slow
@pytest.mark.parametrize(
  ("how", "mode"), [("kill -9", "workers"), ("SIGTERM", "workers"), ("kill -9", "population")]
)
def test_a_har_study_stopped_mid_training_resumes_every_run(
  how, mode, har_dir, har_references, tmp_path
):
  entry = HAR_MODES[mode]
  p = start(entry, har_dir, tmp_path)
  wait_for_checkpoint(p, tmp_path, 3)
  if how == "SIGTERM":  # to the study process alone: it passes it on to its workers
    workers = children_of(p.pid)
    assert len(workers) == 2
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-3000:]
    said = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert len(said) == 1 and said[0].startswith("preempted (SIGTERM): "), err[-3000:]
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]  # they exited with it
    assert (tmp_path / lock.LOCK_NAME).read_text() == ""
  else:
    p.kill()  # the study process; its workers follow it (mlp.workers)
    p.communicate(timeout=60)
  stopped = checkpoint_epochs(tmp_path)
  out = run(entry, har_dir, tmp_path)
  resumed = [line for line in out.splitlines() if "from its checkpoint" in line]
  assert resumed, out[-3000:]
  assert {line.split(" resumes at ")[0].split()[-1] for line in resumed} <= set(stopped)
  assert_same_study(tmp_path, har_references(mode))
