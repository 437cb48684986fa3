"""Argument checks, with one message style for every public entry point.

Every check names the argument, shows the value and says what is allowed::

    Invalid option maxiter: -1; allowed: an int >= 0
    Invalid lr: '0.1' (str); allowed: a finite real number >= 0

``ValueError`` when the value has the right kind but is out of range,
``TypeError`` when it has the wrong kind (then the message also gives its type).
``label`` is how the caller names the argument: ``"lr"``, ``"option maxiter"``,
``"betas[1]"``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_real",
    "check_seed",
    "fail",
    "is_real",
    "type_name",
]


def type_name(value: Any) -> str:
    """``module.Class`` for objects of other libraries, the bare name for builtins."""
    cls = type(value)
    module = cls.__module__.split(".")[0]
    return cls.__name__ if module == "builtins" else f"{module}.{cls.__name__}"


def fail(label: str, value: Any, allowed: str, error: type[Exception] = ValueError) -> NoReturn:
    """Raise ``error`` in the one message style (a ``TypeError`` also names the type)."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if error is TypeError:
        shown += f" ({type_name(value)})"
    raise error(f"Invalid {label}: {shown}; allowed: {allowed}")


def is_real(value: Any) -> bool:
    """A Python or NumPy real number (not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    parts = []
    if low > -math.inf:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high < math.inf:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_real(
    label: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``float(value)`` if it is a finite real number in the interval, else raise."""
    if value is None and allow_none:
        return None
    bounds = _interval(low, high, low_open, high_open)
    allowed = "a finite real number" + (f" {bounds}" if bounds else "")
    if allow_none:
        allowed += ", or None"
    if not is_real(value):
        fail(label, value, allowed, TypeError)
    x = float(value)
    inside = (low < x if low_open else low <= x) and (x < high if high_open else x <= high)
    if not (math.isfinite(x) and inside):
        fail(label, value, allowed)
    return x


def check_int(
    label: str,
    value: Any,
    low: int | None = None,
    high: int | None = None,
    *,
    allow_none: bool = False,
) -> int | None:
    """``int(value)`` if it is an integer (not a bool) in ``[low, high]``, else raise."""
    if value is None and allow_none:
        return None
    bounds = " and ".join(
        part
        for part in (
            None if low is None else f">= {low}",
            None if high is None else f"<= {high}",
        )
        if part
    )
    allowed = "an int" + (f" {bounds}" if bounds else "") + (", or None" if allow_none else "")
    if isinstance(value, (bool, np.bool_)):
        fail(label, value, allowed, TypeError)
    try:
        v = operator.index(value)
    except TypeError:
        fail(label, value, allowed, TypeError)
    if (low is not None and v < low) or (high is not None and v > high):
        fail(label, value, allowed)
    return int(v)


def check_bool(label: str, value: Any, *, allow_int: bool = False) -> bool:
    """``bool(value)`` for a bool (and, with ``allow_int``, the ints 0 and 1)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if allow_int and isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    fail(label, value, "True or False", TypeError)


def check_choice(label: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared by equality and type), else
    ``ValueError``."""
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return choice
    fail(label, value, "one of " + ", ".join(map(repr, choices)))


def check_seed(label: str, value: Any) -> int | None:
    """A sampler seed: a non-negative int (NumPy ints too, not bools) or None."""
    return check_int(label, value, 0, allow_none=True)
