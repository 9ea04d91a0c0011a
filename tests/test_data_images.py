"""Tests of the CIFAR-10 and FER2013 loaders, load_folder and preprocess."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request

import numpy as np
import pytest
from PIL import Image

from mlp.data import cifar10, common, fer2013, images, preprocess
from mlp.data.common import DataError
from tests.data_fixtures import write_fake_cifar, write_fake_fer

# --------------------------------------------------------------------------------------------------
# CIFAR-10


def test_cifar_happy_path(tmp_path):
  write_fake_cifar(tmp_path, n_per_class=10, n_test_per_class=2)
  d = cifar10.load(str(tmp_path), val_fraction=0.2, seed=0)
  assert d.name == "cifar10" and d.class_names[0] == "airplane" and len(d.class_names) == 10
  assert d.x_train.shape == (80, 32, 32, 3) and d.x_train.dtype == np.uint8
  assert d.x_val.shape == (20, 32, 32, 3) and d.y_train.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(d.y_val, minlength=10), np.full(10, 2))
  x_test, y_test = d.tests["test"]
  assert x_test.shape == (20, 32, 32, 3) and y_test.dtype == np.int32
  # R,G,B planes become the last axis: a pixel's colour is the class colour (+-20)
  c = np.arange(10)[:, None]
  colours = (c * np.array([23, 71, 131])) % 200 + 28
  np.testing.assert_allclose(d.x_train.mean((1, 2)), colours[d.y_train], atol=3)


def test_cifar_limit_train_and_determinism(tmp_path):
  write_fake_cifar(tmp_path, n_per_class=10)
  a = cifar10.load(str(tmp_path), limit_train=25, seed=4)
  b = cifar10.load(str(tmp_path), limit_train=25, seed=4)
  assert a.x_train.shape[0] == 25
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_val, b.y_val)


def test_cifar_env_and_argument(tmp_path, monkeypatch):
  write_fake_cifar(tmp_path / "env", n_per_class=2)
  write_fake_cifar(tmp_path / "arg", n_per_class=4)
  monkeypatch.setenv("MLP_DATA_DIR", str(tmp_path / "env"))
  assert len(cifar10.load(val_fraction=0.0).y_train) == 20
  assert len(cifar10.load(str(tmp_path / "arg"), val_fraction=0.0).y_train) == 40


def test_cifar_missing(tmp_path):
  with pytest.raises(DataError) as e:
    cifar10.load(str(tmp_path))
  assert "data_batch_1" in str(e.value) and "MLP_DATA_DIR" in str(e.value)
  root = write_fake_cifar(tmp_path)
  (root / "data_batch_3").unlink()
  with pytest.raises(DataError, match="data_batch_3"):
    cifar10.load(str(tmp_path))
  with pytest.raises(DataError, match="cache"):
    cifar10.load(download=False)


def _rewrite_batch(path, **changes):
  with open(path, "rb") as f:
    d = pickle.load(f, encoding="bytes")
  d.update({k.encode(): v for k, v in changes.items()})
  with open(path, "wb") as f:
    pickle.dump(d, f, protocol=2)


@pytest.mark.parametrize(
  "change, match",
  [
    ({"labels": [10] + [0] * 9}, r"data_batch_2: label 10 out of range 0..9 at record 0"),
    ({"labels": [0]}, r"data_batch_2: 1 labels for 10 images"),
    ({"data": np.zeros((10, 100), np.uint8)}, r"data_batch_2: b'data' is uint8 \(10, 100\)"),
  ],
)
def test_cifar_bad_batches(tmp_path, change, match):
  root = write_fake_cifar(tmp_path, n_per_class=5)
  _rewrite_batch(root / "data_batch_2", **change)
  with pytest.raises(DataError, match=match):
    cifar10.load(str(tmp_path))


def test_cifar_malformed_and_empty_pickle(tmp_path):
  root = write_fake_cifar(tmp_path)
  (root / "test_batch").write_bytes(b"\x80\x02garbage")
  with pytest.raises(DataError, match="test_batch is not a valid CIFAR-10 pickle"):
    cifar10.load(str(tmp_path))
  (root / "test_batch").write_bytes(b"")
  with pytest.raises(DataError, match="test_batch is empty"):
    cifar10.load(str(tmp_path))


def test_cifar_refuses_code_in_pickle(tmp_path):
  root = write_fake_cifar(tmp_path)
  with open(root / "batches.meta", "wb") as f:
    pickle.dump({b"label_names": [os.getcwd]}, f, protocol=2)
  with pytest.raises(DataError, match="forbidden global"):
    cifar10.load(str(tmp_path))


def _cifar_tarball(tmp_path):
  root = write_fake_cifar(tmp_path / "src", n_per_class=2)
  archive = tmp_path / "cifar.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(root, arcname="cifar-10-batches-py")
    info = tarfile.TarInfo("../evil.txt")
    info.size = 1
    tar.addfile(info, io.BytesIO(b"x"))
  return archive


def test_cifar_download(tmp_path, monkeypatch, capsys):
  archive = _cifar_tarball(tmp_path)
  urls = []

  def opener(url, timeout=None):
    urls.append(url)
    return urllib.request.urlopen(archive.as_uri())

  monkeypatch.setattr(common, "_urlopen", opener)
  monkeypatch.setattr(cifar10, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
  d = cifar10.load(val_fraction=0.0)
  assert urls == [cifar10.URL] and len(d.y_train) == 20
  cache = tmp_path / "cache"
  assert (cache / "cifar-10-batches-py" / "batches.meta").is_file()
  assert not (cache / "evil.txt").exists() and not list(cache.rglob("*.part"))
  assert "%" in capsys.readouterr().err
  monkeypatch.setattr(common, "_urlopen", None)
  assert len(cifar10.load(val_fraction=0.0).y_train) == 20


def test_cifar_download_md5_mismatch(tmp_path, monkeypatch):
  archive = _cifar_tarball(tmp_path)
  monkeypatch.setattr(
    common, "_urlopen", lambda url, timeout=None: urllib.request.urlopen(archive.as_uri())
  )
  with pytest.raises(DataError, match="checksum mismatch for .*cifar-10-python.tar.gz"):
    cifar10.load()
  assert not (tmp_path / "cache" / "cifar-10-batches-py").exists()


# --------------------------------------------------------------------------------------------------
# FER2013


def test_fer_happy_path(tmp_path):
  write_fake_fer(tmp_path, n=140)
  d = fer2013.load(str(tmp_path), val_fraction=0.25)
  assert d.name == "fer2013" and d.class_names[0] == "Angry" and d.class_names[6] == "Neutral"
  assert d.x_train.dtype == np.uint8 and d.x_train.shape[1:] == (48, 48, 1)
  assert set(d.tests) == {"PublicTest", "PrivateTest"}
  assert len(d.tests["PublicTest"][1]) == 14 and len(d.tests["PrivateTest"][1]) == 14
  assert len(d.y_train) + len(d.y_val) == 112
  np.testing.assert_array_equal(np.bincount(d.y_val, minlength=7), np.full(7, 4))
  assert d.y_train.dtype == np.int32 and d.y_train.max() <= 6
  # pixels are 30 * emotion + 20 (+-15)
  np.testing.assert_allclose(d.x_train.mean((1, 2, 3)), 30 * d.y_train + 20, atol=3)


def test_fer_cache_reuse_and_invalidation(tmp_path, monkeypatch):
  path = write_fake_fer(tmp_path, n=14)
  first = fer2013.load(str(tmp_path), val_fraction=0.0)
  monkeypatch.setattr(fer2013, "parse_csv", lambda p: (_ for _ in ()).throw(AssertionError("re")))
  again = fer2013.load(str(tmp_path), val_fraction=0.0)
  np.testing.assert_array_equal(first.x_train, again.x_train)
  with open(path, "a") as f:
    f.write("3," + " ".join(["7"] * 2304) + ",Training\n")
  with pytest.raises(AssertionError, match="re"):
    fer2013.load(str(tmp_path))


def test_fer_missing_points_to_kaggle(tmp_path):
  with pytest.raises(DataError) as e:
    fer2013.load(str(tmp_path))
  msg = str(e.value)
  assert "fer2013.csv" in msg and "kaggle" in msg and "fer2013/fer2013.csv" in msg
  with pytest.raises(DataError, match="cache"):
    fer2013.load()


def _fer_line(emotion="3", pixels=None, usage="Training"):
  pixels = pixels if pixels is not None else " ".join(["10"] * 2304)
  return f"{emotion},{pixels},{usage}"


@pytest.mark.parametrize(
  "line, match",
  [
    (_fer_line(emotion="7"), r"line 3: emotion 7 out of range 0..6"),
    (_fer_line(emotion="x"), r"line 3: emotion 'x' is not an integer"),
    (_fer_line(pixels=" ".join(["1"] * 2303)), r"line 3: 2303 pixels, expected 2304"),
    (_fer_line(pixels=" ".join(["1"] * 2303 + ["a"])), r"line 3: pixel 'a' is not an integer"),
    (_fer_line(pixels=" ".join(["1"] * 2303 + ["256"])), r"line 3: pixel value 256 out of range"),
    (_fer_line(usage="Validation"), r"line 3: Usage 'Validation'"),
    ("3,1 2", r"line 3: 2 fields, expected 3"),
  ],
)
def test_fer_bad_rows(tmp_path, line, match):
  (tmp_path / "fer2013").mkdir()
  path = tmp_path / "fer2013" / "fer2013.csv"
  path.write_text("\n".join(["emotion,pixels,Usage", _fer_line(), line]) + "\n")
  with pytest.raises(DataError, match="fer2013.csv " + match):
    fer2013.load(str(tmp_path))


def test_fer_bad_header_and_empty(tmp_path):
  (tmp_path / "fer2013").mkdir()
  path = tmp_path / "fer2013" / "fer2013.csv"
  path.write_text("a,b,c\n" + _fer_line() + "\n")
  with pytest.raises(DataError, match="fer2013.csv line 1: header"):
    fer2013.load(str(tmp_path))
  path.write_text("")
  with pytest.raises(DataError, match="fer2013.csv is empty"):
    fer2013.load(str(tmp_path))
  path.write_text("emotion,pixels,Usage\n")
  with pytest.raises(DataError, match="fer2013.csv has a header but no rows"):
    fer2013.load(str(tmp_path))


# --------------------------------------------------------------------------------------------------
# load_folder


def _write_images(folder):
  folder.mkdir()
  Image.new("RGB", (50, 30), (255, 0, 0)).save(folder / "b_red.png")
  Image.new("L", (7, 9), 100).save(folder / "a_grey.jpg", quality=95)
  Image.new("RGBA", (20, 20), (0, 0, 255, 0)).save(folder / "c_clear.png")  # transparent -> white
  p = Image.new("P", (16, 16))
  p.putpalette([0, 255, 0] * 256)
  p.save(folder / "d_palette.png")
  Image.fromarray(np.full((10, 12), 65535, np.uint16)).save(folder / "e_16bit.png")
  (folder / "notes.txt").write_text("not an image")
  (folder / "subdir").mkdir()


def test_load_folder_rgb(tmp_path):
  _write_images(tmp_path / "imgs")
  with pytest.warns(UserWarning, match="notes.txt"):
    x, names = images.load_folder(tmp_path / "imgs", size=(32, 32), channels=3)
  assert names == ["a_grey.jpg", "b_red.png", "c_clear.png", "d_palette.png", "e_16bit.png"]
  assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8
  np.testing.assert_allclose(x[0].mean((0, 1)), [100, 100, 100], atol=2)
  np.testing.assert_array_equal(x[1][16, 16], [255, 0, 0])
  np.testing.assert_array_equal(x[2][16, 16], [255, 255, 255])
  np.testing.assert_array_equal(x[3][16, 16], [0, 255, 0])
  np.testing.assert_array_equal(x[4][5, 5], [255, 255, 255])


def test_load_folder_grey_and_crop(tmp_path):
  _write_images(tmp_path / "imgs")
  with pytest.warns(UserWarning):
    x, names = images.load_folder(tmp_path / "imgs", size=(48, 40), channels=1, resize="crop")
  assert x.shape == (5, 48, 40, 1)
  assert abs(int(x[1][24, 20, 0]) - 76) <= 1  # red in luminance
  x1, n1 = images.load_folder(tmp_path / "imgs" / "b_red.png", size=(8, 8), channels=1)
  assert x1.shape == (1, 8, 8, 1) and n1 == ["b_red.png"]


def test_load_folder_errors(tmp_path):
  with pytest.raises(DataError, match="nowhere"):
    images.load_folder(tmp_path / "nowhere", size=(8, 8), channels=1)
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="no readable images .*empty"):
    images.load_folder(tmp_path / "empty", size=(8, 8), channels=1)
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
  with pytest.warns(UserWarning, match="broken.png"), pytest.raises(DataError, match="junk"):
    images.load_folder(tmp_path / "junk", size=(8, 8), channels=3)
  with pytest.raises(ValueError):
    images.load_folder(tmp_path / "junk", size=(8, 8), channels=2)


# --------------------------------------------------------------------------------------------------
# preprocess


def test_preprocess_kinds(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(50, 4, 4, 3), dtype=np.uint8)
  flat = x.reshape(50, -1).astype(np.float64)
  raw = preprocess.apply(x, preprocess.fit(x, "raw"), "raw")
  assert raw.dtype == np.float32 and raw.shape == (50, 48)
  np.testing.assert_array_equal(raw, flat)
  np.testing.assert_allclose(preprocess.apply(x, preprocess.fit(x, "scale"), "scale"), flat / 255)
  st = preprocess.fit(x, "center")
  assert st["mean"].shape == (48,)
  c = preprocess.apply(x, st, "center")
  np.testing.assert_allclose(c.mean(0), 0, atol=1e-5)
  st = preprocess.fit(x, "standardize")
  assert st["mean"].shape == (3,) and st["std"].shape == (3,)
  s = preprocess.apply(x, st, "standardize").reshape(-1, 3)
  np.testing.assert_allclose(s.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(s.std(0), 1, atol=1e-4)
  # stats are plain arrays that survive an .npz without pickle
  np.savez(tmp_path / "s.npz", **st)
  with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
    again = {k: z[k] for k in z.files}
  np.testing.assert_array_equal(preprocess.apply(x, again, "standardize").reshape(-1, 3), s)


def test_preprocess_errors():
  x = np.zeros((4, 2, 2, 1), np.uint8)
  with pytest.raises(ValueError, match="unknown"):
    preprocess.fit(x, "whiten")
  st = preprocess.fit(x, "center")
  with pytest.raises(ValueError, match="fitted for 'center'"):
    preprocess.apply(x, st, "standardize")
  with pytest.raises(ValueError, match="statistics are for 4 inputs"):
    preprocess.apply(np.zeros((1, 3, 3, 1), np.uint8), st, "center")
  flat = preprocess.apply(
    np.zeros((3, 5), np.uint8), preprocess.fit(np.ones((2, 5)), "scale"), "scale"
  )
  assert flat.shape == (3, 5)
