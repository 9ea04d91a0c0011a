"""Transfer learning: start a network from a saved model, growing its output layer for new classes.

``model.init_from = PATH`` (a saved model, or a run folder holding one) initialises every layer of
the new network from the saved one. The architectures must match layer for layer, except the
output layer's width: its columns are matched by class name, so a class the saved model knew keeps
its weights and bias, and a new class (say an emotion added to the data set) starts from the new
network's own random initialisation. Batch-norm running statistics are copied too. Combined with
``train.freeze`` (mlp.model.parse_freeze) this gives the usual recipes: retrain the last layer
only (``all_but_last``), or fine-tune everything.
"""

import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from mlp import checkpoint, inference, model


class TransferError(ValueError):
  """The saved model cannot initialise this network (architecture or input mismatch)."""


def _output_layer(net: model.Net) -> int:
  with_params = [i for i, layer in enumerate(net.layers) if layer.has_params]
  return with_params[-1]


def initializer(
  path: str | os.PathLike,
  net: model.Net,
  class_names: Sequence[str],
  config_preprocess: str = "raw",
) -> Callable[[model.Params, model.State], tuple[model.Params, model.State]]:
  """A function mapping freshly initialised (params, state) of a population (leading axis P) to
  the saved model's values, with new classes' output columns left at their fresh values.

  ``config_preprocess`` is the new run's preprocessing kind, which must be the saved model's. Its
  statistics are the new run's own (fitted on its training rows, which include the new classes),
  so the copied layers see slightly shifted inputs: fine-tuning absorbs that, a frozen layer not.
  """
  lm = inference.load_model(path)
  saved = lm.model
  old_names = list(lm.class_names)
  where = f"model.init_from={path}"
  if tuple(saved.net.input_shape) != tuple(net.input_shape):
    raise TransferError(
      f"{where}: the saved model takes inputs of shape {saved.net.input_shape}, this network "
      f"{net.input_shape}"
    )
  kind = str(config_preprocess)
  if lm.preprocess_kind != kind:
    raise TransferError(
      f"{where}: the saved model was trained on {lm.preprocess_kind!r} inputs, this run uses "
      f"{kind!r} (data.preprocess)"
    )
  out = _output_layer(net)
  if len(saved.net.layers) != len(net.layers) or _output_layer(saved.net) != out:
    raise TransferError(
      f"{where}: the saved network ({saved.net}) and this one ({net}) differ in their layers"
    )
  for i, (a, b) in enumerate(zip(saved.net.layers, net.layers, strict=True)):
    if i != out and a != b:
      raise TransferError(f"{where}: layer {i} is {a.token()} in the saved model, {b.token()} here")
  keep = [(j, old_names.index(name)) for j, name in enumerate(class_names) if name in old_names]
  if not keep:
    raise TransferError(
      f"{where}: the saved model's classes ({', '.join(old_names)}) share none with the data's "
      f"({', '.join(class_names)})"
    )
  new_cols = np.array([j for j, _ in keep])
  old_cols = np.array([k for _, k in keep])

  def init(params: model.Params, state: model.State):
    p_count = jax.tree.leaves(params)[0].shape[0]
    broadcast = lambda a: np.broadcast_to(np.asarray(a), (p_count, *np.shape(a))).copy()  # noqa: E731
    new_params, new_state = [], []
    for i in range(len(net.layers)):
      if i == out:  # output columns: copy the known classes', keep fresh ones for new classes
        fresh = jax.tree.map(np.array, params[i])
        merged = jax.tree.map(
          lambda f, s: _put_columns(f, np.asarray(s), new_cols, old_cols), fresh, saved.params[i]
        )
        new_params.append(merged)
      else:
        new_params.append(jax.tree.map(broadcast, saved.params[i]))
      new_state.append(jax.tree.map(broadcast, saved.state[i]))
    return tuple(new_params), tuple(new_state)

  return init


def _put_columns(fresh: np.ndarray, saved: np.ndarray, new_cols, old_cols) -> np.ndarray:
  """fresh (P, ..., C_new) with the last axis' ``new_cols`` set from saved (..., C_old)."""
  fresh[..., new_cols] = saved[..., old_cols]
  return fresh


def describe(path: str | os.PathLike, class_names: Sequence[str]) -> str:
  """One sentence for logs: which classes come from the saved model and which are new."""
  old = checkpoint.load(inference.model_prefix(path)).meta.get("class_names", [])
  new = [c for c in class_names if c not in old]
  return f"initialised from {path} ({len(old)} classes)" + (
    f"; new output columns for {', '.join(new)}" if new else ""
  )
