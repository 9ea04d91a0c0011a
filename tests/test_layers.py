"""Convolution, pooling, flatten and batch norm: hand-written backward passes against jax.grad
(float64, tight tolerance) and finite differences, a whole CNN end to end, and planted bugs that
must fail these checks. jax.grad / jax.vjp never appear in mlp/.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_vjp

from mlp import backprop, layers, model
from tests.gradcheck import FD_EPS, FD_TOL, assert_close, float64, rand  # noqa: F401

FD = dict(atol=FD_TOL, rtol=FD_TOL, eps=FD_EPS)


def check_layer(layer, in_shape, batch, *, hyper=(), train=True, seed=0, fd=True):
  """The layer's backward against jax.vjp of its forward, and by finite differences, w.r.t. the
  input and every param (state and hyperparameters held fixed)."""
  params, state, out_shape = layer.init(jax.random.key(seed), in_shape, jnp.float64)
  # Random (not initial) values, so that zero biases or unit scales hide nothing.
  params = jax.tree.map(lambda p: rand(seed + 7, *p.shape) * 0.5 + 0.1, params)
  state = jax.tree.map(lambda s: jnp.abs(rand(seed + 8, *s.shape)) + 0.5, state)
  x = rand(seed + 1, batch, *in_shape)
  dy = rand(seed + 2, batch, *out_shape)

  def f(x, params):
    return layer.forward(params, state, hyper, x, train, jax.random.key(seed + 3))[0]

  y, cache, _ = layer.forward(params, state, hyper, x, train, jax.random.key(seed + 3))
  assert y.shape == (batch, *out_shape)
  hand = layer.backward(params, hyper, cache, dy)
  _, vjp = jax.vjp(f, x, params)
  assert_close(hand, vjp(dy))
  if fd:

    def f_vjp(x, params):
      y, cache, _ = layer.forward(params, state, hyper, x, train, jax.random.key(seed + 3))
      return y, lambda ct: layer.backward(params, hyper, cache, ct)

    check_vjp(f, f_vjp, (x, params), **FD)


# ---------------------------------------------------------------------------- convolution

CONV_CASES = [
  # (H, W, C_in, filters, kernel, stride, padding, batch)
  (7, 6, 1, 2, (3, 3), 1, "same", 2),
  (7, 6, 3, 2, (3, 3), 2, "same", 2),
  (7, 7, 3, 4, (3, 3), 2, "valid", 1),
  (9, 8, 1, 3, (5, 5), 2, "valid", 3),
  (8, 9, 3, 2, (2, 3), 1, "valid", 1),
  (5, 5, 3, 2, (1, 1), 1, "same", 2),
  (6, 7, 1, 2, (4, 4), 2, "same", 1),
  (10, 11, 3, 2, (3, 3), 3, "valid", 2),  # rows no window reaches at the end
  (6, 6, 3, 2, (1, 1), 2, "same", 2),  # ... and with `same` padding (the input is cropped)
  # Eight or more input channels: dW as a convolution over x^T (batch last, in blocks of k)
  (6, 5, 8, 16, (3, 3), 1, "same", 16),  # k = 16
  (8, 8, 8, 16, (3, 3), 2, "same", 4),  # k = 4, dy dilated by the stride
  (9, 8, 12, 4, (3, 3), 2, "valid", 6),  # k = 2
  (10, 11, 8, 3, (3, 3), 3, "valid", 3),  # k = 1 (a plain transpose), unreached rows
  (7, 7, 16, 8, (5, 5), 2, "valid", 2),
]


@pytest.mark.parametrize("h,w,c,filters,kernel,stride,padding,batch", CONV_CASES)
def test_conv2d_backward(h, w, c, filters, kernel, stride, padding, batch):
  check_layer(layers.Conv2D(filters, kernel, stride, padding), (h, w, c), batch)


def test_conv2d_output_shapes_follow_same_and_valid():
  assert layers.Conv2D(8, (3, 3), 2, "same").out_shape((48, 47, 1)) == (24, 24, 8)
  assert layers.Conv2D(8, (5, 5), 1, "valid").out_shape((48, 48, 1)) == (44, 44, 8)
  with pytest.raises(ValueError, match="does not fit"):
    layers.Conv2D(8, (5, 5), 1, "valid").out_shape((3, 3, 1))


# -------------------------------------------------------------------------------- pooling

POOL_CASES = [
  # (H, W, C, window, stride, batch)
  (6, 6, 1, (2, 2), 2, 2),  # windows side by side: the backward pass is a select
  (7, 5, 2, (2, 2), 2, 2),  # ... with a row and a column no window reaches
  (7, 7, 3, (3, 3), 2, 2),  # overlapping windows
  (11, 9, 3, (5, 5), 2, 1),  # the study's first pooling, odd sizes
  (8, 5, 1, (3, 2), 1, 3),
  (9, 9, 3, (3, 3), 3, 1),
]


@pytest.mark.parametrize("h,w,c,window,stride,batch", POOL_CASES)
@pytest.mark.parametrize("kind", [layers.MaxPool, layers.AvgPool])
def test_pool_backward(kind, h, w, c, window, stride, batch):
  check_layer(kind(window, stride), (h, w, c), batch)


def _reduce_window_max(x, window, stride):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, stride, stride, 1), "VALID")


def check_maxpool_ties():
  """Ties (ReLU zeros, repeated values): each window's gradient goes to one maximum, the first in
  row-major order, as XLA's select-and-scatter does; the gradient's total is preserved."""
  x = jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 7, 7, 2)), jnp.float64)
  window, stride = (3, 3), 2
  dy = rand(1, 2, 3, 3, 2)
  hand = backprop.maxpool_backward(dy, x, window, stride)
  np.testing.assert_array_equal(
    backprop.maxpool_forward(x, window, stride), _reduce_window_max(x, window, stride)
  )
  # The reference routing: the VJP of XLA's reduce-window max (jnp.maximum's would split ties).
  _, vjp = jax.vjp(lambda x: _reduce_window_max(x, window, stride), x)
  assert_close(hand, vjp(dy)[0])
  np.testing.assert_allclose(float(hand.sum()), float(dy.sum()), rtol=1e-12)
  one = jnp.zeros((1, 3, 3, 1)).at[0, 1, 1, 0].set(1.0).at[0, 2, 2, 0].set(1.0)
  routed = backprop.maxpool_backward(jnp.ones((1, 1, 1, 1)), one, (3, 3), 1)
  assert routed[0, :, :, 0].tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_maxpool_routes_ties_to_the_first_maximum():
  check_maxpool_ties()


def test_batch_last_is_the_transpose():
  for batch in (1, 2, 3, 6, 16, 48):
    x = rand(batch, batch, 3, 2, 5)
    np.testing.assert_array_equal(backprop.batch_last(x), jnp.transpose(x, (3, 1, 2, 0)))


def test_channel_sums_as_a_matmul_equal_the_sums(monkeypatch):
  a = rand(0, 64, 5, 7, 3)
  plain = backprop.channel_sums(a)
  monkeypatch.setattr(backprop, "SUMS_AS_MATMUL_MIN_ROWS", 0)
  assert_close(backprop.channel_sums(a), plain)
  assert_close(plain, jnp.sum(a, axis=(0, 1, 2)))


def test_flatten_backward():
  check_layer(layers.Flatten(), (3, 4, 2), 2)


# ------------------------------------------------------------------------------ batch norm


@pytest.mark.parametrize("in_shape,batch", [((5,), 7), ((5,), 2), ((4, 3, 3), 1), ((5, 4, 1), 3)])
def test_batchnorm_training_backward(in_shape, batch):
  check_layer(layers.BatchNorm(), in_shape, batch, hyper=0.9)


def test_batchnorm_batch_of_one_dense_gives_zero_input_gradient():
  """One value per feature: xhat = 0, so y = beta whatever x is, and dx = 0 exactly."""
  check_layer(layers.BatchNorm(), (5,), 1, hyper=0.9)


@pytest.mark.parametrize("in_shape", [(5,), (4, 3, 2)])
def test_batchnorm_inference_backward(in_shape):
  check_layer(layers.BatchNorm(), in_shape, 3, hyper=0.9, train=False)


def test_batchnorm_statistics_and_running_averages():
  bn = layers.BatchNorm()
  params, state, _ = bn.init(None, (4, 4, 3), jnp.float64)
  x = rand(0, 5, 4, 4, 3) * 3 + 2
  y, _, new = bn.forward(params, state, 0.8, x, True, None)
  # Training normalises each channel over batch and pixels with the batch's own statistics ...
  np.testing.assert_allclose(y.mean((0, 1, 2)), 0, atol=1e-12)
  np.testing.assert_allclose(y.var((0, 1, 2)), 1, rtol=1e-4)
  # ... and moves the running averages towards them by (1 - momentum).
  assert_close(new.mean, 0.2 * x.mean((0, 1, 2)))
  assert_close(new.var, 0.8 + 0.2 * x.var((0, 1, 2)))
  # Inference uses the running averages, and leaves them alone.
  y_inf, _, same = bn.forward(params, new, 0.8, x, False, None)
  assert_close(y_inf, (x - new.mean) / jnp.sqrt(new.var + backprop.BN_EPS))
  assert_close(same, new)


# ------------------------------------------------------------------------- a whole CNN

CNN = (
  "conv3/3x3/s1/same bn relu maxpool3/s2 conv4/3x3/s2/valid relu avgpool2/s1 flatten "
  "dropout0.3 dense6 bn relu dense"
)


def setup_cnn(batch, seed=0, dropout="inverted"):
  net, hyper = model.parse(CNN, (15, 14, 2), 5, dropout=dropout)
  params, state = model.init(jax.random.key(seed), net, jnp.float64)
  params = jax.tree.map(lambda p: p + 0.1 * rand(seed + 9, *p.shape), params)
  x = rand(seed + 1, batch, 15 * 14 * 2)  # flat rows, as the data sets hold them
  y = jax.random.randint(jax.random.key(seed + 2), (batch,), 0, 5)
  return net, params, state, x, y, hyper, dict(train=True, key=jax.random.key(seed + 3))


# The fast paths of mlp.backprop (the first convolution tap by tap, dW as a convolution over x^T,
# per-channel sums as matrix products, side-by-side max-pool windows) on a small network.
FAST_CNN = "conv8 maxpool2 bn relu conv16/3x3/s2 bn relu maxpool2/s1 flatten dense"


def fast_paths(monkeypatch, on: bool = True):
  """Every fast path of mlp.backprop taken (on) or none (off), whatever the sizes."""
  monkeypatch.setattr(backprop, "CONV_TAPS", 9 if on else 0)
  monkeypatch.setattr(backprop, "CONV_DW_MIN_CHANNELS", 8 if on else 10**9)
  monkeypatch.setattr(backprop, "SUMS_AS_MATMUL_MIN_ROWS", 0 if on else 10**9)


def setup_fast_cnn(batch, seed=0):
  net, hyper = model.parse(FAST_CNN, (12, 11, 1), 4)
  params, state = model.init(jax.random.key(seed), net, jnp.float64)
  params = jax.tree.map(lambda p: p + 0.1 * rand(seed + 9, *p.shape), params)
  x = rand(seed + 1, batch, 12 * 11)
  y = jax.random.randint(jax.random.key(seed + 2), (batch,), 0, 4)
  return net, params, state, x, y, hyper, dict(train=True, key=jax.random.key(seed + 3))


@pytest.mark.parametrize("on", [True, False])
def test_cnn_fast_paths_match_autodiff_and_finite_differences(on, monkeypatch):
  fast_paths(monkeypatch, on)
  check_cnn_autodiff(*setup_fast_cnn(8), l2=0.2)
  check_cnn_fd(*setup_fast_cnn(4, seed=5))


def check_cnn_autodiff(net, params, state, x, y, hyper, kwargs, softmax_grad="fused", l2=0.0):
  _, cache, _ = model.forward(net, params, state, x, hyper, **kwargs)
  grads = model.backward(net, params, cache, y, hyper, softmax_grad=softmax_grad, l2=l2)
  expected = jax.grad(model.loss, argnums=1)(net, params, state, x, y, hyper, l2=l2, **kwargs)
  assert_close(grads, expected, rtol=1e-9, atol=1e-11)


def check_cnn_fd(net, params, state, x, y, hyper, kwargs):
  def f(params):
    return model.loss(net, params, state, x, y, hyper, l2=0.1, **kwargs)

  def f_vjp(params):
    _, cache, _ = model.forward(net, params, state, x, hyper, **kwargs)
    g = model.backward(net, params, cache, y, hyper, l2=0.1)
    return f(params), lambda ct: (jax.tree.map(lambda a: ct * a, g),)

  check_vjp(f, f_vjp, (params,), **FD)


@pytest.mark.parametrize("softmax_grad", ["fused", "jacobian"])
@pytest.mark.parametrize("batch", [1, 4])
def test_cnn_backward_matches_autodiff(batch, softmax_grad):
  check_cnn_autodiff(*setup_cnn(batch), softmax_grad=softmax_grad, l2=0.3)


@pytest.mark.parametrize("batch", [1, 4])
def test_cnn_backward_finite_differences(batch):
  check_cnn_fd(*setup_cnn(batch, seed=4))


def test_cnn_inference_form_and_state():
  """Inference: no key needed, state unchanged; training returns updated running statistics."""
  net, params, state, x, y, hyper, kwargs = setup_cnn(4)
  _, _, same = model.forward(net, params, state, x, hyper)
  assert_close(same, state)
  _, _, new = model.forward(net, params, state, x, hyper, **kwargs)
  bn = [i for i, layer in enumerate(net.layers) if layer.kind == "bn"]
  assert all(not np.allclose(new[i].mean, state[i].mean) for i in bn)
  check_cnn_autodiff(net, params, state, x, y, hyper, {})  # inference-form backward too


def test_architecture_strings_round_trip_and_errors():
  net, hyper = model.parse(CNN, (15, 14, 2), 5, dropout="inverted")
  again = model.parse(net.describe(hyper), (15, 14, 2), 5)
  assert again == (net, hyper)
  assert net.shapes()[-1] == (5,) and net.macs() > 0
  with pytest.raises(ValueError, match="unknown layer 'conv'"):
    model.parse("conv relu dense", (8, 8, 1), 3)
  with pytest.raises(ValueError, match="add flatten before it"):
    model.parse("conv4 relu dense", (8, 8, 1), 3)
  with pytest.raises(ValueError, match="one unit per class"):
    model.parse("flatten dense4", (8, 8, 1), 3)
  with pytest.raises(ValueError, match="dropout rates must be in"):
    model.parse("flatten dropout1.5 dense", (8, 8, 1), 3)
  for bad, what in [("conv4/s0", "stride"), ("maxpool0", "window"), ("dense0", "units")]:
    with pytest.raises(ValueError, match=f"{what} must be at least 1"):
      model.parse(f"{bad} flatten dense", (8, 8, 1), 3)
  # Rates round-trip exactly, however small: no exponent form in tokens.
  arch = model.mlp_architecture((4,), (3,), (1e-5, 0.31415926535))
  assert arch == "dropout0.00001 dense3 relu dropout0.31415926535 dense"
  assert model.parse(arch, (4,), 2)[1] == (1e-5, (), (), 0.31415926535, ())


# -------------------------------------------------------------- planted wrong gradients fail


def _conv_dx(dy, x, w, stride, padding, rotate=True, dilate=True):
  """conv2d_backward's dx with one of its two ingredients optionally left out (for mutants)."""
  kh, kw = w.shape[:2]
  pads = []
  for a, k in ((0, kh), (1, kw)):
    lo, hi, out = backprop.conv_padding(x.shape[1 + a], k, stride, padding)
    s = stride if dilate else 1
    extra = x.shape[1 + a] + lo + hi - ((out - 1) * s + k)
    pads.append((k - 1 - lo, k - 1 - hi + extra))
  kernel = jnp.swapaxes(w[::-1, ::-1] if rotate else w, 2, 3)
  s = stride if dilate else 1
  dims = ("NHWC", "HWIO", "NHWC")
  return lax.conv_general_dilated(
    dy, kernel, (1, 1), pads, lhs_dilation=(s, s), dimension_numbers=dims
  )


def _with_dx(**kw):
  def backward(dy, x, w, stride, padding):
    _, dw, db = ORIGINAL["conv2d_backward"](dy, x, w, stride, padding)
    dx = _conv_dx(dy, x, w, stride, padding, **kw)
    return dx[:, : x.shape[1], : x.shape[2]], dw, db

  return backward


def _maxpool_all_ties(dy, x, window, stride):
  y = backprop.maxpool_forward(x, window, stride)
  out = y.shape[1:3]
  dx = jnp.zeros_like(x)
  for u in range(window[0]):
    for v in range(window[1]):
      hit = backprop._window_view(x, u, v, out, stride) == y
      dx = dx + backprop._window_scatter(jnp.where(hit, dy, 0), u, v, x.shape, stride)
  return dx


def _bn_no_mean_term(dy, xhat, inv_std, gamma):
  axes = tuple(range(dy.ndim - 1))
  dxhat = dy * gamma
  dx = inv_std * (dxhat - xhat * jnp.mean(dxhat * xhat, axis=axes))
  return dx, jnp.sum(dy * xhat, axis=axes), jnp.sum(dy, axis=axes)


def _batch_last_reversed(x):  # x^T with the images in reverse order: dW pairs wrong images
  return jnp.transpose(x, (3, 1, 2, 0))[..., ::-1]


def _sums_but_the_last_row(a):
  return jnp.sum(a.reshape(-1, a.shape[-1])[:-1], axis=0)


ORIGINAL = {name: getattr(backprop, name) for name in ("conv2d_backward",)}

MUTANTS = {
  # name: (function in mlp.backprop to replace, wrong replacement, checks that must catch it)
  "conv kernel not rotated": ("conv2d_backward", _with_dx(rotate=False), "conv"),
  "conv stride ignored in dx": ("conv2d_backward", _with_dx(dilate=False), "conv"),
  "maxpool gradient to every tied maximum": ("maxpool_backward", _maxpool_all_ties, "ties"),
  "conv dW over x^T with the images reversed": ("batch_last", _batch_last_reversed, "fast"),
  "per-channel sums without the last row": ("channel_sums", _sums_but_the_last_row, "fast"),
  "batch norm without the mean-of-gradient term": ("batchnorm_backward", _bn_no_mean_term, "bn"),
  "batch norm with running statistics in training": (
    "batchnorm_statistics",
    lambda x, running, train: running,
    "bn",
  ),
}


def _fails(check, *args, **kwargs) -> bool:
  try:
    check(*args, **kwargs)
  except (AssertionError, TypeError, ValueError):  # wrong values, or wrong shapes
    return True
  return False


def _checks(target: str):
  """(name, check) pairs: the layer-level check of the target kind, then the whole CNN."""
  layer = {
    "conv": lambda **kw: check_layer(layers.Conv2D(2, (3, 3), 2, "same"), (7, 6, 3), 2, **kw),
    "bn": lambda **kw: check_layer(layers.BatchNorm(), (4, 3, 2), 3, hyper=0.9, **kw),
  }
  if target == "ties":  # not differentiable at ties: autodiff (XLA's routing) is the reference
    return {"autodiff": check_maxpool_ties}
  if target == "fast":  # the fast paths, taken whatever the sizes
    return {
      "autodiff": lambda: check_cnn_autodiff(*setup_fast_cnn(8)),
      "finite differences": lambda: check_cnn_fd(*setup_fast_cnn(4, seed=5)),
    }
  return {
    "autodiff": lambda: (layer[target](fd=False), check_cnn_autodiff(*setup_cnn(4))),
    "finite differences": lambda: check_cnn_fd(*setup_cnn(4, seed=4)),
  }


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_planted_wrong_gradient_fails_the_checks(name, monkeypatch):
  attr, wrong, target = MUTANTS[name]
  fast_paths(monkeypatch, target == "fast")
  monkeypatch.setattr(backprop, attr, wrong)
  caught = {check: _fails(fn) for check, fn in _checks(target).items()}
  assert all(caught.values()), f"mutant {name!r} slipped through: {caught}"


def test_correct_gradients_pass_the_same_checks(monkeypatch):
  """The harness itself is sound: unmutated code passes every check used above."""
  fast_paths(monkeypatch, True)
  for target in ("conv", "bn", "ties", "fast"):
    for check, fn in _checks(target).items():
      assert not _fails(fn), (target, check)
