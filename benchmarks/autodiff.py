"""Our training epoch with the gradients from ``jax.grad`` instead of ``model.backward``.

For the speed benchmarks only (benchmarks/har_speed.py, benchmarks/cnn_speed.py): the library
itself never differentiates automatically. :data:`population_epoch` is the library's own epoch
program, ``train.epoch_program``, with one thing swapped, the step's gradient:

    ours:      model.forward, then model.backward (hand-written backprop)
    jax.grad:  jax.grad of model.loss w.r.t. the params (reverse-mode autodiff of the forward)

Everything else is the same compiled program: jit with ``train.XLA_OPTIONS``, vmapped population,
lax.scan over the same shuffled minibatches, dropout keys and augmentation, heavy-ball update.

The differentiated function is ``model.loss`` with the forward pass's new state (batch-norm
running averages) and logits returned as auxiliary outputs (``has_aux``), so that one forward pass
serves the gradient, the state update and the loss, as in ours; and, as in ours, L2 is left to
the optimizer (``l2 = 0`` in the loss, ``hyper.l2`` in ``heavy_ball``). :func:`check_gradients`
compares one step's gradients of the two with ``jax.grad(model.loss, argnums=1)`` itself.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mlp import model, train


def loss_and_aux(net, params, state, x, labels, hyper, *, weights=None, key=None):
  """``model.loss(..., l2=0, train=True)`` and (new state, logits) from the same forward pass."""
  _, cache, new_state = model.forward(net, params, state, x, hyper, train=True, key=key)
  return model.nll(cache, labels, weights), (new_state, cache.logits)


_grad = jax.grad(loss_and_aux, argnums=1, has_aux=True)


def autodiff_gradients(spec: train.Spec, params, state, x, y, weights, hyper: train.Hyper, key):
  """``train.hand_gradients`` with jax.grad of the loss in place of model.backward."""
  grads, (state, logits) = _grad(
    spec.net, params, state, x, y, hyper.layers, weights=weights, key=key
  )
  return grads, state, logits


# mlp.train.population_epoch, the same program but for the step's gradient.
population_epoch = train.epoch_program(autodiff_gradients)


def check_gradients(net, layer_hyper, x, y, seed: int = 0) -> float:
  """One training step's gradients (same dropout key): the largest |difference| between
  model.backward and jax.grad of model.loss, and between :func:`loss_and_aux`'s and jax.grad of
  model.loss, relative to the largest |gradient| over all params. Expect ~1e-6 in float32.

  (Relative to the whole gradient, not per array: a bias followed by batch norm has a gradient
  that is zero up to rounding.)"""
  params, state = model.init(jax.random.key(seed), net, jnp.float32)
  hyper = tuple(h if isinstance(h, tuple) else jnp.asarray(h, jnp.float32) for h in layer_hyper)
  x, y, key = jnp.asarray(x), jnp.asarray(y), jax.random.key(seed + 1)
  _, cache, _ = model.forward(net, params, state, x, hyper, train=True, key=key)
  ours = model.backward(net, params, cache, y, hyper)
  plain = jax.grad(model.loss, argnums=1)(net, params, state, x, y, hyper, train=True, key=key)
  aux, _ = _grad(net, params, state, x, y, hyper, key=key)
  ours, plain, aux = (jax.tree.leaves(jax.tree.map(np.asarray, g)) for g in (ours, plain, aux))
  scale = max(max(float(np.max(np.abs(b))) for b in plain), 1e-30)
  diff = max(
    float(np.max(np.abs(a - b))) for other in (ours, aux) for a, b in zip(other, plain, strict=True)
  )
  return diff / scale
