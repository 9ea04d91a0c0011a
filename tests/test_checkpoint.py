"""Tests for mlp.checkpoint: round trips, atomicity, corruption and compatibility errors."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from mlp import checkpoint
from mlp.checkpoint import CheckpointError
from mlp.model import Dense


def make_params(sizes, dtype=np.float32, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(
    Dense(rng.normal(size=(m, n)).astype(dtype), rng.normal(size=(n,)).astype(dtype))
    for m, n in zip(sizes[:-1], sizes[1:], strict=True)
  )


def save_model(path, sizes=(6, 5, 3), **kwargs):
  params = make_params(sizes)
  kwargs.setdefault("config", {"hidden": tuple(sizes[1:-1]), "lr": 0.1})
  kwargs.setdefault("meta", {"dataset": "toy", "class_names": ["a", "b", "c"]})
  checkpoint.save(path, params, **kwargs)
  return params


def rewrite_json(path, edit):
  with open(f"{path}.json") as f:
    header = json.load(f)
  edit(header)
  with open(f"{path}.json", "w") as f:
    json.dump(header, f)


@pytest.mark.parametrize("sizes", [(4, 3), (6, 5, 3), (8, 7, 6, 2)])
def test_round_trip(tmp_path, sizes):
  path = tmp_path / "model"
  params = make_params(sizes)
  extra = {"mean": np.arange(sizes[0], dtype=np.float32), "std": np.ones((1, sizes[0]))}
  config = {"hidden": tuple(sizes[1:-1]), "lr": np.float32(0.1), "steps": np.int64(7), "n": None}
  meta = {"dataset": "toy", "input_shape": (2, sizes[0] // 2), "metrics": {"acc": 0.5}}
  checkpoint.save(path, params, config=config, meta=meta, arrays=extra)
  assert sorted(os.listdir(tmp_path)) == ["model.json", "model.npz"]

  for p in (path, f"{path}.npz", f"{path}.json", str(path)):
    model = checkpoint.load(p)
    assert len(model.params) == len(params)
    for got, want in zip(model.params, params, strict=True):
      assert isinstance(got, Dense)
      assert isinstance(got.w, np.ndarray) and got.w.dtype == np.float32
      np.testing.assert_array_equal(got.w, want.w)
      np.testing.assert_array_equal(got.b, want.b)
    # JSON round trip: tuples come back as lists, numpy scalars as Python numbers.
    assert model.config == {"hidden": list(sizes[1:-1]), "lr": 0.1, "steps": 7, "n": None}
    assert model.meta == {
      "dataset": "toy",
      "input_shape": [2, sizes[0] // 2],
      "metrics": {"acc": 0.5},
    }
    assert set(model.arrays) == {"mean", "std"}
    np.testing.assert_array_equal(model.arrays["mean"], extra["mean"])
    assert model.arrays["std"].dtype == np.float64 and model.arrays["std"].shape == (1, sizes[0])


def test_keeps_dtype_and_accepts_jax_arrays(tmp_path):
  params = tuple(Dense(jnp.asarray(p.w), jnp.asarray(p.b)) for p in make_params((3, 2)))
  checkpoint.save(tmp_path / "jax", params, config={})
  model = checkpoint.load(tmp_path / "jax")
  assert model.params[0].w.dtype == np.float32 and model.meta == {} and model.arrays == {}
  checkpoint.save(tmp_path / "f64", make_params((3, 2), dtype=np.float64), config={})
  assert checkpoint.load(tmp_path / "f64").params[0].w.dtype == np.float64


def test_json_contents(tmp_path):
  save_model(tmp_path / "m", arrays={"mean": np.zeros(6)})
  with open(tmp_path / "m.json") as f:
    header = json.load(f)
  assert header["format"] == checkpoint.FORMAT == "mlp-model/1"
  assert header["dtype"] == "float32"
  assert [(layer["w"], layer["b"]) for layer in header["layers"]] == [([6, 5], [5]), ([5, 3], [3])]
  assert header["arrays"] == {"mean": {"shape": [6], "dtype": "float64"}}
  with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
    assert sorted(data.files) == ["extra/mean", "layer_0_b", "layer_0_w", "layer_1_b", "layer_1_w"]


def test_overwrite(tmp_path):
  save_model(tmp_path / "m", sizes=(6, 5, 3))
  new = save_model(tmp_path / "m", sizes=(4, 2))
  model = checkpoint.load(tmp_path / "m")
  np.testing.assert_array_equal(model.params[0].w, new[0].w)
  assert sorted(os.listdir(tmp_path)) == ["m.json", "m.npz"]  # no temp files left


def test_missing_model(tmp_path):
  with pytest.raises(CheckpointError, match="no model at .*expected .*json and .*npz.*finished"):
    checkpoint.load(tmp_path / "nothing")


def test_crash_between_writes_leaves_incomplete_model(tmp_path, monkeypatch):
  save_model(tmp_path / "m")  # an older model at the same path
  real = checkpoint.atomic_write_json

  def crash(path, obj):
    raise KeyboardInterrupt("killed")

  monkeypatch.setattr(checkpoint, "atomic_write_json", crash)
  with pytest.raises(KeyboardInterrupt):
    save_model(tmp_path / "m", sizes=(4, 2))
  monkeypatch.setattr(checkpoint, "atomic_write_json", real)
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
  checkpoint.atomic_write_json(path, {"acc": np.float32(0.25), "shape": (1, 2)})
  with open(path) as f:
    assert json.load(f) == {"acc": 0.25, "shape": [1, 2]}
  checkpoint.atomic_write_text(path, "hello\n")
  assert path.read_text() == "hello\n"
  assert os.listdir(path.parent) == ["results.json"]
  with pytest.raises(TypeError, match="cannot convert"):
    checkpoint.atomic_write_json(path, {"f": object()})
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


@pytest.mark.parametrize("fmt", ["mlp-model/2", None])
def test_format_mismatch(tmp_path, fmt):
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h.update(format=fmt))
  with pytest.raises(CheckpointError, match="format .* this code reads 'mlp-model/1'"):
    checkpoint.load(tmp_path / "m")


def test_json_not_a_model(tmp_path):
  save_model(tmp_path / "m")
  (tmp_path / "m.json").write_text("[1, 2]")
  with pytest.raises(CheckpointError, match="not a model description"):
    checkpoint.load(tmp_path / "m")
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h.pop("layers"))
  with pytest.raises(CheckpointError, match="field 'layers' missing"):
    checkpoint.load(tmp_path / "m")


def test_shapes_disagree_with_json(tmp_path):
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h["layers"][1].update(w=[5, 4], b=[4]))
  with pytest.raises(CheckpointError, match=r"layer_1_w is float32\[5, 3\], the .json says"):
    checkpoint.load(tmp_path / "m")


def test_dtype_disagrees_with_json(tmp_path):
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h["layers"][0].update(dtype="float64"))
  with pytest.raises(CheckpointError, match="layer_0_w is float32.*json says float64"):
    checkpoint.load(tmp_path / "m")


def test_layer_count_disagrees_with_json(tmp_path):
  save_model(tmp_path / "m")
  rewrite_json(tmp_path / "m", lambda h: h["layers"].pop())
  with pytest.raises(CheckpointError, match=r"unexpected \['layer_1_b', 'layer_1_w'\]"):
    checkpoint.load(tmp_path / "m")


def test_layers_do_not_chain(tmp_path):
  bad = (Dense(np.ones((4, 3), np.float32), np.ones(3, np.float32)),) * 2
  with pytest.raises(ValueError, match="do not chain"):
    checkpoint.save(tmp_path / "m", bad, config={})
  # Written by hand (e.g. another tool): load must refuse it too.
  arrays = {f"layer_{i}_{k}": getattr(d, k) for i, d in enumerate(bad) for k in "wb"}
  np.savez(tmp_path / "h.npz", **arrays)
  layers = [{"w": [4, 3], "b": [3], "dtype": "float32"}] * 2
  header = {"format": checkpoint.FORMAT, "layers": layers, "arrays": {}, "config": {}, "meta": {}}
  (tmp_path / "h.json").write_text(json.dumps(header))
  with pytest.raises(CheckpointError, match="layer 0 outputs 3 features but layer 1 expects 4"):
    checkpoint.load(tmp_path / "h")


def test_npz_from_another_save(tmp_path):
  save_model(tmp_path / "a")
  checkpoint.save(tmp_path / "b", make_params((6, 5, 3), seed=1), config={})
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
  save_model(tmp_path / "m", sizes=(3072, 10, 7), meta={"dataset": "cifar10"})
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
  save_model(tmp_path / "m", sizes=(4, 2), meta={})
  model = checkpoint.load(tmp_path / "m")
  checkpoint.check_compatible(model, dataset="anything", input_dim=4)
  with pytest.raises(CheckpointError, match="model expects 4 inputs, but mnist has 784"):
    checkpoint.check_compatible(model, dataset="mnist", input_dim=784)
