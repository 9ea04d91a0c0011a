"""Transfer learning: frozen layers (backward, optimizer), init from a saved model, class subsets,
and the add-a-class experiment end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fer2013_transfer
from mlp import checkpoint, inference, layers, model, optim, plan, train, transfer, transfer_study
from mlp import data as data_lib
from tests.data_fixtures import write_fake_fer
from tests.gradcheck import assert_close, float64  # noqa: F401 (autouse fixture)
from tests.test_layers import CNN, setup_cnn
from tests.test_train import fit as fit_with_rules

# CNN layers: 0 conv3, 1 bn, 2 relu, 3 maxpool, 4 conv4, 5 relu, 6 avgpool, 7 flatten,
# 8 dropout, 9 dense6, 10 bn, 11 relu, 12 dense.
FROZEN = frozenset({0, 1, 4})


def frozen_loss_grad(net, params, state, x, y, hyper, frozen, key):
  """jax.grad of the loss with frozen layers in inference form; their gradients set to zero."""
  g = jax.grad(model.loss, argnums=1)(
    net, params, state, x, y, hyper, train=True, key=key, frozen=frozen
  )
  return tuple(jax.tree.map(jnp.zeros_like, p) if i in frozen else p for i, p in enumerate(g))


@pytest.mark.parametrize(
  "frozen", [FROZEN, frozenset({0, 1, 4, 9, 10}), frozenset({12}), frozenset({10}), frozenset({1})]
)
def test_frozen_backward_matches_autodiff(frozen):
  net, params, state, x, y, hyper, kwargs = setup_cnn(4, seed=7)
  _, cache, _ = model.forward(net, params, state, x, hyper, frozen=frozen, **kwargs)
  grads = model.backward(net, params, cache, y, hyper, frozen=frozen)
  expected = frozen_loss_grad(net, params, state, x, y, hyper, frozen, kwargs["key"])
  assert_close(grads, expected, rtol=1e-9, atol=1e-11)
  for i in frozen:
    assert all(not np.any(np.asarray(a)) for a in jax.tree.leaves(grads[i]))


def test_frozen_batch_norm_runs_in_inference_form():
  """A frozen bn normalises with its running averages and keeps them; a trainable one does not."""
  net, params, state, x, y, hyper, kwargs = setup_cnn(4, seed=8)
  state = jax.tree.map(lambda s: s + 0.5, state)
  _, _, kept = model.forward(net, params, state, x, hyper, frozen=FROZEN, **kwargs)
  assert_close(kept[1], state[1])  # frozen bn: unchanged
  assert not np.allclose(kept[10].mean, state[10].mean)  # trainable bn: updated
  # Planted bug: running a frozen bn in training form gives gradients autodiff does not match.
  _, cache, _ = model.forward(net, params, state, x, hyper, **kwargs)
  wrong = model.backward(net, params, cache, y, hyper, frozen=FROZEN)
  expected = frozen_loss_grad(net, params, state, x, y, hyper, FROZEN, kwargs["key"])
  with pytest.raises(AssertionError):
    assert_close(wrong, expected, rtol=1e-9, atol=1e-11)


def test_freeze_keeps_frozen_params_through_training_with_l2_and_momentum():
  net, _ = model.parse(CNN, (15, 14, 2), 5, dropout="inverted")
  frozen = model.parse_freeze("0-1,4", net)
  assert frozen == (0, 1, 4)
  spec = train.Spec(net=net, batch_size=8, frozen=frozen)
  _, hyper = model.parse(CNN, (15, 14, 2), 5, dropout="inverted")
  h = train.stack([train.make_hyper(learning_rate=0.1, momentum=0.9, l2=0.1, layers=hyper)])
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 15 * 14 * 2)), rng.integers(0, 5, 40)
  keys = jnp.stack([jax.random.key(3)])
  fit = fit_with_rules(spec, h, keys, (x, y, x[:8], y[:8]), max_epochs=3)
  start, _ = jax.vmap(lambda k: model.init(jax.random.fold_in(k, 0), net, train.DTYPE))(keys)
  for i in range(len(net.layers)):
    pairs = zip(jax.tree.leaves(fit.params[i]), jax.tree.leaves(start[i]), strict=True)
    same = [np.array_equal(a, b) for a, b in pairs]
    assert all(same) if i in frozen else not any(same)


def test_parse_freeze_forms_and_errors():
  net, _ = model.parse(CNN, (15, 14, 2), 5)
  assert model.parse_freeze("", net) == ()
  assert model.parse_freeze("all_but_last", net) == (0, 1, 4, 9, 10)
  assert model.parse_freeze("0-4", net) == (0, 1, 4)  # layers without params are skipped in ranges
  with pytest.raises(model.ArchitectureError, match="has no parameters"):
    model.parse_freeze("2", net)
  with pytest.raises(model.ArchitectureError, match="layers 0..12"):
    model.parse_freeze("13", net)
  with pytest.raises(model.ArchitectureError, match="layer indices like"):
    model.parse_freeze("conv", net)


def test_optim_freeze_zeroes_updates_and_keeps_the_state_layout():
  params = (layers.WB(jnp.ones((2, 2)), jnp.ones(2)), (), layers.WB(jnp.ones((3, 1)), jnp.ones(1)))
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optim.freeze(optim.heavy_ball(0.1, 0.9, 0.5), (0,))
  state = tx.init(params)
  assert jax.tree.structure(state) == jax.tree.structure(optim.init_state(params))
  updates, _ = tx.update(grads, state, params)
  assert not any(np.any(np.asarray(u)) for u in jax.tree.leaves(updates[0]))
  np.testing.assert_allclose(updates[2].w, -0.1 * (1 + 0.5))  # gradient + L2, no velocity yet
  np.testing.assert_allclose(updates[2].b, -0.1)


# ------------------------------------------------------------------------- data and init


@pytest.fixture(scope="module")
def fer_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("fer_transfer")
  write_fake_fer(root, n=210)
  return root


def fer_cfg(**extra):
  return {"name": "fer2013", "val_fraction": 0.1, "split_seed": 0, "preprocess": "center", **extra}


def test_class_subset_drops_rows_and_renumbers_labels(fer_dir):
  full = data_lib.load(fer_cfg(), str(fer_dir))
  sub = data_lib.load(fer_cfg(classes=("Angry", "Happy", "Disgust")), str(fer_dir))
  assert sub.class_names == ("Angry", "Disgust", "Happy")  # the data set's own order
  assert set(np.unique(sub.y_train)) == {0, 1, 2}
  old = [full.class_names.index(c) for c in sub.class_names]
  for split in ("PublicTest", "PrivateTest"):
    (_, y_full), (_, y_sub) = full.tests[split], sub.tests[split]
    assert len(y_sub) == np.isin(y_full, old).sum()
  assert "only classes Angry, Happy, Disgust kept (data.classes)" in sub.notes[0]
  with pytest.raises(data_lib.DataError, match="'Bored'"):
    data_lib.load(fer_cfg(classes=("Angry", "Bored")), str(fer_dir))


def quick_transfer_config():
  c = fer2013_transfer.get_config("quick")
  c.transfer.new_class = "Disgust"
  c.data.flip_train = False
  c.train.max_epochs = 2
  return c


@pytest.fixture(scope="module")
def finished(fer_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("transfer")
  cfg = quick_transfer_config()
  lines = []
  rows = transfer_study.run_transfer(cfg, workdir, data_dir=str(fer_dir), log=lines.append)
  return cfg, workdir, rows, lines


def _model(workdir, stage, name):
  return checkpoint.load(workdir / stage / "runs" / name / "seed0" / "model")


def test_transfer_table_and_log(finished):
  cfg, workdir, rows, lines = finished
  assert [r["way"] for r in rows] == [
    "base (without the new class)",
    "scratch",
    "last_layer",
    "fine_tune",
  ]
  md = (workdir / "transfer.md").read_text()
  assert "Disgust acc" in md and "Old classes acc" in md
  assert any("new output columns for Disgust" in line for line in lines)
  base = _model(workdir, "base", "base")
  assert "Disgust" not in base.meta["class_names"] and len(base.meta["class_names"]) == 6
  assert _model(workdir, "add", "last_layer").meta["class_names"][1] == "Disgust"


def test_last_layer_way_keeps_the_base_hidden_layer(finished):
  _, workdir, _, _ = finished
  base, last = _model(workdir, "base", "base"), _model(workdir, "add", "last_layer")
  tune = _model(workdir, "add", "fine_tune")
  hidden = [i for i, layer in enumerate(base.net.layers) if layer.has_params][0]
  np.testing.assert_array_equal(last.params[hidden].w, base.params[hidden].w)
  assert not np.array_equal(tune.params[hidden].w, base.params[hidden].w)


def test_initializer_matches_output_columns_by_class_name(finished):
  _, workdir, _, _ = finished
  path = workdir / "base" / "runs" / "base" / "seed0" / "model"
  base = checkpoint.load(path)
  lm = inference.load_model(path)
  names = ("Happy", "Angry", "Disgust", "Fear", "Sad", "Surprise", "Neutral")
  (p,) = plan.build(plan.study_plan(quick_transfer_config()).runs, lm.input_shape, len(names))
  net = p.spec.net
  fresh = jax.vmap(lambda k: model.init(k, net))(jax.random.split(jax.random.key(0), 2))
  params, _ = transfer.initializer(path, net, names, "center")(*fresh)
  out = len(net.layers) - 1
  old = list(lm.class_names)
  for j, name in enumerate(names):
    col = params[out].w[1, :, j]
    if name in old:
      np.testing.assert_array_equal(col, base.params[out].w[:, old.index(name)])
    else:
      np.testing.assert_array_equal(col, fresh[0][out].w[1, :, j])
  arch = "flatten dropout0 dense33 relu dropout0 dense"
  wider, _ = model.parse(arch, lm.input_shape, 7, dropout="inverted")
  with pytest.raises(
    transfer.TransferError, match="layer 2 is dense32 in the saved model, dense33"
  ):
    transfer.initializer(path, wider, names, "center")
  other, _ = model.parse("flatten dense9 relu dense", lm.input_shape, 7)
  with pytest.raises(transfer.TransferError, match="differ in their layers"):
    transfer.initializer(path, other, names, "center")
  with pytest.raises(transfer.TransferError, match="share none"):
    transfer.initializer(path, net, tuple("abcdefg"), "center")
  with pytest.raises(
    transfer.TransferError, match="trained on 'center' inputs, this run uses 'raw'"
  ):
    transfer.initializer(path, net, names, "raw")


def test_a_model_trained_on_a_class_subset_evaluates_on_that_subset(finished, fer_dir):
  _, workdir, _, _ = finished
  lm = inference.load_model(workdir / "base" / "runs" / "base" / "seed0" / "model")
  x, y = inference.split_data(lm, "PublicTest", str(fer_dir))
  assert len(lm.class_names) == 6 and set(np.unique(y)) <= set(range(6))
  assert len(x) == len(y) > 0


def test_the_transfer_config_adds_the_class_its_variant_names():
  for arg, new in ((None, "Surprise"), ("disgust", "Disgust"), ("quick", "Surprise")):
    c = fer2013_transfer.get_config(arg)
    assert c.transfer.new_class == new and c.report.title == f"FER2013: adding {new}"
  with pytest.raises(ValueError, match="unknown variant"):
    fer2013_transfer.get_config("anger")
