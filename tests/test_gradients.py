"""Every hand-written backward against jax.grad (float64, tight tolerance) and finite differences.

jax.grad / jax.vjp appear only here, under tests/, to check mlp's explicit gradients.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_vjp

from mlp import backprop, layers, model
from tests.gradcheck import FD_EPS, FD_TOL, assert_close, float64, rand  # noqa: F401


def hand_vjp(forward, backward):
  """Adapt (forward, backward) into the (out, vjp_fn) form that check_vjp wants."""

  def f_vjp(*args):
    return forward(*args), lambda ct: backward(ct, *args)

  return f_vjp


# ------------------------------------------------------------------------------------ layers


@pytest.mark.parametrize("batch", [1, 50])
def test_dense_backward(batch):
  x, w, b, dy = rand(0, batch, 7), rand(1, 7, 5), rand(2, 5), rand(3, batch, 5)
  _, vjp = jax.vjp(backprop.dense_forward, x, w, b)
  assert_close(backprop.dense_backward(dy, x, w), vjp(dy))
  check_vjp(
    backprop.dense_forward,
    hand_vjp(backprop.dense_forward, lambda ct, x, w, b: backprop.dense_backward(ct, x, w)),
    (x, w, b),
    atol=FD_TOL,
    rtol=FD_TOL,
    eps=FD_EPS,
  )


@pytest.mark.parametrize("batch", [1, 50])
def test_relu_backward(batch):
  z, da = rand(0, batch, 9), rand(1, batch, 9)
  _, vjp = jax.vjp(backprop.relu_forward, z)
  assert_close(backprop.relu_backward(da, z), vjp(da)[0])
  check_vjp(
    backprop.relu_forward,
    hand_vjp(backprop.relu_forward, lambda ct, z: (backprop.relu_backward(ct, z),)),
    (z,),
    atol=FD_TOL,
    rtol=FD_TOL,
    eps=FD_EPS,
  )


def test_softmax_jacobian_is_diag_p_minus_ppT():
  z = rand(0, 4, 6)
  p = backprop.softmax_forward(z)
  jac = backprop.softmax_jacobian(p)
  assert jac.shape == (4, 6, 6)
  for i in range(4):
    assert_close(jac[i], jnp.diag(p[i]) - jnp.outer(p[i], p[i]))
    assert_close(jac[i], jax.jacobian(backprop.softmax_forward)(z[i]))


@pytest.mark.parametrize("batch", [1, 50])
def test_softmax_backward_full_jacobian(batch):
  z, dp = rand(0, batch, 6), rand(1, batch, 6)
  p = backprop.softmax_forward(z)
  _, vjp = jax.vjp(backprop.softmax_forward, z)
  assert_close(backprop.softmax_backward(dp, p), vjp(dp)[0])
  check_vjp(
    backprop.softmax_forward,
    hand_vjp(
      backprop.softmax_forward,
      lambda ct, z: (backprop.softmax_backward(ct, backprop.softmax_forward(z)),),
    ),
    (z,),
    atol=FD_TOL,
    rtol=FD_TOL,
    eps=FD_EPS,
  )


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch", [1, 50])
def test_nll_backward_wrt_probs(batch, weighted, smoothing):
  p = backprop.softmax_forward(rand(0, batch, 6))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 6)
  w = (jnp.arange(batch) % 3 != 2).astype(jnp.float64).at[0].set(1.0) if weighted else None

  def loss_of_p(p):
    return backprop.nll_loss(jnp.log(p), y, w, smoothing)

  assert_close(backprop.nll_backward(p, y, w, smoothing), jax.grad(loss_of_p)(p))


def test_smoothed_loss_is_cross_entropy_with_smoothed_targets():
  log_p = backprop.log_softmax(rand(0, 4, 5))
  y = jnp.asarray([0, 3, 4, 1])
  q = np.full((4, 5), 0.1 / 5) + 0.9 * np.eye(5)[np.asarray(y)]
  expected = -np.mean(np.sum(q * np.asarray(log_p), axis=1))
  assert_close(backprop.nll_loss(log_p, y, smoothing=0.1), expected)
  assert_close(backprop.nll_loss(log_p, y, smoothing=0.0), -np.mean(np.asarray(log_p)[range(4), y]))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch", [1, 50])
def test_fused_softmax_nll_equals_jacobian_path_and_autodiff(batch, weighted, smoothing):
  z = rand(0, batch, 6)
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 6)
  w = (jnp.arange(batch) % 3 != 2).astype(jnp.float64).at[0].set(1.0) if weighted else None
  p = backprop.softmax_forward(z)
  fused = backprop.softmax_nll_backward(p, y, w, smoothing)
  through_jacobian = backprop.softmax_backward(backprop.nll_backward(p, y, w, smoothing), p)
  assert_close(fused, through_jacobian)

  def loss_of_z(z):
    return backprop.nll_loss(backprop.log_softmax(z), y, w, smoothing)

  assert_close(fused, jax.grad(loss_of_z)(z))
  check_vjp(
    loss_of_z,
    hand_vjp(
      loss_of_z,
      lambda ct, z: (
        ct * backprop.softmax_nll_backward(backprop.softmax_forward(z), y, w, smoothing),
      ),
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
  mask = backprop.dropout_mask(jax.random.key(2), x.shape, rate, x.dtype)
  fwd = functools.partial(backprop.dropout_forward, mask=mask, rate=rate, inverted=inverted)
  _, vjp = jax.vjp(fwd, x)
  assert_close(backprop.dropout_backward(dy, mask, rate, inverted), vjp(dy)[0])
  check_vjp(
    fwd,
    hand_vjp(fwd, lambda ct, x: (backprop.dropout_backward(ct, mask, rate, inverted),)),
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
  expected_exact = (1 - rate) * backprop.dropout_train_scale(rate, inverted) * x
  assert_close(expected_exact, backprop.dropout_inference(x, rate, inverted))
  # And by Monte Carlo over 200k masks (standard error ~ 0.0011 relative).
  masks = backprop.dropout_mask(jax.random.key(3), (200_000, 5), rate, x.dtype)
  mc = jnp.mean(
    backprop.dropout_forward(jnp.broadcast_to(x, masks.shape), masks, rate, inverted), 0
  )
  np.testing.assert_allclose(
    mc, backprop.dropout_inference(x, rate, inverted)[0], rtol=0.01, atol=0.01
  )
  # Both forms agree with each other at inference up to the documented factor (1 - r).
  assert_close(
    backprop.dropout_inference(x, rate, True) * (1 - rate),
    backprop.dropout_inference(x, rate, False),
  )


# ------------------------------------------------------------------------------------- model

HIDDEN = {1: (7,), 2: (9, 7), 3: (9, 8, 7)}
N_IN, N_CLASSES = 11, 4


def mlp_net(hidden, dropout):
  """An MLP as the configs build it: dropout before every Dense layer when any rate is non-zero."""
  depth = len(HIDDEN[hidden]) + 1
  rates = np.linspace(0.5, 0.0, depth) if dropout != "none" else np.zeros(depth)
  arch = model.mlp_architecture((N_IN,), HIDDEN[hidden], rates)
  form = dropout if dropout != "none" else "regular"
  return model.parse(arch, (N_IN,), N_CLASSES, dropout=form)


def setup_model(hidden, batch, dropout, seed=0):
  """(net, params, state, x, y, kwargs for model.forward / model.loss)."""
  net, hyper = mlp_net(hidden, dropout)
  params, state = model.init(jax.random.key(seed), net, jnp.float64)
  # Non-zero biases so that bias gradients and ReLU kinks are exercised.
  params = tuple(
    layers.WB(p.w, 0.1 * rand(seed + 10 + i, p.b.shape[0])) if p else p
    for i, p in enumerate(params)
  )
  x = rand(seed + 1, batch, N_IN)
  y = jax.random.randint(jax.random.key(seed + 2), (batch,), 0, N_CLASSES)
  kwargs = dict(train=True, key=jax.random.key(seed + 3))
  return net, params, state, x, y, hyper, kwargs


def _grads(net, params, state, x, y, hyper, kwargs, **backward_kwargs):
  _, cache, _ = model.forward(net, params, state, x, hyper, **kwargs)
  return model.backward(net, params, cache, y, hyper, **backward_kwargs)


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
  net, params, state, x, y, hyper, kwargs = setup_model(hidden, batch, dropout)
  grads = _grads(
    net, params, state, x, y, hyper, kwargs, l2=jnp.asarray(l2), softmax_grad=softmax_grad
  )
  expected = jax.grad(model.loss, argnums=1)(net, params, state, x, y, hyper, l2=l2, **kwargs)
  assert_close(grads, expected, rtol=1e-9)


def check_model_fd(net, params, state, x, y, hyper, kwargs, l2=0.0, weights=None, **bw):
  """Finite-difference check of model.backward as the VJP of model.loss w.r.t. params."""

  def f(params):
    return model.loss(net, params, state, x, y, hyper, l2=l2, weights=weights, **kwargs)

  def f_vjp(params):
    g = _grads(net, params, state, x, y, hyper, kwargs, weights=weights, l2=jnp.asarray(l2), **bw)
    return f(params), lambda ct: (jax.tree.map(lambda a: ct * a, g),)

  check_vjp(f, f_vjp, (params,), atol=FD_TOL, rtol=FD_TOL, eps=FD_EPS)


@pytest.mark.parametrize("hidden", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 50])
@pytest.mark.parametrize("dropout", ["none", "regular", "inverted"])
def test_model_backward_finite_differences(hidden, batch, dropout):
  check_model_fd(*setup_model(hidden, batch, dropout, seed=5), l2=0.2)


def test_model_backward_with_sample_weights_partial_batch():
  """Padding rows (weight 0) contribute nothing: same grads as the batch without them."""
  net, params, state, x, y, hyper, kwargs = setup_model(2, 10, "none")
  w = jnp.asarray([1.0] * 7 + [0.0] * 3)
  padded = _grads(net, params, state, x, y, hyper, kwargs, weights=w)
  assert_close(padded, _grads(net, params, state, x[:7], y[:7], hyper, kwargs))
  expected = jax.grad(model.loss, argnums=1)(net, params, state, x, y, hyper, weights=w, **kwargs)
  assert_close(padded, expected)
  check_model_fd(net, params, state, x, y, hyper, kwargs, weights=w)


@pytest.mark.parametrize("dropout", ["regular", "inverted"])
def test_model_backward_inference_dropout(dropout):
  """Backward through the inference form of dropout (a constant scale) also matches autodiff."""
  net, params, state, x, y, hyper, _ = setup_model(2, 5, dropout)
  grads = _grads(net, params, state, x, y, hyper, {})
  assert_close(grads, jax.grad(model.loss, argnums=1)(net, params, state, x, y, hyper))


def test_mlp_architecture_is_the_network_the_configs_always_built():
  """No dropout layers when every rate is 0; one before each Dense layer otherwise."""
  assert (
    model.mlp_architecture((561,), (300, 100), (0, 0, 0)) == "dense300 relu dense100 relu dense"
  )
  assert model.mlp_architecture((32, 32, 3), (400,), (0.2, 0.5)) == (
    "flatten dropout0.2 dense400 relu dropout0.5 dense"
  )
  net, hyper = model.parse("dropout0.5 dense300 relu dropout0 dense", (561,), 6)
  assert [type(layer).__name__ for layer in net.layers] == [
    "Dropout",
    "Dense",
    "ReLU",
    "Dropout",
    "Dense",
  ]
  assert hyper == (0.5, (), (), 0.0, ()) and net.num_classes == 6
  assert net.describe(hyper) == ("dropout0.5/regular dense300 relu dropout0/regular dense6")
  with pytest.raises(ValueError, match="one rate per Dense-layer input"):
    model.mlp_architecture((561,), (300, 100), (0.5, 0.5))


def test_l2_penalty_and_grad():
  net, params, *_ = setup_model(2, 1, "none")
  l2 = jnp.asarray(0.7)
  dense = [p for p in params if p]
  expected = 0.35 * sum(float(jnp.sum(p.w**2)) for p in dense)
  np.testing.assert_allclose(model.l2_penalty(params, l2), expected, rtol=1e-12)
  assert_close(model.l2_grad(params, l2), jax.grad(model.l2_penalty)(params, l2))
  assert all(float(jnp.abs(g.b).max()) == 0 for g in model.l2_grad(params, l2) if g)


def test_init_is_he_and_deterministic():
  net, _ = model.parse("dense300 relu dense", (400,), 6)
  (a, _), (b, _), (c, _) = (model.init(jax.random.key(k), net) for k in (7, 7, 8))
  assert_close(a, b, rtol=0, atol=0)
  assert not np.allclose(a[0].w, c[0].w)
  assert [p.w.shape for p in a if p] == [(400, 300), (300, 6)]
  for p, fan_in in zip([p for p in a if p], (400, 300), strict=True):
    np.testing.assert_allclose(float(jnp.std(p.w)), np.sqrt(2 / fan_in), rtol=0.05)
    assert float(jnp.abs(p.b).max()) == 0


# -------------------------------------------------------------- planted wrong gradients fail


MUTANTS = {
  # name: (function in mlp.backprop to replace, wrong replacement)
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
    lambda dy, m, r, inv: dy * backprop.dropout_train_scale(r, inv),
  ),
  "dropout scale dropped": ("dropout_backward", lambda dy, m, r, inv: dy * m),
}


def _autodiff_check(net, params, state, x, y, hyper, kwargs, softmax_grad):
  grads = _grads(net, params, state, x, y, hyper, kwargs, softmax_grad=softmax_grad)
  expected = jax.grad(model.loss, argnums=1)(net, params, state, x, y, hyper, **kwargs)
  assert_close(grads, expected, rtol=1e-9)


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
  monkeypatch.setattr(backprop, attr, wrong)
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


# --------------------------------------------------------------- label smoothing, whole model

SMOOTHING_MUTANTS = {
  # name: (function in mlp.backprop to replace, wrong replacement that ignores or mis-forms q)
  "fused path ignores smoothing": (
    "softmax_nll_backward",
    lambda p, y, w=None, eps=0.0: (p - jax.nn.one_hot(y, p.shape[-1])) / p.shape[0],
  ),
  "fused path without eps / K": (
    "softmax_nll_backward",
    lambda p, y, w=None, eps=0.0: (p - (1 - eps) * jax.nn.one_hot(y, p.shape[-1])) / p.shape[0],
  ),
  "jacobian path ignores smoothing": (
    "nll_backward",
    lambda p, y, w=None, eps=0.0: -jax.nn.one_hot(y, p.shape[-1]) / p / p.shape[0],
  ),
}


def _smoothing_checks(softmax_grad: str) -> dict[str, bool]:
  """Which of (autodiff, finite differences) reject model.backward with label smoothing 0.2."""
  net, params, state, x, y, hyper, kwargs = setup_model(2, 50, "inverted", seed=11)
  bw = dict(smoothing=jnp.asarray(0.2), softmax_grad=softmax_grad)

  def autodiff():
    grads = _grads(net, params, state, x, y, hyper, kwargs, **bw)
    expected = jax.grad(model.loss, argnums=1)(
      net, params, state, x, y, hyper, smoothing=0.2, **kwargs
    )
    assert_close(grads, expected, rtol=1e-9)

  def finite_differences():
    def f(params):
      return model.loss(net, params, state, x, y, hyper, smoothing=0.2, **kwargs)

    def f_vjp(params):
      g = _grads(net, params, state, x, y, hyper, kwargs, **bw)
      return f(params), lambda ct: (jax.tree.map(lambda a: ct * a, g),)

    check_vjp(f, f_vjp, (params,), atol=FD_TOL, rtol=FD_TOL, eps=FD_EPS)

  return {"autodiff": _fails(autodiff), "finite differences": _fails(finite_differences)}


@pytest.mark.parametrize("softmax_grad", ["fused", "jacobian"])
def test_label_smoothing_backward_matches_autodiff_and_finite_differences(softmax_grad):
  assert _smoothing_checks(softmax_grad) == {"autodiff": False, "finite differences": False}


@pytest.mark.parametrize("name", sorted(SMOOTHING_MUTANTS))
def test_planted_label_smoothing_bug_fails_the_checks(name, monkeypatch):
  attr, wrong = SMOOTHING_MUTANTS[name]
  monkeypatch.setattr(backprop, attr, wrong)
  caught = _smoothing_checks("jacobian" if attr == "nll_backward" else "fused")
  assert all(caught.values()), f"mutant {name!r} slipped through: {caught}"
