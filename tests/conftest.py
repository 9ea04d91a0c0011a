"""Test-wide settings: never touch the user's cache or data folder, never the network."""

import pytest


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path_factory, monkeypatch):
  monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path_factory.mktemp("mlp-cache")))
  monkeypatch.delenv("MLP_DATA_DIR", raising=False)
