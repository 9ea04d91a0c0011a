"""Tests of the UCI HAR loader on tiny synthetic copies in the official layout."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlp import fileio
from mlp.data import common, har
from mlp.data.common import DataError
from tests.data_fixtures import write_fake_har


def test_heldout_happy_path(tmp_path):
  write_fake_har(tmp_path / "d", rows_per_subject=12)
  d = har.load(str(tmp_path / "d"), val_subjects=2, seed=0)
  assert d.x_train.dtype == np.float32 and d.x_train.shape[1] == 561
  for y in (d.y_train, d.y_val, d.y_test):
    assert y.dtype == np.int32 and y.min() >= 0 and y.max() <= 5
  for s in (d.s_train, d.s_val, d.s_test):
    assert s.dtype == np.int32
  assert d.test_source == "heldout"
  assert set(d.s_test.tolist()) == {25, 26, 27}
  assert len(set(d.s_val.tolist())) == 2
  assert not set(d.s_val.tolist()) & set(d.s_train.tolist())
  assert not set(d.s_test.tolist()) & (set(d.s_train.tolist()) | set(d.s_val.tolist()))
  assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 8 * 12
  assert d.class_names[0] == "WALKING" and d.class_names[-1] == "LAYING"
  assert len(d.feature_names) == 561 and d.feature_names[0] == "feature-1()-X"
  assert "25-27 held out" in d.split_note and "absent" in d.split_note
  assert "val = subjects" in d.split_note


def test_labels_shifted_to_zero_based(tmp_path):
  root = write_fake_har(tmp_path, subjects=(1, 25), rows_per_subject=6)
  file_labels = np.loadtxt(root / "train/y_train.txt", dtype=int)
  d = har.load(str(tmp_path), val_subjects=0)
  np.testing.assert_array_equal(np.concatenate([d.y_train, d.y_test]), file_labels - 1)
  x_file = np.loadtxt(root / "train/X_train.txt")
  np.testing.assert_allclose(np.concatenate([d.x_train, d.x_test]), x_file, rtol=1e-6)
  assert d.x_val.shape == (0, 561) and "no val" in d.split_note
  z = har.load(str(tmp_path), val_subjects=0, subject_norm="standardize")
  assert z.x_val.shape == (0, 561)
  np.testing.assert_allclose(
    z.x_train, har.normalize_by_subject(d.x_train, d.s_train, "standardize"), atol=1e-6
  )
  np.testing.assert_allclose(
    z.x_test, har.normalize_by_subject(d.x_test, d.s_test, "standardize"), atol=1e-6
  )


def test_official_test_path(tmp_path):
  write_fake_har(tmp_path, with_test=True, test_subjects=(2, 4, 9), rows_per_subject=6)
  d = har.load(str(tmp_path), val_subjects=3, seed=1)
  assert d.test_source == "official"
  assert set(d.s_test.tolist()) == {2, 4, 9} and len(d.y_test) == 18
  assert "official test split (3 subjects, 18 rows)" in d.split_note
  # val may come from any training subject, 25..30 included; train+val = all training rows
  assert len(d.y_train) + len(d.y_val) == 8 * 6
  assert not set(d.s_val.tolist()) & set(d.s_train.tolist())


def test_partial_test_counts_as_absent(tmp_path):
  write_fake_har(tmp_path, with_test="partial")
  d = har.load(str(tmp_path))
  assert d.test_source == "heldout"
  assert "incomplete" in d.split_note and "y_test.txt" in d.split_note


def test_normalize_by_subject_uses_each_subjects_own_statistics():
  rng = np.random.default_rng(0)
  subjects = np.repeat([3, 7, 11], [5, 8, 6])
  x = rng.normal(size=(19, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 5.0, -1.0, 2.0]
  x[:, 1] += subjects  # a per-subject offset, as between two people
  x[subjects == 7, 2] = 0.25  # a feature that is constant within one subject
  z = har.normalize_by_subject(x, subjects, "standardize")
  c = har.normalize_by_subject(x, subjects, "center")
  assert z.dtype == np.float32 and np.isfinite(z).all()
  for s in (3, 7, 11):
    rows = subjects == s
    np.testing.assert_allclose(z[rows].mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(c[rows].mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(c[rows].std(0), x[rows].std(0), rtol=1e-5)
    expect = np.where(np.ptp(x[rows], axis=0) > 0, 1.0, 0.0)  # constant: centred to 0 only
    np.testing.assert_allclose(z[rows].std(0), expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
      z[rows], (x[rows] - x[rows].mean(0)) / np.where(expect > 0, x[rows].std(0), 1), rtol=1e-5
    )
  # a subject's rows depend on that subject alone
  x2 = x.copy()
  x2[subjects == 3] *= 10.0
  z2 = har.normalize_by_subject(x2, subjects, "standardize")
  np.testing.assert_array_equal(z2[subjects != 3], z[subjects != 3])
  np.testing.assert_array_equal(har.normalize_by_subject(x, subjects, "none"), x.astype(np.float32))
  with pytest.raises(ValueError, match="one of"):
    har.normalize_by_subject(x, subjects, "zscore")
  with pytest.raises(ValueError, match="subjects"):
    har.normalize_by_subject(x, subjects[:-1], "center")


@pytest.mark.parametrize("with_test", [False, True])
def test_load_normalizes_every_split_per_subject(tmp_path, with_test):
  write_fake_har(tmp_path, with_test=with_test, rows_per_subject=12)
  raw = har.load(str(tmp_path), val_subjects=2)
  d = har.load(str(tmp_path), val_subjects=2, subject_norm="standardize")
  assert "standardised per subject" in d.split_note and "per subject" not in raw.split_note
  for split in ("train", "val", "test"):
    x, s, x_raw = (getattr(o, f"{k}_{split}") for o, k in ((d, "x"), (d, "s"), (raw, "x")))
    assert len(np.unique(s)) >= 2
    np.testing.assert_allclose(x, har.normalize_by_subject(x_raw, s, "standardize"), atol=1e-6)
    for subject in np.unique(s):
      np.testing.assert_allclose(x[s == subject].mean(0), 0.0, atol=1e-5)
  with pytest.raises(ValueError, match="subject_norm"):
    har.load(str(tmp_path), subject_norm="per-person")


def test_split_is_deterministic(tmp_path):
  write_fake_har(tmp_path, subjects=(1, 3, 5, 6, 7, 8, 10, 11, 25))
  a = har.load(str(tmp_path), seed=3)
  b = har.load(str(tmp_path), seed=3)
  np.testing.assert_array_equal(a.s_val, b.s_val)
  vals = {tuple(np.unique(har.load(str(tmp_path), seed=s).s_val)) for s in range(6)}
  assert len(vals) > 1


def test_too_many_val_subjects(tmp_path):
  write_fake_har(tmp_path, subjects=(1, 3, 25))
  with pytest.raises(DataError, match="val_subjects"):
    har.load(str(tmp_path), val_subjects=2)


def test_no_heldout_subjects(tmp_path):
  write_fake_har(tmp_path, subjects=(1, 3, 5))
  with pytest.raises(DataError, match="X_test.txt"):
    har.load(str(tmp_path))


def test_parsed_cache_reused_and_invalidated(tmp_path, monkeypatch):
  root = write_fake_har(tmp_path / "d")
  first = har.load(str(tmp_path / "d"))
  assert list((tmp_path / "cache" / "parsed").glob("har-*.npz"))

  def boom(*args, **kwargs):
    raise AssertionError("parsed again")

  real = har.parse_matrix
  monkeypatch.setattr(har, "parse_matrix", boom)
  again = har.load(str(tmp_path / "d"))
  np.testing.assert_array_equal(first.x_train, again.x_train)
  assert again.class_names == first.class_names and again.split_note == first.split_note

  # change the source: the cache must be rebuilt
  path = root / "train/X_train.txt"
  lines = path.read_text().splitlines()
  lines[0] = " ".join(["0.5"] * 561)
  path.write_text("\n".join(lines) + "\n")
  st = path.stat()
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  with pytest.raises(AssertionError, match="parsed again"):
    har.load(str(tmp_path / "d"))
  monkeypatch.setattr(har, "parse_matrix", real)
  arrays = har.load_arrays(root)
  np.testing.assert_array_equal(arrays["x_train"][0], np.full(561, 0.5, np.float32))


def test_cache_rebuilt_when_test_split_appears(tmp_path):
  write_fake_har(tmp_path)
  assert har.load(str(tmp_path)).test_source == "heldout"
  write_fake_har(tmp_path, with_test=True)
  assert har.load(str(tmp_path)).test_source == "official"


# --------------------------------------------------------------------------------------------------
# Bad input


def _rewrite(path: Path, fn) -> None:
  lines = path.read_text().splitlines()
  fn(lines)
  path.write_text("\n".join(lines) + "\n")


def test_missing_directory(tmp_path):
  with pytest.raises(DataError) as e:
    har.load(str(tmp_path / "nowhere"))
  msg = str(e.value)
  assert "nowhere" in msg and "--data_dir" in msg and "MLP_DATA_DIR" in msg


def test_missing_file(tmp_path):
  root = write_fake_har(tmp_path)
  (root / "train/y_train.txt").unlink()
  with pytest.raises(DataError, match="y_train.txt") as e:
    har.load(str(tmp_path))
  assert "--data_dir" in str(e.value)


def test_wrong_column_count(tmp_path):
  root = write_fake_har(tmp_path)

  def drop(lines):
    lines[4] = " ".join(lines[4].split()[:-1])

  _rewrite(root / "train/X_train.txt", drop)
  with pytest.raises(DataError, match=r"X_train.txt line 5: 560 columns, expected 561"):
    har.load(str(tmp_path))


def test_non_number(tmp_path):
  root = write_fake_har(tmp_path)

  def corrupt(lines):
    tokens = lines[2].split()
    tokens[7] = "abc"
    lines[2] = " ".join(tokens)

  _rewrite(root / "train/X_train.txt", corrupt)
  with pytest.raises(DataError, match=r"X_train.txt line 3: 'abc' is not a number"):
    har.load(str(tmp_path))


def test_non_finite_value(tmp_path):
  root = write_fake_har(tmp_path)
  _rewrite(root / "train/X_train.txt", lambda lines: lines.insert(0, ""))
  _rewrite(root / "train/X_train.txt", lambda lines: lines.__setitem__(3, "nan " + lines[3]))
  _rewrite(
    root / "train/X_train.txt", lambda lines: lines.__setitem__(3, lines[3].rsplit(maxsplit=1)[0])
  )
  with pytest.raises(DataError, match=r"X_train.txt line 4: non-finite value"):
    har.load(str(tmp_path))


def test_label_out_of_range(tmp_path):
  root = write_fake_har(tmp_path)

  def bad(lines):
    lines[6] = "7"

  _rewrite(root / "train/y_train.txt", bad)
  with pytest.raises(DataError, match=r"y_train.txt line 7: label 7 out of range 1..6"):
    har.load(str(tmp_path))


def test_subject_out_of_range(tmp_path):
  root = write_fake_har(tmp_path)
  _rewrite(root / "train/subject_train.txt", lambda lines: lines.__setitem__(0, "31"))
  with pytest.raises(DataError, match=r"subject_train.txt line 1: subject 31"):
    har.load(str(tmp_path))


def test_non_integer_label(tmp_path):
  root = write_fake_har(tmp_path)
  _rewrite(root / "train/y_train.txt", lambda lines: lines.__setitem__(1, "2.5"))
  with pytest.raises(DataError, match=r"y_train.txt line 2: '2.5' is not an integer"):
    har.load(str(tmp_path))


@pytest.mark.parametrize(
  "rel", ["train/X_train.txt", "train/y_train.txt", "features.txt", "activity_labels.txt"]
)
def test_empty_file(tmp_path, rel):
  root = write_fake_har(tmp_path)
  (root / rel).write_text("")
  with pytest.raises(DataError, match=Path(rel).name + " is empty"):
    har.load(str(tmp_path))


def test_row_count_mismatch(tmp_path):
  root = write_fake_har(tmp_path)
  _rewrite(root / "train/subject_train.txt", lambda lines: lines.pop())
  with pytest.raises(DataError, match="subject_train.txt"):
    har.load(str(tmp_path))


def test_malformed_names(tmp_path):
  root = write_fake_har(tmp_path)
  _rewrite(root / "activity_labels.txt", lambda lines: lines.__setitem__(2, "WALKING_DOWN"))
  with pytest.raises(DataError, match="activity_labels.txt line 3"):
    har.load(str(tmp_path))


def test_malformed_test_split(tmp_path):
  root = write_fake_har(tmp_path, with_test=True)
  _rewrite(root / "test/y_test.txt", lambda lines: lines.__setitem__(0, "0"))
  with pytest.raises(DataError, match="y_test.txt line 1: label 0"):
    har.load(str(tmp_path))


# --------------------------------------------------------------------------------------------------
# Where the data is looked for


def test_argument_beats_env_beats_cache(tmp_path, monkeypatch):
  write_fake_har(tmp_path / "arg", subjects=(1, 25), rows_per_subject=6)
  write_fake_har(tmp_path / "env", subjects=(1, 3, 25), rows_per_subject=6)
  write_fake_har(tmp_path / "cache", subjects=(1, 3, 5, 25), rows_per_subject=6)

  def n_rows(d):
    return len(d.y_train) + len(d.y_val) + len(d.y_test)

  assert n_rows(har.load(download=False, val_subjects=0)) == 24  # cache
  monkeypatch.setenv("MLP_DATA_DIR", str(tmp_path / "env"))
  assert n_rows(har.load(download=False, val_subjects=0)) == 18
  assert n_rows(har.load(str(tmp_path / "arg"), val_subjects=0)) == 12


def test_env_dir_is_authoritative(tmp_path, monkeypatch):
  write_fake_har(tmp_path / "cache")
  monkeypatch.setenv("MLP_DATA_DIR", str(tmp_path / "empty"))
  with pytest.raises(DataError, match="environment variable MLP_DATA_DIR"):
    har.load()


def test_dataset_folder_itself_accepted(tmp_path):
  root = write_fake_har(tmp_path)
  assert har.load(str(root)).test_source == "heldout"


def test_nothing_anywhere_without_download(tmp_path):
  with pytest.raises(DataError) as e:
    har.load(download=False)
  assert "cache" in str(e.value) and "--data_dir" in str(e.value)


# --------------------------------------------------------------------------------------------------
# Download (served from a local file, never the network)


def _official_zip(tmp_path: Path) -> Path:
  """An outer zip holding an inner 'UCI HAR Dataset.zip', like the official archive."""
  src = tmp_path / "src"
  root = write_fake_har(src, with_test=True, rows_per_subject=6)
  inner = io.BytesIO()
  with zipfile.ZipFile(inner, "w") as z:
    for p in sorted(root.rglob("*")):
      z.write(p, p.relative_to(src).as_posix())
    z.writestr("__MACOSX/._junk", b"x")
    z.writestr("../evil.txt", b"x")
  outer = tmp_path / "har.zip"
  with zipfile.ZipFile(outer, "w") as z:
    z.writestr("UCI HAR Dataset.zip", inner.getvalue())
    z.writestr("UCI HAR Dataset.names", b"names")
  return outer


def _serve(monkeypatch, path: Path) -> list[str]:
  urls = []

  def opener(url, timeout=None):
    urls.append(url)
    import urllib.request

    return urllib.request.urlopen(path.as_uri())

  monkeypatch.setattr(common, "_urlopen", opener)
  return urls


def _fake_checksums(monkeypatch, root: Path) -> None:
  sums = {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in har.SHA256}
  monkeypatch.setattr(har, "SHA256", sums)
  data = (root / "test/X_test.txt").read_bytes()
  blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
  monkeypatch.setattr(har, "GIT_BLOB_SHA1", {"test/X_test.txt": blob})


def test_download_checksum_match(tmp_path, monkeypatch, capsys):
  outer = _official_zip(tmp_path)
  urls = _serve(monkeypatch, outer)
  _fake_checksums(monkeypatch, tmp_path / "src" / "UCI HAR Dataset")
  d = har.load(val_subjects=1)
  assert urls == [har.URL]
  assert d.test_source == "official"
  cache = tmp_path / "cache"
  assert (cache / "UCI HAR Dataset" / "test" / "X_test.txt").is_file()
  assert not list(cache.rglob("*.part")) and not (cache / ".har-staging").exists()
  assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()
  err = capsys.readouterr().err
  assert "%" in err and "/" in err
  # second load uses the cache, no download
  monkeypatch.setattr(common, "_urlopen", None)
  assert har.load(val_subjects=1).test_source == "official"


def test_download_checksum_mismatch(tmp_path, monkeypatch):
  outer = _official_zip(tmp_path)
  _serve(monkeypatch, outer)
  # the real official checksums cannot match the synthetic files
  with pytest.raises(DataError, match="checksum mismatch for .*txt"):
    har.load()
  assert not (tmp_path / "cache" / "UCI HAR Dataset").exists()


def test_download_x_test_blob_mismatch(tmp_path, monkeypatch):
  outer = _official_zip(tmp_path)
  _serve(monkeypatch, outer)
  _fake_checksums(monkeypatch, tmp_path / "src" / "UCI HAR Dataset")
  monkeypatch.setattr(har, "GIT_BLOB_SHA1", {"test/X_test.txt": "0" * 40})
  with pytest.raises(DataError, match="checksum mismatch for .*X_test.txt"):
    har.load()


def test_download_bad_zip(tmp_path, monkeypatch):
  bad = tmp_path / "bad.zip"
  bad.write_bytes(b"not a zip")
  _serve(monkeypatch, bad)
  with pytest.raises(DataError, match="not a valid zip"):
    har.load()


def test_git_blob_sha1_matches_git(tmp_path):
  p = tmp_path / "f.txt"
  p.write_bytes(b"hello\n")
  # `git hash-object` of "hello\n"
  assert common.git_blob_sha1(p) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_fake_har_is_learnable(tmp_path):
  write_fake_har(tmp_path, with_test=True, rows_per_subject=24)
  d = har.load(str(tmp_path), val_subjects=2)
  centroids = np.stack([d.x_train[d.y_train == c].mean(0) for c in range(6)])
  pred = np.argmin(((d.x_test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
  assert (pred == d.y_test).mean() > 0.9


def test_a_damaged_copy_in_data_dir_is_reported_and_strict_mode_refuses_it(
  tmp_path, monkeypatch, capsys
):
  """A copy whose X_train.txt lost its last 4 bytes used to train silently on a wrong value."""
  root = write_fake_har(tmp_path, subjects=(1, 3, 5, 25, 26, 27), rows_per_subject=6)
  # Pretend the files as written are the official ones (the real digests need the real data).
  official = {rel: fileio.file_digest(root / rel) for rel in har.SHA256 if (root / rel).exists()}
  monkeypatch.setattr(har, "SHA256", official)
  har.load_arrays(root)
  assert "differ" not in capsys.readouterr().err
  x_train = root / "train" / "X_train.txt"
  x_train.write_bytes(x_train.read_bytes()[:-5] + b"\n")  # the last value loses 4 characters
  har.load_arrays(root)
  err = capsys.readouterr().err
  assert "train/X_train.txt differs from the official file" in err and "strict_data" in err
  har.load_arrays(root)  # from the parsed cache: the check's outcome is remembered, still said
  assert "train/X_train.txt differs" in capsys.readouterr().err
  monkeypatch.setenv(common.STRICT_ENV, "1")
  with pytest.raises(DataError, match="X_train.txt differs"):
    har.load_arrays(root)
