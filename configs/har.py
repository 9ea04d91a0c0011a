"""Stands in for mlp/configs/har.py (the config, installed with the package), so that
``--config=configs/har.py`` keeps working in a checkout."""

from mlp.configs.har import *  # noqa: F403
from mlp.configs.har import get_config  # noqa: F401 (what --config= calls)
