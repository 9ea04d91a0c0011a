"""Stands in for mlp/configs/har_search.py (the config, installed with the package), so that
``--config=configs/har_search.py`` keeps working in a checkout."""

from mlp.configs.har_search import *  # noqa: F403
from mlp.configs.har_search import get_config  # noqa: F401 (what --config= calls)
