r"""Data-parallel :func:`nadam.minimize` over MPI: ``options={"comm": comm}``.

Every rank of the communicator runs the same :func:`~nadam.minimize` call on its own
shard of the data.  Each step, each rank evaluates its objective and gradient on its
shard; the values are summed over the ranks by **one** ``MPI_Allreduce`` on a buffer
allocated once, and every rank applies the identical update to its copy of ``x``:

.. math::

    f(x) = \sum_{r=0}^{P-1} f_r(x), \qquad g(x) = \sum_{r=0}^{P-1} \nabla f_r(x),

where :math:`f_r` is what ``fun`` returns on rank :math:`r`.  ``fun`` therefore
returns *this rank's contribution*, e.g. its rows' share of the mean loss
(the sum of its rows' losses divided by the number of rows on all ranks).

Why x stays bit-identical on every rank
---------------------------------------
The stopping rules, the schedule, the optimizer and the bounds see only the reduced
``(f, g)``, which ``MPI_Allreduce`` returns with the same bits on every rank (MPICH does,
and the tests check it), and the same ``x0``.  Every rank therefore computes the same
iterates and takes the same stopping decision at the same step: no rank is ever left
waiting in a collective.  At set-up, one ``allgather`` checks that the ranks agree on
everything that decides the iterates (x0, method, hyperparameters, stopping options,
bounds, callback, minibatching) and raises the same ``ValueError`` on every rank if not.

The reduction buffer
--------------------
One buffer of ``n + 6`` elements in x's dtype: the gradient, then the objective and five
control counters (ranks whose objective raised; ranks whose callback raised
``StopIteration``; ranks whose stream of ``args`` is exhausted; ranks that caught
SIGTERM, and SIGINT).  Carrying the control flags in the same message keeps it to one
collective per step and makes every decision collective:

* an exception in ``fun`` on one rank is re-raised on that rank, and a
  ``RuntimeError`` is raised on the others, instead of leaving them waiting;
* so is an exception in ``callback`` on one rank, one step later: the rank holds it
  and goes on to the next reduction, which carries it (or, when the run stops
  first, to one more reduction of a flag at the end of ``run()``);
* ``StopIteration`` from ``callback`` on any rank stops *every* rank at the next
  step (the request travels in that step's reduction), status 99;
* streamed ``args`` are read one item ahead, so that the end of any rank's stream
  ends the run on all ranks at the same step;
* SIGTERM or SIGINT caught by any rank stops every rank at the same iteration
  boundary (:mod:`nadam.checkpoint`'s preemption, made collective).

What nadam cannot make collective is an exception raised on some ranks only outside
``fun`` and ``callback`` (in your code around :func:`~nadam.minimize`, say): run
scripts with ``python -m mpi4py script.py``, which aborts the whole job on an
uncaught exception instead of leaving the other ranks waiting.

The buffer has x's dtype, as everything else in the loop: a float32 run sends half
the bytes of a float64 one and converts nothing (a float64 buffer would double the
message and add a cast of the gradient into and out of it: two more passes over
memory, which cost 2 ms per step at 10⁶ parameters when measured while choosing).
Summing in float64 would buy nothing that matters here: the ranks agree bit for bit
either way (every rank receives the same reduced bits), the gradient is float32 when
it reaches the optimizer anyway, and the float32 rounding of the summed objective
(relative 6e-8) is far below what the stopping rules resolve (``min_delta`` 1e-4).
The reduced gradient is handed to the optimizer in place: a view of the buffer.

Minibatches
-----------
With ``batch_size`` = B, each rank samples B rows per step from its own shard, epoch by
epoch (:mod:`nadam.sampling`), with the seed of rank r derived from the run's seed:
``np.random.SeedSequence(seed, spawn_key=(r,))`` hashed to 64 bits (:func:`rank_seed`);
with ``seed=None`` rank 0 draws the seed and shares it.  The global batch is the union of
the ranks' batches.  The sampler's exported state is the seed and the number of batches
drawn, the same on every rank, so the state of a run (:meth:`nadam.Minimizer.state_dict`,
a checkpoint) is identical on all ranks: rank 0 can write it and every rank can read it
back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from ._checks import fail
from .loop.iteration import Parts
from .loop.runner import SIGNALS
from .sampling import EPOCH, POS, Minibatches, seed_key
from .threads import default_threads

__all__ = [
    "AllreduceEvaluate",
    "ShardSampler",
    "agreed",
    "node_threads",
    "check_comm",
    "data_parallel",
    "rank_seed",
    "read_checkpoint",
    "shard",
]

# Offsets of the control slots after the n gradient elements of the buffer; then one
# slot per signal of nadam.checkpoint.SIGNALS (ranks that caught it).
_F, _ERRORS, _STOPS, _ENDED, _SIGNALS = range(5)
_NCTRL = _SIGNALS + len(SIGNALS)


def check_comm(comm: Any) -> Any:
    """Validate the ``comm`` option: an mpi4py intracommunicator (``MPI.COMM_WORLD``...).

    Raises
    ------
    TypeError
        If ``comm`` has no ``Allreduce`` (not an mpi4py communicator).
    ValueError
        If it is an intercommunicator or ``MPI.COMM_NULL``.
    """
    missing = [
        a for a in ("Allreduce", "allgather", "Get_rank", "Get_size") if not hasattr(comm, a)
    ]
    if missing:
        fail(
            "option comm",
            comm,
            f"an mpi4py communicator (e.g. mpi4py.MPI.COMM_WORLD), with {', '.join(missing)}",
            TypeError,
        )
    try:
        inter = bool(comm.Is_inter()) if hasattr(comm, "Is_inter") else False
        comm.Get_size()
    except Exception as exc:  # MPI.COMM_NULL raises MPI.Exception here
        raise ValueError(f"option comm is not a usable communicator ({comm!r}): {exc}") from None
    if inter:
        raise ValueError(
            f"option comm must be an intracommunicator, got an intercommunicator {comm!r}"
        )
    return comm


def rank_seed(seed: int, rank: int) -> int:
    """The sampler seed of ``rank`` in a run with ``seed``: independent streams per rank.

    ``np.random.SeedSequence(seed, spawn_key=(rank,))`` is NumPy's documented way of
    deriving independent child streams (it is ``SeedSequence(seed).spawn(P)[rank]``);
    its first 64-bit word seeds the rank's :class:`~nadam.sampling.Minibatches`.

    >>> rank_seed(0, 0) != rank_seed(0, 1)
    True
    """
    word = np.random.SeedSequence(seed, spawn_key=(rank,)).generate_state(1, np.uint64)[0]
    return int(word)


def shard(n_rows: int, comm: Any) -> slice:
    """The rows ``[start, stop)`` of this rank when ``n_rows`` rows are split over ``comm``.

    Contiguous, in rank order, as equal as possible (the first ``n_rows % P`` ranks get
    one row more), like :func:`numpy.array_split`.

    >>> class Two:  # a stand-in for a communicator of 2 ranks, this one rank 1
    ...     def Get_rank(self): return 1
    ...     def Get_size(self): return 2
    >>> shard(5, Two())
    slice(3, 5, None)
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    q, r = divmod(int(n_rows), size)
    start = rank * q + min(rank, r)
    return slice(start, start + q + (rank < r))


class ShardSampler(Minibatches):
    """:class:`~nadam.sampling.Minibatches` of one rank, with a rank-independent state.

    Samples exactly like ``Minibatches(args, batch_size, rank_seed(seed, rank))``.
    :meth:`state_dict` reports the run's ``seed``, the number of batches ``draws`` drawn
    so far (the same on every rank: they draw in lockstep) and the rows and batch size
    of the whole communicator, so that one rank's saved state restores every rank:
    :meth:`load_state_dict` recomputes this rank's position from ``draws``.
    """

    def __init__(
        self, args: Any, batch_size: int, seed: int, rank: int, n_rows_all: int, batch_all: int
    ):
        super().__init__(args, batch_size, rank_seed(seed, rank))
        self.seed, self.rank = int(seed), int(rank)
        self.n_rows_all, self.batch_all = int(n_rows_all), int(batch_all)

    def state_dict(self) -> dict[str, Any]:
        """``seed``, ``draws``, ``n_rows`` and ``batch_size`` (of all ranks), as ints."""
        rows = int(self.state[EPOCH]) * self.n_rows + int(self.state[POS])
        return {
            "seed": self.seed,
            "draws": rows // self.batch_size,
            "n_rows": self.n_rows_all,
            "batch_size": self.batch_all,
        }

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the field unless ``state`` is a valid
        :meth:`state_dict` of this sampler (nothing is loaded)."""
        mine = (self.n_rows_all, self.batch_all)
        theirs = (state["n_rows"], state["batch_size"])
        if theirs != mine:
            raise ValueError(
                f"sampler state is for n_rows, batch_size = {theirs}; this sampler has {mine}"
            )
        for key in ("seed", "draws"):
            value = state[key]
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            if not ok or not 0 <= value < 2**63:
                raise ValueError(f"Invalid sampler.{key}: {value!r}; allowed: an int >= 0")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of any rank (this rank's position is recomputed)."""
        self.check_state(state)
        seed, draws = int(state["seed"]), int(state["draws"])
        rows = draws * self.batch_size
        # After R > 0 rows, the stream is at row R of the concatenated epochs:
        # epoch (R-1)//n with pos in 1..n (an epoch is reshuffled only at the next draw).
        epoch = 0 if rows == 0 else (rows - 1) // self.n_rows
        key = seed_key(rank_seed(seed, self.rank))
        super().load_state_dict(
            {
                "key": key,
                "epoch": epoch,
                "pos": rows - epoch * self.n_rows,
                "n_rows": self.n_rows,
                "batch_size": self.batch_size,
            }
        )
        self.seed = seed


class _CollectiveStream(Iterator):
    """A rank's stream of ``args``, read one item ahead so that its end is collective.

    :class:`AllreduceEvaluate` calls :meth:`prefetch` right after this rank's objective
    has used the current item (so a generator that refills one buffer is safe), sends
    "exhausted" in the step's reduction and sets :attr:`ended` from the sum: the next
    ``next()`` raises ``StopIteration`` on every rank as soon as any rank's stream ended.
    """

    def __init__(self, stream: Iterator, comm: Any):
        self._stream, self._comm = stream, comm
        self._item: Any = None
        self._exhausted = False
        self._started = False
        self.ended = False

    def prefetch(self) -> float:
        """Read the next item of this rank's stream; 1.0 if there is none, else 0.0."""
        if not self._exhausted:
            try:
                self._item = next(self._stream)
            except StopIteration:
                self._exhausted, self._item = True, None
        return 1.0 if self._exhausted else 0.0

    def __next__(self) -> Any:
        if not self._started:
            # The first item has no reduction before it to carry the flag: agree once
            # (on the end and on a failing stream alike, so that no rank is left waiting).
            self._started = True
            error = None
            try:
                mine = self.prefetch()
            except Exception as exc:
                error, mine = exc, 0.0
            everyone = self._comm.allgather((mine, error is not None))
            if error is not None:
                raise error
            failed = [r for r, (_, bad) in enumerate(everyone) if bad]
            if failed:
                raise RuntimeError(f"the stream of args raised on rank(s) {failed}")
            self.ended = any(end for end, _ in everyone)
        if self.ended:
            raise StopIteration
        item, self._item = self._item, None
        return item


class AllreduceEvaluate:
    """``evaluate(x, *args) -> (f, g)`` summed over the ranks of ``comm``.

    Wraps a rank-local evaluation (``fun`` with its gradient, or finite differences of
    it).  Per call: the local evaluation, a copy of ``g`` and ``f`` into a buffer
    allocated once (x's dtype), one in-place ``Allreduce(SUM)``, and the reduced gradient
    handed out as a view of the buffer.
    The buffer's control slots make failures, callback stops, stream ends and caught
    signals collective (see the module's notes).

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        The communicator.
    evaluate : callable
        ``evaluate(x, *args) -> (f, g)`` on this rank's data.
    x : numpy.ndarray
        The iterate (its shape and dtype set those of the gradient).
    check : callable, optional
        ``check(out, nit) -> (f, g)``: validates each local output; its exceptions
        become collective like any other.
    caught, pending : list of int, optional
        The signals this rank's handlers caught, and the list the loop stops on.  A
        signal caught by any rank is appended to ``pending`` on every rank after the
        reduction, so all ranks stop at the same iteration boundary.

    Attributes
    ----------
    stream : _CollectiveStream or None
        Prefetched after each local evaluation when ``args`` is a stream.
    stop_pending : bool
        This rank's callback asked to stop: sent with the next reduction.
    stop_now : bool
        Some rank asked to stop in the previous step: the callback raises on every rank.
    """

    def __init__(
        self,
        comm: Any,
        evaluate: Callable,
        x: np.ndarray,
        check: Callable[[Any], tuple[float, np.ndarray]] | None = None,
        caught: list[int] | None = None,
        pending: list[int] | None = None,
    ):
        from mpi4py import MPI  # a comm was given, so mpi4py is imported already

        self.comm, self._evaluate = comm, evaluate
        self._check = check if check is not None else (lambda out, nit: out)
        #: Local evaluations so far (the iteration that messages name).
        self.evaluations = 0
        self._in_place, self._sum = MPI.IN_PLACE, MPI.SUM
        n = x.size
        # In x's dtype (see the module's notes); counts of ranks are exact in float32 too.
        self._buf = np.zeros(n + _NCTRL, x.dtype)
        self._gsum = self._buf[:n].reshape(x.shape)
        self._ctrl = self._buf[n:]
        self._caught = [] if caught is None else caught
        self._pending = [] if pending is None else pending
        self.stream: _CollectiveStream | None = None
        self.stop_pending = False
        self.stop_now = False
        self._callback_error: Exception | None = None

    def __call__(self, x: np.ndarray, *args: Any) -> tuple[float, np.ndarray]:
        # The control slots are zero between calls (a reduction of zeros is zero, and
        # _control zeroes them after a nonzero one): per step only f is written and
        # a flag only when raised, which keeps the Python cost of a step to ~2 µs.
        ctrl = self._ctrl
        error, self._callback_error = self._callback_error, None
        self.evaluations += 1
        if error is None:
            try:
                out = self._evaluate(x, *args)
                # This rank's output, checked before it is summed (a wrong shape would
                # raise inside the copy, on this rank only).
                f, g = self._check(out, self.evaluations - 1)
                np.copyto(self._gsum, g, casting="no")  # _check: g has x's dtype
                ctrl[_F] = f
                if self.stream is not None:
                    ctrl[_ENDED] = self.stream.prefetch()
            except Exception as exc:
                error = exc
        if error is not None:
            # Take part in the reduction anyway, flagging the failure (of fun here, or of
            # the callback since the last reduction): the other ranks must not wait
            # forever in a collective this rank will never call.
            ctrl[_F] = ctrl[_ENDED] = 0.0
            ctrl[_ERRORS] = 1.0
        if self.stop_pending:
            ctrl[_STOPS] = 1.0
            self.stop_pending = False
        if self._caught:
            for k, sig in enumerate(SIGNALS):
                ctrl[_SIGNALS + k] = 1.0 if sig in self._caught else 0.0
        self.comm.Allreduce(self._in_place, self._buf, self._sum)
        f, *flags = ctrl.tolist()
        if any(flags):
            self._control(error, *flags)
        return f, self._gsum

    def _control(self, error, errors, stops, ended, *signals) -> None:
        # Acts on the reduced flags (the same on every rank) and zeroes them.
        self._ctrl[_F + 1 :] = 0.0
        if error is not None:
            raise error
        if errors:
            raise _others_failed("the objective or the callback", errors)
        if stops:
            self.stop_now = True
        if ended:
            self.stream.ended = True
        if not self._pending:
            for sig, count in zip(SIGNALS, signals, strict=True):
                if count:  # some rank caught it: every rank stops after this step
                    self._pending.append(int(sig))
                    break

    def callback(self, callback: Callable) -> Callable:
        """Make ``callback``'s ``StopIteration`` and exceptions collective (see the
        module's notes)."""

        def call(x, f, g, nit):
            if self.stop_now:
                raise StopIteration  # some rank asked at the previous step: all stop now
            try:
                return callback(x, f, g, nit)
            except StopIteration:
                self.stop_pending = True
            except Exception as exc:
                # Raised now, it would strand the other ranks in their next reduction:
                # held until then (or end()), and raised on every rank there.
                self._callback_error = exc

        return call

    def end(self) -> None:
        """At the end of every ``run()`` call, on every rank: one reduction of a flag, so
        that a callback's exception after the last reduction still stops every rank
        (this rank raises it, the others a ``RuntimeError``)."""
        flag = np.array([0.0 if self._callback_error is None else 1.0])
        self.comm.Allreduce(self._in_place, flag, self._sum)
        error, self._callback_error = self._callback_error, None
        if error is not None:
            raise error
        if flag[0]:
            raise _others_failed("the callback", flag[0])


def node_threads(comm: Any) -> int:
    """The default threads of one rank: :func:`nadam.threads.default_threads` shared
    among the ranks of ``comm`` that run on this node (found by the communicator, not
    from the launcher's environment)."""
    from mpi4py import MPI  # a communicator was given: mpi4py is there

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return default_threads(node.Get_size())
    finally:
        node.Free()


def agreed(comm: Any, value: int, how: str) -> int:
    """The largest (``how="max"``) or the sum (``"sum"``) of the ranks' int ``value``, on
    every rank: what each rank derives from its own shard (a window's length, a number of
    rows) and the ranks must share."""
    from mpi4py import MPI  # a communicator was given: mpi4py is there

    return int(comm.allreduce(int(value), op={"max": MPI.MAX, "sum": MPI.SUM}[how]))


def _others_failed(what: str, count: float) -> RuntimeError:
    # What the ranks that did not fail raise: the failing ones raise their own.
    return RuntimeError(
        f"{what} raised an exception on {int(count)} other rank(s) of the communicator "
        "(see their tracebacks); every rank stops"
    )


def data_parallel(
    comm: Any,
    parts: Parts,
    signature: tuple,
    x: np.ndarray,
    args: tuple,
    batch_size: int | None,
    seed: int | None,
    stream: Iterator | None,
) -> tuple[Parts, Minibatches | None]:
    """Make a run's loop data-parallel over ``comm``: returns its wrapped parts and
    the sampler of this rank's shard (None: every rank's batch is its whole shard).

    Called by every rank on its own run.  One ``allgather`` (the only set-up
    collective) checks that the ranks agree on ``signature`` (what decides the
    iterates: x0, method, hyperparameters, stopping options, bounds, callback,
    minibatching; pairs ``(label, value...)``) and collects their shard sizes;
    then the evaluation becomes an :class:`AllreduceEvaluate`, the callback and a
    stream of ``args`` become collective, and signals stop every rank at the same
    boundary.

    Raises
    ------
    TypeError, ValueError
        On every rank, if ``comm`` is not a communicator, the ranks disagree, or any
        rank cannot sample its shard.
    """
    comm = check_comm(comm)
    rank = comm.Get_rank()
    problem, sampler, n_rows = "", None, 0
    if batch_size is not None:
        if seed is None:  # rank 0's draw is shared below: one seed for the whole run
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
        try:  # built here, where a failure can be shared instead of stranding the others
            seed_key(seed)  # validates seed, with its own message
            sampler = ShardSampler(args, batch_size, seed, rank, 0, 0)
            n_rows = sampler.n_rows
        except (TypeError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
    mine = (signature, n_rows, batch_size, seed, problem)
    everyone = comm.allgather(mine)

    for r, (_, _, _, _, msg) in enumerate(everyone):
        if msg:
            raise ValueError(f"option comm: rank {r} cannot sample its args: {msg}")
    reference = everyone[0][0]
    for r, (sig, *_rest) in enumerate(everyone):
        for (label, *theirs), (_, *ours) in zip(sig, reference, strict=True):
            if theirs != ours:
                raise ValueError(
                    f"option comm: rank {r} and rank 0 disagree on {label} "
                    f"({theirs!r} vs {ours!r}); every rank must call minimize with the same "
                    "x0, method, options (but its own args), bounds and callback "
                    "(e.g. x0 = comm.bcast(x0, root=0))"
                )

    if batch_size is not None:
        if all(e[2] == e[1] for e in everyone):
            sampler = None  # every rank's batch is its whole shard: the full batch
        else:
            # A sampler on every rank (even one whose batch is all its rows), so that
            # the final full-data evaluation happens on all ranks or on none.
            sampler.n_rows_all = sum(e[1] for e in everyone)
            sampler.batch_all = sum(e[2] for e in everyone)
            if seed != everyone[0][3]:  # seed=None: take rank 0's
                sampler.load_state_dict(
                    {
                        "seed": everyone[0][3],
                        "draws": 0,
                        "n_rows": sampler.n_rows_all,
                        "batch_size": sampler.batch_all,
                    }
                )

    # The signal handlers fill their own list; the loop stops on `pending`, which the
    # reductions fill on every rank at once.
    caught: list[int] = []
    reducer = AllreduceEvaluate(
        comm, parts.evaluate, x, check=parts.check, caught=caught, pending=parts.pending
    )
    callback, end = parts.callback, None
    if callback is not None:  # the same on every rank (the signature): so is the end()
        callback, end = reducer.callback(callback), reducer.end
    draw = parts.draw
    if sampler is not None:
        draw = sampler.next
    elif stream is not None:
        reducer.stream = collective = _CollectiveStream(stream, comm)

        def draw():
            try:
                item = next(collective)
            except StopIteration:
                return None
            return item if isinstance(item, tuple) else (item,)

    wrapped = replace(parts, evaluate=reducer, draw=draw, callback=callback, caught=caught, end=end)
    return wrapped, sampler


def read_checkpoint(
    comm: Any, path: str, resume: bool, load: Callable, check_path: Callable[[str], None]
) -> tuple[dict, dict] | None:
    """Rank 0 reads the checkpoint ``path`` (if ``resume`` and it exists) with ``load``;
    every rank gets it.

    One read of the file per job rather than one per rank (thousands of ranks opening
    one file is a metadata storm on a parallel file system), and it works with a path
    that only rank 0 can see.  Rank 0 also checks that the path can be written
    (``check_path``).  Errors are raised on every rank alike.

    Returns
    -------
    (state, meta) or None
        As ``load``; None where there is nothing to resume.
    """
    from mpi4py.util import pkl5  # pickle-5 messages: no size limit, no extra copies

    loaded, error, problem = None, None, None
    if comm.Get_rank() == 0:
        try:
            check_path(path)
            if resume and os.path.exists(path):
                loaded = load(path)
        except (OSError, ValueError) as exc:
            error, problem = exc, (isinstance(exc, ValueError), str(exc))
    loaded, problem = pkl5.Intracomm(comm).bcast((loaded, problem), root=0)
    if error is not None:
        raise error  # rank 0: the original, with its traceback
    if problem is not None:
        value_error, message = problem
        raise (ValueError if value_error else OSError)(f"on rank 0: {message}")
    return loaded
