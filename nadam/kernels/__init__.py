"""The low-level layer: in-place update kernels for users who manage their own state.

Each rule has a kernel ``nadam.kernels.<name>(p, g, s, h) -> None`` (the threaded
``prange`` loop with the rule's default options) and a host-coefficient function
``nadam.kernels.<name>_coefficients(hp, t, aux, h) -> None``.  Both are numba
dispatchers, callable from Python and from your own ``@njit`` code:

>>> import numpy as np
>>> from numba import njit
>>> from nadam import kernels
>>> p = np.ones(4); s = kernels.state("adam", p.size, p.dtype)
>>> hp = kernels.hyperparameters("adam", lr=0.1); h = kernels.coefficient_buffer("adam", p.dtype)
>>> aux = kernels.aux("adam")
>>> @njit
... def fit(p, s, hp, aux, h, steps):
...     for t in range(1, steps + 1):
...         g = 2.0 * p                                  # gradient of sum(p**2)
...         kernels.adam_coefficients(hp, t, aux, h)
...         kernels.adam(p, g, s, h)
>>> fit(p, s, hp, aux, h, 100)
>>> bool(np.all(np.abs(p) < 0.1))
True

Arguments: ``p`` the flat parameters and ``g`` the gradient (1-D, same dtype),
``s`` the ``(k, n)`` state (rows named by :func:`slots`), ``h`` the coefficient
vector (parameters' dtype), ``hp`` the float64 hyperparameter vector, ``t`` the
step count starting at 1, ``aux`` the float64 host state.  Use :func:`get` for
other options (``amsgrad``, ``centered``, ...) or the serial loop.

Both check the lengths of their arrays first (a few comparisons, nothing per
element) and raise :class:`~nadam.kernels.cpu.ArrayShapeError` (a ``ValueError``)
before writing anything when one does not fit; they check nothing else: values,
dtypes and ``t`` are the caller's to get right.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int, fail
from ..rules import RULES, get_rule
from . import cpu

__all__ = ["aux", "coefficient_buffer", "get", "hyperparameters", "slots", "state"] + [
    name for rule in RULES for name in (rule, f"{rule}_coefficients")
]


def _flags(name: str, values: dict) -> tuple:
    rule = get_rule(name)
    return rule.flags({**rule.defaults, **rule.validate(values)})


def get(name: str, parallel: bool = True, **hyper) -> object:
    """The kernel ``kernel(p, g, s, h)`` of rule ``name`` for the given hyperparameters.

    ``hyper`` are the hyperparameters that shape the state (``amsgrad=True``,
    ``centered=True``, ``momentum=0.9``, ...); pass the same ones to
    :func:`state` and :func:`hyperparameters`.  A two-pass rule's kernel is its
    second pass (see :mod:`nadam.rules`).
    """
    return cpu.kernel(get_rule(name), _flags(name, hyper), parallel)


def hyperparameters(name: str, **values) -> np.ndarray:
    """The packed float64 hyperparameter vector ``hp`` of rule ``name``."""
    rule = get_rule(name)
    checked = {**rule.defaults, **rule.validate(values)}
    if callable(checked["lr"]):
        fail(
            "lr",
            checked["lr"],
            "a number (kernels take one: evaluate your schedule and set hp[0])",
            TypeError,
        )
    hp = np.zeros(rule.n_hyper)
    rule.pack(checked, hp)
    return hp


def slots(name: str, **hyper) -> tuple[str, ...]:
    """Names of the state rows of rule ``name`` with the given hyperparameters."""
    return get_rule(name).slots(_flags(name, hyper))


def _float_dtype(dtype) -> np.dtype:
    # The kernels compute in the parameters' dtype: a state or h of another kind
    # would silently compile an integer (or mixed-precision) variant.
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"Invalid dtype: {dt}; allowed: float32 or float64 (the parameters' dtype)")
    return dt


def state(name: str, n: int, dtype=np.float64, **values) -> np.ndarray:
    """A fresh ``(k, n)`` state array for rule ``name``."""
    rule = get_rule(name)
    n = check_int("n", n, 0)
    checked = {**rule.defaults, **rule.validate(values)}
    return rule.initial_state(checked, rule.flags(checked), n, _float_dtype(dtype))


def coefficient_buffer(name: str, dtype=np.float64) -> np.ndarray:
    """An ``h`` vector of the right length for rule ``name``."""
    return np.zeros(get_rule(name).n_coefficients, dtype=_float_dtype(dtype))


def aux(name: str) -> np.ndarray:
    """The initial float64 host state of rule ``name``."""
    return np.array(get_rule(name).aux_init, dtype=np.float64)


def __getattr__(name: str) -> object:
    # nadam.kernels.<rule> and nadam.kernels.<rule>_coefficients for every rule of the
    # registry (also one registered at run time), made on first use: importing nadam
    # compiles nothing.
    base = name.removesuffix("_coefficients")
    if base in RULES:
        rule = RULES[base]
        if name != base:
            return cpu.coefficients(rule)
        return cpu.kernel(rule, rule.flags(rule.defaults), True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *RULES, *(f"{r}_coefficients" for r in RULES)])
