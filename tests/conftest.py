"""Test-wide settings: never touch the user's cache or data folder, never the network."""

import os
import tempfile

import pytest

from mlp import compile_cache
from mlp.data import common

# The suite's own compilation cache (never the user's): $MLP_TEST_COMPILE_CACHE, a folder or
# "off", else the pytest cache's mlp-compiled/ folder, kept between runs (a second run of the suite
# compiles little), else a temporary folder.
TEST_COMPILE_CACHE_ENV = "MLP_TEST_COMPILE_CACHE"


def pytest_configure(config):
  """Before any test module imports jax: this process, its xdist siblings and every process a
  test starts (the CLI, workers) share the suite's compilation cache (mlp.compile_cache)."""
  folder = os.environ.get(TEST_COMPILE_CACHE_ENV)
  if folder is None:
    cache = getattr(config, "cache", None)
    folder = str(cache.mkdir("mlp-compiled")) if cache else tempfile.mkdtemp(prefix="mlp-xla-")
  os.environ[compile_cache.ENV] = folder
  compile_cache.enable()


@pytest.fixture(autouse=True, scope="session")
def session_cache_dir(tmp_path_factory):
  """Module- and session-scoped fixtures run before function-scoped ones: isolate them too."""
  saved = {k: os.environ.get(k) for k in ("MLP_CACHE_DIR", "MLP_DATA_DIR")}
  os.environ["MLP_CACHE_DIR"] = str(tmp_path_factory.mktemp("mlp-cache"))
  os.environ.pop("MLP_DATA_DIR", None)
  yield
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path, monkeypatch):
  """A private cache per test, no $MLP_DATA_DIR, and downloads that fail loudly.

  Tests of the download path replace ``common._urlopen`` with a local fake themselves.
  """
  monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.delenv("MLP_DATA_DIR", raising=False)

  def no_network(*args, **kwargs):
    raise AssertionError("tests must not touch the network")

  monkeypatch.setattr(common, "_urlopen", no_network)


# Module-scoped fixtures that train a whole study: every test that uses one is slow.
STUDY_FIXTURES = {"finished", "overfit"}


def pytest_collection_modifyitems(config, items):
  """Mark ``slow`` the tests that use a study-training fixture (end-to-end tests that train or
  start processes themselves carry ``@pytest.mark.slow``): ``pytest -m "not slow"`` skips both."""
  for item in items:
    if STUDY_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)
