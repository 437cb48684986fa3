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

from ..rules import RULES, get_rule
from . import cpu

__all__ = ["aux", "coefficient_buffer", "get", "hyperparameters", "slots", "state"]


def _options(name: str, values: dict) -> tuple:
    rule = get_rule(name)
    return rule.options({**rule.defaults, **rule.validate(values)})


def get(name: str, parallel: bool = True, **options) -> object:
    """The kernel ``kernel(p, g, s, h)`` of rule ``name`` for the given options.

    ``options`` are hyperparameters that shape the state (``amsgrad=True``,
    ``centered=True``, ``momentum=0.9``, ...); pass the same ones to
    :func:`state` and :func:`hyperparameters`.
    """
    return cpu.kernel(get_rule(name), _options(name, options), parallel)


def hyperparameters(name: str, **values) -> np.ndarray:
    """The packed float64 hyperparameter vector ``hp`` of rule ``name``."""
    rule = get_rule(name)
    checked = {**rule.defaults, **rule.validate(values)}
    if callable(checked["lr"]):
        raise TypeError("kernels take a number for lr: evaluate your schedule and set hp[0]")
    hp = np.zeros(rule.n_hyper)
    rule.pack(checked, hp)
    return hp


def slots(name: str, **options) -> tuple[str, ...]:
    """Names of the state rows of rule ``name`` with the given options."""
    return get_rule(name).slots(_options(name, options))


def _float_dtype(dtype) -> np.dtype:
    # The kernels compute in the parameters' dtype: a state or h of another kind
    # would silently compile an integer (or mixed-precision) variant.
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64 (the parameters' dtype), got {dt}")
    return dt


def state(name: str, n: int, dtype=np.float64, **values) -> np.ndarray:
    """A fresh ``(k, n)`` state array for rule ``name``."""
    rule = get_rule(name)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be the number of parameters, an int, got {n!r}")
    if n < 0:
        raise ValueError(f"n must be the number of parameters, >= 0, got {n!r}")
    checked = {**rule.defaults, **rule.validate(values)}
    return rule.initial_state(checked, rule.options(checked), n, _float_dtype(dtype))


def coefficient_buffer(name: str, dtype=np.float64) -> np.ndarray:
    """An ``h`` vector of the right length for rule ``name``."""
    return np.zeros(get_rule(name).n_coefficients, dtype=_float_dtype(dtype))


def aux(name: str) -> np.ndarray:
    """The initial float64 host state of rule ``name``."""
    return np.array(get_rule(name).aux_init, dtype=np.float64)


for _name, _rule in RULES.items():
    globals()[_name] = cpu.kernel(_rule, _rule.options(_rule.defaults), True)
    globals()[f"{_name}_coefficients"] = cpu.coefficients(_rule)
    __all__ += [_name, f"{_name}_coefficients"]
del _name, _rule
