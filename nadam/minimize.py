r"""A scipy-style front end: :func:`minimize` for (stochastic) objectives.

:func:`minimize` validates its arguments once, builds one optimizer bound to a
private copy of ``x0`` and then repeats, with no conversion, copy or
allocation of its own per step:

1. draw this step's arguments (all of ``args``, a minibatch of their rows, or
   the next tuple of a stream),
2. evaluate the objective and its gradient at the iterate (:attr:`Minimizer.evaluate`,
   the single hook through which every evaluation goes),
3. update the stopping rules from the loss and the gradient norm,
4. take one optimizer step in place and project onto the bounds.

All mutable state of a run lives in one :class:`LoopState`, which exports to
and restores from plain NumPy arrays and scalars, so a run can be continued bit
for bit (:meth:`Minimizer.state_dict`, :meth:`Minimizer.load_state_dict`).
"""

from __future__ import annotations

import inspect
import math
import operator
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from scipy.optimize import Bounds, OptimizeResult, OptimizeWarning

from . import checkpoint
from .optimizers import OPTIMIZERS, Optimizer
from .rules import get_rule
from .sampling import Minibatches
from .schedules import Schedule

__all__ = [
    "DEFAULT_OPTIONS",
    "LoopState",
    "MESSAGES",
    "Minimizer",
    "Status",
    "minimize",
]


class Status:
    """Termination codes of :func:`minimize` (``OptimizeResult.status``)."""

    GTOL = 0
    MAXITER = 1
    STALLED = 2
    NONFINITE = 3
    STREAM_END = 4
    INTERRUPTED = 5
    CALLBACK = 99


#: status -> (success, message template), the one table every message comes from.
MESSAGES: dict[int, tuple[bool, str]] = {
    Status.GTOL: (True, "Optimization terminated successfully: gradient norm <= gtol ({gtol:g})."),
    Status.MAXITER: (False, "Maximum number of iterations has been exceeded."),
    Status.STALLED: (
        True,
        "Optimization terminated: the smoothed loss did not improve by min_delta "
        "({min_delta:g}, relative) for patience ({patience}) iterations.",
    ),
    Status.NONFINITE: (
        False,
        "NaN result encountered: the {what} is not finite at iteration {nit}.",
    ),
    Status.STREAM_END: (True, "Optimization terminated: the stream of args is exhausted."),
    Status.INTERRUPTED: (False, "Optimization interrupted by {what} after {nit} iterations."),
    Status.CALLBACK: (False, "`callback` raised `StopIteration`."),
}

#: The options of the loop and their defaults (the rule's hyperparameters come on top).
DEFAULT_OPTIONS: dict[str, Any] = {
    "maxiter": 1000,
    "disp": False,
    "gtol": 1e-5,
    "patience": None,
    "min_delta": 1e-4,
    "smoothing": 0.9,
    "return_best": False,
    "batch_size": None,
    "seed": None,
    "finite_diff_rel_step": None,
    "history": False,
    "comm": None,
    "checkpoint": None,
    "checkpoint_every": None,
    "resume": False,
    "compiled": "auto",
    "device": "cpu",
}

_FD_METHODS = ("2-point", "3-point", "cs")


# ---------------------------------------------------------------------------
# Compiled helpers: one dispatch per step each, no temporaries
# ---------------------------------------------------------------------------


@njit(cache=True)
def _inf_norm(g):
    # max |g_i|, or NaN as soon as an element is NaN (inf propagates by itself):
    # a finite result certifies a finite gradient, so the optimizer needn't check.
    m = 0.0
    for v in g.flat:
        a = abs(v)
        if a > m:
            m = a
        elif a != a:
            return a
    return m


@njit(cache=True)
def _projected_inf_norm(x, g, lo, hi):
    # max |P(x - g) - x_i| (P: projection onto the box), L-BFGS-B's measure, which
    # ignores the gradient components pushing against an active bound.
    m = 0.0
    i = 0
    for gi in g.flat:
        if gi - gi != 0.0:
            # inf or NaN: the projection would clip an infinite component to a
            # finite norm, and the step would then write NaN into x.
            return gi - gi
        v = x[i] - gi
        if v < lo[i]:
            v = lo[i]
        elif v > hi[i]:
            v = hi[i]
        a = abs(v - x[i])
        if a > m:
            m = a
        elif a != a:
            return a
        i += 1
    return m


@njit(cache=True)
def _project(x, lo, hi):
    """Clip the flat iterate ``x`` onto ``[lo, hi]`` in place; returns None."""
    for i in range(x.shape[0]):
        if x[i] < lo[i]:
            x[i] = lo[i]
        elif x[i] > hi[i]:
            x[i] = hi[i]


# The stopping rules' state and settings, as one float64 "tracker" vector, so that
# the Python loop and the compiled loop (nadam.compiled) update them with the same
# compiled code (_track) and cannot drift apart.  Slots:
_EMA, _EMA_BEST, _THRESHOLD, _BEST_F, _STALL, _GNORM = range(6)  # state
_BETA, _MIN_DELTA, _GTOL, _PATIENCE, _MAXITER = range(6, 11)  # options
_TRACKER_SIZE = 11
# Status codes as plain globals: numba freezes those, not a class's attributes.
_GTOL_STOP, _MAXITER_STOP = Status.GTOL, Status.MAXITER
_STALLED_STOP, _NONFINITE_STOP = Status.STALLED, Status.NONFINITE


@njit(cache=True)
def _track(f, g, x, lo, hi, best_x, best_g, tr, nit):
    """The bookkeeping of one evaluation: returns the status of the stopping rule
    that fires at iteration ``nit``, or -1.

    ``f`` is the loss (float64) and ``g`` the gradient at the flat iterate ``x``;
    ``lo``, ``hi`` the bounds (None: unbounded).  Updates the tracker ``tr`` in
    place (gradient norm, smoothed loss, stall count) and, when ``best_x`` is not
    None and ``f`` is the lowest loss yet, copies ``x`` and ``g`` into the flat
    ``best_x`` and ``best_g``.  A non-finite loss or gradient returns
    ``Status.NONFINITE`` with nothing else updated.
    """
    if lo is None:
        gnorm = _inf_norm(g)
    else:
        gnorm = _projected_inf_norm(x, g, lo, hi)
    tr[_GNORM] = gnorm
    if not (math.isfinite(f) and math.isfinite(gnorm)):
        return _NONFINITE_STOP
    if best_x is not None and f < tr[_BEST_F]:
        tr[_BEST_F] = f
        best_x[:] = x
        i = 0
        for v in g.flat:
            best_g[i] = v
            i += 1
    ema = tr[_EMA]
    ema = f if ema != ema else tr[_BETA] * ema + (1.0 - tr[_BETA]) * f
    tr[_EMA] = ema
    if ema < tr[_THRESHOLD]:
        tr[_EMA_BEST] = ema
        tr[_STALL] = 0.0
        tr[_THRESHOLD] = ema - tr[_MIN_DELTA] * abs(ema)
    else:
        tr[_STALL] += 1.0
    if gnorm <= tr[_GTOL]:
        return _GTOL_STOP
    if tr[_STALL] >= tr[_PATIENCE]:
        return _STALLED_STOP
    if nit >= tr[_MAXITER]:
        return _MAXITER_STOP
    return -1


def _load_tracker(s: LoopState, o: dict) -> np.ndarray:
    """The tracker of :func:`_track` for the state ``s`` and the options ``o``."""
    tr = np.empty(_TRACKER_SIZE)
    eb = s.ema_best
    tr[_EMA], tr[_EMA_BEST], tr[_BEST_F] = s.ema, eb, s.best_f
    tr[_STALL], tr[_GNORM] = s.stall, math.nan
    # The improvement threshold follows from the best smoothed loss.
    tr[_THRESHOLD] = eb - o["min_delta"] * abs(eb) if eb < math.inf else math.inf
    tr[_BETA], tr[_MIN_DELTA], tr[_GTOL] = o["smoothing"], o["min_delta"], o["gtol"]
    tr[_PATIENCE] = math.inf if o["patience"] is None else o["patience"]
    tr[_MAXITER] = o["maxiter"]
    return tr


def _store_tracker(s: LoopState, tr: np.ndarray) -> None:
    """Write the tracker's state back into ``s`` (as Python scalars)."""
    s.ema, s.ema_best, s.best_f = float(tr[_EMA]), float(tr[_EMA_BEST]), float(tr[_BEST_F])
    s.stall = int(tr[_STALL])


# ---------------------------------------------------------------------------
# Argument validation (once, before the loop)
# ---------------------------------------------------------------------------


def _as_x0(x0: Any) -> np.ndarray:
    try:
        a = np.asarray(x0)
    except Exception as exc:
        raise TypeError(f"x0 must be an array-like of real numbers, got {x0!r}: {exc}") from None
    if a.dtype.kind not in "iuf":
        raise TypeError(
            f"x0 must hold real numbers (int or float), got dtype {a.dtype} from "
            f"{type(x0).__name__}"
        )
    if a.size == 0:
        raise ValueError(f"x0 must have at least one element, got shape {a.shape}")
    dtype = np.float32 if a.dtype == np.float32 else np.float64
    x = np.array(a, dtype=dtype, order="C", copy=True)
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x))
        raise ValueError(
            f"x0 must be finite; x0.flat[{bad[0]}] = {float(x.flat[bad[0]])!r} "
            f"({bad.size} non-finite element(s))"
        )
    return x


def _parse_bounds(bounds: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Flat ``(lo, hi)`` in x's dtype, or None when no bound is finite."""
    if bounds is None:
        return None
    n = x.size
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
            raise TypeError(
                f"bounds must be a sequence of (low, high) pairs or a scipy.optimize.Bounds, "
                f"got {bounds!r}"
            ) from None
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
                raise ValueError(
                    f"bounds[{i}] must be a (low, high) pair of numbers or None, got {pair!r}"
                ) from None
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
    return lo.astype(x.dtype), hi.astype(x.dtype)


# `label` names the argument in messages: "option maxiter", "tol", ...
def _check_int(label: str, value: Any, low: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        allowed = f"an int >= {low}" + (" or None" if allow_none else "")
        raise TypeError(f"{label} must be {allowed}, got {value!r}") from None
    if v < low:
        raise ValueError(f"{label} must be >= {low}, got {v!r}")
    return v


def _check_real(
    label: str, value: Any, low: float, high: float = math.inf, high_open: bool = False
) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{label} must be a real number, got {value!r}")
    v = float(value)
    ok = math.isfinite(v) and low <= v and (v < high if high_open else v <= high)
    if not ok:
        upper = "" if math.isinf(high) else f" and {'<' if high_open else '<='} {high}"
        raise ValueError(f"{label} must be finite, >= {low}{upper}; got {value!r}")
    return v


def _check_bool(label: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (int, np.integer)) and value in (0, 1)
    ):
        return bool(value)
    raise TypeError(f"{label} must be a bool, got {value!r}")


def _loop_options(opts: dict) -> dict:
    """Validate the loop's options (defaults filled in)."""
    o = {**DEFAULT_OPTIONS, **opts}
    o["maxiter"] = _check_int("option maxiter", o["maxiter"], 0)
    o["disp"] = _check_bool("option disp", o["disp"])
    o["gtol"] = _check_real("option gtol", o["gtol"], 0.0)
    o["patience"] = _check_int("option patience", o["patience"], 1, allow_none=True)
    o["min_delta"] = _check_real("option min_delta", o["min_delta"], 0.0)
    o["smoothing"] = _check_real("option smoothing", o["smoothing"], 0.0, 1.0, high_open=True)
    o["return_best"] = _check_bool("option return_best", o["return_best"])
    o["history"] = _check_bool("option history", o["history"])
    o["batch_size"] = _check_int("option batch_size", o["batch_size"], 1, allow_none=True)
    if o["finite_diff_rel_step"] is not None:
        o["finite_diff_rel_step"] = _check_real(
            "option finite_diff_rel_step", o["finite_diff_rel_step"], 0.0
        )
        if o["finite_diff_rel_step"] == 0:
            raise ValueError("option finite_diff_rel_step must be > 0 (or None), got 0")
    o.update(checkpoint.check_options(o))
    if isinstance(o["compiled"], (bool, np.bool_)):
        o["compiled"] = bool(o["compiled"])
    elif not (isinstance(o["compiled"], str) and o["compiled"] == "auto"):
        raise ValueError(f"option compiled must be 'auto', True or False, got {o['compiled']!r}")
    if not (isinstance(o["device"], str) and o["device"] in ("cpu", "cuda")):
        raise ValueError(f"option device must be 'cpu' or 'cuda', got {o['device']!r}")
    return o


def _wrap_callback(callback: Callable | None) -> Callable | None:
    """scipy's convention: ``callback(intermediate_result)`` if that is its only
    parameter's name, else ``callback(xk)``; both get copies."""
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable or None, got {callback!r}")
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


def _readonly(a: np.ndarray) -> np.ndarray:
    # The objective sees the iterate itself (no per-step copy) but cannot modify it.
    if not isinstance(a, np.ndarray):
        return a  # a device iterate (option device): CUDA arrays have no read-only flag
    v = a.view()
    v.flags.writeable = False
    return v


def _host_copy(a: Any) -> np.ndarray:
    # A host copy of the iterate or a best array, which are numba device arrays
    # with option device="cuda" (exports and checkpoints are host arrays).
    return a.copy() if isinstance(a, np.ndarray) else a.copy_to_host()


def _copy_into(dst: Any, src: np.ndarray) -> None:
    # dst[...] = src, also for a device dst (restoring a device run from host arrays).
    if isinstance(dst, np.ndarray):
        dst[...] = src
    else:
        dst.copy_to_device(np.ascontiguousarray(src, dtype=dst.dtype))


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


class FiniteDifferences:
    r"""Finite-difference gradients, as ``evaluate(x, *args) -> (f, g)``.

    Steps follow scipy's ``approx_derivative``: :math:`h_i = r\,\mathrm{sign}(x_i)
    \max(1, |x_i|)` with the relative step :math:`r` = ``rel_step`` (default
    :math:`\sqrt{\epsilon}` for '2-point' and 'cs', :math:`\epsilon^{1/3}` for
    '3-point', :math:`\epsilon` of x's dtype), rounded so that :math:`x_i + h_i`
    is exact.

    * '2-point': :math:`g_i = (f(x + h_i e_i) - f(x)) / h_i` (backward if the
      forward point leaves the bounds);
    * '3-point': central :math:`(f(x + h_i e_i) - f(x - h_i e_i)) / 2h_i`, or the
      one-sided :math:`(-3f(x) + 4f(x + h_i e_i) - f(x + 2h_i e_i)) / 2h_i`
      towards the inside of the bounds;
    * 'cs': complex step :math:`\operatorname{Im} f(x + i h_i e_i) / h_i`, exact
      to rounding; ``fun`` must accept complex ``x``.

    ``fun`` is called ``1 + n`` times per gradient ('2-point', 'cs') or
    ``1 + 2n`` times ('3-point'): see :attr:`evaluations`.  The gradient buffer
    is reused: copy it to keep it.
    """

    def __init__(
        self,
        fun: Callable,
        x: np.ndarray,
        method: str = "2-point",
        rel_step: float | None = None,
        bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        if method not in _FD_METHODS:
            raise ValueError(
                f"jac must be True, a callable, None or one of {_FD_METHODS}, got {method!r}"
            )
        self.fun, self.method = fun, method
        eps = np.finfo(x.dtype).eps
        if rel_step is None:
            rel_step = eps ** (1 / 3) if method == "3-point" else eps**0.5
        self.rel_step = rel_step
        n = x.size
        self.lo, self.hi = (np.full(n, -np.inf), np.full(n, np.inf)) if bounds is None else bounds
        work_dtype = np.complex64 if x.dtype == np.float32 else np.complex128
        self._work = np.empty(n, work_dtype if method == "cs" else x.dtype)
        self._view = _readonly(self._work.reshape(x.shape))
        self.g = np.empty_like(x)
        self.evaluations = 1 + (2 * n if method == "3-point" else n)

    def __call__(self, x: np.ndarray, *args: Any) -> tuple[Any, np.ndarray]:
        fun, w, view, lo, hi = self.fun, self._work, self._view, self.lo, self.hi
        g = self.g.reshape(-1)
        xf = x.reshape(-1)
        f0 = fun(x, *args)
        w[:] = xf
        for i in range(xf.size):
            xi = xf[i]
            h = self.rel_step * (1.0 if xi >= 0 else -1.0) * max(1.0, abs(float(xi)))
            if self.method == "cs":
                w[i] = xi + 1j * h
                g[i] = fun(view, *args).imag / h
            elif self.method == "2-point":
                if not lo[i] <= xi + h <= hi[i] and lo[i] <= xi - h <= hi[i]:
                    h = -h
                w[i] = xi + h
                h = float(w[i] - xi)
                g[i] = (fun(view, *args) - f0) / h
            else:
                if lo[i] <= xi - abs(h) and xi + abs(h) <= hi[i]:
                    w[i] = xi + h
                    h = float(w[i] - xi)
                    fp = fun(view, *args)
                    w[i] = xi - h
                    g[i] = (fp - fun(view, *args)) / (2 * h)
                else:
                    if not lo[i] <= xi + 2 * h <= hi[i]:
                        h = -h
                    w[i] = xi + h
                    h = float(w[i] - xi)
                    f1 = fun(view, *args)
                    w[i] = xi + 2 * h
                    g[i] = (-3.0 * f0 + 4.0 * f1 - fun(view, *args)) / (2 * h)
            w[i] = xi
        return f0, self.g


def _with_jac(fun: Callable, jac: Callable) -> Callable:
    def evaluate(x, *args):
        return fun(x, *args), jac(x, *args)

    return evaluate


# ---------------------------------------------------------------------------
# The state of a run
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class LoopState:
    """Everything that changes during a :func:`minimize` run.

    The loop is at a *boundary* between iterations whenever control is outside
    :meth:`Minimizer.run`: ``x`` is the iterate after ``nit`` steps and has not
    been evaluated yet.  :meth:`export` at a boundary and :meth:`restore` into a
    freshly built :class:`Minimizer` (same arguments) continue the run exactly.

    Attributes
    ----------
    x : numpy.ndarray
        The iterate (x0's shape), updated in place by ``optimizer``.
    optimizer : Optimizer
        Bound to ``x``; owns the rule's state and step count.
    sampler : Minibatches or None
        The minibatch sampler (its state: key, epoch, position).
    schedule : Schedule or None
        The learning-rate schedule, when ``lr`` is one (its state: plateau).
    nit, nfev, njev : int
        Steps taken, objective and gradient evaluations.
    best_f : float
        Lowest loss evaluated so far (tracked with ``return_best``).
    best_x, best_g : numpy.ndarray or None
        Iterate and gradient of ``best_f`` (``return_best`` only).
    ema : float
        Smoothed loss (NaN before the first evaluation).
    ema_best : float
        Best smoothed loss that counted as an improvement.
    stall : int
        Evaluations since the smoothed loss last improved.
    history : list of tuple or None
        ``(loss, smoothed loss, gradient norm)`` of every evaluation so far (one per
        iterate: ``nit`` of them at a boundary) with the option ``history``; None
        without it.
    """

    x: np.ndarray
    optimizer: Optimizer
    sampler: Minibatches | None = None
    schedule: Schedule | None = None
    best_x: np.ndarray | None = None
    best_g: np.ndarray | None = None
    nit: int = 0
    nfev: int = 0
    njev: int = 0
    best_f: float = math.inf
    ema: float = math.nan
    ema_best: float = math.inf
    stall: int = 0
    history: list | None = None

    _SCALARS = ("nit", "nfev", "njev", "best_f", "ema", "ema_best", "stall")

    def export(self) -> dict[str, Any]:
        """The state as a flat dict of NumPy arrays (copies) and Python scalars."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self._SCALARS}
        out["x"] = _host_copy(self.x)
        sd = self.optimizer.state_dict()
        out["optimizer.rule"] = sd["rule"]
        out["optimizer.t"] = sd["t"]
        out["optimizer.aux"] = sd["aux"]
        for name, row in sd["state"].items():
            out[f"optimizer.state.{name}"] = row
        if self.sampler is not None:
            for key, value in self.sampler.state_dict().items():
                out[f"sampler.{key}"] = value
        if self.schedule is not None:
            out["schedule.state"] = self.schedule.state.copy()
        if self.best_x is not None:
            out["best_x"], out["best_g"] = _host_copy(self.best_x), _host_copy(self.best_g)
        if self.history is not None:
            out["history"] = np.array(self.history, dtype=np.float64).reshape(-1, 3)
        return out

    def restore(self, state: dict[str, Any]) -> None:
        """Load an :meth:`export` of a run with the same arguments, in place.

        Raises
        ------
        ValueError
            If the state is of another method, size, dtype or set of options.
        """
        # Validate everything before changing anything: a bad state leaves the run as it was.
        # The history is an observation, not part of the trajectory: a state may have one
        # or not whatever this run records (see below).
        expected = set(self.export()) - {"history"}
        given = set(state) - {"history"}
        if given != expected:
            raise ValueError(
                "state does not match this run: missing "
                f"{sorted(expected - given)}, unexpected {sorted(given - expected)}"
            )
        x = np.asarray(state["x"])
        if x.shape != self.x.shape or x.dtype != self.x.dtype:
            raise ValueError(
                f"state has x of shape {x.shape} and dtype {x.dtype}; this run has "
                f"{self.x.shape}, {self.x.dtype}"
            )
        if self.sampler is not None:
            mine = self.sampler.state_dict()
            sampler = {k: state[f"sampler.{k}"] for k in mine}
            if (sampler["n_rows"], sampler["batch_size"]) != (mine["n_rows"], mine["batch_size"]):
                raise ValueError(
                    f"state samples {sampler['batch_size']} of {sampler['n_rows']} rows; this "
                    f"run samples {mine['batch_size']} of {mine['n_rows']}"
                )
        nit = int(state["nit"])
        if self.history is not None and "history" in state:
            # nit + 1 entries in the state of a finished run (its last iterate evaluated):
            # that evaluation is made again when the run goes on, so it is dropped here.
            history = np.asarray(state["history"])
            if history.shape not in ((nit, 3), (nit + 1, 3)) or history.dtype != np.float64:
                raise ValueError(
                    f"state has a history of shape {history.shape} and dtype {history.dtype}; "
                    f"after {nit} iterations it must be float64 of shape ({nit}, 3) or "
                    f"({nit + 1}, 3)"
                )
            history = history[:nit]
        elif self.history is not None:
            # Saved without the option history: the iterates before it was on are NaN
            # rows, so that entry k is still iterate k.
            history = np.full((nit, 3), np.nan)
        sd = self.optimizer.state_dict()
        sd.update(
            rule=state["optimizer.rule"],
            t=state["optimizer.t"],
            aux=np.asarray(state["optimizer.aux"]),
            state={name: np.asarray(state[f"optimizer.state.{name}"]) for name in sd["state"]},
        )
        self.optimizer.load_state_dict(sd)  # validates (rule, size, dtype) before loading
        _copy_into(self.x, x)
        if self.sampler is not None:
            self.sampler.load_state_dict(sampler)
        if self.schedule is not None:
            self.schedule.state[:] = state["schedule.state"]
        if self.best_x is not None:
            _copy_into(self.best_x, state["best_x"])
            _copy_into(self.best_g, state["best_g"])
        for name in self._SCALARS:
            kind = int if name in ("nit", "nfev", "njev", "stall") else float
            setattr(self, name, kind(state[name]))
        if self.history is not None:
            self.history[:] = map(tuple, history.tolist())


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


class Minimizer:
    """One :func:`minimize` run: validated arguments, state and the loop.

    ``minimize(...)`` is ``Minimizer(...).run()``.  Build the object yourself to
    run in chunks (``run(max_steps)`` returns None at a chunk's end) and to save
    or restore the run's state between chunks.  Arguments as in
    :func:`minimize`.

    Attributes
    ----------
    state : LoopState
        Everything that changes during the run.
    evaluate : callable
        ``evaluate(x, *args) -> (f, g)``: the objective and gradient at ``x`` for
        this step's arguments; every evaluation of the run goes through it.
    options : dict
        The loop's validated options (without the rule's hyperparameters).

    Examples
    --------
    Run 100 steps, save the state, and finish in a new run as if never stopped:

    >>> import numpy as np
    >>> from nadam.minimize import Minimizer
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(500, 3)), rng.normal(size=500)
    >>> def loss(x, X, y):
    ...     r = X @ x - y
    ...     return r @ r / len(y), 2 * X.T @ r / len(y)
    >>> kw = dict(args=(X, y), jac=True, options={"batch_size": 50, "seed": 0, "lr": 0.01})
    >>> first = Minimizer(loss, np.zeros(3), **kw)
    >>> first.run(100) is None
    True
    >>> saved = first.state_dict()        # plain arrays and scalars
    >>> second = Minimizer(loss, np.zeros(3), **kw)
    >>> second.load_state_dict(saved)
    >>> resumed = second.run()
    >>> bool(np.array_equal(resumed.x, Minimizer(loss, np.zeros(3), **kw).run().x))
    True
    """

    def __init__(
        self,
        fun: Callable,
        x0: Any,
        args: Any = (),
        method: str = "adam",
        jac: Any = None,
        bounds: Any = None,
        tol: float | None = None,
        callback: Callable | None = None,
        options: dict | None = None,
        _stacklevel: int = 2,
    ):
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {fun!r}")
        rule = get_rule(method)
        x = _as_x0(x0)
        if options is None:
            options = {}
        elif not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {options!r}")
        options = dict(options)
        if tol is not None:
            options.setdefault("gtol", _check_real("tol", tol, 0.0))
        hyper_names = [h.name for h in rule.hyper if not h.fixed]
        hyper = {k: v for k, v in options.items() if k in hyper_names}
        unknown = [k for k in options if k not in hyper and k not in DEFAULT_OPTIONS]
        if unknown:
            warnings.warn(
                f"Unknown solver options: {', '.join(map(str, unknown))} (valid for method "
                f"{rule.name!r}: {', '.join(hyper_names + list(DEFAULT_OPTIONS))})",
                OptimizeWarning,
                stacklevel=_stacklevel,
            )
        o = _loop_options({k: v for k, v in options.items() if k in DEFAULT_OPTIONS})
        self.options = o
        if isinstance(hyper.get("lr"), Schedule):
            hyper["lr"] = hyper["lr"].copy()  # the run mutates a plateau's state, not yours

        box = _parse_bounds(bounds, x)
        x_flat = x.reshape(-1)
        if box is not None:
            _project(x_flat, *box)
        self._box = box
        self._x_flat = x_flat
        self._view = _readonly(x)
        self._device = None
        if o["device"] == "cuda":  # x lives on the device from here on: see nadam.device
            from .device import DeviceRun, check_options

            check_options(o, jac)
            self._device = DeviceRun(x, box, o["return_best"])
            x, self._x_flat, self._view = self._device.x, self._device.x_flat, self._device.x

        # What the objective receives each step.
        self._stream: Iterator | None = None
        sampler = None
        if isinstance(args, Iterator):
            if o["batch_size"] is not None:
                raise ValueError(
                    "option batch_size cannot be combined with streamed args (an iterator "
                    "yields one batch per step already)"
                )
            self._stream, args = args, ()
        elif not isinstance(args, tuple):
            args = (args,)
        if o["batch_size"] is not None and o["comm"] is None:  # with comm: nadam.mpi.attach
            sampler = Minibatches(args, o["batch_size"], o["seed"])
            if sampler.batch_size == sampler.n_rows:
                sampler = None  # a batch of all rows is the full batch: no sampling
        self._args = args

        # The evaluation hook.
        if jac is True:
            evaluate, fev, self._source = fun, 1, "fun (with jac=True)"
        elif callable(jac):
            evaluate, fev, self._source = _with_jac(fun, jac), 1, "jac"
        elif jac is None or jac is False or jac in _FD_METHODS:
            fd = FiniteDifferences(fun, x, jac or "2-point", o["finite_diff_rel_step"], box)
            evaluate, fev, self._source = fd, fd.evaluations, "finite differences"
        else:
            raise ValueError(
                f"jac must be True, a callable, None or one of {_FD_METHODS}, got {jac!r}"
            )
        self.evaluate = evaluate
        self._fev = fev
        self._callback = _wrap_callback(callback)

        opt = OPTIMIZERS[rule.name](x, nonfinite="ignore", **hyper)
        lr = hyper.get("lr")
        if self._device is None:
            best = (np.empty_like(x), np.empty_like(x)) if o["return_best"] else (None, None)
        else:  # device arrays; the callback gets host copies
            best = self._device.best
            if self._callback is not None:
                self._callback = self._device.host_callback(self._callback)
        self.state = LoopState(x, opt, sampler, lr if isinstance(lr, Schedule) else None, *best)
        # options={"history": True}: (loss, smoothed loss, gradient norm) per evaluation.
        self.state.history = [] if o["history"] else None
        self._checked = False  # the first evaluation's output is validated
        self._last: tuple = (None, None)  # latest (f, g): what a stream's end reports
        self._bar = None
        self._pending: list[int] = []  # signals caught during run(): see _advance
        self._end: Callable[[], None] | None = None  # nadam.mpi: a collective ending run()
        self._caught = self._pending  # the signal handlers' list; nadam.mpi gives it its own
        if o["comm"] is not None:  # data-parallel over MPI: wraps evaluate, callback, sampler
            from .mpi import attach

            attach(self, o["comm"])
        self._checkpoint = None
        if o["checkpoint"] is not None:  # last: it may load the saved state (option resume)
            self._checkpoint = checkpoint.Checkpointer(
                self, o["checkpoint"], o["checkpoint_every"], o["resume"]
            )
        # The compiled loop (option compiled; nadam.compiled imports this module).
        from .compiled import plan

        self._compiled = plan(self, fun, jac) if self._device is None else None

    # -- public ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """:meth:`LoopState.export` of the run's state (call between chunks)."""
        return self.state.export()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:meth:`LoopState.restore`: continue the run saved by :meth:`state_dict`."""
        self.state.restore(state)

    def run(self, max_steps: int | None = None) -> OptimizeResult | None:
        """Iterate until a stopping rule fires, or for at most ``max_steps`` steps.

        Returns
        -------
        OptimizeResult or None
            The result once the run has stopped; None if ``max_steps`` steps were
            taken first (the state is then at a boundary: see :class:`LoopState`).
        """
        if max_steps is not None:
            max_steps = _check_int("max_steps", max_steps, 1)
        if self.options["disp"] and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.options["maxiter"], initial=self.state.nit, unit="it", dynamic_ncols=True
            )
        outcome = self._advance(max_steps)
        if self._end is not None:
            self._end()
        if outcome is None:
            return None
        return self._finish(*outcome)

    def _advance(self, max_steps: int | None) -> tuple | None:
        # Run `_iterate` in chunks that end where a checkpoint is due, with SIGTERM
        # and SIGINT caught.  Every loop path shares this: a caught signal must make
        # `_iterate` return None at the next boundary (the Python loop checks
        # `self._pending` every step, a compiled loop at the end of its chunk), and
        # the run then stops there, checkpointed, with status INTERRUPTED.
        s, ckpt, pending = self.state, self._checkpoint, self._pending
        end = None if max_steps is None else s.nit + max_steps
        pending.clear()
        self._caught.clear()  # is `pending`, except with comm: see nadam.mpi
        with checkpoint.Preemption(self._caught):
            while True:
                steps = None if end is None else end - s.nit
                if ckpt is not None:
                    steps = ckpt.steps_to_boundary(s.nit, steps)
                outcome = self._iterate(steps)
                if outcome is not None or pending:
                    break
                if ckpt is not None and ckpt.due(s.nit):
                    ckpt.write(s)
                if s.nit == end:
                    return None
            if outcome is None:
                f, g = self._last
                if g is None:  # stopped before its first evaluation (while compiling, say)
                    f, g = math.nan, np.full(s.x.shape, math.nan, s.x.dtype)
                outcome = (Status.INTERRUPTED, f, g, signal.Signals(pending[0]).name)
            if ckpt is not None:  # the final state, still with the signals caught
                ckpt.write(s)
        return outcome

    # -- the loop -------------------------------------------------------------------
    def _check_output(self, out: Any) -> tuple[float, np.ndarray]:
        """Validate the first evaluation's ``(f, g)``: clear errors instead of garbage."""
        x, src = self.state.x, self._source
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(
                f"fun must return (f, g) when jac=True; got {type(out).__name__} {out!r:.80}"
                if self._source.startswith("fun")
                else f"{src} returned {out!r:.80}"
            )
        f, g = out
        if np.ndim(f) != 0:
            raise ValueError(f"fun must return a scalar objective value, got shape {np.shape(f)}")
        if not isinstance(f, (int, float, np.integer, np.floating)) and not (
            isinstance(f, np.ndarray) and f.dtype.kind in "iuf"
        ):
            raise TypeError(f"fun must return a real scalar, got {f!r} of type {type(f).__name__}")
        if self._device is not None:  # a device gradient, checked without copying it
            self._device.check_grad(g, src)
            self._checked = True
            return float(f), g
        if not isinstance(g, np.ndarray):
            raise TypeError(
                f"the gradient from {src} must be a NumPy array of shape {x.shape} and dtype "
                f"{x.dtype}, got {type(g).__name__}"
            )
        if g.shape != x.shape:
            raise ValueError(
                f"the gradient from {src} has shape {g.shape}, but x0 has shape {x.shape}"
            )
        if g.dtype != x.dtype:
            raise TypeError(
                f"the gradient from {src} has dtype {g.dtype}, but x has dtype {x.dtype}: "
                "nadam never mixes precisions; return the gradient in x0's dtype"
            )
        self._checked = True
        return float(f), g

    def _iterate(self, max_steps: int | None) -> tuple | None:
        if self._compiled is not None:  # same outcome and state, see nadam.compiled
            return self._compiled.iterate(max_steps)
        # Everything per step is a local: attribute look-ups cost as much as the
        # arithmetic here.  The state is written back in `finally`.
        s, o = self.state, self.options
        x, view, x_flat = s.x, self._view, self._x_flat
        args, stream, sampler = self._args, self._stream, s.sampler
        next_batch = sampler.next if sampler is not None else None
        evaluate, fev = self.evaluate, self._fev
        step = s.optimizer.step
        box = self._box
        lo, hi = box if box is not None else (None, None)
        track, project = _track, _project
        if self._device is not None:  # the same bookkeeping on device arrays: nadam.device
            dev = self._device
            track, project, (lo, hi) = dev.track, dev.project, dev.box
        observe = s.schedule.observe if s.schedule is not None and s.schedule.stateful else None
        callback, bar = self._callback, self._bar
        record = s.history.append if s.history is not None else None
        best_x, best_g = (
            (None, None) if s.best_x is None else (s.best_x.reshape(-1), s.best_g.reshape(-1))
        )
        nit, nfev, njev = s.nit, s.nfev, s.njev
        tr = _load_tracker(s, o)  # the stopping rules' state, updated by _track
        end = -1 if max_steps is None else nit + max_steps
        bar_next, bar_every, bar_time = nit, 1, time.perf_counter()
        f, g = self._last
        checked = self._checked
        pending = self._pending  # non-empty once a signal is caught: stop at this boundary
        status, what = None, ""
        try:
            while nit != end and not pending:
                if next_batch is not None:
                    args = next_batch()
                elif stream is not None:
                    try:
                        args = next(stream)
                    except StopIteration:
                        if g is None:
                            raise ValueError("args: the iterator yielded no data") from None
                        status = Status.STREAM_END
                        break
                    if not isinstance(args, tuple):
                        args = (args,)
                out = evaluate(view, *args)
                nfev += fev
                njev += 1
                if checked:
                    f, g = out
                    f = float(f)
                else:
                    f, g = self._check_output(out)
                    checked = True
                code = track(f, g, x_flat, lo, hi, best_x, best_g, tr, nit)
                if code == Status.NONFINITE:
                    status = code
                    what = "gradient" if math.isfinite(f) else "objective"
                    break
                ema, gnorm = tr[_EMA], tr[_GNORM]
                if observe is not None:
                    observe(ema)
                if record is not None:
                    record((f, ema, gnorm))
                if bar is not None and nit >= bar_next:
                    bar_every, bar_time = self._show(nit, f, ema, bar_every, bar_time)
                    bar_next = nit + bar_every
                if callback is not None and nit > 0:
                    try:
                        callback(x, f, g, nit)
                    except StopIteration:
                        status = Status.CALLBACK
                        break
                if code >= 0:  # gtol, patience or maxiter
                    status = code
                    break
                step(g)
                if box is not None:
                    project(x_flat, lo, hi)
                nit += 1
        finally:
            self._last = f, g
            s.nit, s.nfev, s.njev = nit, nfev, njev
            _store_tracker(s, tr)
        if status is None:
            return None
        return status, f, g, what

    def _show(self, nit: int, f: float, ema: float, every: int, since: float):
        # Refresh the bar about 10 times a second whatever the speed of a step:
        # set_postfix formats strings, far too slow to call every step.
        bar = self._bar
        bar.update(nit - bar.n)
        noisy = self.state.sampler is not None or self._stream is not None
        bar.set_postfix({"loss": f"{f:.6g}", **({"smoothed": f"{ema:.6g}"} if noisy else {})})
        now = time.perf_counter()
        elapsed = now - since
        if elapsed < 0.05:
            every *= 2
        elif elapsed > 0.2 and every > 1:
            every //= 2
        return every, now

    def _finish(self, status: int, f: float, g: np.ndarray, what: str) -> OptimizeResult:
        s, o = self.state, self.options
        x = s.x
        at_best = o["return_best"] and s.best_f < math.inf and not f <= s.best_f  # f may be NaN
        if at_best:
            x, f, g = s.best_x, s.best_f, s.best_g
        # An interrupted run's last evaluation was at the iterate before its last step.
        stale = status == Status.INTERRUPTED and self._stream is None
        if (s.sampler is not None or stale) and (status != Status.NONFINITE or at_best):
            # Report the full objective at the answer, comparable with any other
            # optimiser, rather than one batch's noisy value.
            f, g = self.evaluate(_readonly(x), *self._args)
            f = float(f)
            s.nfev += self._fev
            s.njev += 1
        if self._device is not None:  # the result is on the host, in x0's shape
            x, g = self._device.to_host(x), self._device.to_host(g)
        success, template = MESSAGES[status]
        message = template.format(
            gtol=o["gtol"], patience=o["patience"], min_delta=o["min_delta"], what=what, nit=s.nit
        )
        result = OptimizeResult(
            x=x.copy(),
            fun=f,
            jac=np.array(g, copy=True),
            nit=s.nit,
            nfev=s.nfev,
            njev=s.njev,
            status=status,
            success=success,
            message=message,
        )
        if s.history is not None:
            h = np.array(s.history, dtype=np.float64).reshape(-1, 3)
            result.history = {
                "loss": h[:, 0].copy(),
                "smoothed": h[:, 1].copy(),
                "grad_norm": h[:, 2].copy(),
            }
        if self._bar is not None:
            bar = self._bar
            bar.update(s.nit - bar.n)
            bar.set_postfix(loss=f"{f:.6g}")
            bar.close()
            self._bar = None
            print(
                f"{message}\n         Current function value: {f:.6g}\n"
                f"         Iterations: {s.nit}\n         Function evaluations: {s.nfev}\n"
                f"         Gradient evaluations: {s.njev}"
            )
        return result


def minimize(
    fun: Callable,
    x0: Any,
    args: Any = (),
    method: str = "adam",
    jac: Any = None,
    bounds: Any = None,
    tol: float | None = None,
    callback: Callable | None = None,
    options: dict | None = None,
) -> OptimizeResult:
    r"""Minimise a scalar function with a first-order stochastic method.

    The interface of :func:`scipy.optimize.minimize`, for Adam and its family:
    the same ``fun(x, *args)`` serves full-batch L-BFGS-B in scipy and
    minibatch Adam here.  Each iteration evaluates the objective and gradient
    at the current iterate :math:`x_k` (on this iteration's batch) and takes
    one step :math:`x_{k+1} = P(\mathrm{update}(x_k, g_k))`, where :math:`P`
    projects onto the bounds.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> float`` (or ``-> (float, ndarray)`` with ``jac=True``).
        ``x`` has x0's shape and dtype; it is the iterate itself, read-only, not
        a copy: copy it if you keep it.  With ``batch_size``, ``fun`` gets a
        batch of rows of each array in ``args`` and must accept any number of
        rows (it is also evaluated on all rows at the end).
    x0 : array_like
        Initial guess: real numbers, all finite, any shape.  The iterate (and the
        result's ``x``) is float32 if x0 is float32, else float64.
    args : tuple or iterator, optional
        Extra arguments of ``fun`` (and ``jac``).  An iterator (a generator,
        ``iter(list_of_tuples)``) is a stream: each step takes its next item as
        the arguments (a non-tuple item is one argument), and the run stops when
        it is exhausted (or at ``maxiter``).  Anything else that is not a tuple is one argument.
    method : str, default "adam"
        Case-insensitive: "sgd", "rmsprop", "adagrad", "adadelta", "adam",
        "adamw", "adamax", "nadam", "radam" (:data:`nadam.rules.RULES`).
    jac : {None, True, callable, "2-point", "3-point", "cs"}, optional
        ``True``: ``fun`` returns ``(f, g)``.  A callable: ``jac(x, *args) -> g``.
        Otherwise finite differences of ``fun`` (``None`` means "2-point"; see
        :class:`FiniteDifferences`), which cost n or 2n extra evaluations per
        step.  The gradient must have x0's shape and the iterate's dtype.
    bounds : sequence of (low, high) or scipy.optimize.Bounds, optional
        One pair per element of x0 (``None`` for no bound).  x0 is projected
        onto the box, and so is every iterate.
    tol : float, optional
        Sets ``gtol`` (unless ``options`` gives it), as scipy does.
    callback : callable, optional
        Called after each iteration as ``callback(intermediate_result)`` (an
        ``OptimizeResult`` with ``x``, ``fun``, ``jac``, ``nit``) if its only
        parameter has that name, else as ``callback(xk)``; arrays are copies.
        Raising ``StopIteration`` stops the run (status 99).
    options : dict, optional
        The method's hyperparameters under torch's names (``lr``, ``betas``,
        ``momentum``, ``weight_decay``, ...; see :mod:`nadam.optimizers`),
        where ``lr`` may be a :mod:`nadam.schedules` schedule (copied, not
        modified) or any callable ``t -> lr``, and:

        maxiter : int, default 1000
            Maximum number of steps.  Stochastic methods often need many more.
        gtol : float, default 1e-5
            Stop when :math:`\|g\|_\infty \le` gtol (with bounds, the projected
            gradient :math:`\|P(x - g) - x\|_\infty`, as L-BFGS-B).
        patience : int or None, default None
            Stop when the smoothed loss has not improved for this many
            iterations (off by default).  The smoothed loss is the exponential
            moving average :math:`\bar f_k = \beta \bar f_{k-1} + (1-\beta) f_k`,
            :math:`\bar f_0 = f_0`; it improves when
            :math:`\bar f_k < \bar f^* - \delta |\bar f^*|` for the best
            :math:`\bar f^*` so far.  A reduce-on-plateau schedule observes
            :math:`\bar f_k` too.
        min_delta : float, default 1e-4
            :math:`\delta`, a relative improvement.
        smoothing : float, default 0.9
            :math:`\beta \in [0, 1)`; 0 uses the raw loss.
        return_best : bool, default False
            Return the iterate with the lowest loss evaluated (with batches,
            the lowest *batch* loss: a noisy criterion) instead of the last.
        batch_size : int, optional
            Sample this many rows (axis 0) of every array in ``args`` per step,
            epoch by epoch without replacement (:mod:`nadam.sampling`); other
            arguments pass through.  The arrays must have equal lengths.  The
            result's ``fun`` and ``jac`` are then evaluated on all rows at the
            end.  ``batch_size`` equal to the number of rows is the full batch.
        seed : int, optional
            Seed of the sampler: equal seeds give identical runs.  None: fresh
            entropy.
        disp : bool, default False
            Show a progress bar (tqdm: iteration, loss, iterations/s) and
            print a summary at the end.
        history : bool, default False
            Record every evaluation in ``result.history``, a dict of float64
            arrays with one entry per iterate :math:`x_0, x_1, \dots`:
            ``loss`` (the batch loss with ``batch_size``), ``smoothed`` (its
            moving average, as used by ``patience``) and ``grad_norm`` (the
            :math:`\|g\|_\infty` compared with ``gtol``).  Plot it with
            :func:`nadam.plot_history`.  Checkpoints keep it: a resumed run's
            history starts at :math:`x_0` (NaN entries for the iterates
            evaluated before the option was on).
        finite_diff_rel_step : float, optional
            Relative step of the finite differences.
        checkpoint : str or os.PathLike, optional
            File to save the run's whole state to, atomically
            (:mod:`nadam.checkpoint`): every ``checkpoint_every`` iterations,
            when the run stops, and when SIGTERM or SIGINT interrupts it.  Not
            with streamed ``args``.  See ``docs/checkpoints.md``.
        checkpoint_every : int, optional
            Save every this many iterations (None: only at the end and on a
            signal).
        resume : bool, default False
            If the checkpoint file exists, continue from it, bit for bit;
            otherwise start afresh.  A file of another run (method, x0 shape
            or dtype, hyperparameters, batch_size, seed, bounds) is a
            ``ValueError`` naming the file and the mismatch.
        comm : mpi4py communicator, optional
            Data-parallel over MPI (:mod:`nadam.mpi`, ``docs/mpi.md``): every
            rank makes the same call with its own shard of ``args``; ``fun``
            returns this rank's contribution, f and g are summed over the ranks
            (one ``Allreduce`` per step) and every rank gets the same iterates
            and result.  With ``batch_size``, each rank samples that many rows
            of its shard.  Rank 0 writes the checkpoint.  Runs the Python loop.
        compiled : {"auto", True, False}, default "auto"
            Run the whole loop in compiled code (:mod:`nadam.compiled`) when
            ``fun`` (and a callable ``jac``) are numba ``@njit`` functions:
            sampling, objective, stopping rules, schedule, step and projection,
            with Python entered once per chunk of iterations (every iteration
            with a ``callback``).  The iterates, counters and message are
            bit-identical to the Python loop's, and so is ``history``.  "auto"
            compiles when the run allows it (not with finite differences, a
            stream of ``args``, a Python callable ``lr`` or ``comm``); False always runs
            the Python loop; True raises ``TypeError`` or ``ValueError`` saying
            why the run cannot be compiled.  See ``docs/compiled.md``.
        device : {"cpu", "cuda"}, default "cpu"
            "cuda": keep the iterate on the CUDA device for the whole run
            (:mod:`nadam.device`, ``docs/gpu.md``).  x0 is copied there once;
            ``fun`` receives the device iterate itself (writable: do not modify
            it) and returns a host scalar and a device gradient (any
            ``__cuda_array_interface__`` array of x's shape and dtype), ``args``
            pass through as given; the gradient norm, bounds and ``return_best``
            stay on the device, one scalar is read back per step, and the
            result's ``x`` and ``jac`` are host arrays.  Needs ``jac=True`` or a
            ``jac`` callable, and excludes ``batch_size`` (stream device batches
            as ``args`` instead), ``comm`` and ``compiled=True`` (ValueError);
            callbacks get host copies.  Without numba-cuda an ``ImportError``,
            without a device a ``RuntimeError``.

        SIGTERM and SIGINT (Ctrl-C) during a run (in the main thread) finish
        the current step, save the checkpoint if one is configured, and return
        with status 5; a second signal takes the previous handler's action at
        once.  The previous handlers are restored on return.

        Unknown keys raise an ``OptimizeWarning`` naming them, as in scipy.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x`` (x0's shape), ``fun`` and ``jac`` at ``x``, ``nit`` (steps
        taken), ``nfev`` and ``njev`` (evaluations, finite-difference ones
        included), ``status``, ``success`` and ``message`` from
        :data:`MESSAGES`: 0 gtol reached, 1 maxiter reached (success False,
        as scipy), 2 the smoothed loss stalled, 3 a non-finite loss or
        gradient (``x`` is the finite iterate at which it occurred; no step is
        taken from it), 4 the stream of args ended (``fun``/``jac`` are those
        of the last batch, at the iterate before the last step), 5 interrupted
        by SIGTERM or SIGINT (success False; the message names the signal),
        99 callback raised StopIteration.

    Raises
    ------
    ValueError, TypeError
        For a bad argument, at once, naming it; for an objective returning the
        wrong kind of value, at the first evaluation.

    See Also
    --------
    nadam.methods : the same methods for ``scipy.optimize.minimize(method=...)``.
    Minimizer : run in chunks, save and restore the state.

    Examples
    --------
    Least squares with Adam, the gradient computed by hand:

    >>> import numpy as np, nadam
    >>> rng = np.random.default_rng(0)
    >>> A, b = rng.normal(size=(200, 3)), rng.normal(size=200)
    >>> def loss(x, A, b):
    ...     r = A @ x - b
    ...     return r @ r / len(b), 2 * A.T @ r / len(b)
    >>> res = nadam.minimize(loss, np.zeros(3), args=(A, b), jac=True,
    ...                      options={"lr": 0.05, "maxiter": 5000})
    >>> exact = np.linalg.lstsq(A, b, rcond=None)[0]
    >>> bool(np.allclose(res.x, exact, atol=1e-4)), res.status
    (True, 0)

    The same objective on minibatches of 32 rows, with a schedule:

    >>> res = nadam.minimize(loss, np.zeros(3), args=(A, b), jac=True, options={
    ...     "lr": nadam.schedules.cosine(0.05, total_steps=2000), "maxiter": 2000,
    ...     "batch_size": 32, "seed": 1})
    >>> bool(np.allclose(res.x, exact, atol=0.02))
    True
    """
    return Minimizer(
        fun, x0, args, method, jac, bounds, tol, callback, options, _stacklevel=3
    ).run()
