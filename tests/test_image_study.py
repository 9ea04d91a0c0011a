"""End to end: image study configs, inference, and the evaluate / predict commands, on fake data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from PIL import Image

from configs import cifar10_mlp, cifar10_overfit, fer2013_cnn, fer2013_mlp
from mlp import checkpoint, inference, layers, model, plan, rundir, study
from mlp.data import DataError, cifar10, images
from tests.data_fixtures import write_fake_cifar, write_fake_fer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("cifar")
  write_fake_cifar(root, n_per_class=10, n_test_per_class=3)
  return root


@pytest.fixture(scope="module")
def overfit(cifar_dir, tmp_path_factory):
  """The overfit config's :quick variant trained on the fake CIFAR-10."""
  workdir = tmp_path_factory.mktemp("overfit")
  cfg = cifar10_overfit.get_config("quick")
  results = study.run_study(cfg, workdir, data_dir=str(cifar_dir), log=lambda s: None)
  rdir = rundir.run_dir(workdir, plan.study_plan(cfg).runs[0])
  return cfg, workdir, results[0], rdir


def run_module(module, *args, env=None):
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    env={**os.environ, **(env or {})},
    timeout=300,
  )


@pytest.mark.parametrize(
  "module,variant",
  [(m, v) for m in (cifar10_overfit, cifar10_mlp, fer2013_mlp) for v in (None, "quick")]
  + [(fer2013_cnn, v) for v in (None, "quick", "study", "large")],
)
def test_configs_expand_to_one_run(module, variant):
  cfg = module.get_config(variant)
  runs = plan.study_plan(cfg).runs
  assert len(runs) == 1 and runs[0].name == cfg.name
  shape = (48, 48, 1) if cfg.data.name == "fer2013" else (32, 32, 3)
  classes = 7 if cfg.data.name == "fer2013" else 10
  spec = plan.build(runs, shape, classes)[0].spec
  assert spec.net.input_shape == shape and spec.net.num_classes == classes
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("nope")


@pytest.mark.parametrize("module", [cifar10_mlp, fer2013_mlp])
def test_best_variants_train_the_chosen_rule(module):
  cfg = module.get_config("best")
  study_plan = plan.study_plan(cfg)
  runs = study_plan.runs
  assert len(runs) == cfg.seeds and study_plan.ensemble == cfg.ensemble
  shape = (48, 48, 1) if cfg.data.name == "fer2013" else (32, 32, 3)
  p = plan.build(runs[:1], shape, 10)[0]
  spec, hyper = p.spec, p.hyper
  assert (spec.optimizer, spec.schedule, spec.shift) == ("nesterov", "cosine", 2)
  assert (
    float(hyper.smoothing) == pytest.approx(0.1) and float(hyper.horizon) == cfg.train.max_epochs
  )
  assert [layer.kind for layer in spec.net.layers].count("bn") == 2
  assert plan.hparams(runs[0])["optimizer"] == "nesterov"  # shown in TensorBoard
  assert "hidden" not in runs[0].settings.model  # the network is model.layers alone


def test_study_hyperparameters():
  o, c, f = cifar10_overfit.get_config(), cifar10_mlp.get_config(), fer2013_mlp.get_config()
  assert o.data.limit_train == 50 and tuple(o.model.hidden) == (100,)
  assert o.train.batch_size == 10 and o.train.max_epochs == 20 and o.train.l2 > 0
  assert tuple(c.model.hidden) == (400,) and c.train.batch_size == 100 and c.train.max_epochs == 50
  study = fer2013_mlp.get_config("study")  # the study's values, unchanged
  for g in (f, study):
    assert tuple(g.model.hidden) == (457,) and g.train.batch_size == 160
    assert g.train.l2 == 9.07e-5 and g.train.lr_decay == 0.978 and g.train.momentum == 0.859
    assert g.model.dropout == "inverted" and g.train.early_stopping == "patience"
    assert g.report.test_split == "PublicTest"
  assert tuple(study.train.dropout) == (0.0, 0.022) and study.train.patience == 4
  assert tuple(f.train.dropout) == (0.0, 0.5) and f.train.patience == 8  # chosen on validation
  assert f.data.preprocess == "center" and f.data.flip_train  # our adaptations (see docstrings)
  assert c.data.preprocess == "standardize" and not c.data.get("flip_train", False)


def test_overfit_reaches_full_train_accuracy(overfit):
  cfg, workdir, result, rdir = overfit
  assert result["history"]["train_acc"][-1] == 1.0
  assert result["train"]["topk"][0] == 1.0
  assert result["epochs"] == cfg.train.max_epochs
  for split in ("train", "val", "test"):
    ev = rdir / "eval" / split
    for name in ("report.md", "confusion.csv", "per_class.csv", "confusion_normalized.png"):
      assert (ev / name).exists(), ev / name
  assert "train" not in result["tests"]
  for path in (rdir / "history.png", workdir / "figures" / "loss_curves_1.png"):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # The training accuracy the check exists to show: in the table and the run's done line.
  table = (workdir / "results.md").read_text().splitlines()
  header = [c.strip() for c in next(line for line in table if "Run" in line).split("|")]
  row = [c.strip() for c in next(line for line in table if line.startswith("| cifar")).split("|")]
  assert row[header.index("Train top-1")] == "1.0000"
  log = (rdir / rundir.TRAIN_LOG).read_text().splitlines()
  done = next(line for line in log if " done: " in line)
  assert "train top-1 1.0000, test top-1" in done
  meta = checkpoint.load(rdir / "model").meta
  assert meta["dataset"] == "cifar10" and meta["input_shape"] == [32, 32, 3]


def test_inference_matches_the_study(overfit, cifar_dir):
  _, _, result, rdir = overfit
  lm = inference.load_model(rdir)  # a run folder works as well as the prefix
  x, y = inference.split_data(lm, "test", str(cifar_dir))
  probs = inference.probabilities(lm, x)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  acc = float(np.mean(probs.argmax(1) == y))
  assert acc == pytest.approx(result["tests"]["test"]["topk"][0])
  # Raw uint8 images through the saved preprocessing give the same probabilities.
  raw = cifar10.load(str(cifar_dir)).tests["test"][0]
  np.testing.assert_allclose(inference.predict_images(lm, raw), probs, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="no split"):
    inference.split_data(lm, "PublicTest", str(cifar_dir))


def test_evaluate_command(overfit, cifar_dir, tmp_path):
  _, _, result, rdir = overfit
  out = tmp_path / "report"
  r = run_module(
    "experiments.evaluate",
    f"--model={rdir / 'model'}",
    "--split=test",
    f"--data_dir={cifar_dir}",
    f"--out={out}",
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"accuracy {result['tests']['test']['topk'][0]:.4f}" in r.stdout
  assert (out / "report.md").read_text().startswith("# ")
  for name in ("confusion.csv", "confusion_normalized.csv", "per_class.csv", "confusion.png"):
    assert (out / name).exists()
  # Without --out: beside the study's own report of the split, which stays as the study wrote it.
  study_report = (rdir / "eval" / "test" / "report.md").read_bytes()
  r = run_module(
    "experiments.evaluate", f"--model={rdir / 'model'}", "--split=test", f"--data_dir={cifar_dir}"
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"report: {rdir / 'eval' / 'test-evaluate' / 'report.md'}" in r.stdout
  assert (rdir / "eval" / "test" / "report.md").read_bytes() == study_report


def write_pngs(folder: Path, cifar_dir: Path) -> dict[str, int]:
  """Test images of the fake CIFAR-10 as PNGs (one larger, one RGBA, one greyscale) + labels."""
  folder.mkdir()
  x, y = cifar10.load(str(cifar_dir)).tests["test"]
  labels = {}
  for i in range(0, len(y), 3):
    img = Image.fromarray(x[i])
    if i == 0:
      img = img.resize((64, 48))
    elif i == 3:
      img = img.convert("RGBA")
    name = f"img{i:02d}.png"
    img.save(folder / name)
    labels[name] = int(y[i])
  (folder / "notes.txt").write_text("not an image")  # skipped with a warning
  return labels


def test_predict_command(overfit, cifar_dir, tmp_path, capsys):
  _, _, _, rdir = overfit
  folder = tmp_path / "images"
  labels = write_pngs(folder, cifar_dir)
  names = cifar10_mlp_class_names(rdir)
  # Labels: names (any case) and indices mixed, a header and a comment.
  csv = tmp_path / "labels.csv"
  rows = [f"{n},{names[k].upper() if j % 2 else k}" for j, (n, k) in enumerate(labels.items())]
  csv.write_text("file,label\n# a comment\n" + "\n".join(rows) + "\nother.png,cat\n")
  out = tmp_path / "out"
  r = run_module(
    "experiments.predict",
    f"--model={rdir / 'model'}",
    f"--images={folder}",
    f"--labels={csv}",
    f"--out={out}",
  )
  assert r.returncode == 0, r.stderr[-2000:]
  lines = [ln.split("\t") for ln in r.stdout.splitlines()]
  assert lines[0] == ["file", "class", "probability"]  # a header, then one row per image, only
  rows = lines[1:]
  assert [row[0] for row in rows] == sorted(labels)
  for _, cls, p in rows:
    assert cls in names and 0.0 < float(p) <= 1.0
  predicted = {row[0]: names.index(row[1]) for row in rows}
  accuracy = np.mean([predicted[n] == k for n, k in labels.items()])
  assert accuracy >= 0.5
  report = (out / "report.md").read_text()  # the labelled report goes to --out, not stdout
  assert f"Correct-classification rate: {accuracy:.4f}" in report
  assert "Per-class statistics" in report and f"Samples: {len(labels)}" in report
  assert f"report written to {out / 'report.md'}" in r.stderr
  assert "1 labelled file(s) not among the images: other.png" in r.stderr
  skipped = [ln for ln in r.stderr.splitlines() if "notes.txt" in ln]
  assert len(skipped) == 1 and skipped[0].startswith("warning: skipping")  # one line, no source
  assert (out / "confusion.png").exists()
  # The same probabilities in-process.
  lm = inference.load_model(rdir)
  with pytest.warns(UserWarning, match="skipping .*notes.txt"):
    x, files = images.load_folder(folder, size=(32, 32), channels=3)
  probs = inference.predict_images(lm, x)
  assert [f"{p[k]:.4f}" for p, k in zip(probs, probs.argmax(1), strict=True)] == [
    row[2] for row in rows
  ]
  y = inference.match_labels(files, inference.read_labels(csv, lm.class_names))
  assert y.tolist() == [labels[f] for f in files]
  with pytest.raises(DataError, match="no label for 1 image"):
    inference.match_labels(files, {f: 0 for f in files[1:]})

  # Through predict's main in-process: JSON with the top 3 in batches of 2 (the same rows as
  # one batch), the report of --labels without --out on stderr; CSV with a header.
  from experiments import predict

  def run(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["predict", f"--model={rdir}", *args])
    try:
      with pytest.warns(UserWarning, match="notes.txt"):
        predict.main(["predict"])
    finally:
      flags.FLAGS.unparse_flags()
    return capsys.readouterr()

  got = run(f"--images={folder}", "--format=json", "--top_k=3", "--batch_size=2", f"--labels={csv}")
  doc = json.loads(got.out)
  assert [d["file"] for d in doc] == [row[0] for row in rows]
  for d, row in zip(doc, rows, strict=True):
    ps = [t["probability"] for t in d["top"]]
    assert len(ps) == 3 and ps == sorted(ps, reverse=True)
    assert d["top"][0]["class"] == row[1] and abs(ps[0] - float(row[2])) < 6e-5
  assert f"Correct-classification rate: {accuracy:.4f}" in got.err
  table = run(f"--images={folder}", "--format=csv", "--top_k=2").out.splitlines()
  assert table[0] == "file,class_1,probability_1,class_2,probability_2"
  assert [line.split(",")[:3] for line in table[1:]] == rows
  # An unreadable image: a message and exit status 2.
  flags.FLAGS(["predict", f"--model={rdir}", f"--images={folder / 'notes.txt'}"])
  try:
    with pytest.raises(SystemExit) as exit_info, pytest.warns(UserWarning, match="notes.txt"):
      predict.main(["predict"])
  finally:
    flags.FLAGS.unparse_flags()
  assert exit_info.value.code == 2
  assert "no readable images" in capsys.readouterr().err


def cifar10_mlp_class_names(rdir: Path) -> list[str]:
  return json.loads((rdir / "model.json").read_text())["meta"]["class_names"]


def test_predict_rejects_bad_models(overfit, tmp_path, capsys):
  _, _, _, rdir = overfit
  folder = tmp_path / "images"
  folder.mkdir()
  Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "red.png")
  # A HAR model takes 561 features, not images.
  har = tmp_path / "har" / "model"
  rng = np.random.default_rng(0)
  net, _ = model.parse("dense8 relu dense", (561,), 6)
  params = (
    layers.WB(rng.normal(size=(561, 8)).astype(np.float32), np.zeros(8, np.float32)),
    (),
    layers.WB(rng.normal(size=(8, 6)).astype(np.float32), np.zeros(6, np.float32)),
  )
  checkpoint.save(
    har,
    net,
    params,
    config={"data": {"name": "har"}},
    meta={
      "dataset": "har",
      "class_names": [f"c{i}" for i in range(6)],
      "input_shape": [561],
      "preprocess": "raw",
    },
  )
  # A corrupt model: the .npz truncated.
  bad = tmp_path / "bad"
  bad.mkdir()
  for suffix in (".json", ".npz"):
    (bad / f"model{suffix}").write_bytes((rdir / f"model{suffix}").read_bytes())
  npz = bad / "model.npz"
  npz.write_bytes(npz.read_bytes()[:200])
  r = run_module("experiments.predict", f"--model={har}", f"--images={folder}")
  assert r.returncode == 2, r.stderr[-2000:]
  assert "trained on har (561 input features" in r.stderr and "not on images" in r.stderr
  assert "Traceback" not in r.stderr
  # Missing and corrupt models, through predict's main in-process (a subprocess is slow).
  from experiments import predict

  for path, message in [(tmp_path / "nowhere" / "model", "no model at"), (bad, "corrupt")]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["predict", f"--model={path}", f"--images={folder}"])
    with pytest.raises(SystemExit) as exit_info:
      predict.main(["predict"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error (CheckpointError)" in err and message in err and "Traceback" not in err
  flags.FLAGS.unparse_flags()


def test_read_labels(tmp_path):
  names = ("Angry", "Happy", "Sad")
  path = tmp_path / "l.csv"
  path.write_text("file,label\na.png,happy\nsub/b.png, 2\n\n# c.png,Sad\n")
  assert inference.read_labels(path, names) == {"a.png": 1, "b.png": 2}
  for text, message in [
    ("a.png,Bored\n", "neither a class name"),
    ("a.png,3\n", "neither a class name"),
    ("a.png\n", "expected 'file,label'"),
    ("a.png,Sad\na.png,Happy\n", "labelled twice"),
    ("file,label\n", "no 'file,label' lines"),
  ]:
    path.write_text(text)
    with pytest.raises(DataError, match=message):
      inference.read_labels(path, names)
  with pytest.raises(DataError, match="not found"):
    inference.read_labels(tmp_path / "missing.csv", names)


@pytest.mark.slow
def test_fer2013_quick_study_tests_on_public_and_private(tmp_path):
  write_fake_fer(tmp_path / "data", n=140)
  cfg = fer2013_mlp.get_config("quick")
  results = study.run_study(cfg, tmp_path / "w", data_dir=str(tmp_path / "data"), log=lambda s: 0)
  assert set(results[0]["tests"]) == {"PublicTest", "PrivateTest"}
  rdir = rundir.run_dir(tmp_path / "w", plan.study_plan(cfg).runs[0])
  for split in ("val", "PublicTest", "PrivateTest"):
    assert (rdir / "eval" / split / "report.md").exists()
  lm = inference.load_model(rdir / "model")
  assert lm.input_shape == (48, 48, 1) and "dropout0.5/inverted" in lm.spec.net.describe(
    lm.hyper.layers
  )
  assert inference.require_image_model(lm) == ((48, 48), 1)
  x, y = inference.split_data(lm, "PrivateTest", str(tmp_path / "data"))
  acc = float(np.mean(inference.probabilities(lm, x).argmax(1) == y))
  assert acc == pytest.approx(results[0]["tests"]["PrivateTest"]["topk"][0])


@pytest.mark.slow
def test_fer2013_cnn_quick_study_evaluate_and_predict(tmp_path):
  """The CNN counterpart of the study's test_deep_fer_model: train (with batch norm, dropout and
  augmentation), save, reload, and classify through evaluate and predict."""
  write_fake_fer(tmp_path / "data", n=140)
  cfg = fer2013_cnn.get_config("quick")
  results = study.run_study(cfg, tmp_path / "w", data_dir=str(tmp_path / "data"), log=lambda s: 0)
  rdir = rundir.run_dir(tmp_path / "w", plan.study_plan(cfg).runs[0])
  assert "| Layers |" in (tmp_path / "w" / "results.md").read_text()
  assert "conv4 bn relu maxpool5/s2" in (tmp_path / "w" / "results.md").read_text()
  lm = inference.load_model(rdir)
  assert lm.spec.net.layers[0] == layers.Conv2D(4, (3, 3), 1, "same")
  bn = [i for i, layer in enumerate(lm.spec.net.layers) if layer.kind == "bn"]
  assert np.abs(lm.model.state[bn[0]].mean).max() > 0  # the running statistics were saved
  x, y = inference.split_data(lm, "PublicTest", str(tmp_path / "data"))
  acc = float(np.mean(inference.probabilities(lm, x).argmax(1) == y))
  assert acc == pytest.approx(results[0]["tests"]["PublicTest"]["topk"][0])
  r = run_module(
    "experiments.evaluate",
    f"--model={rdir}",
    "--split=PublicTest",
    f"--data_dir={tmp_path / 'data'}",
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"accuracy {acc:.4f}" in r.stdout
  assert (
    f"report: {rdir / 'eval' / 'PublicTest-evaluate' / 'report.md'}" in r.stdout
  )  # beside the study's
  folder = tmp_path / "faces"
  folder.mkdir()
  raw = fer2013_faces(tmp_path / "data")
  for i in range(3):
    Image.fromarray(raw[i, :, :, 0]).save(folder / f"face{i}.png")
  r = run_module("experiments.predict", f"--model={rdir}", f"--images={folder}")
  assert r.returncode == 0, r.stderr[-2000:]
  header, *lines = [ln.split("\t") for ln in r.stdout.splitlines()]
  probs = inference.predict_images(lm, raw[:3])
  assert header == ["file", "class", "probability"]
  assert [ln[1] for ln in lines] == [lm.class_names[k] for k in probs.argmax(1)]


def fer2013_faces(data_dir: Path) -> np.ndarray:
  from mlp.data import fer2013

  return fer2013.load(str(data_dir)).tests["PublicTest"][0]


def test_flip_train_adds_mirror_images(cifar_dir):
  from mlp import data as data_lib

  cfg = cifar10_mlp.get_config().data
  cfg.data_dir = str(cifar_dir)
  plain = data_lib.load(cfg)
  cfg.flip_train = True
  flipped = data_lib.load(cfg)
  n = len(plain.y_train)
  assert len(flipped.y_train) == 2 * n and "with mirror images" in flipped.notes[0]
  np.testing.assert_array_equal(flipped.y_train[n:], flipped.y_train[:n])
  x = flipped.x_train.reshape(2 * n, 32, 32, 3)
  np.testing.assert_allclose(x[n:], x[:n, :, ::-1], rtol=1e-6)
  np.testing.assert_array_equal(flipped.x_val, plain.x_val)  # only training images are added


def test_per_image_preprocessing():
  from mlp.data import preprocess

  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(6, 4, 4, 1), dtype=np.uint8)
  st = preprocess.fit(x, "per_image")
  out = preprocess.apply(x, st, "per_image")
  assert out.shape == (6, 16) and st["mean"].shape == (16,)
  np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)  # the training mean is removed
  own = out + st["mean"]  # each image: zero mean, unit std over its own pixels
  np.testing.assert_allclose(own.mean(1), 0.0, atol=1e-5)
  np.testing.assert_allclose(own.std(1), 1.0, rtol=1e-4)
  # Brightness and contrast do not matter; a constant image maps to -mean.
  dim = x // 2 + 40
  np.testing.assert_allclose(preprocess.apply(dim, st, "per_image"), out, atol=0.05)
  flat = preprocess.apply(np.full((1, 4, 4, 1), 7, np.uint8), st, "per_image")
  np.testing.assert_allclose(flat[0], -st["mean"], atol=1e-6)
