r"""The whole :func:`nadam.minimize` loop in compiled code, for ``@njit`` objectives.

When ``fun`` (and ``jac``, if it is a separate callable) are numba ``@njit``
functions and ``args`` are arrays and numbers (not a stream),
:func:`nadam.minimize` runs its iterations inside one compiled *driver*, made
for that objective: the minibatch sampler (:mod:`nadam.sampling`, the same
rows for the same seed), the objective and gradient, the stopping rules (the
very compiled helper the Python loop calls, ``nadam.minimize._track``), the
learning-rate schedule (:mod:`nadam.schedules`, reduce-on-plateau included),
the optimizer's fused step and the projection onto the bounds.  The iterates
are bit-identical to the Python loop's, and so are ``nit``, ``nfev``,
``njev``, ``status`` and ``message``:

>>> import numpy as np, nadam
>>> from numba import njit
>>> @njit
... def loss(w, X, y):
...     r = X @ w - y
...     return r @ r / len(y), 2.0 * (X.T @ r) / len(y)
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(500, 3)), rng.normal(size=500)
>>> opts = {"batch_size": 32, "seed": 1, "maxiter": 300}
>>> fast = nadam.minimize(loss, np.zeros(3), args=(X, y), jac=True, options=opts)
>>> slow = nadam.minimize(loss, np.zeros(3), args=(X, y), jac=True,
...                       options={**opts, "compiled": False})
>>> bool(np.array_equal(fast.x, slow.x)), fast.nfev == slow.nfev
(True, True)

Python is entered once per chunk of iterations, never once per step (a call
into compiled code costs microseconds, as much as a small step): chunks grow
from one iteration to about :data:`TARGET_SECONDS` of work, and between them,
at an iteration boundary, Python updates the progress bar, writes checkpoints
and notices SIGTERM/SIGINT.  With a ``callback`` the driver returns after
every evaluation, for scipy's semantics.  Option ``compiled`` (``"auto"``,
True, False) of :func:`nadam.minimize` chooses the loop; :func:`plan` says
which runs can be compiled.  ``docs/compiled.md`` has the contract for
``fun``, caching and the measured speed.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import os
import time
import types
from functools import cache
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
from numba.core import types as nbtypes
from numba.core.caching import NullCache
from numba.core.errors import NumbaError
from numba.core.registry import CPUDispatcher
from numba.core.serialize import dumps

from . import rules, sampling, schedules
from .kernels import cpu
from .minimize import (
    _EMA,
    _GNORM,
    DEFAULT_OPTIONS,
    Status,
    _load_tracker,
    _project,
    _store_tracker,
    _track,
)
from .sampling import next_batch
from .schedules import Schedule

if TYPE_CHECKING:
    from .minimize import Minimizer
    from .optimizers import Optimizer

__all__ = ["TARGET_SECONDS", "CompiledLoop", "plan"]

#: Wall time a chunk aims at once its size has adapted.
TARGET_SECONDS = 0.05

# The options the compiled loop implements; any other option of DEFAULT_OPTIONS
# that is not at its default sends the run to the Python loop (a new option is
# Python-only until the driver learns it).
_HANDLED = frozenset(
    "maxiter disp gtol patience min_delta smoothing return_best batch_size seed "
    "finite_diff_rel_step checkpoint checkpoint_every resume compiled history".split()
)

# Slots of the int64 counter vector the driver reads and writes: loop state
# first (written after every step, so an exception leaves it consistent), then
# this call's instructions and its report.
_NIT, _NFEV, _NJEV, _T, _END, _RESUME, _PAUSE, _PAUSED, _RECORDED = range(9)
_CONTINUE = -1  # _track's "no stopping rule fired"
_BAD_GRADIENT = -2  # the gradient's shape is not x's
_NONFINITE = Status.NONFINITE


class _Unsupported(Exception):
    """This run cannot use the compiled loop; ``error`` is the exception type to raise."""

    def __init__(self, reason: str, error: type[Exception] = ValueError):
        super().__init__(reason)
        self.error = error


# ---------------------------------------------------------------------------
# Compiled pieces shared by every driver
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


@numba.njit(cache=True, nogil=True)
def _copy(g, out):
    i = 0
    for v in g.flat:
        out[i] = v
        i += 1


# The templates below are never called directly: _specialise copies their code
# into functions whose globals bind the objective (_fun, _jac), the rule's
# coefficients and kernel (_coefficients, _kernel) and the pieces of a driver
# (_evaluate, _advance, _gather_all) as compile-time constants, as
# nadam.kernels.cpu does for its kernels.
def _evaluate_pair_template(x, args):
    return _fun(x, *args)  # noqa: F821 (bound by _specialise)


def _evaluate_split_template(x, args):
    return _fun(x, *args), _jac(x, *args)  # noqa: F821


def _advance_template(x, g, s, hp, aux, h, lo, hi, kind, params, sched, ctr):
    # One step from the gradient g, as Optimizer.step and the Python loop take it:
    # the schedule's rate for step t, the optimizer's stepper (the rule's
    # coefficients, then its kernel: nadam.kernels.cpu.stepper), the projection.
    t = ctr[_T] + 1
    if params is not None:
        hp[rules.LR] = schedules.evaluate(kind, params, sched, t)
    _coefficients(hp, t, aux, h)  # noqa: F821
    _kernel(x, g.ravel(), s, h)  # noqa: F821
    ctr[_T] = t
    if lo is not None:
        _project(x, lo, hi)
    ctr[_NIT] += 1


def _driver_template(
    xv,
    x,
    args,
    pairs,
    sampler,
    perm,
    idx,
    lo,
    hi,
    best_x,
    best_g,
    tr,
    ctr,
    s,
    hp,
    aux,
    h,
    kind,
    params,
    sched,
    g_out,
    hist,
):
    # The iterations from ctr[_NIT] to ctr[_END], in the order of
    # Minimizer._iterate; returns (status or _CONTINUE or _BAD_GRADIENT, last f).
    # With ctr[_PAUSE] it returns after the bookkeeping of every iterate but the
    # first (ctr[_PAUSED] = 1), for the callback; ctr[_RESUME] then takes the step.
    # With the option history, row ctr[_RECORDED] of hist gets each evaluation's
    # (f, smoothed f, gradient norm), and ctr[_RECORDED] counts them.
    pause = ctr[_PAUSE] != 0
    f = math.nan
    if ctr[_RESUME] != 0:
        _advance(x, g_out, s, hp, aux, h, lo, hi, kind, params, sched, ctr)  # noqa: F821
    while ctr[_NIT] != ctr[_END]:
        nit = ctr[_NIT]
        if sampler is not None:
            next_batch(sampler, perm, idx)
            _gather_all(pairs, idx)  # noqa: F821
        value, g = _evaluate(xv, args)  # noqa: F821
        f = float(value)
        ctr[_NFEV] += 1
        ctr[_NJEV] += 1
        if g.shape != xv.shape:
            return _BAD_GRADIENT, f
        code = _track(f, g, x, lo, hi, best_x, best_g, tr, nit)
        if code == _NONFINITE:
            _copy(g, g_out)
            return code, f
        if params is not None:  # a no-op unless reduce-on-plateau, as in Python
            schedules.observe(kind, params, sched, tr[_EMA])
        if hist is not None:
            row = ctr[_RECORDED]
            hist[row, 0], hist[row, 1], hist[row, 2] = f, tr[_EMA], tr[_GNORM]
            ctr[_RECORDED] = row + 1
        if pause and nit > 0:
            _copy(g, g_out)
            ctr[_PAUSED] = 1
            return code, f
        if code != _CONTINUE:
            _copy(g, g_out)
            return code, f
        if nit + 1 == ctr[_END]:
            _copy(g, g_out)  # the chunk's last gradient: Minimizer._last
        _advance(x, g, s, hp, aux, h, lo, hi, kind, params, sched, ctr)  # noqa: F821
    return _CONTINUE, f


def _specialise(template, name: str, bindings: dict, **jit: Any) -> Any:
    fn = types.FunctionType(template.__code__, {**globals(), **bindings}, name)
    # numba names a cache file after the qualified name, and keys its entries on
    # the bytecode, which every driver shares: the name must say what is bound.
    fn.__qualname__ = name
    return numba.njit(**jit)(fn)


# ---------------------------------------------------------------------------
# Drivers, one per (objective, rule variant)
# ---------------------------------------------------------------------------


def _source_digest() -> str:
    # The driver links compiled code from these modules; numba's cache only
    # checks the time stamp of this file, so their sources go into its name.
    h = hashlib.sha256()
    # (nadam.minimize by name: the package's attribute `minimize` is the function.)
    for module in (importlib.import_module("nadam.minimize"), sampling, schedules, rules, cpu):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()


_SOURCES = _source_digest()
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


def _driver(fun: Any, jac: Any, opt: Optimizer, sampled: int) -> Any:
    """The driver of ``fun`` (``jac`` None when ``fun`` returns ``(f, g)``), the
    optimizer ``opt``'s rule variant and ``sampled`` arrays to gather batches of,
    compiled lazily; cached on disk when the objective is."""
    step = opt._step
    key = (fun, jac, step, sampled)
    if key in _DRIVERS:
        return _DRIVERS[key]
    prints = [_fingerprint(fun)] + ([] if jac is None else [_fingerprint(jac)])
    cache = None not in prints
    h = hashlib.sha256("\0".join([_SOURCES, step.py_func.__qualname__, *map(str, prints)]).encode())
    # Without a cache, the name only needs to be unique in this process.
    tag = h.hexdigest()[:16] if cache else f"{id(fun):x}_{id(jac):x}"
    name = f"{fun.py_func.__name__}_{step.py_func.__name__}_{sampled}_{tag}"
    # The pieces are inlined into the driver: a compiled call costs reference
    # counting per array argument, which small steps notice, and inlined pieces
    # compile faster than separate functions.
    if jac is None:
        evaluate = _specialise(
            _evaluate_pair_template, f"evaluate_{name}", {"_fun": fun}, inline="always"
        )
    else:
        evaluate = _specialise(
            _evaluate_split_template,
            f"evaluate_{name}",
            {"_fun": fun, "_jac": jac},
            inline="always",
        )
    # The optimizer's stepper in its two pieces, inlined too (serial kernels: a
    # prange kernel runs threads and stays a call; its steps are long anyway).
    rule, opts = opt.rule, opt._opts
    parallel = step is not cpu.stepper(rule, opts, False)
    kernel = cpu.kernel(rule, opts, parallel)
    pieces = {
        "_coefficients": _inline(rule.coefficients),
        "_kernel": kernel if parallel else _inline(kernel),
    }
    advance = _specialise(_advance_template, f"advance_{name}", pieces, inline="always")
    driver = _specialise(
        _driver_template,
        f"drive_{name}",
        {"_evaluate": evaluate, "_advance": advance, "_gather_all": _gather_all(sampled)},
        cache=cache,
        nogil=True,
    )
    _DRIVERS[key] = driver
    return driver


# ---------------------------------------------------------------------------
# Deciding, compiling, running
# ---------------------------------------------------------------------------


def _why_not(m: Minimizer, fun: Any, jac: Any) -> _Unsupported | None:
    """Why the run of ``m`` cannot be compiled (cheap checks only), or None."""
    if not isinstance(fun, CPUDispatcher):
        return _Unsupported(
            f"fun must be a numba @njit function, got {type(fun).__name__} {fun!r:.60}", TypeError
        )
    if jac is not True and not callable(jac):
        return _Unsupported(
            f"jac={jac!r} means finite differences, which the Python loop computes; "
            "return the gradient (jac=True) or give an @njit jac"
        )
    if jac is not True and not isinstance(jac, CPUDispatcher):
        return _Unsupported(
            f"jac must be True or a numba @njit function, got {type(jac).__name__}", TypeError
        )
    if m._stream is not None:
        return _Unsupported("args is an iterator (a stream): its items come from Python")
    lr = m.state.optimizer._values["lr"]
    if callable(lr) and not isinstance(lr, Schedule):
        return _Unsupported(
            f"lr is a Python callable ({lr!r:.60}); use a nadam.schedules schedule", TypeError
        )
    for key, default in DEFAULT_OPTIONS.items():
        value = m.options[key]
        if key not in _HANDLED and not (value is default or value == default):
            return _Unsupported(f"option {key}={value!r} is only implemented by the Python loop")
    return None


def plan(m: Minimizer, fun: Any, jac: Any) -> CompiledLoop | None:
    """The compiled loop for the run ``m``, or None for the Python loop.

    Follows ``m.options["compiled"]``: ``False`` gives None; ``"auto"`` gives
    None when a cheap check rules the compiled loop out; ``True`` raises then.

    Raises
    ------
    TypeError, ValueError
        With ``compiled=True``, saying why the run cannot be compiled.
    """
    mode = m.options["compiled"]
    if mode is False:
        return None
    problem = _why_not(m, fun, jac)
    if problem is None:
        return CompiledLoop(m, fun, None if jac is True else jac, strict=mode is True)
    if mode is True:
        raise problem.error(f"option compiled=True: {problem}") from None
    return None


def _describe(exc: Exception) -> str:
    # numba's messages run to pages; the first lines say what failed.
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return "\n".join(lines[:6])


class CompiledLoop:
    """The compiled loop of one :class:`nadam.minimize.Minimizer` run.

    Works on the run's own arrays (the iterate, the optimizer's state, the
    sampler's, the schedule's, the best iterate) and writes its counters back
    to :attr:`Minimizer.state` after every chunk, so
    :meth:`nadam.minimize.LoopState.export` and ``restore`` work between
    chunks as with the Python loop.

    Parameters
    ----------
    m : Minimizer
        The run.
    fun, jac : numba dispatchers
        The objective; ``jac`` None when ``fun`` returns ``(f, g)``.
    strict : bool
        Raise (``compiled=True``) rather than fall back to the Python loop when
        the driver cannot be compiled.
    """

    def __init__(self, m: Minimizer, fun: Any, jac: Any, strict: bool):
        self._m, self._fun, self._jac, self._strict = m, fun, jac, strict
        # Replaced later (a hook on every evaluation): the Python loop then runs.
        self._evaluate = m.evaluate
        self._driver = None
        self._pairs: tuple | None = None
        self._chunk = 1
        x = m.state.x
        self._g = np.empty(x.size, x.dtype)  # the last gradient the driver reports
        self._ctr = np.zeros(9, np.int64)
        # The rows the driver records in a chunk (option history): grown with the chunks.
        self._hist = np.empty((0, 3)) if m.state.history is not None else None

    # -- arguments ------------------------------------------------------------------
    def _batch(self) -> tuple:
        sampler = self._m.state.sampler
        return sampler.batch if sampler is not None else self._m._args

    def _arguments(self, tr: np.ndarray) -> tuple:
        m = self._m
        s = m.state
        opt, sampler, sched = s.optimizer, s.sampler, s.schedule
        if sampler is None:
            pairs, sstate, perm, idx = (), None, None, None
        else:
            if self._pairs is None:
                # (rows, the rest) views for the gather, one loop for any ndim; a
                # copy only for an array of 3 or more dimensions that is not contiguous.
                self._pairs = tuple(
                    (src.reshape(len(src), -1), buf.reshape(len(buf), -1))
                    for src, buf in sampler._pairs
                )
            pairs, sstate, perm, idx = self._pairs, sampler.state, sampler.perm, sampler.idx
        lo, hi = m._box if m._box is not None else (None, None)
        flat = lambda a: None if a is None else a.reshape(-1)
        kind, params, state = (
            (0, None, None) if sched is None else (sched.kind, sched.params, sched.state)
        )
        return (
            m._view,
            m._x_flat,
            self._batch(),
            pairs,
            sstate,
            perm,
            idx,
            lo,
            hi,
            flat(s.best_x),
            flat(s.best_g),
            tr,
            self._ctr,
            opt._state,
            opt._hp,
            opt._aux,
            opt._h,
            kind,
            params,
            state,
            self._g,
            self._hist,
        )

    # -- compiling ------------------------------------------------------------------
    def _check_types(self) -> None:
        # Type the objective alone first: its errors and a wrong return type get a
        # message about the objective, not about the driver.
        m, fun, jac = self._m, self._fun, self._jac
        values = (m._view, *self._batch())
        try:
            argtypes = tuple(numba.typeof(v) for v in values)
        except ValueError as exc:
            raise _Unsupported(
                f"an argument cannot be passed to compiled code: {exc}", TypeError
            ) from None
        x = numba.typeof(m._view)
        shown = ", ".join(map(str, argtypes))
        gradient = jac if jac is not None else fun
        for fn in (fun, jac) if jac is not None else (fun,):
            try:
                fn.compile(argtypes)
            except NumbaError as exc:
                name = "jac" if fn is jac else "fun"
                raise _Unsupported(
                    f"{name} does not compile for arguments ({shown}):\n{_describe(exc)}",
                    TypeError,
                ) from exc
        out = fun.overloads[argtypes].signature.return_type
        grad = gradient.overloads[argtypes].signature.return_type
        if jac is None:
            if not (isinstance(out, nbtypes.BaseTuple) and len(out) == 2):
                raise _Unsupported(
                    f"fun must return (f, g) when jac=True; it returns {out}", TypeError
                )
            out, grad = out[0], out[1]
        if not isinstance(out, (nbtypes.Float, nbtypes.Integer)):
            raise _Unsupported(f"fun must return a real scalar f; it returns {out}", TypeError)
        if not (isinstance(grad, nbtypes.Array) and grad.ndim == x.ndim and grad.dtype == x.dtype):
            raise _Unsupported(
                f"the gradient must be an array of x's dtype and ndim ({x.dtype}, {x.ndim}-d): "
                f"nadam never mixes precisions; it is {grad}",
                TypeError,
            )

    def _compile(self, arguments: tuple) -> Any:
        self._check_types()
        m = self._m
        sampled = 0 if self._pairs is None else len(self._pairs)
        driver = _driver(self._fun, self._jac, m.state.optimizer, sampled)
        try:
            driver.compile(tuple(numba.typeof(a) for a in arguments))
        except NumbaError as exc:
            raise _Unsupported(
                f"the compiled loop does not compile for this run:\n{_describe(exc)}", TypeError
            ) from exc
        return driver

    # -- running --------------------------------------------------------------------
    def _record(self) -> None:
        # The rows the driver recorded since the last call into the run's history.
        ctr = self._ctr
        self._m.state.history.extend(map(tuple, self._hist[: ctr[_RECORDED]].tolist()))
        ctr[_RECORDED] = 0

    def iterate(self, max_steps: int | None) -> tuple | None:
        """:meth:`Minimizer._iterate`, compiled: the same outcome and state."""
        m = self._m
        if m.evaluate is not self._evaluate:
            m._compiled = None  # someone hooked the evaluations: they run in Python
            return m._iterate(max_steps)
        s, o = m.state, m.options
        tr = _load_tracker(s, o)
        arguments = self._arguments(tr)
        if self._driver is None:
            try:
                self._driver = self._compile(arguments)
            except _Unsupported as exc:
                if self._strict:
                    raise exc.error(f"option compiled=True: {exc}") from exc.__cause__
                m._compiled = None
                return m._iterate(max_steps)
        driver, ctr, g, hist = self._driver, self._ctr, self._g, self._hist
        opt, pending = s.optimizer, m._pending
        ctr[:] = (s.nit, s.nfev, s.njev, opt.t, 0, 0, m._callback is not None, 0, 0)
        end = None if max_steps is None else s.nit + max_steps
        evaluated = False
        f, outcome, shown = math.nan, None, time.perf_counter()
        try:
            # A paused iterate is always stepped (ctr[_RESUME]) before the loop ends
            # at a boundary, signal or not: a boundary's iterate is not yet evaluated.
            while ctr[_RESUME] or (ctr[_NIT] != end and not pending):
                before = int(ctr[_NIT])
                # After a pause, only the step: the boundary after it is where a
                # signal caught during the callback stops the run, as in Python.
                chunk = 1 if ctr[_RESUME] else self._chunk
                ctr[_END] = before + chunk if end is None else min(before + chunk, end)
                if hist is not None and len(hist) < ctr[_END] - before:  # a row per evaluation
                    hist = self._hist = np.empty((max(ctr[_END] - before, 2 * len(hist)), 3))
                    arguments = (*arguments[:-1], hist)
                start = time.perf_counter()
                code, f = driver(*arguments)
                now = time.perf_counter()
                if hist is not None:
                    self._record()
                ctr[_RESUME] = 0
                evaluated = evaluated or int(ctr[_NFEV]) > s.nfev
                if code == _BAD_GRADIENT:
                    # The Python loop's check raises its own message for this output.
                    m._check_output(m.evaluate(m._view, *self._batch()))
                    raise RuntimeError("fun returned gradients of different shapes")
                if ctr[_PAUSED]:
                    ctr[_PAUSED] = 0
                    try:
                        m._callback(s.x, f, g.reshape(s.x.shape), int(ctr[_NIT]))
                    except StopIteration:
                        outcome = (Status.CALLBACK, f, g.reshape(s.x.shape), "")
                        break
                    ctr[_RESUME] = code == _CONTINUE
                if code != _CONTINUE:
                    what = ""
                    if code == _NONFINITE:
                        what = "gradient" if math.isfinite(f) else "objective"
                    outcome = (int(code), f, g.reshape(s.x.shape), what)
                    break
                if m._bar is not None and now - shown > 0.1:
                    m._show(int(ctr[_NIT]), f, float(tr[_EMA]), 1, now)
                    shown = now
                done = int(ctr[_NIT]) - before
                if done > 0:
                    # Grow towards TARGET_SECONDS per chunk, at most 8-fold at a time.
                    per_step = max(now - start, 1e-9) / done
                    self._chunk = int(min(max(TARGET_SECONDS / per_step, 1), 8 * self._chunk))
        finally:
            if hist is not None:
                self._record()  # what a chunk that raised had recorded
            s.nit, s.nfev, s.njev = int(ctr[_NIT]), int(ctr[_NFEV]), int(ctr[_NJEV])
            opt.t = int(ctr[_T])
            _store_tracker(s, tr)
            if evaluated:
                m._last = f, g.reshape(s.x.shape)
                m._checked = True
        return outcome
