"""Parameter updates: optax transformations fed by the explicit gradients of mlp.model.backward.

Every hyperparameter here may be a traced jax array, so a new value never recompiles the step.
"""

import jax
import jax.numpy as jnp
import optax

from mlp import model


def heavy_ball(
  learning_rate: jax.Array, momentum: jax.Array, l2: jax.Array = 0.0
) -> optax.GradientTransformation:
  """SGD with heavy-ball momentum and L2 weight decay, HAR study Eq. 4.

  With g = dL/dW + lambda W (L2 on weights only) and dW = -eta g:
      W <- W + dW + mu dW_prev,      dW_prev <- dW + mu dW_prev
  i.e. the velocity v = -eta g + mu v_prev is added to W. The chain below computes exactly that:
  add lambda W, scale by -eta, then ``optax.trace`` (t <- u + mu t), whose output is the step.
  The velocity holds steps already scaled by the learning rate, so a learning-rate change (decay)
  affects new gradients only, as in Eq. 4.
  """
  return optax.chain(
    optax.add_decayed_weights(l2, mask=model.weight_mask),
    optax.scale(-learning_rate),
    optax.trace(decay=momentum),
  )


def epoch_learning_rate(learning_rate: jax.Array, decay: jax.Array, epoch: jax.Array) -> jax.Array:
  """Per-epoch multiplicative decay: eta_e = eta_0 * decay^e, epochs counted from 0."""
  return learning_rate * jnp.power(decay, epoch)


def init_state(params: model.Params) -> optax.OptState:
  """State for :func:`heavy_ball` (its layout does not depend on hyperparameter values)."""
  return heavy_ball(0.0, 0.0, 0.0).init(params)
