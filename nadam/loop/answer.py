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
#: A predicted fall above this many roundings of the loss is one the steps would have seen.
ROUNDINGS = 64


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


def checked_status(status: int, x0: Any, x: Any, f: float, g: Any, box: tuple | None) -> int:
    """``status``, or :attr:`Status.NO_DESCENT` where the windows stopped a run
    (:attr:`Status.CONVERGED`) whose answer ``x`` is ``x0`` itself although ``g``, the
    gradient there, predicts a fall of the loss ``f`` far above its rounding.

    The run then never found a lower loss in the direction its gradient gives: the
    gradient is not that of the loss (a sign error; ``scipy.optimize.check_grad``), or
    x0 is a minimum where the loss has a kink.  scipy's line searches fail there too.
    At a smooth minimum the gradient is rounding noise and predicts no fall; a component
    held at a bound by the gradient (``box`` = ``(lo, hi)``, flat) predicts none either.
    """
    if status != Status.CONVERGED or not isinstance(g, np.ndarray):
        return status
    x0 = x0.reshape(-1)
    if not np.array_equal(np.reshape(x, -1), x0):
        return status
    g = g.reshape(-1)
    if box is not None:
        lo, hi = box
        g = np.where(((x0 <= lo) & (g > 0)) | ((x0 >= hi) & (g < 0)), 0, g)
    fall = PROBE * float(np.sum(np.abs(g) * np.where(x0 == 0, 1, np.abs(x0)), dtype=np.float64))
    rounding = ROUNDINGS * float(np.finfo(x0.dtype).eps) * abs(f)
    return Status.NO_DESCENT if fall > rounding else status
