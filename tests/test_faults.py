"""Faults a new user meets (issue 26, tried 2026-12-07): each ends in a line or two and exit 2, or
works, and nothing finished is lost."""

import errno
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import pytest
from PIL import Image

from configs import fer2013_search, har
from mlp import cli, ensemble, plan, study, train, trainer
from mlp.checkpoint import CheckpointError
from mlp.data import images
from mlp.search import SearchError, open_study
from mlp.search import storage as storage_lib
from tests.data_fixtures import one_run_har_config, write_fake_har

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def har_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("har")
  write_fake_har(root, subjects=(1, 3, 5, 6, 7, 8, 25, 26, 27), rows_per_subject=12)
  return root


def entry(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
  )


def said(r: subprocess.CompletedProcess) -> list[str]:
  """What a failed command printed on stderr, line by line (blank lines, and the warning that the
  test data are not the official files, left out)."""
  assert r.returncode == 2, r.stderr[-3000:]
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  lines = [line for line in r.stderr.splitlines() if line.strip()]
  lines = [line for line in lines if not line.startswith("warning: UCI HAR in")]  # (fake data)
  assert 1 <= len(lines) <= 2, r.stderr
  return lines


# ----------------------------------------------------------------- the config, before training


@pytest.mark.parametrize("seeds", [0, -1])
def test_no_seeds_is_refused(seeds):
  cfg = har.get_config("quick")
  cfg.seeds = seeds
  with pytest.raises(ValueError, match="seeds must be >= 1"):
    plan.study_plan(cfg)


@pytest.mark.parametrize(
  ("override", "message"),
  [
    ("--config.seeds=0", "seeds must be >= 1"),
    ("--config.seeds=3", "seeds \\(3\\) must be a multiple of ensemble \\(5\\)"),
    ("--config.ensemble=0", "ensemble must be >= 1"),
  ],
)
def test_a_config_error_stops_the_study_before_anything_trains(override, message, tmp_path):
  # (no --data_dir: the data set would be downloaded if the study got as far as loading it)
  r = entry(
    "experiments.har_ablation", "--config=configs/har.py:best", override, f"--workdir={tmp_path}/w"
  )
  (line,) = said(r)
  assert re.search(message, line), line
  assert not (tmp_path / "w").exists()


def test_a_batch_that_cannot_fit_in_memory_is_refused_in_one_line(har_dir, tmp_path):
  r = entry(
    "experiments.har_ablation",
    "--config=configs/har.py:quick",
    "--config.grid.train.batch_size=(1000000000,)",
    f"--data_dir={har_dir}",
    f"--workdir={tmp_path}/w",
  )
  (line,) = said(r)
  assert "batch size 1000000000 needs about" in line and "TB of memory" in line, line
  assert "smaller batch size (config field train.batch_size)" in line
  assert not (tmp_path / "w").exists()


def test_a_batch_larger_than_the_training_rows_is_said_once(har_dir, tmp_path):
  cfg = one_run_har_config()
  cfg.seeds, cfg.train.max_epochs, cfg.train.batch_size = 2, 1, 10_000
  lines = []
  study.run_study(cfg, tmp_path, data_dir=str(har_dir), log=lines.append)
  notes = [line for line in lines if "larger than the" in line]
  assert len(notes) == 1, lines
  assert "batch size 10000 is larger than the" in notes[0] and "one batch, padded" in notes[0]
  assert "2 runs" in notes[0]


def test_an_out_of_memory_error_in_training_is_one_line(har_dir, tmp_path, monkeypatch):
  """When the estimate passes but XLA cannot allocate (another process took the memory)."""

  def fit(*args, **kwargs):
    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9.1TiB")

  monkeypatch.setattr(train, "fit", fit)
  cfg = one_run_har_config()
  with pytest.raises(trainer.OutOfMemory, match="out of memory training .*: batch size 50 needs"):
    study.run_study(cfg, tmp_path, data_dir=str(har_dir), log=lambda s: None)
  assert issubclass(trainer.OutOfMemory, ValueError)  # an error of the user's: exit 2 (mlp.cli)


# ---------------------------------------------------------------------------- paths and storage


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  for workdir in (tmp_path / "file", tmp_path / "file" / "below"):
    r = entry("experiments.har_ablation", "--config=configs/har.py:quick", f"--workdir={workdir}")
    (line,) = said(r)
    assert "error (WorkdirUnusable): --workdir" in line and "choose another --workdir" in line
    assert str(tmp_path / "file") in line


@pytest.fixture
def read_only_dir(tmp_path):
  """A folder nobody here may write in: mode 555, and immutable (chattr +i) for root, whom modes
  do not stop."""
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  if os.geteuid() == 0:
    if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
      pytest.skip("running as root on a file system without chattr +i: no read-only folder")
  yield ro
  if os.geteuid() == 0:
    subprocess.run(["chattr", "-i", str(ro)], check=True)
  ro.chmod(0o755)


def test_a_read_only_workdir_is_one_line(read_only_dir):
  for workdir in (read_only_dir, read_only_dir / "new"):
    r = entry("experiments.har_ablation", "--config=configs/har.py:quick", f"--workdir={workdir}")
    (line,) = said(r)
    assert f"--workdir {workdir}" in line and "make it writable" in line, line


def test_an_os_error_on_a_path_is_the_users_problem_in_one_line(capsys):
  def main(argv):
    raise PermissionError(errno.EACCES, "Permission denied", "/data/har/X_train.txt")

  with pytest.raises(SystemExit) as e:
    cli.friendly_errors(main)(["prog"])
  assert e.value.code == 2
  (line,) = [line for line in capsys.readouterr().err.splitlines() if line]
  assert line == (
    "error (PermissionError): /data/har/X_train.txt: Permission denied; check its permissions, "
    "or choose another path (--workdir, --data_dir, ...)"
  )

  def bug(argv):
    raise OSError(errno.EINVAL, "Invalid argument")  # no path: not the user's, a traceback

  with pytest.raises(OSError, match="Invalid argument"):
    cli.friendly_errors(bug)(["prog"])


@pytest.fixture
def silent_server():
  """A TCP server that accepts connections and never says a word (a hung database)."""
  srv = socket.socket()
  srv.bind(("127.0.0.1", 0))
  srv.listen(8)
  held = []

  def accept():
    while True:
      try:
        held.append(srv.accept()[0])
      except OSError:
        return

  threading.Thread(target=accept, daemon=True).start()
  yield srv.getsockname()[1]
  srv.close()
  for c in held:
    c.close()


def test_a_database_that_never_answers_is_given_up_naming_its_host(silent_server, monkeypatch):
  def open_(url):
    return storage_lib.open_storage(
      url, Path("."), heartbeat_interval=5, grace_period=60, log=lambda s: None
    )

  url = f"postgresql://mlp:secret@127.0.0.1:{silent_server}/db"
  assert storage_lib.connect_timeout(url) == (storage_lib.CONNECT_TIMEOUT_S, False)
  assert storage_lib.connect_timeout(url + "?connect_timeout=3") == (3.0, True)
  assert storage_lib.connect_timeout("sqlite:///x.db") == (None, False)
  for given, where in ((url + "?connect_timeout=2", "the URL's"), (url, "the default")):
    if where == "the default":
      monkeypatch.setattr(storage_lib, "CONNECT_TIMEOUT_S", 2)
    start = time.monotonic()
    with pytest.raises(storage_lib.StorageError) as e:
      open_(given)
    assert time.monotonic() - start < 20, where
    text = str(e.value)
    assert f"127.0.0.1:{silent_server} did not answer within 2 s" in text, (where, text)
    assert "secret" not in text and "connect_timeout" in text


def test_a_search_with_the_same_name_and_other_settings_is_refused_naming_them(tmp_path):
  def study_with(**changes):
    cfg = fer2013_search.get_config("quick")
    for path, value in changes.items():
      section, field = path.split("__")
      cfg[section][field] = value
    where = storage_lib.open_storage(
      None, tmp_path, heartbeat_interval=5, grace_period=60, log=lambda s: None
    )
    return open_study(cfg, "s", where)

  study_with()
  study_with(search__budget=99, train__checkpoint_minutes=0.0)  # how, not what: joins
  study_with(train__learning_rate=0.5)  # a searched field: every trial draws its own
  with pytest.raises(SearchError) as e:
    study_with(train__max_epochs=7, train__patience=9)
  text = str(e.value)
  assert "train.max_epochs (study: 3, here: 7)" in text and "train.patience" in text
  assert "new --study" in text
  for changes in ({"train__early_stopping": "gap"}, {"model__dropout": "regular"}):
    with pytest.raises(SearchError, match=list(changes)[0].replace("__", ".")):
      study_with(**changes)
  with pytest.raises(SearchError, match="seed"):
    study_with(search__seed=3)


# --------------------------------------------------------------------------------- prediction


def test_predict_refuses_an_out_that_is_a_file_before_predicting(tmp_path):
  (tmp_path / "report.md").write_text("mine")
  r = entry(
    "experiments.predict",
    "--model=nowhere",
    f"--images={tmp_path}",
    f"--labels={tmp_path / 'labels.csv'}",
    f"--out={tmp_path / 'report.md'}",
  )
  (line,) = said(r)
  assert "--out" in line and "is a file" in line
  assert r.stdout.count("\n") <= 1  # nothing predicted
  assert (tmp_path / "report.md").read_text() == "mine"
  assert "replaced" in entry("experiments.predict", "--help").stdout  # what --out does, said


def test_ensemble_members_must_live_in_its_folder(tmp_path):
  folder = tmp_path / "runs" / "x" / "ensemble0"
  folder.mkdir(parents=True)
  for member in ("../../elsewhere/model", "/etc/model", "members/../../seed0/model"):
    (folder / ensemble.FILE).write_text(json.dumps({"members": [member]}))
    with pytest.raises(CheckpointError, match="outside the ensemble's folder"):
      ensemble.read_members(folder / ensemble.FILE)
  # What a study writes: the members, linked or copied in, loadable from the folder alone.
  for seed in (0, 1):
    run = tmp_path / "runs" / "x" / f"seed{seed}"
    run.mkdir()
    (run / "model.npz").write_bytes(b"npz%d" % seed)
    (run / "model.json").write_text("{}")
  path = ensemble.write_members(
    folder, [tmp_path / "runs" / "x" / f"seed{s}" / "model" for s in (0, 1)]
  )
  members = ensemble.read_members(path)
  assert [m.relative_to(folder).as_posix() for m in members] == ["members/seed0", "members/seed1"]
  assert (folder / "members" / "seed1.npz").read_bytes() == b"npz1"


def test_an_image_of_too_many_pixels_is_skipped_before_it_is_decoded(tmp_path):
  Image.new("L", (400, 300), 0).save(tmp_path / "big.png")
  Image.new("L", (40, 30), 0).save(tmp_path / "small.png")
  with pytest.warns(UserWarning, match="big.png: 400x300 is 120,000 pixels, more than the 10,000"):
    x, names = images.load_folder(tmp_path, size=(8, 8), channels=1, max_pixels=10_000)
  assert names == ["small.png"] and x.shape == (1, 8, 8, 1)
  assert "--max_pixels" in entry("experiments.predict", "--help").stdout
