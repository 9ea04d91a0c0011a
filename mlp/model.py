"""MLP parameters, forward pass and hand-written backward pass (work in progress)."""

from typing import NamedTuple

import jax


class Dense(NamedTuple):
  """One affine layer y = x w + b; w has shape (fan_in, fan_out), b (fan_out,)."""

  w: jax.Array
  b: jax.Array


Params = tuple[Dense, ...]
