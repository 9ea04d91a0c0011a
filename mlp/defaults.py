"""Every config field's default, read from configs/base.py (their one home), and configs completed
with them.

The library's own keyword defaults (``mlp.spec.make_hyper``, ``mlp.spec.Spec``) are these values,
and a config that lacks a field (a config saved before the field existed, or one not built on
configs/base.py) gets it here, so a default is written once.
"""

from collections.abc import Mapping
from typing import Any

import ml_collections

from mlp.configs import base

DEFAULTS = ml_collections.FrozenConfigDict(base.get_config())

# The two ways of giving a network: model.layers, or model.hidden + train.dropout (an MLP).
MLP_FIELDS = (("model", "hidden"), ("train", "dropout"))


def fill(cfg: Mapping) -> dict:
  """``cfg`` as nested dicts with every field of configs/base.py it lacks at its default.

  A config whose network is ``model.layers`` gets no ``model.hidden`` or ``train.dropout``: those
  describe the other way of giving a network (configs/base.py's docstring).
  """
  out = _merge(DEFAULTS.to_dict(), _plain(cfg))
  if out["model"].get("layers"):
    for section, field in MLP_FIELDS:
      if field not in cfg.get(section, {}):
        del out[section][field]
  return out


def _merge(defaults: dict, given: dict) -> dict:
  out = dict(given)
  for key, value in defaults.items():
    if key not in out:
      out[key] = value
    elif isinstance(value, dict) and isinstance(out[key], dict):
      out[key] = _merge(value, out[key])
  return out


def _plain(cfg: Any) -> Any:
  """Nested mappings (ConfigDicts too) as dicts; other values as they are."""
  if isinstance(cfg, Mapping | ml_collections.ConfigDict | ml_collections.FrozenConfigDict):
    return {k: _plain(v) for k, v in cfg.items()}
  return cfg
