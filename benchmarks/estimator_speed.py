"""mlp.MLPClassifier against scikit-learn's MLPClassifier on the same data: accuracy and fit time,
cold (a new process, nothing compiled) and warm (a new process with the compilation cache filled
by the cold one; and a second fit in the same process).

    python -m benchmarks.estimator_speed [--markdown] [--repeats 3] [--only ours,sklearn-sgd]
    python -m benchmarks.estimator_speed --data har --data_dir DIR

Data: scikit-learn's digits (1797 x 64, 10 classes, pixels / 16), or UCI HAR's train split
(``--data har``), split 75/25 stratified (seed 0). Both learners: one hidden layer of 100 ReLU
units, minibatches of 32, SGD with momentum 0.9 at learning rate 0.1 (scikit-learn's is Nesterov),
early stopping on a stratified tenth of the training rows (patience 4 epochs on the validation
loss for ours, 4 epochs without validation-accuracy gain for scikit-learn's), at most 100 epochs;
plus scikit-learn at its defaults (Adam, batch 200, stopping on the training loss). Each
measurement runs in its own process; the times (wall, and CPU: the process's threads summed, which
a loaded machine changes less) are medians over ``--repeats`` processes, each cold one with its
own empty compilation cache.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

IMPLS = ("ours", "sklearn-sgd", "sklearn-default")
SETTINGS = dict(hidden=(100,), batch_size=32, learning_rate=0.1, momentum=0.9, max_epochs=100)


def load(name: str, data_dir: str | None):
  """(x_train, x_test, y_train, y_test, description)."""
  from sklearn.model_selection import train_test_split

  if name == "har":
    from mlp.data import har

    a = har.load_arrays(har.find_root(data_dir or os.environ.get("MLP_DATA_DIR"), download=False))
    x, y, what = a["x_train"], a["y_train"], "UCI HAR train split (7352 x 561, 6 classes)"
  else:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, what = x / 16.0, "digits (1797 x 64, 10 classes)"
  parts = train_test_split(x.astype(np.float32), y, test_size=0.25, stratify=y, random_state=0)
  return (*parts, what)


def learner(impl: str):
  if impl == "ours":
    from mlp import MLPClassifier

    return MLPClassifier(**SETTINGS, random_state=0)
  from sklearn.neural_network import MLPClassifier as SkMLP

  if impl == "sklearn-default":
    return SkMLP(hidden_layer_sizes=(100,), random_state=0)
  return SkMLP(
    hidden_layer_sizes=SETTINGS["hidden"],
    solver="sgd",
    batch_size=SETTINGS["batch_size"],
    learning_rate_init=SETTINGS["learning_rate"],
    momentum=SETTINGS["momentum"],
    max_iter=SETTINGS["max_epochs"],
    early_stopping=True,
    validation_fraction=0.1,
    n_iter_no_change=4,
    random_state=0,
  )


def child(impl: str, data: str, data_dir: str | None) -> dict:
  """One process: two fits of ``impl``; their times, the test accuracy and the epochs."""
  import warnings

  from sklearn.exceptions import ConvergenceWarning

  warnings.simplefilter("ignore", ConvergenceWarning)
  x_tr, x_te, y_tr, y_te, _ = load(data, data_dir)
  out = {}
  for fit in ("first", "again"):
    clf = learner(impl)
    start, start_cpu = time.perf_counter(), time.process_time()
    clf.fit(x_tr, y_tr)
    out[fit] = (time.perf_counter() - start, time.process_time() - start_cpu)
  out["epochs"] = clf.n_epochs_ if impl == "ours" else clf.n_iter_
  out["acc"] = float(clf.score(x_te, y_te))
  return out


def run_child(impl: str, args, cache: str) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env["MLP_COMPILE_CACHE"] = cache
  cmd = [sys.executable, "-m", "benchmarks.estimator_speed", f"--worker={impl}"]
  cmd += [f"--data={args.data}"] + ([f"--data_dir={args.data_dir}"] if args.data_dir else [])
  out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3, help="cold/warm process pairs per learner")
  parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
  parser.add_argument("--data", default="digits", choices=("digits", "har"))
  parser.add_argument("--data_dir", default=None, help="UCI HAR directory (else $MLP_DATA_DIR)")
  parser.add_argument("--only", default=",".join(IMPLS), help="comma-separated learners")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(child(args.worker, args.data, args.data_dir)))
    return
  rows = []
  for impl in args.only.split(","):
    if impl not in IMPLS:
      parser.error(f"--only: unknown learner {impl!r}; they are {', '.join(IMPLS)}")
    cold, warm = [], []
    for _ in range(args.repeats):
      with tempfile.TemporaryDirectory(prefix="mlp-bench-xla-") as cache:
        cold.append(run_child(impl, args, cache))  # an empty cache
        warm.append(run_child(impl, args, cache))  # the cache the cold process filled
    rows.append(
      (
        impl,
        f"{cold[0]['acc']:.4f}",
        str(cold[0]["epochs"]),
        _median(r["first"] for r in cold),
        _median(r["first"] for r in warm),
        _median(r["again"] for r in cold + warm),
      )
    )
  head = ("impl", "test acc", "epochs", "fit, new process", "fit, new process, cache warm")
  head += ("fit again, same process",)
  if args.markdown:
    print(
      f"Data: {load(args.data, args.data_dir)[-1]}, 25% test; medians of {args.repeats}; "
      "seconds wall / CPU (all threads).\n"
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
      print("| " + " | ".join(row) + " |")
  else:
    for row in rows:
      print(*row)


def _median(times) -> str:
  """'wall / cpu' medians of (wall, cpu) pairs."""
  pairs = list(times)
  wall = statistics.median(w for w, _ in pairs)
  cpu = statistics.median(c for _, c in pairs)
  return f"{wall:.2f} / {cpu:.2f}"


if __name__ == "__main__":
  main()
