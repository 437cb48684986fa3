"""nadam: Numba-accelerated first-order optimisers with a scipy-style ``minimize``.

The public names are imported on first use (``import nadam`` itself loads only
numba, this package's registry and :mod:`nadam.vmath`), so a script that needs one
optimizer class does not pay for scipy.optimize, the loop and the plotting code.
"""

from __future__ import annotations

import importlib
from typing import Any

# vmath is not lazy: its exp must be registered with numba before an objective that
# names nadam.vmath.exp is typed (an import made during the typing is too late for it).
from . import vmath as vmath
from .rules import RULES

__version__ = "0.1.0"

# Public name -> the module that holds it.
_LAZY = {
    "Minimizer": "nadam.minimizer",
    "minimize": "nadam.minimizer",
    "minimize_many": "nadam.many",
    "Status": "nadam.loop.status",
    "NonFiniteGradientError": "nadam.optimizers",
    "Optimizer": "nadam.optimizers",
    "optimizer_class": "nadam.optimizers",
    "plot_history": "nadam.plot",
    "set_threads": "nadam.threads",
    "get_threads": "nadam.threads",
}
_MODULES = (
    "checkpoint",
    "kernels",
    "methods",
    "mpi",
    "rules",
    "sampling",
    "schedules",
    "threads",
)

__all__ = sorted([*_LAZY, *_MODULES, "vmath", *(r.class_name for r in RULES.values())])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"nadam.{name}")
    elif any(r.class_name == name for r in RULES.values()):
        value = getattr(importlib.import_module("nadam.optimizers"), name)
    else:
        raise AttributeError(f"module 'nadam' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *(r.class_name for r in RULES.values())})
