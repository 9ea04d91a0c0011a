"""The optimizer (Eq. 4), the jitted epoch, early stopping, populations and compile caching."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlp import layers, model, optim, train
from mlp import stopping as stopping_lib
from mlp.defaults import DEFAULTS


def blobs(n, d=12, c=3, seed=0, noise=1.0):
  """Gaussian class blobs (centers fixed, samples drawn with ``seed``): a learnable problem."""
  centers = np.random.default_rng(12345).normal(size=(c, d)) * 2
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, n)
  return (centers[y] + noise * rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int32)


def mlp(n_in=12, hidden=(8,), classes=3, dropout="none"):
  """An MLP network; with dropout, a dropout layer before every Dense layer (rates in the hyper)."""
  rates = (0.1 if dropout != "none" else 0.0,) * (len(hidden) + 1)
  arch = model.mlp_architecture((n_in,), hidden, rates)
  return model.parse(arch, (n_in,), classes, dropout="regular" if dropout == "none" else dropout)[0]


def spec(batch_size, n_in=12, hidden=(8,), classes=3, dropout="none", **kwargs):
  return train.Spec(net=mlp(n_in, hidden, classes, dropout), batch_size=batch_size, **kwargs)


def layer_hyper(net, rates=()):
  """Per-layer hyperparameters: ``rates`` for the dropout layers in order, defaults elsewhere."""
  it = iter(rates)
  return tuple(next(it) if layer.kind == "dropout" else layer.hyper for layer in net.layers)


def fit(sp, hyper, keys, data, *, max_epochs, stopping=(), diverge=DEFAULTS.train.diverge, **kw):
  """train.fit of the population (sp, hyper, keys) with the studies' chain of stopping rules
  (mlp.plan): divergence, then ``stopping``, pruning and the epoch budget."""
  rules = stopping_lib.chain(
    stopping_lib.Diverged(diverge * math.log(sp.net.num_classes)),
    *stopping,
    stopping_lib.Pruned(),
    stopping_lib.MaxEpochs(max_epochs),
  )
  return train.fit(train.Population(sp, hyper, keys, rules), data, **kw)


def test_optax_path_equals_eq4_written_out():
  """W <- W + dW + mu dW_prev;  dW_prev <- dW + mu dW_prev,  with dW = -eta (g + lambda W)."""
  with jax.enable_x64(True):
    params, _ = model.init(jax.random.key(0), mlp(5, (4,), 3), jnp.float64)
    params = tuple(p for p in params if p)  # the Dense layers' WB
    lr, mu, l2 = 0.05, 0.09, 0.01
    tx = optim.heavy_ball(jnp.asarray(lr), jnp.asarray(mu), jnp.asarray(l2))
    state = tx.init(params)
    opt_params = params
    lit_params = jax.tree.map(np.asarray, params)
    prev = jax.tree.map(np.zeros_like, lit_params)
    for t in range(6):
      grads = jax.tree.map(
        lambda p, t=t: np.asarray(jax.random.normal(jax.random.key(t), p.shape)), lit_params
      )
      updates, state = tx.update(grads, state, opt_params)
      opt_params = optax.apply_updates(opt_params, updates)
      new_lit, new_prev = [], []
      for layer, g, dprev in zip(lit_params, grads, prev, strict=True):
        dw = -lr * (g.w + l2 * layer.w)  # L2 on weights only
        db = -lr * g.b
        new_lit.append(layers.WB(layer.w + dw + mu * dprev.w, layer.b + db + mu * dprev.b))
        new_prev.append(layers.WB(dw + mu * dprev.w, db + mu * dprev.b))
      lit_params, prev = tuple(new_lit), tuple(new_prev)
    for a, b in zip(jax.tree.leaves(opt_params), jax.tree.leaves(lit_params), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_epoch_learning_rate_decay():
  lrs = [float(optim.epoch_learning_rate(0.1, 0.9, e)) for e in range(4)]
  np.testing.assert_allclose(lrs, [0.1, 0.09, 0.081, 0.0729], rtol=1e-6)


@pytest.mark.parametrize(
  "n,batch_size", [(10, 3), (8, 4), (5, 1), (4, 10), (7, 16)]
)  # bs > n: one step
def test_epoch_equals_reference_loop_with_partial_batch(n, batch_size):
  """The scanned epoch equals a plain Python loop of jax.grad steps over the same batches."""
  with jax.enable_x64(True):
    x, y = blobs(n, d=6, c=3, seed=1)
    x = jnp.asarray(x, jnp.float64)
    sp = spec(batch_size, 6, (5,), 3)
    net = sp.net
    params, state = model.init(jax.random.key(3), net, jnp.float64)
    hyper = jax.tree.map(
      jnp.asarray,
      train.make_hyper(
        learning_rate=0.1,
        momentum=0.5,
        l2=0.01,
        lr_decay=0.9,
        layers=layer_hyper(net),
        dtype=np.float64,
      ),
    )
    key, epoch = jax.random.key(4), jnp.asarray(2)
    out, _, _, (mean_loss, _) = train._train_epoch(
      sp, params, state, optim.init_state(params), hyper, key, epoch, x, jnp.asarray(y)
    )
    # Reference: same permutation, last batch shorter, literal Eq. 4 with eta decayed twice.
    epoch_key = jax.random.fold_in(key, epoch)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(epoch_key, 0), n))
    lr = 0.1 * 0.9**2
    ref, velocity, total = params, jax.tree.map(jnp.zeros_like, params), 0.0
    steps = math.ceil(n / batch_size)
    for s in range(steps):
      idx = perm[s * batch_size : (s + 1) * batch_size]
      loss, g = jax.value_and_grad(model.loss, argnums=1)(
        net, ref, state, x[idx], jnp.asarray(y)[idx], hyper.layers, l2=0.01
      )
      total += float(loss - model.l2_penalty(ref, 0.01)) * len(idx)
      velocity = jax.tree.map(lambda g, v: -lr * g + 0.5 * v, g, velocity)
      ref = jax.tree.map(jnp.add, ref, velocity)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(mean_loss), total / n, rtol=1e-10)


def _hypers(sp, lrs, dropout=()):
  per_layer = layer_hyper(sp.net, dropout)
  return train.stack(
    [train.make_hyper(learning_rate=lr, momentum=0.5, layers=per_layer) for lr in lrs]
  )


def test_no_recompile_when_only_hyperparameter_values_change():
  x, y = blobs(64)
  sp = spec(16, dropout="inverted")
  keys = jax.random.split(jax.random.key(0), 1)
  data = (x, y, x[:16], y[:16])
  fit(sp, _hypers(sp, [0.1], (0.2, 0.1)), keys, data, max_epochs=1)
  sizes = train.population_epoch._cache_size(), train.population_evaluate._cache_size()
  for lr, rates in [(0.01, (0.0, 0.5)), (0.3, (0.4, 0.0))]:
    fit(sp, _hypers(sp, [lr], rates), keys, data, max_epochs=2)
  assert (train.population_epoch._cache_size(), train.population_evaluate._cache_size()) == sizes
  # ...while a new static shape does compile a new program (so the counter can move).
  other = spec(8)
  fit(other, _hypers(other, [0.1]), keys, data, max_epochs=1)
  assert train.population_epoch._cache_size() == sizes[0] + 1


def test_same_seed_same_numbers():
  x, y = blobs(60)
  sp = spec(7, dropout="regular")
  keys = jax.random.split(jax.random.key(5), 1)
  hyper = _hypers(sp, [0.05], (0.3, 0.3))
  a = fit(sp, hyper, keys, (x, y, x, y), max_epochs=3)
  b = fit(sp, hyper, keys, (x, y, x, y), max_epochs=3)
  other = jax.random.split(jax.random.key(6), 1)
  c = fit(sp, hyper, other, (x, y, x, y), max_epochs=3)
  assert a.history == b.history
  for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
    np.testing.assert_array_equal(p, q)
  assert a.history[0]["train_loss"] != c.history[0]["train_loss"]


def test_population_of_three_equals_three_single_runs():
  x, y = blobs(90, seed=2)
  xv, yv = blobs(30, seed=3)
  spec = train.Spec(net=mlp(12, (10,), 3, "inverted"), batch_size=8)
  hyper = train.stack(
    [
      train.make_hyper(
        learning_rate=lr, momentum=mu, l2=l2, lr_decay=dec, layers=layer_hyper(spec.net, (r, 0.0))
      )
      for lr, mu, l2, dec, r in [
        (0.05, 0.0, 0.0, 1.0, 0.0),
        (0.02, 0.5, 1e-3, 0.9, 0.2),
        (0.1, 0.09, 0.0, 0.95, 0.4),
      ]
    ]
  )
  keys = jax.random.split(jax.random.key(1), 3)
  stopping = (stopping_lib.Patience(2, "val_loss"),)
  pop = fit(spec, hyper, keys, (x, y, xv, yv), max_epochs=6, stopping=stopping, vectorize=True)
  for i in range(3):
    one = fit(
      spec,
      jax.tree.map(lambda a, i=i: a[i : i + 1], hyper),
      keys[i : i + 1],
      (x, y, xv, yv),
      max_epochs=6,
      stopping=stopping,
      vectorize=False,
    )
    assert one.epochs[0] == pop.epochs[i]
    assert one.stop_reason[0] == pop.stop_reason[i]
    for name, values in one.history[0].items():
      np.testing.assert_allclose(values, pop.history[i][name], rtol=1e-5, atol=1e-6, err_msg=name)
    for p, q in zip(jax.tree.leaves(one.params), jax.tree.leaves(pop.params), strict=True):
      np.testing.assert_allclose(p[0], q[i], rtol=1e-4, atol=1e-6)
  # The one-by-one default on CPU agrees too.
  seq = fit(spec, hyper, keys, (x, y, xv, yv), max_epochs=6, stopping=stopping, vectorize=False)
  assert list(seq.epochs) == list(pop.epochs)


def test_learns_blobs():
  x, y = blobs(300, noise=0.5)
  xv, yv = blobs(100, noise=0.5, seed=9)
  sp = spec(10, hidden=(16,))
  res = fit(
    sp, _hypers(sp, [0.05]), jax.random.split(jax.random.key(0), 1), (x, y, xv, yv), max_epochs=5
  )
  assert res.history[0]["val_acc"][-1] > 0.9
  assert res.history[0]["train_loss"][-1] < res.history[0]["train_loss"][0]


def test_gap_stopping_waits_for_min_epoch_then_stops():
  # Tiny training set, larger noisy val set: the train/val gap opens quickly.
  x, y = blobs(12, noise=2.0)
  xv, yv = blobs(200, noise=2.0, seed=4)
  sp = spec(4, hidden=(32,))
  res = fit(
    sp,
    _hypers(sp, [0.1]),
    jax.random.split(jax.random.key(0), 1),
    (x, y, xv, yv),
    max_epochs=30,
    stopping=(stopping_lib.Gap(0.05, 5),),
  )
  h = res.history[0]
  assert res.stop_reason == ["gap"]
  stop = int(res.epochs[0])
  assert stop > 5 and len(h["val_loss"]) == stop
  assert abs(h["val_loss"][-1] - h["train_loss"][-1]) > 0.05
  for e in range(5, stop - 1):  # no earlier epoch after min_epoch had crossed the gap
    assert abs(h["val_loss"][e] - h["train_loss"][e]) <= 0.05


def test_patience_stops_and_restores_best_epoch():
  x, y = blobs(12, noise=2.0)
  xv, yv = blobs(200, noise=2.0, seed=4)
  sp = spec(4, hidden=(32,))
  keys = jax.random.split(jax.random.key(0), 1)
  res = fit(
    sp,
    _hypers(sp, [0.1]),
    keys,
    (x, y, xv, yv),
    max_epochs=60,
    stopping=(stopping_lib.Patience(3, "val_loss"),),
  )
  h = res.history[0]
  assert res.stop_reason == ["patience"]
  best = int(np.argmin(h["val_loss"]))
  assert len(h["val_loss"]) == best + 1 + 3
  hyper1 = jax.tree.map(lambda a: a[0], _hypers(sp, [0.1]))
  params, state = jax.tree.map(lambda a: a[0], (res.params, res.state))
  logp = train.log_probs(sp, params, state, hyper1, xv)
  restored_loss = -np.mean(logp[np.arange(len(yv)), yv])
  np.testing.assert_allclose(restored_loss, h["val_loss"][best], rtol=1e-5)


def test_diverged_run_is_marked_and_others_continue():
  x, y = blobs(40)
  spec = train.Spec(net=mlp(), batch_size=4)
  hyper = train.stack(
    [
      train.make_hyper(learning_rate=lr, momentum=0.9, layers=layer_hyper(spec.net))
      for lr in (1e30, 0.01)
    ]
  )
  res = fit(spec, hyper, jax.random.split(jax.random.key(0), 2), (x, y, x, y), max_epochs=4)
  assert res.stop_reason[0] == "diverged"
  assert res.epochs[0] < 4 or not np.isfinite(res.history[0]["train_loss"][-1])
  assert res.stop_reason[1] == "max_epochs" and res.epochs[1] == 4


def test_make_hyper_rejects_bad_values():
  for bad in [
    dict(learning_rate=0),
    dict(momentum=1.0),
    dict(l2=-1),
    dict(lr_decay=1.5),
  ]:
    kwargs = dict(learning_rate=0.1) | bad
    with pytest.raises(ValueError):
      train.make_hyper(**kwargs)
  with pytest.raises(ValueError, match="dropout rates must be in"):
    model.parse("dropout1.0 dense", (4,), 2)


def test_spec_rejects_bad_values():
  with pytest.raises(ValueError, match="softmax_grad"):
    spec(1, softmax_grad="approx")
  with pytest.raises(ValueError, match="batch_size"):
    spec(0)
  with pytest.raises(ValueError, match="needs image inputs"):
    spec(4, flip=True)
  with pytest.raises(ValueError, match="shift must be >= 0"):
    train.Spec(net=model.parse("flatten dense", (4, 4, 1), 2)[0], batch_size=1, shift=-1)


def test_patience_on_validation_accuracy_restores_best_accuracy_epoch():
  x, y = blobs(12, noise=2.0)
  xv, yv = blobs(200, noise=2.0, seed=4)
  sp = spec(4, hidden=(32,))
  keys = jax.random.split(jax.random.key(0), 1)
  stopping = (stopping_lib.Patience(3, "val_acc"),)
  res = fit(sp, _hypers(sp, [0.1]), keys, (x, y, xv, yv), max_epochs=60, stopping=stopping)
  h = res.history[0]
  best = int(np.argmax(h["val_acc"]))  # first epoch reaching the maximum
  assert res.stop_reason == ["patience"] and len(h["val_acc"]) == best + 1 + 3
  hyper1 = jax.tree.map(lambda a: a[0], _hypers(sp, [0.1]))
  params, state = jax.tree.map(lambda a: a[0], (res.params, res.state))
  logp = train.log_probs(sp, params, state, hyper1, xv)
  np.testing.assert_allclose(np.mean(logp.argmax(1) == yv), h["val_acc"][best], rtol=1e-6)
  with pytest.raises(ValueError, match="monitor"):
    stopping_lib.Patience(3, "train_acc")


# ------------------------------------------------------------------------------- CNNs

CNN = (
  "conv3 bn relu maxpool3/s2 conv4/3x3/s2/valid relu avgpool2/s1 flatten dropout0.3 dense5 bn "
  "relu dense"
)


def images(n, seed=0, size=11, c=2, classes=3):
  """Flat rows of (size, size, c) images whose class sets the mean of one quadrant."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  x = rng.normal(size=(n, size, size, c)) * 0.5
  for k in range(classes):
    x[y == k, : size // 2, : size // 2, :] += k
  return x.reshape(n, -1).astype(np.float32), y.astype(np.int32)


def cnn_spec(batch_size=8, **kwargs):
  return train.Spec(
    net=model.parse(CNN, (11, 11, 2), 3, dropout="inverted")[0], batch_size=batch_size, **kwargs
  )


def cnn_hypers(sp, rows):
  """One Hyper per (lr, dropout rate, bn momentum) row, stacked."""
  return train.stack(
    [
      train.make_hyper(
        learning_rate=lr,
        momentum=0.9,
        layers=tuple(
          rate if layer.kind == "dropout" else bn if layer.kind == "bn" else layer.hyper
          for layer in sp.net.layers
        ),
      )
      for lr, rate, bn in rows
    ]
  )


def test_cnn_population_equals_single_runs_and_threads_batchnorm_state():
  x, y = images(64)
  xv, yv = images(32, seed=1)
  sp = cnn_spec(flip=True, shift=1)
  hyper = cnn_hypers(sp, [(0.05, 0.3, 0.9), (0.02, 0.0, 0.5)])
  keys = jax.random.split(jax.random.key(2), 2)
  pop = fit(sp, hyper, keys, (x, y, xv, yv), max_epochs=3, vectorize=True)
  for i in range(2):
    one = fit(
      sp,
      jax.tree.map(lambda a, i=i: a[i : i + 1], hyper),
      keys[i : i + 1],
      (x, y, xv, yv),
      max_epochs=3,
      vectorize=False,
    )
    for name, values in one.history[0].items():
      np.testing.assert_allclose(values, pop.history[i][name], rtol=1e-4, atol=1e-5, err_msg=name)
    for p, q in zip(jax.tree.leaves(one.state), jax.tree.leaves(pop.state), strict=True):
      np.testing.assert_allclose(p[0], q[i], rtol=1e-4, atol=1e-5)
  # The running statistics moved away from their start (mean 0, var 1) during training.
  bn = [i for i, layer in enumerate(sp.net.layers) if layer.kind == "bn"]
  assert all(np.abs(pop.state[i].mean).max() > 1e-3 for i in bn)
  # Evaluation uses them: log_probs with the trained state reproduces the last val accuracy.
  params, state = jax.tree.map(lambda a: a[0], (pop.params, pop.state))
  logp = train.log_probs(sp, params, state, jax.tree.map(lambda a: a[0], hyper), xv)
  np.testing.assert_allclose(np.mean(logp.argmax(1) == yv), pop.history[0]["val_acc"][-1])


def test_cnn_patience_restores_the_best_epochs_params_and_batchnorm_state():
  x, y = images(48, seed=3)
  xv, yv = images(64, seed=4)
  sp = cnn_spec()
  hyper = cnn_hypers(sp, [(0.3, 0.3, 0.5)])
  stopping = (stopping_lib.Patience(2, "val_loss"),)
  keys = jax.random.split(jax.random.key(0), 1)
  res = fit(sp, hyper, keys, (x, y, xv, yv), max_epochs=30, stopping=stopping)
  h = res.history[0]
  best = int(np.argmin(h["val_loss"]))
  assert res.stop_reason == ["patience"] and best < len(h["val_loss"]) - 1
  params, state = jax.tree.map(lambda a: a[0], (res.params, res.state))
  logp = train.log_probs(sp, params, state, jax.tree.map(lambda a: a[0], hyper), xv)
  np.testing.assert_allclose(-np.mean(logp[np.arange(len(yv)), yv]), h["val_loss"][best], rtol=1e-5)


def test_batchnorm_state_is_not_touched_by_the_optimizer_or_l2():
  """An epoch at learning rate ~0 leaves the params but still updates the running statistics
  exactly as the forward pass does; L2 and heavy-ball only see params."""
  x, y = images(16)
  sp = cnn_spec(batch_size=16)
  net = sp.net
  params, state = model.init(jax.random.key(0), net)
  hyper = train.make_hyper(
    learning_rate=1e-30, l2=0.5, layers=cnn_hypers(sp, [(1, 0.0, 0.5)]).layers
  )
  hyper = jax.tree.map(lambda a: jnp.asarray(a[0]) if np.ndim(a) else jnp.asarray(a), hyper)
  new_params, new_state, _, _ = train._train_epoch(
    sp,
    params,
    state,
    optim.init_state(params),
    hyper,
    jax.random.key(1),
    0,
    jnp.asarray(x),
    jnp.asarray(y),
  )
  for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(new_params), strict=True):
    np.testing.assert_allclose(p, q, atol=1e-20)
  bn = [i for i, layer in enumerate(net.layers) if layer.kind == "bn"]
  first = net.layers[bn[0]]
  conv = net.layers[0].forward(
    params[0], (), (), jnp.asarray(x).reshape(16, 11, 11, 2), True, None
  )[0]
  _, _, expected = first.forward(params[1], state[1], 0.5, conv, True, None)
  np.testing.assert_allclose(new_state[1].mean, expected.mean, rtol=1e-5, atol=1e-7)
  assert optim.init_state(params).previous is not None  # the optimizer state mirrors params only
  assert jax.tree.structure(optim.init_state(params).previous) == jax.tree.structure(params)


def test_cnn_no_recompile_for_new_rates_momenta_or_learning_rates():
  x, y = images(32)
  sp = cnn_spec()
  keys = jax.random.split(jax.random.key(0), 1)
  data = (x, y, x[:8], y[:8])
  fit(sp, cnn_hypers(sp, [(0.1, 0.2, 0.9)]), keys, data, max_epochs=1)
  sizes = train.population_epoch._cache_size(), train.population_evaluate._cache_size()
  for row in [(0.01, 0.5, 0.99), (0.3, 0.0, 0.1)]:
    fit(sp, cnn_hypers(sp, [row]), keys, data, max_epochs=1)
  assert (train.population_epoch._cache_size(), train.population_evaluate._cache_size()) == sizes


def test_augment_flips_and_shifts_within_k_pixels():
  sp = train.Spec(
    net=model.parse("flatten dense", (5, 6, 1), 2)[0], batch_size=4, flip=True, shift=2
  )
  img = np.arange(30, dtype=np.float32).reshape(1, 5, 6, 1) + 1
  x = jnp.asarray(np.repeat(img, 200, 0).reshape(200, -1))
  out = np.asarray(train.augment(sp, jax.random.key(0), x)).reshape(200, 5, 6)
  flips = shifts = 0
  for o in out:
    matches = [
      (flip, (dy, dx))
      for flip, source in enumerate((img[0, :, :, 0], img[0, :, ::-1, 0]))
      for dy in range(5)
      for dx in range(5)
      if np.array_equal(np.pad(source, 2)[dy : dy + 5, dx : dx + 6], o)
    ]
    assert matches, "an augmented image is not a flip + shift of the original within 2 pixels"
    flips += matches[0][0]
    shifts += matches[0][1] != (2, 2)
  assert 60 < flips < 140 and shifts > 150  # both happen, about half the images mirrored
  none = train.Spec(net=sp.net, batch_size=4)
  np.testing.assert_array_equal(train.augment(none, jax.random.key(0), x), x)


def test_a_runaway_but_finite_loss_is_diverged():
  """lr 10: after one epoch the loss is ~1e15 and still finite; it must not pass as a run that
  trained (runaway losses used to show as "ok")."""
  x, y = blobs(40)
  spec = train.Spec(net=mlp(), batch_size=4)
  hyper = train.stack([train.make_hyper(learning_rate=10.0, layers=layer_hyper(spec.net))])
  keys = jax.random.split(jax.random.key(0), 1)
  loose = 1e30  # the old rule: only a non-finite loss counts
  old = fit(spec, hyper, keys, (x, y, x, y), max_epochs=1, diverge=loose)
  assert np.isfinite(old.history[0]["train_loss"]).all() and old.stop_reason == ["max_epochs"]
  assert old.history[0]["train_loss"][-1] > 100 * np.log(3)
  new = fit(spec, hyper, keys, (x, y, x, y), max_epochs=1)
  assert new.stop_reason == ["diverged"]
  with pytest.raises(ValueError, match="diverge"):
    stopping_lib.Diverged(0.0)


@pytest.mark.parametrize("vectorize", [False, True])
def test_members_named_by_on_epoch_stop_there_as_pruned_and_the_rest_go_on(vectorize):
  x, y = blobs(40)
  spec = train.Spec(net=mlp(), batch_size=4)
  hyper = train.stack(
    [train.make_hyper(learning_rate=0.01, layers=layer_hyper(spec.net)) for _ in range(3)]
  )
  asked = []

  def on_epoch(epoch, members, metrics):
    asked.append((epoch, [int(m) for m in members]))
    return [1] if epoch == 2 else None  # the pruner stops member 1 after its second epoch

  keys = jax.random.split(jax.random.key(0), 3)
  res = fit(spec, hyper, keys, (x, y, x, y), max_epochs=4, vectorize=vectorize, on_epoch=on_epoch)
  assert res.stop_reason == ["max_epochs", "pruned", "max_epochs"]
  assert res.epochs.tolist() == [4, 2, 4]
  assert len(res.history[1]["val_acc"]) == 2
  # Member 1 is never asked again after it was pruned.
  assert all(1 not in members for epoch, members in asked if epoch > 2)
  # Pruning one member does not change the others' numbers (vmapped or not).
  plain = fit(spec, hyper, keys, (x, y, x, y), max_epochs=4, vectorize=vectorize)
  for i in (0, 2):
    np.testing.assert_allclose(res.history[i]["val_loss"], plain.history[i]["val_loss"])


@pytest.mark.parametrize("vectorize", [False, True])
def test_a_pruner_stops_a_member_under_the_gap_rule_past_its_min_epoch(vectorize):
  """Gap and pruning are separate rules: past gap_min_epoch, a member whose train/val gap is still
  small is stopped by the pruner. (It used to run to max_epochs: once past min_epoch the gap
  branch of the stopping if/elif chain was always taken, and the pruner's verdict never read.)"""
  x, y = blobs(40)
  sp = train.Spec(net=mlp(), batch_size=4)
  hyper = train.stack(
    [train.make_hyper(learning_rate=0.01, layers=layer_hyper(sp.net)) for _ in range(3)]
  )
  keys = jax.random.split(jax.random.key(0), 3)
  never_wide = (stopping_lib.Gap(10.0, 1),)  # a gap no loss reaches: only the pruner stops

  def on_epoch(epoch, members, metrics):
    return [1] if epoch == 3 else None  # past min_epoch 1

  res = fit(
    sp,
    hyper,
    keys,
    (x, y, x, y),
    max_epochs=5,
    stopping=never_wide,
    vectorize=vectorize,
    on_epoch=on_epoch,
  )
  assert res.stop_reason == ["max_epochs", "pruned", "max_epochs"]
  assert res.epochs.tolist() == [5, 3, 5]
