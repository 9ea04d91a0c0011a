"""Optimisers (Nesterov, Adam, AdamW next to Eq. 4's heavy ball), schedules and label smoothing
in training: each rule equals optax's own, schedules match their formulas, values never
recompile."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mlp import model, optim, plan, train
from tests.test_train import blobs, fit, layer_hyper, spec


def _params():
  params, _ = model.init(jax.random.key(0), model.parse("dense6 relu dense", (5,), 3)[0])
  return params


def _grads(params, k):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(100 + k), len(leaves))
  return tree.unflatten([jax.random.normal(q, a.shape) for q, a in zip(keys, leaves, strict=True)])


def _run(tx, params, steps=4):
  state = tx.init(params)
  for k in range(steps):
    updates, state = tx.update(_grads(params, k), state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize(
  "name,reference",
  [
    ("nesterov", lambda: optax.sgd(0.05, momentum=0.8, nesterov=True)),
    ("adam", lambda: optax.adam(0.05, b1=0.8, b2=0.99)),
    ("adamw", lambda: optax.adamw(0.05, b1=0.8, b2=0.99, weight_decay=0.1, mask=model.weight_mask)),
  ],
)
def test_each_rule_equals_optax_own(name, reference):
  params = _params()
  l2 = 0.1 if name == "adamw" else 0.0  # adamw: decoupled decay on the weights only
  ours = _run(
    optim.optimizer(name, jnp.asarray(0.05), jnp.asarray(0.8), l2, jnp.asarray(0.99)), params
  )
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(_run(reference(), params)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_coupled_l2_adds_lambda_w_to_weight_gradients_only():
  params = _params()
  g = _grads(params, 0)
  updates, _ = optim.l2_penalty(0.5).update(g, optim.l2_penalty(0.5).init(params), params)
  for u, gg, p, is_w in zip(
    *(jax.tree.leaves(t) for t in (updates, g, params, model.weight_mask(params))), strict=True
  ):
    np.testing.assert_allclose(u, gg + 0.5 * p if is_w else gg, rtol=1e-6)


def _hyper(**kw):
  base = dict(learning_rate=0.1, lr_decay=0.9, horizon=10.0)
  return jax.tree.map(jnp.asarray, train.make_hyper(**{**base, **kw}))


def test_schedules_follow_their_formulas():
  steps = 4
  decay = optim.step_learning_rates("epoch_decay", _hyper(), jnp.asarray(2), steps)
  assert np.array_equal(decay, np.full(steps, np.float32(0.1) * np.float32(0.9) ** 2))
  cos = optim.step_learning_rates("cosine", _hyper(), jnp.asarray(5), steps)
  t = 5 + np.arange(steps) / steps
  np.testing.assert_allclose(cos, 0.1 * (1 + np.cos(np.pi * t / 10)) / 2, rtol=1e-6)
  assert float(optim.step_learning_rates("cosine", _hyper(), jnp.asarray(12), 1)[0]) == 0.0
  # Warm-up: per step under cosine, per epoch under epoch_decay (its rate is one per epoch).
  warm = optim.step_learning_rates("cosine", _hyper(warmup=2.0, horizon=1e9), 0, steps)
  np.testing.assert_allclose(warm, 0.1 * (np.arange(steps) + 1) / (2 * steps), rtol=1e-6)
  warm = [optim.decay_rate(_hyper(lr_decay=1.0, warmup=2.0), e) for e in range(3)]
  np.testing.assert_allclose(warm, [0.05, 0.1, 0.1], rtol=1e-7)
  assert optim.decay_rate(_hyper(), 2) == np.float32(0.1) * np.float32(0.9) ** 2  # warmup 0: x 1


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam", "adamw"])
def test_every_rule_learns_with_cosine_warmup_and_smoothing(optimizer):
  x, y = blobs(300)
  sp = spec(20, optimizer=optimizer, schedule="cosine")
  lr = 0.01 if optimizer.startswith("adam") else 0.1
  hyper = train.stack(
    [
      train.make_hyper(
        learning_rate=lr,
        momentum=0.9,
        l2=1e-4,
        layers=layer_hyper(sp.net),
        smoothing=0.1,
        warmup=1.0,
        horizon=8.0,
      )
    ]
  )
  res = fit(sp, hyper, jax.random.split(jax.random.key(0), 1), (x, y, x, y), max_epochs=8)
  assert res.history[0]["val_acc"][-1] > 0.9
  assert res.history[0]["lr"][0] < lr / 2 < res.history[0]["lr"][1]  # warming up, then cosine


def test_switching_optimiser_values_within_a_shape_group_never_recompiles():
  x, y = blobs(64)
  data = (x, y, x[:16], y[:16])
  keys = jax.random.split(jax.random.key(0), 1)
  sp = spec(16, optimizer="adamw", schedule="cosine")

  def hyper(lr, mu, l2, beta2, eps, warmup, horizon):
    return train.stack(
      [
        train.make_hyper(
          learning_rate=lr,
          momentum=mu,
          l2=l2,
          layers=layer_hyper(sp.net),
          beta2=beta2,
          smoothing=eps,
          warmup=warmup,
          horizon=horizon,
        )
      ]
    )

  fit(sp, hyper(0.01, 0.9, 0.0, 0.999, 0.0, 0.0, 3), keys, data, max_epochs=1)
  sizes = train.population_epoch._cache_size(), train.population_evaluate._cache_size()
  for values in [(0.003, 0.5, 0.1, 0.99, 0.2, 1.0, 5), (0.1, 0.0, 1e-3, 0.9, 0.05, 0.5, 2)]:
    fit(sp, hyper(*values), keys, data, max_epochs=2)
  assert (train.population_epoch._cache_size(), train.population_evaluate._cache_size()) == sizes
  # The rule itself is static: another optimiser is another program (the counter can move).
  fit(spec(16, optimizer="nesterov"), hyper(*values), keys, data, max_epochs=1)
  assert train.population_epoch._cache_size() == sizes[0] + 1


def test_config_fields_reach_the_run_and_bad_values_are_said():
  from configs import har

  def planned(cfg):
    return plan.build(plan.study_plan(cfg).runs[:1], (561,), 6)[0]

  cfg = har.get_config("quick")
  assert planned(cfg).spec.optimizer == "sgd"
  assert not {"optimizer", "schedule", "label_smoothing"} & set(planned(cfg).describe()["hparams"])
  changed = ml_collections.ConfigDict(cfg.to_dict())
  changed.train.optimizer, changed.train.schedule, changed.train.label_smoothing = (
    "adam",
    "cosine",
    0.1,
  )
  p = planned(changed)
  assert (p.spec.optimizer, p.spec.schedule, float(p.hyper.smoothing), float(p.hyper.horizon)) == (
    "adam",
    "cosine",
    np.float32(0.1),
    float(changed.train.max_epochs),
  )
  hp = plan.hparams(p.run)
  assert hp["optimizer"] == "adam" and hp["schedule"] == "cosine" and hp["label_smoothing"] == 0.1
  changed.train.optimizer = "rmsprop"
  with pytest.raises(ValueError, match="optimizer must be one of sgd, nesterov, adam, adamw"):
    planned(changed)
  changed.train.optimizer, changed.train.label_smoothing = "sgd", 1.0
  with pytest.raises(ValueError, match="label_smoothing must be in"):
    planned(changed)
