r"""Many independent fits in one call: :func:`minimize_many`.

Each problem is a :func:`nadam.minimize` run of its own (its own stopping rules,
windows, step count) whose state is one row of stacked arrays
(:class:`nadam.loop.batched.Batch`).  The runs are validated and set up once,
from the first problem (:class:`nadam.Minimizer`), and iterated together: the
compiled loop of an ``@njit`` objective runs whole problems on each thread; a
vectorised objective evaluates the still-active problems at once and the compiled
loop then takes one iteration of each; on a GPU, the compiled loop's parts,
retargeted to CUDA, run one problem per CUDA thread.  A problem that stops is
frozen (no more evaluations or steps).  Between calls of the loop, at iteration boundaries, each
problem's windows act (:mod:`nadam.loop.stages`) and the problems that stopped
get their answer (:func:`nadam.loop.answer.answer`): what :func:`nadam.minimize`
returns for that problem alone.
"""

from __future__ import annotations

import math
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from scipy.optimize import Bounds, OptimizeResult

from . import checkpoint, rules
from ._checks import check_bool, fail
from .arguments import as_x0, parse_bounds
from .assembly import identity
from .loop import compiled
from .loop.answer import answer, checked_status
from .loop.batched import PER_ACTIVE, PER_RUN, SHARED, Batch, DeviceLoop, batched_driver
from .loop.iteration import BAD_OUTPUT, CONTINUE, END, T
from .loop.objective import readonly
from .loop.runner import TARGET_SECONDS, Preemption, outcome
from .loop.stages import START, Stages
from .loop.state import NFEV, NIT, NJEV, RunState
from .loop.status import Status, message
from .loop.tracker import MAXITER, STATE_SLOTS, project, restore_threshold
from .minimizer import Minimizer
from .optimizers import TrainEval, switch_point
from .threads import get_threads

__all__ = ["minimize_many"]

#: Options of :func:`nadam.minimize` that a batch of problems does not take (yet).
_UNSUPPORTED = {
    "batch_size": "each problem's data are its own rows of args: give the full batch",
    "comm": "spread the problems over the ranks instead (each rank a minimize_many)",
    "history": "a batch does not record histories",
    "callback": "a batch calls no callback; options={'disp': True} shows its progress",
}


def minimize_many(
    fun: Callable,
    x0: Any,
    args: tuple = (),
    method: str = "adam",
    jac: bool = True,
    bounds: Any = None,
    options: dict | None = None,
) -> OptimizeResult:
    r"""Minimize ``B`` independent problems of ``n`` parameters at once.

    Problem :math:`b` is :func:`nadam.minimize` of ``fun`` from ``x0[b]`` with its
    own rows of ``args``, the same ``method`` and options: it stops by its own rules
    and its entries of the result equal what ``minimize`` returns for it alone.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args_b) -> (f, g)`` for one problem (``jac=True``), a numba
        ``@njit`` function: the problems run in compiled code, spread over the
        threads (each thread runs whole problems).  With the option
        ``vectorized``, ``fun(X, *args) -> (F, G)`` evaluates ``k`` problems at
        once: ``X`` of shape ``(k, n)``, each per-problem argument sliced to the
        same ``k`` rows, ``F`` of shape ``(k,)`` and ``G`` of shape ``(k, n)``.  With
        the option ``device="cuda"``, ``fun(x, g, *args_b) -> f``, a
        ``@numba.cuda.jit(device=True)`` function that writes the gradient into ``g``:
        one CUDA thread runs each problem.
    x0 : array_like, shape (B, n)
        One row per problem.
    args : tuple
        Arrays whose first dimension is ``B`` are per-problem (problem ``b``
        receives row ``b``), everything else is shared; the option
        ``per_problem`` says which are.
    method : str
        A rule of :data:`nadam.RULES`, as in :func:`nadam.minimize`.
    jac : True, default True
        ``fun`` returns the gradient with the loss: the only form taken.
    bounds : tuple of array_like, sequence of pairs or scipy.optimize.Bounds, optional
        Per problem: ``(lo, hi)`` (or ``Bounds(lo, hi)``) with a 2-D array among them,
        broadcastable to ``(B, n)``.  The same for every problem: the bounds of one
        problem as :func:`nadam.minimize` takes them (``n`` pairs, or ``Bounds``).
    options : dict, optional
        :func:`nadam.minimize`'s options (``lr``, ``maxiter``, ``gtol``,
        ``patience``, ``return_best``, ...; none: the tuning-free defaults), and

        ``vectorized`` : bool, default False
            ``fun`` evaluates many problems at once (see ``fun``).
        ``device`` : {None, "cpu", "cuda"}
            ``"cuda"``: run the problems on the GPU, one thread each (see ``fun``;
            ``docs/many.md``).
        ``per_problem`` : sequence of int, optional
            The indices of the per-problem ``args`` (each must have ``B`` rows); the
            others are shared, whatever their length.
        ``disp`` : bool
            A progress bar over the problems.

    Returns
    -------
    OptimizeResult
        ``x`` and ``jac`` of shape ``(B, n)``; ``fun``, ``nit``, ``nfev``, ``njev``,
        ``status``, ``success`` of shape ``(B,)``; ``message`` a list.

    Raises
    ------
    ValueError, TypeError
        For bad shapes (a 1-D ``x0``, a per-problem argument without ``B`` rows),
        bad options, or an objective that is neither ``@njit`` nor vectorised.

    Examples
    --------
    Fit :math:`a e^{-k t}` to 1,000 curves at once:

    >>> import numpy as np, nadam
    >>> from numba import njit
    >>> @njit
    ... def decay(p, t, y):
    ...     e = np.exp(-p[1] * t)
    ...     r = p[0] * e - y
    ...     g = np.array([2 * np.mean(r * e), -2 * np.mean(r * p[0] * t * e)])
    ...     return np.mean(r * r), g
    >>> rng = np.random.default_rng(0)
    >>> t = np.linspace(0, 3, 30)
    >>> truth = rng.uniform([1, 0.5], [2, 1.5], size=(1000, 2))
    >>> Y = truth[:, :1] * np.exp(-truth[:, 1:] * t)
    >>> res = nadam.minimize_many(decay, np.ones((1000, 2)), args=(t, Y), jac=True)
    >>> res.x.shape, bool(res.success.all()), float(np.abs(res.x - truth).max()) < 1e-3
    ((1000, 2), True, True)
    """
    if _is_dask(x0):
        return _on_dask(fun, x0, args, method, jac, bounds, options)
    for i, a in enumerate(args if isinstance(args, tuple) else (args,)):
        if _is_dask(a):  # (the chunks of x0 are what runs on the cluster)
            raise TypeError(
                f"args[{i}] is a Dask array but x0 is not: give x0 as a Dask array chunked "
                f"along the problems to run on Dask, or args[{i}] computed (a NumPy array)"
            )
    return _Batch(fun, x0, args, method, jac, bounds, options).run()


#: Problem-iterations of a call of the batched loop from which it is spread over threads.
_THREADED_WORK = 20_000

#: The fields of a result that have a row per problem, in the order _solve gives them.
_FIELDS = ("x", "fun", "jac", "nit", "nfev", "njev", "status", "success", "message")


def _is_dask(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "dask" and hasattr(a, "chunks")


def _solve(fun, x0, args, method, jac, bounds, options) -> tuple:
    """One chunk of problems of a Dask batch: the result's fields (see :data:`_FIELDS`)."""
    res = minimize_many(fun, x0, args, method, jac, bounds, options)
    res.message = np.array(res.message, dtype=object)
    return tuple(res[k] for k in _FIELDS)


def _reach(args: tuple, spec: tuple, rows: str) -> str:
    """Which arguments the objective gets whole and which by the problems' ``rows``."""
    reach = ", ".join(
        f"args[{i}] {rows if how == PER_RUN else 'shared'} (shape {np.shape(a)})"
        for i, (a, how) in enumerate(zip(args, spec, strict=True))
    )
    return f"{reach}: options['per_problem'] says which are per-problem"


def _chunk_checkpoint(path: str, start: int, stop: int) -> str:
    """The checkpoint file of rows ``start`` to ``stop - 1`` of a Dask batch whose option
    ``checkpoint`` is ``path``: ``fits.npz`` -> ``fits.rows0-256.npz``."""
    root, ext = os.path.splitext(path)
    return f"{root}.rows{start}-{stop}{ext}"


def _on_dask(fun, x0, args, method, jac, bounds, options) -> OptimizeResult:
    """:func:`minimize_many` of a Dask ``x0``: each chunk of its rows is a task on the
    Dask scheduler in use (a ``distributed`` cluster, threads, ...); the result's fields
    are Dask arrays, chunked as ``x0``."""
    import dask
    import dask.array as da

    if x0.ndim != 2:
        raise ValueError(
            f"x0 must have shape (B, n): one row of parameters per problem; got shape {x0.shape}"
        )
    x0 = x0.rechunk({1: -1})  # each task solves whole problems
    runs, rows = x0.shape[0], x0.chunks[0]
    args = args if isinstance(args, tuple) else (args,)
    options = dict(options or {})
    chosen = options.get("per_problem")
    if chosen is None:  # (each chunk is told: its rows may be fewer than a shared array's)
        chosen = [i for i, a in enumerate(args) if _is_array(a) and a.ndim >= 1 and len(a) == runs]
        spec = tuple(PER_RUN if i in chosen else SHARED for i in range(len(args)))
        _warn_if_ambiguous(args, spec, runs, stacklevel=4)
    options["per_problem"] = _indices(chosen, args)
    _check_rows(args, options["per_problem"], runs)
    path = options.get("checkpoint")
    if path is not None:  # (its directory is checked where the chunks run)
        path = checkpoint.check_options(path, None, False, local=False)[0]
    shared = {i: dask.delayed(a) for i, a in enumerate(args) if i not in options["per_problem"]}
    box = None
    if bounds is not None:
        box = _bounds(bounds, np.empty(x0.shape, x0.dtype))
    solve = dask.delayed(_solve, nout=len(_FIELDS), pure=True)
    parts, start = [], 0
    for k, block in enumerate(x0.to_delayed().ravel()):
        stop = start + rows[k]
        chunk_args = tuple(shared[i] if i in shared else a[start:stop] for i, a in enumerate(args))
        chunk_bounds = None if box is None else Bounds(box[0][start:stop], box[1][start:stop])
        chunk_options = options
        if path is not None:  # each chunk is a batch of its own, with its own file
            chunk_options = {**options, "checkpoint": _chunk_checkpoint(path, start, stop)}
        parts.append(
            (rows[k], solve(fun, block, chunk_args, method, jac, chunk_bounds, chunk_options))
        )
        start = stop
    n = x0.shape[1]
    kinds = {
        "x": ((n,), x0.dtype),
        "jac": ((n,), x0.dtype),
        "fun": ((), np.float64),
        "success": ((), bool),
        "message": ((), object),
    }
    result = OptimizeResult()
    for j, name in enumerate(_FIELDS):
        tail, dtype = kinds.get(name, ((), np.int64))
        result[name] = da.concatenate(
            [da.from_delayed(out[j], shape=(size, *tail), dtype=dtype) for size, out in parts]
        )
    return result


def _device(device: Any, fun: Any, vectorized: bool) -> bool:
    """The option ``device``, checked: True for ``"cuda"``."""
    if device is None or device == "cpu":
        return False
    if device != "cuda":
        fail("options['device']", device, "'cpu' or 'cuda'")
    if vectorized:
        raise ValueError(
            "options vectorized and device='cuda' exclude each other: a device batch "
            "evaluates each problem's @cuda.jit(device=True) objective on its own thread"
        )
    from .kernels import cuda as ck

    ck.load()
    if not ck.is_device_function(fun):
        fail(
            "fun",
            fun,
            "a @numba.cuda.jit(device=True) function fun(x, g, *args_b) -> f (it writes the "
            "gradient into g) with device='cuda'",
            TypeError,
        )
    return True


def _per_problem(args: tuple, runs: int, chosen: Any) -> tuple[str, ...]:
    """How each argument reaches a problem: its row (:data:`PER_RUN`) or shared."""
    if chosen is None:
        spec = tuple(
            PER_RUN if isinstance(a, np.ndarray) and a.ndim >= 1 and len(a) == runs else SHARED
            for a in args
        )
        _warn_if_ambiguous(args, spec, runs, stacklevel=5)
        return spec
    picked = _indices(chosen, args)
    _check_rows(args, picked, runs)
    return tuple(PER_RUN if i in picked else SHARED for i in range(len(args)))


def _is_array(a: Any) -> bool:
    return isinstance(a, np.ndarray) or _is_dask(a)


def _warn_if_ambiguous(args: tuple, spec: tuple[str, ...], runs: int, stacklevel: int) -> None:
    # B rows make an argument per-problem; but an array of B values that is as long as
    # another argument's rows may be shared data (the points every problem is fitted
    # at), which a per-problem guess would silently split into one value per problem.
    # (stacklevel: minimize_many's caller's, counted from here.)
    split = [i for i, how in enumerate(spec) if how == PER_RUN and len(args[i].shape) == 1]
    rows = [j for j, a in enumerate(args) if _is_array(a) and runs in a.shape[1:]]
    if split and rows:
        names = ", ".join(f"args[{i}]" for i in split)
        warnings.warn(
            f"{names} (of shape ({runs},)) taken as per-problem, one value per problem, as "
            f"x0 has {runs} rows; but args[{rows[0]}] has rows of {runs} values too: shared "
            "data?  Say which arguments are per-problem with options={'per_problem': [...]} "
            "(this warning then goes).",
            UserWarning,
            stacklevel=stacklevel,
        )


def _check_rows(args: tuple, picked: list[int], runs: int) -> None:
    """Raise ``ValueError`` unless each per-problem argument (NumPy or Dask) has ``runs`` rows."""
    for i in picked:
        shape = getattr(args[i], "shape", ())
        if len(shape) == 0 or shape[0] != runs:
            have = "is not an array" if len(shape) == 0 else f"has {shape[0]} rows"
            raise ValueError(
                f"args[{i}] {have}; a per-problem argument needs one row per problem: "
                f"{runs} (x0's first dimension)"
            )


def _indices(chosen: Any, args: tuple) -> list[int]:
    """The option ``per_problem``, checked: indices into ``args``, sorted."""
    if isinstance(chosen, (str, bytes)) or not isinstance(chosen, Sequence):
        fail("options['per_problem']", chosen, "a sequence of indices into args", TypeError)
    picked = set()
    for i in chosen:
        if (
            isinstance(i, (bool, np.bool_))
            or not isinstance(i, (int, np.integer))
            or not -len(args) <= i < len(args)
        ):
            fail("options['per_problem']", chosen, f"indices into args (0 to {len(args) - 1})")
        picked.add(int(i) % len(args))
    return sorted(picked)


def _bounds(bounds: Any, x: np.ndarray) -> tuple | None:
    """``(lo, hi)`` of shape ``(B, n)`` (validated), or None."""
    if bounds is None:
        return None
    runs, n = x.shape
    pair = (bounds.lb, bounds.ub) if isinstance(bounds, Bounds) else bounds
    if isinstance(pair, tuple) and len(pair) == 2 and any(np.ndim(b) == 2 for b in pair):
        try:
            lo, hi = (np.broadcast_to(np.asarray(b, dtype=np.float64), x.shape) for b in pair)
        except ValueError:
            shapes = tuple(np.shape(b) for b in pair)
            raise ValueError(
                f"bounds: (lo, hi) of shapes {shapes} do not broadcast to x0's {x.shape}"
            ) from None
        box = parse_bounds(Bounds(lo.ravel(), hi.ravel()), runs * n, x.dtype)
    else:  # one problem's bounds, for all
        box = parse_bounds(bounds, n, x.dtype)
        if box is not None:
            box = tuple(np.tile(b, runs) for b in box)
    if box is None:
        return None
    return tuple(np.ascontiguousarray(b.reshape(x.shape)) for b in box)


class _AtBoundary(Exception):
    """The vectorised objective raised (its exception is the cause) at an iteration
    boundary: the batch's state is whole, and is saved before the exception goes on."""


class _Checkpointed:
    """The checkpoint side of a :class:`_Batch`: its state as named arrays, export and
    restore (what :class:`nadam.checkpoint.Checkpointer` asks of a state)."""

    batch: Batch
    out: OptimizeResult
    stage_arrays: np.ndarray | None
    last_f: np.ndarray
    done: np.ndarray

    @property
    def nit(self) -> int:
        """The most iterations a problem has taken (for the checkpointer's messages)."""
        return int(self.batch.ctr[:, NIT].max())

    def export(self) -> dict[str, Any]:
        """Every problem's state, and the answers of those that stopped (copies)."""
        state = {k: v.copy() for k, v in self._arrays().items()}
        state["result.message"] = np.array(self.out.message, dtype=str)
        return state

    def restore(self, saved: dict[str, Any]) -> None:
        """Load an :meth:`export` of this batch, in place; every field is checked
        before anything changes.

        Raises
        ------
        ValueError
            Naming the field that does not fit.
        """
        mine = self.export()
        if set(saved) != set(mine):
            raise ValueError(
                f"state does not match this batch: missing {sorted(set(mine) - set(saved))}, "
                f"unexpected {sorted(set(saved) - set(mine))}"
            )
        for key, value in mine.items():
            got = saved[key]
            kind_ok = got.dtype.kind == "U" if key == "result.message" else got.dtype == value.dtype
            if not isinstance(got, np.ndarray) or got.shape != value.shape or not kind_ok:
                raise ValueError(
                    f"{key} must be an array of shape {value.shape} and dtype {value.dtype}, "
                    f"got {getattr(got, 'shape', type(got).__name__)} {getattr(got, 'dtype', '')}"
                )
        if not np.isfinite(saved["x"]).all():
            raise ValueError("x holds non-finite values")
        if (saved["counters"] < 0).any():
            raise ValueError("counters hold negative values")
        tracker = self.batch.tr
        settings = tracker.copy()  # this call's, as built from its options
        for key, array in self._arrays().items():
            array[...] = saved[key]
        self.out.message = [str(m) for m in saved["result.message"]]
        # As a resumed minimize: the rules' state is the file's, their settings (maxiter,
        # gtol, patience, min_delta, smoothing) this call's, and a problem stopped at the
        # saved maxiter goes on to a larger one.
        state = list(STATE_SLOTS.values())
        settings[:, state] = tracker[:, state]
        tracker[...] = settings
        restore_threshold(tracker)
        below = tracker[:, MAXITER] > self.batch.ctr[:, NIT]
        self.done[self.done & (self.out.status == Status.MAXITER) & below] = False

    def _arrays(self) -> dict[str, np.ndarray]:
        # The batch's arrays by their names in a checkpoint (those it has).
        B, out = self.batch, self.out
        arrays = {
            "x": B.x, "best_x": B.best_x, "best_g": B.best_g, "average": B.avg, "tracker": B.tr,
            "counters": B.ctr, "control": B.ctl, "optimizer.state": B.s, "optimizer.hp": B.hp,
            "optimizer.aux": B.aux, "optimizer.h": B.h, "kept": B.kept,
            "schedule.state": None if B.sched is None else B.sched[2],
            "stages": self.stage_arrays, "last_f": self.last_f, "done": self.done,
            "result.x": out.x, "result.fun": out.fun, "result.jac": out.jac,
            "result.status": out.status, "result.success": out.success,
        }  # fmt: skip
        return {k: v for k, v in arrays.items() if v is not None}

    def _member_limit(self) -> Callable[[str], int]:
        # The most bytes a member may hold: the largest array of the batch's state, or
        # its messages at 1,000 characters each (a crafted file declaring more is refused).
        largest = max(v.nbytes for v in self.export().values())
        return lambda key: max(largest, len(self.batch.x) * 4000) + 4096


class _Batch(_Checkpointed):
    """One :func:`minimize_many` call: the problems' state, their windows, the loop."""

    def __init__(self, fun, x0, args, method, jac, bounds, options):
        x = as_x0(x0)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(
                f"x0 must have shape (B, n): one row of parameters per problem; got shape "
                f"{x.shape} (for one problem, use nadam.minimize or x0[None, :])"
            )
        opts = dict(options or {})
        for key, why in _UNSUPPORTED.items():
            if opts.get(key) is not None and opts.get(key) is not False:
                raise ValueError(f"option {key} is not supported by minimize_many: {why}")
        self.vectorized = check_bool("options['vectorized']", opts.pop("vectorized", False))
        self.device = _device(opts.pop("device", None), fun, self.vectorized)
        # The batch's checkpoint is its own (the first problem's run must not read it).
        path, every, resume = checkpoint.check_options(
            opts.pop("checkpoint", None),
            opts.pop("checkpoint_every", None),
            opts.pop("resume", False),
        )
        chosen = opts.pop("per_problem", None)
        if jac is not True:
            fail("jac", jac, "True: fun returns (f, g)")
        args = args if isinstance(args, tuple) else (args,)
        runs = len(x)
        self.spec = _per_problem(args, runs, chosen)
        self.args, self.fun = args, fun
        box = _bounds(bounds, x)
        if box is not None:
            project(x.reshape(-1), box[0].reshape(-1), box[1].reshape(-1))
        self.x0, self.box = x.copy(), box  # for the answers' check (checked_status)
        first = self._args_of(0)
        # The compiled loop for an @njit objective (its error says why not); none for
        # a vectorised one, whose evaluations are made here, or a device one.
        opts["compiled"] = not (self.vectorized or self.device)
        try:
            self.first = Minimizer(
                fun,
                x[0],
                first,
                method,
                True,
                None if box is None else Bounds(box[0][0], box[1][0]),
                options=opts,
                _stacklevel=4,
            )
        except (TypeError, ValueError) as exc:
            prefix = "option compiled=True: "
            if not str(exc).startswith(prefix):
                raise
            raise type(exc)(
                "minimize_many runs an @njit objective in compiled code, or a vectorised one "
                f"(options={{'vectorized': True}}): {str(exc)[len(prefix) :]}\n"
                f"(problem b receives {_reach(self.args, self.spec, 'row b')})"
            ) from exc.__cause__
        m, opt = self.first, self.first.state.optimizer
        self.settings = m.settings
        slots = list(opt.state)
        from_params = [k for k, name in enumerate(slots) if name in opt.rule.from_params]
        restart_slots = [k for k, name in enumerate(slots) if name in opt.rule.restart]
        form = "vectorized" if self.vectorized else "device" if self.device else "njit"
        self.batch, self.run_loop = _loop(form, fun, m, x, box, from_params, args, self.spec)
        self.stage_arrays, self.windows = _row_windows(self.batch, m, restart_slots, from_params)
        # (A device batch is one launch per call of the loop.)
        self.threads = 1 if self.device else opt.threads or get_threads()
        self.pool: ThreadPoolExecutor | None = None  # during run(), with threads > 1
        self.out = OptimizeResult(
            x=np.empty_like(x),
            fun=np.full(runs, math.nan),
            jac=np.empty_like(x),
            status=np.zeros(runs, np.int64),
            success=np.zeros(runs, bool),
            message=[""] * runs,
        )
        self.last_f = np.full(runs, math.nan)
        self.done = np.zeros(runs, bool)
        self.ckpt = None
        if path is not None:
            meta = {**identity(m.state, m.problem), "runs": runs, "vectorized": self.vectorized}
            self.ckpt = checkpoint.Checkpointer(path, every, meta)
            if resume and os.path.exists(path):
                self.ckpt.resume(self, checkpoint.load(path, self._member_limit()))

    # -- set-up ----------------------------------------------------------------------
    def _args_of(self, rows: Any) -> tuple:
        """The arguments of problem ``rows`` (an index, or an index array of many)."""
        return tuple(a[rows] if how else a for a, how in zip(self.args, self.spec, strict=True))

    # -- the run ---------------------------------------------------------------------
    def run(self) -> OptimizeResult:
        B, o, ckpt = self.batch, self.settings, self.ckpt
        runs = len(B.x)
        codes, fs = np.full(runs, CONTINUE, np.int64), np.full(runs, math.nan)
        active = np.flatnonzero(~self.done)
        bar = None
        if o.disp:
            from tqdm.auto import tqdm

            bar = tqdm(total=runs, initial=runs - active.size, unit="fit", dynamic_ncols=True)
        chunk, pending = 1, []
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        try:
            with Preemption(pending):
                while active.size and not pending:
                    if self.windows is not None:
                        active = self._boundaries(active)
                        if not active.size:
                            break
                    nit = B.ctr[active, NIT]
                    end = self._end(nit, active, 1 if self.vectorized else chunk)
                    B.ctl[active, END] = end
                    start = time.perf_counter()
                    self._call(active, codes, fs)
                    seconds = time.perf_counter() - start
                    self.last_f[active] = fs[active]
                    before = active
                    active = self._stopped(active, codes, fs)
                    if bar is not None:  # (those the windows stopped at boundaries too)
                        bar.update(runs - active.size - bar.n)
                    if (
                        ckpt is not None
                        and ckpt.every
                        and (B.ctr[before, NIT] % ckpt.every == 0).any()
                    ):
                        ckpt.write(self)
                    steps = max(int(np.max(end - nit)), 1)
                    chunk = int(min(max(TARGET_SECONDS / max(seconds / steps, 1e-9), 1), 8 * chunk))
                if ckpt is not None:  # the final state (before the interrupted ones finish)
                    ckpt.write(self)
                for b in active.tolist():  # a signal stopped the batch at this boundary
                    g = B.kept[b] if B.ctr[b, NFEV] else None
                    name = signal.Signals(pending[0]).name
                    self._finish(b, (Status.INTERRUPTED, self.last_f[b], g, name))
        except _AtBoundary as exc:  # the vectorised objective raised: nothing moved
            if ckpt is not None:
                ckpt.write(self)
            raise exc.__cause__ from None
        finally:
            if self.pool is not None:
                self.pool.shutdown()
            if bar is not None:
                bar.update(int(self.done.sum()) - bar.n)
                bar.close()
        out = self.out
        out.update(
            nit=B.ctr[:, NIT].copy(),
            nfev=B.ctr[:, NFEV].copy(),
            njev=B.ctr[:, NJEV].copy(),
            maxiter=o.maxiter,
        )
        return out

    def _end(self, nit: np.ndarray, active: np.ndarray, chunk: int) -> np.ndarray:
        """Where this call of the loop ends for each active problem: after ``chunk``
        steps, at the end of its window, or where a checkpoint is due."""
        end = nit + chunk
        if self.windows is not None:
            window = self.windows[0].plan.window
            end = np.minimum(end, self.stage_arrays[active, START].astype(np.int64) + window)
        if self.ckpt is not None and self.ckpt.every:
            every = self.ckpt.every
            end = np.minimum(end, nit + every - nit % every)
        return end

    def _call(self, active: np.ndarray, codes: np.ndarray, fs: np.ndarray) -> None:
        B = self.batch
        if self.vectorized:
            try:
                F, G = self._evaluate(B.xv[active], active)
            except Exception as exc:
                if not B.ctr[:, NFEV].any():  # its first call: say what it was given
                    reach = _reach(self.args, self.spec, "their rows")
                    exc.add_note(
                        f"(minimize_many: fun got X of shape {B.xv[active].shape}, the rows of "
                        f"the {active.size} problems running, and {reach})"
                    )
                raise _AtBoundary from exc
            B.args = (F, G)
        values = B.values()
        steps = int(np.max(B.ctl[active, END] - B.ctr[active, NIT]))
        # Threads for calls with work enough to pay for their hand-off (~0.1 ms): not the
        # vectorised form's single iterations of a few thousand problems.
        if self.pool is None or len(active) * steps < _THREADED_WORK:
            self.run_loop(0, 1, active, codes, fs, *values)
        else:  # each thread every threads-th problem (the batched driver releases the GIL)
            step = self.threads
            tasks = [
                self.pool.submit(self.run_loop, k, step, active, codes, fs, *values)
                for k in range(step)
            ]
            for task in tasks:
                task.result()
        if self.vectorized:
            B.args = (None, None)
        bad = active[codes[active] == BAD_OUTPUT]
        if bad.size:
            b = int(bad[0])
            raise ValueError(
                f"fun returned a gradient of shape {self._gradient_shape(b)} for problem {b}, "
                f"whose x has shape ({B.x.shape[1]},)"
            )

    def _gradient_shape(self, b: int) -> tuple:
        return np.shape(self.fun(self.batch.xv[b], *self._args_of(b))[1])

    def _evaluate(self, X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectorised objective at the rows ``X`` of the problems ``rows``, checked."""
        return _checked_values(self.fun(X, *self._args_of(rows)), X)

    def _boundaries(self, active: np.ndarray) -> np.ndarray:
        """Let the windows that ended act; the problems still active."""
        plan = self.windows[0].plan
        B = self.batch
        due = active[B.ctr[active, NIT] - self.stage_arrays[active, START] >= plan.window]
        stopped = []
        for b in due.tolist():
            state = self.windows[b].state
            state.last = (self.last_f[b], B.kept[b])
            result = self.windows[b].boundary()
            if result is not None:
                self._finish(b, result)
                stopped.append(b)
        return np.setdiff1d(active, stopped, assume_unique=True) if stopped else active

    def _stopped(self, active: np.ndarray, codes: np.ndarray, fs: np.ndarray) -> np.ndarray:
        """Finish the problems whose loop stopped; the problems still active."""
        B = self.batch
        stopped = active[codes[active] != CONTINUE]
        if not stopped.size:
            return active
        done = []
        for b in stopped.tolist():
            g = B.kept[b]
            result = outcome(int(codes[b]), float(fs[b]), g, int(B.ctr[b, NIT]), (fs[b], g))
            if result[0] == Status.NONFINITE and self.windows is not None:
                if self.windows[b].recover():
                    codes[b] = CONTINUE
                    continue
            self._finish(b, result)
            done.append(b)
        return np.setdiff1d(active, done, assume_unique=True)

    def _evaluate_at(self, b: int, x: np.ndarray, nit: int) -> tuple[float, Any]:
        """Problem ``b``'s objective at ``x`` (an answer, or a point next to it), counted."""
        first = self.first
        if self.vectorized:
            F, G = self._evaluate(readonly(x[None, :]), np.array([b]))
            f, g = float(F[0]), G[0]
        elif self.device:
            f, g = self.run_loop.evaluate(b, x)
        else:
            f, g = first.parts.check(first.parts.evaluate(readonly(x), *self._args_of(b)), nit)
        self.batch.ctr[b, NFEV] += first.parts.fev
        self.batch.ctr[b, NJEV] += 1
        return f, g

    def _finish(self, b: int, result: tuple) -> None:
        """Problem ``b``'s answer, as :class:`nadam.Minimizer` gives it."""
        status, f, g, what = result
        B, o, first = self.batch, self.settings, self.first
        if self.windows is None:
            state = _row_state(B, b, first, None)
        else:
            state = self.windows[b].state
        point = None
        if isinstance(first.state.optimizer, TrainEval):
            point = _evaluation_point(B, b, first)
        x, f, g, again = answer(
            state,
            status,
            f,
            g,
            what,
            return_best=o.return_best,
            stages=None if self.windows is None else self.windows[b],
            evaluation_point=point,
            streamed=False,
        )
        if again:
            f, g = self._evaluate_at(b, x, state.nit)
        if not self.device:
            box = None if self.box is None else (self.box[0][b], self.box[1][b])
            evaluate = partial(self._evaluate_at, b, nit=state.nit)
            status = checked_status(status, self.x0[b], x, f, g, box, evaluate)
        out = self.out
        self.done[b] = True
        out.x[b], out.fun[b], out.jac[b], out.status[b] = x, f, g, status
        out.success[b], out.message[b] = message(
            status,
            gtol=o.gtol,
            patience=o.patience,
            min_delta=o.min_delta,
            what=what,
            nit=state.nit,
        )


def _loop(
    form: str,
    fun: Callable,
    m: Minimizer,
    x: np.ndarray,
    box: tuple | None,
    from_params: list[int],
    args: tuple,
    spec: tuple[str, ...],
) -> tuple[Batch, Callable]:
    """The batch of runs like ``m`` (problem 0's) from the rows of ``x``, and the loop
    that runs them: ``loop(start, step, active, codes, fs, *batch.values())``, for an
    ``"njit"``, a ``"vectorized"`` or a ``"device"`` objective ``fun``."""
    a, opt, o = m.arguments, m.state.optimizer, m.settings
    schedule = m.state.schedule
    observe = schedule is not None and schedule.stateful
    if form == "vectorized":
        # The values (F, G) of the active runs are the arguments, a row each.
        drive = compiled.driver(None, None, opt, 0, observe, False, m.problem.average,
                                o.average_decay)  # fmt: skip
        batch = Batch.of(a, x, box, from_params, (None, None))
        return batch, batched_driver(drive, (PER_ACTIVE, PER_ACTIVE), a.sched is not None)
    if form == "device":
        # Each run's gradient buffer is its row of one more per-run argument.
        batch = Batch.of(a, x, box, from_params, ())
        options = (a.sched is not None, observe, m.problem.average, o.average_decay)
        grads = (np.zeros_like(x), *args)
        return batch, DeviceLoop(fun, opt.variant, (PER_RUN, *spec), options, grads, batch)
    batch = Batch.of(a, x, box, from_params, args)
    return batch, batched_driver(m.loop.driver, spec, a.sched is not None)


def _row_state(batch: Batch, b: int, first: Minimizer, stages: np.ndarray | None) -> RunState:
    """Problem ``b``'s state: views of its rows (what its windows and answer read)."""
    return RunState(
        x=batch.x[b],
        optimizer=first.state.optimizer,  # (the rule and variant, not the state)
        tracker=batch.tr[b],
        counters=batch.ctr[b],
        best_x=None if batch.best_x is None else batch.best_x[b],
        best_g=None if batch.best_g is None else batch.best_g[b],
        average=None if batch.avg is None else batch.avg[b],
        stages=None if stages is None else stages[b],
    )


def _row_windows(
    batch: Batch, first: Minimizer, restart_slots: list[int], from_params: list[int]
) -> tuple[np.ndarray | None, list[Stages] | None]:
    """The state of every problem's windows (a row each), and their :class:`Stages`,
    acting on the problem's rows; ``(None, None)`` for runs without windows."""
    plan = None if first.stages is None else first.stages.plan
    if plan is None:
        return None, None
    stages = np.tile(first.state.stages, (len(batch.x), 1))
    slots = list(first.state.optimizer.state)
    origin = slots.index("origin") if "origin" in slots else None
    s0, aux0 = first.arguments.s.copy(), first.arguments.aux.copy()  # (before any step)

    def hooks(b: int) -> dict[str, Callable]:
        hp, s, aux = batch.hp[b], batch.s[b], batch.aux[b]

        def set_lr(lr: float) -> None:
            hp[rules.LR] = lr

        def restart(whole: bool) -> None:  # nadam.optimizers.restart, on problem b's rows
            for k in range(len(s)) if whole else restart_slots:
                s[k] = batch.x[b] if k in from_params else s0[k]
            aux[...] = aux0

        return {"set_lr": set_lr, "restart": restart}

    windows = [
        Stages(
            plan,
            _row_state(batch, b, first, stages),
            origin=None if origin is None else batch.s[b, origin],
            **hooks(b),
        )
        for b in range(len(batch.x))
    ]
    return stages, windows


def _evaluation_point(batch: Batch, b: int, first: Minimizer) -> Callable[[], np.ndarray]:
    """``point()``: problem ``b``'s evaluation point, for a schedule-free rule."""
    rule, flags = first.state.optimizer.variant[:2]

    def point() -> np.ndarray:
        p = batch.x[b].copy()
        if batch.ctl[b, T] > 0:
            switch_point(rule, flags, batch.hp[b], batch.s[b], p, to_eval=True)
        return p

    return point


def _checked_values(out: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a vectorised objective returned at the rows ``X``: ``(F, G)`` checked, F as
    float64, G in x's dtype."""
    if not (isinstance(out, tuple) and len(out) == 2):
        fail("fun", out, "(F, G) from a vectorized objective", TypeError)
    F, G = np.asarray(out[0]), out[1]
    if F.shape != (len(X),):
        raise ValueError(
            f"fun returned F of shape {F.shape}; expected ({len(X)},): one loss per row of X"
        )
    if not isinstance(G, np.ndarray) or G.shape != X.shape or G.dtype != X.dtype:
        raise ValueError(
            f"fun returned G of shape {np.shape(G)} and dtype {getattr(G, 'dtype', type(G))}; "
            f"expected {X.shape} of {X.dtype} (nadam never mixes precisions)"
        )
    return F.astype(np.float64), np.ascontiguousarray(G)
