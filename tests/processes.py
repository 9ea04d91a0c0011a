"""Helpers for tests that watch the processes a command starts (Linux /proc)."""

from pathlib import Path


def children_of(pid: int) -> list[int]:
  """The live (not zombie) processes whose parent is ``pid``."""
  out = []
  for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
      fields = stat.read_text().rsplit(") ", 1)[1].split()
    except OSError:
      continue
    if int(fields[1]) == pid and fields[0] != "Z":  # the state, then the parent pid
      out.append(int(stat.parent.name))
  return out


def is_alive(pid: int) -> bool:
  """Whether ``pid`` exists and is not a zombie."""
  try:
    return not Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
  except OSError:
    return False
