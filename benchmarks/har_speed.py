"""Time one training epoch on HAR-shaped data: this project vs jax.grad, numpy, sklearn, PyTorch.

    python -m benchmarks.har_speed [--repeats 5] [--quick] [--markdown] [--data_dir DIR]

Data: synthetic (7352 x 561, 6 classes) unless ``--data_dir`` or $MLP_DATA_DIR points at UCI HAR
(its train split is used). For hidden sizes (300, 100) and (300, 200) and batch sizes 1 and 50, each
implementation trains epochs with SGD + momentum 0.09; the table gives the median epoch time after a
warm-up epoch, microseconds per minibatch step, each one's time relative to ours, achieved matmul
GFLOP/s and that as a fraction of the float32 matmul peak measured in the same run. The jax.grad
row is our jitted epoch with the gradients from ``jax.grad`` of ``model.loss`` instead of the
hand-written ``model.backward`` (benchmarks/autodiff.py): its "x ours" is autodiff / hand-written.
Peers that are not installed (requirements-bench.txt) are skipped with a message.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

import numpy as np

from benchmarks import peers

HIDDEN = ((300, 100), (300, 200))
BATCHES = (1, 50)
# ours: XLA's default CPU thread pool (every core); ours-1t: a one-thread pool, as each worker
# process of the HAR study trains (one per core, mlp/workers.py).
OURS = ("ours", "ours-1t")


def cpu_model() -> str:
  """lscpu's model name and the number of CPUs (falls back to platform.processor())."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
  except (OSError, subprocess.CalledProcessError, StopIteration):
    model = platform.processor() or "unknown CPU"
  return f"{model}, {os.cpu_count()} CPUs"


def load_data(data_dir: str | None, rows: int | None):
  """(x, y, description): UCI HAR train split when a data dir is given, else synthetic."""
  data_dir = data_dir or os.environ.get("MLP_DATA_DIR")
  if data_dir:
    from mlp.data import har

    a = har.load_arrays(har.find_root(data_dir, download=False))  # the official train split
    x, y, what = a["x_train"], a["y_train"], f"UCI HAR train split ({a['x_train'].shape[0]} rows)"
  else:
    x, y = peers.har_like()
    what = f"synthetic HAR-shaped data ({x.shape[0]} x {x.shape[1]}, 6 classes)"
  if rows is not None:
    x, y = x[:rows], y[:rows]
    what += f", first {rows} rows"
  return np.ascontiguousarray(x, np.float32), np.asarray(y, np.int32), what


def time_one(args) -> None:
  """Worker: time one implementation at one shape; prints the median epoch seconds as JSON."""
  impl, hidden, bs = args.worker.split(":")
  hidden, bs = tuple(int(h) for h in hidden.split("-")), int(bs)
  if impl == "ours-1t":  # before JAX starts its backend
    from mlp import workers

    workers.limit_xla_threads(0)
  x, y, _ = load_data(args.data_dir, 512 if args.quick else None)
  sizes = (x.shape[1], *hidden, int(y.max()) + 1)
  try:
    if impl in OURS:
      run = peers.ours(x, y, sizes, bs, args.softmax_grad)
    else:
      run = peers.PEERS[impl](x, y, sizes, bs)
  except peers.Missing as err:
    print(json.dumps({"missing": str(err)}))
    return
  repeats = 1 if args.quick else args.repeats
  print(
    json.dumps({"seconds": statistics.median(peers.time_epochs(run, repeats, clock=args.clock))})
  )


def measure(args) -> tuple[list[dict], dict]:
  """Each (implementation, shape) is timed in its own process, so that thread pools (XLA's,
  OpenBLAS's, PyTorch's OpenMP) never compete with each other inside one process."""
  x, y, what = load_data(args.data_dir, 512 if args.quick else None)
  repeats = 1 if args.quick else args.repeats
  peak, blas = peers.matmul_peak(1024 if args.quick else 2048, clock=args.clock)
  names = [*OURS, *peers.PEERS]
  if args.only:
    names = [n for n in names if n in args.only.split(",")]
  rows, missing = [], set()
  for hidden in HIDDEN:
    sizes = (x.shape[1], *hidden, int(y.max()) + 1)
    flops = peers.epoch_flops(sizes, x.shape[0])
    for bs in BATCHES:
      steps = -(-x.shape[0] // bs)
      ours_s = None
      for name in names:
        if name in missing:
          continue
        cmd = [
          sys.executable,
          "-m",
          "benchmarks.har_speed",
          f"--worker={name}:{'-'.join(map(str, hidden))}:{bs}",
        ]
        cmd += [
          f"--repeats={args.repeats}",
          f"--clock={args.clock}",
          f"--softmax_grad={args.softmax_grad}",
        ]
        cmd += ["--quick"] * args.quick + ([f"--data_dir={args.data_dir}"] if args.data_dir else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        if "missing" in result:
          print(f"skipping {name}: {result['missing']}", file=sys.stderr)
          missing.add(name)
          continue
        sec = result["seconds"]
        ours_s = sec if name == "ours" else ours_s
        rows.append(
          dict(
            hidden=hidden,
            batch=bs,
            impl=name,
            ms=sec * 1e3,
            us_step=sec / steps * 1e6,
            ratio=sec / ours_s if ours_s else float("nan"),
            gflops=flops / sec / 1e9,
            peak_frac=flops / sec / 1e9 / peak,
          )
        )
        print(f"  {hidden} batch {bs:>2} {name:8s} {sec * 1e3:9.1f} ms", file=sys.stderr)
  info = dict(
    data=what,
    cpu=cpu_model(),
    peak=peak,
    blas=blas,
    versions=peers.versions(),
    repeats=repeats,
    clock=args.clock,
    affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
  )
  return rows, info


def render(rows: list[dict], info: dict, markdown: bool) -> str:
  head = ["hidden", "batch", "impl", "ms/epoch", "us/step", "x ours", "GFLOP/s", "% peak"]
  body = [
    [
      "-".join(map(str, r["hidden"])),
      str(r["batch"]),
      r["impl"],
      f"{r['ms']:.1f}",
      f"{r['us_step']:.1f}",
      f"{r['ratio']:.2f}",
      f"{r['gflops']:.2f}",
      f"{100 * r['peak_frac']:.1f}",
    ]
    for r in rows
  ]
  vers = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
  notes = [
    f"Machine: {info['cpu']}. {vers}.",
    f"Data: {info['data']}. Median of {info['repeats']} epochs after 1 warm-up epoch, "
    f"each implementation in its own process, {info['clock']} clock, "
    f"{info['affinity']} CPU(s) usable.",
    f"float32 matmul peak (numpy 2048^2, {info['blas']}): {info['peak']:.1f} GFLOP/s.",
    "ours-1t: ours with XLA's CPU thread pool limited to one thread, as each of the HAR "
    "study's worker processes trains (one per core, mlp/workers.py).",
    "jax.grad: ours with the gradients from jax.grad of model.loss instead of the hand-written "
    "backward pass (same jitted scan, shuffling and heavy-ball update; benchmarks/autodiff.py).",
  ]
  return peers.format_table(head, body, notes, markdown)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement")
  parser.add_argument("--quick", action="store_true", help="512 rows, 1 repeat: a smoke test")
  parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
  parser.add_argument("--data_dir", default=None, help="UCI HAR directory (else $MLP_DATA_DIR)")
  parser.add_argument(
    "--clock", default="wall", choices=("wall", "process"), help="elapsed or CPU time"
  )
  parser.add_argument(
    "--only",
    default="",
    help="comma-separated subset of ours,ours-1t,jax.grad,numpy,sklearn,torch",
  )
  parser.add_argument("--softmax_grad", default="fused", choices=("fused", "jacobian"))
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # impl:hidden:batch
  args = parser.parse_args(argv)
  if args.worker:
    time_one(args)
    return
  rows, info = measure(args)
  print(render(rows, info, args.markdown))


if __name__ == "__main__":
  main()
