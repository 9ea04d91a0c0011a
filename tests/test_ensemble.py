"""Seed ensembles: grouping, the study's ensemble results, loading one as a model, CV on them."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import har as har_config
from configs import har_cv
from mlp import crossval, ensemble, inference, metrics, study
from mlp import data as data_lib
from mlp.checkpoint import CheckpointError
from tests.data_fixtures import one_run_har_config, write_fake_har

ROOT = Path(__file__).resolve().parents[1]


def test_size_must_divide_the_seeds():
  cfg = har_config.get_config("quick")
  cfg.seeds, cfg.ensemble = 6, 3
  assert ensemble.size_of(cfg) == 3
  cfg.seeds = 4
  with pytest.raises(ValueError, match="multiple of ensemble"):
    ensemble.size_of(cfg)
  cfg.ensemble = 0
  with pytest.raises(ValueError, match=">= 1"):
    ensemble.size_of(cfg)


def test_groups_take_consecutive_seeds_per_name():
  rs = [{"name": n, "seed": s} for n in ("a", "b") for s in (7, 5, 6, 4)]
  got = [(n, j, [r["seed"] for r in m]) for n, j, m in ensemble.groups(rs, 2)]
  assert got == [("a", 0, [4, 5]), ("a", 1, [6, 7]), ("b", 0, [4, 5]), ("b", 1, [6, 7])]


def test_bad_ensemble_files_are_refused(tmp_path):
  with pytest.raises(CheckpointError, match="not found"):
    ensemble.read_members(tmp_path / "ensemble.json")
  (tmp_path / "ensemble.json").write_text('{"members": [')
  with pytest.raises(CheckpointError, match="not a readable ensemble"):
    inference.load_model(tmp_path)
  (tmp_path / "ensemble.json").write_text('{"members": []}')
  with pytest.raises(CheckpointError, match="non-empty list"):
    inference.load_model(tmp_path / "ensemble.json")


@pytest.fixture(scope="module")
def har_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("har_ens")
  write_fake_har(root, subjects=(1, 3, 5, 6, 7, 8, 25, 26, 27), rows_per_subject=18)
  return root


def ensemble_config():
  cfg = one_run_har_config()
  cfg.train.max_epochs = 3
  cfg.seeds, cfg.ensemble = 4, 2
  return cfg


@pytest.fixture(scope="module")
def finished(har_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ens")
  cfg = ensemble_config()
  results = study.run_study(cfg, workdir, data_dir=str(har_dir), log=lambda m: None)
  return cfg, workdir, results


def test_an_ensemble_averages_its_members_probabilities(finished, har_dir):
  cfg, workdir, results = finished
  data = data_lib.load(cfg.data, str(har_dir))
  x, y = data.tests["test"]
  name = results[0]["name"]
  for j, seeds in enumerate(([0, 1], [2, 3])):
    folder = workdir / "runs" / name / f"ensemble{j}"
    members = [inference.load_model(workdir / "runs" / name / f"seed{s}") for s in seeds]
    expected = np.mean([inference.probabilities(m, x) for m in members], axis=0)
    lm = inference.load_model(folder)
    assert len(lm.members) == 2
    np.testing.assert_allclose(inference.probabilities(lm, x), expected, rtol=1e-6)
    saved = json.loads((folder / "result.json").read_text())
    assert saved["seeds"] == seeds
    assert saved["tests"]["test"]["topk"][0] == pytest.approx(np.mean(expected.argmax(1) == y))
    assert np.array_equal(
      saved["tests"]["test"]["confusion"], metrics.confusion_matrix(y, expected.argmax(1), 6)
    )
    assert (folder / "eval" / "test" / "report.md").exists()


def test_the_table_rows_are_the_ensembles(finished):
  cfg, workdir, _ = finished
  folder = workdir / "runs" / sweep_name(workdir)
  ens = [json.loads((folder / f"ensemble{j}" / "result.json").read_text()) for j in (0, 1)]
  md = (workdir / "results.md").read_text()
  top1 = [e["tests"]["test"]["topk"][0] for e in ens]
  assert f"{np.mean(top1):.4f} ± {np.std(top1):.4f}" in md
  assert "seed ensembles of 2 runs" in md
  csv_rows = (workdir / "results.csv").read_text().splitlines()
  assert csv_rows[1].split(",")[-1] == "4"  # the Seeds column counts member seeds


def sweep_name(workdir: Path) -> str:
  (folder,) = [p for p in (workdir / "runs").iterdir() if p.is_dir()]
  return folder.name


def test_evaluate_command_takes_an_ensemble_folder(finished, har_dir, tmp_path):
  _, workdir, _ = finished
  folder = workdir / "runs" / sweep_name(workdir) / "ensemble1"
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.evaluate",
      f"--model={folder}",
      "--split=test",
      f"--data_dir={har_dir}",
      f"--out={tmp_path / 'ev'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  acc = json.loads((folder / "result.json").read_text())["tests"]["test"]["topk"][0]
  assert f"accuracy {acc:.4f}" in out.stdout


@pytest.mark.slow
def test_cross_validation_scores_the_first_ensemble(har_dir, tmp_path):
  cfg = har_cv.get_config("quick")
  cfg.data.val_subjects = 2
  cfg.train.max_epochs = 2
  cfg.train.gap_min_epoch = 1
  cfg.cv.folds = 2
  cfg.cv.baselines = ("decision_tree",)
  cfg.seeds, cfg.ensemble = 2, 2
  cfg.workers = 1  # in this process (worker processes are tested with the ablation)
  summary = crossval.run_cv(cfg, tmp_path, data_dir=str(har_dir), log=lambda m: None)
  ours = next(r for r in summary["rows"] if r["kind"] == "ours")
  for f in ("fold1", "fold2"):
    saved = json.loads(
      (tmp_path / "folds" / f / "runs" / cfg.name / "ensemble0" / "result.json").read_text()
    )
    assert ours[f] == pytest.approx(saved["tests"]["fold"]["topk"][0])
  assert "seed ensemble of 2 runs" in (tmp_path / "results.md").read_text()


def test_best_configs_are_valid_and_keep_the_study_grid():
  from mlp import plan

  cfg = har_config.get_config("best")
  runs = plan.study_plan(cfg).runs
  assert ensemble.size_of(cfg) == 5 and len(runs) == 15 and {r.name for r in runs} == {cfg.name}
  assert len(plan.groups(plan.build(runs, (561,), 6))) == 1  # one program for all seeds
  cv = har_cv.get_config("best")
  crossval.cv_of(cv)
  assert cv.seeds == ensemble.size_of(cv) == 5  # one ensemble per fold
  assert len(plan.study_plan(har_config.get_config()).runs) == 17  # the grid is untouched
