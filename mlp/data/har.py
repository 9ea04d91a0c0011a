"""UCI HAR (Human Activity Recognition Using Smartphones): 561 features, 6 activities, 30 subjects.

Expected layout under the data directory (the official one)::

  UCI HAR Dataset/features.txt, activity_labels.txt,
    train/{X_train.txt, y_train.txt, subject_train.txt},
    test/{X_test.txt, y_test.txt, subject_test.txt}   (optional, see below)

Validation is split off by subject, so no subject is in both train and val. When the official test
features are absent (a train-only copy), the test set is training subjects 25..30 held out.
Optionally each subject's features are normalised with that subject's own statistics
(:func:`normalize_by_subject`).
Parsed arrays are cached as an .npz in the cache folder, keyed by the source files' fingerprint.
"""

from __future__ import annotations

import dataclasses
import shutil
import zipfile
from pathlib import Path

import numpy as np

from mlp.data import common, folds
from mlp.data.common import DataError
from mlp.data.textfiles import parse_ints, parse_matrix, parse_names

DIRNAME = "UCI HAR Dataset"
URL = (
  "https://archive.ics.uci.edu/static/public/240/human+activity+recognition+using+smartphones.zip"
)
TEST_FALLBACK_SUBJECTS = (25, 26, 27, 28, 29, 30)
NUM_SUBJECTS = 30

# The checksum of the official zip is not published, so the *extracted* files are verified against
# these known sha256 values of the official files instead.
SHA256 = {
  "train/X_train.txt": "9c1246099c8d5463779eec5a3845cc3898df9d8c715441ab2a1232d4421fc42f",
  "train/y_train.txt": "415b3357e2e2d5e70a45c781947c6bdd80e0410a579d862eedcd6bbce3c694ef",
  "train/subject_train.txt": "66e1e2fbe9b396fa5155f531dc3348c803f503be663e2318772d49947db9153a",
  "test/y_test.txt": "2a94cb53ca46b956c1b2aebd4a09a72badd8a8e9ea9cdfe9f31b3306a08666bb",
  "test/subject_test.txt": "63b8c577f4a85431c06bd87f6384608c90a9f72f05c7956dd21255dc63515c07",
  "features.txt": "b384889885b1c8680ecf250e0e605b4c79536cdf09ce9f2fa7225a3c6773b5c7",
  "activity_labels.txt": "f6e6b292704438261f0283b2a82659ab0661447dc16520938bdf379ed1bf8de0",
}
# For X_test.txt only its git blob id (sha1 of b"blob <size>\0" + content) is known.
GIT_BLOB_SHA1 = {"test/X_test.txt": "f3c01cbd355e0000229bce4e38156ee338fa6b08"}

TRAIN_FILES = ("train/X_train.txt", "train/y_train.txt", "train/subject_train.txt")
TEST_FILES = ("test/X_test.txt", "test/y_test.txt", "test/subject_test.txt")
META_FILES = ("features.txt", "activity_labels.txt")
SUBJECT_NORMS = ("none", "center", "standardize")


def check_subject_norm(kind: str, field: str = "subject_norm") -> None:
  """ValueError naming ``field`` unless ``kind`` is one of :data:`SUBJECT_NORMS`."""
  if kind not in SUBJECT_NORMS:
    raise ValueError(f"{field} must be one of {', '.join(SUBJECT_NORMS)}, got {kind!r}")


@dataclasses.dataclass(frozen=True)
class HarData:
  """HAR splits: x float32 (n, 561), y int32 labels 0..5, s int32 subject ids."""

  x_train: np.ndarray
  y_train: np.ndarray
  s_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  s_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  s_test: np.ndarray
  class_names: tuple[str, ...]
  feature_names: tuple[str, ...]
  test_source: str  # "official" or "heldout"; "fold" for a cross-validation fold (see load)
  split_note: str


# --------------------------------------------------------------------------------------------------
# Locating and downloading


def find_root(data_dir: str | None = None, *, download: bool = True) -> Path:
  """The ``UCI HAR Dataset`` directory: argument > $MLP_DATA_DIR > cache > download to cache."""
  base, origin = common.configured_data_dir(data_dir)
  if base is not None:
    if (base / TRAIN_FILES[0]).is_file() and not (base / DIRNAME).is_dir():
      return base  # pointed straight at the data set folder
    root = base / DIRNAME
    _require_train(root, origin)
    return root
  cache = common.cache_dir()
  root = cache / DIRNAME
  if (root / TRAIN_FILES[0]).is_file():
    _require_train(root, "cache folder")
    return root
  if not download:
    raise common.missing_error(
      "UCI HAR data set",
      root / TRAIN_FILES[0],
      f"cache folder; set {common.CACHE_DIR_ENV} to move it",
      "Or allow the download from the official source.",
    )
  download_to_cache(cache)
  return root


def _require_train(root: Path, origin: str) -> None:
  for rel in (*META_FILES, *TRAIN_FILES):
    if not (root / rel).is_file():
      raise common.missing_error("UCI HAR data set", root / rel, origin)


def download_to_cache(cache: Path) -> Path:
  """Download the official zip, extract its inner ``UCI HAR Dataset.zip`` and verify the files."""
  cache.mkdir(parents=True, exist_ok=True)
  downloads = cache / "downloads"
  outer = common.download(URL, downloads / "human+activity+recognition+using+smartphones.zip")
  staging = cache / ".har-staging"
  shutil.rmtree(staging, ignore_errors=True)
  staging.mkdir(parents=True)
  try:
    try:
      with zipfile.ZipFile(outer) as zo:
        inner = [n for n in zo.namelist() if n.rstrip("/").endswith(DIRNAME + ".zip")]
        if inner:
          inner_path = staging / (DIRNAME + ".zip")
          with zo.open(inner[0]) as src, open(inner_path, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
          with zipfile.ZipFile(inner_path) as zi:
            _extract(zi, staging)
          inner_path.unlink()
        else:  # tolerate a zip holding the data set folder directly
          _extract(zo, staging)
    except zipfile.BadZipFile as e:
      raise DataError(f"{outer} is not a valid zip ({e}); delete it and download again.") from e
    extracted = staging / DIRNAME
    for rel in (*META_FILES, *TRAIN_FILES, *TEST_FILES):
      if not (extracted / rel).is_file():
        raise DataError(f"the downloaded archive {outer} has no '{DIRNAME}/{rel}'.")
    for rel, digest in SHA256.items():
      common.verify_checksum(extracted / rel, digest, "sha256")
    for rel, digest in GIT_BLOB_SHA1.items():
      common.verify_checksum(extracted / rel, digest, "git-blob")
    target = cache / DIRNAME
    if target.exists():
      shutil.rmtree(target)
    extracted.rename(target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  outer.unlink(missing_ok=True)
  return cache / DIRNAME


def _extract(zf: zipfile.ZipFile, dest: Path) -> None:
  """Extract the members under ``UCI HAR Dataset/`` safely (no absolute paths or '..')."""
  for info in zf.infolist():
    name = info.filename
    parts = Path(name).parts
    if not parts or parts[0] != DIRNAME or name.startswith("/") or ".." in parts:
      continue
    zf.extract(info, dest)


# --------------------------------------------------------------------------------------------------
# Reading the splits


def _test_state(root: Path) -> tuple[str, list[str]]:
  present = [rel for rel in TEST_FILES if (root / rel).is_file()]
  if len(present) == len(TEST_FILES):
    return "official", present
  return ("partial" if present else "absent"), present


def _parse_split(root: Path, files: tuple[str, ...], nfeat: int, nclass: int) -> dict:
  x = parse_matrix(root / files[0], nfeat)
  y = parse_ints(root / files[1], 1, nclass, "label") - 1
  s = parse_ints(root / files[2], 1, NUM_SUBJECTS, "subject")
  if not len(x) == len(y) == len(s):
    raise DataError(
      f"row counts differ in {root / Path(files[0]).parent}: {files[0]} {len(x)}, "
      f"{files[1]} {len(y)}, {files[2]} {len(s)}. Replace them with the official files."
    )
  return {"x": x, "y": y.astype(np.int32), "s": s}


def load_arrays(root: Path) -> dict[str, np.ndarray]:
  """Parsed arrays of a HAR directory, from the .npz cache while the source files are unchanged.

  Keys: x_train, y_train (0-based), s_train, class_names, feature_names, test_state ("official",
  "partial" or "absent"), test_present, and x_test, y_test, s_test when test_state is "official".
  """
  root = Path(root)
  state, present = _test_state(root)
  sources = [root / rel for rel in (*META_FILES, *TRAIN_FILES, *TEST_FILES)]
  key = common.fingerprint(sources) + ":checked"  # caches before the checksum check: re-parse
  cached = common.load_parsed("har", root, key)
  if cached is not None:
    common.report_differing("UCI HAR", root, cached.get("differing", ()))
    return cached
  # Checked once, when the files are first parsed; the cache remembers the outcome.
  differing = common.differing_files(
    root,
    {
      **{k: ("sha256", v) for k, v in SHA256.items()},
      **{k: ("git-blob", v) for k, v in GIT_BLOB_SHA1.items()},
    },
  )
  common.report_differing("UCI HAR", root, differing)
  feature_names = parse_names(root / "features.txt")
  class_names = parse_names(root / "activity_labels.txt")
  out: dict[str, np.ndarray] = {}
  train = _parse_split(root, TRAIN_FILES, len(feature_names), len(class_names))
  out.update(x_train=train["x"], y_train=train["y"], s_train=train["s"])
  if state == "official":
    test = _parse_split(root, TEST_FILES, len(feature_names), len(class_names))
    out.update(x_test=test["x"], y_test=test["y"], s_test=test["s"])
  out["class_names"] = np.array(class_names, dtype=str)
  out["feature_names"] = np.array(feature_names, dtype=str)
  out["test_state"] = np.array(state)
  out["test_present"] = np.array(present, dtype=str).reshape(-1)
  out["differing"] = np.array(differing, dtype=str).reshape(-1)
  common.save_parsed("har", root, key, out)
  return out


# --------------------------------------------------------------------------------------------------
# Per-subject normalisation


def normalize_by_subject(x: np.ndarray, subjects: np.ndarray, kind: str) -> np.ndarray:
  """Normalise each subject's rows with that subject's own per-feature statistics.

  For row i of subject s (mu_s, sigma_s: per-feature mean and std over all rows of s):
      center:      x_i <- x_i - mu_s
      standardize: x_i <- (x_i - mu_s) / sigma_s     (sigma_s = 0: the feature is only centred)
      none:        x_i unchanged
  A subject with a single row therefore becomes all zeros under center and standardize.
  The statistics use the subject's features only, never labels. This removes between-person
  offsets and scales (body, gait, how the phone sits on the waist), which are what an MLP trained
  on a dozen people fails to generalise across. The price: a new person needs a recording of
  their own (ideally with the usual mix of activities) before their rows can be classified.
  Computed in float64; returns float32.
  """
  check_subject_norm(kind)
  x = np.asarray(x)
  subjects = np.asarray(subjects)
  if x.ndim != 2 or subjects.shape != x.shape[:1]:
    raise ValueError(f"expected x (n, d) and subjects (n,), got {x.shape} and {subjects.shape}")
  if kind == "none":
    return x.astype(np.float32, copy=False)
  out = np.empty(x.shape, np.float32)
  for s in np.unique(subjects):
    rows = subjects == s
    xs = x[rows].astype(np.float64)
    xs -= xs.mean(axis=0)
    if kind == "standardize":
      std = xs.std(axis=0)
      xs /= np.where(std > 1e-12, std, 1.0)
    out[rows] = xs
  return out


_NORM_NOTES = {
  "center": "features centred per subject",
  "standardize": "features standardised per subject",
}


# --------------------------------------------------------------------------------------------------
# Splitting


def _subjects_text(subjects: np.ndarray) -> str:
  subjects = sorted(int(s) for s in subjects)
  if len(subjects) > 1 and subjects == list(range(subjects[0], subjects[-1] + 1)):
    return f"{subjects[0]}-{subjects[-1]}"
  return ", ".join(str(s) for s in subjects)


def load(
  data_dir: str | None = None,
  *,
  val_subjects: int = 3,
  seed: int = 0,
  subject_norm: str = "none",
  download: bool = True,
  cv_folds: int = 0,
  cv_fold: int = 0,
  cv_seed: int = 0,
) -> HarData:
  """Load UCI HAR with a subject-disjoint validation split (``val_subjects`` seeded subjects).

  The test set is the official test split when ``test/`` is complete, else training subjects
  25..30 held out (``test_source == "heldout"``). ``split_note`` says which, in one sentence.
  ``subject_norm`` (none/center/standardize) normalises every split's rows per subject
  (:func:`normalize_by_subject`); each subject is in exactly one split.

  Cross-validation: with ``cv_folds`` = k > 0 the training subjects (never the test subjects) are
  dealt into k folds of whole subjects (:func:`mlp.data.folds.subject_folds`, seeded by
  ``cv_seed``); fold ``cv_fold``'s rows are returned as the test split (``test_source == "fold"``)
  and validation is drawn from the other folds' subjects as above.
  """
  if val_subjects < 0:
    raise ValueError(f"val_subjects must be >= 0, got {val_subjects}")
  check_subject_norm(subject_norm)  # before the slow parse
  root = find_root(data_dir, download=download)
  a = load_arrays(root)
  x, y, s = a["x_train"], a["y_train"], a["s_train"]
  x = normalize_by_subject(x, s, subject_norm)
  state = str(a["test_state"])
  if state == "official":
    x_test, y_test, s_test = a["x_test"], a["y_test"], a["s_test"]
    x_test = normalize_by_subject(x_test, s_test, subject_norm)
    pool = np.ones(len(s), bool)
    test_source = "official"
    test_note = (
      f"test = official test split ({len(np.unique(s_test))} subjects, {len(s_test)} rows)"
    )
  else:
    held = np.isin(s, TEST_FALLBACK_SUBJECTS)
    if not held.any():
      raise DataError(
        f"{root / TEST_FILES[0]} is absent and the training split has none of subjects "
        f"{_subjects_text(np.array(TEST_FALLBACK_SUBJECTS))} to hold out as a test set; add the "
        "official test/ files."
      )
    x_test, y_test, s_test = x[held], y[held], s[held]
    pool = ~held
    test_source = "heldout"
    if state == "partial":
      why = (
        f"official test split incomplete in {root / 'test'}: only "
        f"{', '.join(Path(p).name for p in a['test_present'])}"
      )
    else:
      why = f"official test features absent in {root / 'test'}"
    test_note = (
      f"test = training subjects {_subjects_text(np.unique(s_test))} held out ({why}; "
      f"{len(s_test)} rows)"
    )
  if cv_folds:
    groups = folds.subject_folds(np.unique(s[pool]), cv_folds, cv_seed)
    folds.check_fold(cv_fold, cv_folds)
    held = pool & np.isin(s, groups[cv_fold])
    x_test, y_test, s_test = x[held], y[held], s[held]
    pool &= ~held
    test_source = "fold"
    test_note = (
      f"cross-validation fold {cv_fold + 1} of {cv_folds} (seed {cv_seed}): held-out subjects "
      f"{_subjects_text(groups[cv_fold])} ({len(s_test)} rows); the study's {test_note}, unused"
    )
  pool_subjects = np.unique(s[pool])
  if val_subjects >= len(pool_subjects):
    raise DataError(
      f"{root}: only {len(pool_subjects)} training subjects available, cannot hold out "
      f"{val_subjects} for validation and keep one for training; lower val_subjects."
    )
  rng = np.random.default_rng(seed)
  chosen = np.sort(rng.choice(pool_subjects, size=val_subjects, replace=False))
  val = pool & np.isin(s, chosen)
  train = pool & ~val
  if val_subjects:
    val_note = f"val = subjects {_subjects_text(chosen)} ({int(val.sum())} rows)"
  else:
    val_note = "no val split"
  train_note = f"train = {len(np.unique(s[train]))} subjects ({int(train.sum())} rows)"
  notes = [test_note, val_note, train_note]
  if subject_norm != "none":  # every split, the test subjects' with their own rows' statistics
    stats = "mean and std" if subject_norm == "standardize" else "mean"
    notes.append(
      f"{_NORM_NOTES[subject_norm]} (each subject's own {stats} over all its rows, labels unused)"
    )
  return HarData(
    x_train=x[train],
    y_train=y[train],
    s_train=s[train],
    x_val=x[val],
    y_val=y[val],
    s_val=s[val],
    x_test=x_test,
    y_test=y_test,
    s_test=s_test,
    class_names=tuple(str(c) for c in a["class_names"]),
    feature_names=tuple(str(f) for f in a["feature_names"]),
    test_source=test_source,
    split_note="; ".join(notes) + ".",
  )
