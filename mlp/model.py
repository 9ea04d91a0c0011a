"""The multilayer perceptron: params pytree, forward pass with a cache, hand-written backward.

Network with L Dense layers (L - 1 hidden ReLU layers and a softmax output):

    h_0 = x
    u_l = D_l(h_l)                 dropout on the input of Dense layer l (identity if rate is 0)
    z_l = u_l W_l + b_l
    h_{l+1} = relu(z_l)  for l < L - 1,    p = softmax(z_{L-1})
    loss = NLL(p, y) + (lambda / 2) sum_l ||W_l||^2

Backward (the chain rule, one line per forward line, read bottom-up):

    dz_{L-1} = (p - onehot(y)) / B                      (or J^T dp, J = diag(p) - p p^T)
    dW_l = u_l^T dz_l + lambda W_l,   db_l = sum_b dz_l,   du_l = dz_l W_l^T
    dh_l = D_l'(du_l)  (same mask and scale),            dz_{l-1} = dh_l * 1[z_{l-1} > 0]
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mlp import layers


class Dense(NamedTuple):
  """One affine layer y = x w + b; w has shape (fan_in, fan_out), b (fan_out,)."""

  w: jax.Array
  b: jax.Array


Params = tuple[Dense, ...]


class Cache(NamedTuple):
  """What the backward pass needs from the forward pass."""

  inputs: tuple[jax.Array, ...]  # u_l: input of Dense layer l, after dropout
  pre: tuple[jax.Array, ...]  # z_l for the hidden layers l < L - 1
  masks: tuple[jax.Array, ...] | None  # dropout keep-masks per Dense input (training only)
  rates: jax.Array | None  # dropout rate per Dense input, shape (L,)
  inverted: bool  # inverted (True) or regular (False) dropout
  logits: jax.Array  # z_{L-1}
  probs: jax.Array  # p


def init(key: jax.Array, sizes: Sequence[int], dtype=jnp.float32) -> Params:
  """He initialisation: W_l ~ N(0, 2 / fan_in), b_l = 0.  sizes = (n_in, h_1, ..., n_classes)."""
  if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
    raise ValueError(f"sizes must be at least (inputs, classes), all positive; got {tuple(sizes)}")
  keys = jax.random.split(key, len(sizes) - 1)
  return tuple(
    Dense(
      w=jax.random.normal(k, (n_in, n_out), dtype) * jnp.sqrt(2.0 / n_in).astype(dtype),
      b=jnp.zeros((n_out,), dtype),
    )
    for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
  )


def sizes_of(params: Params) -> tuple[int, ...]:
  """(n_in, h_1, ..., n_classes) of a params pytree."""
  return (params[0].w.shape[0],) + tuple(layer.w.shape[1] for layer in params)


def dropout_masks(key: jax.Array, params: Params, batch: int, rates: jax.Array) -> tuple:
  """One keep-mask per Dense-layer input, m_l ~ Bernoulli(1 - rates[l]), shape (batch, fan_in)."""
  keys = jax.random.split(key, len(params))
  return tuple(
    layers.dropout_mask(k, (batch, layer.w.shape[0]), rates[i], layer.w.dtype)
    for i, (k, layer) in enumerate(zip(keys, params, strict=True))
  )


def forward(
  params: Params,
  x: jax.Array,
  *,
  rates: jax.Array | None = None,
  masks: tuple | None = None,
  inverted: bool = False,
  train: bool = False,
) -> tuple[jax.Array, Cache]:
  """Class probabilities p (B, C) and the cache for :func:`backward`.

  ``rates`` (L,) are dropout rates per Dense-layer input: (0.5, 0.5, 0.0) masks the network input
  and the first hidden layer. With ``train=True`` the given ``masks`` are applied (training form);
  otherwise the inference form of the dropout is used. ``rates=None`` means no dropout at all.
  """
  if train and rates is not None and masks is None:
    raise ValueError("training with dropout needs masks (see dropout_masks)")
  inputs, pre = [], []
  h = x
  for i, layer in enumerate(params):
    if rates is not None:
      if train:
        h = layers.dropout_forward(h, masks[i], rates[i], inverted)
      else:
        h = layers.dropout_inference(h, rates[i], inverted)
    inputs.append(h)
    z = layers.dense_forward(h, layer.w, layer.b)
    if i < len(params) - 1:
      pre.append(z)
      h = layers.relu_forward(z)
  probs = layers.softmax_forward(z)
  cache = Cache(
    inputs=tuple(inputs),
    pre=tuple(pre),
    masks=tuple(masks) if (train and rates is not None) else None,
    rates=rates,
    inverted=inverted,
    logits=z,
    probs=probs,
  )
  return probs, cache


def nll(cache: Cache, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean negative log-likelihood of the labels, from the cached logits (stable log-softmax)."""
  return layers.nll_loss(layers.log_softmax(cache.logits), labels, weights)


def l2_penalty(params: Params, l2: jax.Array) -> jax.Array:
  """(lambda / 2) sum_l ||W_l||_F^2 on the weights only (biases are not penalised)."""
  return 0.5 * l2 * sum(jnp.sum(jnp.square(layer.w)) for layer in params)


def l2_grad(params: Params, l2: jax.Array) -> Params:
  """Gradient of :func:`l2_penalty`: lambda W_l for weights, 0 for biases."""
  return tuple(Dense(w=l2 * layer.w, b=jnp.zeros_like(layer.b)) for layer in params)


def weight_mask(params: Params) -> Params:
  """Pytree of booleans selecting the weights (True) and not the biases (False)."""
  return tuple(Dense(w=True, b=False) for _ in params)


def loss(
  params: Params,
  x: jax.Array,
  labels: jax.Array,
  *,
  l2: jax.Array = 0.0,
  weights: jax.Array | None = None,
  **forward_kwargs,
) -> jax.Array:
  """Training objective NLL + (lambda / 2) sum ||W||^2, built only from forward functions."""
  _, cache = forward(params, x, **forward_kwargs)
  return nll(cache, labels, weights) + l2_penalty(params, l2)


def backward(
  params: Params,
  cache: Cache,
  labels: jax.Array,
  *,
  weights: jax.Array | None = None,
  l2: jax.Array | None = None,
  softmax_grad: str = "fused",
) -> Params:
  """Gradient of :func:`loss` w.r.t. every parameter, by the backward recursion in the module doc.

  ``softmax_grad="fused"`` uses dz = (p - onehot)/B; ``"jacobian"`` pushes dL/dp = -onehot/(p B)
  through the full softmax Jacobian (HAR study Eq. 1-2). ``weights`` (B,) weight each sample's
  loss (0 for padding in a final partial batch); ``l2`` adds the penalty's gradient.
  """
  if softmax_grad == "fused":
    dz = layers.softmax_nll_backward(cache.probs, labels, weights)
  elif softmax_grad == "jacobian":
    dz = layers.softmax_backward(layers.nll_backward(cache.probs, labels, weights), cache.probs)
  else:
    raise ValueError(f"softmax_grad must be 'fused' or 'jacobian', got {softmax_grad!r}")
  grads = [None] * len(params)
  for i in reversed(range(len(params))):
    du, dw, db = layers.dense_backward(dz, cache.inputs[i], params[i].w)
    grads[i] = Dense(w=dw, b=db)
    if i == 0:
      break
    if cache.masks is not None:
      du = layers.dropout_backward(du, cache.masks[i], cache.rates[i], cache.inverted)
    elif cache.rates is not None:  # inference-form dropout: a constant scale
      du = layers.dropout_inference(du, cache.rates[i], cache.inverted)
    dz = layers.relu_backward(du, cache.pre[i - 1])
  grads = tuple(grads)
  if l2 is not None:
    grads = jax.tree.map(jnp.add, grads, l2_grad(params, l2))
  return grads
