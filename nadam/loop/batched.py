r"""Many independent runs of one compiled loop at once (:func:`nadam.minimize_many`).

The runs share the objective, the optimizer's variant and the options; each has
its own rows of stacked arrays: row ``b`` of every array of :class:`Batch` is run
``b``'s :class:`~nadam.loop.iteration.LoopArguments`.  A *batched driver* calls
the compiled loop of :mod:`nadam.loop.compiled` (the very iterations of
:func:`~nadam.loop.iteration.iterate_template`) on the rows of active runs
``start, start + step, ...`` until each reaches its own ``ctl[END]`` or stops;
it releases the GIL, so that ``step`` Python threads, each calling it with its own
``start``, run the batch on as many cores.  Each run is taken whole by one thread,
so its numbers do not depend on the thread count.  (Python threads rather than a
``prange``: the batched driver then compiles in a fraction of the time, as a plain
loop around a call of the compiled loop.)  A run is one row of each array, so a run of the batch
computes exactly what :func:`nadam.minimize` computes for it alone.

The loop is given either the objective (an ``@njit`` function, evaluated inside
the loop) or, in the vectorised form, this iteration's values ``(f, g)`` of
every active run, evaluated by the caller for all of them at once
(:func:`nadam.loop.compiled.driver` with ``fun=None``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import numba
import numpy as np
from numba.core.caching import NullCache

from .._specialise import rebind
from .iteration import LoopArguments
from .objective import readonly

__all__ = ["PER_ACTIVE", "PER_RUN", "SHARED", "Batch", "batched_driver"]

#: How a loop argument reaches run ``b``, the ``k``-th active run: its row ``b``, its
#: row ``k`` (values computed for the active runs only), or as it is.
PER_RUN, PER_ACTIVE, SHARED = "b", "k", ""


@numba.njit(inline="always")
def _row(a, b):
    if a is None:
        return None
    return a[b]


@numba.njit(inline="always")
def _schedule_row(sched, b):
    # A schedule's kind and parameters are shared; its state is the run's own.
    return (sched[0], sched[1], sched[2][b])


@numba.njit(inline="always")
def _no_schedule(sched, b):
    return None


@cache
def _picker(spec: tuple[str, ...]) -> Any:
    """``pick(args, b, k)``: run ``b``'s arguments from the batch's (``spec`` says how
    each reaches it), written out as a tuple."""
    items = "".join(f"args[{i}]{f'[{how}]' if how else ''}, " for i, how in enumerate(spec))
    namespace: dict[str, Any] = {}
    exec(f"def pick(args, b, k):\n    return ({items})\n", namespace)
    return numba.njit(inline="always")(namespace["pick"])


def _batched_template(
    start, step, active, codes, fs, xv, x, args, lo, hi, best_x, best_g, avg, tr, ctr, ctl, s,
    hp, aux, h, schedule, kept,
):  # fmt: skip
    for k in range(start, active.shape[0], step):
        b = active[k]
        code, f = _drive(  # noqa: F821 (bound by rebind)
            xv[b],
            x[b],
            _pick(args, b, k),  # noqa: F821
            None,
            _row(lo, b),
            _row(hi, b),
            _row(best_x, b),
            _row(best_g, b),
            _row(avg, b),
            tr[b],
            ctr[b],
            ctl[b],
            s[b],
            hp[b],
            aux[b],
            h[b],
            _sched(schedule, b),  # noqa: F821
            None,
            kept[b],
        )
        codes[b] = code
        fs[b] = f


_BATCHED: dict[tuple, Any] = {}


def batched_driver(drive: Any, spec: tuple[str, ...], scheduled: bool) -> Any:
    """The batched driver of the compiled loop ``drive`` for arguments reaching each run
    as ``spec`` says (:data:`PER_RUN`, :data:`PER_ACTIVE`, :data:`SHARED`), with a
    stateful schedule or not (``scheduled``):
    ``run(start, step, active, codes, fs, *batch.values())`` runs ``active[start::step]``,
    each one's outcome ``(code, f)`` written to ``codes[b]``, ``fs[b]``.  Cached on disk
    when ``drive`` is."""
    key = (drive, spec, scheduled)
    if key not in _BATCHED:
        # drive's name carries the digest of everything it binds (nadam.loop.compiled).
        shape = "".join(how or "s" for how in spec) + ("_scheduled" if scheduled else "")
        name = f"batched_{drive.py_func.__name__}_{shape}"
        sched = _schedule_row if scheduled else _no_schedule
        fn = rebind(_batched_template, name, _drive=drive, _pick=_picker(spec), _sched=sched)
        cached = not isinstance(drive._cache, NullCache)
        _BATCHED[key] = numba.njit(cache=cached, nogil=True, error_model="numpy")(fn)
    return _BATCHED[key]


def _stacked(a: Any, runs: int) -> Any:
    # Row b of the result is a copy of a (each run starts from the same state).
    return None if a is None else np.repeat(a[None], runs, axis=0)


@dataclass(eq=False)
class Batch:
    """The loop arguments of ``B`` runs, stacked: row ``b`` of each array is run ``b``'s.

    Attributes as in :class:`~nadam.loop.iteration.LoopArguments` (without the sampler's
    ``draw`` and the ``hist`` rows, which a batch does not have); ``args`` holds the
    batch's arguments, which reach each run as ``spec`` says.
    """

    xv: np.ndarray
    x: np.ndarray
    args: tuple
    lo: np.ndarray | None
    hi: np.ndarray | None
    best_x: np.ndarray | None
    best_g: np.ndarray | None
    avg: np.ndarray | None
    tr: np.ndarray
    ctr: np.ndarray
    ctl: np.ndarray
    s: np.ndarray
    hp: np.ndarray
    aux: np.ndarray
    h: np.ndarray
    sched: tuple | None
    kept: np.ndarray

    @classmethod
    def of(
        cls,
        first: LoopArguments,
        x: np.ndarray,
        box: tuple | None,
        from_params: list[int],
        args: tuple = (),
    ) -> Batch:
        """The batch whose runs start as the fresh run ``first`` (before its first
        step) but from the rows of ``x`` (``(B, n)``, projected onto the bounds ``box``,
        ``(B, n)`` arrays or None): the state slots ``from_params`` start as x."""
        runs = len(x)
        s = _stacked(first.s, runs)
        for k in from_params:
            s[:, k] = x
        lo, hi = (None, None) if box is None else box
        return cls(
            readonly(x),
            x,
            args,
            lo,
            hi,
            None if first.best_x is None else np.empty_like(x),
            None if first.best_g is None else np.empty_like(x),
            None if first.avg is None else x.copy(),
            _stacked(first.tr, runs),
            _stacked(first.ctr, runs),
            _stacked(first.ctl, runs),
            s,
            _stacked(first.hp, runs),
            _stacked(first.aux, runs),
            _stacked(first.h, runs),
            None
            if first.sched is None
            else (first.sched[0], first.sched[1], _stacked(first.sched[2], runs)),
            np.empty_like(x),
        )

    def values(self) -> tuple:
        """The arrays in the batched driver's order (after ``start, step, active, codes,
        fs``): the fields' order, which is the contract."""
        return tuple(getattr(self, f.name) for f in fields(self))
