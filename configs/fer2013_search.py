"""Stands in for mlp/configs/fer2013_search.py (the config, installed with the package), so that
``--config=configs/fer2013_search.py`` keeps working in a checkout."""

from mlp.configs.fer2013_search import *  # noqa: F403
from mlp.configs.fer2013_search import get_config  # noqa: F401 (what --config= calls)
