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

``nadam.kernels.<name>_step(p, g, s, hp, t, aux, h) -> None`` is the whole step in
one call (coefficients and kernel): the simplest to use, and the only one a rule
with two passes needs (Prodigy: a first pass over memory takes two sums before
the parameters can move).  Such a rule also has ``<name>_first(p, g, s, h) -> (a,
b)`` and ``<name>_finish(hp, t, aux, sums, h)``, its pieces, and ``<name>`` is its
second pass.  A rule whose state starts as the parameters (Prodigy's ``p0``,
schedule-free's ``z``) takes them in :func:`state` (``params=p``).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_bool, check_int, fail
from ..rules import RULES, get_rule
from . import cpu

__all__ = [
    "aux",
    "coefficient_buffer",
    "get",
    "get_step",
    "hyperparameters",
    "slots",
    "state",
] + [name for rule in RULES for name in (rule, f"{rule}_coefficients", f"{rule}_step")]


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
    return cpu.kernel(get_rule(name), _flags(name, hyper), check_bool("parallel", parallel))


def get_step(name: str, parallel: bool = True, **hyper) -> object:
    """The whole step ``step(p, g, s, hp, t, aux, h) -> None`` of rule ``name`` for the
    given hyperparameters: coefficients, then the kernel (both passes of a two-pass
    rule), in one compiled call."""
    rule = get_rule(name)
    return cpu.stepper(rule, _flags(name, hyper), check_bool("parallel", parallel))


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


def state(name: str, n: int, dtype=np.float64, params: np.ndarray | None = None, **values):
    """A fresh ``(k, n)`` state array for rule ``name``.

    ``params``: the parameters, for the rows that start as a copy of them
    (``Rule.from_params``: Prodigy's ``p0``, schedule-free's ``z``); zero without.
    """
    rule = get_rule(name)
    n = check_int("n", n, 0)
    checked = {**rule.defaults, **rule.validate(values)}
    flags = rule.flags(checked)
    s = rule.initial_state(checked, flags, n, _float_dtype(dtype))
    if params is not None:
        if not (isinstance(params, np.ndarray) and params.size == n):
            fail("params", params, f"a NumPy array of {n} elements", TypeError)
        slots = rule.slots(flags)
        for slot in rule.from_params:
            s[slots.index(slot)] = params.reshape(-1)
    return s


def coefficient_buffer(name: str, dtype=np.float64) -> np.ndarray:
    """An ``h`` vector of the right length for rule ``name``."""
    return np.zeros(get_rule(name).n_coefficients, dtype=_float_dtype(dtype))


def aux(name: str, **hyper) -> np.ndarray:
    """The initial float64 host state of rule ``name`` (with these hyperparameters)."""
    rule = get_rule(name)
    return rule.initial_aux({**rule.defaults, **rule.validate(hyper)})


_PIECES = ("_coefficients", "_step", "_first", "_finish")


def __getattr__(name: str) -> object:
    # nadam.kernels.<rule>, <rule>_coefficients, <rule>_step (and for a two-pass rule
    # <rule>_first, <rule>_finish) for every rule of the registry (also one registered
    # at run time), made on first use: importing nadam compiles nothing.
    for piece in _PIECES:
        base = name.removesuffix(piece)
        if base != name and base in RULES:
            rule = RULES[base]
            flags = rule.flags(rule.defaults)
            if piece == "_coefficients":
                return cpu.coefficients(rule)
            if piece == "_step":
                return cpu.stepper(rule, flags, True)
            if rule.accumulate is not None:
                return cpu.first_pass(rule, flags, True) if piece == "_first" else rule.finish
    if name in RULES:
        rule = RULES[name]
        return cpu.kernel(rule, rule.flags(rule.defaults), True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    pieces = [f"{name}{piece}" for name, rule in RULES.items() for piece in _PIECES[:2]]
    two_pass = [f"{n}{p}" for n, r in RULES.items() if r.accumulate for p in _PIECES[2:]]
    return sorted([*globals(), *RULES, *pieces, *two_pass])
