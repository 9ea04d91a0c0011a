"""Shared pieces of the gradient-check suites: float64 throughout, random inputs, comparisons."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

RTOL = 1e-10  # autodiff vs hand-written, float64
FD_TOL = 1e-6  # finite differences, float64
FD_EPS = 1e-6  # central-difference step: small, so a step rarely crosses a ReLU kink


@pytest.fixture(autouse=True)
def float64():
  """Every test of a module that imports this fixture runs with 64-bit floats."""
  with jax.enable_x64(True):
    yield


def rand(key, *shape):
  return jax.random.normal(jax.random.key(key), shape, jnp.float64)


def assert_close(actual, expected, rtol=RTOL, atol=1e-12):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)
