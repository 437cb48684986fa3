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

On a CUDA device (:class:`DeviceLoop`), the same batched loop is a kernel whose
threads take one run each, its parts those of the compiled loop retargeted to CUDA.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import numba
import numpy as np
from numba.core.caching import NullCache

from .._specialise import rebind, retarget
from .iteration import LoopArguments
from .objective import readonly

__all__ = [
    "PER_ACTIVE",
    "PER_RUN",
    "SHARED",
    "Batch",
    "DeviceLoop",
    "batched_driver",
]

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


# ---------------------------------------------------------------------------
# The device form: one CUDA thread per run
# ---------------------------------------------------------------------------


def _evaluate_into_template(xv, args):
    # A device objective writes the gradient into the run's buffer, args[0] (a device
    # function cannot allocate one): fun(x, g, *args_b) -> f.
    g = args[0]
    return _fun(xv, g, *args[1:]), g  # noqa: F821 (bound by rebind)


def _as_is(a, draw=None):
    # The arguments as given (no sampling); a row's gradient, flat already.
    return a


def _device_kernel(present: tuple[bool, ...]) -> Any:
    """The source of ``kernel(active, codes, fs, <the present values>)``: thread ``k``
    of the grid runs the active runs ``k, k + gridsize, ...`` (the batched loop, one
    run per thread).  A kernel cannot take None (numba-cuda passes arrays and
    numbers): the absent values are None in the kernel's call of the loop."""
    names = [f.name for f in fields(Batch)]
    given = ", ".join(n for n, p in zip(names, present, strict=True) if p)
    passed = ", ".join(n if p else "None" for n, p in zip(names, present, strict=True))
    return (
        f"def kernel(active, codes, fs, {given}):\n"
        f"    _batched(cuda.grid(1), cuda.gridsize(1), active, codes, fs, {passed})\n"
    )


def _evaluate_kernel_template(x, out, b, args):
    # One evaluation of run b's objective at x (an answer's point): f into out[0], the
    # gradient into run b's buffer.
    picked = _pick(args, b, b)  # noqa: F821
    out[0] = _fun(x, picked[0], *picked[1:])  # noqa: F821


@cache
def _kernels(
    fun: Any, variant: tuple, spec: tuple[str, ...], options: tuple, present: tuple
) -> tuple:
    """The CUDA kernels ``(run, evaluate)`` of the device objective ``fun`` (see
    :class:`DeviceLoop`) for a batch whose values ``present`` are not None."""
    from ..kernels import cuda as ck
    from .compiled import loop_function

    cuda = ck.load()
    scheduled, observe, average, beta = options
    rule, flags, _, shared = variant
    name = f"device_{rule.name}"
    evaluate = rebind(_evaluate_into_template, f"evaluate_{name}", _fun=fun)
    # Serial steps whatever the variant: each thread runs whole runs.
    loop = loop_function(
        name, evaluate, _as_is, (rule, flags, False, shared), observe, False, average, beta, _as_is
    )
    batched = rebind(
        _batched_template,
        f"batched_{name}",
        _drive=loop,
        _pick=_picker(spec),
        _sched=_schedule_row if scheduled else _no_schedule,
    )
    device = cuda.jit(device=True)
    # The loop's step checks no array's length (cpu.prepare with lengths=False: a
    # device could not raise the checks' values); the batch's arrays are its own.
    namespace = {"cuda": cuda, "_batched": retarget(batched, device)}
    exec(_device_kernel(present), namespace)
    run = namespace["kernel"]
    once = rebind(
        _evaluate_kernel_template, f"once_{name}", _fun=fun, _pick=retarget(_picker(spec), device)
    )
    return cuda.jit(run), cuda.jit(once)


@contextmanager
def _few_blocks() -> Iterator[None]:
    # numba-cuda warns of grids under 128 blocks, which a batch of fewer than 128 * 128
    # problems (one thread each) is: the GPU is as busy as the batch can make it.
    from numba.core.errors import NumbaPerformanceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        yield


class DeviceLoop:
    """``loop(start, step, active, codes, fs, *values)``, the batched driver's call, run
    on a CUDA device, one thread per active run: the runs' arrays go to the device,
    each thread takes its runs' iterations, and the arrays come back.

    The loop is :func:`nadam.loop.compiled.loop_function` (the compiled loop's very
    parts) retargeted to CUDA (:func:`nadam._specialise.retarget`).  The host arrays
    stay the runs' state between calls (windows, checkpoints and answers read them as
    for the CPU forms); the arguments and bounds, which no iteration changes, are
    copied once.

    Parameters
    ----------
    fun : CUDA device function
        ``fun(x, g, *args_b) -> f``: writes the gradient into ``g``.
    variant : tuple
        The optimizer's ``(rule, flags, parallel, shared)`` (its steps run serially).
    spec : tuple of str
        How each argument reaches a run (:data:`PER_RUN`, :data:`SHARED`).
    options : tuple
        ``(scheduled, observe, average, average_beta)``: a schedule with state, a
        stateful one, the averaging and its decay.
    args : tuple
        The runs' arguments, the gradient buffer (``(B, n)``, :data:`PER_RUN`) first.
    batch : Batch
        The runs' arrays (those that are None select the kernel).
    """

    #: Threads per block: one run each (a run's loop holds many registers).
    THREADS = 128

    def __init__(
        self, fun: Any, variant: tuple, spec: tuple, options: tuple, args: tuple, batch: Batch
    ):
        from ..kernels import cuda as ck

        self._cuda = ck.load()
        present = tuple(v is not None for v in batch.values())
        self._run, self._once = _kernels(fun, variant, spec, options, present)
        # The arguments, the bounds and a schedule's parameters: copied once (no
        # iteration changes them).
        self._fixed = {
            "args": tuple(self._to_device(a) for a in args),
            "lo": self._to_device(batch.lo),
            "hi": self._to_device(batch.hi),
        }
        self._schedule = None if batch.sched is None else self._to_device(batch.sched[1])

    def _to_device(self, a: Any) -> Any:
        return self._cuda.to_device(a) if isinstance(a, np.ndarray) else a

    def __call__(self, start: int, step: int, active: np.ndarray, codes, fs, *values) -> None:
        sent: list[tuple[np.ndarray, Any]] = []

        def send(a: np.ndarray) -> Any:
            d = self._cuda.to_device(a)
            sent.append((a, d))
            return d

        device = {}  # the present values, in order
        for f, v in zip(fields(Batch), values, strict=True):
            if v is None:
                continue
            if f.name == "xv":  # the objective's view of the iterate: the iterate
                device["xv"] = None
            elif f.name in self._fixed:
                device[f.name] = self._fixed[f.name]
            elif f.name == "sched":  # (kind, params, state): only the state changes
                device[f.name] = (v[0], self._schedule, send(v[2]))
            else:
                device[f.name] = send(v)
        device["xv"] = device["x"]
        runs = np.ascontiguousarray(active[start::step])
        threads = min(self.THREADS, len(runs))
        blocks = -(-len(runs) // threads)
        with _few_blocks():
            self._run[blocks, threads](
                self._cuda.to_device(runs), send(codes), send(fs), *device.values()
            )
        for host, dev in sent:
            dev.copy_to_host(host)

    def evaluate(self, b: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Run ``b``'s objective at the point ``x``: ``(f, g)`` on the host."""
        out = self._cuda.to_device(np.full(1, np.nan))
        args = self._fixed["args"]
        with _few_blocks():
            self._once[1, 1](self._cuda.to_device(x), out, b, args)
        return float(out.copy_to_host()[0]), args[0][b].copy_to_host()
