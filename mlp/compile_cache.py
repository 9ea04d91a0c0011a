"""JAX's persistent compilation cache, on by default in every process of mlp: the command lines,
their worker processes and :class:`mlp.MLPClassifier`. A second process that trains the same
shapes loads the compiled programs from disk instead of compiling them again.

Where: ``$MLP_COMPILE_CACHE`` when set (a folder; ``off`` or ``0`` turns the cache off), else
``compiled/`` in the data cache (``$MLP_CACHE_DIR``, default ``~/.cache/mlp``). A folder the user
gave JAX itself (``JAX_COMPILATION_CACHE_DIR``, or ``jax.config`` before mlp trains) is kept.
Entries are written by JAX (one file per program, keyed by the program, its compiler options,
the jax version and the device), so a cache is safe to share between processes and to delete.
Like any compilation cache it is trusted: keep it in a folder only you can write.
"""

import os
import sys
from pathlib import Path

from mlp.data import common

ENV = "MLP_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "none")
FOLDER = "compiled"  # inside the data cache
JAX_ENV = "JAX_COMPILATION_CACHE_DIR"


def folder() -> Path | None:
  """Where compiled programs are kept: ``$MLP_COMPILE_CACHE``, else ``<data cache>/compiled``;
  None when ``$MLP_COMPILE_CACHE`` turns the cache off."""
  value = os.environ.get(ENV)
  if value is not None and value.strip().lower() in (*OFF, ""):
    return None
  return Path(value).expanduser() if value else common.cache_dir() / FOLDER


def enable() -> Path | None:
  """Turn the cache on for this process and the processes it starts; returns its folder (None:
  off). Before jax is imported this sets JAX's own environment variables (read when jax loads,
  and inherited by worker processes); after, jax's config. A folder the user already gave JAX
  wins. Every program is cached, however quickly it compiled: the small evaluation programs add
  up to seconds per process too."""
  path = folder()
  if "jax" in sys.modules:
    import jax

    given = jax.config.jax_compilation_cache_dir
    if given:
      return Path(given)
    if path is None:
      return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
  if os.environ.get(JAX_ENV):
    return Path(os.environ[JAX_ENV])
  if path is None:
    return None
  os.environ[JAX_ENV] = str(path)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return path
