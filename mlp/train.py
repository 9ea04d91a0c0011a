"""Training: a jit-compiled epoch (lax.scan over minibatches), evaluation and the fit loop.

Static (compiled into the program): layer sizes, batch size, number of training rows, dropout
form, softmax gradient form. Dynamic (traced arrays, never recompile): learning rate, momentum,
L2, learning-rate decay, dropout rates, the epoch number and the PRNG keys.

Everything works on a *population*: hyperparameters, keys and params carry a leading axis P.
A population is trained by ``jax.vmap`` of the single-run epoch; members stop early independently
(a stopped member's params are frozen with ``jnp.where``). On CPU, running members one at a time
through the same compiled program (P = 1) is as fast, so :func:`fit` chooses per backend.
"""

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlp import layers, model, optim


class Hyper(NamedTuple):
  """Per-run hyperparameters; each a scalar array (or (P,) / (P, L) for a population)."""

  learning_rate: jax.Array
  momentum: jax.Array
  l2: jax.Array
  lr_decay: jax.Array
  dropout: jax.Array  # (L,): rate per Dense-layer input


def make_hyper(
  *,
  learning_rate: float,
  momentum: float = 0.0,
  l2: float = 0.0,
  lr_decay: float = 1.0,
  dropout: Sequence[float],
  dtype=np.float32,
) -> Hyper:
  """A single run's :class:`Hyper` as host arrays, checking ranges with readable errors."""
  dropout = np.asarray(dropout, dtype)
  checks = [
    (learning_rate > 0, f"learning_rate must be > 0, got {learning_rate}"),
    (0 <= momentum < 1, f"momentum must be in [0, 1), got {momentum}"),
    (l2 >= 0, f"l2 must be >= 0, got {l2}"),
    (0 < lr_decay <= 1, f"lr_decay must be in (0, 1], got {lr_decay}"),
    (bool(np.all((dropout >= 0) & (dropout < 1))), f"dropout rates must be in [0, 1): {dropout}"),
  ]
  for ok, msg in checks:
    if not ok:
      raise ValueError(msg)
  return Hyper(*(np.asarray(v, dtype) for v in (learning_rate, momentum, l2, lr_decay)), dropout)


def stack(items: Sequence) -> object:
  """Stack a list of pytrees (runs) into one pytree with a leading population axis."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)


def unstack(tree, n: int) -> list:
  """Inverse of :func:`stack`."""
  return [jax.tree.map(lambda a, i=i: a[i], tree) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class Spec:
  """The static shape of a run: everything that changes the compiled program."""

  sizes: tuple[int, ...]  # (n_in, h_1, ..., n_classes)
  batch_size: int
  dropout: str = "none"  # "none" | "regular" | "inverted"
  softmax_grad: str = "fused"  # "fused" | "jacobian"
  eval_batch: int = 4096
  unroll: int = 2  # lax.scan unroll factor of the minibatch loop (odd values are rounded up)

  def __post_init__(self):
    if self.dropout not in ("none", "regular", "inverted"):
      raise ValueError(f"dropout must be none/regular/inverted, got {self.dropout!r}")
    if self.softmax_grad not in ("fused", "jacobian"):
      raise ValueError(f"softmax_grad must be fused/jacobian, got {self.softmax_grad!r}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.unroll < 1:
      raise ValueError(f"unroll must be >= 1, got {self.unroll}")


class Stopping(NamedTuple):
  """Early stopping rule.

  gap:      stop when |val loss - train loss| > ``gap`` after epoch ``min_epoch`` (HAR study);
  patience: stop when the monitored validation metric (``monitor``: "val_loss", lower is better,
            or "val_acc", higher is better) has not beaten its best for ``patience`` epochs, and
            restore the params of the best epoch (image study);
  none:     train for ``max_epochs``.
  """

  kind: str = "none"
  gap: float = 0.05
  min_epoch: int = 50
  patience: int = 4
  monitor: str = "val_loss"

  def validate(self) -> "Stopping":
    if self.kind not in ("gap", "patience", "none"):
      raise ValueError(f"early stopping must be gap/patience/none, got {self.kind!r}")
    if self.monitor not in ("val_loss", "val_acc"):
      raise ValueError(f"early stopping monitor must be val_loss/val_acc, got {self.monitor!r}")
    return self


# ------------------------------------------------------------------------ one run, one epoch


def _train_epoch(spec: Spec, params, opt_state, hyper: Hyper, key, epoch, x, y):
  """One pass over (x, y) in shuffled minibatches; returns (params, opt_state, mean train loss).

  A final partial batch is kept: the permutation is padded to whole batches and padded rows get
  weight 0, so each step's gradient is the mean over its real rows.

  Rows are gathered per step (not the whole shuffled epoch up front: that would copy the training
  set once per epoch and per population member). The loss is computed after the loop from each
  step's logits, so the loop body holds only the forward pass, the backward pass and the update.
  """
  n, bs = x.shape[0], spec.batch_size
  steps = math.ceil(n / bs)
  pad = steps * bs - n
  epoch_key = jax.random.fold_in(key, epoch)
  perm = jax.random.permutation(jax.random.fold_in(epoch_key, 0), n)
  idx = jnp.concatenate([perm, perm[:pad]]).reshape(steps, bs)
  weights = None
  if pad:
    weights = jnp.concatenate([jnp.ones(n, x.dtype), jnp.zeros(pad, x.dtype)]).reshape(steps, bs)
  lr = optim.epoch_learning_rate(hyper.learning_rate, hyper.lr_decay, epoch)
  tx = optim.heavy_ball(lr, hyper.momentum, hyper.l2)
  use_dropout = spec.dropout != "none"

  def step(carry, inputs):
    params, opt_state = carry
    batch_idx, w, t = inputs
    xb, yb = x[batch_idx], y[batch_idx]
    masks = None
    if use_dropout:
      masks = model.dropout_masks(jax.random.fold_in(epoch_key, t + 1), params, bs, hyper.dropout)
    _, cache = model.forward(
      params,
      xb,
      rates=hyper.dropout if use_dropout else None,
      masks=masks,
      inverted=spec.dropout == "inverted",
      train=True,
    )
    grads = model.backward(params, cache, yb, weights=w, softmax_grad=spec.softmax_grad)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), cache.logits

  inputs = (idx, weights, jnp.arange(steps))
  # An even unroll: heavy_ball's state is the previous params, so after two steps every buffer is
  # back in its loop-carried slot; with one step per loop body XLA would copy every weight.
  unroll = spec.unroll + spec.unroll % 2
  (params, opt_state), logits = jax.lax.scan(step, (params, opt_state), inputs, unroll=unroll)
  # Mean NLL over the real rows, each scored with the params of the step that trained on it.
  log_p = layers.log_softmax(logits.reshape(steps * bs, -1))
  loss = layers.nll_loss(log_p, y[idx].reshape(-1), None if pad == 0 else weights.reshape(-1))
  return params, opt_state, loss


def _log_probs(spec: Spec, params, hyper: Hyper, x):
  """log p for every row of x, in fixed-size chunks (inference-form dropout)."""
  n = x.shape[0]
  chunk = min(spec.eval_batch, n)
  steps = math.ceil(n / chunk)
  xp = jnp.pad(x, ((0, steps * chunk - n), (0, 0))).reshape(steps, chunk, -1)
  rates = hyper.dropout if spec.dropout != "none" else None

  def one(xb):
    _, cache = model.forward(params, xb, rates=rates, inverted=spec.dropout == "inverted")
    return jax.nn.log_softmax(cache.logits)

  return jax.lax.map(one, xp).reshape(steps * chunk, -1)[:n]


def _evaluate(spec: Spec, params, hyper: Hyper, x, y):
  """(mean NLL, accuracy) of one run on (x, y)."""
  logp = _log_probs(spec, params, hyper, x)
  nll = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
  return nll, jnp.mean(jnp.argmax(logp, axis=1) == y)


# ------------------------------------------------------------------- populations (vmapped)


def _init_population(sizes, keys, dtype):
  return jax.vmap(lambda k: model.init(jax.random.fold_in(k, 0), sizes, dtype))(keys)


# XLA options for the training and evaluation programs. XLA:CPU in jax 0.10 hands every dot to
# YNNPACK; for the small per-step matmuls inside the epoch's scan XLA's own (Eigen) dots are faster:
# batch 50, hidden (300, 100): 88 -> 72 ms per epoch on 2 cores; batch 1 and the image shapes are
# unchanged (benchmarks/README.md). The option is CPU-only: other backends ignore it.
XLA_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_jit = functools.partial(jax.jit, static_argnums=0, compiler_options=XLA_OPTIONS)


def _select(active, new, old):
  """Per member: new where active else old (freezes stopped members)."""

  def pick(a, b):
    return jnp.where(active.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

  return jax.tree.map(pick, new, old)


@_jit
def population_epoch(spec: Spec, params, opt_state, hyper, keys, epoch, active, x, y):
  """One epoch for every member of a population; inactive members are left unchanged."""
  train_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
  fn = functools.partial(_train_epoch, spec)
  new_params, new_state, loss = jax.vmap(fn, in_axes=(0, 0, 0, 0, None, None, None))(
    params, opt_state, hyper, train_keys, epoch, x, y
  )
  return _select(active, new_params, params), _select(active, new_state, opt_state), loss


@_jit
def population_evaluate(spec: Spec, params, hyper, x, y):
  """(P,) mean NLL and (P,) accuracy of every member on (x, y)."""
  return jax.vmap(functools.partial(_evaluate, spec), in_axes=(0, 0, None, None))(
    params, hyper, x, y
  )


@_jit
def population_log_probs(spec: Spec, params, hyper, x):
  """(P, N, C) log-probabilities of every member on x."""
  return jax.vmap(functools.partial(_log_probs, spec), in_axes=(0, 0, None))(params, hyper, x)


# ------------------------------------------------------------------------------- fit loop


class FitResult(NamedTuple):
  """Outcome of :func:`fit` for a population of P runs (host arrays)."""

  params: model.Params  # leading axis P: best-epoch params (patience) or final params
  history: list[dict[str, list[float]]]  # per member: train_loss, val_loss, train_acc, ...
  epochs: np.ndarray  # (P,) epochs trained
  stop_reason: list[str]  # per member: "gap", "patience", "max_epochs" or "diverged"
  seconds: np.ndarray  # (P,) wall time


EpochCallback = Callable[[int, np.ndarray, dict[str, np.ndarray]], None]


def fit(
  spec: Spec,
  hyper: Hyper,
  keys: jax.Array,
  data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
  *,
  max_epochs: int,
  stopping: Stopping = Stopping(),
  vectorize: bool | None = None,
  on_epoch: EpochCallback | None = None,
  dtype=jnp.float32,
) -> FitResult:
  """Train a population (leading axis P on ``hyper`` and ``keys``) and return per-member results.

  ``data`` = (x_train, y_train, x_val, y_val). Each member's key seeds its init (fold_in 0),
  shuffling and dropout (fold_in 1, then per epoch and step). ``vectorize`` trains all members as
  one vmapped program (default: on accelerators) or one by one (default on CPU); both give the
  same numbers. ``on_epoch(epoch, member_ids, metrics)`` is called after every epoch.
  """
  stopping.validate()
  p = int(np.shape(keys)[0])
  if vectorize is None:
    vectorize = jax.default_backend() != "cpu"
  groups = [np.arange(p)] if vectorize else [np.array([i]) for i in range(p)]
  x_tr, y_tr, x_va, y_va = data
  arrays = (
    jnp.asarray(x_tr, dtype),
    jnp.asarray(y_tr, jnp.int32),
    jnp.asarray(x_va, dtype),
    jnp.asarray(y_va, jnp.int32),
  )
  results = [
    _fit_group(spec, hyper, keys, ids, arrays, max_epochs, stopping, on_epoch, dtype)
    for ids in groups
  ]
  params = jax.tree.map(lambda *xs: np.concatenate(xs), *(r.params for r in results))
  return FitResult(
    params=params,
    history=[h for r in results for h in r.history],
    epochs=np.concatenate([r.epochs for r in results]),
    stop_reason=[s for r in results for s in r.stop_reason],
    seconds=np.concatenate([r.seconds for r in results]),
  )


def _fit_group(spec, hyper, keys, ids, data, max_epochs, stopping, on_epoch, dtype):
  x_tr, y_tr, x_va, y_va = data
  n = len(ids)
  hyper = Hyper(*(jnp.asarray(np.asarray(h)[ids], dtype) for h in hyper))
  keys = jnp.asarray(keys)[ids]
  params = _init_population(spec.sizes, keys, dtype)
  opt_state = jax.vmap(optim.init_state)(params)
  best = params  # jnp.where in _select makes new buffers, so this alias is never mutated
  best_val = np.full(n, np.inf)
  wait = np.zeros(n, int)
  active = np.ones(n, bool)
  epochs = np.zeros(n, int)
  reason = ["max_epochs"] * n
  history = [dict(train_loss=[], val_loss=[], train_acc=[], val_acc=[], lr=[]) for _ in ids]
  start = time.perf_counter()
  seconds = np.zeros(n)
  for epoch in range(max_epochs):
    params, opt_state, _ = population_epoch(
      spec,
      params,
      opt_state,
      hyper,
      keys,
      jnp.asarray(epoch, jnp.int32),
      jnp.asarray(active),
      x_tr,
      y_tr,
    )
    tr_loss, tr_acc = map(np.asarray, population_evaluate(spec, params, hyper, x_tr, y_tr))
    va_loss, va_acc = map(np.asarray, population_evaluate(spec, params, hyper, x_va, y_va))
    lr = np.asarray(optim.epoch_learning_rate(hyper.learning_rate, hyper.lr_decay, epoch))
    metrics = dict(train_loss=tr_loss, val_loss=va_loss, train_acc=tr_acc, val_acc=va_acc, lr=lr)
    done = epoch + 1
    for i in np.flatnonzero(active):
      for name, values in metrics.items():
        history[i][name].append(float(values[i]))
      epochs[i] = done
    score = va_loss if stopping.monitor == "val_loss" else -va_acc  # lower is better
    improved = active & (score < best_val)
    best_val = np.where(improved, score, best_val)
    wait = np.where(improved, 0, wait + active)
    if stopping.kind == "patience":
      best = _select(jnp.asarray(improved), params, best)
    if on_epoch is not None:
      act = np.flatnonzero(active)
      on_epoch(done, ids[act], {k: v[act] for k, v in metrics.items()})
    for i in np.flatnonzero(active):
      if not (np.isfinite(tr_loss[i]) and np.isfinite(va_loss[i])):
        reason[i] = "diverged"
      elif stopping.kind == "gap" and done > stopping.min_epoch:
        if abs(va_loss[i] - tr_loss[i]) > stopping.gap:
          reason[i] = "gap"
      elif stopping.kind == "patience" and wait[i] >= stopping.patience:
        reason[i] = "patience"
      if reason[i] != "max_epochs":
        active[i] = False
        seconds[i] = time.perf_counter() - start
    if not active.any():
      break
  seconds[active] = time.perf_counter() - start
  final = best if stopping.kind == "patience" else params
  return FitResult(
    params=jax.tree.map(np.asarray, final),
    history=history,
    epochs=epochs,
    stop_reason=reason,
    seconds=seconds,
  )


def log_probs(spec: Spec, params: model.Params, hyper: Hyper, x: np.ndarray, dtype=jnp.float32):
  """(N, C) log-probabilities of one trained run (no population axis) on x."""
  if len(x) == 0:
    return np.zeros((0, spec.sizes[-1]), np.float32)
  one = jax.tree.map(lambda a: jnp.asarray(a)[None], (params, hyper))
  return np.asarray(population_log_probs(spec, *one, jnp.asarray(x, dtype))[0])
