"""Tests of mlp.data.common: splits, checksums, parsed-array cache, downloads."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request

import numpy as np
import pytest

from mlp.data import common
from mlp.data.common import DataError


def test_data_error_is_exception():
  assert issubclass(DataError, Exception)


def test_stratified_split():
  y = np.repeat(np.arange(4), [10, 20, 30, 40])
  tr, va = common.stratified_split(y, 0.1, seed=0)
  assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
  np.testing.assert_array_equal(np.bincount(y[va]), [1, 2, 3, 4])
  assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
  tr2, va2 = common.stratified_split(y, 0.1, seed=0)
  np.testing.assert_array_equal(va, va2)
  others = [common.stratified_split(y, 0.1, seed=s)[1] for s in range(1, 4)]
  assert any(not np.array_equal(va, o) for o in others)


def test_stratified_split_zero_and_bad_fraction():
  y = np.arange(10) % 2
  tr, va = common.stratified_split(y, 0.0, seed=0)
  assert len(va) == 0 and len(tr) == 10
  with pytest.raises(ValueError):
    common.stratified_split(y, 1.0, seed=0)


def test_cache_dir_default_and_env(monkeypatch, tmp_path):
  assert common.cache_dir() == tmp_path / "cache"
  monkeypatch.delenv("MLP_CACHE_DIR")
  assert common.cache_dir() == common.Path.home() / ".cache" / "mlp"


def test_configured_data_dir_precedence(monkeypatch, tmp_path):
  assert common.configured_data_dir(None) == (None, "")
  monkeypatch.setenv("MLP_DATA_DIR", str(tmp_path / "env"))
  assert common.configured_data_dir(None)[0] == tmp_path / "env"
  assert common.configured_data_dir(str(tmp_path / "arg"))[0] == tmp_path / "arg"


def test_fingerprint_changes_with_size_and_mtime(tmp_path):
  p = tmp_path / "a.txt"
  p.write_text("abc")
  k1 = common.fingerprint([p])
  assert common.fingerprint([p]) == k1
  st = p.stat()
  os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
  k2 = common.fingerprint([p])
  assert k2 != k1
  p.write_text("abcd")
  assert common.fingerprint([p]) != k2
  assert common.fingerprint([tmp_path / "missing"]) != common.fingerprint([p])


def test_parsed_cache_roundtrip(tmp_path):
  arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "names": np.array(["a", "bc"])}
  assert common.load_parsed("t", tmp_path, "k1") is None
  common.save_parsed("t", tmp_path, "k1", arrays)
  got = common.load_parsed("t", tmp_path, "k1")
  np.testing.assert_array_equal(got["x"], arrays["x"])
  assert got["names"].tolist() == ["a", "bc"]
  assert common.load_parsed("t", tmp_path, "k2") is None  # stale key
  # a corrupt cache is ignored with a warning, not fatal
  path = next((tmp_path / "cache" / "parsed").glob("t-*.npz"))
  path.write_bytes(b"garbage")
  with pytest.warns(UserWarning, match="unreadable cache"):
    assert common.load_parsed("t", tmp_path, "k1") is None


def test_verify_checksum(tmp_path):
  p = tmp_path / "f.bin"
  p.write_bytes(b"data")
  common.verify_checksum(p, hashlib.md5(b"data").hexdigest(), "md5")
  common.verify_checksum(p, hashlib.sha256(b"data").hexdigest().upper(), "sha256")
  with pytest.raises(DataError, match="checksum mismatch for .*f.bin"):
    common.verify_checksum(p, "0" * 64, "sha256")


def _serve_file(monkeypatch, path):
  monkeypatch.setattr(
    common, "_urlopen", lambda url, timeout=None: urllib.request.urlopen(path.as_uri())
  )


def test_download_with_progress_and_checksum(tmp_path, monkeypatch, capsys):
  src = tmp_path / "src.bin"
  payload = os.urandom(300_000)
  src.write_bytes(payload)
  _serve_file(monkeypatch, src)
  dest = tmp_path / "out" / "file.bin"
  got = common.download(
    "https://example.invalid/file.bin", dest, checksum=("md5", hashlib.md5(payload).hexdigest())
  )
  assert got == dest and dest.read_bytes() == payload
  assert not (tmp_path / "out" / "file.bin.part").exists()
  err = capsys.readouterr().err
  assert "100.0%" in err and "/" in err and "file.bin" in err


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
  src = tmp_path / "src.bin"
  src.write_bytes(b"x" * 1000)
  _serve_file(monkeypatch, src)
  dest = tmp_path / "out" / "file.bin"
  with pytest.raises(DataError, match="checksum mismatch"):
    common.download("https://example.invalid/f", dest, checksum=("md5", "0" * 32))
  assert not dest.exists() and not (tmp_path / "out" / "file.bin.part").exists()


def test_download_unknown_length_and_network_error(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(common, "_urlopen", lambda url, timeout=None: io.BytesIO(b"hello"))
  dest = tmp_path / "x.bin"
  common.download("https://example.invalid/x", dest)
  assert dest.read_bytes() == b"hello"
  assert "5 B" in capsys.readouterr().err

  def fail(url, timeout=None):
    raise OSError("no route to host")

  monkeypatch.setattr(common, "_urlopen", fail)
  with pytest.raises(DataError, match="could not download .*--data_dir"):
    common.download("https://example.invalid/y", tmp_path / "y.bin")
