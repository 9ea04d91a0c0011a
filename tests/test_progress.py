"""The study's progress display (mlp.progress): periodic lines off a terminal, a bar on one."""

import io

from mlp import progress


class Clock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def epoch(run, e, acc, of=10):
  return progress.epoch_event(run, e, of, acc, f"{run} epoch {e}/{of} val acc {acc}")


def test_plain_lines_are_periodic_and_epoch_lines_only_when_verbose():
  clock, lines = Clock(), []
  p = progress.Progress(3, 1, log=lines.append, interactive=False, every_s=20, now=clock)
  for e in range(1, 6):
    clock.t = 5.0 * e
    p.event(epoch("a/seed0", e, 0.5 + e / 100))  # 4/11 of 2 runs in 20 s: 90 s left
  assert lines == ["progress: 1/3 runs done, 0:20 elapsed, ETA 1:30 · a/seed0 ep 4/10 val 0.540"]
  p.event(progress.done_event("a/seed0", "a/seed0 done"))
  assert lines[-1] == "a/seed0 done"
  clock.t = 60.0
  p.close()
  assert lines[-1] == "progress: 2/3 runs done, 1:00 elapsed"
  verbose = []
  q = progress.Progress(2, log=verbose.append, verbose=True, interactive=False, now=clock)
  q.event(epoch("b/seed0", 1, 0.9))
  assert verbose == ["b/seed0 epoch 1/10 val acc 0.9"]


def test_eta_weighs_runs_by_their_estimated_cost():
  clock = Clock()
  p = progress.Progress(
    2, log=lambda s: None, weights={"big": 3.0, "small": 1.0}, interactive=False, now=clock
  )
  assert p.eta() is None
  clock.t = 10.0
  p.event(progress.done_event("small", "small done"))
  assert p.eta() == 30.0  # a quarter of the cost in 10 s: three quarters left
  p.event(epoch("big", 5, 0.9))  # 5 of the big run's 10 epochs + its evaluation (one more)
  trained = 1.0 + 3.0 * 5 / 11
  assert p.eta() == 10.0 * (4.0 - trained) / trained


def test_a_one_run_study_after_its_last_epoch_still_has_its_evaluation_left():
  """0/1 runs done with every epoch trained: the evaluation and saving are left (ETA 0:00 said
  it was over); the run's done event ends it."""
  clock, lines = Clock(), []
  p = progress.Progress(1, log=lines.append, interactive=False, every_s=20, now=clock)
  for e in range(1, 21):
    clock.t = 5.0 * e
    p.event(epoch("cnn/seed0", e, 0.6, of=20))
  assert (
    lines[-1] == "progress: 0/1 runs done, 1:40 elapsed, ETA 0:05 · cnn/seed0 ep 20/20 val 0.600"
  )
  clock.t = 110.0
  p.event(progress.done_event("cnn/seed0", "cnn/seed0 done"))
  p.close()
  assert lines[-2:] == ["cnn/seed0 done", "progress: 1/1 runs done, 1:50 elapsed"]


def test_worker_lines_are_events_or_messages():
  lines = []
  p = progress.Progress(1, log=lines.append, interactive=False)
  p.feed(progress.encode(epoch("r/seed0", 1, 0.75)))
  p.feed(progress.EVENT_MARK + '{"kind": "epo')  # torn by a killed worker: ignored
  p.feed("[w0] retrying r/seed0 (its worker died)")
  p.feed(progress.encode(progress.done_event("r/seed0", "[1/1] r/seed0 done")))
  assert lines == ["[w0] retrying r/seed0 (its worker died)", "[1/1] r/seed0 done"]
  assert p.done == 1 and not p.current


def test_the_terminal_bar_shows_runs_done_current_runs_and_eta(monkeypatch):
  monkeypatch.setenv("COLUMNS", "120")  # the bar fits the terminal's width
  clock, lines, screen = Clock(), [], io.StringIO()
  p = progress.Progress(4, 1, log=lines.append, interactive=True, stream=screen, now=clock)
  clock.t = 8.0
  p.event(progress.done_event("a/seed0", "a done"))
  p.event(epoch("b/seed0", 3, 0.875))
  shown = screen.getvalue().split("\r")[-1]
  assert shown.startswith("2/4 runs |")
  assert "ETA" in shown and "b/seed0 ep 3/10 val 0.875" in shown
  assert lines == ["a done"]  # messages go to the log above the bar, not into it
  monkeypatch.setenv("COLUMNS", "60")
  p.event(epoch("b/seed0", 4, 0.9))
  assert (
    len(screen.getvalue().split("\r")[-1].rstrip()) <= 60
  )  # cut, not wrapped, on a narrow terminal
  p.close()
  assert "4/4" not in screen.getvalue() and "\n" in screen.getvalue()  # left as it stood


def test_clock():
  assert [progress.clock(s) for s in (0, 41.4, 725, 3729)] == ["0:00", "0:41", "12:05", "1:02:09"]
