"""Stands in for mlp/configs/fer2013_transfer.py (the config, installed with the package), so that
``--config=configs/fer2013_transfer.py`` keeps working in a checkout."""

from mlp.configs.fer2013_transfer import *  # noqa: F403
from mlp.configs.fer2013_transfer import get_config  # noqa: F401 (what --config= calls)
