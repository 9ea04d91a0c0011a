"""Forward/backward pairs, one per derivation. No autodiff: every backward is written out.

Notation (row-major minibatches of B samples): x is (B, n_in), W is (n_in, n_out), b is (n_out,).
Each ``*_backward`` takes the upstream gradient dL/d(output) and returns dL/d(inputs); it is the
vector-Jacobian product of its forward, written from the equation quoted in its docstring.
"""

import jax
import jax.numpy as jnp

# --------------------------------------------------------------------------------------- dense


def dense_forward(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """Affine map  y = x W + b."""
  return x @ w + b


def dense_backward(
  dy: jax.Array, x: jax.Array, w: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Gradients of y = x W + b as (dx, dW, db):  dx = dy W^T,  dW = x^T dy,  db = sum_b dy."""
  return dy @ w.T, x.T @ dy, jnp.sum(dy, axis=0)


# ---------------------------------------------------------------------------------------- relu


def relu_forward(z: jax.Array) -> jax.Array:
  """a = max(z, 0)."""
  return jnp.maximum(z, 0)


def relu_backward(da: jax.Array, z: jax.Array) -> jax.Array:
  """dz = da * 1[z > 0]  (the subgradient at z = 0 is taken as 0)."""
  return jnp.where(z > 0, da, 0)


# ------------------------------------------------------------------------------------- softmax


def softmax_forward(z: jax.Array) -> jax.Array:
  """p_i = exp(z_i - max z) / sum_j exp(z_j - max z)  (shift-invariant, overflow-safe)."""
  e = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
  return e / jnp.sum(e, axis=-1, keepdims=True)


def log_softmax(z: jax.Array) -> jax.Array:
  """log p_i = z_i - log sum_j exp z_j, computed stably (used for the loss value only)."""
  m = jnp.max(z, axis=-1, keepdims=True)
  return z - m - jnp.log(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True))


def softmax_jacobian(p: jax.Array) -> jax.Array:
  """Per-sample Jacobian of the softmax, HAR study Eq. 1-2.

  dp_i/dz_j = p_i (delta_ij - p_j), i.e.  J = diag(p) - p p^T.  Returns (B, C, C).
  """
  return jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]


def softmax_backward(dp: jax.Array, p: jax.Array) -> jax.Array:
  """dz = J^T dp through the full Jacobian of Eq. 1-2 (J is symmetric, so J^T = J)."""
  return jnp.einsum("bji,bj->bi", softmax_jacobian(p), dp)


# -------------------------------------------------------------- negative log-likelihood (NLL)


def nll_loss(log_p: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """L = -sum_b w_b log p_{b, y_b} / sum_b w_b  (w = 1: the minibatch mean)."""
  picked = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
  if weights is None:
    return -jnp.mean(picked)
  return -jnp.sum(weights * picked) / jnp.maximum(jnp.sum(weights), 1)


def _sample_scale(labels: jax.Array, weights: jax.Array | None, dtype) -> jax.Array:
  """w_b / sum w  as a (B, 1) column (1/B when every weight is 1)."""
  if weights is None:
    return jnp.full((labels.shape[0], 1), 1.0 / labels.shape[0], dtype)
  return (weights / jnp.maximum(jnp.sum(weights), 1)).astype(dtype)[:, None]


def nll_backward(p: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """dL/dp_{b,i} = -w_b 1[i = y_b] / (p_{b,i} sum w).

  p is floored at the dtype's smallest normal number so a saturated wrong prediction gives a large
  finite gradient rather than inf; the floor is far below anything a trained net outputs.
  """
  onehot = jax.nn.one_hot(labels, p.shape[-1], dtype=p.dtype)
  safe_p = jnp.maximum(p, jnp.finfo(p.dtype).tiny)
  return -onehot / safe_p * _sample_scale(labels, weights, p.dtype)


def softmax_nll_backward(
  p: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
  """Fused softmax + NLL: dL/dz = (p - onehot(y)) w / sum w  (= (p - onehot)/B for a plain batch).

  Follows from J^T dp with dp = -onehot/p:  p_i (dp_i - sum_j p_j dp_j) = p_i - 1[i = y].
  """
  onehot = jax.nn.one_hot(labels, p.shape[-1], dtype=p.dtype)
  return (p - onehot) * _sample_scale(labels, weights, p.dtype)


# ------------------------------------------------------------------------------------- dropout
#
# Both forms multiply by a keep-mask m ~ Bernoulli(1 - rate) during training. They differ in where
# the 1/(1-rate) correction goes, so that the expected activation matches between train and test:
#   regular:  train y = m x,               inference y = (1 - rate) x
#   inverted: train y = m x / (1 - rate),  inference y = x


def dropout_mask(key: jax.Array, shape: tuple[int, ...], rate: jax.Array, dtype) -> jax.Array:
  """Keep-mask m ~ Bernoulli(1 - rate), as 0/1 values of ``dtype``; rate may be a traced array."""
  return jax.random.bernoulli(key, 1.0 - rate, shape).astype(dtype)


def dropout_train_scale(rate: jax.Array, inverted: bool) -> jax.Array:
  """Training-time factor on kept units: 1/(1 - rate) for inverted dropout, 1 for regular."""
  return 1.0 / (1.0 - rate) if inverted else jnp.ones_like(rate)


def dropout_forward(x: jax.Array, mask: jax.Array, rate: jax.Array, inverted: bool) -> jax.Array:
  """Training: y = x * m * s  with s from :func:`dropout_train_scale`."""
  return x * (mask * dropout_train_scale(rate, inverted))


def dropout_backward(dy: jax.Array, mask: jax.Array, rate: jax.Array, inverted: bool) -> jax.Array:
  """dx = dy * m * s: the same mask and scale as the forward pass."""
  return dy * (mask * dropout_train_scale(rate, inverted))


def dropout_inference(x: jax.Array, rate: jax.Array, inverted: bool) -> jax.Array:
  """Inference: y = (1 - rate) x for regular dropout, y = x for inverted dropout."""
  return x if inverted else x * (1.0 - rate)
