r"""Windows of iterations: how a run without ``maxiter`` stops by itself, and how a run
of Adam without ``lr`` finds its step size (``docs/tuning-free.md``).

The run is cut into windows of :math:`W` iterations.  At the end of each, it asks
whether the window made progress:

* **full batch** (every evaluation exact): whether some evaluation in the window beat
  the lowest loss so far by more than ``ftol``, relative: :math:`f_k < f^* -
  \text{ftol}\,|f^*|` (the tracker's ``PROGRESS``, :mod:`nadam.loop.tracker`);
* **minibatches**: whether the *candidate* (the stage's averaged iterate, or the
  iterate itself without an average) beat the best candidate so far by more than
  ``ftol``, relative, both scored by their loss on one fixed *evaluation set* of rows.
  Scores on the same rows differ by the candidates only, not by sampling noise: the
  comparison is paired.  The first ``grace`` windows of a stage are not judged (a
  young average cannot beat an old one).

After ``stalls`` windows in a row without progress the run has converged and stops.

A run that finds its own step size (``adapt``: no ``lr``) also acts on each window
without progress: it halves the step size (the rule's ``lr``) and sends the iterate
back to the best point found (full batch: the lowest loss evaluated; minibatches: the
best candidate), where a new *stage* starts, with a new average.  When its windows
stall ``stalls`` times in a row, it has converged only if it was already at a *fresh
start*: a run whose windows that made progress since its last fresh start (or its
first judged window) lowered its best loss (score) by more than :data:`FRESH_FTOL`,
relative, starts afresh from the best point instead: step size, moment estimates and
distances as at a run's start, the best point as the origin.  Stalls say that the step
size no longer fits; only a fresh start, whose steps begin small and grow to the scale
they need, can tell a minimum from a step that overshoots one at every size the cuts
tried.  A non-finite loss, gradient or step is a divergence: back to the best point,
the step size divided by 10 and the moment estimates started afresh
(:func:`nadam.optimizers.restart`).  A step size below :data:`FLOOR` times its initial
value ends the run.

Every decision is taken at an iteration boundary from values that every MPI rank has
(the losses, summed over the ranks), so the ranks take the same decisions; the state
(:data:`SLOTS` in ``RunState.stages``, the best candidate in ``RunState.stage_best``,
the average's start in the counters) is saved by checkpoints, and a resumed run takes
the same decisions at the same iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..optimizers import restart as restart_moments
from .state import NFEV, NJEV, ORIGIN, RunState
from .status import Status
from .tracker import BEST_F, PROGRESS

__all__ = [
    "BLOWUP",
    "CUT",
    "FLOOR",
    "FRESH_FTOL",
    "SLOTS",
    "Plan",
    "Stages",
    "copy_array",
    "epoch_window",
    "new_stages",
    "scorer",
]

#: Slots of the float64 vector ``RunState.stages``: the step size in force (NaN when
#: the run does not adapt it) and its initial value; the best candidate's score
#: (minibatches); the lowest loss (best score) at the last fresh start, or at the first
#: judged window (inf before), and at the last window that made progress; the
#: iteration at which the window started; windows in a row without progress; windows
#: of this stage so far; divergences so far.
STEP, STEP0, BEST, FRESH, MARK, START, STALLS, WINDOWS, DIVERGED = range(9)
SLOTS = 9

#: Full batch: iterations per window, the relative progress a window must make, and
#: the windows without it that end the run.
FULL_WINDOW, FULL_FTOL, FULL_STALLS = 50, 1e-10, 5
#: Minibatches: a window is whole epochs, at least MIN_WINDOW and at most MAX_WINDOW
#: steps; the relative progress; the windows without it; the stage's first windows
#: not judged.
MIN_WINDOW, MAX_WINDOW, NOISY_FTOL, NOISY_STALLS, GRACE = 100, 2000, 1e-6, 3, 1
#: What a window without progress multiplies the step size by; what a divergence
#: multiplies it by; the fraction of the initial step size below which the run ends.
CUT, BLOWUP, FLOOR = 0.5, 0.1, 1e-12
#: The relative fall of the best loss (score), by the windows that made progress since
#: the last fresh start, above which a run whose windows stall starts afresh from its
#: best point instead of stopping.  Far above ``ftol``: a fit that has converged gains
#: less from a fresh start (at most 1.4e-6 on the fitting suite, a few parts in 1e9 from
#: a second one on), and each fresh start costs ``stalls`` windows; a run stopped on a
#: step that overshot gains orders of magnitude.
FRESH_FTOL = 1e-5


def epoch_window(rows: int, batch_size: int) -> int:
    """Iterations per window with minibatches: the fewest whole epochs of ``rows`` rows
    in batches of ``batch_size`` that make at least :data:`MIN_WINDOW` steps (an epoch's
    batches cover every row once), or :data:`MAX_WINDOW` steps when an epoch is longer."""
    epoch = rows / batch_size
    if epoch > MAX_WINDOW:
        return MAX_WINDOW
    return math.ceil(math.ceil(MIN_WINDOW / epoch) * epoch)


@dataclass(frozen=True)
class Plan:
    """How a run uses its windows.

    Attributes
    ----------
    adapt : bool
        Cut the step size on a window without progress, and recover from divergences.
    noisy : bool
        Minibatches: judge candidates on the evaluation set.
    window : int
        Iterations per window.
    ftol : float
        The relative progress a window must make.
    stalls : int
        Windows in a row without progress after which the run stops.
    grace : int
        Windows of a stage that are not judged (minibatches).
    """

    adapt: bool
    noisy: bool
    window: int
    ftol: float
    stalls: int
    grace: int

    @classmethod
    def of(
        cls,
        adapt: bool,
        noisy: bool,
        rows: int | None = None,
        batch_size: int | None = None,
        window: int | None = None,
        ftol: float | None = None,
    ) -> Plan:
        """The plan of a run: the options ``window`` and ``ftol`` where given, else the
        defaults of a full batch or of minibatches (``rows`` in batches of ``batch_size``)."""
        if noisy:
            default = epoch_window(rows, batch_size) if window is None else window
            return cls(
                adapt, True, default, NOISY_FTOL if ftol is None else ftol, NOISY_STALLS, GRACE
            )
        return cls(
            adapt,
            False,
            FULL_WINDOW if window is None else window,
            FULL_FTOL if ftol is None else ftol,
            FULL_STALLS,
            0,
        )

    def describe(self, evaluation_rows: int | None) -> str:
        """What a run that stopped on this plan's stall rule did, for its message."""
        if self.noisy:
            what = f"the averaged iterate's loss on {evaluation_rows} fixed rows"
        else:
            what = "the lowest loss"
        text = (
            f"{what} improved by less than ftol ({self.ftol:g}, relative) in {self.stalls} "
            f"windows of {self.window} iterations in a row"
        )
        if self.adapt:
            text += (
                f", the step size halved after each; by less than {FRESH_FTOL:g} since the run "
                "started (or last started afresh from its best point)"
            )
        return text


def new_stages(lr: float | None) -> np.ndarray:
    """The stages' state at the start of a run whose step size starts at ``lr`` (None: a
    run that does not adapt it)."""
    v = np.zeros(SLOTS)
    v[STEP] = v[STEP0] = math.nan if lr is None else lr
    v[BEST] = v[FRESH] = v[MARK] = math.inf
    return v


def copy_array(dst: Any, src: Any) -> None:
    """Copy the elements of ``src`` into ``dst`` (same size, any shapes, flat order): host
    arrays, or device arrays on either side."""
    dst, src = dst.reshape(dst.size), src.reshape(src.size)
    if isinstance(dst, np.ndarray) and isinstance(src, np.ndarray):
        dst[...] = src
    else:
        dst.copy_to_device(src)


def _improved(new: float, old: float, ftol: float) -> bool:
    # Relative progress; from an infinite old value (nothing yet), any finite value is.
    if not math.isfinite(old):
        return new < old
    return new < old - ftol * abs(old)


class Stages:
    """The windows of one run (see the module docstring).

    Parameters
    ----------
    plan : Plan
        What the windows do.
    state : RunState
        The run's state, with ``stages`` (and with minibatches ``stage_best``) set.
    score : callable or None
        ``score(candidate) -> float``: a candidate's loss on the evaluation set
        (minibatches; it counts its evaluations).
    origin : array or None
        Where the run started (adapt mode: where it goes back to before it has a best point).
    start : array or None
        x0 (minibatches): the first candidate, scored at the first judged window, so that
        a run whose candidates never beat its start answers with the start.
    evaluation_rows : int or None
        Rows in the evaluation set (for the message).
    set_lr, restart : callable or None
        ``set_lr(lr)`` sets the step size, ``restart(whole)`` starts the moment
        estimates afresh (``whole``: the whole state, from the iterate as at a run's
        start); by default, of ``state.optimizer`` (:func:`nadam.optimizers.restart`).
        :func:`nadam.minimize_many` gives those of one problem's rows.
    """

    def __init__(
        self,
        plan: Plan,
        state: RunState,
        score: Callable[[Any], float] | None = None,
        origin: Any = None,
        evaluation_rows: int | None = None,
        set_lr: Callable[[float], None] | None = None,
        restart: Callable[[bool], None] | None = None,
        start: Any = None,
    ):
        self.plan, self.state = plan, state
        self._score, self._origin, self._rows = score, origin, evaluation_rows
        self._start = start
        self._set_lr = set_lr or (lambda lr: setattr(state.optimizer, "lr", lr))
        self._restart = restart or (lambda whole: restart_moments(state.optimizer, whole))

    def steps_to_boundary(self, nit: int, steps: int | None) -> int:
        """Steps to the end of the window, or ``steps`` if fewer."""
        left = int(self.state.stages[START]) + self.plan.window - nit
        return left if steps is None else min(left, steps)

    def boundary(self) -> tuple | None:
        """At the end of a window, judge it and act; the outcome ``(status, f, g, what)``
        of a run that has converged, else None.  Does nothing elsewhere."""
        s, v, plan = self.state, self.state.stages, self.plan
        done = self._finished()  # (a converged run resumed from its state: at once)
        if done is not None:
            return done
        nit = s.nit
        if nit - v[START] < plan.window:
            return None
        v[START] = nit
        v[WINDOWS] += 1
        if plan.noisy:
            if v[WINDOWS] <= plan.grace:
                return None
            if math.isinf(v[FRESH]) and self._start is not None:
                self._take(self._start)  # the first judged window: x0 is the first candidate
            candidate = s.x if s.average is None else s.average
            progress = self._take(candidate)
        else:
            progress = s.tracker[PROGRESS] != 0.0
            s.tracker[PROGRESS] = 0.0
        if math.isinf(v[FRESH]):  # the first judged window: the run's own start
            v[FRESH] = v[MARK] = self._lowest()
        if progress:
            v[STALLS] = 0
            v[MARK] = self._lowest()
            return None
        v[STALLS] += 1
        if v[STALLS] < plan.stalls and plan.adapt:
            self._set_step(v[STEP] * CUT)
        elif plan.adapt and _improved(v[MARK], v[FRESH], FRESH_FTOL):
            self._fresh_start()
            return None
        done = self._finished()
        if done is None and plan.adapt:
            self._restart_stage()
        return done

    def recover(self) -> bool:
        """After a non-finite loss, gradient or step: go back to the best point with a
        step size 10 times smaller and the moment estimates started afresh, and return
        True; False (nothing done) if the run does not adapt, or the step size would
        fall below :data:`FLOOR` of its initial value."""
        v = self.state.stages
        if not self.plan.adapt or v[STEP] * BLOWUP < FLOOR * v[STEP0]:
            return False
        v[DIVERGED] += 1
        self._set_step(v[STEP] * BLOWUP)
        self._restart(False)
        self._restart_stage()
        v[START] = self.state.nit
        return True

    @property
    def best(self) -> Any:
        """The best candidate (minibatches), or None before the first was scored."""
        s = self.state
        return s.stage_best if self.plan.noisy and s.stages[BEST] < math.inf else None

    def _take(self, candidate: Any) -> bool:
        # Score a candidate, keep it if it is the best; whether it beat the best by ftol.
        v = self.state.stages
        score = self._score(candidate)
        progress = _improved(score, v[BEST], self.plan.ftol)
        if score < v[BEST]:
            v[BEST] = score
            copy_array(self.state.stage_best, candidate)
        return progress

    def _set_step(self, lr: float) -> None:
        self.state.stages[STEP] = lr
        self._set_lr(lr)

    def _lowest(self) -> float:
        # What the windows judge: the best candidate's score, or the lowest loss.
        s = self.state
        return s.stages[BEST] if self.plan.noisy else s.tracker[BEST_F]

    def _fresh_start(self) -> None:
        # Back to the best point, and on from there as a run started there would go.
        v = self.state.stages
        v[FRESH] = v[MARK] = self._lowest()
        v[STALLS] = 0
        self._set_step(v[STEP0])
        self._restart_stage()
        self._restart(True)

    def _restart_stage(self) -> None:
        # Back to the best point; a new stage (and average) starts there.
        s, v = self.state, self.state.stages
        if self.plan.noisy:
            best = s.stage_best if v[BEST] < math.inf else self._origin
        else:
            best = s.best_x if s.tracker[BEST_F] < math.inf else self._origin
        copy_array(s.x, best)
        if s.average is not None:
            copy_array(s.average, s.x)
        s.counters[ORIGIN] = s.nit
        v[WINDOWS] = 0

    def _finished(self) -> tuple | None:
        # The run has converged, and stays so: its windows stalled too often, or (adapt)
        # its step size fell below the floor.
        v, plan = self.state.stages, self.plan
        if v[STALLS] >= plan.stalls:
            return self._converged(plan.describe(self._rows))
        if plan.adapt and v[STEP] < FLOOR * v[STEP0]:
            return self._converged(f"the step size fell below {FLOOR:g} of its initial value")
        return None

    def _converged(self, what: str) -> tuple:
        s = self.state
        f, g = s.last
        return (Status.CONVERGED, f, g, what)


def scorer(
    evaluate: Callable, check: Callable, view_of: Callable, rows: tuple, fev: int, state: RunState
) -> Callable[[Any], float]:
    """``score(candidate) -> float``: the loss of ``candidate`` on the evaluation arguments
    ``rows`` (inf when not finite), its evaluations counted in ``state``."""

    def score(candidate: Any) -> float:
        f, _ = check(evaluate(view_of(candidate), *rows), state.nit)
        state.counters[NFEV] += fev
        state.counters[NJEV] += 1
        return f if math.isfinite(f) else math.inf

    return score
