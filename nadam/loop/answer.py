"""Which point a stopped run reports, and whether its loss must be evaluated again.

One rule for :class:`nadam.Minimizer` and for each problem of
:func:`nadam.minimize_many`: a full batch's answer is its lowest loss, a
minibatch run's the best candidate of its windows (:mod:`nadam.loop.stages`), an
averaged run's the average, a schedule-free run's the evaluation point; and the
loss reported is the full objective at the answer, comparable with any other
optimiser's.  :func:`checked_status` then says whether a run its windows stopped
found any descent at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .state import RunState
from .status import Status

__all__ = ["answer", "checked_status"]

#: The move of each parameter, relative (absolute at 0), over which the gradient at x0
#: predicts the fall of the loss: the tuning-free runs' first step (lr 0.1 of r_eps 1e-6).
PROBE = 1e-7
#: A predicted fall above this many roundings of the loss is one the steps would have seen,
#: and one the loss's slope measured over the move resolves: the loss's own rounding is
#: that of a sum of many terms, some dozens of roundings of one.
ROUNDINGS = 1024


def answer(
    s: RunState,
    status: int,
    f: float,
    g: Any,
    what: str,
    *,
    return_best: bool,
    stages: Any,
    evaluation_point: Callable[[], Any] | None,
    streamed: bool,
) -> tuple[Any, float, Any, bool]:
    """``(x, f, g, again)``: the answer of the run ``s`` that stopped with the outcome
    ``(status, f, g, what)``, and whether ``f`` and ``g`` must be evaluated at ``x``.

    ``stages`` are the run's windows (or None), ``evaluation_point()`` the point a
    schedule-free rule evaluates (None for the other rules), ``streamed`` whether
    ``args`` is a stream (whose data cannot be evaluated again).
    """
    x, elsewhere = s.x, False  # elsewhere: x is not an iterate the run evaluated
    if g is None:  # no evaluation in this process (stopped at once after a resume)
        f, elsewhere = math.nan, True
    # A guarded step changed x after its last evaluation (see iteration.STEP_NONFINITE).
    moved = status == Status.NONFINITE and what.startswith("the step")
    # With windows, a full batch's answer is its lowest loss, minibatches' the best
    # candidate (nadam.loop.stages).
    at_best = return_best and s.best_f < math.inf and (moved or not f <= s.best_f)
    if stages is not None and not stages.plan.noisy and status != Status.GTOL:
        at_best = s.best_f < math.inf  # (x moved on after its last evaluation)
    candidate = None if stages is None else stages.best
    if at_best:
        x, f, g, elsewhere = s.best_x, s.best_f, s.best_g, False
    elif candidate is not None:
        x, elsewhere = candidate, True
    elif s.average is not None and status != Status.NONFINITE:
        x, elsewhere = s.average, True  # the averaged iterate
    elif evaluation_point is not None and status != Status.NONFINITE:
        x, elsewhere = evaluation_point(), True  # schedule-free: x, not y
    # Evaluate again where the last evaluation was a batch's, at another point (an
    # interrupted run's was before its last step; a guarded step moved x; the
    # average; the evaluation point).
    again = not streamed and (
        elsewhere
        or (s.sampler is not None and (status != Status.NONFINITE or at_best))
        or status == Status.INTERRUPTED
        or (moved and not at_best)
    )
    return x, f, g, again


def checked_status(
    status: int,
    x0: Any,
    x: Any,
    f: float,
    g: Any,
    box: tuple | None,
    evaluate: Callable[[np.ndarray], tuple] | None = None,
) -> int:
    """``status``, or :attr:`Status.NO_DESCENT` where the windows stopped a run
    (:attr:`Status.CONVERGED`) whose answer ``x`` is ``x0`` itself although ``g``, the
    gradient there, says the loss ``f`` falls along ``-g``, and it does not.

    The run then never found a lower loss in the direction its gradient gives: the
    gradient is not that of the loss (a sign error; ``scipy.optimize.check_grad``), or
    x0 is a minimum where the loss has a kink.  scipy's line searches fail there too.

    The gradient's say: over a move of each parameter by :data:`PROBE` of its scale
    against its gradient (the tuning-free runs' first step), it predicts a fall of the
    loss far above the loss's rounding.  At a smooth minimum it predicts none (the
    gradient is rounding noise); nor does a component a bound holds (``box`` =
    ``(lo, hi)``: those the move would take across a bound do not move).  Whether the
    loss rises instead: ``evaluate(p) -> (f, g)``, the objective at a point ``p`` of
    x0's shape, at one and two moves from x0 gives the loss's change over one move, its
    curvature cancelled (to second order); a rise by half the predicted fall or more is
    status 7.  (Near a smooth minimum the runs' steps, larger than the gradient
    warrants, may all rise: the curvature then outweighs the slope the gradient gives,
    and the steps alone would be a false alarm.)  ``evaluate`` None (the data cannot
    be evaluated again): the gradient's say alone.
    """
    if status != Status.CONVERGED or not isinstance(g, np.ndarray):
        return status
    shape, x0 = x0.shape, x0.reshape(-1)
    if not np.array_equal(np.reshape(x, -1), x0):
        return status
    eps = np.finfo(x0.dtype).eps
    # At least 16 roundings of x0's dtype, so that a float32 move is one.
    step = max(PROBE, 16 * float(eps)) * np.where(x0 == 0, 1, np.abs(x0)) * np.sign(g.reshape(-1))
    if box is not None:
        lo, hi = box
        step = np.where((x0 - 2 * step < lo) | (x0 - 2 * step > hi), 0, step)
    once, twice = x0 - step, x0 - 2 * step
    gradient = g.reshape(-1).astype(np.float64)
    fall = float(gradient @ (x0 - once).astype(np.float64))  # what the gradient predicts
    if not fall > ROUNDINGS * float(eps) * abs(f):
        return status
    if evaluate is None:
        return Status.NO_DESCENT
    try:
        (f1, _), (f2, _) = evaluate(once.reshape(shape)), evaluate(twice.reshape(shape))
    except Exception:  # fun fails right where its gradient leads: no fall there
        return Status.NO_DESCENT
    slope = (4.0 * f1 - 3.0 * f - f2) / 2.0  # the change over one move, to second order
    return status if slope <= fall / 2 else Status.NO_DESCENT
