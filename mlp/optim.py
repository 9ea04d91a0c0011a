"""Parameter updates: optax transformations fed by the explicit gradients of mlp.model.backward,
and the learning-rate schedules.

Every hyperparameter here may be a traced jax array, so a new value never recompiles the step.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mlp import model


class HeavyBallState(NamedTuple):
  """The params before the last update: dW_prev = W - previous (zero-velocity start: W itself)."""

  previous: optax.Params


def heavy_ball(
  learning_rate: jax.Array, momentum: jax.Array, l2: jax.Array
) -> optax.GradientTransformation:
  """SGD with heavy-ball momentum and L2 weight decay, HAR study Eq. 4.

  With g = dL/dW + lambda W (L2 on weights only) and dW = -eta g:
      W <- W + dW + mu dW_prev,      dW_prev <- dW + mu dW_prev
  i.e. the velocity v = -eta g + mu v_prev is added to W. The velocity is the last step taken,
  dW_prev = W - W_prev, so the state keeps W_prev (the params before the last update) rather than
  v: the update is  -eta g + mu (W - W_prev)  and the new state is W itself, the same numbers up
  to float rounding, so that each step passes over the weights once (measured: benchmarks/
  README.md, "Batch-1 speed-up"). The velocity holds steps already scaled by the learning rate,
  so a learning-rate change (decay) affects new gradients only.
  """

  def init(params):
    return HeavyBallState(previous=jax.tree.map(jnp.asarray, params))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("heavy_ball needs the params (for L2 and dW_prev = W - W_prev)")

    def step(g, w, prev, is_weight):
      g = g + l2 * w if is_weight else g
      return -learning_rate * g + momentum * (w - prev)

    updates = jax.tree.map(step, grads, params, state.previous, model.weight_mask(params))
    return updates, HeavyBallState(previous=params)

  return optax.GradientTransformation(init, update)


def freeze(
  tx: optax.GradientTransformation, frozen: tuple[int, ...]
) -> optax.GradientTransformation:
  """``tx`` with zero updates for the layers in ``frozen`` (indices into the params tuple).

  The state stays ``tx``'s own, so freezing never changes the optimizer state's layout. With
  heavy-ball momentum a frozen layer's W - W_prev stays 0 and L2 never reaches it: it keeps the
  values it started with.
  """
  if not frozen:
    return tx

  def update(grads, state, params=None):
    updates, state = tx.update(grads, state, params)
    zero = lambda u: jax.tree.map(jnp.zeros_like, u)  # noqa: E731
    return tuple(zero(u) if i in frozen else u for i, u in enumerate(updates)), state

  return optax.GradientTransformation(tx.init, update)


def epoch_learning_rate(learning_rate: jax.Array, decay: jax.Array, epoch: jax.Array) -> jax.Array:
  """Per-epoch multiplicative decay: eta_e = eta_0 * decay^e, epochs counted from 0."""
  return learning_rate * jnp.power(decay, epoch)


def _warm(hyper, t: jax.Array) -> jax.Array:
  """Linear warm-up factor min(1, t / warmup) at t epochs; exactly 1 when ``hyper.warmup`` is 0."""
  return jnp.where(hyper.warmup > 0, jnp.minimum(t / jnp.maximum(hyper.warmup, 1e-12), 1.0), 1.0)


def decay_rate(hyper, epoch: jax.Array) -> jax.Array:
  """The ``epoch_decay`` schedule, one rate per epoch: eta decay^e (the studies'), times the
  warm-up factor at the epoch's end, min(1, (e + 1) / warmup) (Goyal et al. 2017, per epoch)."""
  rate = epoch_learning_rate(hyper.learning_rate, hyper.lr_decay, epoch)
  return rate * _warm(hyper, epoch + 1.0)


def cosine_rates(hyper, epoch: jax.Array, steps: int) -> jax.Array:
  """The ``cosine`` schedule, one rate per minibatch step, shape (steps,) + eta's: at t = epoch +
  step / steps epochs, eta (1 + cos(pi min(t / horizon, 1))) / 2 (SGDR without restarts,
  Loshchilov & Hutter 2017), times the warm-up factor min(1, (t + 1 / steps) / warmup)."""
  frac = jnp.arange(steps, dtype=jnp.float32) / steps
  t = epoch + frac.reshape((steps,) + (1,) * jnp.ndim(hyper.learning_rate))
  done = jnp.minimum(t / hyper.horizon, 1.0)
  return hyper.learning_rate * 0.5 * (1 + jnp.cos(jnp.pi * done)) * _warm(hyper, t + 1 / steps)


def step_learning_rates(schedule: str, hyper, epoch: jax.Array, steps: int) -> jax.Array:
  """Every step's rate in an epoch under ``schedule``, shape (steps,) + eta's (for logs, tests)."""
  if schedule == "cosine":
    return cosine_rates(hyper, epoch, steps)
  rate = decay_rate(hyper, epoch)
  return jnp.broadcast_to(rate, (steps,) + jnp.shape(rate))


def l2_penalty(l2: jax.Array) -> optax.GradientTransformation:
  """g <- g + lambda W on the weights (not biases, scales, shifts): the gradient of L2."""
  return optax.add_decayed_weights(l2, mask=model.weight_mask)


def optimizer(
  name: str,
  learning_rate: jax.Array,
  momentum: jax.Array,
  l2: jax.Array,
  beta2: jax.Array,
) -> optax.GradientTransformation:
  """The update rule ``name``, fed by the hand-written gradients; every value may be traced.

  - ``sgd``: :func:`heavy_ball` (Eq. 4), the studies' rule.
  - ``nesterov``: L2, then Nesterov momentum v = mu v + g, step g + mu v (optax.trace), then -eta.
  - ``adam``: L2 on the gradient, then Adam's bias-corrected moments (beta1 = ``momentum``,
    beta2), then -eta (Kingma & Ba 2015).
  - ``adamw``: Adam's step plus the decoupled weight decay ``l2`` W, then -eta (Loshchilov &
    Hutter 2019; optax.adamw's order).
  """
  lr = optax.scale_by_learning_rate(learning_rate)
  if name == "sgd":
    return heavy_ball(learning_rate, momentum, l2)
  if name == "nesterov":
    return optax.chain(l2_penalty(l2), optax.trace(decay=momentum, nesterov=True), lr)
  if name == "adam":
    return optax.chain(l2_penalty(l2), optax.scale_by_adam(b1=momentum, b2=beta2), lr)
  if name == "adamw":
    return optax.chain(optax.scale_by_adam(b1=momentum, b2=beta2), l2_penalty(l2), lr)
  raise ValueError(f"unknown optimizer {name!r}: use sgd, nesterov, adam or adamw")


def init_state(params: model.Params, name: str = "sgd") -> optax.OptState:
  """State for :func:`optimizer` ``name`` (its layout does not depend on hyperparameter values)."""
  return optimizer(name, 0.0, 0.0, 0.0, 0.0).init(params)
