r"""The stopping rules, as compiled functions over one float64 *tracker* vector.

Every loop (Python, compiled, device, and each problem of
:func:`nadam.minimize_many`) keeps the rules' state and settings in a tracker
``tr`` and updates it with the same compiled :func:`track`, so the loops cannot
drift apart.  Slots:

=============  ===============================================================
``EMA``        smoothed loss :math:`\bar f_k` (NaN before the first evaluation)
``EMA_BEST``   best smoothed loss that counted as an improvement
``THRESHOLD``  :math:`\bar f^* - \delta |\bar f^*|`: what the next improvement must beat
``BEST_F``     lowest loss evaluated (``return_best``)
``STALL``      evaluations since the smoothed loss last improved
``GNORM``      gradient norm of the latest evaluation
``PROGRESS``   1 once a loss has beaten ``BEST_F`` by more than ``FTOL`` (relative)
               since the stages last cleared it (:mod:`nadam.loop.stages`), else 0
``BETA`` ...   the settings: smoothing, min_delta, gtol, patience, maxiter, ftol
=============  ===============================================================
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .status import Status

__all__ = [
    "BEST_F",
    "EMA",
    "EMA_BEST",
    "GNORM",
    "MAXITER",
    "PROGRESS",
    "STALL",
    "STATE_SLOTS",
    "THRESHOLD",
    "TRACKER_SIZE",
    "inf_norm",
    "new_tracker",
    "project",
    "projected_inf_norm",
    "projected_step",
    "restore_threshold",
    "track",
]

EMA, EMA_BEST, THRESHOLD, BEST_F, STALL, GNORM, PROGRESS = range(7)  # state
BETA, MIN_DELTA, GTOL, PATIENCE, MAXITER, FTOL = range(7, 13)  # settings
TRACKER_SIZE = 13
#: The slots that are the run's state (exported and restored); the rest are settings.
STATE_SLOTS = {
    "ema": EMA,
    "ema_best": EMA_BEST,
    "best_f": BEST_F,
    "stall": STALL,
    "progress": PROGRESS,
}

# Status codes as plain globals: numba freezes those, not a class's attributes.
_GTOL_STOP, _MAXITER_STOP = Status.GTOL, Status.MAXITER
_STALLED_STOP, _NONFINITE_STOP = Status.STALLED, Status.NONFINITE


def new_tracker(
    smoothing: float, min_delta: float, gtol: float, patience, maxiter: int, ftol: float = 0.0
):
    """A tracker at the start of a run, with these settings (``patience`` None: off)."""
    tr = np.empty(TRACKER_SIZE)
    tr[EMA], tr[EMA_BEST], tr[THRESHOLD], tr[BEST_F] = math.nan, math.inf, math.inf, math.inf
    tr[STALL], tr[GNORM], tr[PROGRESS] = 0.0, math.nan, 0.0
    tr[BETA], tr[MIN_DELTA], tr[GTOL] = smoothing, min_delta, gtol
    tr[PATIENCE] = math.inf if patience is None else patience
    tr[MAXITER] = maxiter
    tr[FTOL] = ftol
    return tr


def restore_threshold(tr: np.ndarray) -> None:
    """Set ``THRESHOLD`` from ``EMA_BEST`` (it is derived, so not saved), in a tracker
    or in each row of a stack of them."""
    best = tr[..., EMA_BEST]
    with np.errstate(invalid="ignore"):  # inf - delta·inf, not taken
        tr[..., THRESHOLD] = np.where(
            best < math.inf, best - tr[..., MIN_DELTA] * np.abs(best), math.inf
        )


@njit(cache=True)
def inf_norm(g):
    """``max |g_i|``, or NaN as soon as an element is NaN (inf propagates by itself):
    a finite result certifies a finite gradient, so the optimizer needn't check."""
    m = 0.0
    for v in g.flat:
        a = abs(v)
        if a > m:
            m = a
        elif a != a:
            return a
    return m


def projected_step(xi, gi, low, high):
    """``|P(x_i - g_i) - x_i|`` for the bounds ``[low, high]`` (P: the clip onto them),
    of a finite ``g_i``: the CPU's and the device's norms compile this one function."""
    # Taken as the clip of -g_i onto [low - x_i, high - x_i]: 0 only for a zero
    # component or one pushing against its bound.  (Written as x_i - g_i first, a
    # g_i below half an ulp of x_i rounds away: a small loss's run stopped at x0.)
    v = -gi
    below = low - xi
    above = high - xi
    if v < below:
        v = below
    elif v > above:
        v = above
    return abs(v)


_projected_step = njit(inline="always")(projected_step)


@njit(cache=True)
def projected_inf_norm(x, g, lo, hi):
    """``max |P(x - g) - x_i|`` (P: the projection onto the box), L-BFGS-B's measure,
    which ignores the gradient components pushing against an active bound."""
    m = 0.0
    i = 0
    for gi in g.flat:
        if gi - gi != 0.0:
            # inf or NaN: the projection would clip an infinite component to a
            # finite norm, and the step would then write NaN into x.
            return gi - gi
        a = _projected_step(x[i], gi, lo[i], hi[i])
        if a > m:
            m = a
        elif a != a:
            return a
        i += 1
    return m


@njit(cache=True)
def project(x, lo, hi):
    """Clip the flat iterate ``x`` onto ``[lo, hi]`` in place; returns None."""
    for i in range(x.shape[0]):
        if x[i] < lo[i]:
            x[i] = lo[i]
        elif x[i] > hi[i]:
            x[i] = hi[i]


@njit(cache=True)
def track(f, g, x, lo, hi, best_x, best_g, tr, nit):
    """The bookkeeping of one evaluation: returns the status of the stopping rule
    that fires at iteration ``nit``, or -1.

    ``f`` is the loss (float64) and ``g`` the gradient at the flat iterate ``x``;
    ``lo``, ``hi`` the bounds (None: unbounded).  Updates the tracker ``tr`` in
    place (gradient norm, smoothed loss, stall count) and, when ``best_x`` is not
    None and ``f`` is the lowest loss yet, copies ``x`` and ``g`` into the flat
    ``best_x`` and ``best_g`` (and sets ``PROGRESS`` if it beat the previous lowest by
    more than ``FTOL``, relative).  A non-finite loss or gradient returns
    ``Status.NONFINITE`` with nothing else updated.
    """
    if lo is None:
        gnorm = inf_norm(g)
    else:
        gnorm = projected_inf_norm(x, g, lo, hi)
    tr[GNORM] = gnorm
    if not (math.isfinite(f) and math.isfinite(gnorm)):
        return _NONFINITE_STOP
    if best_x is not None and f < tr[BEST_F]:
        best = tr[BEST_F]
        if best == math.inf or f < best - tr[FTOL] * abs(best):
            tr[PROGRESS] = 1.0
        tr[BEST_F] = f
        # Element loops, not best_x[:] = x: numba takes ~1.5 s to compile a slice
        # assignment, which a first minimize() would wait for.
        for i in range(x.shape[0]):
            best_x[i] = x[i]
        i = 0
        for v in g.flat:
            best_g[i] = v
            i += 1
    ema = tr[EMA]
    ema = f if ema != ema else tr[BETA] * ema + (1.0 - tr[BETA]) * f
    tr[EMA] = ema
    if ema < tr[THRESHOLD]:
        tr[EMA_BEST] = ema
        tr[STALL] = 0.0
        tr[THRESHOLD] = ema - tr[MIN_DELTA] * abs(ema)
    else:
        tr[STALL] += 1.0
    if gnorm <= tr[GTOL]:
        return _GTOL_STOP
    if tr[STALL] >= tr[PATIENCE]:
        return _STALLED_STOP
    if nit >= tr[MAXITER]:
        return _MAXITER_STOP
    return -1
