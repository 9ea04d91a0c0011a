"""Layers: one definition per kind, each a forward/backward pair written out from its derivation.

The equations are functions in mlp.backprop (each forward beside its backward). Here are the
layer kinds that a network is built from: each kind is one frozen dataclass whose fields are its
static options (they shape the compiled program) and whose methods are

    parse(token, ctx)      (kind, hyper) from an architecture token ("conv32/3x3/s2"), or None
    init(key, in_shape, dtype)  -> (params, state, out_shape); shapes exclude the batch axis
    hyper                  its traced hyperparameter (dropout rate, batch-norm momentum) or ()
    forward(params, state, hyper, x, train, key) -> (y, cache, new_state)
                           x: the layer's input batch; train=False: the inference form
    backward(params, hyper, cache, dy) -> (dx, dparams): the vector-Jacobian product of forward
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

from mlp import backprop  # noqa: E402


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

  def forward(self, params, state, hyper, x, train, key):
    return backprop.dense_forward(x, params.w, params.b), x, state

  def backward(self, params, hyper, x, dy):
    dx, dw, db = backprop.dense_backward(dy, x, params.w)
    return dx, WB(dw, db)

  def macs(self, in_shape):
    return in_shape[0] * self.units

  def token(self, hyper=None):
    return f"dense{self.units}"


@dataclasses.dataclass(frozen=True)
class ReLU(Layer):
  """a = max(z, 0). Token: ``relu``."""

  kind: ClassVar[str] = "relu"

  def forward(self, params, state, hyper, x, train, key):
    return backprop.relu_forward(x), x, state

  def backward(self, params, hyper, z, dy):
    return backprop.relu_backward(dy, z), ()


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

  def forward(self, params, state, rate, x, train, key):
    if not train:
      return backprop.dropout_inference(x, rate, self.inverted), None, state
    mask = backprop.dropout_mask(key, x.shape, rate, x.dtype)
    return backprop.dropout_forward(x, mask, rate, self.inverted), mask, state

  def backward(self, params, rate, mask, dy):
    if mask is None:  # inference form: a constant scale
      return backprop.dropout_inference(dy, rate, self.inverted), ()
    return backprop.dropout_backward(dy, mask, rate, self.inverted), ()

  def token(self, hyper=None):
    rate = "" if hyper is None else number(hyper)
    return f"dropout{rate}/{'inverted' if self.inverted else 'regular'}"


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
  """(B, H, W, C) -> (B, H W C), row-major like the flat data rows. Token: ``flatten``."""

  kind: ClassVar[str] = "flatten"

  def out_shape(self, in_shape):
    return (math.prod(in_shape),)

  def forward(self, params, state, hyper, x, train, key):
    return x.reshape(x.shape[0], -1), x, state  # x for its (static) shape; XLA keeps no copy

  def backward(self, params, hyper, x, dy):
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
    h, w = (
      backprop.conv_padding(in_shape[a], self.kernel[a], self.stride, self.padding)[2]
      for a in (0, 1)
    )
    return (h, w, self.filters)

  def init(self, key, in_shape, dtype):
    out = self.out_shape(in_shape)
    fan_in = self.kernel[0] * self.kernel[1] * in_shape[2]
    w = _he(key, (*self.kernel, in_shape[2], self.filters), fan_in, dtype)
    return WB(w, jnp.zeros((self.filters,), dtype)), (), out

  def forward(self, params, state, hyper, x, train, key):
    return backprop.conv2d_forward(x, params.w, params.b, self.stride, self.padding), x, state

  def backward(self, params, hyper, x, dy):
    dx, dw, db = backprop.conv2d_backward(dy, x, params.w, self.stride, self.padding)
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
    return (*backprop.pool_out((0, *in_shape), self.window, self.stride), in_shape[2])

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

  def forward(self, params, state, hyper, x, train, key):
    return backprop.maxpool_forward(x, self.window, self.stride), x, state

  def backward(self, params, hyper, x, dy):
    return backprop.maxpool_backward(dy, x, self.window, self.stride), ()


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
  """Mean over (kh, kw) windows, stride s, no padding. Token: ``avgpool<k>[x<k2>][/s<stride>]``."""

  kind: ClassVar[str] = "avgpool"

  def forward(self, params, state, hyper, x, train, key):
    return backprop.avgpool_forward(x, self.window, self.stride), x, state

  def backward(self, params, hyper, x, dy):
    return backprop.avgpool_backward(dy, x.shape, self.window, self.stride), ()


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

  def forward(self, params, state, momentum, x, train, key):
    mean, var = backprop.batchnorm_statistics(x, state, train)
    y, xhat, inv_std = backprop.batchnorm_forward(x, mean, var, params.scale, params.shift)
    if not train:
      return y, _BNInference(xhat, inv_std), state
    running = zip(state, (mean, var), strict=True)
    state = Moments(*(momentum * r + (1 - momentum) * v for r, v in running))
    return y, _BNTraining(xhat, inv_std), state

  def backward(self, params, momentum, cache, dy):
    grad = (
      backprop.batchnorm_backward
      if isinstance(cache, _BNTraining)
      else backprop.batchnorm_inference_backward
    )
    dx, dscale, dshift = grad(dy, cache.xhat, cache.inv_std, params.scale)
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
