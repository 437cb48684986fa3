"""The arguments of :func:`nadam.minimize` that are not options: ``x0``, ``bounds``,
``args``, ``jac`` and ``callback``, checked and put in the form the loop takes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy.optimize import Bounds, OptimizeResult

from ._checks import fail, type_name
from .loop.objective import FD_METHODS, FiniteDifferences, with_jac
from .schedules import Schedule

__all__ = [
    "as_x0",
    "describe",
    "evaluation",
    "parse_bounds",
    "split_args",
    "unwrap_memoized",
    "wrap_callback",
]


def as_x0(x0: Any, name: str = "x0") -> np.ndarray:
    """A private, C-contiguous copy of ``x0``: float32 if it is float32, else float64.

    Raises
    ------
    TypeError, ValueError
        For something that is not an array of finite real numbers, or is empty.
    """
    try:
        a = np.asarray(x0)
    except Exception as exc:
        raise TypeError(
            f"{name} must be an array-like of real numbers, got {x0!r}: {exc}"
        ) from None
    if a.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must hold real numbers (int or float), got dtype {a.dtype} from "
            f"{type(x0).__name__}"
        )
    if a.size == 0:
        raise ValueError(f"{name} must have at least one element, got shape {a.shape}")
    dtype = np.float32 if a.dtype == np.float32 else np.float64
    x = np.array(a, dtype=dtype, order="C", copy=True)
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x))
        # By its index (in a batch's x0: the problem, then the parameter).
        index = ", ".join(str(int(i)) for i in np.unravel_index(bad[0], x.shape))
        where = f"{name}[{index}]" if x.ndim else name
        raise ValueError(
            f"{name} must be finite; {where} = {float(x.flat[bad[0]])!r} "
            f"({bad.size} non-finite element(s))"
        )
    return x


def parse_bounds(bounds: Any, n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
    """Flat ``(lo, hi)`` of ``n`` elements in ``dtype``, or None when no bound is finite."""
    if bounds is None:
        return None
    if isinstance(bounds, Bounds):
        lo, hi = (np.asarray(b, dtype=np.float64) for b in (bounds.lb, bounds.ub))
        for name, b in (("lb", lo), ("ub", hi)):
            if b.size not in (1, n):
                raise ValueError(
                    f"bounds.{name} has {b.size} elements but x0 has {n}; "
                    "give a scalar or one value per element of x0"
                )
        lo, hi = np.broadcast_to(lo.ravel(), n), np.broadcast_to(hi.ravel(), n)
    else:
        try:
            pairs = list(bounds)
        except TypeError:
            fail(
                "bounds",
                bounds,
                "a sequence of (low, high) pairs or a scipy.optimize.Bounds",
                TypeError,
            )
        if len(pairs) != n:
            raise ValueError(
                f"bounds has {len(pairs)} (low, high) pairs but x0 has {n} elements; "
                "give one pair per element of x0 (None for no bound)"
            )
        lo, hi = np.empty(n), np.empty(n)
        for i, pair in enumerate(pairs):
            try:
                low, high = pair
                lo[i] = -np.inf if low is None else low
                hi[i] = np.inf if high is None else high
            except (TypeError, ValueError):
                fail(f"bounds[{i}]", pair, "a (low, high) pair of numbers or None")
    if np.isnan(lo).any() or np.isnan(hi).any():
        raise ValueError(f"bounds must not contain NaN, got lo={lo}, hi={hi}")
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        i = bad[0]
        raise ValueError(
            f"bounds[{i}] has low > high ({lo[i]} > {hi[i]}); each low must be <= its high"
        )
    if np.all(np.isneginf(lo)) and np.all(np.isposinf(hi)):
        return None
    low, high = lo.astype(dtype), hi.astype(dtype)
    bad = np.flatnonzero(np.isposinf(low) | np.isneginf(high))
    if bad.size:  # every iterate would be projected onto an infinity
        i = bad[0]
        raise ValueError(
            f"bounds[{i}] = ({lo[i]}, {hi[i]}) holds no finite {np.dtype(dtype).name}; "
            "allowed: low < inf and high > -inf"
        )
    return low, high


def split_args(args: Any) -> tuple[tuple, Iterator | None]:
    """``(args, None)`` for fixed arguments (a non-tuple is one argument), or
    ``((), stream)`` for an iterator of per-step arguments."""
    if isinstance(args, Iterator):
        return (), args
    return (args if isinstance(args, tuple) else (args,)), None


def unwrap_memoized(fun: Callable, jac: Any) -> tuple[Callable, Any]:
    """``(fun, True)`` when scipy has split a ``jac=True`` objective into a memoising
    wrapper and its ``derivative``; otherwise ``(fun, jac)`` unchanged.

    scipy memoises on ``x`` alone, which is wrong for minibatches: the final
    evaluation on all rows, at the last iterate, would get back that iterate's
    batch values.  The wrapper keeps the objective as ``.fun``.
    """
    owner = getattr(jac, "__self__", None)
    if (
        owner is not None
        and owner is fun
        and getattr(jac, "__name__", "") == "derivative"
        and callable(getattr(fun, "fun", None))
    ):
        return fun.fun, True
    return fun, jac


def evaluation(
    fun: Callable, jac: Any, x: np.ndarray, rel_step: float | None, box: tuple | None
) -> tuple[Callable, int, str]:
    """``(evaluate, evaluations per call, how messages name it)`` for ``jac``."""
    if jac is True:
        return fun, 1, "fun (with jac=True)"
    if callable(jac):
        return with_jac(fun, jac), 1, "jac"
    if jac is None or jac is False or jac in FD_METHODS:
        fd = FiniteDifferences(fun, x, jac or "2-point", rel_step, box)
        return fd, fd.evaluations, "finite differences"
    fail("jac", jac, f"True, a callable, None or one of {FD_METHODS}")


def wrap_callback(callback: Callable | None) -> Callable | None:
    """scipy's convention: ``callback(intermediate_result)`` if that is its only
    parameter's name, else ``callback(xk)``; both get copies.  Returns the loop's
    ``call(x, f, g, nit)``."""
    if callback is None:
        return None
    if not callable(callback):
        fail("callback", callback, "a callable or None", TypeError)
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):  # builtins without a signature: the plain form
        params = set()
    if params == {"intermediate_result"}:

        def call(x, f, g, nit):
            res = OptimizeResult(x=x.copy(), fun=f, jac=g.copy(), nit=nit)
            return callback(intermediate_result=res)

        return call
    return lambda x, f, g, nit: callback(x.copy())


def describe(value: Any) -> Any:
    """A hyperparameter as JSON, for a run's identity: floats as they are (they
    round-trip exactly), a schedule by its formula and parameters, any other
    callable by its name (its own state, if any, is not saved)."""
    if isinstance(value, Schedule):
        return {"schedule": value.name, "params": value.params.tolist()}
    if callable(value):
        return {"callable": getattr(value, "__qualname__", type_name(value))}
    if isinstance(value, tuple):
        return list(value)
    return value
