"""Stands in for mlp/configs/cifar10_overfit.py (the config, installed with the package), so that
``--config=configs/cifar10_overfit.py`` keeps working in a checkout."""

from mlp.configs.cifar10_overfit import *  # noqa: F403
from mlp.configs.cifar10_overfit import get_config  # noqa: F401 (what --config= calls)
