"""Every hand-written backward against jax.grad (float64, tight tolerance) and finite differences.

jax.grad / jax.vjp appear only here, under tests/, to check mlp's explicit gradients.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_vjp

from mlp import layers, model

RTOL = 1e-10  # autodiff vs hand-written, float64
FD_TOL = 1e-6  # finite differences, float64
FD_EPS = 1e-6  # central-difference step: small, so a step rarely crosses a ReLU kink


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def rand(key, *shape):
  return jax.random.normal(jax.random.key(key), shape, jnp.float64)


def assert_close(actual, expected, rtol=RTOL, atol=1e-12):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def hand_vjp(forward, backward):
  """Adapt (forward, backward) into the (out, vjp_fn) form that check_vjp wants."""

  def f_vjp(*args):
    return forward(*args), lambda ct: backward(ct, *args)

  return f_vjp


# ------------------------------------------------------------------------------------ layers


@pytest.mark.parametrize("batch", [1, 50])
def test_dense_backward(batch):
  x, w, b, dy = rand(0, batch, 7), rand(1, 7, 5), rand(2, 5), rand(3, batch, 5)
  _, vjp = jax.vjp(layers.dense_forward, x, w, b)
  assert_close(layers.dense_backward(dy, x, w), vjp(dy))
  check_vjp(
    layers.dense_forward,
    hand_vjp(layers.dense_forward, lambda ct, x, w, b: layers.dense_backward(ct, x, w)),
    (x, w, b),
    atol=FD_TOL,
    rtol=FD_TOL,
    eps=FD_EPS,
  )


@pytest.mark.parametrize("batch", [1, 50])
def test_relu_backward(batch):
  z, da = rand(0, batch, 9), rand(1, batch, 9)
  _, vjp = jax.vjp(layers.relu_forward, z)
  assert_close(layers.relu_backward(da, z), vjp(da)[0])
  check_vjp(
    layers.relu_forward,
    hand_vjp(layers.relu_forward, lambda ct, z: (layers.relu_backward(ct, z),)),
    (z,),
    atol=FD_TOL,
    rtol=FD_TOL,
    eps=FD_EPS,
  )


def test_softmax_jacobian_is_diag_p_minus_ppT():
  z = rand(0, 4, 6)
  p = layers.softmax_forward(z)
  jac = layers.softmax_jacobian(p)
  assert jac.shape == (4, 6, 6)
  for i in range(4):
    assert_close(jac[i], jnp.diag(p[i]) - jnp.outer(p[i], p[i]))
    assert_close(jac[i], jax.jacobian(layers.softmax_forward)(z[i]))


@pytest.mark.parametrize("batch", [1, 50])
def test_softmax_backward_full_jacobian(batch):
  z, dp = rand(0, batch, 6), rand(1, batch, 6)
  p = layers.softmax_forward(z)
  _, vjp = jax.vjp(layers.softmax_forward, z)
  assert_close(layers.softmax_backward(dp, p), vjp(dp)[0])
  check_vjp(
    layers.softmax_forward,
    hand_vjp(
      layers.softmax_forward,
      lambda ct, z: (layers.softmax_backward(ct, layers.softmax_forward(z)),),
    ),
    (z,),
    atol=FD_TOL,
    rtol=FD_TOL,
    eps=FD_EPS,
  )


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch", [1, 50])
def test_nll_backward_wrt_probs(batch, weighted):
  p = layers.softmax_forward(rand(0, batch, 6))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 6)
  w = (jnp.arange(batch) % 3 != 2).astype(jnp.float64).at[0].set(1.0) if weighted else None

  def loss_of_p(p):
    return layers.nll_loss(jnp.log(p), y, w)

  assert_close(layers.nll_backward(p, y, w), jax.grad(loss_of_p)(p))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch", [1, 50])
def test_fused_softmax_nll_equals_jacobian_path_and_autodiff(batch, weighted):
  z = rand(0, batch, 6)
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 6)
  w = (jnp.arange(batch) % 3 != 2).astype(jnp.float64).at[0].set(1.0) if weighted else None
  p = layers.softmax_forward(z)
  fused = layers.softmax_nll_backward(p, y, w)
  through_jacobian = layers.softmax_backward(layers.nll_backward(p, y, w), p)
  assert_close(fused, through_jacobian)

  def loss_of_z(z):
    return layers.nll_loss(layers.log_softmax(z), y, w)

  assert_close(fused, jax.grad(loss_of_z)(z))
  check_vjp(
    loss_of_z,
    hand_vjp(
      loss_of_z, lambda ct, z: (ct * layers.softmax_nll_backward(layers.softmax_forward(z), y, w),)
    ),
    (z,),
    atol=FD_TOL,
    rtol=FD_TOL,
    eps=FD_EPS,
  )


@pytest.mark.parametrize("inverted", [False, True])
@pytest.mark.parametrize("batch", [1, 50])
def test_dropout_backward(batch, inverted):
  x, dy = rand(0, batch, 8), rand(1, batch, 8)
  rate = jnp.asarray(0.3)
  mask = layers.dropout_mask(jax.random.key(2), x.shape, rate, x.dtype)
  fwd = functools.partial(layers.dropout_forward, mask=mask, rate=rate, inverted=inverted)
  _, vjp = jax.vjp(fwd, x)
  assert_close(layers.dropout_backward(dy, mask, rate, inverted), vjp(dy)[0])
  check_vjp(
    fwd,
    hand_vjp(fwd, lambda ct, x: (layers.dropout_backward(ct, mask, rate, inverted),)),
    (x,),
    atol=FD_TOL,
    rtol=FD_TOL,
    eps=FD_EPS,
  )


@pytest.mark.parametrize("inverted", [False, True])
def test_dropout_forms_have_the_same_expected_activation(inverted):
  """E[train output] = inference output: (1-r) x for regular, x for inverted."""
  rate = jnp.asarray(0.4)
  x = rand(0, 1, 5)
  # Exactly: E[m] = 1 - r, so E[m s x] = (1 - r) s x.
  expected_exact = (1 - rate) * layers.dropout_train_scale(rate, inverted) * x
  assert_close(expected_exact, layers.dropout_inference(x, rate, inverted))
  # And by Monte Carlo over 200k masks (standard error ~ 0.0011 relative).
  masks = layers.dropout_mask(jax.random.key(3), (200_000, 5), rate, x.dtype)
  mc = jnp.mean(layers.dropout_forward(jnp.broadcast_to(x, masks.shape), masks, rate, inverted), 0)
  np.testing.assert_allclose(
    mc, layers.dropout_inference(x, rate, inverted)[0], rtol=0.01, atol=0.01
  )
  # Both forms agree with each other at inference up to the documented factor (1 - r).
  assert_close(
    layers.dropout_inference(x, rate, True) * (1 - rate), layers.dropout_inference(x, rate, False)
  )


# ------------------------------------------------------------------------------------- model

ARCHS = {1: (11, 7, 4), 2: (11, 9, 7, 4), 3: (11, 9, 8, 7, 4)}


def setup_model(hidden, batch, dropout, seed=0):
  sizes = ARCHS[hidden]
  params = model.init(jax.random.key(seed), sizes, jnp.float64)
  # Non-zero biases so that bias gradients and ReLU kinks are exercised.
  params = tuple(
    model.Dense(layer.w, 0.1 * rand(seed + 10 + i, layer.b.shape[0]))
    for i, layer in enumerate(params)
  )
  x = rand(seed + 1, batch, sizes[0])
  y = jax.random.randint(jax.random.key(seed + 2), (batch,), 0, sizes[-1])
  kwargs = {}
  if dropout != "none":
    rates = jnp.linspace(0.5, 0.0, len(params))  # e.g. (0.5, 0.25, 0.0): last input unmasked
    masks = model.dropout_masks(jax.random.key(seed + 3), params, batch, rates)
    kwargs = dict(rates=rates, masks=masks, inverted=dropout == "inverted", train=True)
  return params, x, y, kwargs


CASES = [
  (hidden, batch, dropout, l2, softmax_grad)
  for hidden in (1, 2, 3)
  for batch in (1, 50)
  for dropout in ("none", "regular", "inverted")
  for l2 in (0.0, 0.3)
  for softmax_grad in ("fused", "jacobian")
  if not (softmax_grad == "jacobian" and l2 == 0.3 and dropout == "regular")  # keep the grid lean
]


@pytest.mark.parametrize("hidden,batch,dropout,l2,softmax_grad", CASES)
def test_model_backward_matches_autodiff(hidden, batch, dropout, l2, softmax_grad):
  params, x, y, kwargs = setup_model(hidden, batch, dropout)
  _, cache = model.forward(params, x, **kwargs)
  grads = model.backward(params, cache, y, l2=jnp.asarray(l2), softmax_grad=softmax_grad)
  expected = jax.grad(model.loss)(params, x, y, l2=l2, **kwargs)
  assert_close(grads, expected, rtol=1e-9)


def check_model_fd(params, x, y, kwargs, l2=0.0, weights=None, softmax_grad="fused"):
  """Finite-difference check of model.backward as the VJP of model.loss w.r.t. params."""

  def f(params):
    return model.loss(params, x, y, l2=l2, weights=weights, **kwargs)

  def f_vjp(params):
    _, cache = model.forward(params, x, **kwargs)
    g = model.backward(
      params, cache, y, weights=weights, l2=jnp.asarray(l2), softmax_grad=softmax_grad
    )
    return f(params), lambda ct: (jax.tree.map(lambda a: ct * a, g),)

  check_vjp(f, f_vjp, (params,), atol=FD_TOL, rtol=FD_TOL, eps=FD_EPS)


@pytest.mark.parametrize("hidden", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 50])
@pytest.mark.parametrize("dropout", ["none", "regular", "inverted"])
def test_model_backward_finite_differences(hidden, batch, dropout):
  params, x, y, kwargs = setup_model(hidden, batch, dropout, seed=5)
  check_model_fd(params, x, y, kwargs, l2=0.2)


def test_model_backward_with_sample_weights_partial_batch():
  """Padding rows (weight 0) contribute nothing: same grads as the batch without them."""
  params, x, y, _ = setup_model(2, 10, "none")
  w = jnp.asarray([1.0] * 7 + [0.0] * 3)
  _, cache = model.forward(params, x)
  padded = model.backward(params, cache, y, weights=w)
  _, cache7 = model.forward(params, x[:7])
  assert_close(padded, model.backward(params, cache7, y[:7]))
  assert_close(padded, jax.grad(model.loss)(params, x, y, weights=w))
  check_model_fd(params, x, y, {}, weights=w)


@pytest.mark.parametrize("inverted", [False, True])
def test_model_backward_inference_dropout(inverted):
  """Backward through the inference form of dropout (a constant scale) also matches autodiff."""
  params, x, y, _ = setup_model(2, 5, "none")
  kwargs = dict(rates=jnp.asarray([0.5, 0.5, 0.0]), inverted=inverted)
  _, cache = model.forward(params, x, **kwargs)
  assert_close(model.backward(params, cache, y), jax.grad(model.loss)(params, x, y, **kwargs))


def test_l2_penalty_and_grad():
  params, *_ = setup_model(2, 1, "none")
  l2 = jnp.asarray(0.7)
  expected = 0.35 * sum(float(jnp.sum(layer.w**2)) for layer in params)
  np.testing.assert_allclose(model.l2_penalty(params, l2), expected, rtol=1e-12)
  assert_close(model.l2_grad(params, l2), jax.grad(model.l2_penalty)(params, l2))
  assert all(float(jnp.abs(g.b).max()) == 0 for g in model.l2_grad(params, l2))


def test_init_is_he_and_deterministic():
  sizes = (400, 300, 6)
  a = model.init(jax.random.key(7), sizes)
  b = model.init(jax.random.key(7), sizes)
  c = model.init(jax.random.key(8), sizes)
  assert_close(a, b, rtol=0, atol=0)
  assert not np.allclose(a[0].w, c[0].w)
  assert model.sizes_of(a) == sizes
  for layer, fan_in in zip(a, sizes[:-1], strict=True):
    np.testing.assert_allclose(float(jnp.std(layer.w)), np.sqrt(2 / fan_in), rtol=0.05)
    assert float(jnp.abs(layer.b).max()) == 0


# -------------------------------------------------------------- planted wrong gradients fail


MUTANTS = {
  # name: (function in mlp.layers to replace, wrong replacement)
  "dense dW missing transpose": (
    "dense_backward",
    lambda dy, x, w: (dy @ w.T, dy.T @ x, dy.sum(0)),
  ),
  "dense dx missing transpose": ("dense_backward", lambda dy, x, w: (dy @ w, x.T @ dy, dy.sum(0))),
  "dense dW rows shuffled": (
    "dense_backward",
    lambda dy, x, w: (dy @ w.T, (x.T @ dy)[::-1], dy.sum(0)),
  ),
  "dense db mean not sum": ("dense_backward", lambda dy, x, w: (dy @ w.T, x.T @ dy, dy.mean(0))),
  "relu mask dropped": ("relu_backward", lambda da, z: da),
  "relu mask inverted": ("relu_backward", lambda da, z: jnp.where(z < 0, da, 0)),
  "fused softmax sign": (
    "softmax_nll_backward",
    lambda p, y, w=None: -(p - jax.nn.one_hot(y, p.shape[-1])) / p.shape[0],
  ),
  "fused softmax no 1/B": (
    "softmax_nll_backward",
    lambda p, y, w=None: p - jax.nn.one_hot(y, p.shape[-1]),
  ),
  "jacobian + p p^T": (
    "softmax_jacobian",
    lambda p: jax.vmap(jnp.diag)(p) + p[:, :, None] * p[:, None, :],
  ),
  "dropout mask dropped": (
    "dropout_backward",
    lambda dy, m, r, inv: dy * layers.dropout_train_scale(r, inv),
  ),
  "dropout scale dropped": ("dropout_backward", lambda dy, m, r, inv: dy * m),
}


def _autodiff_check(params, x, y, kwargs, softmax_grad):
  _, cache = model.forward(params, x, **kwargs)
  grads = model.backward(params, cache, y, softmax_grad=softmax_grad)
  assert_close(grads, jax.grad(model.loss)(params, x, y, **kwargs), rtol=1e-9)


def _fails(check, *args) -> bool:
  try:
    check(*args)
  except (AssertionError, TypeError, ValueError):  # wrong values, or wrong shapes
    return True
  return False


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_planted_wrong_gradient_fails_the_checks(name, monkeypatch):
  """Each planted bug must be caught by the autodiff check and by the finite-difference check."""
  attr, wrong = MUTANTS[name]
  monkeypatch.setattr(layers, attr, wrong)
  softmax_grad = "jacobian" if attr == "softmax_jacobian" else "fused"
  caught = {"autodiff": False, "finite differences": False}
  for dropout in ("inverted", "regular"):
    args = (*setup_model(2, 50, dropout, seed=11),)
    caught["autodiff"] |= _fails(_autodiff_check, *args, softmax_grad)
    caught["finite differences"] |= _fails(
      lambda *a: check_model_fd(*a, softmax_grad=softmax_grad), *args
    )
  assert all(caught.values()), f"mutant {name!r} slipped through: {caught}"


def test_correct_gradient_passes_the_same_checks():
  """The mutation harness itself is sound: unmutated code passes both checks."""
  for dropout in ("inverted", "regular"):
    args = (*setup_model(2, 50, dropout, seed=11),)
    assert not _fails(_autodiff_check, *args, "fused")
    assert not _fails(_autodiff_check, *args, "jacobian")
    assert not _fails(check_model_fd, *args)
