r"""The whole :func:`nadam.minimize` loop in compiled code, for ``@njit`` objectives.

When ``fun`` (and ``jac``, if it is a separate callable) are numba ``@njit``
functions and ``args`` are arrays and numbers (not a stream),
:func:`nadam.minimize` runs its iterations inside one compiled *driver*: the
loop of :func:`nadam.loop.iteration.iterate_template` (the very order the
Python loop follows) with compiled parts bound in: the minibatch sampler
(:mod:`nadam.sampling`, the same rows for the same seed), the objective, the
stopping rules (:func:`nadam.loop.tracker.track`), the learning-rate schedule
(:mod:`nadam.schedules`, reduce-on-plateau included), the optimizer's guarded
step and the projection onto the bounds.  The iterates are bit-identical to the
Python loop's, and so are ``nit``, ``nfev``, ``njev``, ``status`` and ``message``:

>>> import numpy as np, nadam
>>> from numba import njit
>>> @njit
... def loss(w, X, y):
...     r = X @ w - y
...     return r @ r / len(y), 2.0 * (X.T @ r) / len(y)
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(500, 3)), rng.normal(size=500)
>>> opts = {"lr": 0.01, "batch_size": 32, "seed": 1, "maxiter": 300}
>>> fast = nadam.minimize(loss, np.zeros(3), args=(X, y), jac=True, options=opts)
>>> slow = nadam.minimize(loss, np.zeros(3), args=(X, y), jac=True,
...                       options={**opts, "compiled": False})
>>> bool(np.array_equal(fast.x, slow.x)), fast.nfev == slow.nfev
(True, True)

Python is entered once per chunk of iterations (:mod:`nadam.loop.runner`), never
once per step; with a ``callback``, after every evaluation, for scipy's
semantics.  :func:`why_not` says which runs cannot be compiled;
``docs/compiled.md`` has the contract for ``fun``, caching and the measured speed.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from functools import cache
from typing import Any

import numba
import numpy as np
from numba.core import types as nbtypes
from numba.core.caching import NullCache
from numba.core.errors import NumbaError
from numba.core.registry import CPUDispatcher
from numba.core.serialize import dumps
from numba.extending import overload

from .. import rules, sampling, schedules
from .._specialise import rebind, source_digest
from ..kernels import cpu
from ..optimizers import Optimizer
from ..schedules import Schedule
from ..schedules import evaluate as _rate
from ..schedules import observe as _observe_plateau
from . import averaging, iteration, tracker
from .averaging import WEIGHTS
from .iteration import BAD_OUTPUT, CONTINUE, NIT, T, iterate_template
from .state import ORIGIN
from .tracker import project as _project

__all__ = ["CompiledLoop", "Unsupported", "first_lines", "loop_function", "why_not"]


class Unsupported(Exception):
    """A run cannot use the compiled loop; ``error`` is the exception type to raise."""

    def __init__(self, reason: str, error: type[Exception] = ValueError):
        super().__init__(reason)
        self.error = error


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def first_lines(exc: Exception, k: int = 6) -> str:
    """The first ``k`` non-empty lines of an exception's message (numba's run to pages),
    without the terminal colour codes numba puts in them."""
    lines = [ln for ln in _COLOUR.sub("", str(exc)).splitlines() if ln.strip()]
    return "\n".join(lines[:k])


# ---------------------------------------------------------------------------
# Compiled parts shared by every driver
# ---------------------------------------------------------------------------


@numba.njit(inline="always")
def _gather(src, buf, idx):
    # Rows idx of the (N, m) array src into the (B, m) array buf: np.take's
    # result, element for element.
    for k in range(idx.shape[0]):
        i = idx[k]
        for j in range(src.shape[1]):
            buf[k, j] = src[i, j]


@cache
def _gather_all(k: int) -> Any:
    """``gather_all(pairs, idx)``: :func:`_gather` for each of the ``k`` (source,
    buffer) pairs of the tuple ``pairs``, written out (``literal_unroll``'s loop
    over a tuple costs ~0.1 µs per step, as much as the gathers themselves)."""
    body = "".join(f"    _gather(pairs[{i}][0], pairs[{i}][1], idx)\n" for i in range(k))
    namespace = {"_gather": _gather}
    exec(f"def gather_all(pairs, idx):\n{body}    return None\n", namespace)
    return numba.njit(inline="always")(namespace["gather_all"])


@cache
def _inline(fn: Any) -> Any:
    """The function of the dispatcher ``fn``, compiled to be inlined into a driver
    (the same code, so the same operations)."""
    return numba.njit(inline="always")(fn.py_func)


@numba.njit(inline="always")
def _never():
    return False


@numba.njit(inline="always")
def _not_ended(batch):
    return False


@numba.njit(inline="always")
def _keep(g, kept):
    i = 0
    for v in g.flat:
        kept[i] = v
        i += 1


@numba.njit(inline="always")
def _same(kept):
    return kept


@numba.njit(inline="always")
def _output(out, xv, nit):
    g = out[1]
    return float(out[0]), g, CONTINUE if g.shape == xv.shape else BAD_OUTPUT


def _flat(a):
    """``a.ravel()``; for a 1-D array, ``a`` itself: ravel would call numba's reshape
    helper (a C call) and take a reference at every step (the compiled loop of a small
    problem steps 1.6-2.6x faster without them: SGD, 3 parameters)."""
    return a.ravel()


@overload(_flat, inline="always")
def _flat_overload(a):
    if a.ndim == 1:
        return lambda a: a
    return lambda a: a.ravel()


@numba.njit(inline="always")
def _observe(sched, ema):
    kind, params, state = sched
    _observe_plateau(kind, params, state, ema)


# The templates below are never called directly: rebind copies their code into
# functions whose globals bind the objective and the optimizer's compiled pieces.
def _draw_template(args, draw):
    if draw is not None:
        pairs, state, perm, idx = draw
        sampling.next_batch(state, perm, idx)
        _gather_all(pairs, idx)  # noqa: F821 (bound by rebind)
    return args


def _evaluate_pair_template(xv, args):
    return _fun(xv, *args)  # noqa: F821


def _evaluate_split_template(xv, args):
    return _fun(xv, *args), _jac(xv, *args)  # noqa: F821


def _evaluated(xv, fg):
    # The evaluation was made outside the loop (nadam.minimize_many's vectorised form):
    # its arguments are the values (f, g).
    return fg


def _advance_template(x, g, s, hp, aux, h, lo, hi, avg, sched, ctr, ctl):
    # One step from the gradient g, as Optimizer.advance takes it: the schedule's
    # rate for step t, the rule's coefficients (and first pass), its guarded loop
    # with the average, the projection.
    t = ctl[T] + 1
    nit = ctr[NIT]
    weight = _weight(nit - ctr[ORIGIN], _BETA)  # noqa: F821
    if sched is not None:
        kind, params, state = sched
        hp[rules.LR] = _rate(kind, params, state, t)
    flat = _flat(g)
    _prepare(x, flat, s, hp, t, aux, h)  # noqa: F821
    bad = _guarded(x, flat, s, h, avg, weight)  # noqa: F821
    ctl[T] = t
    if lo is not None:
        _project(x, lo, hi)
    ctr[NIT] = nit + 1
    return bad


# ---------------------------------------------------------------------------
# Drivers, one per (objective, optimizer variant, run shape)
# ---------------------------------------------------------------------------

# (This module's own source too: its templates are inlined into every driver.)
_SOURCES = source_digest(
    sys.modules[__name__], iteration, tracker, averaging, sampling, schedules, rules, cpu,
    length=16,
)  # fmt: skip
_DRIVERS: dict[tuple, Any] = {}


def _fingerprint(fn: Any) -> str | None:
    """A digest of what numba's own cache keys ``fn`` on, or None when ``fn`` is
    not cached (no ``cache=True``, no source file, unpicklable closure)."""
    if isinstance(fn._cache, NullCache):
        return None
    py = fn.py_func
    try:
        path = inspect.getfile(py)
        stamp = os.stat(path)
        cells = dumps(tuple(c.cell_contents for c in py.__closure__ or ()))
    except Exception:  # no file (a REPL), a closure numba could not pickle either
        return None
    h = hashlib.sha256()
    for part in (
        path,
        stamp.st_mtime_ns,
        stamp.st_size,
        py.__qualname__,
        sorted(fn.targetoptions.items()),
    ):
        h.update(repr(part).encode())
    h.update(py.__code__.co_code)
    h.update(cells)
    return h.hexdigest()


def is_cached(fn: Any) -> bool:
    """Whether ``fn``'s driver can be cached on disk: it is cached itself."""
    return _fingerprint(fn) is not None


def loop_function(
    name: str,
    evaluate: Callable,
    draw: Callable,
    variant: tuple,
    observe: bool,
    callback: bool,
    average: str | None,
    average_beta: float,
    flat: Callable = _flat,
) -> Callable:
    """:func:`~nadam.loop.iteration.iterate_template` bound to the compiled parts (not
    compiled itself): ``evaluate(xv, args) -> (f, g)`` and ``draw(args, draw) -> args``
    as given, the guarded step of the optimizer variant ``(rule, flags, parallel,
    shared)``, and ``flat`` the gradient's flat view."""
    rule, flags, parallel, shared = variant
    # The parts are inlined into the driver: a compiled call costs reference
    # counting per array argument, which small steps notice, and inlined parts
    # compile faster than separate functions.  (A prange loop runs threads and
    # stays a call; its steps are long anyway.)
    guarded = cpu.loop(rule, flags, parallel, shared, guarded=True)
    advance = rebind(
        _advance_template,
        f"advance_{name}",
        # The optimizer made the arrays: no checks of their lengths to compile.
        _prepare=_inline(cpu.prepare(rule, flags, parallel, shared, lengths=False)),
        _guarded=guarded if parallel else _inline(guarded),
        _weight=WEIGHTS[average],
        _BETA=average_beta,
        _flat=flat,
    )
    inline = numba.njit(inline="always")
    return rebind(
        iterate_template,
        f"drive_{name}",
        _interrupted=_never,
        _draw=inline(draw),
        _ended=_not_ended,
        _evaluate=inline(evaluate),
        _FEV=1,
        _output=_output,
        _track=tracker.track,
        _OBSERVE=observe,
        _observe=_observe,
        _CALLBACK=callback,
        _keep=_keep,
        _KEEP_ALL=False,  # a copy: only where the call returns (no stream runs here)
        _kept=_same,
        _advance=inline(advance),
    )


def driver(
    fun: Any,
    jac: Any,
    opt: Optimizer,
    sampled: int,
    observe: bool,
    callback: bool,
    average: str | None,
    average_beta: float = 0.0,
) -> Any:
    """The driver of ``fun`` (``jac`` None when ``fun`` returns ``(f, g)``) for the
    optimizer ``opt``'s variant, ``sampled`` arrays to gather batches of, a stateful
    schedule (``observe``), a callback and the averaging; compiled lazily and cached
    on disk when the objective is.

    ``fun`` None: a driver whose arguments are the evaluation ``(f, g)`` at the
    iterate, made outside (:func:`nadam.minimize_many`'s vectorised form).
    """
    rule, flags, parallel, shared = opt.variant
    key = (
        fun,
        jac,
        rule,
        flags,
        parallel,
        shared,
        sampled,
        observe,
        callback,
        average,
        average_beta,
    )
    if key in _DRIVERS:
        return _DRIVERS[key]
    prints = [] if fun is None else [_fingerprint(fun)]
    prints += [] if jac is None else [_fingerprint(jac)]
    cached = None not in prints and rule.cacheable
    shape = (
        f"{rule.name}{flags}{parallel}{shared}{sampled}{observe}{callback}{average}{average_beta}"
    )
    digest = hashlib.sha256("\0".join([_SOURCES, rule.digest, shape, *map(str, prints)]).encode())
    # Without a cache, the name only needs to be unique in this process.
    tag = digest.hexdigest()[:16] if cached else f"{id(fun):x}_{id(jac):x}_{len(_DRIVERS)}"
    name = f"{'evaluated' if fun is None else fun.py_func.__name__}_{rule.name}_{tag}"
    if fun is None:
        evaluate = _evaluated
    elif jac is None:
        evaluate = rebind(_evaluate_pair_template, f"evaluate_{name}", _fun=fun)
    else:
        evaluate = rebind(_evaluate_split_template, f"evaluate_{name}", _fun=fun, _jac=jac)
    draw = rebind(_draw_template, f"draw_{name}", _gather_all=_gather_all(sampled))
    loop = loop_function(
        name, evaluate, draw, opt.variant, observe, callback, average, average_beta
    )
    compiled = numba.njit(cache=cached, nogil=True, error_model="numpy")(loop)
    _DRIVERS[key] = compiled
    return compiled


# ---------------------------------------------------------------------------
# Deciding, compiling, running
# ---------------------------------------------------------------------------


def why_not(fun: Any, jac: Any, streamed: bool, lr: Any) -> Unsupported | None:
    """Why a run with these arguments cannot be compiled (cheap checks only), or None."""
    if not isinstance(fun, CPUDispatcher):
        return Unsupported(
            f"fun must be a numba @njit function, got {type(fun).__name__} {fun!r:.60}", TypeError
        )
    if jac is not True and not callable(jac):
        return Unsupported(
            f"jac={jac!r} means finite differences, which the Python loop computes; "
            "return the gradient (jac=True) or give an @njit jac"
        )
    if jac is not True and not isinstance(jac, CPUDispatcher):
        return Unsupported(
            f"jac must be True or a numba @njit function, got {type(jac).__name__}", TypeError
        )
    if streamed:
        return Unsupported("args is an iterator (a stream): its items come from Python")
    if callable(lr) and not isinstance(lr, Schedule):
        return Unsupported(
            f"lr is a Python callable ({lr!r:.60}); use a nadam.schedules schedule", TypeError
        )
    return None


class CompiledLoop:
    """The compiled loop of one run: ``loop(*values) -> (code, f)`` as the Python loop.

    :meth:`compile` makes (or finds in the cache) its driver; calls keep the
    optimizer's step count in step with the driver's.

    Parameters
    ----------
    fun, jac : numba dispatchers
        The objective; ``jac`` None when ``fun`` returns ``(f, g)``.
    optimizer : Optimizer
        The run's (its variant selects the compiled pieces).
    arguments : LoopArguments
        The run's loop arguments (their types select the driver's signature).
    options : dict
        ``sampled`` (arrays gathered per batch), ``observe``, ``callback``,
        ``average``, ``average_beta``: what the driver bakes in.
    """

    def __init__(
        self,
        fun: Any,
        jac: Any,
        optimizer: Optimizer,
        arguments: iteration.LoopArguments,
        options: dict,
    ):
        self._fun, self._jac, self._opt = fun, jac, optimizer
        self._arguments, self._options = arguments, options
        self.driver: Any = None

    def __call__(self, *values: Any) -> tuple[int, float]:
        ctl = self._arguments.ctl
        ctl[T] = self._opt.t
        try:
            return self.driver(*values)
        finally:
            self._opt.t = int(ctl[T])

    def compile(self) -> None:
        """Compile the driver (or load it from the cache).

        Raises
        ------
        Unsupported
            Saying why the run cannot be compiled (the objective does not compile
            for these arguments, or returns the wrong kinds of values).
        """
        self._check_types()
        o = self._options
        compiled = driver(
            self._fun,
            self._jac,
            self._opt,
            o["sampled"],
            o["observe"],
            o["callback"],
            o["average"],
            o["average_beta"],
        )
        try:
            compiled.compile(tuple(numba.typeof(v) for v in self._arguments.values()))
        except NumbaError as exc:
            raise Unsupported(
                f"the compiled loop does not compile for this run:\n{first_lines(exc)}", TypeError
            ) from exc
        self.driver = compiled

    def _check_types(self) -> None:
        # Type the objective alone first: its errors and a wrong return type get a
        # message about the objective, not about the driver.
        a, fun, jac = self._arguments, self._fun, self._jac
        values = (a.xv, *a.args)
        try:
            argtypes = tuple(numba.typeof(v) for v in values)
        except ValueError as exc:
            raise Unsupported(
                f"an argument cannot be passed to compiled code: {exc}", TypeError
            ) from None
        x = numba.typeof(a.xv)
        shown = ", ".join(map(str, argtypes))
        gradient = jac if jac is not None else fun
        for fn in (fun, jac) if jac is not None else (fun,):
            try:
                fn.compile(argtypes)
            except NumbaError as exc:
                name = "jac" if fn is jac else "fun"
                raise Unsupported(
                    f"{name} does not compile for arguments ({shown}):\n{first_lines(exc)}",
                    TypeError,
                ) from exc
        out = fun.overloads[argtypes].signature.return_type
        grad = gradient.overloads[argtypes].signature.return_type
        if jac is None:
            if not (isinstance(out, nbtypes.BaseTuple) and len(out) == 2):
                raise Unsupported(
                    f"fun must return (f, g) when jac=True; it returns {out}", TypeError
                )
            out, grad = out[0], out[1]
        if not isinstance(out, (nbtypes.Float, nbtypes.Integer)):
            raise Unsupported(f"fun must return a real scalar f; it returns {out}", TypeError)
        if not (isinstance(grad, nbtypes.Array) and grad.ndim == x.ndim and grad.dtype == x.dtype):
            raise Unsupported(
                f"the gradient must be an array of x's dtype and ndim ({x.dtype}, {x.ndim}-d): "
                f"nadam never mixes precisions; it is {grad}",
                TypeError,
            )


def kept_gradient(shape: tuple) -> Callable[[np.ndarray], np.ndarray]:
    """How the runner reads the gradient a compiled loop kept: the flat buffer in x's shape."""
    return lambda kept: kept.reshape(shape)
