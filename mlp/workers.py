"""Where a study's runs are scheduled onto processes: worker processes, one per CPU core, each with
a one-thread XLA pool.

Why: on CPU, XLA runs a step's independent operations (dW and dx of a layer, say) on its intra-op
thread pool, and for small steps handing work between threads costs more than it saves, while
large image batches are the other way round (measurements: benchmarks/README.md, "A one-thread
XLA pool"). So a config with ``workers = 0`` (one per core; the HAR ablation) trains its runs in
that many processes, each with a one-thread pool on its own core, while ``workers = 1`` (image
studies) trains in the calling process on every core. Accelerators always train in the calling
process.

How: the parent enqueues the pending runs, most expensive first, as trials of the study
(mlp.schedule) and starts the workers (``python -m mlp.workers``), sending each the study's plans
(mlp.plan; a :class:`Job` on its stdin): a worker never reads the config. Each loads the data and
claims runs from the study's storage, exactly as workers on other machines do, so an interrupted
study resumes the same way. The numbers do not depend on the number of workers: every run has its
own seed.
"""

import argparse
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from mlp import compile_cache, interrupts
from mlp.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
STEP_OVERHEAD_S = 50e-6  # per minibatch step, measured on CPU (benchmarks/README.md)
FLOPS_PER_S = 100e9  # sustained float32 matmul rate inside the epoch scan, same source


class WorkerError(RuntimeError):
  """A worker process failed (its traceback is on stderr)."""


def available_cpus() -> list[int]:
  """The CPU cores this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


def count(requested: int, pending: int) -> int:
  """How many worker processes to use for ``pending`` runs when the study asks for ``requested``
  (config field workers: 0 = one per core); 1 = train in this process."""
  import jax

  if jax.default_backend() != "cpu" or not hasattr(os, "sched_setaffinity"):
    return 1
  n = requested or len(available_cpus())
  return max(1, min(n, pending))


def estimated_seconds(plan: Plan, rows: int) -> float:
  """A rough cost model for ordering the queue: per-step overhead + 3 passes of 2 flops per MAC."""
  steps = math.ceil(rows / plan.spec.batch_size)
  per_epoch = steps * STEP_OVERHEAD_S + 6 * rows * plan.spec.net.macs() / FLOPS_PER_S
  return plan.max_epochs * per_epoch


def limit_xla_threads(cpu: int) -> None:
  """Give XLA's CPU client a one-thread pool pinned to ``cpu``; call before JAX starts a backend.

  XLA sizes its pool from the process's CPU affinity when the client is created (jax issue
  #1539), so the affinity is narrowed to one core for that moment, then restored for this thread.
  """
  import jax
  from jax._src import xla_bridge

  if xla_bridge.backends_are_initialized():
    raise RuntimeError("limit_xla_threads must run before JAX initialises its backends")
  allowed = available_cpus()
  os.sched_setaffinity(0, {allowed[cpu % len(allowed)]})
  try:
    jax.devices()
  finally:
    os.sched_setaffinity(0, allowed)


class Job(NamedTuple):
  """What a worker process is sent: the study's plans and where its data, trials and run folders
  are. Pickled onto the worker's stdin (a parent to its own child, like multiprocessing)."""

  plans: tuple[Plan, ...]
  data: Mapping  # the study's data section (mlp.plan.StudyPlan.data)
  data_dir: str | None
  storage: object  # mlp.schedule.Storage, with the study's name
  workdir: Path


def run(
  job: Job,
  n: int,
  *,
  log: Callable[[str], None],
  feed: Callable[[str], None] | None = None,
) -> None:
  """Start ``n`` worker processes on ``job``'s trials (mlp.schedule); return when all exit.

  The study's runs must already be enqueued. Each line a worker prints (a message, or a progress
  event: mlp.progress) goes to ``feed`` (default ``log``). Raises WorkerError when a worker
  fails; on KeyboardInterrupt the workers are interrupted too and waited for, and on SIGTERM
  (mlp.interrupts.Preempted) they get SIGTERM at once: each writes its checkpoint and exits.
  """
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  log(f"training in {n} worker processes (one XLA thread each; config workers)")
  sent = pickle.dumps(job)
  procs = []
  for i in range(n):
    cmd = [sys.executable, "-m", "mlp.workers", "--index", str(i)]
    p = subprocess.Popen(
      cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    procs.append(p)
  for p in procs:  # a job larger than a pipe's buffer waits for its worker to read it
    threading.Thread(target=_send, args=(p, sent), daemon=True).start()
  readers = [
    threading.Thread(target=_relay, args=(p.stdout, feed or log), daemon=True) for p in procs
  ]
  for t in readers:
    t.start()
  try:
    codes = [p.wait() for p in procs]
    for t in readers:
      t.join()  # every line a worker printed is shown before the study goes on
  except BaseException as e:
    # Ctrl-C in a terminal reaches the workers too (same process group); give them a moment to
    # stop on their own, then interrupt the ones that did not get it, then kill. A scheduler's
    # SIGTERM may reach this process alone: pass it on at once (a second one does no harm).
    steps = ((None, 5), (signal.SIGINT, 30), (signal.SIGKILL, None))
    if isinstance(e, interrupts.Preempted):
      steps = ((signal.SIGTERM, 60), (signal.SIGKILL, None))
    for p in procs:
      for sig, timeout in steps:
        if sig is not None and p.poll() is None:
          p.send_signal(sig)
        try:
          p.wait(timeout=timeout)
          break
        except subprocess.TimeoutExpired:
          continue
    raise
  failed = [(i, c) for i, c in enumerate(codes) if c != 0]
  if failed:
    raise WorkerError(
      "worker process(es) failed: "
      + ", ".join(_exit_text(i, c) for i, c in failed)
      + "; finished runs are saved: fix it and run the same command with the same --workdir to "
      "resume, or set --config.workers=1 to train in one process"
    )


def _send(proc: subprocess.Popen, job: bytes) -> None:
  """Write a pickled job to a worker's stdin and close it."""
  try:
    proc.stdin.buffer.write(job)
    proc.stdin.close()
  except (BrokenPipeError, ValueError):  # it failed at start: its exit code says so
    pass


def _relay(stream, feed: Callable[[str], None]) -> None:
  """Pass a worker's stdout on, line by line, until it closes."""
  with stream:
    for line in stream:
      feed(line.rstrip("\n"))


def _exit_text(i: int, code: int) -> str:
  if code in (-signal.SIGTERM, interrupts.EXIT_CODES[signal.SIGTERM]):
    return f"worker {i} was stopped by SIGTERM (its run's checkpoint is saved)"
  if code < 0:  # killed by a signal: it printed nothing
    try:
      name = signal.Signals(-code).name
    except ValueError:
      name = str(-code)
    why = " (out of memory? see dmesg)" if code == -signal.SIGKILL else ""
    return f"worker {i} was killed by signal {name}{why}"
  return f"worker {i} exited with code {code} (its error is printed above)"


def _say(line: str) -> None:
  """One write per line, so that lines of concurrent workers never interleave on a pipe."""
  sys.stdout.flush()
  os.write(sys.stdout.fileno(), (line + "\n").encode())


def _exit_with_parent(poll_s: float = 0.5) -> None:
  """Exit as soon as the parent study dies (even by kill -9), mid-run included: an orphaned
  worker would otherwise race a rerun for the same run folder. The run it was training has no
  result.json, so the rerun trains it again from scratch."""
  import time

  parent = os.getppid()

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(poll_s)
    os._exit(1)

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_main(argv: list[str] | None = None) -> None:
  """One worker: claim the study's runs and train them until none is left (mlp.schedule.work).
  Its :class:`Job` comes pickled on stdin."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--index", type=int, required=True)
  args = p.parse_args(argv)
  compile_cache.enable()  # (inherited from the study; also for a worker started by hand)
  limit_xla_threads(args.index)
  interrupts.install(quiet=True)  # Ctrl-C, SIGTERM: the run's checkpoint, then exit

  from mlp import data as data_lib
  from mlp import progress, schedule, trainer

  job: Job = pickle.load(sys.stdin.buffer)
  _exit_with_parent()
  tag = f"[w{args.index}]"
  log = lambda s: _say(f"{tag} {s}")  # noqa: E731
  st = schedule.open_study("", job.workdir, job.storage, log)
  data = data_lib.load(job.data, job.data_dir)
  events = lambda ev: _say(progress.encode(ev))  # noqa: E731 (the parent shows them)
  schedule.work(st, job.plans, trainer.Context(data, job.workdir, log, events))


if __name__ == "__main__":
  try:
    worker_main()
  except KeyboardInterrupt as e:  # the parent study reports the interruption
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the exit
    sys.exit(interrupts.exit_code(e))
  except ValueError as e:  # a user's error found in training (out of memory, ...): one line
    print(f"error ({type(e).__name__}): {e}", file=sys.stderr)
    sys.exit(2)
