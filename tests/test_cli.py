"""The entry points' command lines: --help lists each one's own flags."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__")
TAKE_A_CONFIG = {"har_ablation", "image_study", "cross_validate", "transfer", "search"}


def run_entry(name: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", f"experiments.{name}", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


def own_flags(helpfull: str) -> set[str]:
  """Flags that --helpfull lists under a section of this project (mlp.*, experiments.*)."""
  names, ours = set(), False
  for line in helpfull.splitlines():
    if line and not line.startswith(" "):  # a section header: "<module>:"
      module = line.rstrip(":")  # a module name, or the entry point's path under python -m
      ours = module.startswith(("mlp", "experiments")) or "/experiments/" in module
    elif ours and (m := re.match(r"  (?:-\w,)?--(?:\[no\])?(\w+):", line)):
      names.add(m.group(1))
  return names


def test_entry_points_are_the_expected_ones():
  assert set(ENTRY_POINTS) >= {"har_ablation", "image_study", "evaluate", "predict", "search"}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_lists_the_entry_points_own_flags(name):
  full = run_entry(name, "--helpfull")
  assert full.returncode == 0, full.stderr
  flags = own_flags(full.stdout)
  assert "data_dir" in flags or name == "predict"  # (predict reads images, not a data set)
  short = run_entry(name, "-h")
  assert short.returncode == 0, short.stderr
  listed = set(re.findall(r"^\s+(?:-\w,)?--(?:\[no\])?(\w+):", short.stdout, re.M))
  assert flags <= listed, f"--help of {name} lacks {sorted(flags - listed)}"
  assert "absl.logging" not in short.stdout  # only the entry point's own flags, not absl's
  if name in TAKE_A_CONFIG:
    assert "--config.train.learning_rate=" in short.stdout  # how to override a config field


def test_an_unknown_config_field_is_said_in_one_clean_line():
  """ml_collections' KeyError inside an AttributeError used to print as its repr, quotes and
  newline escaped; the field as typed and the suggestion are what is said."""
  r = run_entry("har_ablation", "--config=configs/har.py", "--config.train.max_epoch=3")
  assert r.returncode == 2 and "Traceback" not in r.stderr
  first = r.stderr.splitlines()[0]
  assert first == (
    "error: the config has no field train.max_epoch (from --config.train.max_epoch); "
    'did you mean "max_epochs"?'
  )
  nested = run_entry("har_ablation", "--config=configs/har.py", "--config.model.widths=3")
  assert nested.stderr.splitlines()[0] == (
    "error: the config has no field model.widths (from --config.model.widths)"
  )


@pytest.mark.parametrize("entry", ["har_ablation", "search"])
def test_a_bad_or_unreachable_storage_url_is_one_line_and_status_2(entry, tmp_path):
  for url in ("postgresql://mlp:secret@127.0.0.1:1/mlp", "nosuchdb://host/db"):
    r = run_entry(entry, f"--workdir={tmp_path}", f"--storage={url}", "--report_only")
    assert r.returncode == 2, r.stderr[-2000:]
    said = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and said[0].startswith("error (StorageError): cannot open the storage")
    assert "secret" not in r.stderr  # the password is not echoed


def test_a_ctrl_c_inside_a_gc_callback_interrupts_the_main_thread_again():
  """A KeyboardInterrupt raised in a gc callback is 'ignored' by Python (a traceback on stderr,
  the interrupt lost); the hook hands it back to the main thread instead."""
  import signal
  import time
  from types import SimpleNamespace

  from mlp import interrupts

  previous = sys.unraisablehook, signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    interrupts.keep_interrupts()
    with pytest.raises(KeyboardInterrupt):
      sys.unraisablehook(SimpleNamespace(exc_value=KeyboardInterrupt()))
      for _ in range(200):
        time.sleep(0.005)
  finally:
    sys.unraisablehook = previous[0]
    signal.signal(signal.SIGINT, previous[1])
