"""Stands in for mlp/configs/cifar10_mlp.py (the config, installed with the package), so that
``--config=configs/cifar10_mlp.py`` keeps working in a checkout."""

from mlp.configs.cifar10_mlp import *  # noqa: F403
from mlp.configs.cifar10_mlp import get_config  # noqa: F401 (what --config= calls)
