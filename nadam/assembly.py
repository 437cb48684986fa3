"""Putting one run together: its state, how it draws arguments, how it names itself
(for MPI and checkpoints), its checkpointer, and which loop it runs.

The front (:class:`nadam.Minimizer`) validates the arguments into a :class:`Problem`
and calls these in order; each takes what it needs and returns a part, so that the
steps can be read, tested and reused (:func:`nadam.minimize_many`) one at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import checkpoint, mpi
from .arguments import describe
from .loop.averaging import WEIGHTS
from .loop.compiled import CompiledLoop, Unsupported, kept_gradient, why_not
from .loop.device import DeviceRun
from .loop.iteration import LoopArguments, Parts, python_loop
from .loop.objective import readonly
from .loop.stages import Plan, Stages, epoch_window, new_stages, scorer
from .loop.state import RunState
from .loop.tracker import new_tracker
from .optimizers import optimizer_class
from .rules import Rule
from .sampling import Minibatches
from .schedules import Schedule
from .settings import Settings

__all__ = [
    "Problem",
    "averaging_weight",
    "checkpointer",
    "choose_loop",
    "draw_function",
    "identity",
    "member_limit",
    "new_state",
    "signature",
    "windows",
]


@dataclass(frozen=True)
class Problem:
    """A run's validated inputs: the iterate, where it lives, the bounds, the
    objective's arguments and the settings.

    Attributes
    ----------
    x : numpy.ndarray
        The validated, projected host copy of ``x0``.
    iterate : array
        The iterate the run updates: ``x``, or its copy on the CUDA device.
    view : array
        A read-only view of the iterate in x0's shape (the device iterate itself on a
        device): what the compiled loop's objective receives, and what the Python
        loop copies for its objective.
    box : tuple or None
        The flat bounds ``(lo, hi)``, on the iterate's side.
    args : tuple
        The objective's fixed arguments (empty with a stream).
    stream : iterator or None
        A stream of per-step arguments.
    settings : Settings
        The loop's options.
    device : DeviceRun or None
        The device side of a ``device="cuda"`` run.
    noisy : bool
        Whether each step sees a minibatch of the rows (``batch_size`` below their
        number; with ``comm``, any ``batch_size``).
    average : str or None
        The averaging in force: option ``average``, or ``"poly"`` for a run that finds
        its own step size on minibatches (:mod:`nadam.loop.stages`).
    """

    x: np.ndarray
    iterate: Any
    view: Any
    box: tuple | None
    args: tuple
    stream: Iterator | None
    settings: Settings
    device: DeviceRun | None
    noisy: bool = False
    average: str | None = None

    @classmethod
    def of(
        cls, x: np.ndarray, box: tuple | None, args: tuple, stream: Iterator | None, o: Settings
    ) -> Problem:
        """Check what the settings exclude with a stream; put x on the device if asked."""
        if stream is not None and o.batch_size is not None:
            raise ValueError(
                "option batch_size cannot be combined with streamed args (an iterator "
                "yields one batch per step already)"
            )
        if stream is not None and o.average is not None:
            raise ValueError(
                "option average cannot be combined with streamed args (an iterator): the "
                "averaged iterate is evaluated on all of args at the end; pass arrays "
                "(with batch_size) instead"
            )
        rows = next((len(a) for a in args if isinstance(a, np.ndarray) and a.ndim >= 1), None)
        noisy = o.batch_size is not None and (
            o.comm is not None or rows is None or o.batch_size < rows
        )
        average = o.average
        if average is None and noisy and o.stages == "adapt":
            average = "poly"
        more = {"noisy": noisy, "average": average}
        if o.device == "cuda":  # x lives on the device from here on: see nadam.loop.device
            best = o.return_best or o.stages is not None
            device = DeviceRun(x, box, best, average is not None)
            return cls(x, device.x, device.x, device.box, args, stream, o, device, **more)
        return cls(x, x, readonly(x), box, args, stream, o, None, **more)


def new_state(rule: Rule, hyper: dict, problem: Problem) -> RunState:
    """The state of a fresh run: the optimizer bound to the iterate, the stopping
    rules, the sampler, the schedule, the best and the averaged iterate."""
    o, x, device = problem.settings, problem.iterate, problem.device
    threads = o.threads
    if threads is None and o.comm is not None:  # the node's cores shared by its ranks
        threads = mpi.node_threads(mpi.check_comm(o.comm))
    opt = optimizer_class(rule)(x, nonfinite="ignore", threads=threads, **hyper)
    lr = hyper.get("lr")
    best = (None, None)
    if o.return_best or (o.stages is not None and problem.stream is None):
        # (The stages judge a full batch's windows by the lowest loss: nadam.loop.stages.)
        best = device.best if device else (np.empty_like(x), np.empty_like(x))
    average = None
    if problem.average is not None:
        average = device.average if device else x.copy()
    sampler = None
    if o.batch_size is not None and o.comm is None:  # with comm: nadam.mpi
        sampler = Minibatches(problem.args, o.batch_size, o.seed)
        if sampler.batch_size == sampler.n_rows:
            sampler = None  # a batch of all rows is the full batch: no sampling
    return RunState(
        x=x,
        optimizer=opt,
        tracker=new_tracker(*o.stopping),
        sampler=sampler,
        schedule=lr if isinstance(lr, Schedule) else None,
        best_x=best[0],
        best_g=best[1],
        average=average,
        history=[] if o.history else None,
    )


_END = object()


def draw_function(state: RunState, problem: Problem) -> Callable[[], tuple | None]:
    """``draw() -> args``: this step's arguments, a minibatch, the next item of a
    stream (None once it is exhausted), or the fixed arguments as they are."""
    stream, args = problem.stream, problem.args
    if state.sampler is not None:
        return state.sampler.next
    if stream is None:
        return lambda: args

    def draw():
        item = next(stream, _END)
        if item is _END:
            if state.last[1] is None:
                raise ValueError("args: the iterator yielded no data")
            return None
        return item if isinstance(item, tuple) else (item,)

    return draw


def averaging_weight(average: str | None, beta: float) -> Callable[[int], float] | None:
    """``weight(s)``: how far the average moves towards the iterate ``s`` steps after it
    (re)started (:mod:`nadam.loop.averaging`), as plain Python; None without an average."""
    if average is None:
        return None
    weight = WEIGHTS[average].py_func
    return lambda steps: weight(steps, beta)


def windows(
    state: RunState,
    problem: Problem,
    parts: Parts,
    view_of: Callable[[Any], Any],
    start: np.ndarray,
) -> Stages | None:
    """The run's windows (:mod:`nadam.loop.stages`), their state set in ``state``; None
    for a run that has none (``lr`` and ``maxiter`` given; a stream of ``args``, whose
    batches cannot be compared).  ``start`` is x0, flat: the minibatches' first
    candidate."""
    o, sampler = problem.settings, state.sampler
    if o.stages is None or problem.stream is not None:
        return None
    adapt = o.stages == "adapt"
    score = rows = None
    if sampler is not None:
        window = o.window
        if window is None:
            window = epoch_window(sampler.n_rows, sampler.batch_size)
            if o.comm is not None:  # from each rank's shard: the ranks take the longest
                window = mpi.agreed(o.comm, window, "max")
        plan = Plan.of(adapt, True, window=window, ftol=o.ftol)
        rows = min(plan.window * sampler.batch_size, sampler.n_rows)
        evaluation = sampler.subset(rows)
        score = scorer(parts.evaluate, parts.check, view_of, evaluation, parts.fev, state)
        if o.comm is not None:  # (for the message: every rank's rows)
            rows = mpi.agreed(o.comm, rows, "sum")
        state.stage_best = np.empty_like(state.x)
    else:
        plan = Plan.of(adapt, False, window=o.window, ftol=o.ftol)
    state.stages = new_stages(state.optimizer.lr if adapt else None)
    origin = state.optimizer.state["origin"] if adapt else None
    return Stages(plan, state, score, origin, rows, start=None if sampler is None else start)


def _hyperparameters(state: RunState) -> dict[str, Any]:
    opt = state.optimizer
    return {k: describe(getattr(opt, k)) for k in sorted(opt.rule.arguments)}


def signature(state: RunState, problem: Problem, callback: bool) -> tuple:
    """What must be equal on every MPI rank for the ranks to compute the same
    iterates: ``(label, value...)`` pairs (:func:`nadam.mpi.data_parallel`)."""
    o, x = problem.settings, problem.x
    digest = hashlib.blake2b(x.data, digest_size=16)  # x0 after projection onto the bounds
    if problem.box is not None:
        for b in problem.box:
            digest.update(np.ascontiguousarray(b).data)
    hyper = sorted((k, repr(v)) for k, v in _hyperparameters(state).items())
    return (
        ("x0 (shape, dtype, bytes) or bounds", x.shape, x.dtype.str, digest.hexdigest()),
        ("method and hyperparameters", state.optimizer.rule.name, hyper),
        (
            "stopping options",
            o.stopping + (o.return_best, problem.average, o.average_decay),
            (o.stages, o.ftol, o.window),
        ),
        ("callback given", callback),
        ("batch_size and seed", o.batch_size, o.seed),
        ("args streamed", problem.stream is not None),
    )


def identity(state: RunState, problem: Problem) -> dict[str, Any]:
    """The header that names a run: what a checkpoint must share with the run
    resuming it (the data themselves are not compared, only their rows)."""
    from . import __version__

    o = problem.settings
    bounds = None
    if problem.box is not None:
        lo, hi = (b if isinstance(b, np.ndarray) else b.copy_to_host() for b in problem.box)
        bounds = hashlib.sha256(lo.tobytes() + hi.tobytes()).hexdigest()[:16]
    return {
        "nadam": __version__,
        "method": state.optimizer.rule.name,
        "shape": list(problem.x.shape),
        "dtype": problem.x.dtype.name,
        "hyper": _hyperparameters(state),
        "batch_size": o.batch_size,
        # n_rows of all ranks with comm (nadam.mpi.ShardSampler).
        "n_rows": None if state.sampler is None else state.sampler.state_dict()["n_rows"],
        "seed": o.seed,
        "bounds": bounds,
        "return_best": o.return_best,
        "average": None if problem.average is None else [problem.average, o.average_decay],
        "stages": o.stages,
    }


def member_limit(x: np.ndarray, maxiter: int) -> Callable[[str], int]:
    """The most bytes a member of this run's checkpoint can hold (an array of x's
    size, or the history of ``maxiter + 1`` iterates), with room for the ``.npy``
    header: a crafted file declaring more is refused before anything is decompressed."""
    array = x.size * x.dtype.itemsize + 4096
    history = (maxiter + 2) * 24 + 4096
    return lambda key: max(history, array) if key == "history" else max(array, 1 << 16)


def checkpointer(state: RunState, problem: Problem) -> checkpoint.Checkpointer | None:
    """The run's checkpointer (None without the option), the state resumed from the
    file if asked (rank 0 reads it and every rank resumes from its copy with MPI)."""
    o = problem.settings
    if o.checkpoint is None:
        return None
    if problem.stream is not None:
        raise ValueError(
            "option checkpoint cannot be combined with streamed args (an iterator): the "
            "position in a stream cannot be saved; pass arrays with batch_size instead"
        )
    writer = o.comm is None or o.comm.Get_rank() == 0
    ckpt = checkpoint.Checkpointer(
        o.checkpoint, o.checkpoint_every, identity(state, problem), writer
    )
    limit = member_limit(problem.x, o.maxiter)

    def load(path: str):
        return checkpoint.load(path, limit)

    if o.comm is not None:
        loaded = mpi.read_checkpoint(o.comm, o.checkpoint, o.resume, load, checkpoint.check_path)
    else:
        loaded = load(o.checkpoint) if o.resume and os.path.exists(o.checkpoint) else None
    ckpt.resume(state, loaded)
    return ckpt


def _first_item(kept: list) -> Any:
    return kept[0]


def choose_loop(
    state: RunState, parts: Parts, problem: Problem, fun: Callable, jac: Any
) -> tuple[Callable, LoopArguments, Callable]:
    """``(loop, its arguments, how to read the gradient it kept)``: the compiled loop
    for an ``@njit`` objective (option ``compiled``), else the Python loop.

    Raises
    ------
    TypeError, ValueError
        With ``compiled=True``, saying why the run cannot be compiled.
    """
    o, view, box = problem.settings, problem.view, problem.box
    sched = state.schedule
    # (The Python loop reads the schedule through the optimizer; its arguments still
    # hold the schedule's arrays, as a batch of runs of this one takes them.)
    arrays = None if sched is None else (sched.kind, sched.params, sched.state)
    python_arguments = LoopArguments.of(state, view, box, sched=arrays)
    python = python_loop(state, parts), python_arguments, _first_item
    if o.compiled is True and o.comm is not None:
        raise ValueError(
            "option compiled=True cannot be combined with option comm: the ranks' sums "
            "are taken between the evaluation and the step, in the Python loop"
        )
    if o.compiled is False or problem.device is not None or o.comm is not None:
        return python
    problem_ = why_not(fun, jac, problem.stream is not None, state.optimizer.lr)
    if problem_ is not None:
        if o.compiled is True:
            raise problem_.error(f"option compiled=True: {problem_}") from None
        return python
    sampler = state.sampler
    draw, args = None, problem.args
    if sampler is not None:
        pairs = tuple(
            (src.reshape(len(src), -1), buf.reshape(len(buf), -1)) for src, buf in sampler.pairs
        )
        draw, args = (pairs, sampler.state, sampler.perm, sampler.idx), sampler.batch
    arguments = LoopArguments.of(
        state,
        view,
        box,
        args,
        draw,
        arrays,
        np.empty(state.x.size, state.x.dtype),
    )
    options = {
        "sampled": 0 if draw is None else len(draw[0]),
        "observe": sched is not None and sched.stateful,
        "callback": parts.callback is not None,
        "average": problem.average,
        "average_beta": o.average_decay,
    }
    loop = CompiledLoop(fun, None if jac is True else jac, state.optimizer, arguments, options)
    try:
        loop.compile()
    except Unsupported as exc:
        if o.compiled is True:
            raise exc.error(f"option compiled=True: {exc}") from exc.__cause__
        return python
    return loop, arguments, kept_gradient(state.x.shape)
