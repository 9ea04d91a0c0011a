"""One training epoch of the same MLP in five implementations, for benchmarks/har_speed.py.

Each runner is built once per (hidden sizes, batch size) and then called as ``run()`` to train one
epoch in place (weights keep changing between calls, as in real training). Every runner does the
same work: shuffled minibatches of ReLU hidden layers, a softmax output, mean NLL, plain
backprop, and heavy-ball momentum with no weight decay, all in float32. ``jax.grad`` is our
epoch with the hand-written backward pass replaced by autodiff (benchmarks/autodiff.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

LEARNING_RATE = 0.01
MOMENTUM = 0.09

Runner = Callable[[], None]


class Missing(Exception):
  """An optional peer is not installed; the message says which package to install."""


def har_like(n: int = 7352, d: int = 561, c: int = 6, seed: int = 0):
  """Synthetic HAR-shaped data: class blobs in [-1, 1]-ish features, float32 x, int32 y."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(c, d)) * 0.3
  y = rng.integers(0, c, n)
  x = np.tanh(centers[y] + 0.5 * rng.normal(size=(n, d)))
  return x.astype(np.float32), y.astype(np.int32)


def epoch_flops(sizes: Sequence[int], rows: int) -> float:
  """Matmul flops of one epoch: 2 m n k per matmul; backward counted as twice the forward."""
  forward = sum(2 * rows * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
  return 3.0 * forward


def time_epochs(run: Runner, repeats: int, budget_s: float = 30.0, clock: str = "wall") -> list:
  """Seconds per call of ``run`` after one warm-up call (fewer repeats if an epoch is slow).

  ``clock="wall"`` is elapsed time; ``"process"`` is this process's CPU time summed over its
  threads, which is less disturbed by other jobs on a shared machine (run pinned to one core, e.g.
  ``taskset -c 1``, to compare single-core work: then no thread waits on a descheduled peer).
  """
  now = time.perf_counter if clock == "wall" else time.process_time
  start = now()
  run()
  first = now() - start
  repeats = max(1, min(repeats, int(budget_s / max(first, 1e-9))))
  times = []
  for _ in range(repeats):
    start = now()
    run()
    times.append(now() - start)
  return times


def _init(sizes: Sequence[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
  rng = np.random.default_rng(seed)
  return [
    ((rng.normal(size=(a, b)) * math.sqrt(2.0 / a)).astype(np.float32), np.zeros(b, np.float32))
    for a, b in zip(sizes[:-1], sizes[1:], strict=False)
  ]


# ------------------------------------------------------------------------------------- ours


def epoch_runner(spec, hyper, x, y, autodiff: bool = False) -> Runner:
  """One call = one jitted epoch of a population of one over (x, y): ``train.population_epoch``,
  or with ``autodiff`` the same program with jax.grad gradients (benchmarks/autodiff.py)."""
  import jax
  import jax.numpy as jnp

  from benchmarks import autodiff as autodiff_epoch
  from mlp import optim, train

  hyper = jax.tree.map(jnp.asarray, train.stack([hyper]))
  keys = jax.random.split(jax.random.key(0), 1)
  params, net_state = train._init_population(spec.net, keys, jnp.float32)
  carry = {"params": params, "state": net_state, "opt": jax.vmap(optim.init_state)(params)}
  carry["epoch"] = 0
  active = jnp.ones(1, bool)
  xd, yd = jnp.asarray(x), jnp.asarray(y)
  epoch_fn = autodiff_epoch.population_epoch if autodiff else train.population_epoch

  def run():
    epoch = jnp.asarray(carry["epoch"], jnp.int32)
    out = epoch_fn(
      spec, carry["params"], carry["state"], carry["opt"], hyper, keys, epoch, active, xd, yd
    )
    jax.block_until_ready(out)
    carry["params"], carry["state"], carry["opt"], loss = out
    if not np.all(np.isfinite(np.asarray(loss))):
      raise FloatingPointError(f"training loss is {np.asarray(loss)}")
    carry["epoch"] += 1

  return run


def format_table(head: list[str], body: list[list[str]], notes: list[str], markdown: bool) -> str:
  """A right-aligned text table, or Markdown, followed by the note lines."""
  if markdown:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines + [""] + notes)
  widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
  fmt = "  ".join(f"{{:>{w}}}" for w in widths)
  return "\n".join([fmt.format(*head)] + [fmt.format(*r) for r in body] + notes)


def ours(x, y, sizes, batch_size, softmax_grad: str = "fused", autodiff: bool = False) -> Runner:
  """This project's jitted epoch: ``train.population_epoch`` with a population of one.

  ``autodiff=True``: the same epoch with the gradients from ``jax.grad`` (benchmarks/autodiff.py).
  """
  from mlp import model, train

  input_shape, hidden, classes = (sizes[0],), sizes[1:-1], sizes[-1]
  arch = model.mlp_architecture(input_shape, hidden, [0.0] * (len(hidden) + 1))
  net, layer_hyper = model.parse(arch, input_shape, classes)
  spec = train.Spec(net=net, batch_size=batch_size, softmax_grad=softmax_grad)
  hyper = train.make_hyper(learning_rate=LEARNING_RATE, momentum=MOMENTUM, layers=layer_hyper)
  return epoch_runner(spec, hyper, x, y, autodiff)


def jax_grad(x, y, sizes, batch_size, seed: int = 0) -> Runner:
  """Our jitted epoch (same scan, shuffling and optimizer) with ``jax.grad`` gradients."""
  return ours(x, y, sizes, batch_size, autodiff=True)


# ------------------------------------------------------------------------------------ numpy


def numpy_mlp(x, y, sizes, batch_size, seed: int = 0) -> Runner:
  """The same explicit backprop in float32 numpy; momentum Eq. 4: v = -lr g + mu v, W += v."""
  layers = _init(sizes, seed)
  velocity = [(np.zeros_like(w), np.zeros_like(b)) for w, b in layers]
  rng = np.random.default_rng(seed)
  lr, mu = np.float32(LEARNING_RATE), np.float32(MOMENTUM)
  n = x.shape[0]

  def step(xb, yb):
    inputs, pre, h = [], [], xb
    for i, (w, b) in enumerate(layers):
      inputs.append(h)
      z = h @ w + b
      if i < len(layers) - 1:
        pre.append(z)
        h = np.maximum(z, 0)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    p[np.arange(len(yb)), yb] -= 1  # dz = (p - onehot) / B
    dz = p / np.float32(len(yb))
    for i in reversed(range(len(layers))):
      w, b = layers[i]
      vw, vb = velocity[i]
      dw, db = inputs[i].T @ dz, dz.sum(axis=0)
      if i > 0:
        du = dz @ w.T
      vw *= mu
      vw -= lr * dw
      w += vw
      vb *= mu
      vb -= lr * db
      b += vb
      if i > 0:
        dz = du * (pre[i - 1] > 0)

  def run():
    perm = rng.permutation(n)
    for s in range(0, n, batch_size):
      idx = perm[s : s + batch_size]
      step(x[idx], y[idx])

  return run


# ---------------------------------------------------------------------------------- sklearn


def sklearn_mlp(x, y, sizes, batch_size, seed: int = 0) -> Runner:
  """scikit-learn ``MLPClassifier`` (sgd, momentum 0.09, no Nesterov, alpha 0); one partial_fit."""
  try:
    from sklearn.neural_network import MLPClassifier
  except ImportError as err:
    raise Missing("scikit-learn is not installed (pip install -r requirements-bench.txt)") from err
  import warnings

  from sklearn.exceptions import ConvergenceWarning

  clf = MLPClassifier(
    hidden_layer_sizes=tuple(sizes[1:-1]),
    solver="sgd",
    momentum=MOMENTUM,
    nesterovs_momentum=False,
    batch_size=batch_size,
    learning_rate_init=LEARNING_RATE,
    alpha=0.0,
    shuffle=True,
    random_state=seed,
  )
  classes = np.arange(sizes[-1])

  def run():
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", ConvergenceWarning)
      clf.partial_fit(x, y, classes=classes)

  return run


# ------------------------------------------------------------------------------------ torch


def torch_mlp(x, y, sizes, batch_size, seed: int = 0) -> Runner:
  """PyTorch eager: nn.Sequential, F.cross_entropy, autograd, ``optim.SGD(momentum=0.09)``."""
  try:
    import torch
  except ImportError as err:
    raise Missing("torch is not installed (pip install -r requirements-bench.txt)") from err
  torch.manual_seed(seed)
  mods = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
    mods.append(torch.nn.Linear(a, b))
    if i < len(sizes) - 2:
      mods.append(torch.nn.ReLU())
  net = torch.nn.Sequential(*mods)
  opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
  return torch_epoch_runner(net, opt, x, y, batch_size)


def torch_epoch_runner(net, opt, x: np.ndarray, y: np.ndarray, batch_size: int) -> Runner:
  """One call = one PyTorch eager epoch: shuffled minibatches, cross-entropy, autograd, opt.step."""
  import torch

  xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
  n = x.shape[0]

  def run():
    perm = torch.randperm(n)
    for s in range(0, n, batch_size):
      idx = perm[s : s + batch_size]
      opt.zero_grad()
      loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
      loss.backward()
      opt.step()
    if not torch.isfinite(loss):
      raise FloatingPointError(f"training loss is {float(loss)}")

  return run


PEERS = {"jax.grad": jax_grad, "numpy": numpy_mlp, "sklearn": sklearn_mlp, "torch": torch_mlp}


def versions() -> dict[str, str]:
  """Versions of the libraries that took part ('-' when not installed)."""
  import importlib

  out = {}
  for name, module in [
    ("jax", "jax"),
    ("jaxlib", "jaxlib"),
    ("numpy", "numpy"),
    ("torch", "torch"),
    ("scikit-learn", "sklearn"),
  ]:
    try:
      out[name] = importlib.import_module(module).__version__
    except ImportError:
      out[name] = "-"
  return out


def matmul_peak(size: int = 2048, repeats: int = 5, clock: str = "wall") -> tuple[float, str]:
  """Best-of-``repeats`` float32 GFLOP/s of a (size x size) numpy matmul, and the BLAS used."""
  now = time.perf_counter if clock == "wall" else time.process_time
  rng = np.random.default_rng(0)
  a = rng.normal(size=(size, size)).astype(np.float32)
  b = rng.normal(size=(size, size)).astype(np.float32)
  a @ b
  best = math.inf
  for _ in range(repeats):
    start = now()
    a @ b
    best = min(best, now() - start)
  return 2.0 * size**3 / best / 1e9, blas_info()


def blas_info() -> str:
  """numpy's BLAS name, version and thread count, e.g. 'scipy-openblas 0.3.31, 2 threads'."""
  try:
    blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
    name = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
  except (AttributeError, KeyError):
    name = "unknown BLAS"
  threads = "?"
  try:
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if pools:
      threads = str(pools[0]["num_threads"])
  except ImportError:
    pass
  return f"{name}, {threads} threads"
