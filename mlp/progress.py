"""A study's progress on the console: one live bar on a terminal, plain periodic lines otherwise.

Training reports two kinds of event (:func:`epoch_event`, :func:`done_event`); a
:class:`Progress` turns them into a tqdm bar (runs done of the total, the runs in training with
their epoch and validation accuracy, elapsed time and ETA) or, when the output is not a terminal
(CI, nohup, ``| cat``), into a status line every ``every_s`` seconds. Each finished run is one
line; per-epoch lines are shown only with ``verbose`` (each run's ``train.log`` always has them).
Worker processes send their events to the parent as marked lines on stdout (:func:`encode`),
which the parent feeds to its :class:`Progress` (:meth:`Progress.feed`).
"""

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

EVENT_MARK = "\x1eprogress "  # starts a worker's event line; any other line is a message

Event = dict[str, Any]


def epoch_event(run: str, epoch: int, of: int, val_acc: float, line: str) -> Event:
  return {"kind": "epoch", "run": run, "epoch": epoch, "of": of, "val_acc": val_acc, "line": line}


def done_event(run: str, line: str) -> Event:
  return {"kind": "done", "run": run, "line": line}


def encode(event: Event) -> str:
  """One line carrying ``event`` from a worker process to the parent's :meth:`Progress.feed`."""
  return EVENT_MARK + json.dumps(event)


def clock(seconds: float) -> str:
  """0:41, 12:05, 1:02:09."""
  s = int(round(seconds))
  h, m = divmod(s // 60, 60)
  return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Progress:
  """Runs done of ``total`` (``done`` of them before this process started), the runs in
  training, elapsed time and ETA. ``weights`` (run id -> estimated cost, for each run still to
  train) weigh the ETA; without them every run weighs the same. Messages and finished-run lines
  go to ``log``; the bar, on a terminal (``interactive``: stdout and stderr are both terminals),
  to ``stream``."""

  def __init__(
    self,
    total: int,
    done: int = 0,
    *,
    log: Callable[[str], None] = print,
    verbose: bool = False,
    weights: dict[str, float] | None = None,
    interactive: bool | None = None,
    stream: IO[str] | None = None,
    every_s: float = 20.0,
    now: Callable[[], float] = time.monotonic,
  ) -> None:
    self.total, self.done, self.start_done = total, done, done
    self.log, self.verbose, self.every_s, self.now = log, verbose, every_s, now
    self.weights = dict(weights or {})
    self.mean_w = sum(self.weights.values()) / len(self.weights) if self.weights else 1.0
    self.left_w = sum(self.weights.values()) if self.weights else float(total - done)
    self.done_w = 0.0
    self.current: dict[str, tuple[int, int, float]] = {}  # run -> (epoch, of, val acc)
    self.t0 = self.last = now()
    self.lock = threading.RLock()
    if interactive is None:
      interactive = sys.stdout.isatty() and sys.stderr.isatty()
    self.bar = None
    if interactive and total > done:
      from tqdm import tqdm

      self.bar = tqdm(
        total=total,
        initial=done,
        file=stream or sys.stderr,
        bar_format="{n_fmt}/{total_fmt} runs |{bar:20}| {elapsed}{postfix}",
        ncols=shutil.get_terminal_size((100, 20)).columns,  # $COLUMNS, else the terminal's
        leave=True,
      )

  def _w(self, run: str) -> float:
    return self.weights.get(run, self.mean_w)

  def eta(self) -> float | None:
    """Seconds left, from the cost trained so far in this process (finished runs and the
    finished epochs of the runs in training) and the time it took; None before any progress.

    A run's cost is its epochs and one more for what follows the last (evaluating the splits,
    saving): a run whose epochs are all done still has that left, not 0:00."""
    partial = sum(self._w(r) * e / (max(of, 1) + 1) for r, (e, of, _) in self.current.items())
    trained = self.done_w + partial
    if trained <= 0:
      return None
    return (self.now() - self.t0) * max(self.left_w - trained, 0.0) / trained

  def status(self, width: int | None = None) -> str:
    """The ETA and the runs in training, e.g. ``ETA 1:32 · bs1_h300/seed0 ep 12/100 val 0.951``;
    cut to ``width`` characters."""
    eta = self.eta()
    parts = [f"ETA {clock(eta)}" if eta is not None else "ETA ?"]
    parts += [f"{r} ep {e}/{of} val {acc:.3f}" for r, (e, of, acc) in self.current.items()]
    text = " · ".join(parts)
    if width is not None and len(text) > width:
      text = text[: max(width - 1, 0)] + "…"
    return text

  def line(self, text: str) -> None:
    """A message, printed above the bar (or plainly)."""
    with self.lock:
      if self.bar is not None:
        with self.bar.external_write_mode():
          self.log(text)
      else:
        self.log(text)

  def event(self, ev: Event) -> None:
    with self.lock:
      run = ev["run"]
      if ev["kind"] == "epoch":
        self.current[run] = (int(ev["epoch"]), int(ev["of"]), float(ev["val_acc"]))
        if self.verbose:
          self.line(ev["line"])
      elif ev["kind"] == "done":
        self.current.pop(run, None)
        self.done += 1
        self.done_w += self._w(run)
        if self.bar is not None:
          self.bar.update(1)
        self.line(ev["line"])
      self._refresh()

  def feed(self, line: str) -> None:
    """A line from a worker process's stdout: an event (:func:`encode`) or a message."""
    if line.startswith(EVENT_MARK):
      try:
        ev = json.loads(line[len(EVENT_MARK) :])
      except json.JSONDecodeError:  # a torn line from a killed worker: nothing to show
        return
      self.event(ev)
    else:
      self.line(line)

  def _refresh(self) -> None:
    if self.bar is not None:
      cols = self.bar.ncols = shutil.get_terminal_size((100, 20)).columns  # follows a resize
      self.bar.set_postfix_str(self.status(width=max(cols - 45, 10)))
    elif self.now() - self.last >= self.every_s and self.done < self.total:
      self.last = self.now()
      self.log(f"{self._count()}, {self.status()}")

  def _count(self) -> str:
    return f"progress: {self.done}/{self.total} runs done, {clock(self.now() - self.t0)} elapsed"

  def close(self) -> None:
    """End the bar (or, plainly, say the runs done and the time taken)."""
    with self.lock:
      if self.bar is not None:
        self.bar.set_postfix_str("")
        self.bar.close()
        self.bar = None
      elif self.done > self.start_done:
        self.log(self._count())
