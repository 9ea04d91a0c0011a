"""Time training steps of the FER2013 CNN: ours vs jax.grad vs PyTorch eager.

    python -m benchmarks.cnn_speed [--config_variant=study] [--steps 20] [--repeats 5]
        [--threads N] [--markdown] [--clock wall|process] [--only ours,jax.grad,torch] [--augment]

The network is configs/fer2013_cnn.py's (default, or ``--config_variant=study``): its
``model.layers`` on 48x48x1 images, 7 classes, ``train.batch_size``, inverted dropout, batch norm,
heavy-ball SGD with the config's learning rate, momentum and L2. Data: random FER2013-shaped images
(``steps x batch`` rows, centred pixels in [-0.5, 0.5]), no data files needed. Three
implementations, each in its own process (so that thread pools never compete):

    ours      train.population_epoch (P = 1): a jitted lax.scan over ``steps`` shuffled minibatches,
              hand-written backward pass (model.backward), optim.heavy_ball;
    jax.grad  the same jitted epoch with the gradients from jax.grad of model.loss
              (benchmarks/autodiff.py), so its "x ours" is autodiff / hand-written;
    torch     PyTorch eager: the same layers parsed from the architecture (Conv2d with the same
              padding, BatchNorm, ReLU, Max/AvgPool2d, Flatten, Dropout, Linear) on NCHW images,
              autograd, F.cross_entropy, optim.SGD(momentum) with weight decay on the weights only,
              ``torch.set_num_threads(--threads)``. Its Flatten orders features C, H, W instead of
              our H, W, C: same work, different (equally random) first dense layer.

Each is warmed up by one untimed epoch (compilation for ours and jax.grad), then ``--repeats``
epochs of ``--steps`` steps are timed; the table gives the median per step. ``--threads`` below the
usable core count pins every worker process to that many cores (XLA sizes its pool from the
affinity). Augmentation (the config's random mirror and shifts) is off unless ``--augment``, which
applies it to ours and jax.grad only. Unless ``--no-check``, one step's gradients of ours and
jax.grad are compared first (largest difference relative to the largest gradient).
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks import har_speed, peers

IMPLS = ("ours", "jax.grad", "torch")
INPUT_SHAPE = (48, 48, 1)
NUM_CLASSES = 7


def usable_cpus() -> list[int]:
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


def load_config(variant: str):
  from configs import fer2013_cnn

  return fer2013_cnn.get_config(variant or None)


def network(cfg):
  """(Net, per-layer hyperparameters) as the image study builds them."""
  from mlp import sweep

  return sweep.network_of(cfg, INPUT_SHAPE, NUM_CLASSES)


def fer_like(rows: int, seed: int = 0):
  """Random FER2013-shaped data: flat (rows, 2304) centred pixels, int32 labels in [0, 7)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(-0.5, 0.5, size=(rows, int(np.prod(INPUT_SHAPE)))).astype(np.float32)
  return x, rng.integers(0, NUM_CLASSES, rows).astype(np.int32)


# ----------------------------------------------------------------------------- runners


def jax_runner(cfg, x, y, *, autodiff: bool, augment: bool):
  """One call = one jitted epoch over (x, y): ``train.population_epoch`` or its jax.grad twin."""
  from mlp import sweep

  spec = sweep.spec_of(cfg, INPUT_SHAPE, NUM_CLASSES)
  if not augment:
    spec = dataclasses.replace(spec, flip=False, shift=0)
  hyper = sweep.hyper_of(cfg, INPUT_SHAPE, NUM_CLASSES)
  return peers.epoch_runner(spec, hyper, x, y, autodiff)


def torch_model(net, layer_hyper):
  """nn.Sequential of the same layers as ``net`` (NCHW images)."""
  import torch
  from torch import nn

  from mlp import backprop, layers

  mods = []
  for layer, shape, h in zip(net.layers, net.shapes(), layer_hyper, strict=False):
    if isinstance(layer, layers.Conv2D):
      (lo_h, hi_h, _), (lo_w, hi_w, _) = (
        backprop.conv_padding(shape[a], layer.kernel[a], layer.stride, layer.padding)
        for a in (0, 1)
      )
      pad = (lo_h, lo_w)
      if (lo_h, lo_w) != (hi_h, hi_w):  # asymmetric "same" padding: pad explicitly, as XLA does
        mods.append(nn.ZeroPad2d((lo_w, hi_w, lo_h, hi_h)))
        pad = 0
      mods.append(nn.Conv2d(shape[2], layer.filters, layer.kernel, layer.stride, pad))
    elif isinstance(layer, layers.MaxPool):
      mods.append(nn.MaxPool2d(layer.window, layer.stride))
    elif isinstance(layer, layers.AvgPool):
      mods.append(nn.AvgPool2d(layer.window, layer.stride))
    elif isinstance(layer, layers.BatchNorm):
      # torch: r <- (1 - m) r + m batch value; ours: r <- m r + (1 - m) batch value.
      bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
      mods.append(bn(shape[-1], eps=backprop.BN_EPS, momentum=1.0 - float(h)))
    elif isinstance(layer, layers.ReLU):
      mods.append(nn.ReLU())
    elif isinstance(layer, layers.Flatten):
      mods.append(nn.Flatten())
    elif isinstance(layer, layers.Dropout):
      mods.append(nn.Dropout(float(h)))  # torch's dropout is the inverted form
    elif isinstance(layer, layers.Dense):
      mods.append(nn.Linear(shape[0], layer.units))
    else:
      raise NotImplementedError(f"no PyTorch equivalent for layer {layer.token()!r}")
  return torch.nn.Sequential(*mods)


def torch_runner(cfg, x, y, *, threads: int, seed: int = 0):
  """One call = ``steps`` PyTorch eager training steps over a fresh permutation of (x, y)."""
  try:
    import torch
  except ImportError as err:
    raise peers.Missing("torch is not installed (pip install -r requirements-bench.txt)") from err
  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  net, layer_hyper = network(cfg)
  model = torch_model(net, layer_hyper)
  model.train()
  # L2 on the conv and linear weights only, as ours (not on biases or batch-norm scales).
  decayed = lambda name, p: name.endswith("weight") and p.ndim > 1  # noqa: E731
  weights = [p for name, p in model.named_parameters() if decayed(name, p)]
  others = [p for name, p in model.named_parameters() if not decayed(name, p)]
  t = cfg.train
  opt = torch.optim.SGD(
    [{"params": weights, "weight_decay": float(t.l2)}, {"params": others, "weight_decay": 0.0}],
    lr=float(t.learning_rate),
    momentum=float(t.momentum),
  )
  h, w, c = INPUT_SHAPE
  images = np.ascontiguousarray(x.reshape(-1, h, w, c).transpose(0, 3, 1, 2))  # NHWC -> NCHW
  return peers.torch_epoch_runner(model, opt, images, y, int(t.batch_size))


# ------------------------------------------------------------------------------ worker


def time_calls(run, repeats: int, clock: str) -> tuple[float, list[float]]:
  """(seconds of the warm-up call, seconds of each of ``repeats`` timed calls)."""
  now = time.perf_counter if clock == "wall" else time.process_time
  start = now()
  run()
  warmup = now() - start
  times = []
  for _ in range(repeats):
    start = now()
    run()
    times.append(now() - start)
  return warmup, times


def worker(args) -> None:
  """Time one implementation (or run the gradient check); prints one JSON line."""
  cpus = usable_cpus()
  if args.threads < len(cpus) and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, cpus[: args.threads])  # before XLA or OpenMP size their pools
  cfg = load_config(args.config_variant)
  if args.worker == "check":
    from benchmarks import autodiff

    net, layer_hyper = network(cfg)
    x, y = fer_like(8, seed=1)
    print(json.dumps({"check": autodiff.check_gradients(net, layer_hyper, x, y)}))
    return
  x, y = fer_like(args.steps * int(cfg.train.batch_size))
  try:
    if args.worker == "torch":
      run = torch_runner(cfg, x, y, threads=args.threads)
    else:
      run = jax_runner(cfg, x, y, autodiff=args.worker == "jax.grad", augment=args.augment)
  except peers.Missing as err:
    print(json.dumps({"missing": str(err)}))
    return
  warmup, times = time_calls(run, args.repeats, args.clock)
  print(json.dumps({"warmup": warmup, "seconds": times}))


def call_worker(args, name: str) -> dict:
  cmd = [sys.executable, "-m", "benchmarks.cnn_speed", f"--worker={name}"]
  cmd += [f"--config_variant={args.config_variant}", f"--steps={args.steps}"]
  cmd += [f"--repeats={args.repeats}", f"--threads={args.threads}", f"--clock={args.clock}"]
  cmd += ["--augment"] * args.augment
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode:
    sys.stderr.write(out.stderr)
    raise RuntimeError(f"worker {name} failed (exit {out.returncode})")
  return json.loads(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------- main


def measure(args) -> tuple[list[dict], dict]:
  cfg = load_config(args.config_variant)
  net, _ = network(cfg)
  bs = int(cfg.train.batch_size)
  # Training flops per step: 2 flops per multiply-add, forward + backward ~ 3x forward, so
  # 6 * MACs of one example's forward pass (net.macs(), incl. pooling and batch norm) * batch.
  step_flops = 6.0 * net.macs() * bs
  names = [n for n in IMPLS if not args.only or n in args.only.split(",")]
  check = call_worker(args, "check")["check"] if args.check else None
  rows, ours_s = [], None
  for name in names:
    result = call_worker(args, name)
    if "missing" in result:
      print(f"skipping {name}: {result['missing']}", file=sys.stderr)
      continue
    sec = statistics.median(result["seconds"]) / args.steps
    ours_s = sec if name == "ours" else ours_s
    rows.append(
      dict(
        impl=name,
        ms=sec * 1e3,
        images=bs / sec,
        gflops=step_flops / sec / 1e9,
        ratio=sec / ours_s if ours_s else float("nan"),
      )
    )
    print(
      f"  {name:8s} {sec * 1e3:9.2f} ms/step (warm-up {result['warmup']:.1f} s)", file=sys.stderr
    )
  info = dict(
    variant=args.config_variant or "default",
    arch=cfg.model.layers,
    batch=bs,
    macs=net.macs(),
    steps=args.steps,
    repeats=args.repeats,
    threads=args.threads,
    clock=args.clock,
    augment=args.augment,
    check=check,
    cpu=har_speed.cpu_model(),
    versions=peers.versions(),
  )
  return rows, info


def render(rows: list[dict], info: dict, markdown: bool) -> str:
  head = ["impl", "ms/step", "images/s", "GFLOP/s", "x ours"]
  body = [
    [r["impl"], f"{r['ms']:.2f}", f"{r['images']:.0f}", f"{r['gflops']:.2f}", f"{r['ratio']:.2f}"]
    for r in rows
  ]
  vers = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if k != "scikit-learn")
  notes = [
    f"Machine: {info['cpu']}. {vers}.",
    f"Network: FER2013 CNN ({info['variant']}): {info['arch']}; 48x48x1 -> 7, batch "
    f"{info['batch']}, {info['macs'] / 1e6:.1f} M multiply-adds per image (forward).",
    f"Random FER2013-shaped data. Median of {info['repeats']} epochs of {info['steps']} steps "
    f"after 1 warm-up epoch, each implementation in its own process, {info['clock']} clock, "
    f"{info['threads']} thread(s)/core(s); augmentation "
    f"{'on (ours, jax.grad only)' if info['augment'] else 'off'}.",
    "GFLOP/s counts 6 x forward multiply-adds x batch per training step (2 flops per multiply-add; "
    "backward ~ 2x forward).",
  ]
  if info["check"] is not None:
    notes.append(
      f"Gradient check, one step, 8 images: ours and jax.grad differ by at most "
      f"{info['check']:.1e} of the largest gradient."
    )
  return peers.format_table(head, body, notes, markdown)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--config_variant", default="", help="configs/fer2013_cnn.py variant: '' (default) or study"
  )
  parser.add_argument("--steps", type=int, default=20, help="training steps per timed epoch")
  parser.add_argument("--repeats", type=int, default=5, help="timed epochs per implementation")
  parser.add_argument(
    "--threads",
    type=int,
    default=len(usable_cpus()),
    help="cores to use: torch.set_num_threads, and each worker pinned to that many cores "
    "(default: all usable cores)",
  )
  parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
  parser.add_argument(
    "--clock", default="wall", choices=("wall", "process"), help="elapsed or CPU time"
  )
  parser.add_argument("--only", default="", help="comma-separated subset of ours,jax.grad,torch")
  parser.add_argument(
    "--augment", action="store_true", help="the config's mirror/shift augmentation (JAX rows only)"
  )
  parser.add_argument(
    "--check",
    action=argparse.BooleanOptionalAction,
    default=True,
    help="compare one step's gradients of ours and jax.grad first",
  )
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # impl or "check"
  args = parser.parse_args(argv)
  if args.steps < 1 or args.repeats < 1 or args.threads < 1:
    parser.error("--steps, --repeats and --threads must be >= 1")
  if args.worker:
    worker(args)
    return
  rows, info = measure(args)
  print(render(rows, info, args.markdown))


if __name__ == "__main__":
  main()
