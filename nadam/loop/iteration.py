r"""The one iteration order of :func:`nadam.minimize`, and its Python loop.

:func:`iterate_template` is the loop, written once as a plain function whose
*parts* (how to draw this step's arguments, evaluate the objective, check its
output, take the step, ...) are free names.  It is specialised the way the
kernels specialise a rule (:func:`nadam._specialise.rebind`):

* run by the Python interpreter with Python parts (:func:`python_loop`): any
  objective, streams, finite differences, MPI, a CUDA device;
* compiled by numba with compiled parts (:mod:`nadam.loop.compiled`) for an
  ``@njit`` objective, and for each problem of :func:`nadam.minimize_many`.

One iteration :math:`k`:

1. stop at this boundary if a signal asked to (Python loop);
2. draw this step's arguments (all of ``args``, a minibatch, a stream's next item);
3. evaluate :math:`f_k, g_k` at :math:`x_k`, count the evaluations, check the output;
4. track: the gradient norm, the best iterate, the smoothed loss, the stopping rules;
5. feed the smoothed loss to a stateful schedule; record the history row;
6. pause for the callback (the caller runs it, then resumes with step 8);
7. stop if a stopping rule fired;
8. step (guarded: a non-finite value is never written), average, project,
   :math:`k \leftarrow k + 1`.

The counters live in arrays (``ctr``: the run's; ``ctl``: this call's
instructions and report), written as they change, so that an exception in the
objective leaves the run at a consistent boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .._specialise import rebind
from .objective import OutputCheck
from .state import NFEV, NIT, NJEV, ORIGIN, RunState
from .status import Status
from .tracker import EMA, GNORM

__all__ = [
    "BAD_OUTPUT",
    "CONTINUE",
    "CONTROL",
    "END",
    "PAUSED",
    "RECORDED",
    "RESUME",
    "STEP_NONFINITE",
    "T",
    "LoopArguments",
    "Parts",
    "iterate_template",
    "python_loop",
]

#: Slots of the int64 control vector ``ctl``: the optimizer's step count (compiled
#: loops), where this call ends, resume a paused iterate, paused, history rows.
T, END, RESUME, PAUSED, RECORDED = range(5)
CONTROL = 5

#: What :func:`iterate_template` returns besides a :class:`~nadam.loop.status.Status`.
CONTINUE = -1  # reached ctl[END] (or a signal asked to stop): no stopping rule fired
BAD_OUTPUT = -2  # the objective returned a gradient of the wrong shape (compiled loop)
STEP_NONFINITE = -3  # the step gave non-finite values (they were not written)

_NONFINITE, _STREAM_END = Status.NONFINITE, Status.STREAM_END


def iterate_template(
    xv, x, args, draw, lo, hi, best_x, best_g, avg, tr, ctr, ctl, s, hp, aux, h, sched, hist, kept
):
    """Iterations from ``ctr[NIT]`` until ``ctl[END]`` or a stop; returns ``(code, f)``.

    ``xv`` is the iterate as the objective sees it (x0's shape, read-only), ``x``
    its flat, writable view; ``args`` the objective's arguments and ``draw`` the
    sampler's arrays (or None); ``lo``, ``hi`` the bounds, ``best_x``, ``best_g``
    the best iterate, ``avg`` the averaged one (each None when unused); ``tr``
    the tracker; ``s``, ``hp``, ``aux``, ``h`` the optimizer's arrays; ``sched``
    the schedule's arrays (or None); ``hist`` the history rows of this call (or
    None); ``kept`` where the latest gradient is kept when the call returns.
    The parts are the free names, bound by ``rebind``.
    """
    f = math.nan
    if ctl[RESUME] != 0:  # the step of an iterate the callback paused at
        ctl[RESUME] = 0
        if _advance(x, _kept(kept), s, hp, aux, h, lo, hi, avg, sched, ctr, ctl) != 0:  # noqa: F821
            return STEP_NONFINITE, f
    while ctr[NIT] < ctl[END]:
        if _interrupted():  # noqa: F821
            return CONTINUE, f
        nit = ctr[NIT]
        batch = _draw(args, draw)  # noqa: F821
        if _ended(batch):  # noqa: F821
            return _STREAM_END, f
        out = _evaluate(xv, batch)  # noqa: F821
        f, g, code = _output(out, xv, nit)  # noqa: F821
        if code == BAD_OUTPUT:  # the caller raises, saying what was wrong
            return code, f
        ctr[NFEV] += _FEV  # noqa: F821
        ctr[NJEV] += 1
        code = _track(f, g, x, lo, hi, best_x, best_g, tr, nit)  # noqa: F821
        if code == _NONFINITE:
            _keep(g, kept)  # noqa: F821
            return code, f
        if _OBSERVE:  # noqa: F821
            _observe(sched, tr[EMA])  # noqa: F821
        if hist is not None:
            row = ctl[RECORDED]
            hist[row, 0] = f
            hist[row, 1] = tr[EMA]
            hist[row, 2] = tr[GNORM]
            ctl[RECORDED] = row + 1
        if _CALLBACK and nit > 0:  # noqa: F821
            _keep(g, kept)  # noqa: F821
            ctl[PAUSED] = 1
            return code, f
        if code != CONTINUE:  # gtol, patience or maxiter
            _keep(g, kept)  # noqa: F821
            return code, f
        if _KEEP_ALL or nit + 1 == ctl[END]:  # noqa: F821
            # The call's last gradient, what an interrupted run reports; and where
            # keeping costs nothing (a reference), every gradient: a stream can end
            # at any iteration, reporting its last.
            _keep(g, kept)  # noqa: F821
        if _advance(x, g, s, hp, aux, h, lo, hi, avg, sched, ctr, ctl) != 0:  # noqa: F821
            _keep(g, kept)  # noqa: F821
            return STEP_NONFINITE, f
    return CONTINUE, f


@dataclass
class Parts:
    """The parts of a run's loop that its extensions may wrap.

    Attributes
    ----------
    evaluate : callable
        ``evaluate(x, *args) -> (f, g)``: every evaluation of the run goes
        through it (MPI wraps it in a sum over the ranks).
    fev : int
        Objective evaluations per call of ``evaluate`` (finite differences: more).
    check : OutputCheck
        Checks what ``evaluate`` returns.
    draw : callable
        ``draw() -> tuple or None``: this step's arguments; None when a stream
        of arguments is exhausted.
    track, project : callable
        The stopping rules' bookkeeping and the projection onto the bounds
        (:mod:`nadam.loop.tracker`, or their device versions).
    weight : callable or None
        ``weight(s)``: how far the average moves towards the next iterate, ``s``
        steps after it (re)started (:mod:`nadam.loop.averaging`).
    callback : callable or None
        ``callback(x, f, g, nit)``, run at every iteration but the first.
    pending : list
        The loop stops at the next boundary once it is not empty (signals).
    caught : list
        Where the signal handlers record signals: ``pending`` itself, except with
        MPI, where the ranks agree on ``pending`` from what each caught.
    end : callable or None
        Called at the end of every ``run()`` (MPI: a last collective).
    """

    evaluate: Callable
    fev: int
    check: OutputCheck
    draw: Callable[[], Any]
    track: Callable
    project: Callable
    weight: Callable[[int], float] | None = None
    callback: Callable | None = None
    pending: list = field(default_factory=list)
    caught: list | None = None
    end: Callable[[], None] | None = None

    def __post_init__(self):
        if self.caught is None:
            self.caught = self.pending


def python_loop(state: RunState, parts: Parts) -> Callable:
    """:func:`iterate_template` bound to Python parts: ``loop(*arguments) -> (code, f)``
    with the arguments of :func:`arguments`, run by the interpreter (nothing compiled
    but the steps and the stopping rules, which are compiled already)."""
    opt, evaluate, check, draw = state.optimizer, parts.evaluate, parts.check, parts.draw
    pending = parts.pending
    # fun gets a copy of the iterate, its own, as scipy's minimize passes: a memoiser or a
    # history that keeps x without copying it must not see it change.  (A device iterate
    # is passed as it is: a copy would allocate device memory each evaluation.)
    if isinstance(state.x, np.ndarray):

        def evaluate_at(xv, batch):
            return evaluate(xv.copy(), *batch)

    else:

        def evaluate_at(xv, batch):
            return evaluate(xv, *batch)

    project, weight = parts.project, parts.weight
    schedule = state.schedule
    flat_of = _flat_gradient(state)

    def output(out, xv, nit):
        f, g = check(out, nit)
        return f, g, CONTINUE

    def advance(x, g, s, hp, aux, h, lo, hi, avg, sched, ctr, ctl):
        nit = ctr[NIT]
        bad = opt.advance(flat_of(g), avg, 0.0 if weight is None else weight(nit - ctr[ORIGIN]))
        if lo is not None:
            project(x, lo, hi)
        ctr[NIT] = nit + 1
        return bad

    return rebind(
        iterate_template,
        "python_loop",
        _interrupted=pending.__len__,
        _draw=lambda args, drawn: draw(),
        _ended=_is_none,
        _evaluate=evaluate_at,
        _FEV=parts.fev,
        _output=output,
        _track=parts.track,
        _OBSERVE=schedule is not None and schedule.stateful,
        _observe=lambda sched, ema: schedule.observe(ema),
        _CALLBACK=parts.callback is not None,
        _keep=_keep_reference,
        _KEEP_ALL=True,
        _kept=_first,
        _advance=advance,
    )


def _is_none(value: Any) -> bool:
    return value is None


def _keep_reference(g: Any, kept: list) -> None:
    kept[0] = g


def _first(kept: list) -> Any:
    return kept[0]


def _flat_gradient(state: RunState) -> Callable[[Any], Any]:
    # The step takes the gradient flat: a view of a host array; a device gradient
    # as a flat numba view (checked C-contiguous by OutputCheck).
    if isinstance(state.x, np.ndarray):
        if state.x.ndim == 1:
            return lambda g: g
        return lambda g: g.reshape(-1)
    from ..kernels import cuda as ck

    size = state.optimizer.params.size
    return lambda g: ck.as_numba(g).reshape(size)


@dataclass(eq=False)
class LoopArguments:
    """The arguments of a loop call, in :func:`iterate_template`'s order, built once per
    run and passed as they are to every call (``hist`` is grown by the runner)."""

    xv: Any
    x: Any
    args: tuple
    draw: Any
    lo: Any
    hi: Any
    best_x: Any
    best_g: Any
    avg: Any
    tr: np.ndarray
    ctr: np.ndarray
    ctl: np.ndarray
    s: Any
    hp: np.ndarray
    aux: np.ndarray
    h: np.ndarray
    sched: Any
    hist: Any
    kept: Any

    @classmethod
    def of(
        cls,
        state: RunState,
        view: Any,
        box: tuple | None,
        args: tuple = (),
        draw: Any = None,
        sched: Any = None,
        kept: Any = None,
    ) -> LoopArguments:
        """The arguments for the run ``state`` (its own arrays, flat where the loop
        wants them flat); ``view`` is the iterate as the objective sees it."""
        s, hp, aux, h = state.optimizer.arrays
        lo, hi = box if box is not None else (None, None)
        flat = state.optimizer.params.reshape(-1) if isinstance(state.x, np.ndarray) else None
        if flat is None:  # a device iterate: its flat numba view
            flat = state.x.reshape(state.x.size)

        def flat_or_none(a):
            return None if a is None else a.reshape(a.size)

        return cls(
            view,
            flat,
            args,
            draw,
            lo,
            hi,
            flat_or_none(state.best_x),
            flat_or_none(state.best_g),
            flat_or_none(state.average),
            state.tracker,
            state.counters,
            np.zeros(CONTROL, np.int64),
            s,
            hp,
            aux,
            h,
            sched,
            None if state.history is None else np.empty((16, 3)),
            [None] if kept is None else kept,
        )

    def values(self) -> tuple:
        """The arguments as a tuple, in the template's order: the fields' order."""
        return tuple(getattr(self, f.name) for f in fields(self))
