"""JAX's persistent compilation cache (mlp.compile_cache): where it is, how it is turned off, and
that a second process training the same shapes compiles nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlp import compile_cache

ROOT = Path(__file__).resolve().parents[1]

# Fits the estimator in a fresh process and reports, from jax.monitoring's events, the programs
# compiled and written to the persistent cache, the ones found there, and the time spent in the
# backend's compile calls (a program found is loaded there instead).
FIT = """
import collections, json
from jax import monitoring
events, seconds = collections.Counter(), collections.Counter()
def on_duration(event, duration, **kw):
  events[event] += 1
  seconds[event] += duration
monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(lambda event, **kw: events.update([event]))
import numpy as np
from mlp import MLPClassifier
rng = np.random.default_rng(0)
X, y = rng.normal(size=(120, 5)), rng.integers(0, 3, 120)
MLPClassifier(hidden=(8,), max_epochs=2, early_stopping="none").fit(X, y).predict(X)
print(json.dumps(dict(
  written=events["/jax/compilation_cache/cache_misses"],  # (jax's name: recorded on a write)
  hits=events["/jax/compilation_cache/cache_hits"],
  compile_s=seconds["/jax/core/compile/backend_compile_duration"],
)))
"""


def test_the_cache_lives_beside_the_data_cache_and_moves_or_stops_with_an_env_var(
  tmp_path, monkeypatch
):
  monkeypatch.setenv("MLP_CACHE_DIR", str(tmp_path / "data-cache"))
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  assert compile_cache.folder() == tmp_path / "data-cache" / "compiled"
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "elsewhere"))
  assert compile_cache.folder() == tmp_path / "elsewhere"
  for off in ("off", "0", "OFF", ""):
    monkeypatch.setenv(compile_cache.ENV, off)
    assert compile_cache.folder() is None


def _fit_in_a_new_process(env: dict[str, str]) -> dict:
  r = subprocess.run(
    [sys.executable, "-c", FIT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
  )
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_with_the_same_shapes_compiles_nothing(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}  # (the suite's cache)
  env[compile_cache.ENV] = str(tmp_path / "compiled")
  first = _fit_in_a_new_process(env)
  entries = sorted(os.listdir(tmp_path / "compiled"))
  assert first["written"] > 10 and len(entries) == first["written"]
  second = _fit_in_a_new_process(env)
  assert second["written"] == 0 and second["hits"] >= first["written"]
  assert second["compile_s"] < first["compile_s"] / 4, (first, second)
  # Off, or a folder given to JAX itself: this one is left alone.
  off = _fit_in_a_new_process({**env, compile_cache.ENV: "off"})
  own = _fit_in_a_new_process({**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "own")})
  assert off["hits"] == own["hits"] == 0 and off["written"] == 0
  assert sorted(os.listdir(tmp_path / "compiled")) == entries
