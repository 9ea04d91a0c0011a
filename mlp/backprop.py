"""The equations of backpropagation, as functions: each layer's forward beside its backward.

Written out from the derivations (x is (B, n_in) for dense layers and (B, H, W, C) (NHWC) for
images; W is (n_in, n_out) or (kh, kw, C_in, C_out) (HWIO)); every backward is checked against
``jax.grad`` of its forward and finite differences in tests/test_gradients.py and
tests/test_layers.py. mlp.layers wraps them into the layer kinds a network is built from.
"""

import functools

import jax
import jax.numpy as jnp
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
CONV_DW_MIN_CHANNELS = 8  # below it the patch matrix is small and one matmul is faster
CONV_TAPS = 9  # forward passes with at most this many taps (kh kw C_in) are written tap by tap
SUMS_AS_MATMUL_MIN_ROWS = 4096  # channel_sums over fewer rows is a plain reduction


def _one(x: jax.Array) -> jax.Array:
  """1, computed from x at run time (NaN when x[0] is not finite, as everything else then is)."""
  return 1 + 0 * x.reshape(-1)[0]


def materialize(x: jax.Array) -> jax.Array:
  """x read through a gather of its rows (indices known at run time only)."""
  rows = jnp.arange(x.shape[0]) * _one(x).astype(jnp.int32)
  return jnp.take(x, rows, axis=0)


def batch_last(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (C, H, W, B), exactly (for finite values).

  A transpose that moves single elements runs at 1-2 GB/s on XLA:CPU, and XLA fuses x's
  producers into it (reading them strided too). So the batch is split into blocks of k and each
  block (k, H W C) transposed by a batched product with the k x k identity (a matmul reads its
  operands as they are in memory), which leaves (B / k, H W C, k); moving those k-element rows
  into place is fast.
  """
  b, h, w, c = x.shape
  k = next((k for k in (16, 8, 4, 2) if b % k == 0), 1)
  if k == 1:
    return jnp.transpose(x, (3, 1, 2, 0))
  # The identity scaled by a 1 known at run time only: a constant identity, XLA would rewrite
  # the product back into the slow transpose.
  eye = jnp.broadcast_to(jnp.eye(k, dtype=x.dtype) * _one(x), (b // k, k, k))
  dims = (((1,), (1,)), ((0,), (0,)))  # contract the block axis, batch over blocks
  blocks = lax.dot_general(x.reshape(b // k, k, h, w, c), eye, dims)  # (B / k, H, W, C, k)
  return jnp.transpose(blocks, (3, 1, 2, 0, 4)).reshape(c, h, w, b)


def channel_sums(a: jax.Array) -> jax.Array:
  """sum over every axis but the last (per channel over batch and pixels, per feature over the
  batch), as the matrix product 1^T A with A the (rows, channels) view of ``a``.

  XLA:CPU runs a reduction over the leading axes at a few GB/s, a matrix product at the memory's
  speed; a block of 8 rows of ones makes it a matrix-matrix product (faster still than 1^T A).
  """
  a2 = a.reshape(-1, a.shape[-1])
  if a2.shape[0] < SUMS_AS_MATMUL_MIN_ROWS:  # small: a plain reduction (dense layers)
    return jnp.sum(a2, axis=0)
  return (jnp.ones((8, a2.shape[0]), a.dtype) @ a2)[0]


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

  with stride s and xp the input zero-padded as :func:`conv_padding` says. With few input
  channels (kh kw C_in <= CONV_TAPS) the sum is written out tap by tap, one elementwise pass
  (XLA:CPU's convolution is slow with one input channel).
  """
  (kh, kw, cin, _), s = w.shape, stride
  pads = [conv_padding(x.shape[1 + a], w.shape[a], stride, padding) for a in (0, 1)]
  if kh * kw * cin > CONV_TAPS:
    y = lax.conv_general_dilated(x, w, (s, s), [p[:2] for p in pads], dimension_numbers=_NHWC)
    return y + b
  xp = lax.pad(
    x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi, _ in pads), (0, 0, 0)]
  )
  out = (pads[0][2], pads[1][2])
  y = b
  for u in range(kh):
    for v in range(kw):
      view = _window_view(xp, u, v, out, s)
      for c in range(cin):
        y = y + view[..., c : c + 1] * w[u, v, c]
  return y


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
  pads = [(lo, hi - e) for lo, hi, e, _, _ in rows]
  if cin >= CONV_DW_MIN_CHANNELS:
    # The correlation of xp with dy, the batch as the contracted axis, in the NHWC / HWIO form
    # XLA:CPU runs fast: images x^T (C_in, H, W, B), kernel dy as (H, W, B, C_out) (dilated by
    # the stride), out (C_in, kh, kw, C_out).
    dw = lax.conv_general_dilated(
      batch_last(x),
      jnp.transpose(dy, (1, 2, 0, 3)),
      (1, 1),
      pads,
      rhs_dilation=(s, s),
      dimension_numbers=_NHWC,
    )
    dw = jnp.transpose(dw, (1, 2, 0, 3))
  else:  # one (kh kw C_in, B H W) x (B H W, C_out) matmul over the patch matrix
    xp = lax.pad(
      x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)]
    )
    out = (rows[0][4], rows[1][4])
    views = [_window_view(xp, u, v, out, s) for u in range(kh) for v in range(kw)]
    # Patches stacked along a new leading axis (contiguous copies), not side by side.
    patches = jnp.stack([view[..., c] for view in views for c in range(cin)]).reshape(
      kh * kw * cin, -1
    )
    dw = patches @ dy.reshape(-1, cout)
  return dx, dw.reshape(kh, kw, cin, cout), channel_sums(dy)


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


def _window_views(x: jax.Array, window: tuple[int, int], stride: int) -> list[jax.Array]:
  """Every window offset's strided view, in row-major order of (u, v)."""
  out = pool_out(x.shape, window, stride)
  return [_window_view(x, u, v, out, stride) for u in range(window[0]) for v in range(window[1])]


def _window_scatter(g: jax.Array, u: int, v: int, x_shape, s: int) -> jax.Array:
  """Transpose of :func:`_window_view`: g placed at pixels (u + s i, v + s j), zeros elsewhere."""
  (_, oh, ow, _), (_, h, w, _) = g.shape, x_shape
  cfg = [(0, 0, 0), (u, h - u - (oh - 1) * s - 1, s - 1), (v, w - v - (ow - 1) * s - 1, s - 1)]
  return lax.pad(g, jnp.zeros((), g.dtype), cfg + [(0, 0, 0)])


def _tiles(window: tuple[int, int], stride: int) -> bool:
  """Windows side by side (stride = window): every pixel lies in at most one window."""
  return window[0] == window[1] == stride


def _untile(tiled: jax.Array, x_shape) -> jax.Array:
  """The pixels the windows cover, (B, oh kh, ow kw, C), padded with zeros to x's size (the
  trailing rows and columns no window reaches)."""
  pad = [(0, 0, 0), (0, x_shape[1] - tiled.shape[1], 0), (0, x_shape[2] - tiled.shape[2], 0)]
  return lax.pad(tiled, jnp.zeros((), tiled.dtype), pad + [(0, 0, 0)])


def maxpool_forward(x: jax.Array, window: tuple[int, int], stride: int) -> jax.Array:
  """y[b, i, j, c] = max over the window at (s i, s j) of x[b, ., ., c], as the maximum of the
  kh kw strided views: one elementwise pass (XLA:CPU's reduce-window is several times slower)."""
  return materialize(functools.reduce(jnp.maximum, _window_views(x, window, stride)))


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
  if _tiles(window, stride):  # each pixel in one window at most: a select, no sum
    kh, kw = window
    offset = (jnp.arange(kh)[:, None] * kw + jnp.arange(kw)).reshape(1, 1, kh, 1, kw, 1)
    picked = jnp.where(arg[:, :, None, :, None] == offset, dy[:, :, None, :, None], 0)
    return _untile(picked.reshape(dy.shape[0], dy.shape[1] * kh, dy.shape[2] * kw, -1), x.shape)
  dx = jnp.zeros_like(x)
  for k in range(window[0] * window[1]):
    g = jnp.where(arg == k, dy, 0)
    dx = dx + _window_scatter(g, k // window[1], k % window[1], x.shape, stride)
  return dx


def avgpool_forward(x: jax.Array, window: tuple[int, int], stride: int) -> jax.Array:
  """y[b, i, j, c] = mean over the window at (s i, s j) of x[b, ., ., c] (a sum of views)."""
  return functools.reduce(jnp.add, _window_views(x, window, stride)) / (window[0] * window[1])


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


def batchnorm_statistics(x: jax.Array, running, train: bool):
  """(mean, var) to normalise with: the batch's (biased var, over every axis but the channels)
  in training, the running ones else."""
  if not train:
    return running
  m = x.size // x.shape[-1]
  mean = channel_sums(x) / m
  return mean, channel_sums(jnp.square(x - mean)) / m


def batchnorm_forward(x, mean, var, gamma, beta) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(y, xhat, 1 / sqrt(var + eps)):  xhat = (x - mean) / sqrt(var + eps),  y = gamma xhat + beta.

  Per feature (a dense unit, over the batch) or channel (over batch and pixels); mean and var are
  the batch's own in training, the running averages r <- momentum r + (1 - momentum) batch value
  at inference.
  """
  inv_std = lax.rsqrt(var + BN_EPS)
  xhat = (x - mean) * inv_std
  return gamma * xhat + beta, xhat, inv_std


def batchnorm_backward(dy, xhat, inv_std, gamma):
  """(dx, dgamma, dbeta) of training-form batch norm over the m values of each feature.

  mean and var depend on x, so dL/dx has three terms: direct, through the mean, through the var:

      dxhat = gamma dy,  dx = (1 / sqrt(var + eps)) (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
      dgamma = sum dy xhat,  dbeta = sum dy

  The two means are the parameter gradients over m, so it is computed as
  dx = gamma inv_std (dy - dbeta / m - xhat dgamma / m): two per-channel sums, not four.
  """
  m = dy.size // dy.shape[-1]
  dgamma, dbeta = channel_sums(dy * xhat), channel_sums(dy)
  return (gamma * inv_std) * (dy - dbeta / m - xhat * (dgamma / m)), dgamma, dbeta


def batchnorm_inference_backward(dy, xhat, inv_std, gamma):
  """(dx, dgamma, dbeta) when mean and var are constants (the running averages):
  dx = gamma dy / sqrt(var + eps), the first term alone."""
  return dy * gamma * inv_std, channel_sums(dy * xhat), channel_sums(dy)


# ================================================================================ layer kinds
