"""Stands in for mlp/configs/base.py (the config, installed with the package), so that
``--config=configs/base.py`` keeps working in a checkout."""

from mlp.configs.base import *  # noqa: F403
from mlp.configs.base import get_config  # noqa: F401 (what --config= calls)
