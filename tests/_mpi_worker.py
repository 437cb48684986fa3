"""The MPI side of ``tests/test_mpi.py``: run under ``mpiexec -n 2``, never by pytest.

Usage: ``mpiexec -n 2 python tests/_mpi_worker.py OUTDIR``.  Every rank runs every
scenario below and pickles a dict ``{scenario: outcome}`` to ``OUTDIR/rank<r>.pkl``;
the tests compare the ranks' outcomes with each other and with single-process runs
computed here on the whole data.  An outcome is whatever the scenario returns, or
``("raised", type name, message)``.  A hang (a rank left in a collective) is turned
into a failure by ``faulthandler`` (which dumps the stacks and exits), never into a
stuck test run.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import sys
import traceback
from pathlib import Path

import numpy as np

faulthandler.dump_traceback_later(
    float(os.environ.get("NADAM_MPI_WORKER_TIMEOUT", "90")), exit=True
)

from mpi4py import MPI  # noqa: E402

import nadam  # noqa: E402
from nadam import Minimizer  # noqa: E402
from nadam.mpi import rank_seed, shard  # noqa: E402
from nadam.sampling import Minibatches  # noqa: E402

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()

# A logistic regression: 1001 rows, split 501 / 500 (unequal shards on purpose).
N, D = 1001, 6
_rng = np.random.default_rng(42)
X = _rng.normal(size=(N, D))
Y = (X @ np.linspace(-1.0, 1.0, D) + 0.5 * _rng.normal(size=N) > 0).astype(np.float64)
ROWS = shard(N, COMM)
OUTDIR = Path(".")  # set by main()


def logistic(scale: float):
    """``(sum of the rows' losses / scale, gradient)``: with ``scale`` = all ranks' rows,
    this rank's share of the mean loss."""

    def fun(w, X, y):
        z = X @ w
        p = 1.0 / (1.0 + np.exp(-z))
        return np.sum(np.logaddexp(0.0, z) - y * z) / scale, X.T @ (p - y) / scale

    return fun


def loss_only(w, X, y):
    z = X @ w
    return np.sum(np.logaddexp(0.0, z) - y * z) / N


def outcome(res) -> dict:
    return {
        "x": np.array(res.x),
        "fun": float(res.fun),
        "jac": np.array(res.jac),
        "nit": int(res.nit),
        "nfev": int(res.nfev),
        "status": int(res.status),
        "message": res.message,
    }


def both(fun, x0, opts, mpi_args=None, serial_args=(X, Y), **kw):
    """The MPI run on this rank's shard and the single-process run on all rows."""
    mpi_args = (X[ROWS], Y[ROWS]) if mpi_args is None else mpi_args
    par = nadam.minimize(fun, x0, args=mpi_args, options={**opts, "comm": COMM}, **kw)
    ser = nadam.minimize(fun, x0, args=serial_args, options=opts, **kw)
    return {"mpi": outcome(par), "serial": outcome(ser)}


# -- scenarios (each returns something picklable) -------------------------------------------


def allreduce_bits():
    """MPICH's in-place Allreduce(SUM) returns the same bits on every rank (several sizes,
    hence several algorithms; both dtypes), for values whose sum rounds differently in
    each order."""
    out = {}
    for dtype in (np.float64, np.float32):
        for n in (1, 7, 1000, 100_003, 1_000_000):
            buf = np.random.default_rng(RANK + 10 * n).normal(size=n) * 10.0 ** (3 * RANK)
            buf = buf.astype(dtype)
            COMM.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            out[n, np.dtype(dtype).name] = buf
    return out


def full_batch_adam():
    return both(logistic(N), np.zeros(D), {"lr": 0.05, "maxiter": 300}, jac=True)


def sharded_prodigy():
    """One parameter vector split over the ranks (Optimizer(comm=...)): Prodigy's sums
    over all elements are summed over the ranks, so the shards step as the whole vector
    does in one process (to rounding: the sums add the ranks' partial sums)."""
    n = 401
    rng = np.random.default_rng(3)
    x0 = rng.uniform(-1.5, 1.5, n)
    a = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n)
    mine = slice(*shard(n, COMM).indices(n)[:2])

    def grad(x, a):
        return a * (x * x + 2) / (x * x + 1) + 0.1 * x

    whole = x0.copy()
    single = nadam.Prodigy(whole, lr=0.5, growth_rate=1.2)
    part = x0[mine].copy()
    sharded = nadam.Prodigy(part, lr=0.5, growth_rate=1.2, comm=COMM)
    for _ in range(60):
        single.step(grad(whole, a))
        sharded.step(grad(part, a[mine]))
    return {"shard": part, "whole": whole[mine], "d": sharded.state_dict()["aux"]}


def full_batch_sgd_gtol():
    # Momentum SGD to gtol: a contraction, so the runs agree to rounding at convergence.
    return both(
        logistic(N),
        np.zeros(D),
        {"lr": 0.5, "momentum": 0.5, "maxiter": 5000, "gtol": 1e-8},
        method="sgd",
        jac=True,
    )


def full_batch_float32():
    return both(
        logistic(N),
        np.zeros(D, np.float32),
        {"lr": 0.05, "maxiter": 200},
        jac=True,
        mpi_args=(X[ROWS].astype(np.float32), Y[ROWS].astype(np.float32)),
        serial_args=(X.astype(np.float32), Y.astype(np.float32)),
    )


def finite_differences():
    return both(loss_only, np.zeros(D), {"lr": 0.05, "maxiter": 50}, jac="3-point")


def bounds_and_plateau():
    lr = nadam.schedules.reduce_on_plateau(0.1, factor=0.5, patience=5)
    return both(
        logistic(N),
        np.zeros(D),
        {"lr": lr, "maxiter": 200, "patience": 20},
        jac=True,
        bounds=[(-0.3, 0.3)] * D,
    )


def comm_self():
    """A communicator of one rank reduces nothing: bit-identical to no comm at all."""
    opts = {"lr": 0.05, "maxiter": 100}
    par = nadam.minimize(
        logistic(N), np.zeros(D), args=(X, Y), jac=True, options={**opts, "comm": MPI.COMM_SELF}
    )
    ser = nadam.minimize(logistic(N), np.zeros(D), args=(X, Y), jac=True, options=opts)
    return {"mpi": outcome(par), "serial": outcome(ser)}


def minibatch():
    """Each rank samples 16 rows of its shard with rank_seed(seed, rank); the single-process
    reference replays the same batches (concatenated) as a stream."""
    b, seed, steps = 16, 7, 150
    opts = {"lr": 0.05, "maxiter": steps, "batch_size": b, "seed": seed}
    res = nadam.minimize(
        logistic(b * SIZE),
        np.zeros(D),
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        options={**opts, "comm": COMM},
    )
    samplers = [
        Minibatches((X[shard_r], Y[shard_r]), b, rank_seed(seed, r))
        for r, shard_r in enumerate(_shards())
    ]

    def stream():
        for _ in range(steps + 1):
            parts = [s.next() for s in samplers]
            yield tuple(np.concatenate(a) for a in zip(*parts, strict=True))

    ref = nadam.minimize(
        logistic(b * SIZE),
        np.zeros(D),
        args=stream(),
        jac=True,
        options={"lr": 0.05, "maxiter": steps},
    )
    return {"mpi": outcome(res), "replay": outcome(ref)}


def _shards():
    class Rank:
        def __init__(self, r):
            self.r = r

        def Get_rank(self):
            return self.r

        def Get_size(self):
            return SIZE

    return [shard(N, Rank(r)) for r in range(SIZE)]


def minibatch_resume():
    """Rank 0's state after 40 steps, loaded on every rank, continues bit for bit."""
    kw = dict(
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        options={"lr": 0.05, "maxiter": 120, "batch_size": 32, "seed": 5, "comm": COMM},
    )
    whole = Minimizer(logistic(32 * SIZE), np.zeros(D), **kw).run()
    first = Minimizer(logistic(32 * SIZE), np.zeros(D), **kw)
    assert first.run(40) is None
    state = COMM.bcast(first.state_dict() if RANK == 0 else None, root=0)
    mine = first.state_dict()
    same_state = all(
        np.array_equal(np.asarray(state[k]), np.asarray(mine[k])) for k in state
    ) and set(state) == set(mine)
    second = Minimizer(logistic(32 * SIZE), np.zeros(D), **kw)
    second.load_state_dict(state)
    resumed = second.run()
    return {"whole": outcome(whole), "resumed": outcome(resumed), "same_state": same_state}


def callback_stop_on_one_rank():
    """StopIteration raised by rank 1's callback only, at nit 5: every rank stops at nit 6."""
    seen = []

    def cb(xk):
        seen.append(1)
        if RANK == SIZE - 1 and len(seen) == 5:
            raise StopIteration

    res = nadam.minimize(
        logistic(N),
        np.zeros(D),
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        callback=cb,
        options={"lr": 0.05, "maxiter": 100, "comm": COMM},
    )
    return {**outcome(res), "calls": len(seen)}


def error_on_one_rank():
    """An exception in rank 1's objective: rank 1 re-raises it, the others raise too."""
    calls = []

    def fun(w, X, y):
        calls.append(1)
        if RANK == SIZE - 1 and len(calls) == 4:
            raise ZeroDivisionError("boom on the last rank")
        return logistic(N)(w, X, y)

    nadam.minimize(
        fun,
        np.zeros(D),
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        options={"lr": 0.05, "maxiter": 100, "comm": COMM},
    )
    return "no exception"


def _callback_fails_on_the_last_rank(at: int, maxiter: int) -> str:
    seen = []

    def cb(xk):
        seen.append(1)
        if RANK == SIZE - 1 and len(seen) == at:
            raise ValueError("callback failed on the last rank")

    nadam.minimize(
        logistic(N),
        np.zeros(D),
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        callback=cb,
        options={"lr": 0.05, "maxiter": maxiter, "comm": COMM},
    )
    return "no exception"


def callback_error_on_one_rank():
    """An exception in rank 1's callback at its 5th call: raised there, a RuntimeError on
    the others, with the next reduction."""
    return _callback_fails_on_the_last_rank(5, 100)


def callback_error_at_the_last_step():
    """The same at the last call (maxiter 10), after which no reduction follows."""
    return _callback_fails_on_the_last_rank(10, 10)


def bad_output_on_one_rank():
    """A gradient of the wrong shape from one rank only: a collective error at step 0."""

    def fun(w, X, y):
        f, g = logistic(N)(w, X, y)
        return f, (g[:-1] if RANK == 0 else g)

    nadam.minimize(
        fun, np.zeros(D), args=(X[ROWS], Y[ROWS]), jac=True, options={"comm": COMM, "maxiter": 5}
    )
    return "no exception"


def x0_differs():
    nadam.minimize(
        logistic(N),
        np.full(D, float(RANK)),
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        options={"comm": COMM, "maxiter": 5},
    )
    return "no exception"


def maxiter_differs():
    """Rank r asks for 5 + r steps: every rank raises before the first step."""
    nadam.minimize(
        logistic(N),
        np.zeros(D),
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        options={"comm": COMM, "lr": 0.05, "maxiter": 5 + RANK},
    )
    return "no exception"


def batch_too_large_on_one_rank():
    rows = slice(0, 10) if RANK == 0 else ROWS
    nadam.minimize(
        logistic(N),
        np.zeros(D),
        args=(X[rows], Y[rows]),
        jac=True,
        options={"comm": COMM, "maxiter": 5, "batch_size": 20},
    )
    return "no exception"


def streams_of_unequal_length():
    """Rank r streams 5 + 2r batches: every rank stops when the shortest ends, at nit 5."""
    n_items = 5 + 2 * RANK
    chunks = np.array_split(np.arange(ROWS.stop - ROWS.start), n_items)
    xs, ys = X[ROWS], Y[ROWS]
    res = nadam.minimize(
        logistic(N),
        np.zeros(D),
        args=((xs[c], ys[c]) for c in chunks),
        jac=True,
        options={"lr": 0.05, "maxiter": 100, "comm": COMM},
    )
    return outcome(res)


def shard_sampler_when_batch_is_a_whole_shard():
    """Rank 0's batch is its whole shard, the others sample: all evaluate at the end."""
    rows = slice(0, 20) if RANK == 0 else ROWS
    res = nadam.minimize(
        logistic(20 * SIZE),
        np.zeros(D),
        args=(X[rows], Y[rows]),
        jac=True,
        options={"lr": 0.05, "maxiter": 30, "batch_size": 20, "seed": 1, "comm": COMM},
    )
    return outcome(res)


def checkpoint_and_preemption():
    """SIGTERM on the last rank only: every rank stops at the same boundary, rank 0 alone
    writes the checkpoint, and resuming (rank 0 reads, all continue) ends bit-identical
    to an uninterrupted run.  The last rank's checkpoint path is in a directory of its
    own, where no file ever appears: resuming does not need the file to be visible there."""
    import signal

    from nadam import checkpoint

    folder = OUTDIR if RANK == 0 else OUTDIR / f"rank{RANK}-only"
    folder.mkdir(exist_ok=True)
    path = str(folder / "run.npz")
    writes = []
    real_save = checkpoint.save

    def counting_save(*a, **k):
        writes.append(1)
        return real_save(*a, **k)

    checkpoint.save = counting_save
    calls = []

    def cb(xk):
        calls.append(1)
        if RANK == SIZE - 1 and len(calls) == 30:
            os.kill(os.getpid(), signal.SIGTERM)

    opts = {"lr": 0.05, "maxiter": 100, "batch_size": 32, "seed": 5, "comm": COMM}
    kw = dict(args=(X[ROWS], Y[ROWS]), jac=True)
    try:
        whole = nadam.minimize(logistic(32 * SIZE), np.zeros(D), options=opts, **kw)
        ckpt = {"checkpoint": path, "checkpoint_every": 20, "resume": True}
        stopped = nadam.minimize(
            logistic(32 * SIZE), np.zeros(D), callback=cb, options={**opts, **ckpt}, **kw
        )
        writes_before = len(writes)
        resumed = nadam.minimize(logistic(32 * SIZE), np.zeros(D), options={**opts, **ckpt}, **kw)
    finally:
        checkpoint.save = real_save
    return {
        "whole": outcome(whole),
        "stopped": outcome(stopped),
        "resumed": outcome(resumed),
        "writes_until_stop": writes_before,
        "writes": len(writes),
        "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
    }


def njit_objective_takes_the_python_loop():
    """comm is only implemented by the Python loop: an @njit objective runs there (the
    same iterates as a plain one), and compiled=True says why it cannot."""
    from numba import njit

    fun = njit(cache=False)(logistic_nb)
    opts = {"lr": 0.05, "maxiter": 50, "comm": COMM}
    kw = dict(args=(X[ROWS], Y[ROWS]), jac=True)
    res = nadam.minimize(fun, np.zeros(D), options=opts, **kw)
    plain = nadam.minimize(logistic_nb, np.zeros(D), options=opts, **kw)
    try:
        nadam.minimize(fun, np.zeros(D), options={**opts, "compiled": True}, **kw)
        refused = "no exception"
    except (TypeError, ValueError) as exc:
        refused = (type(exc).__name__, str(exc))
    return {"njit": outcome(res), "plain": outcome(plain), "refused": refused}


def logistic_nb(w, X, y):
    # Numba-compilable: no np.logaddexp; log1p(exp(-|z|)) + max(z, 0) instead.
    z = X @ w
    p = 1.0 / (1.0 + np.exp(-z))
    loss = np.sum(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0.0) - y * z) / N
    return loss, X.T @ (p - y) / N


def corrupt_checkpoint():
    """A damaged checkpoint that only rank 0 can see: every rank raises ValueError."""
    folder = OUTDIR if RANK == 0 else OUTDIR / f"rank{RANK}-only"
    folder.mkdir(exist_ok=True)
    path = folder / "corrupt.npz"
    if RANK == 0:
        path.write_bytes(b"not a checkpoint")
    COMM.Barrier()
    nadam.minimize(
        logistic(N),
        np.zeros(D),
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        options={"comm": COMM, "checkpoint": str(path), "resume": True},
    )
    return "no exception"


def checkpoint_folder_missing_on_rank_0():
    """Rank 0 writes the checkpoint, so rank 0 checks its folder: every rank raises."""
    folder = OUTDIR / "missing" if RANK == 0 else OUTDIR / f"rank{RANK}-only"
    if RANK:
        folder.mkdir(exist_ok=True)
    nadam.minimize(
        logistic(N),
        np.zeros(D),
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        options={"comm": COMM, "checkpoint": str(folder / "run.npz"), "maxiter": 5},
    )
    return "no exception"


def stream_fails_on_one_rank():
    """The last rank's stream raises before its first item: every rank raises."""

    def batches():
        if RANK == SIZE - 1:
            raise OSError("cannot read my shard")
        while True:
            yield X[ROWS], Y[ROWS]

    nadam.minimize(
        logistic(N), np.zeros(D), args=batches(), jac=True, options={"comm": COMM, "maxiter": 5}
    )
    return "no exception"


def tuning_free_full_batch():
    """No lr, no maxiter: the windows' decisions come from the summed losses, so the ranks
    take them at the same iterations as one process on all rows."""
    return both(logistic(N), np.zeros(D), {}, jac=True)


def tuning_free_minibatch():
    """No lr, no maxiter, minibatches: the candidates are scored on each rank's evaluation
    rows, summed; the window is the longest of the ranks' (shards of 501 and 500 rows make
    windows of 101 and 100 steps at batch 5); rank 0's state mid-run resumes every rank."""
    kw = dict(
        args=(X[ROWS], Y[ROWS]),
        jac=True,
        options={"batch_size": 5, "seed": 2, "comm": COMM},
    )
    fun = logistic(5 * SIZE)
    whole = Minimizer(fun, np.zeros(D), **kw)
    result = whole.run()
    first = Minimizer(fun, np.zeros(D), **kw)
    assert first.run(250) is None  # inside the third window
    state = COMM.bcast(first.state_dict() if RANK == 0 else None, root=0)
    second = Minimizer(fun, np.zeros(D), **kw)
    second.load_state_dict(state)
    window = whole._stages.plan.window
    return {"mpi": outcome(result), "resumed": outcome(second.run()), "window": window}


SCENARIOS = [
    allreduce_bits,
    sharded_prodigy,
    full_batch_adam,
    full_batch_sgd_gtol,
    full_batch_float32,
    finite_differences,
    bounds_and_plateau,
    comm_self,
    minibatch,
    minibatch_resume,
    callback_stop_on_one_rank,
    error_on_one_rank,
    callback_error_on_one_rank,
    callback_error_at_the_last_step,
    bad_output_on_one_rank,
    x0_differs,
    maxiter_differs,
    batch_too_large_on_one_rank,
    streams_of_unequal_length,
    shard_sampler_when_batch_is_a_whole_shard,
    checkpoint_and_preemption,
    njit_objective_takes_the_python_loop,
    corrupt_checkpoint,
    stream_fails_on_one_rank,
    checkpoint_folder_missing_on_rank_0,
    tuning_free_full_batch,
    tuning_free_minibatch,
]


def main(outdir: str) -> None:
    global OUTDIR
    OUTDIR = Path(outdir)
    results: dict = {"size": SIZE}
    names = sys.argv[2:] or [s.__name__ for s in SCENARIOS]
    for scenario in SCENARIOS:
        if scenario.__name__ not in names:
            continue
        try:
            results[scenario.__name__] = scenario()
        except Exception as exc:
            results[scenario.__name__] = ("raised", type(exc).__name__, str(exc))
            if os.environ.get("NADAM_MPI_WORKER_VERBOSE"):
                traceback.print_exc()
        COMM.Barrier()  # a scenario that strands a rank shows up here, under faulthandler
    with open(Path(outdir) / f"rank{RANK}.pkl", "wb") as fh:
        pickle.dump(results, fh)


if __name__ == "__main__":
    main(sys.argv[1])
