"""The network: a sequence of layers (mlp.layers) folded forward, and the chain rule folded back.

A network is written as an architecture string of layer tokens, e.g. the HAR perceptron
``"dense300 relu dense100 relu dense"`` or a CNN ``"conv32 relu maxpool5/s2 flatten dense7"``;
the softmax + NLL output follows the last layer, which must give one value per class. Parsing
splits it into a static :class:`Net` (the compiled program's shape) and the layers' traced
hyperparameters (dropout rates, batch-norm momenta), so a new rate never recompiles.

With layers f_1 .. f_L, h_0 = x, h_l = f_l(h_{l-1}), p = softmax(h_L):

    loss = NLL(p, y) + (lambda / 2) sum ||W||^2          (every param named w; biases, scales not)
    dh_L = (p - onehot(y)) / B                            (or J^T dp, J = diag(p) - p p^T)
    (dh_{l-1}, dtheta_l) = f_l.backward(dh_l)             for l = L .. 1,   dW += lambda W

Params and state are tuples with one entry per layer (``()`` for kinds without any); state
(batch-norm running statistics) is returned by the training forward pass, never differentiated.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mlp import backprop, layers

Params = tuple  # one entry per layer: layers.WB, layers.ScaleShift or ()
State = tuple  # one entry per layer: layers.Moments or ()
LayerHyper = tuple  # one traced hyperparameter per layer: dropout rate, bn momentum, or ()


@dataclasses.dataclass(frozen=True)
class Net:
  """The static shape of a network: its layers and the shape of one input (without batch)."""

  layers: tuple[layers.Layer, ...]
  input_shape: tuple[int, ...]

  def shapes(self) -> list[tuple[int, ...]]:
    """The input shape of every layer, then the output shape."""
    shapes = [tuple(self.input_shape)]
    for layer in self.layers:
      shapes.append(tuple(layer.out_shape(shapes[-1])))
    return shapes

  @property
  def num_classes(self) -> int:
    return self.shapes()[-1][0]

  @property
  def num_inputs(self) -> int:
    return math.prod(self.input_shape)

  def macs(self) -> int:
    """Multiply-adds of one example's forward pass."""
    return sum(layer.macs(s) for layer, s in zip(self.layers, self.shapes(), strict=False))

  def describe(self, hyper: LayerHyper | None = None) -> str:
    """The architecture string; with ``hyper`` it includes the rates and parses back to both."""
    hyper = hyper if hyper is not None else (None,) * len(self.layers)
    return " ".join(
      layer.token(None if isinstance(h, tuple) else h)
      for layer, h in zip(self.layers, hyper, strict=True)
    )

  def __str__(self) -> str:
    return self.describe()


class ArchitectureError(ValueError):
  """An architecture string that does not parse or does not fit the data."""


def parse(
  arch: str, input_shape: Sequence[int], num_classes: int, *, dropout: str = "regular"
) -> tuple[Net, LayerHyper]:
  """(Net, per-layer hyperparameters) from an architecture string; see mlp.layers for tokens.

  ``dropout`` (regular | inverted) is the form of ``dropout<rate>`` tokens that do not name one.
  """
  if dropout not in ("regular", "inverted"):
    raise ArchitectureError(f"dropout must be regular or inverted, got {dropout!r}")
  ctx = layers.ParseContext(int(num_classes), dropout)
  found, hyper = [], []
  for token in str(arch).split():
    for kind in layers.KINDS:
      try:
        parsed = kind.parse(token, ctx)
      except ValueError as e:
        raise ArchitectureError(f"{arch!r}: {e}") from None
      if parsed is not None:
        found.append(parsed[0])
        hyper.append(parsed[1])
        break
    else:
      names = ", ".join(k.kind for k in layers.KINDS)
      raise ArchitectureError(f"unknown layer {token!r} in {arch!r}; layer kinds: {names}")
  if not found:
    raise ArchitectureError("the architecture has no layers")
  net = Net(tuple(found), tuple(int(d) for d in input_shape))
  try:
    for layer, h in zip(net.layers, hyper, strict=True):
      layer.check_hyper(h)
    out = net.shapes()[-1]
  except ValueError as e:
    raise ArchitectureError(f"{arch!r}: {e}") from None
  if out != (num_classes,):
    raise ArchitectureError(
      f"{arch!r} ends with outputs of shape {out}, but the softmax needs {num_classes} (one per "
      f"class): end with 'dense' (a dense layer with one unit per class)"
    )
  return net, tuple(hyper)


def mlp_architecture(input_shape: Sequence[int], hidden: Sequence[int], rates: Sequence[float]):
  """The architecture string of an MLP given by hidden widths and one dropout rate per Dense input.

  ``[flatten] [dropout r0] dense h1 relu [dropout r1] dense h2 relu ... [dropout rL] dense``:
  dropout layers (before every Dense layer) only when some rate is non-zero, as the MLP configs
  have always built it.
  """
  if len(rates) != len(hidden) + 1:
    raise ArchitectureError(
      f"{len(rates)} dropout rates for an MLP with {len(hidden) + 1} Dense layers (hidden widths "
      f"{tuple(hidden)}); give one rate per Dense-layer input, e.g. {(0.0,) * (len(hidden) + 1)}"
    )
  if any(int(h) < 1 for h in hidden):
    raise ArchitectureError(f"hidden widths must be at least 1, got {tuple(hidden)}")
  tokens = ["flatten"] if len(input_shape) > 1 else []
  for i, width in enumerate([*hidden, None]):
    if any(r > 0 for r in rates):
      tokens.append(f"dropout{layers.number(rates[i])}")
    tokens += [f"dense{int(width)}", "relu"] if width is not None else ["dense"]
  return " ".join(tokens)


def check_frozen(net: Net, frozen: Sequence[int]) -> None:
  """ArchitectureError unless every index in ``frozen`` names a layer of ``net`` with parameters."""
  for i in frozen:
    if not 0 <= i < len(net.layers):
      last = len(net.layers) - 1
      raise ArchitectureError(f"cannot freeze layer {i}: the network has layers 0..{last}")
    if not net.layers[i].has_params:
      raise ArchitectureError(
        f"cannot freeze layer {i} ({net.layers[i].token()}): it has no parameters"
      )


def parse_freeze(spec: str, net: Net) -> tuple[int, ...]:
  """Layer indices from ``train.freeze``: "" (none), "all_but_last" (every layer with parameters
  but the output layer), or comma-separated indices and ranges into ``net.layers`` ("0-11,13")."""
  spec = str(spec or "").strip()
  with_params = [i for i, layer in enumerate(net.layers) if layer.has_params]
  if not spec:
    return ()
  if spec == "all_but_last":
    return tuple(with_params[:-1])
  out: set[int] = set()
  try:
    for part in spec.split(","):
      lo, dash, hi = part.strip().partition("-")
      if dash:  # a range names the layers with parameters in it
        out.update(i for i in range(int(lo), int(hi) + 1) if i in with_params)
      else:
        out.add(int(lo))
  except ValueError:
    raise ArchitectureError(
      f"train.freeze must be '', 'all_but_last' or layer indices like '0-11,13', got {spec!r}"
    ) from None
  frozen = tuple(sorted(out))
  check_frozen(net, frozen)
  return frozen


def init(key: jax.Array, net: Net, dtype=jnp.float32) -> tuple[Params, State]:
  """Params (He initialisation for weights, zero biases, unit scales) and state of ``net``."""
  # One key per randomly initialised layer, in order (for an MLP: one per Dense layer).
  random = [i for i, layer in enumerate(net.layers) if layer.random_init]
  keys = dict(zip(random, jax.random.split(key, len(random)), strict=True)) if random else {}
  params, state, shape = [], [], tuple(net.input_shape)
  for i, layer in enumerate(net.layers):
    p, s, shape = layer.init(keys.get(i), shape, dtype)
    params.append(p)
    state.append(s)
  return tuple(params), tuple(state)


def scope(i: int, layer: layers.Layer, direction: str) -> str:
  """The name of layer i's forward or backward ops in compiled programs and profiles."""
  return f"{direction}_{i:02d}_{layer.kind}"


class Cache(NamedTuple):
  """What the backward pass needs from the forward pass."""

  layers: tuple  # one cache per layer
  logits: jax.Array  # output of the last layer
  probs: jax.Array  # p = softmax(logits)


def forward(
  net: Net,
  params: Params,
  state: State,
  x: jax.Array,
  hyper: LayerHyper,
  *,
  train: bool = False,
  key: jax.Array | None = None,
  frozen: frozenset[int] = frozenset(),
) -> tuple[jax.Array, Cache, State]:
  """(class probabilities (B, C), cache for :func:`backward`, new state).

  ``x`` is (B, *net.input_shape) or its flat rows (B, prod input_shape). ``train=True`` is the
  training form: dropout masks drawn from ``key`` (one split per stochastic layer), batch-norm
  batch statistics (and updated running averages in the returned state). Otherwise the inference
  form, and the state comes back unchanged. Layers in ``frozen`` (transfer learning) always run
  in the inference form: a frozen batch norm normalises with its running averages and keeps them.
  """
  stochastic = [i for i, layer in enumerate(net.layers) if layer.stochastic]
  keys = {}
  if train and stochastic:
    if key is None:
      raise ValueError("the training form of a network with dropout needs a PRNG key")
    keys = dict(zip(stochastic, jax.random.split(key, len(stochastic)), strict=True))
  h = x.reshape((x.shape[0], *net.input_shape))
  caches, new_state = [], []
  for i, layer in enumerate(net.layers):
    layer_train = train and i not in frozen
    with jax.named_scope(scope(i, layer, "forward")):  # names the layer in profiles
      h, cache, s = layer.forward(params[i], state[i], hyper[i], h, layer_train, keys.get(i))
    caches.append(cache)
    new_state.append(s)
  with jax.named_scope("forward_softmax"):
    probs = backprop.softmax_forward(h)
  return probs, Cache(tuple(caches), h, probs), tuple(new_state)


def nll(
  cache: Cache,
  labels: jax.Array,
  weights: jax.Array | None = None,
  smoothing: jax.Array | float = 0.0,
) -> jax.Array:
  """Mean negative log-likelihood of the (smoothed) labels, from the cached logits (stable
  log-softmax)."""
  return backprop.nll_loss(backprop.log_softmax(cache.logits), labels, weights, smoothing)


def weight_mask(params: Params) -> Params:
  """Pytree of booleans: True for the L2-decayed weights (fields named ``w``), else False."""

  def is_weight(path, _):
    return getattr(path[-1], "name", None) == "w"

  return jax.tree_util.tree_map_with_path(is_weight, params)


def l2_penalty(params: Params, l2: jax.Array) -> jax.Array:
  """(lambda / 2) sum ||W||_F^2 over the weights only (biases, scales, shifts not penalised)."""
  weights = [
    p
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(weight_mask(params)), strict=True)
    if m
  ]
  return 0.5 * l2 * sum(jnp.sum(jnp.square(w)) for w in weights)


def l2_grad(params: Params, l2: jax.Array) -> Params:
  """Gradient of :func:`l2_penalty`: lambda W for weights, 0 elsewhere."""
  return jax.tree.map(lambda p, m: l2 * p if m else jnp.zeros_like(p), params, weight_mask(params))


def loss(
  net: Net,
  params: Params,
  state: State,
  x: jax.Array,
  labels: jax.Array,
  hyper: LayerHyper,
  *,
  l2: jax.Array = 0.0,
  weights: jax.Array | None = None,
  smoothing: jax.Array | float = 0.0,
  **forward_kwargs,
) -> jax.Array:
  """Training objective NLL (of targets smoothed by ``smoothing``) + (lambda / 2) sum ||W||^2,
  built only from forward functions."""
  _, cache, _ = forward(net, params, state, x, hyper, **forward_kwargs)
  return nll(cache, labels, weights, smoothing) + l2_penalty(params, l2)


def backward(
  net: Net,
  params: Params,
  cache: Cache,
  labels: jax.Array,
  hyper: LayerHyper,
  *,
  weights: jax.Array | None = None,
  l2: jax.Array | None = None,
  smoothing: jax.Array | float = 0.0,
  softmax_grad: str = "fused",
  frozen: frozenset[int] = frozenset(),
) -> Params:
  """Gradient of :func:`loss` w.r.t. every parameter, by the backward fold in the module doc.

  ``softmax_grad="fused"`` uses dz = (p - q)/B; ``"jacobian"`` pushes dL/dp = -q/(p B) through
  the full softmax Jacobian (HAR study Eq. 1-2); q = onehot(y), or its label-smoothed form.
  ``weights`` (B,) weight each sample's loss (0 for padding in a final partial batch); ``l2``
  adds the penalty's gradient.
  Layers in ``frozen`` get zero gradients (their dparams are never used, so XLA drops that work),
  and the fold stops at the lowest layer that is not frozen: nothing below it needs dx.
  """
  with jax.named_scope("backward_softmax"):
    if softmax_grad == "fused":
      dh = backprop.softmax_nll_backward(cache.probs, labels, weights, smoothing)
    elif softmax_grad == "jacobian":
      dp = backprop.nll_backward(cache.probs, labels, weights, smoothing)
      dh = backprop.softmax_backward(dp, cache.probs)
    else:
      raise ValueError(f"softmax_grad must be 'fused' or 'jacobian', got {softmax_grad!r}")
  zeros = lambda p: jax.tree.map(jnp.zeros_like, p)  # noqa: E731
  grads: list[Any] = [zeros(p) for p in params]
  trainable = [i for i, p in enumerate(params) if jax.tree.leaves(p) and i not in frozen]
  for i in reversed(range(min(trainable, default=len(net.layers)), len(net.layers))):
    with jax.named_scope(scope(i, net.layers[i], "backward")):
      dh, g = net.layers[i].backward(params[i], hyper[i], cache.layers[i], dh)
    if i not in frozen:
      grads[i] = g
  grads = tuple(grads)
  if l2 is not None:
    grads = jax.tree.map(jnp.add, grads, l2_grad(params, l2))
  return grads
