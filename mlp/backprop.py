"""The equations of backpropagation, as functions: each layer's forward beside its backward.

Written out from the derivations (x is (B, n_in) for dense layers and (B, H, W, C) (NHWC) for
images; W is (n_in, n_out) or (kh, kw, C_in, C_out) (HWIO)); every backward is checked against
``jax.grad`` of its forward and finite differences in tests/test_gradients.py and
tests/test_layers.py. mlp.layers wraps them into the layer kinds a network is built from.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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


def targets(labels: jax.Array, classes: int, smoothing: jax.Array | float, dtype) -> jax.Array:
  """Label smoothing (Szegedy et al. 2016): q = (1 - eps) onehot(y) + eps / K; eps = 0: onehot."""
  onehot = jax.nn.one_hot(labels, classes, dtype=dtype)
  return (1 - smoothing) * onehot + smoothing / classes


def nll_loss(
  log_p: jax.Array,
  labels: jax.Array,
  weights: jax.Array | None = None,
  smoothing: jax.Array | float = 0.0,
) -> jax.Array:
  """L = -sum_b w_b sum_i q_{b,i} log p_{b,i} / sum_b w_b  (w = 1: the minibatch mean), with the
  smoothed targets q of :func:`targets` (eps = 0: the NLL -log p_{b, y_b})."""
  picked = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
  # sum_i q_i log p_i = (1 - eps) log p_y + eps mean_i log p_i; where(): eps = 0 is exactly the
  # NLL, also when some log p is -inf (0 * -inf would be nan).
  smoothed = (1 - smoothing) * picked + smoothing * jnp.mean(log_p, axis=-1)
  picked = jnp.where(jnp.asarray(smoothing) > 0, smoothed, picked)
  if weights is None:
    return -jnp.mean(picked)
  return -jnp.sum(weights * picked) / jnp.maximum(jnp.sum(weights), 1)


def _sample_scale(labels: jax.Array, weights: jax.Array | None, dtype) -> jax.Array:
  """w_b / sum w  as a (B, 1) column (1/B when every weight is 1)."""
  if weights is None:
    return jnp.full((labels.shape[0], 1), 1.0 / labels.shape[0], dtype)
  return (weights / jnp.maximum(jnp.sum(weights), 1)).astype(dtype)[:, None]


def nll_backward(
  p: jax.Array,
  labels: jax.Array,
  weights: jax.Array | None = None,
  smoothing: jax.Array | float = 0.0,
) -> jax.Array:
  """dL/dp_{b,i} = -w_b q_{b,i} / (p_{b,i} sum w)  (q = onehot(y) without smoothing).

  p is floored at the dtype's smallest normal number so a saturated wrong prediction gives a large
  finite gradient rather than inf; the floor is far below anything a trained net outputs.
  """
  q = targets(labels, p.shape[-1], smoothing, p.dtype)
  safe_p = jnp.maximum(p, jnp.finfo(p.dtype).tiny)
  return -q / safe_p * _sample_scale(labels, weights, p.dtype)


def softmax_nll_backward(
  p: jax.Array,
  labels: jax.Array,
  weights: jax.Array | None = None,
  smoothing: jax.Array | float = 0.0,
) -> jax.Array:
  """Fused softmax + NLL: dL/dz = (p - q) w / sum w  (= (p - onehot)/B for a plain batch).

  Follows from J^T dp with dp = -q/p:  p_i (dp_i - sum_j p_j dp_j) = -q_i + p_i sum_j q_j
  = p_i - q_i, since the targets sum to 1 (also when smoothed).
  """
  q = targets(labels, p.shape[-1], smoothing, p.dtype)
  return (p - q) * _sample_scale(labels, weights, p.dtype)


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


# ------------------------------------------------------------------------------ convolution

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_padding(size: int, k: int, stride: int, padding: str) -> tuple[int, int, int]:
  """(pad_lo, pad_hi, out_size) along one axis, as XLA/TensorFlow pad ``same`` and ``valid``.

  valid: no padding, out = floor((size - k) / s) + 1.  same: out = ceil(size / s), total padding
  max((out - 1) s + k - size, 0) with the odd pixel at the end.
  """
  if padding == "valid":
    if size < k:
      raise ValueError(f"a {k}-pixel window does not fit in {size} pixels without padding")
    return 0, 0, (size - k) // stride + 1
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2, out


def conv2d_forward(
  x: jax.Array, w: jax.Array, b: jax.Array, stride: int, padding: str
) -> jax.Array:
  """y = x * W + b, a 2-D correlation (as in every deep-learning library) over NHWC images:

      y[b, i, j, o] = sum_{u, v, c} xp[b, s i + u, s j + v, c] W[u, v, c, o] + b[o]

  with stride s and xp the input zero-padded as :func:`conv_padding` says.
  """
  pads = [conv_padding(x.shape[1 + a], w.shape[a], stride, padding)[:2] for a in (0, 1)]
  y = lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=_NHWC)
  return y + b


def conv2d_backward(
  dy: jax.Array, x: jax.Array, w: jax.Array, stride: int, padding: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(dx, dW, db) of :func:`conv2d_forward`. Differentiating its sum:

      dL/dxp[b, p, q, c] = sum_{(i, u): s i + u = p} sum_{(j, v): s j + v = q} sum_o
                           dy[b, i, j, o] W[u, v, c, o]
      dL/dW[u, v, c, o]  = sum_{b, i, j} xp[b, s i + u, s j + v, c] dy[b, i, j, o]
      dL/db[o]           = sum_{b, i, j} dy[b, i, j, o]

  The first is the "full" correlation of dy dilated by s (s - 1 zeros between rows and columns)
  with W rotated by 180 degrees and its channel axes swapped: dy is padded by k - 1 - pad (plus
  the trailing pixels no window reached) and cropped back to x's size. The second is the
  correlation of xp (trimmed to the pixels windows reach) with dy dilated by s, computed as im2col
  matmuls: for each kernel offset (u, v),
  dW[u, v] = view_uv(xp)^T dy over all (b, i, j), where view_uv(xp)[b, i, j] = xp[b, s i + u,
  s j + v]; with few input channels the views are concatenated into one patch matrix first. On
  CPU this is 2-3x faster than XLA's convolution for dW (BUILD.md). db = sum_{b,i,j} dy.
  """
  (kh, kw), s, cin, cout = w.shape[:2], stride, w.shape[2], w.shape[3]
  rows = []
  for a, k in ((0, kh), (1, kw)):
    lo, hi, out = conv_padding(x.shape[1 + a], k, s, padding)
    unreached = x.shape[1 + a] + lo + hi - ((out - 1) * s + k)
    rows.append((lo, hi, unreached, k, out))
  w_rot = jnp.swapaxes(w[::-1, ::-1], 2, 3)
  dx = lax.conv_general_dilated(
    dy,
    w_rot,
    (1, 1),
    [(k - 1 - lo, k - 1 - hi + extra) for lo, hi, extra, k, _ in rows],
    lhs_dilation=(s, s),
    dimension_numbers=_NHWC,
  )
  zero = jnp.zeros((), x.dtype)
  xp = lax.pad(x, zero, [(0, 0, 0), *((lo, hi - e, 0) for lo, hi, e, _, _ in rows), (0, 0, 0)])
  out = (rows[0][4], rows[1][4])
  views = [_window_view(xp, u, v, out, s) for u in range(kh) for v in range(kw)]
  dy2 = dy.reshape(-1, cout)
  if cin < 32:  # one (kh kw C_in, B H W) x (B H W, C_out) matmul
    dw = jnp.concatenate(views, axis=-1).reshape(-1, kh * kw * cin).T @ dy2
  else:  # kh kw matmuls of (C_in, B H W) x (B H W, C_out), no patch matrix in memory
    dw = jnp.stack([view.reshape(-1, cin).T @ dy2 for view in views])
  return dx, dw.reshape(kh, kw, cin, cout), jnp.sum(dy, axis=(0, 1, 2))


# ------------------------------------------------------------------------------------ pooling
#
# A (kh, kw) window with stride s and no padding: out = floor((size - k) / s) + 1 per axis.
# Window offset (u, v) of every output pixel is the strided view x[:, u + s i, v + s j, :]; a
# gradient g at the outputs goes back to those pixels by the transpose of that view, which is
# lax.pad with s - 1 zeros between entries (interior padding) and u / v zeros in front.


def pool_out(x_shape, window: tuple[int, int], stride: int) -> tuple[int, int]:
  return tuple(conv_padding(x_shape[1 + a], window[a], stride, "valid")[2] for a in (0, 1))


def _window_view(x: jax.Array, u: int, v: int, out: tuple[int, int], s: int) -> jax.Array:
  """x[:, u + s i, v + s j, :] for every output pixel (i, j)."""
  return x[:, u : u + (out[0] - 1) * s + 1 : s, v : v + (out[1] - 1) * s + 1 : s, :]


def _window_scatter(g: jax.Array, u: int, v: int, x_shape, s: int) -> jax.Array:
  """Transpose of :func:`_window_view`: g placed at pixels (u + s i, v + s j), zeros elsewhere."""
  (_, oh, ow, _), (_, h, w, _) = g.shape, x_shape
  cfg = [(0, 0, 0), (u, h - u - (oh - 1) * s - 1, s - 1), (v, w - v - (ow - 1) * s - 1, s - 1)]
  return lax.pad(g, jnp.zeros((), g.dtype), cfg + [(0, 0, 0)])


def maxpool_forward(x: jax.Array, window: tuple[int, int], stride: int) -> jax.Array:
  """y[b, i, j, c] = max over the window at (s i, s j) of x[b, ., ., c]."""
  dims, strides = (1, *window, 1), (1, stride, stride, 1)
  return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, "VALID")


def maxpool_argmax(x: jax.Array, window: tuple[int, int], stride: int) -> jax.Array:
  """Index (u kw + v) of the maximum in each window: the first in row-major order on ties."""
  out = pool_out(x.shape, window, stride)
  best, arg = _window_view(x, 0, 0, out, stride), jnp.zeros((), jnp.int32)
  for k in range(1, window[0] * window[1]):
    view = _window_view(x, k // window[1], k % window[1], out, stride)
    later = view > best  # strict: an equal value later in the window does not take over
    best, arg = jnp.where(later, view, best), jnp.where(later, k, arg)
  return jnp.broadcast_to(arg, best.shape)


def maxpool_backward(
  dy: jax.Array, x: jax.Array, window: tuple[int, int], stride: int
) -> jax.Array:
  """dx = sum over windows of dy routed to the window's one maximum (the first on ties).

  dL/dx[p] = sum_{windows w containing p} dy[w] 1[p = argmax_w]; overlapping windows (3x3,
  stride 2) accumulate.
  """
  arg = maxpool_argmax(x, window, stride)
  dx = jnp.zeros_like(x)
  for k in range(window[0] * window[1]):
    g = jnp.where(arg == k, dy, 0)
    dx = dx + _window_scatter(g, k // window[1], k % window[1], x.shape, stride)
  return dx


def avgpool_forward(x: jax.Array, window: tuple[int, int], stride: int) -> jax.Array:
  """y[b, i, j, c] = mean over the window at (s i, s j) of x[b, ., ., c]."""
  dims, strides = (1, *window, 1), (1, stride, stride, 1)
  # A concrete (numpy) start value, so that JAX sees a window sum it can differentiate (tests).
  total = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, dims, strides, "VALID")
  return total / (window[0] * window[1])


def avgpool_backward(dy: jax.Array, x_shape, window: tuple[int, int], stride: int) -> jax.Array:
  """dx[p] = sum over windows containing p of dy / (kh kw)."""
  g = dy / (window[0] * window[1])
  dx = jnp.zeros(x_shape, dy.dtype)
  for u in range(window[0]):
    for v in range(window[1]):
      dx = dx + _window_scatter(g, u, v, x_shape, stride)
  return dx


# -------------------------------------------------------------------------- batch normalisation

BN_EPS = 1e-5


def batchnorm_statistics(x: jax.Array, running, axes: tuple[int, ...], train: bool):
  """(mean, var) to normalise with: the batch's (biased var) in training, the running ones else."""
  if not train:
    return running
  mean = jnp.mean(x, axis=axes)
  return mean, jnp.mean(jnp.square(x - mean), axis=axes)


def batchnorm_forward(x, mean, var, gamma, beta) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(y, xhat, 1 / sqrt(var + eps)):  xhat = (x - mean) / sqrt(var + eps),  y = gamma xhat + beta.

  Per feature (a dense unit, over the batch) or channel (over batch and pixels); mean and var are
  the batch's own in training, the running averages r <- momentum r + (1 - momentum) batch value
  at inference.
  """
  inv_std = lax.rsqrt(var + BN_EPS)
  xhat = (x - mean) * inv_std
  return gamma * xhat + beta, xhat, inv_std


def batchnorm_backward(dy, xhat, inv_std, gamma, axes: tuple[int, ...]):
  """(dx, dgamma, dbeta) of training-form batch norm over the m values of each feature.

  mean and var depend on x, so dL/dx has three terms: direct, through the mean, through the var:

      dxhat = gamma dy,  dx = (1 / sqrt(var + eps)) (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
      dgamma = sum dy xhat,  dbeta = sum dy
  """
  dxhat = dy * gamma
  dx = inv_std * (dxhat - jnp.mean(dxhat, axis=axes) - xhat * jnp.mean(dxhat * xhat, axis=axes))
  return dx, jnp.sum(dy * xhat, axis=axes), jnp.sum(dy, axis=axes)


def batchnorm_inference_backward(dy, xhat, inv_std, gamma, axes: tuple[int, ...]):
  """(dx, dgamma, dbeta) when mean and var are constants (the running averages):
  dx = gamma dy / sqrt(var + eps), the first term alone."""
  return dy * gamma * inv_std, jnp.sum(dy * xhat, axis=axes), jnp.sum(dy, axis=axes)


# ================================================================================ layer kinds
