"""Layers: one definition per kind, each a forward/backward pair written out from its derivation.

The first half holds the equations as functions (forward, backward). The second half holds the
layer kinds that a network is built from: each kind is one frozen dataclass whose fields are its
static options (they shape the compiled program) and whose methods are

    parse(token, ctx)      (kind, hyper) from an architecture token ("conv32/3x3/s2"), or None
    init(key, in_shape, dtype)  -> (params, state, out_shape); shapes exclude the batch axis
    hyper                  its traced hyperparameter (dropout rate, batch-norm momentum) or ()
    forward(p, s, h, x, train, key) -> (y, cache, new_state); train=False: inference form
    backward(p, h, cache, dy)       -> (dx, dparams), the vector-Jacobian product of forward
    macs(in_shape)         multiply-adds of one example's forward pass (cost estimates)

A new kind is one more dataclass in :data:`KINDS`. Notation: x is (B, n_in) for dense layers and
(B, H, W, C) (NHWC) for images; W is (n_in, n_out) or (kh, kw, C_in, C_out) (HWIO).
"""

import dataclasses
import math
import re
from typing import Any, ClassVar, NamedTuple

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


def _pool_out(x_shape, window: tuple[int, int], stride: int) -> tuple[int, int]:
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
  out = _pool_out(x.shape, window, stride)
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


class WB(NamedTuple):
  """Weights (L2-decayed: every field named ``w`` is) and bias of a dense or conv layer."""

  w: jax.Array
  b: jax.Array


class ScaleShift(NamedTuple):
  """Batch norm's learnable gamma (scale) and beta (shift), one per feature or channel."""

  scale: jax.Array
  shift: jax.Array


class _BNTraining(NamedTuple):  # cache of a training-form pass (batch statistics)
  xhat: jax.Array
  inv_std: jax.Array


class _BNInference(NamedTuple):  # cache of an inference-form pass (running statistics)
  xhat: jax.Array
  inv_std: jax.Array


class Moments(NamedTuple):
  """Batch norm's running mean and variance: state, never touched by the optimizer or L2."""

  mean: jax.Array
  var: jax.Array


def _he(key, shape, fan_in, dtype) -> jax.Array:
  """He initialisation N(0, 2 / fan_in)."""
  return jax.random.normal(key, shape, dtype) * jnp.sqrt(2.0 / fan_in).astype(dtype)


def _match(pattern: str, token: str) -> re.Match | None:
  return re.fullmatch(pattern, token)


def number(value: float) -> str:
  """A rate as written in tokens: the shortest decimal that reads back as the same float64, never
  in exponent form (1e-05 -> 0.00001), so that it parses back exactly."""
  return np.format_float_positional(float(value), trim="-")


def _positive(token: str, **values: int) -> None:
  for name, value in values.items():
    if value < 1:
      raise ValueError(f"{token!r}: {name} must be at least 1, got {value}")


class ParseContext(NamedTuple):
  """What a token may leave out: the class count (``dense``) and the dropout form (``dropout``)."""

  num_classes: int
  dropout: str = "regular"  # "regular" | "inverted"


class Layer:
  """Base of the layer kinds: defaults for kinds without params, state, hyperparameter or key."""

  kind: ClassVar[str]
  stochastic: ClassVar[bool] = False  # needs a PRNG key per training step
  random_init: ClassVar[bool] = False  # needs a PRNG key at init
  has_params: ClassVar[bool] = False  # has trainable parameters (what train.freeze may name)
  hyper: ClassVar[Any] = ()  # default traced hyperparameter (value parsed from the token)

  @classmethod
  def parse(cls, token: str, ctx: "ParseContext"):
    """(layer, hyperparameter) if ``token`` is this kind's, else None; by default the token is
    the kind's name alone (``relu``, ``flatten``)."""
    return (cls(), ()) if token == cls.kind else None

  def init(self, key: jax.Array | None, in_shape: tuple[int, ...], dtype) -> tuple:
    """(params, state, out_shape) for inputs of ``in_shape`` (without the batch axis)."""
    return (), (), self.out_shape(in_shape)

  def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape for inputs of ``in_shape``; ValueError if the kind cannot take them."""
    return in_shape

  def macs(self, in_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one example's forward pass (0 for elementwise kinds)."""
    return 0

  def check_hyper(self, value: Any) -> None:
    """ValueError if ``value`` is not a valid hyperparameter for this kind."""

  def token(self, hyper: Any = None) -> str:
    """The architecture token; with ``hyper`` it includes the value and parses back to both."""
    return self.kind


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
  """y = x W + b on flat (B, n_in) inputs. Token: ``dense<units>``; ``dense`` = one per class."""

  units: int
  kind: ClassVar[str] = "dense"
  has_params: ClassVar[bool] = True
  random_init: ClassVar[bool] = True

  @classmethod
  def parse(cls, token: str, ctx: "ParseContext"):
    if m := _match(r"dense(\d*)", token):
      _positive(token, units=int(m[1] or 1))
      return cls(int(m[1]) if m[1] else ctx.num_classes), ()
    return None

  def out_shape(self, in_shape):
    if len(in_shape) != 1:
      raise ValueError(
        f"dense{self.units} needs flat inputs, got {in_shape}: add flatten before it"
      )
    return (self.units,)

  def init(self, key, in_shape, dtype):
    self.out_shape(in_shape)
    w = _he(key, (in_shape[0], self.units), in_shape[0], dtype)
    return WB(w, jnp.zeros((self.units,), dtype)), (), (self.units,)

  def forward(self, p, s, h, x, train, key):
    return dense_forward(x, p.w, p.b), x, s

  def backward(self, p, h, x, dy):
    dx, dw, db = dense_backward(dy, x, p.w)
    return dx, WB(dw, db)

  def macs(self, in_shape):
    return in_shape[0] * self.units

  def token(self, hyper=None):
    return f"dense{self.units}"


@dataclasses.dataclass(frozen=True)
class ReLU(Layer):
  """a = max(z, 0). Token: ``relu``."""

  kind: ClassVar[str] = "relu"

  def forward(self, p, s, h, x, train, key):
    return relu_forward(x), x, s

  def backward(self, p, h, z, dy):
    return relu_backward(dy, z), ()


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
  """Dropout with keep-mask m ~ Bernoulli(1 - rate); the rate is a traced hyperparameter.

  Token: ``dropout<rate>`` with the form from the config (``model.dropout``), or explicitly
  ``dropout<rate>/regular`` / ``dropout<rate>/inverted``.
  """

  inverted: bool
  kind: ClassVar[str] = "dropout"
  stochastic: ClassVar[bool] = True
  hyper: ClassVar[float] = 0.0

  @classmethod
  def parse(cls, token: str, ctx: "ParseContext"):
    if m := _match(r"dropout(\d+(?:\.\d*)?|\.\d+)?(?:/(regular|inverted))?", token):
      return cls((m[2] or ctx.dropout) == "inverted"), float(m[1] or 0.0)
    return None

  def check_hyper(self, value):
    if not 0 <= value < 1:
      raise ValueError(f"dropout rates must be in [0, 1), got {value}")

  def forward(self, p, s, rate, x, train, key):
    if not train:
      return dropout_inference(x, rate, self.inverted), None, s
    mask = dropout_mask(key, x.shape, rate, x.dtype)
    return dropout_forward(x, mask, rate, self.inverted), mask, s

  def backward(self, p, rate, mask, dy):
    if mask is None:  # inference form: a constant scale
      return dropout_inference(dy, rate, self.inverted), ()
    return dropout_backward(dy, mask, rate, self.inverted), ()

  def token(self, hyper=None):
    rate = "" if hyper is None else number(hyper)
    return f"dropout{rate}/{'inverted' if self.inverted else 'regular'}"


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
  """(B, H, W, C) -> (B, H W C), row-major like the flat data rows. Token: ``flatten``."""

  kind: ClassVar[str] = "flatten"

  def out_shape(self, in_shape):
    return (math.prod(in_shape),)

  def forward(self, p, s, h, x, train, key):
    return x.reshape(x.shape[0], -1), x, s  # x for its (static) shape; XLA keeps no copy

  def backward(self, p, h, x, dy):
    return dy.reshape(x.shape), ()


@dataclasses.dataclass(frozen=True)
class Conv2D(Layer):
  """2-D correlation over NHWC images, HWIO kernel, bias per output channel.

  Token: ``conv<filters>[/<kh>x<kw>][/s<stride>][/same|/valid]``, default 3x3, stride 1, same.
  """

  filters: int
  kernel: tuple[int, int] = (3, 3)
  stride: int = 1
  padding: str = "same"
  kind: ClassVar[str] = "conv"
  has_params: ClassVar[bool] = True
  random_init: ClassVar[bool] = True

  @classmethod
  def parse(cls, token: str, ctx: "ParseContext"):
    if m := _match(r"conv(\d+)(?:/(\d+)x(\d+))?(?:/s(\d+))?(?:/(same|valid))?", token):
      kernel = (int(m[2]), int(m[3])) if m[2] else (3, 3)
      stride = int(m[4] or 1)
      _positive(token, filters=int(m[1]), kernel=min(kernel), stride=stride)
      return cls(int(m[1]), kernel, stride, m[5] or "same"), ()
    return None

  def out_shape(self, in_shape):
    if len(in_shape) != 3:
      raise ValueError(f"{self.token()} needs (H, W, C) images, got {in_shape}")
    h, w = (conv_padding(in_shape[a], self.kernel[a], self.stride, self.padding)[2] for a in (0, 1))
    return (h, w, self.filters)

  def init(self, key, in_shape, dtype):
    out = self.out_shape(in_shape)
    fan_in = self.kernel[0] * self.kernel[1] * in_shape[2]
    w = _he(key, (*self.kernel, in_shape[2], self.filters), fan_in, dtype)
    return WB(w, jnp.zeros((self.filters,), dtype)), (), out

  def forward(self, p, s, h, x, train, key):
    return conv2d_forward(x, p.w, p.b, self.stride, self.padding), x, s

  def backward(self, p, h, x, dy):
    dx, dw, db = conv2d_backward(dy, x, p.w, self.stride, self.padding)
    return dx, WB(dw, db)

  def macs(self, in_shape):
    oh, ow, f = self.out_shape(in_shape)
    return oh * ow * f * self.kernel[0] * self.kernel[1] * in_shape[2]

  def token(self, hyper=None):
    kh, kw = self.kernel
    return f"conv{self.filters}/{kh}x{kw}/s{self.stride}/{self.padding}"


@dataclasses.dataclass(frozen=True)
class _Pool(Layer):
  window: tuple[int, int]
  stride: int

  @classmethod
  def parse(cls, token: str, ctx: "ParseContext"):
    if m := _match(cls.kind + r"(\d+)(?:x(\d+))?(?:/s(\d+))?", token):
      window = (int(m[1]), int(m[2] or m[1]))
      stride = int(m[3]) if m[3] else window[0]
      _positive(token, window=min(window), stride=stride)
      return cls(window, stride), ()
    return None

  def out_shape(self, in_shape):
    if len(in_shape) != 3:
      raise ValueError(f"{self.token()} needs (H, W, C) images, got {in_shape}")
    return (*_pool_out((0, *in_shape), self.window, self.stride), in_shape[2])

  def macs(self, in_shape):
    return math.prod(self.out_shape(in_shape)) * self.window[0] * self.window[1]

  def token(self, hyper=None):
    return f"{self.kind}{self.window[0]}x{self.window[1]}/s{self.stride}"


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
  """Max over (kh, kw) windows, stride s, no padding (windows may overlap: 3x3 stride 2).

  Token: ``maxpool<k>[x<k2>][/s<stride>]``; the stride defaults to the window's height.
  """

  kind: ClassVar[str] = "maxpool"

  def forward(self, p, s, h, x, train, key):
    return maxpool_forward(x, self.window, self.stride), x, s

  def backward(self, p, h, x, dy):
    return maxpool_backward(dy, x, self.window, self.stride), ()


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
  """Mean over (kh, kw) windows, stride s, no padding. Token: ``avgpool<k>[x<k2>][/s<stride>]``."""

  kind: ClassVar[str] = "avgpool"

  def forward(self, p, s, h, x, train, key):
    return avgpool_forward(x, self.window, self.stride), x, s

  def backward(self, p, h, x, dy):
    return avgpool_backward(dy, x.shape, self.window, self.stride), ()


@dataclasses.dataclass(frozen=True)
class BatchNorm(Layer):
  """Batch normalisation per feature (flat inputs) or per channel (images), learnable scale/shift.

  Training normalises with the batch statistics and updates the running averages with the traced
  ``momentum``; inference uses the running averages. Token: ``bn`` or ``bn/m<momentum>``
  (default 0.9).
  """

  kind: ClassVar[str] = "bn"
  has_params: ClassVar[bool] = True
  hyper: ClassVar[float] = 0.9

  @classmethod
  def parse(cls, token: str, ctx: "ParseContext"):
    if m := _match(r"bn(?:/m(\d+(?:\.\d*)?|\.\d+))?", token):
      return cls(), float(m[1]) if m[1] else cls.hyper
    return None

  def check_hyper(self, value):
    if not 0 <= value < 1:
      raise ValueError(f"batch-norm momentum must be in [0, 1), got {value}")

  def init(self, key, in_shape, dtype):
    c = in_shape[-1]
    one, zero = jnp.ones((c,), dtype), jnp.zeros((c,), dtype)
    return ScaleShift(one, zero), Moments(zero, one), in_shape

  def forward(self, p, s, momentum, x, train, key):
    axes = tuple(range(x.ndim - 1))
    mean, var = batchnorm_statistics(x, s, axes, train)
    y, xhat, inv_std = batchnorm_forward(x, mean, var, p.scale, p.shift)
    if not train:
      return y, _BNInference(xhat, inv_std), s
    s = Moments(*(momentum * r + (1 - momentum) * v for r, v in zip(s, (mean, var), strict=True)))
    return y, _BNTraining(xhat, inv_std), s

  def backward(self, p, momentum, cache, dy):
    axes = tuple(range(dy.ndim - 1))
    grad = batchnorm_backward if isinstance(cache, _BNTraining) else batchnorm_inference_backward
    dx, dscale, dshift = grad(dy, cache.xhat, cache.inv_std, p.scale, axes)
    return dx, ScaleShift(dscale, dshift)

  def macs(self, in_shape):
    return 2 * math.prod(in_shape)

  def token(self, hyper=None):
    return "bn" if hyper is None else f"bn/m{number(hyper)}"


KINDS: tuple[type[Layer], ...] = (
  Dense,
  ReLU,
  Dropout,
  Flatten,
  Conv2D,
  MaxPool,
  AvgPool,
  BatchNorm,
)
