"""nadam: Numba-accelerated first-order optimisers with a scipy-style ``minimize``."""

from . import kernels, methods, rules, schedules
from .minimize import minimize
from .optimizers import (
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    NonFiniteGradientError,
    Optimizer,
    RAdam,
    RMSprop,
)
from .plot import plot_history

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "NonFiniteGradientError",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "kernels",
    "methods",
    "minimize",
    "plot_history",
    "rules",
    "schedules",
]
