"""Stands in for mlp/configs/har_cv.py (the config, installed with the package), so that
``--config=configs/har_cv.py`` keeps working in a checkout."""

from mlp.configs.har_cv import *  # noqa: F403
from mlp.configs.har_cv import get_config  # noqa: F401 (what --config= calls)
