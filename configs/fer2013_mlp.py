"""Stands in for mlp/configs/fer2013_mlp.py (the config, installed with the package), so that
``--config=configs/fer2013_mlp.py`` keeps working in a checkout."""

from mlp.configs.fer2013_mlp import *  # noqa: F403
from mlp.configs.fer2013_mlp import get_config  # noqa: F401 (what --config= calls)
