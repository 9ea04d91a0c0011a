"""Tests for mlp.checkpoint: round trips, atomicity, corruption and compatibility errors."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp import checkpoint, fileio, inference, layers, model
from mlp.checkpoint import CheckpointError

FIXTURES = Path(__file__).parent / "fixtures"
CNN = "conv3/3x3/s2/valid bn relu maxpool2 flatten dropout0.25/inverted dense4 bn/m0.8 relu dense"


def make_net(arch="dense5 relu dense", input_shape=(6,), classes=3):
  return model.parse(arch, input_shape, classes)


def make_model(arch="dense5 relu dense", input_shape=(6,), classes=3, dtype=np.float32, seed=0):
  """(net, hyper, params, state) with random values everywhere (state included)."""
  net, hyper = make_net(arch, input_shape, classes)
  params, state = model.init(jax.random.key(seed), net)
  rng = np.random.default_rng(seed)
  rand = lambda a: rng.normal(size=a.shape).astype(dtype)  # noqa: E731
  return net, hyper, jax.tree.map(rand, params), jax.tree.map(rand, state)


def save_model(path, arch="dense5 relu dense", input_shape=(6,), classes=3, seed=0, **kwargs):
  net, hyper, params, state = make_model(arch, input_shape, classes, seed=seed)
  kwargs.setdefault("config", {"hidden": [5], "lr": 0.1})
  kwargs.setdefault("meta", {"dataset": "toy", "class_names": ["a", "b", "c"]})
  checkpoint.save(path, net, params, state, hyper=hyper, **kwargs)
  return params


def rewrite_json(path, edit):
  with open(f"{path}.json") as f:
    header = json.load(f)
  edit(header)
  with open(f"{path}.json", "w") as f:
    json.dump(header, f)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert isinstance(x, np.ndarray) and x.dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
  "arch,input_shape",
  [
    ("dense", (4,)),
    ("dense5 relu dense", (6,)),
    ("dropout0.5 dense7 relu dropout0.2 dense", (8,)),
    (CNN, (9, 8, 2)),
  ],
)
def test_round_trip(tmp_path, arch, input_shape):
  path = tmp_path / "model"
  net, hyper, params, state = make_model(arch, input_shape)
  extra = {"mean": np.arange(6, dtype=np.float32), "std": np.ones((1, 6))}
  config = {"hidden": (5,), "lr": np.float32(0.1), "steps": np.int64(7), "n": None}
  meta = {"dataset": "toy", "input_shape": (2, 3), "metrics": {"acc": 0.5}}
  checkpoint.save(path, net, params, state, hyper=hyper, config=config, meta=meta, arrays=extra)
  assert sorted(os.listdir(tmp_path)) == ["model.json", "model.npz"]

  for p in (path, f"{path}.npz", f"{path}.json", str(path)):
    m = checkpoint.load(p)
    assert m.net == net and m.hyper == hyper
    assert_trees_equal(m.params, params)
    assert_trees_equal(m.state, state)
    # JSON round trip: tuples come back as lists, numpy scalars as Python numbers.
    assert m.config == {"hidden": [5], "lr": 0.1, "steps": 7, "n": None}
    assert m.meta == {"dataset": "toy", "input_shape": [2, 3], "metrics": {"acc": 0.5}}
    assert set(m.arrays) == {"mean", "std"}
    np.testing.assert_array_equal(m.arrays["mean"], extra["mean"])
    assert m.arrays["std"].dtype == np.float64 and m.arrays["std"].shape == (1, 6)


def test_keeps_dtype_and_accepts_jax_arrays(tmp_path):
  net, hyper, params, state = make_model("dense", (3,), 2)
  checkpoint.save(tmp_path / "jax", net, jax.tree.map(jnp.asarray, params), config={})
  m = checkpoint.load(tmp_path / "jax")
  assert m.params[0].w.dtype == np.float32 and m.meta == {} and m.arrays == {}
  net, hyper, params, state = make_model("dense", (3,), 2, dtype=np.float64)
  checkpoint.save(tmp_path / "f64", net, params, config={})
  assert checkpoint.load(tmp_path / "f64").params[0].w.dtype == np.float64


def test_json_contents(tmp_path):
  save_model(tmp_path / "m", CNN, (9, 8, 2), 3, arrays={"mean": np.zeros(6)})
  with open(tmp_path / "m.json") as f:
    header = json.load(f)
  assert header["format"] == checkpoint.FORMAT == "mlp-model/2"
  assert header["network"] == {
    "layers": "conv3/3x3/s2/valid bn/m0.9 relu maxpool2x2/s2 flatten dropout0.25/inverted "
    "dense4 bn/m0.8 relu dense3",
    "input_shape": [9, 8, 2],
    "num_classes": 3,
  }
  assert header["tensors"]["param/0/w"] == {"shape": [3, 3, 2, 3], "dtype": "float32"}
  assert header["tensors"]["state/7/var"] == {"shape": [4], "dtype": "float32"}
  assert header["arrays"] == {"mean": {"shape": [6], "dtype": "float64"}}
  with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
    assert sorted(data.files) == sorted(["extra/mean", *header["tensors"]])
    assert "param/2/w" not in data.files  # relu has no params


def test_overwrite(tmp_path):
  save_model(tmp_path / "m")
  new = save_model(tmp_path / "m", "dense", (4,), 2, seed=1)
  model = checkpoint.load(tmp_path / "m")
  np.testing.assert_array_equal(model.params[0].w, new[0].w)
  assert sorted(os.listdir(tmp_path)) == ["m.json", "m.npz"]  # no temp files left


def test_missing_model(tmp_path):
  with pytest.raises(CheckpointError, match="no model at .*expected .*json and .*npz.*finished"):
    checkpoint.load(tmp_path / "nothing")


def test_crash_between_writes_leaves_incomplete_model(tmp_path, monkeypatch):
  save_model(tmp_path / "m")  # an older model at the same path
  real = fileio.atomic_write_json

  def crash(path, obj):
    raise KeyboardInterrupt("killed")

  monkeypatch.setattr(fileio, "atomic_write_json", crash)
  with pytest.raises(KeyboardInterrupt):
    save_model(tmp_path / "m", "dense", (4,), 2)
  monkeypatch.setattr(fileio, "atomic_write_json", real)
  assert not (tmp_path / "m.json").exists()  # the old .json must not pair with the new .npz
  with pytest.raises(CheckpointError, match="incomplete model"):
    checkpoint.load(tmp_path / "m")


def test_crash_during_npz_write_keeps_old_files_clean(tmp_path, monkeypatch):
  def crash(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", crash)
  with pytest.raises(OSError, match="disk full"):
    save_model(tmp_path / "m")
  assert os.listdir(tmp_path) == []  # the temp file was removed, nothing else written


def test_atomic_write_helpers(tmp_path):
  path = tmp_path / "sub" / "results.json"
  fileio.atomic_write_json(path, {"acc": np.float32(0.25), "shape": (1, 2)})
  with open(path) as f:
    assert json.load(f) == {"acc": 0.25, "shape": [1, 2]}
  fileio.atomic_write_text(path, "hello\n")
  assert path.read_text() == "hello\n"
  assert os.listdir(path.parent) == ["results.json"]
  with pytest.raises(TypeError, match="cannot convert"):
    fileio.atomic_write_json(path, {"f": object()})
  assert path.read_text() == "hello\n"  # a failed write leaves the old file


def test_truncated_json(tmp_path):
  save_model(tmp_path / "m")
  text = (tmp_path / "m.json").read_text()
  (tmp_path / "m.json").write_text(text[: len(text) // 2])
  with pytest.raises(CheckpointError, match="corrupt or truncated"):
    checkpoint.load(tmp_path / "m")


def test_truncated_npz(tmp_path):
  save_model(tmp_path / "m")
  data = (tmp_path / "m.npz").read_bytes()
  (tmp_path / "m.npz").write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match="m.npz is corrupt or truncated"):
    checkpoint.load(tmp_path / "m")


def test_garbage_npz(tmp_path):
  save_model(tmp_path / "m")
  (tmp_path / "m.npz").write_bytes(b"not a zip file at all")
  with pytest.raises(CheckpointError, match="corrupt or truncated"):
    checkpoint.load(tmp_path / "m")


def test_missing_npz(tmp_path):
  save_model(tmp_path / "m")
  os.remove(tmp_path / "m.npz")
  with pytest.raises(CheckpointError, match="m.npz is missing"):
    checkpoint.load(tmp_path / "m")


@pytest.mark.parametrize("fmt", ["mlp-model/3", None])
def test_format_mismatch(tmp_path, fmt):
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h.update(format=fmt))
  with pytest.raises(CheckpointError, match="format .* this code reads 'mlp-model/2'"):
    checkpoint.load(tmp_path / "m")


def test_json_not_a_model(tmp_path):
  save_model(tmp_path / "m")
  (tmp_path / "m.json").write_text("[1, 2]")
  with pytest.raises(CheckpointError, match="not a model description"):
    checkpoint.load(tmp_path / "m")
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h.pop("network"))
  with pytest.raises(CheckpointError, match="field 'network' missing"):
    checkpoint.load(tmp_path / "m")


def test_shapes_disagree_with_json(tmp_path):
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h["tensors"]["param/2/w"].update(shape=[5, 4]))
  with pytest.raises(CheckpointError, match=r"param/2/w is float32\[5, 3\], the .json says"):
    checkpoint.load(tmp_path / "m")


def test_dtype_disagrees_with_json(tmp_path):
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h["tensors"]["param/0/w"].update(dtype="float64"))
  with pytest.raises(CheckpointError, match="param/0/w is float32.*json says float64"):
    checkpoint.load(tmp_path / "m")


def test_array_missing_from_json(tmp_path):
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h["tensors"].pop("param/2/b"))
  with pytest.raises(CheckpointError, match=r"unexpected \['param/2/b'\]"):
    checkpoint.load(tmp_path / "m")


def test_arrays_do_not_fit_the_network(tmp_path):
  net, hyper, params, state = make_model()
  bad = (params[0], (), layers.WB(params[0].w, params[0].b))  # second dense: wrong shapes
  with pytest.raises(ValueError, match=r"param/2/w has shape \[6, 5\], but .* needs \[5, 3\]"):
    checkpoint.save(tmp_path / "m", net, bad, config={})
  # A .json edited to another architecture: load refuses it too.
  save_model(tmp_path / "h")
  rewrite_json(tmp_path / "h", lambda h: h["network"].update(layers="dense4 relu dense3"))
  with pytest.raises(CheckpointError, match=r"param/0/w has shape \[6, 5\], but .* needs \[6, 4\]"):
    checkpoint.load(tmp_path / "h")
  rewrite_json(tmp_path / "h", lambda h: h["network"].update(layers="dense5 tanh dense3"))
  with pytest.raises(CheckpointError, match="bad network description.*unknown layer 'tanh'"):
    checkpoint.load(tmp_path / "h")


def test_npz_from_another_save(tmp_path):
  save_model(tmp_path / "a")
  save_model(tmp_path / "b", seed=1)
  os.replace(tmp_path / "b.npz", tmp_path / "a.npz")  # same shapes, different weights
  with pytest.raises(CheckpointError, match="sha256 differs"):
    checkpoint.load(tmp_path / "a")


def test_object_arrays_are_rejected(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="dtype object"):
    save_model(tmp_path / "m", arrays={"names": np.array(["a", None], dtype=object)})
  # A file holding an object (pickled) array: never unpickled, clear error instead.
  save_model(tmp_path / "m", arrays={"names": np.zeros(2)})
  with np.load(tmp_path / "m.npz") as data:
    contents = {k: data[k] for k in data.files}
  contents["extra/names"] = np.array([{"evil": 1}, None], dtype=object)
  np.savez(tmp_path / "m.npz", **contents)
  calls = []
  real_load = np.load
  monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
  with pytest.raises(CheckpointError, match="object arrays, which would need pickle"):
    checkpoint.load(tmp_path / "m")
  assert calls and all(k.get("allow_pickle") is False for k in calls)


def test_check_compatible(tmp_path):
  save_model(
    tmp_path / "m", "flatten dense10 relu dense", (32, 32, 3), 7, meta={"dataset": "cifar10"}
  )
  model = checkpoint.load(tmp_path / "m")
  checkpoint.check_compatible(model)
  checkpoint.check_compatible(model, dataset="cifar10", input_dim=3072, num_classes=7)
  with pytest.raises(
    CheckpointError, match=r"trained on cifar10 \(3072 inputs\), not fer2013 \(2304\)"
  ):
    checkpoint.check_compatible(model, dataset="fer2013", input_dim=2304)
  with pytest.raises(CheckpointError, match="trained on cifar10 .*not fer2013$"):
    checkpoint.check_compatible(model, dataset="fer2013")
  with pytest.raises(CheckpointError, match=r"expects 3072 inputs \(trained on cifar10\).* 2304"):
    checkpoint.check_compatible(model, input_dim=2304)
  with pytest.raises(CheckpointError, match="predicts 7 classes .*not 10"):
    checkpoint.check_compatible(model, num_classes=10)


def test_check_compatible_without_recorded_dataset(tmp_path):
  save_model(tmp_path / "m", "dense", (4,), 2, meta={})
  model = checkpoint.load(tmp_path / "m")
  checkpoint.check_compatible(model, dataset="anything", input_dim=4)
  with pytest.raises(CheckpointError, match="model expects 4 inputs, but mnist has 784"):
    checkpoint.check_compatible(model, dataset="mnist", input_dim=784)


@pytest.mark.parametrize("name", ["har_v1", "cifar10_v1"])
def test_models_of_the_first_format_load_and_predict_the_same(name):
  """Fixtures written by the code before layers were modules (tests/fixtures/make_v1_fixtures.py):
  an MLP with regular dropout (HAR) and one with inverted dropout on images (CIFAR-10)."""
  m = checkpoint.load(FIXTURES / name / "model")
  assert json.loads((FIXTURES / name / "model.json").read_text())["format"] == "mlp-model/1"
  lm = inference.load_model(FIXTURES / name / "model")
  with np.load(FIXTURES / name / "expected.npz") as expected:
    if name == "har_v1":
      assert m.net.describe(m.hyper) == (
        "dropout0.5/regular dense8 relu dropout0.5/regular dense5 relu dropout0/regular dense6"
      )
      probs = inference.probabilities(lm, expected["x"])
    else:
      assert str(m.net).startswith("flatten dropout") and m.hyper[1] == pytest.approx(0.2)
      probs = inference.predict_images(lm, expected["images"])
    np.testing.assert_allclose(probs, expected["probs"], rtol=1e-6, atol=1e-7)
