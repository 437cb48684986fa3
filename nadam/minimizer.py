r"""The scipy-style front: :func:`minimize` and :class:`Minimizer`.

:func:`minimize` validates its arguments once, builds one optimizer bound to a
private copy of ``x0``, one :class:`~nadam.loop.state.RunState` and the loop's
parts, lets the extensions wrap them (MPI, checkpoints), and runs the loop
(compiled for an ``@njit`` objective, on the device with ``device="cuda"``, else
Python) until a stopping rule fires.  Each step is sample → objective → track →
step → project, with no conversion, copy or allocation of its own
(``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult

from . import mpi
from ._checks import check_int, fail
from .arguments import (
    as_x0,
    evaluation,
    parse_bounds,
    split_args,
    unwrap_memoized,
    wrap_callback,
)
from .assembly import (
    Problem,
    averaging_weight,
    checkpointer,
    choose_loop,
    draw_function,
    new_state,
    signature,
    windows,
)
from .loop.answer import answer, checked_status
from .loop.compiled import CompiledLoop
from .loop.iteration import LoopArguments, Parts
from .loop.objective import FiniteDifferences, OutputCheck, readonly
from .loop.runner import Runner
from .loop.stages import Stages
from .loop.state import NFEV, NJEV
from .loop.status import message
from .loop.tracker import project, track
from .optimizers import TrainEval, check_switch
from .rules import get_rule
from .schedules import Schedule
from .settings import parse
from .threads import use as use_threads

__all__ = ["Minimizer", "minimize"]


class Minimizer:
    """One :func:`minimize` run: validated arguments, state and the loop.

    ``minimize(...)`` is ``Minimizer(...).run()``.  Build the object yourself to
    run in chunks (``run(max_steps)`` returns None at a chunk's end) and to save
    or restore the run's state between chunks.  Arguments as in :func:`minimize`.

    Attributes
    ----------
    state : RunState
        Everything that changes during the run.
    settings : Settings
        The loop's validated options (without the rule's hyperparameters).
    compiled : bool
        Whether the loop runs in compiled code.

    Examples
    --------
    Run 100 steps, save the state, and finish in a new run as if never stopped:

    >>> import numpy as np
    >>> from nadam import Minimizer
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(500, 3)), rng.normal(size=500)
    >>> def loss(x, X, y):
    ...     r = X @ x - y
    ...     return r @ r / len(y), 2 * X.T @ r / len(y)
    >>> kw = dict(args=(X, y), jac=True, options={"batch_size": 50, "seed": 0, "lr": 0.01})
    >>> first = Minimizer(loss, np.zeros(3), **kw)
    >>> first.run(100) is None
    True
    >>> saved = first.state_dict()        # plain arrays and scalars
    >>> second = Minimizer(loss, np.zeros(3), **kw)
    >>> second.load_state_dict(saved)
    >>> resumed = second.run()
    >>> bool(np.array_equal(resumed.x, Minimizer(loss, np.zeros(3), **kw).run().x))
    True
    """

    def __init__(
        self,
        fun: Callable,
        x0: Any,
        args: Any = (),
        method: str = "adam",
        jac: Any = None,
        bounds: Any = None,
        tol: float | None = None,
        callback: Callable | None = None,
        options: dict | None = None,
        _stacklevel: int = 2,
    ):
        if not callable(fun):
            fail("fun", fun, "a callable", TypeError)
        fun, jac = unwrap_memoized(fun, jac)
        rule = get_rule(method)
        x = as_x0(x0)
        o, hyper, rule = parse(options, rule, tol, jac, _stacklevel + 1)
        self.settings = o
        if isinstance(hyper.get("lr"), Schedule):
            hyper["lr"] = hyper["lr"].copy()  # the run mutates a plateau's state, not yours
        box = parse_bounds(bounds, x.size, x.dtype)
        if box is not None:
            project(x.reshape(-1), *box)
        fixed, stream = split_args(args)
        # The start: the minibatches' first candidate and the answer's check
        # (loop.answer.checked_status).
        self._x0 = x.copy()
        problem = Problem.of(x, box, fixed, stream, o)
        self._problem = problem
        evaluate, fev, source = evaluation(fun, jac, x, o.finite_diff_rel_step, box)
        # A gradient of the user's: the answer's check asks whether it is the loss's.
        self._own_gradient = not isinstance(evaluate, FiniteDifferences)
        call = wrap_callback(callback)
        device = problem.device
        if device is not None and call is not None:
            call = device.host_callback(call)
        self.state = new_state(rule, hyper, problem)
        if isinstance(self.state.optimizer, TrainEval):  # the answer is its average x
            check_switch(rule, self.state.optimizer.arrays[1])
        parts = Parts(
            evaluate=evaluate,
            fev=fev,
            check=OutputCheck(x.shape, x.dtype, source, device is not None),
            draw=draw_function(self.state, problem),
            track=track if device is None else device.track,
            project=project if device is None else device.project,
            weight=averaging_weight(problem.average, o.average_decay),
            callback=call,
        )
        if o.comm is not None:  # data-parallel over MPI: the parts become collective
            parts, self.state.sampler = mpi.data_parallel(
                o.comm,
                parts,
                signature(self.state, problem, call is not None),
                x,
                fixed,
                o.batch_size,
                o.seed,
                stream,
            )
        self.parts = parts
        self._stages = windows(self.state, problem, parts, self._view_of, self._x0.reshape(-1))
        ckpt = checkpointer(self.state, problem)
        self._loop_fn, arguments, kept = choose_loop(self.state, parts, problem, fun, jac)
        disp = o.disp and (o.comm is None or o.comm.Get_rank() == 0)  # one bar, not one per rank
        self._runner = Runner(
            self.state, parts, self._loop_fn, arguments, kept, ckpt, disp, o.maxiter, self._stages
        )

    # -- public ---------------------------------------------------------------------
    @property
    def compiled(self) -> bool:
        """Whether the loop runs in compiled code (:mod:`nadam.loop.compiled`)."""
        return isinstance(self._loop_fn, CompiledLoop)

    @property
    def loop(self) -> Callable:
        """The loop the run calls: a :class:`~nadam.loop.compiled.CompiledLoop`, or the
        Python specialisation of :func:`~nadam.loop.iteration.iterate_template`."""
        return self._loop_fn

    @property
    def arguments(self) -> LoopArguments:
        """The loop's arguments (the run's arrays, as the loop takes them)."""
        return self._runner.arguments

    @property
    def problem(self) -> Problem:
        """The run's validated inputs."""
        return self._problem

    @property
    def stages(self) -> Stages | None:
        """The run's windows (:mod:`nadam.loop.stages`), or None."""
        return self._stages

    def state_dict(self) -> dict[str, Any]:
        """:meth:`RunState.export` of the run's state (call between chunks)."""
        return self.state.export()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:meth:`RunState.restore`: continue the run saved by :meth:`state_dict`."""
        self.state.restore(state)

    def run(self, max_steps: int | None = None) -> OptimizeResult | None:
        """Iterate until a stopping rule fires, or for at most ``max_steps`` steps.

        Returns
        -------
        OptimizeResult or None
            The result once the run has stopped; None if ``max_steps`` steps were
            taken first (the state is then at a boundary: see
            :class:`~nadam.loop.state.RunState`).  Once the run has stopped,
            ``run()`` returns the same result again and evaluates nothing.
        """
        if max_steps is not None:
            max_steps = check_int("max_steps", max_steps, 1)
        if self.state.result is not None:
            return self.state.result
        opt = self.state.optimizer
        if opt.variant[2]:  # threaded: numba's thread count is per calling thread
            use_threads(opt.threads)
        try:
            outcome = self._runner.run(max_steps)
        except IndexError as exc:
            if self._x0.ndim == 0:  # fun indexes x as scipy's x of shape (1,), say
                exc.add_note(
                    "nadam: x0 is a scalar, so fun gets x as a 0-d array (x keeps x0's "
                    "shape; scipy passes shape (1,)): give x0 as [value] to index x[0]"
                )
            raise
        finally:
            if self.parts.end is not None:
                self.parts.end()
        if outcome is None:
            return None
        self.state.result = self._finish(*outcome)
        return self.state.result

    # -- the result -----------------------------------------------------------------
    def _finish(self, status: int, f: float, g: Any, what: str) -> OptimizeResult:
        s, o, opt = self.state, self.settings, self.state.optimizer
        x, f, g, again = answer(
            s,
            status,
            f,
            g,
            what,
            return_best=o.return_best,
            stages=self._stages,
            evaluation_point=opt.evaluation_point if isinstance(opt, TrainEval) else None,
            streamed=self._problem.stream is not None,
        )
        if again:
            f, g = self._evaluate_at(x)
        if self._problem.device is not None:  # the result is on the host, in x0's shape
            x, g = _host(x), _host(g)
        elif self._own_gradient:
            # (A stream's data cannot be evaluated again.)
            evaluate = None if self._problem.stream is not None else self._evaluate_at
            status = checked_status(status, self._x0, x, f, g, self._problem.box, evaluate)
        success, text = message(
            status, gtol=o.gtol, patience=o.patience, min_delta=o.min_delta, what=what, nit=s.nit
        )
        result = OptimizeResult(
            x=np.array(x, copy=True),
            fun=f,
            jac=np.array(g, copy=True),
            nit=s.nit,
            nfev=s.nfev,
            njev=s.njev,
            status=status,
            success=success,
            message=text,
            maxiter=o.maxiter,
        )
        if s.history is not None:
            h = np.array(s.history, dtype=np.float64).reshape(-1, 3)
            result.history = {
                "loss": h[:, 0].copy(),
                "smoothed": h[:, 1].copy(),
                "grad_norm": h[:, 2].copy(),
            }
        if o.disp and (o.comm is None or o.comm.Get_rank() == 0):
            self._runner.close(f)
            print(
                f"{text}\n         Current function value: {f:.6g}\n"
                f"         Iterations: {s.nit}\n         Function evaluations: {s.nfev}\n"
                f"         Gradient evaluations: {s.njev}"
            )
        return result

    def _evaluate_at(self, x: Any) -> tuple[float, Any]:
        # The objective on all its data at x (an answer, or a point next to it), counted.
        s = self.state
        f, g = self.parts.check(self.parts.evaluate(self._view_of(x), *self._problem.args), s.nit)
        s.counters[NFEV] += self.parts.fev
        s.counters[NJEV] += 1
        return f, g

    def _view_of(self, x: Any) -> Any:
        # What the objective receives for x (the iterate, or the best or average one), as
        # in the loop: the Python loop's fun a copy in x0's shape, as scipy passes
        # (nadam.loop.iteration.python_loop); the compiled loop's @njit fun a read-only
        # view (a writable array would be another type, compiled again).
        v = self._problem.view if x is self.state.x else readonly(x)
        return np.copy(v) if isinstance(v, np.ndarray) and not self.compiled else v


def _host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def minimize(
    fun: Callable,
    x0: Any,
    args: Any = (),
    method: str = "adam",
    jac: Any = None,
    bounds: Any = None,
    tol: float | None = None,
    callback: Callable | None = None,
    options: dict | None = None,
) -> OptimizeResult:
    r"""Minimise a scalar function with a first-order stochastic method.

    The interface of :func:`scipy.optimize.minimize`, for Adam and its family:
    the same ``fun(x, *args)`` serves full-batch L-BFGS-B in scipy and
    minibatch Adam here.  Each iteration evaluates the objective and gradient
    at the current iterate :math:`x_k` (on this iteration's batch) and takes
    one step :math:`x_{k+1} = P(\mathrm{update}(x_k, g_k))`, where :math:`P`
    projects onto the bounds.

    Without ``lr``, Adam (the default method) finds its step size, and without
    ``maxiter`` the run stops by itself once converged, within a budget of
    100,000 iterations: ``minimize(fun, x0, args, jac=True)`` is meant to return
    the answer, as L-BFGS-B does.  The run is judged in windows of iterations
    (:mod:`nadam.loop.stages`, ``docs/tuning-free.md``); with ``lr`` and
    ``maxiter`` both given, there are none and every step is the method's own.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> float`` (or ``-> (float, ndarray)`` with ``jac=True``; an
        array of one element stands for its value, as in scipy).
        ``x`` has x0's shape and dtype: a new copy of the iterate at each call,
        as scipy passes, yours to keep (an ``@njit`` ``fun`` in the compiled loop
        gets the iterate itself, read-only).  With ``batch_size``, ``fun`` gets a
        batch of rows of each array in ``args`` and must accept any number of
        rows (it is also evaluated on all rows at the end).
    x0 : array_like
        Initial guess: real numbers, all finite, any shape.  The iterate (and the
        result's ``x``) is float32 if x0 is float32, else float64.
    args : tuple or iterator, optional
        Extra arguments of ``fun`` (and ``jac``).  An iterator (a generator,
        ``iter(list_of_tuples)``) is a stream: each step takes its next item as
        the arguments (a non-tuple item is one argument), and the run stops when
        it is exhausted (or at ``maxiter``).  Anything else that is not a tuple is one argument.
    method : str, default "adam"
        Case-insensitive: "sgd", "rmsprop", "adagrad", "adadelta", "adam",
        "adamw", "adamax", "nadam", "radam", "prodigy", "adamw_schedulefree",
        "sgd_schedulefree", "adam_distance" (:data:`nadam.rules.RULES`).  Adam
        without ``lr`` takes the steps of "adam_distance", whose step size is a
        fraction of the distance each parameter has travelled, cut in half after
        each window without progress.
    jac : {None, True, callable, "2-point", "3-point", "cs"}, optional
        ``True``: ``fun`` returns ``(f, g)``.  A callable: ``jac(x, *args) -> g``.
        Otherwise finite differences of ``fun`` (``None`` means "2-point"; see
        :class:`FiniteDifferences`), which cost n or 2n extra evaluations per
        step.  The gradient must have x0's shape and the iterate's dtype.
    bounds : sequence of (low, high) or scipy.optimize.Bounds, optional
        One pair per element of x0 (``None`` for no bound).  x0 is projected
        onto the box, and so is every iterate.
    tol : float, optional
        Sets ``gtol`` (unless ``options`` gives it), as scipy does.
    callback : callable, optional
        Called after each iteration as ``callback(intermediate_result)`` (an
        ``OptimizeResult`` with ``x``, ``fun``, ``jac``, ``nit``) if its only
        parameter has that name, else as ``callback(xk)``; arrays are copies.
        Raising ``StopIteration`` stops the run (status 99).
    options : dict, optional
        The method's hyperparameters under torch's names (``lr``, ``betas``,
        ``momentum``, ``weight_decay``, ...; see :mod:`nadam.optimizers`),
        where ``lr`` may be a :mod:`nadam.schedules` schedule (copied, not
        modified) or any callable ``t -> lr``, and:

        maxiter : int, optional
            Maximum number of steps.  Not given: the run stops when its windows
            stop making progress, or after 100,000 steps (``result.maxiter``
            reports the budget in force).
        gtol : float, optional
            Stop when :math:`\|g\|_\infty \le` gtol (with bounds, the projected
            gradient :math:`\|P(x - g) - x\|_\infty`, as L-BFGS-B).  Default
            1e-5 when ``lr`` and ``maxiter`` are both given, else 0 (the windows
            decide; a zero gradient still stops the run).
        ftol : float, optional
            The relative progress a window must make: a loss below the lowest
            so far by more than ``ftol`` times its magnitude (a full batch;
            default 1e-10), or a candidate's loss on the evaluation rows below
            the best candidate's by as much (minibatches; default 1e-6).  After
            5 (full batch) or 3 (minibatches) windows in a row without it, the
            run stops (status 6); without ``lr`` each such window also halves the
            step size and returns to the best point, and the run stops only at a
            fresh start: it starts afresh from its best point instead while the
            windows that made progress since it last did lowered the loss by
            more than 1e-5, relative (``docs/tuning-free.md``).
        window : int, optional
            Iterations per window: default 50 with a full batch, whole epochs of
            at least 100 steps (at most 2,000) with minibatches.
        patience : int or None, default None
            Stop when the smoothed loss has not improved for this many
            iterations (off by default).  The smoothed loss is the exponential
            moving average :math:`\bar f_k = \beta \bar f_{k-1} + (1-\beta) f_k`,
            :math:`\bar f_0 = f_0`; it improves when
            :math:`\bar f_k < \bar f^* - \delta |\bar f^*|` for the best
            :math:`\bar f^*` so far.  A reduce-on-plateau schedule observes
            :math:`\bar f_k` too.
        min_delta : float, default 1e-4
            :math:`\delta`, a relative improvement.
        smoothing : float, default 0.9
            :math:`\beta \in [0, 1)`; 0 uses the raw loss.
        return_best : bool, default False
            Return the iterate with the lowest loss evaluated (with batches,
            the lowest *batch* loss: a noisy criterion) instead of the last.
            (A run with windows returns its best point anyway: the lowest loss
            of a full batch, the best candidate of minibatches.)
        average : {None, "polyak", "poly", "ema"}, default None
            Return the averaged iterate (:mod:`nadam.loop.averaging`) with
            ``fun`` and ``jac`` evaluated there: the mean of all iterates, a
            polynomial-decay average (:math:`\gamma = 3`) or an exponential one
            (``average_decay``, default 0.99).  Adam without ``lr`` on
            minibatches uses "poly", restarted at every stage.
        batch_size : int, optional
            Sample this many rows (axis 0) of every array in ``args`` per step,
            epoch by epoch without replacement (:mod:`nadam.sampling`); other
            arguments pass through.  The arrays must have equal lengths.  The
            result's ``fun`` and ``jac`` are then evaluated on all rows at the
            end.  ``batch_size`` equal to the number of rows is the full batch.
        seed : int, optional
            Seed of the sampler: equal seeds give identical runs.  None: fresh
            entropy.
        disp : bool, default False
            Show a progress bar (tqdm: iteration, loss, iterations/s) and
            print a summary at the end.
        history : bool, default False
            Record every evaluation in ``result.history``, a dict of float64
            arrays with one entry per iterate :math:`x_0, x_1, \dots`:
            ``loss`` (the batch loss with ``batch_size``), ``smoothed`` (its
            moving average, as used by ``patience``) and ``grad_norm`` (the
            :math:`\|g\|_\infty` compared with ``gtol``).  Plot it with
            :func:`nadam.plot_history`.  Checkpoints keep it: a resumed run's
            history starts at :math:`x_0` (NaN entries for the iterates
            evaluated before the option was on).
        finite_diff_rel_step : float, optional
            Relative step of the finite differences.
        checkpoint : str or os.PathLike, optional
            File to save the run's whole state to, atomically
            (:mod:`nadam.checkpoint`): every ``checkpoint_every`` iterations,
            when the run stops, and when SIGTERM or SIGINT interrupts it.  Not
            with streamed ``args``.  See ``docs/checkpoints.md``.
        checkpoint_every : int, optional
            Save every this many iterations (None: only at the end and on a
            signal).
        resume : bool, default False
            If the checkpoint file exists, continue from it, bit for bit;
            otherwise start afresh.  A file of another run (method, x0 shape
            or dtype, hyperparameters, batch_size, seed, bounds) is a
            ``ValueError`` naming the file and the mismatch.
        comm : mpi4py communicator, optional
            Data-parallel over MPI (:mod:`nadam.mpi`, ``docs/mpi.md``): every
            rank makes the same call with its own shard of ``args``; ``fun``
            returns this rank's contribution, f and g are summed over the ranks
            (one ``Allreduce`` per step) and every rank gets the same iterates
            and result.  With ``batch_size``, each rank samples that many rows
            of its shard.  Rank 0 writes the checkpoint.  Runs the Python loop.
        compiled : {"auto", True, False}, default "auto"
            Run the whole loop in compiled code (:mod:`nadam.compiled`) when
            ``fun`` (and a callable ``jac``) are numba ``@njit`` functions:
            sampling, objective, stopping rules, schedule, step and projection,
            with Python entered once per chunk of iterations (every iteration
            with a ``callback``).  The iterates, counters and message are
            bit-identical to the Python loop's, and so is ``history``.  "auto"
            compiles when the run allows it (not with finite differences, a
            stream of ``args``, a Python callable ``lr`` or ``comm``); False always runs
            the Python loop; True raises ``TypeError`` or ``ValueError`` saying
            why the run cannot be compiled.  See ``docs/compiled.md``.
        device : {"cpu", "cuda"}, default "cpu"
            "cuda": keep the iterate on the CUDA device for the whole run
            (:mod:`nadam.device`, ``docs/gpu.md``).  x0 is copied there once;
            ``fun`` receives the device iterate itself (writable: do not modify
            it) and returns a host scalar and a device gradient (any
            ``__cuda_array_interface__`` array of x's shape and dtype), ``args``
            pass through as given; the gradient norm, bounds and ``return_best``
            stay on the device, one scalar is read back per step, and the
            result's ``x`` and ``jac`` are host arrays.  Needs ``jac=True`` or a
            ``jac`` callable, and excludes ``batch_size`` (stream device batches
            as ``args`` instead), ``comm`` and ``compiled=True`` (ValueError);
            callbacks get host copies.  Without numba-cuda an ``ImportError``,
            without a device a ``RuntimeError``.

        threads : int, optional
            Threads of the step on large iterates (from
            :data:`nadam.kernels.cpu.PARALLEL_THRESHOLD` float64 elements, twice as
            many float32 ones); default
            :func:`nadam.threads.get_threads` (the process's share of its cores),
            with ``comm`` the node's cores shared among its ranks.  The iterates
            are the same bits with any number.

        SIGTERM and SIGINT (Ctrl-C) during a run (in the main thread) finish
        the current step, save the checkpoint if one is configured, and return
        with status 5; a second signal takes the previous handler's action at
        once.  The previous handlers are restored on return.

        Unknown keys raise an ``OptimizeWarning`` naming them, as in scipy.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x`` (x0's shape), ``fun`` and ``jac`` at ``x``, ``nit`` (steps
        taken), ``nfev`` and ``njev`` (evaluations, finite-difference ones
        and the windows' scoring of candidates included), ``maxiter`` (the
        budget in force), ``status``, ``success`` and ``message`` from
        :data:`MESSAGES`: 0 gtol reached, 1 maxiter reached (success False,
        as scipy), 2 the smoothed loss stalled, 3 a non-finite loss or
        gradient (``x`` is the finite iterate at which it occurred, no step
        taken from it; with windows, the best point: Adam without ``lr``
        restarts from there and gives up only when its step size has fallen
        below 1e-12 of its start), 4 the stream of args ended (``fun``/``jac``
        are those of the last batch, at the iterate before the last step), 5
        interrupted by SIGTERM or SIGINT (success False; the message names the
        signal), 6 the windows stopped making progress (converged), 99 callback
        raised StopIteration.

    Raises
    ------
    ValueError, TypeError
        For a bad argument, at once, naming it; for an objective returning the
        wrong kind of value, at the first evaluation.

    See Also
    --------
    nadam.methods : the same methods for ``scipy.optimize.minimize(method=...)``.
    Minimizer : run in chunks, save and restore the state.

    Examples
    --------
    Least squares with Adam, the gradient computed by hand:

    >>> import numpy as np, nadam
    >>> rng = np.random.default_rng(0)
    >>> A, b = rng.normal(size=(200, 3)), rng.normal(size=200)
    >>> def loss(x, A, b):
    ...     r = A @ x - b
    ...     return r @ r / len(b), 2 * A.T @ r / len(b)
    >>> res = nadam.minimize(loss, np.zeros(3), args=(A, b), jac=True,
    ...                      options={"lr": 0.05, "maxiter": 5000})
    >>> exact = np.linalg.lstsq(A, b, rcond=None)[0]
    >>> bool(np.allclose(res.x, exact, atol=1e-4)), res.status
    (True, 0)

    The same objective on minibatches of 32 rows, with a schedule:

    >>> res = nadam.minimize(loss, np.zeros(3), args=(A, b), jac=True, options={
    ...     "lr": nadam.schedules.cosine(0.05, total_steps=2000), "maxiter": 2000,
    ...     "batch_size": 32, "seed": 1})
    >>> bool(np.allclose(res.x, exact, atol=0.02))
    True
    """
    return Minimizer(
        fun, x0, args, method, jac, bounds, tol, callback, options, _stacklevel=3
    ).run()
