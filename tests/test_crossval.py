"""Cross-validation: fold construction, the fold studies, baselines and the reports, end to end."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import har_cv
from mlp import crossval, study
from mlp import data as data_lib
from mlp.data import folds, har
from tests.data_fixtures import write_fake_fer, write_fake_har

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SUBJECTS = (1, 2, 3, 5, 6, 7, 8, 9, 10)
SUBJECTS = TRAIN_SUBJECTS + (25, 26, 27)


@pytest.fixture(scope="module")
def har_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("har_cv")
  write_fake_har(root, subjects=SUBJECTS, rows_per_subject=18)
  return root


def test_subject_folds_partition_the_subjects():
  subjects = np.arange(1, 22)
  groups = folds.subject_folds(np.repeat(subjects, 5), 7, seed=3)
  assert [len(g) for g in groups] == [3] * 7
  assert sorted(np.concatenate(groups).tolist()) == subjects.tolist()
  assert [g.tolist() for g in groups] == [g.tolist() for g in folds.subject_folds(subjects, 7, 3)]
  assert [g.tolist() for g in groups] != [g.tolist() for g in folds.subject_folds(subjects, 7, 4)]
  with pytest.raises(ValueError, match="cannot deal 21 subjects into 22 folds"):
    folds.subject_folds(subjects, 22, 0)


def test_stratified_folds_balance_every_class():
  y = np.repeat(np.arange(4), [30, 31, 7, 12])
  where = folds.stratified_folds(y, 5, seed=0)
  for c in range(4):
    counts = np.bincount(where[y == c], minlength=5)
    assert counts.max() - counts.min() <= 1, (c, counts)
  sizes = np.bincount(where, minlength=5)
  assert sizes.max() - sizes.min() <= 2
  assert not np.array_equal(where, folds.stratified_folds(y, 5, seed=1))


def test_har_fold_holds_out_whole_subjects_and_never_the_test_subjects(har_dir):
  seen = []
  for i in range(3):
    d = har.load(str(har_dir), val_subjects=2, cv_folds=3, cv_fold=i, cv_seed=0)
    assert d.test_source == "fold"
    held, val, tr = set(d.s_test), set(d.s_val), set(d.s_train)
    assert len(held) == 3 and len(val) == 2 and len(tr) == 4
    assert not (held & val or held & tr or val & tr)
    assert held <= set(TRAIN_SUBJECTS)  # subjects 25-30 (the test set) never enter a fold
    assert f"fold {i + 1} of 3" in d.split_note
    seen += sorted(held)
  assert sorted(seen) == sorted(TRAIN_SUBJECTS)


def test_image_fold_is_stratified_and_leaves_the_official_tests_out(tmp_path):
  write_fake_fer(tmp_path, n=140)
  cfg = {"name": "fer2013", "val_fraction": 0.1, "split_seed": 0, "preprocess": "center"}
  full = data_lib.load(cfg, str(tmp_path))
  pool = len(full.y_train) + len(full.y_val)
  parts = [data_lib.load({**cfg, "cv_folds": 4, "cv_fold": i}, str(tmp_path)) for i in range(4)]
  for d in parts:
    assert list(d.tests) == ["fold"]
    assert len(d.y_train) + len(d.y_val) + len(d.tests["fold"][1]) == pool
    assert np.bincount(d.tests["fold"][1], minlength=7).min() >= 1
    assert "fold" in d.notes[0] and "official test splits unused" in d.notes[0]
  assert sum(len(d.tests["fold"][1]) for d in parts) == pool
  with pytest.raises(ValueError, match="cv_fold must be in"):
    data_lib.load({**cfg, "cv_folds": 4, "cv_fold": 4}, str(tmp_path))


def quick_cv_config(**cv):
  cfg = har_cv.get_config("quick")
  cfg.data.val_subjects = 2
  cfg.train.max_epochs = 3
  cfg.train.gap_min_epoch = 1
  for k, v in cv.items():
    cfg.cv[k] = v
  return cfg


@pytest.fixture(scope="module")
def finished(har_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cv")
  cfg = quick_cv_config()
  lines = []
  summary = crossval.run_cv(cfg, workdir, data_dir=str(har_dir), log=lines.append)
  return cfg, workdir, summary, lines


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_cv_table_has_every_learner_and_fold(finished):
  cfg, workdir, summary, _ = finished
  rows = {r["learner"]: r for r in read_csv(workdir / "results.csv")}
  assert set(rows) == {"har_cv_quick", "logistic_regression", "decision_tree"}
  for r in rows.values():
    accs = [float(r[f"fold{i}"]) for i in (1, 2, 3)]
    assert all(0.0 <= a <= 1.0 for a in accs)
    assert float(r["mean"]) == pytest.approx(np.mean(accs))
  # The fold accuracies are those of the fold studies' own results (our run) on the held-out part.
  for i in (1, 2, 3):
    rdir = workdir / "folds" / f"fold{i}" / "runs" / "har_cv_quick" / "seed0"
    result = json.loads((rdir / "result.json").read_text())
    assert float(rows["har_cv_quick"][f"fold{i}"]) == pytest.approx(
      result["tests"]["fold"]["topk"][0]
    )
  assert (workdir / "figures" / "cv_accuracy.png").stat().st_size > 0
  assert (workdir / "runs" / "cv" / "logistic_regression").is_dir()


def test_comparisons_name_each_test_and_a_claim(finished):
  _, workdir, summary, _ = finished
  rows = read_csv(workdir / "comparisons.csv")
  assert {(r["a"], r["b"]) for r in rows} == {
    ("har_cv_quick", "logistic_regression"),
    ("har_cv_quick", "decision_tree"),
  }
  for r in rows:
    for key in ("p_corrected_t", "p_wilcoxon", "p_mcnemar"):
      assert 0.0 <= float(r[key]) <= 1.0
    assert float(r["ci_low"]) <= float(r["mean_diff"]) <= float(r["ci_high"])
    assert "in general" in r["claim"] or "No significant difference" in r["claim"]
  md = (workdir / "comparisons.md").read_text()
  assert "Nadeau & Bengio" in md and "McNemar" in md


def test_baselines_are_tuned_on_each_folds_training_subjects(finished):
  from mlp import baselines

  cfg, workdir, _, lines = finished
  tuning = read_csv(workdir / "tuning.csv")
  learners = ("logistic_regression", "decision_tree")
  assert {(r["learner"], r["fold"]) for r in tuning} == {
    (b, f"fold{i}") for b in learners for i in (1, 2, 3)
  }
  for r in tuning:
    saved = json.loads(
      (workdir / "folds" / r["fold"] / "baselines" / f"{r['learner']}.json").read_text()
    )
    assert r["chosen"] == baselines.format_params(saved["params"]) != ""
    assert float(r["inner_accuracy"]) == pytest.approx(saved["inner_accuracy"])
    assert "inner folds of whole subjects" in r["inner"]
    assert r["grid"] == saved["grid"] and " in {" in r["grid"]
  rows = {r["learner"]: r for r in read_csv(workdir / "results.csv")}
  assert rows["har_cv_quick"]["chosen"] == ""
  for b in learners:  # the most frequent choice, on how many of the 3 folds
    assert rows[b]["chosen"].endswith("/3 folds)")
  assert "tuned on each fold's training part alone" in (workdir / "results.md").read_text()
  assert sum("chosen by" in line for line in lines) == 6


def test_rerun_resumes_without_training(finished, har_dir):
  cfg, workdir, summary, _ = finished
  lines = []
  again = crossval.run_cv(cfg, workdir, data_dir=str(har_dir), log=lines.append)
  assert not any("epoch" in line for line in lines)
  assert sum("1 of 1 runs already finished" in line for line in lines) == 3
  assert [r["mean"] for r in again["rows"]] == [r["mean"] for r in summary["rows"]]


def test_changed_config_is_refused(finished, har_dir):
  cfg, workdir, _, _ = finished
  other = quick_cv_config(seed=5)
  with pytest.raises(study.StudyError, match="different config"):
    crossval.run_cv(other, workdir, data_dir=str(har_dir), log=lambda m: None)


def test_bad_cv_values_are_refused():
  with pytest.raises(ValueError, match="unknown baseline"):
    crossval.cv_of(quick_cv_config(baselines=("svm_rbf",)))
  with pytest.raises(ValueError, match="cv.scheme"):
    crossval.cv_of(quick_cv_config(scheme="loo"))
  with pytest.raises(ValueError, match="cv.folds"):
    crossval.cv_of(quick_cv_config(folds=1))


def test_5x2_scheme_lists_ten_folds_over_five_seeds():
  labels = crossval.folds_of(crossval.cv_of(quick_cv_config(scheme="5x2", seed=2)))
  assert len(labels) == 10
  assert {(k, seed) for _, k, _, seed in labels} == {(2, s) for s in range(2, 7)}


@pytest.mark.slow
def test_command_line(har_dir, tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.cross_validate",
      "--config=configs/har_cv.py:quick",
      f"--workdir={tmp_path / 'w'}",
      f"--data_dir={har_dir}",
      "--config.data.val_subjects=2",
      "--config.train.max_epochs=1",
      "--config.cv.folds=2",
      "--config.cv.baselines=('decision_tree',)",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "decision_tree" in (tmp_path / "w" / "results.md").read_text()
  bad = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.cross_validate",
      "--config=configs/har_cv.py:quick",
      f"--workdir={tmp_path / 'x'}",
      f"--data_dir={har_dir}",
      "--config.cv.scheme=loo",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert bad.returncode == 2 and "cv.scheme must be one of" in bad.stderr
