"""Training: a jit-compiled epoch (lax.scan over minibatches), evaluation and the fit loop.

Static (compiled into the program): the network's layers, batch size, number of training rows,
softmax gradient form, augmentation. Dynamic (traced arrays, never recompile): learning rate,
momentum, L2, learning-rate decay, dropout rates, batch-norm momenta, the epoch number and keys.

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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlp import backprop, interrupts, model, optim
from mlp import stopping as stopping_lib
from mlp.spec import Hyper, Population, Spec, make_hyper, stack  # noqa: F401 (also train.X)

# ------------------------------------------------------------------------ one run, one epoch


def augment(spec: Spec, key: jax.Array, x: jax.Array) -> jax.Array:
  """Training images (B, H, W, C), each mirrored left-right with probability 1/2 (``spec.flip``)
  and translated by a uniform offset in [-shift, shift]^2 (``spec.shift``: zero-pad, then crop;
  zero is the training mean after centring). Identity when neither is set."""
  if not (spec.flip or spec.shift):
    return x
  h, w, c = spec.net.input_shape
  imgs = x.reshape(-1, h, w, c)
  flip_key, shift_key = jax.random.split(key)
  if spec.flip:
    flip = jax.random.bernoulli(flip_key, 0.5, (imgs.shape[0], 1, 1, 1))
    imgs = jnp.where(flip, imgs[:, :, ::-1], imgs)
  if spec.shift:
    k = spec.shift
    padded = jnp.pad(imgs, ((0, 0), (k, k), (k, k), (0, 0)))
    offsets = jax.random.randint(shift_key, (imgs.shape[0], 2), 0, 2 * k + 1)
    crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c))  # noqa: E731
    imgs = jax.vmap(crop)(padded, offsets)
  return imgs.reshape(x.shape)


def hand_gradients(spec: Spec, params, state, x, y, weights, hyper: Hyper, key):
  """One step's (grads, new state, logits): model.forward, then the hand-written model.backward."""
  net, frozen = spec.net, frozenset(spec.frozen)
  _, cache, state = model.forward(
    net, params, state, x, hyper.layers, train=True, key=key, frozen=frozen
  )
  grads = model.backward(
    net,
    params,
    cache,
    y,
    hyper.layers,
    weights=weights,
    smoothing=hyper.smoothing,
    softmax_grad=spec.softmax_grad,
    frozen=frozen,
  )
  return grads, state, cache.logits


class EpochMetrics(NamedTuple):
  """An epoch's running training metrics: means over its minibatches, each in the training form
  with the params of its step (what train.train_metrics = "epoch" reports)."""

  loss: jax.Array
  acc: jax.Array


def _train_epoch(
  spec: Spec, params, state, opt_state, hyper: Hyper, key, epoch, x, y, gradients=hand_gradients
):
  """One pass over (x, y) in shuffled minibatches; returns (params, state, opt_state, metrics):
  the epoch's mean training loss and accuracy as :class:`EpochMetrics`.

  A final partial batch is kept: the permutation is padded to whole batches and padded rows get
  weight 0, so each step's gradient is the mean over its real rows (batch-norm statistics do
  include the padding rows, repeats of real rows of this epoch).

  Rows are gathered per step (not the whole shuffled epoch up front: that would copy the training
  set once per epoch and per population member). The loss is computed after the loop from each
  step's logits, so the loop body holds only the forward pass, the backward pass and the update.
  """
  n, bs = x.shape[0], spec.batch_size
  steps = math.ceil(n / bs)
  pad = steps * bs - n
  epoch_key = jax.random.fold_in(key, epoch)
  perm = jax.random.permutation(jax.random.fold_in(epoch_key, 0), n)
  idx = jnp.resize(perm, steps * bs).reshape(steps, bs)  # pads cyclically, also when bs > n
  weights = None
  if pad:
    weights = jnp.concatenate([jnp.ones(n, x.dtype), jnp.zeros(pad, x.dtype)]).reshape(steps, bs)
  # epoch_decay: one rate per epoch, a loop invariant of the scan (as the studies' runs were
  # trained: a rate fed per step changes XLA's fusion and the last bits of their numbers).
  per_step = spec.schedule == "cosine"
  lrs = optim.cosine_rates(hyper, epoch, steps) if per_step else None
  epoch_lr = None if per_step else optim.decay_rate(hyper, epoch)

  def step(carry, inputs):
    params, state, opt_state = carry
    batch_idx, w, t, step_lr = inputs
    lr = step_lr if per_step else epoch_lr
    step_key = jax.random.fold_in(epoch_key, t + 1)  # dropout masks: one split per layer
    with jax.named_scope("batch"):  # scopes name the parts of a step in profiles
      xb = augment(spec, jax.random.fold_in(step_key, 1 << 20), x[batch_idx])
    grads, state, logits = gradients(spec, params, state, xb, y[batch_idx], w, hyper, step_key)
    with jax.named_scope("update"):
      rule = optim.optimizer(spec.optimizer, lr, hyper.momentum, hyper.l2, hyper.beta2)
      updates, opt_state = optim.freeze(rule, spec.frozen).update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
    return (params, state, opt_state), logits

  inputs = (idx, weights, jnp.arange(steps), lrs)
  # An even unroll: heavy_ball's state is the previous params, so after two steps every buffer is
  # back in its loop-carried slot; with one step per loop body XLA would copy every weight.
  unroll = spec.unroll + spec.unroll % 2
  (params, state, opt_state), logits = jax.lax.scan(
    step, (params, state, opt_state), inputs, unroll=unroll
  )
  # Mean NLL and accuracy over the real rows, each scored with the params of the step that
  # trained on it (the training form: dropout, augmentation).
  log_p = backprop.log_softmax(logits.reshape(steps * bs, -1))
  labels, w = y[idx].reshape(-1), None if pad == 0 else weights.reshape(-1)
  loss = backprop.nll_loss(log_p, labels, w)
  hits = (jnp.argmax(log_p, axis=1) == labels).astype(log_p.dtype)
  acc = jnp.mean(hits) if w is None else jnp.sum(hits * w) / jnp.sum(w)
  return params, state, opt_state, EpochMetrics(loss, acc)


def _log_probs(spec: Spec, params, state, hyper: Hyper, x):
  """log p for every row of x, in fixed-size chunks (the inference form of every layer)."""
  n = x.shape[0]
  chunk = min(spec.eval_batch, n)
  steps = math.ceil(n / chunk)
  xp = jnp.pad(x, ((0, steps * chunk - n), (0, 0))).reshape(steps, chunk, -1)

  def one(xb):
    _, cache, _ = model.forward(spec.net, params, state, xb, hyper.layers)
    return jax.nn.log_softmax(cache.logits)

  return jax.lax.map(one, xp).reshape(steps * chunk, -1)[:n]


def _evaluate(spec: Spec, params, state, hyper: Hyper, x, y):
  """(mean NLL, accuracy) of one run on (x, y)."""
  logp = _log_probs(spec, params, state, hyper, x)
  nll = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
  return nll, jnp.mean(jnp.argmax(logp, axis=1) == y)


# ------------------------------------------------------------------- populations (vmapped)


def _init_population(net: model.Net, keys, dtype):
  """(params, state) of every member, leading axis P."""
  return jax.vmap(lambda k: model.init(jax.random.fold_in(k, 0), net, dtype))(keys)


# XLA options for the training and evaluation programs: XLA:CPU's own (Eigen) dots and
# convolutions instead of YNNPACK's, faster for the small matmuls in the epoch's scan and for the
# convolutions' backward passes (measured in benchmarks/README.md). Other backends ignore it.
XLA_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_jit = functools.partial(jax.jit, static_argnums=0, compiler_options=XLA_OPTIONS)


def _select(active, new, old):
  """Per member: new where active else old (freezes stopped members)."""

  def pick(a, b):
    return jnp.where(active.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

  return jax.tree.map(pick, new, old)


def epoch_program(gradients: Callable = hand_gradients) -> Callable:
  """The jitted population epoch with a given step gradient (benchmarks swap in autodiff)."""

  @_jit
  def population_epoch(spec: Spec, params, state, opt_state, hyper, keys, epoch, active, x, y):
    """One epoch for every member of a population; inactive members are left unchanged."""
    train_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    fn = functools.partial(_train_epoch, spec, gradients=gradients)
    axes = (0, 0, 0, 0, 0, None, None, None)
    new_params, new_state, new_opt, metrics = jax.vmap(fn, in_axes=axes)(
      params, state, opt_state, hyper, train_keys, epoch, x, y
    )
    old = (params, state, opt_state)
    return (*_select(active, (new_params, new_state, new_opt), old), metrics)

  return population_epoch


population_epoch = epoch_program()


@_jit
def population_evaluate(spec: Spec, params, state, hyper, x, y):
  """(P,) mean NLL and (P,) accuracy of every member on (x, y)."""
  return jax.vmap(functools.partial(_evaluate, spec), in_axes=(0, 0, 0, None, None))(
    params, state, hyper, x, y
  )


@_jit
def population_log_probs(spec: Spec, params, state, hyper, x):
  """(P, N, C) log-probabilities of every member on x."""
  return jax.vmap(functools.partial(_log_probs, spec), in_axes=(0, 0, 0, None))(
    params, state, hyper, x
  )


# ------------------------------------------------------------------------------- fit loop


class FitResult(NamedTuple):
  """Outcome of :func:`fit` for a population of P runs (host arrays)."""

  params: model.Params  # leading axis P: best-epoch params (patience) or final params
  state: model.State  # leading axis P: the batch-norm running statistics that go with params
  history: list[dict[str, list[float]]]  # per member: train_loss, val_loss, train_acc, ...
  epochs: np.ndarray  # (P,) epochs trained
  stop_reason: list[str]  # per member: the reason of the rule that stopped it (mlp.stopping)
  seconds: np.ndarray  # (P,) wall time


class LoopState(NamedTuple):
  """The fit loop of n members between two epochs (leading axis n): what a checkpoint holds
  (mlp.resume) and what :func:`fit` resumes from. Training is a function of the seed and the
  epoch number (the epoch is folded into each member's key), so this is all a resumed run needs
  to end with the numbers of an uninterrupted one."""

  epoch: int  # epochs the loop has done (a member stopped earlier keeps its own count in epochs)
  params: model.Params
  state: model.State  # batch-norm running statistics
  opt_state: Any  # the update rule's state (optax; heavy ball: the params before the last step)
  best: tuple | None  # (params, state) of each member's best epoch, under a patience rule
  rules: tuple  # the stopping rules' states (mlp.stopping): per rule None or arrays over members
  active: np.ndarray  # (n,) bool: still training
  epochs: np.ndarray  # (n,) epochs trained
  reason: list[str]  # per member: the rule that stopped it ("" while training)
  history: list[dict[str, list[float]]]
  seconds: np.ndarray  # (n,) training seconds so far (a stopped member's: until it stopped)


# on_epoch(epoch, member ids, metrics) -> the ids of members to stop now (pruned), or None
EpochCallback = Callable[[int, np.ndarray, dict[str, np.ndarray]], Sequence[int] | None]
# on_state(member ids, the loop's state, now) after every epoch: the state is a function that
# copies it to the host (called only when a checkpoint is written); ``now``: the loop ends here
# (its members all stopped, or a stop was asked for: mlp.interrupts), so a checkpoint is due.
StateCallback = Callable[[np.ndarray, Callable[[], LoopState], bool], None]
Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_val, y_val
DTYPE = jnp.float32  # params, data, hyperparameters and every step's arithmetic


def map_rule_states(fn: Callable, *states: tuple) -> tuple:
  """``fn`` applied leaf by leaf to stopping-rule states (tuples of None or dataclasses of
  per-member arrays, mlp.stopping), e.g. to take one member or stack several."""
  out = []
  for parts in zip(*states, strict=True):
    first = parts[0]
    if first is None:
      out.append(None)
    else:
      fields = {f.name: fn(*(getattr(p, f.name) for p in parts)) for f in dataclasses.fields(first)}
      out.append(type(first)(**fields))
  return tuple(out)


def members_of(s: LoopState, ids: Sequence[int]) -> LoopState:
  """The loop state of members ``ids`` of ``s`` (leading axis len(ids))."""
  ids = np.asarray(ids, int)
  take = lambda a: np.asarray(a)[ids]  # noqa: E731
  return s._replace(
    params=jax.tree.map(take, s.params),
    state=jax.tree.map(take, s.state),
    opt_state=jax.tree.map(take, s.opt_state),
    best=None if s.best is None else jax.tree.map(take, s.best),
    rules=map_rule_states(take, s.rules),
    active=take(s.active),
    epochs=take(s.epochs),
    reason=[s.reason[i] for i in ids],
    history=[s.history[i] for i in ids],
    seconds=take(s.seconds),
  )


def concat_states(states: Sequence[LoopState]) -> LoopState:
  """One loop state of the members of several at the same epoch, in order."""
  if len({s.epoch for s in states}) != 1:
    raise ValueError(f"loop states at different epochs: {sorted({s.epoch for s in states})}")
  cat = lambda *xs: np.concatenate([np.asarray(x) for x in xs])  # noqa: E731
  bests = [s.best for s in states]
  return LoopState(
    epoch=states[0].epoch,
    params=jax.tree.map(cat, *(s.params for s in states)),
    state=jax.tree.map(cat, *(s.state for s in states)),
    opt_state=jax.tree.map(cat, *(s.opt_state for s in states)),
    best=None if any(b is None for b in bests) else jax.tree.map(cat, *bests),
    rules=map_rule_states(cat, *(s.rules for s in states)),
    active=cat(*(s.active for s in states)),
    epochs=cat(*(s.epochs for s in states)),
    reason=[r for s in states for r in s.reason],
    history=[h for s in states for h in s.history],
    seconds=cat(*(s.seconds for s in states)),
  )


def fit(
  population: Population,
  data: Data,
  *,
  on_epoch: EpochCallback | None = None,
  vectorize: bool | None = None,
  resume: Sequence[LoopState | None] | None = None,
  on_state: StateCallback | None = None,
) -> FitResult:
  """Train a population (leading axis P on its ``hyper`` and ``keys``) until its stopping rules
  stop every member, and return per-member results.

  Each member's key seeds its init (fold_in 0), shuffling, dropout and augmentation (fold_in 1,
  then per epoch and step). ``vectorize`` trains all members as one vmapped program (default: on
  accelerators) or one by one (default on CPU); both give the same numbers.
  ``on_epoch(epoch, member_ids, metrics)`` is called after every epoch; the member ids it returns
  are the pruner's (mlp.stopping.Pruned). ``population.init(params, state)`` replaces the fresh
  initialisation (leading axis = members), e.g. mlp.transfer.initializer's.

  ``resume[i]``: member i's :class:`LoopState` (leading axis 1) to continue from, or None to
  start it afresh; members resumed at different epochs train as separate programs. ``on_state``
  sees the loop's state after every epoch (mlp.resume writes checkpoints with it). A stop asked
  for by Ctrl-C or SIGTERM (mlp.interrupts) is honoured at the end of an epoch, after
  ``on_state``.
  """
  p = int(np.shape(population.keys)[0])
  if vectorize is None:
    vectorize = jax.default_backend() != "cpu"
  groups = [np.arange(p)] if vectorize else [np.array([i]) for i in range(p)]
  if resume is not None:  # a group's members share the loop's epoch counter
    at = lambda i: resume[i].epoch if resume[i] is not None else 0  # noqa: E731
    groups = [g[[at(i) == e for i in g]] for g in groups for e in sorted({at(i) for i in g})]
  x_tr, y_tr, x_va, y_va = data
  arrays = (
    jnp.asarray(x_tr, DTYPE),
    jnp.asarray(y_tr, jnp.int32),
    jnp.asarray(x_va, DTYPE),
    jnp.asarray(y_va, jnp.int32),
  )
  results = []
  for ids in groups:  # (a loop, not a comprehension: one frame less between a study and a step)
    start = None
    if resume is not None and resume[ids[0]] is not None:
      start = concat_states([resume[i] for i in ids])
    results.append(_fit_group(population, ids, arrays, on_epoch, start, on_state))
  return _concat(results, np.argsort(np.concatenate(groups)))


def _concat(results: Sequence[FitResult], order: np.ndarray | None = None) -> FitResult:
  """One FitResult of the members of several, in order (then reordered by ``order``)."""
  concat = lambda *xs: np.concatenate(xs)  # noqa: E731
  out = FitResult(
    params=jax.tree.map(concat, *(r.params for r in results)),
    state=jax.tree.map(concat, *(r.state for r in results)),
    history=[h for r in results for h in r.history],
    epochs=np.concatenate([r.epochs for r in results]),
    stop_reason=[s for r in results for s in r.stop_reason],
    seconds=np.concatenate([r.seconds for r in results]),
  )
  if order is None or np.array_equal(order, np.arange(len(order))):
    return out
  take = lambda a: a[order]  # noqa: E731
  return FitResult(
    params=jax.tree.map(take, out.params),
    state=jax.tree.map(take, out.state),
    history=[out.history[i] for i in order],
    epochs=out.epochs[order],
    stop_reason=[out.stop_reason[i] for i in order],
    seconds=out.seconds[order],
  )


def _fit_group(
  population: Population,
  ids: np.ndarray,
  data: tuple,
  on_epoch: EpochCallback | None,
  start: LoopState | None = None,
  on_state: StateCallback | None = None,
) -> FitResult:
  """Train the members ``ids`` of ``population`` as one program until every one has stopped,
  from ``start`` (their loop state) or afresh."""
  spec, rules = population.spec, population.stopping
  x_tr, y_tr, x_va, y_va = data
  n = len(ids)
  hyper = jax.tree.map(lambda h: jnp.asarray(np.asarray(h)[ids], DTYPE), population.hyper)
  keys = jnp.asarray(population.keys)[ids]
  keeps_best = rules.find(stopping_lib.Patience) is not None  # the best epoch's params are kept
  if start is None:
    params, state = _init_population(spec.net, keys, DTYPE)
    if population.init is not None:
      params, state = jax.tree.map(lambda a: jnp.asarray(a, DTYPE), population.init(params, state))
    opt_state = jax.vmap(functools.partial(optim.init_state, name=spec.optimizer))(params)
    best = (params, state)  # jnp.where in _select makes new buffers, so this alias is never mutated
    start = LoopState(
      epoch=0,
      params=None,
      state=None,
      opt_state=None,
      best=None,
      rules=rules.init(n),
      active=np.ones(n, bool),
      epochs=np.zeros(n, int),
      reason=[""] * n,
      history=[dict(train_loss=[], val_loss=[], train_acc=[], val_acc=[], lr=[]) for _ in ids],
      seconds=np.zeros(n),
    )
  else:  # the same values the interrupted loop held, so the same numbers follow
    device = lambda t: jax.tree.map(jnp.asarray, t)  # noqa: E731
    params, state, opt_state = device((start.params, start.state, start.opt_state))
    best = device(start.best) if keeps_best else None
  rule_state = start.rules
  active = np.array(start.active, bool)
  epochs = np.array(start.epochs, int)
  reason = list(start.reason)
  history = [{k: list(v) for k, v in h.items()} for h in start.history]
  before = np.array(start.seconds, float)  # training time of earlier attempts
  seconds = before.copy()
  clock = time.perf_counter()
  steps = math.ceil(len(y_tr) / spec.batch_size)  # per epoch (the learning rate logged: step 0's)
  epoch = start.epoch

  def snapshot() -> LoopState:  # host copies: the loop goes on with its device arrays
    host = lambda t: jax.tree.map(np.asarray, t)  # noqa: E731
    now = np.where(active, before + time.perf_counter() - clock, seconds)
    return LoopState(
      epoch,
      *host((params, state, opt_state)),
      host(best) if keeps_best else None,
      rule_state,
      active.copy(),
      epochs.copy(),
      list(reason),
      [{k: list(v) for k, v in h.items()} for h in history],
      now,
    )

  while active.any():
    params, state, opt_state, running = population_epoch(
      spec,
      params,
      state,
      opt_state,
      hyper,
      keys,
      jnp.asarray(epoch, jnp.int32),
      jnp.asarray(active),
      x_tr,
      y_tr,
    )
    if spec.train_metrics == "epoch":  # the epoch's running means: no pass over the training set
      tr_loss, tr_acc = map(np.asarray, running)
    else:  # the training split re-evaluated with the epoch's final params (inference form)
      tr_loss, tr_acc = map(np.asarray, population_evaluate(spec, params, state, hyper, x_tr, y_tr))
    va_loss, va_acc = map(np.asarray, population_evaluate(spec, params, state, hyper, x_va, y_va))
    lr = np.asarray(optim.step_learning_rates(spec.schedule, hyper, epoch, steps)[0])
    metrics = dict(train_loss=tr_loss, val_loss=va_loss, train_acc=tr_acc, val_acc=va_acc, lr=lr)
    epoch += 1
    act = np.flatnonzero(active)
    for i in act:
      for name, values in metrics.items():
        history[i][name].append(float(values[i]))
      epochs[i] = epoch
    asked = on_epoch(epoch, ids[act], {k: v[act] for k, v in metrics.items()}) if on_epoch else ()
    pruned = np.isin(ids, np.asarray(list(asked or ()), int))
    rule_state, stops = rules.update(rule_state, epoch, {**metrics, "pruned": pruned})
    if keeps_best:
      improved = active & rules.state_of(rule_state, stopping_lib.Patience).improved
      best = _select(jnp.asarray(improved), (params, state), best)
    for i in act:
      if stops[i]:
        reason[i], active[i] = stops[i], False
        seconds[i] = before[i] + time.perf_counter() - clock
    stop = interrupts.requested()  # a Ctrl-C or SIGTERM during the epoch: stop here
    if on_state is not None:
      on_state(ids, snapshot, stop is not None or not active.any())
    if stop is not None:
      interrupts.stop_now()
  final = best if keeps_best else (params, state)
  return FitResult(
    params=jax.tree.map(np.asarray, final[0]),
    state=jax.tree.map(np.asarray, final[1]),
    history=history,
    epochs=epochs,
    stop_reason=reason,
    seconds=seconds,
  )


def chosen_epochs(history: dict[str, list[float]], rules: stopping_lib.Chain, epochs: int) -> int:
  """The epoch count that validation chose: the best monitored epoch under a patience rule (whose
  params :func:`fit` restores; the first on ties), else the ``epochs`` trained."""
  patience = rules.find(stopping_lib.Patience)
  if patience is None or not history.get(patience.monitor):
    return int(epochs)
  scores = patience.score({patience.monitor: np.asarray(history[patience.monitor], np.float64)})
  return int(np.argmin(np.where(np.isfinite(scores), scores, np.inf))) + 1


def refit(population: Population, data: Data, epochs: Sequence[int]) -> FitResult:
  """Train each member again, from its own seed, on train + validation for ``epochs[i]`` epochs.

  The standard last step once hyperparameters and the epoch count are chosen on validation
  (:func:`chosen_epochs`): the final model sees every labelled row but the test split. No early
  stopping (validation is now training data), only the divergence rule and the epoch count; the
  history's "val" entries are measured on the validation rows, which the model trains on, so they
  no longer estimate anything.
  """
  x_tr, y_tr, x_va, y_va = data
  both = (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), x_va, y_va)
  diverged = [r for r in population.stopping.rules if isinstance(r, stopping_lib.Diverged)]
  parts = []
  for i, n in enumerate(epochs):
    one = population._replace(
      hyper=jax.tree.map(lambda h, i=i: np.asarray(h)[i : i + 1], population.hyper),
      keys=jnp.asarray(population.keys)[i : i + 1],
      stopping=stopping_lib.chain(*diverged, stopping_lib.MaxEpochs(int(n))),
    )
    parts.append(fit(one, both, vectorize=False))
  return _concat(parts)


def log_probs(
  spec: Spec,
  params: model.Params,
  state: model.State,
  hyper: Hyper,
  x: np.ndarray,
  dtype=jnp.float32,
) -> np.ndarray:
  """(N, C) log-probabilities of one trained run (no population axis) on x."""
  if len(x) == 0:
    return np.zeros((0, spec.net.num_classes), np.float32)
  one = jax.tree.map(lambda a: jnp.asarray(a)[None], (params, state, hyper))
  return np.asarray(population_log_probs(spec, *one, jnp.asarray(x, dtype))[0])
