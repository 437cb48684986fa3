"""All the mutable state of one :func:`nadam.minimize` run, in one object.

The loop is at a *boundary* between iterations whenever control is outside a
call of the loop: ``x`` is the iterate after ``nit`` steps and has not been
evaluated yet.  :meth:`RunState.export` at a boundary, and :meth:`RunState.restore`
into the state of a freshly built run with the same arguments, continue the run
bit for bit.  Every field is checked before anything is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..optimizers import Optimizer
from ..sampling import Minibatches
from ..schedules import Schedule
from .tracker import BEST_F, STATE_SLOTS, restore_threshold

__all__ = ["COUNTERS", "NIT", "NFEV", "NJEV", "ORIGIN", "RunState"]

#: Slots of the int64 counter vector: steps taken, objective and gradient evaluations,
#: and the step at which the average (option ``average``) last started again.
NIT, NFEV, NJEV, ORIGIN = range(4)
COUNTERS = 4


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


def _invalid(key: str, value: Any, allowed: str) -> ValueError:
    shown = repr(value) if np.ndim(value) == 0 else f"an array of shape {np.shape(value)}"
    if isinstance(value, np.ndarray):
        shown += f" and dtype {value.dtype}"
    return ValueError(f"Invalid {key}: {shown}; allowed: {allowed}")


def _int(state: dict, key: str, low: int, high: int | None = None) -> int:
    value = state[key]
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise _invalid(key, value, f"an int >= {low}{upper}")
    return int(value)


def _float(state: dict, key: str, allowed: str, ok) -> float:
    value = state[key]
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if not real or not ok(float(value)):
        raise _invalid(key, value, allowed)
    return float(value)


def _array(state: dict, key: str, shape: tuple, dtype, finite: bool = True) -> np.ndarray:
    # finite=False still refuses NaN (a schedule's state may hold an infinite best loss).
    value = state[key]
    ok = isinstance(value, np.ndarray) and value.shape == tuple(shape) and value.dtype == dtype
    if ok:
        ok = bool(np.all(np.isfinite(value))) if finite else not np.any(np.isnan(value))
    if not ok:
        what = "finite values" if finite else "values (not NaN)"
        raise _invalid(key, value, f"{what} of shape {tuple(shape)} and dtype {dtype}")
    return value


@dataclass(eq=False)
class RunState:
    """Everything that changes during a :func:`nadam.minimize` run.

    Attributes
    ----------
    x : numpy.ndarray or device array
        The iterate (x0's shape), updated in place by ``optimizer``.
    optimizer : Optimizer
        Bound to ``x``; owns the rule's state and step count.
    tracker : numpy.ndarray
        The stopping rules' state and settings (:mod:`nadam.loop.tracker`).
    counters : numpy.ndarray of int64
        ``nit``, ``nfev``, ``njev`` (:data:`NIT`, :data:`NFEV`, :data:`NJEV`).
    sampler : Minibatches or None
        The minibatch sampler (its state: key, epoch, position).
    schedule : Schedule or None
        The learning-rate schedule, when ``lr`` is one (its state: plateau).
    best_x, best_g : array or None
        Iterate and gradient of the lowest loss (``return_best`` only).
    average : array or None
        The averaged iterate (option ``average``), x0's shape.
    history : list of tuple or None
        ``(loss, smoothed loss, gradient norm)`` of every evaluation so far (one per
        iterate: ``nit`` of them at a boundary) with the option ``history``.
    last : tuple
        ``(f, g)`` of the latest evaluation in this process (``(None, None)``
        before the first): what a run that stops without evaluating reports.
    result : OptimizeResult or None
        The result, once the run has stopped: running it again returns it.
    stages : numpy.ndarray or None
        The state of the run's windows (:mod:`nadam.loop.stages`), when it has any.
    stage_best : array or None
        Their best candidate so far (with minibatches), x0's shape.
    """

    x: Any
    optimizer: Optimizer
    tracker: np.ndarray
    counters: np.ndarray = field(default_factory=lambda: np.zeros(COUNTERS, np.int64))
    sampler: Minibatches | None = None
    schedule: Schedule | None = None
    best_x: Any = None
    best_g: Any = None
    average: Any = None
    history: list | None = None
    last: tuple = (None, None)
    result: Any = None
    stages: np.ndarray | None = None
    stage_best: Any = None

    @property
    def nit(self) -> int:
        """Steps taken."""
        return int(self.counters[NIT])

    @property
    def nfev(self) -> int:
        """Objective evaluations (finite-difference ones included)."""
        return int(self.counters[NFEV])

    @property
    def njev(self) -> int:
        """Gradient evaluations."""
        return int(self.counters[NJEV])

    @property
    def best_f(self) -> float:
        """The lowest loss evaluated so far (tracked with ``return_best``)."""
        return float(self.tracker[BEST_F])

    def export(self) -> dict[str, Any]:
        """The state as a flat dict of NumPy arrays (copies) and Python scalars."""
        out: dict[str, Any] = {"nit": self.nit, "nfev": self.nfev, "njev": self.njev}
        for name, slot in STATE_SLOTS.items():
            value = float(self.tracker[slot])
            out[name] = int(value) if name in ("stall", "progress") else value
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
        if self.average is not None:
            out["average"] = _host_copy(self.average)
        if self.stages is not None:
            out["stages"] = self.stages.copy()
            out["stages.origin"] = int(self.counters[ORIGIN])
        if self.stage_best is not None:
            out["stage_best"] = _host_copy(self.stage_best)
        if self.history is not None:
            out["history"] = np.array(self.history, dtype=np.float64).reshape(-1, 3)
        return out

    def restore(self, state: dict[str, Any]) -> None:
        """Load an :meth:`export` of a run with the same arguments, in place.

        Every field is checked (type, shape, dtype, range, finiteness) before
        anything changes: a bad state leaves the run as it was.

        Raises
        ------
        ValueError
            Naming the field, if the state is of another method, size, dtype or
            set of options, or holds a value out of range.
        """
        # The history is an observation, not part of the trajectory: a state may have
        # one or not whatever this run records (see below).
        expected = set(self.export()) - {"history"}
        given = set(state) - {"history"}
        if given != expected:
            raise ValueError(
                "state does not match this run: missing "
                f"{sorted(expected - given)}, unexpected {sorted(given - expected)}"
            )
        shape, dtype = self.x.shape, self.x.dtype
        x = _array(state, "x", shape, dtype)
        nit = _int(state, "nit", 0)
        nfev = _int(state, "nfev", 0)
        njev = _int(state, "njev", 0)
        if njev > nfev or nit > njev + 1:
            raise ValueError(
                f"Invalid counters: nit={nit}, nfev={nfev}, njev={njev}; allowed: "
                "nit <= njev + 1 and njev <= nfev"
            )
        stall = _int(state, "stall", 0)
        progress = _int(state, "progress", 0, 1)
        best_f = _float(state, "best_f", "a number < inf, or inf", lambda v: not math.isnan(v))
        ema = _float(
            state,
            "ema",
            "a finite number, or NaN before the first evaluation",
            lambda v: math.isnan(v) or math.isfinite(v),
        )
        ema_best = _float(
            state,
            "ema_best",
            "a finite number, or inf",
            lambda v: not math.isnan(v) and v > -math.inf,
        )
        extra = {}
        if self.best_x is not None:
            finite = best_f < math.inf
            extra["best_x"] = _array(state, "best_x", shape, dtype, finite)
            extra["best_g"] = _array(state, "best_g", shape, dtype, finite)
        if self.average is not None:
            extra["average"] = _array(state, "average", shape, dtype)
        if self.schedule is not None:
            extra["schedule"] = _array(
                state, "schedule.state", self.schedule.state.shape, np.float64, False
            )
        if self.stages is not None:
            extra["stages"] = self._checked_stages(state, nit)
            extra["origin"] = _int(state, "stages.origin", 0, nit)
        if self.stage_best is not None:
            extra["stage_best"] = _array(state, "stage_best", shape, dtype)
        history = self._checked_history(state, nit)
        sampler = None
        if self.sampler is not None:
            mine = self.sampler.state_dict()
            sampler = {k: state[f"sampler.{k}"] for k in mine}
            if (sampler["n_rows"], sampler["batch_size"]) != (mine["n_rows"], mine["batch_size"]):
                raise ValueError(
                    f"state samples {sampler['batch_size']} of {sampler['n_rows']} rows; this "
                    f"run samples {mine['batch_size']} of {mine['n_rows']}"
                )
            self.sampler.check_state(sampler)
        sd = self.optimizer.state_dict()
        sd.update(
            rule=state["optimizer.rule"],
            t=state["optimizer.t"],
            aux=state["optimizer.aux"],
            state={name: state[f"optimizer.state.{name}"] for name in sd["state"]},
        )
        if sd["t"] != nit:
            raise _invalid("optimizer.t", sd["t"], f"the number of steps, nit = {nit}")
        # Everything checked: load.  (The optimizer checks its own fields first too.)
        self.optimizer.load_state_dict(sd)
        _copy_into(self.x, x)
        if sampler is not None:
            self.sampler.load_state_dict(sampler)
        if self.schedule is not None:
            self.schedule.state[:] = extra["schedule"]
        if self.best_x is not None:
            _copy_into(self.best_x, extra["best_x"])
            _copy_into(self.best_g, extra["best_g"])
        if self.average is not None:
            _copy_into(self.average, extra["average"])
        self.counters[:] = (nit, nfev, njev, extra.get("origin", 0))
        if self.stages is not None:
            self.stages[:] = extra["stages"]
            if not math.isnan(self.stages[0]):  # the step size the stages set
                self.optimizer.lr = float(self.stages[0])
        if self.stage_best is not None:
            _copy_into(self.stage_best, extra["stage_best"])
        for name, value in (
            ("ema", ema),
            ("ema_best", ema_best),
            ("best_f", best_f),
            ("stall", stall),
            ("progress", progress),
        ):
            self.tracker[STATE_SLOTS[name]] = value
        restore_threshold(self.tracker)
        if self.history is not None:
            self.history[:] = map(tuple, history.tolist())
        self.last = (None, None)
        self.result = None

    def _checked_stages(self, state: dict, nit: int) -> np.ndarray:
        # nadam.loop.stages.SLOTS: step sizes NaN (not adapted) or finite > 0; the best
        # score and the lowest losses at the last fresh start and progress finite or inf;
        # counts whole numbers, the window's start at most nit.
        v = state["stages"]
        if isinstance(v, np.ndarray) and v.shape == (7,) and v.dtype == np.float64:
            # Saved before the fresh starts (seven slots, FRESH and MARK missing): no fresh start
            # yet, the next judged window then counts as the run's first.
            v = np.insert(v, 3, [math.inf, math.inf])
        if not (
            isinstance(v, np.ndarray) and v.shape == self.stages.shape and v.dtype == np.float64
        ):
            raise _invalid("stages", v, f"float64 of shape {self.stages.shape}")
        step, step0, start = v[0], v[1], v[5]
        counts = v[6:]
        steps_ok = (math.isnan(step) and math.isnan(step0)) or (0 < step <= step0 < math.inf)
        ok = (
            steps_ok
            and all(best > -math.inf for best in v[2:5])
            and 0 <= start <= nit
            and float(start).is_integer()
            and all(c >= 0 and float(c).is_integer() for c in counts)
        )
        if not ok:
            raise _invalid(
                "stages",
                v,
                "step sizes NaN or 0 < step <= initial step, best scores > -inf, a window start "
                f"in [0, {nit}] and counts: whole numbers >= 0",
            )
        return v

    def _checked_history(self, state: dict, nit: int) -> np.ndarray | None:
        if self.history is None:
            return None
        if "history" not in state:
            # Saved without the option history: the iterates before it was on are NaN
            # rows, so that entry k is still iterate k.
            return np.full((nit, 3), np.nan)
        # nit + 1 entries in the state of a finished run (its last iterate evaluated):
        # that evaluation is made again when the run goes on, so it is dropped here.
        history = state["history"]
        if not (
            isinstance(history, np.ndarray)
            and history.shape in ((nit, 3), (nit + 1, 3))
            and history.dtype == np.float64
        ):
            raise ValueError(
                f"state has a history of shape {np.shape(history)} and dtype "
                f"{getattr(history, 'dtype', type(history).__name__)}; after {nit} iterations "
                f"it must be float64 of shape ({nit}, 3) or ({nit + 1}, 3)"
            )
        return history[:nit]
