"""Per-step cost of the collective in data-parallel ``nadam.minimize`` (``options={"comm"}``).

Run under MPI: ``mpiexec -n 2 python -m mpi4py benchmarks/mpi_overhead.py [--repeats R]``

Each rank holds its own shard of a logistic regression and, in one run, interleaved,
best of R (the ranks start each timing together, after a barrier):

* ``local``      ``Minimizer.run(K)`` on the rank's shard without ``comm`` (every rank
                 at once, so that the machine is loaded alike): the step time;
* ``self``       the same with ``options={"comm": COMM_SELF}``: nadam's side of the
                 collective (copying f and g into the buffer, the flags) and an
                 ``Allreduce`` that has no one to wait for;
* ``comm``       the same with ``options={"comm": COMM_WORLD}``: one in-place
                 ``Allreduce`` of ``n + 6`` values in x's dtype per step added;
* ``allreduce``  that ``Allreduce`` alone, on the same buffer, in a loop.

Reported per problem, with the wall clock and with this process's CPU time (which leaves
out the time a rank was descheduled, most of the noise on a loaded machine, but counts
MPICH's busy-waiting): µs/step of each, the overhead ``comm - local`` in µs/step and as
a fraction of the step, ``comm / local``, and nadam's own part ``self - local``.  What
``comm`` adds beyond ``self`` and ``allreduce`` is waiting: a data-parallel step lasts
as long as its slowest rank's, which on a machine with more runnable processes than
cores can cost far more than the message itself.

Problems: 20 parameters (4,096 and 64 rows per rank: a small model, where latency
counts) and 10^6 parameters (16 rows per rank: a wide model, where the 8 MB message
counts), float64 and float32.
Rank 0 prints; timings on a shared machine are noisy, the ratios less so.
"""

from __future__ import annotations

import argparse
import os
import time

# One core per rank, as MPI jobs are run: no BLAS or numba threads competing with the
# other ranks (set them explicitly to override).
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from nadam import Minimizer  # noqa: E402

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


def problem(n_params: int, rows: int, dtype):
    rng = np.random.default_rng(1 + RANK)
    X = (rng.normal(size=(rows, n_params)) / np.sqrt(n_params)).astype(dtype)
    y = (rng.random(rows) < 0.5).astype(dtype)
    scale = dtype(rows * SIZE)

    def fun(w, X, y):
        # This rank's share of the mean log-loss over all ranks' rows.
        z = X @ w
        p = 1 / (1 + np.exp(-z))
        return float(np.sum(np.logaddexp(0, z) - y * z)) / scale, X.T @ (p - y) / scale

    return fun, (X, y), np.zeros(n_params, dtype)


def best_us_per_step(make, steps: int, repeats: int) -> tuple[dict, dict]:
    """Best wall-clock and CPU µs/step of each variant, timed in turn ``repeats`` times.

    Wall-clock is what a job pays; CPU time (this process's) leaves out the time the
    rank was descheduled, which on a loaded machine is most of the noise, but counts
    MPICH's busy-waiting for the other rank."""
    wall = {name: np.inf for name in make}
    cpu = {name: np.inf for name in make}
    runners = {name: m() for name, m in make.items()}
    for _ in range(repeats):
        for name, run in runners.items():
            COMM.Barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            run(steps)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            # The slowest rank sets the pace of a data-parallel step.
            dt, dc = _max_pair(dt, dc)
            wall[name] = min(wall[name], dt / steps * 1e6)
            cpu[name] = min(cpu[name], dc / steps * 1e6)
    return wall, cpu


def _max_pair(dt: float, dc: float) -> tuple[float, float]:
    both = np.array([dt, dc])
    COMM.Allreduce(MPI.IN_PLACE, both, MPI.MAX)
    return float(both[0]), float(both[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    cases = [
        ("20 params, 4096 rows/rank", 20, 4096, np.float64, 2000),
        ("20 params, 64 rows/rank", 20, 64, np.float64, 5000),
        ("1e6 params, 16 rows/rank", 10**6, 16, np.float64, 20),
        ("1e6 params, 16 rows/rank", 10**6, 16, np.float32, 20),
    ]
    if RANK == 0:
        print(f"{SIZE} ranks; {MPI.Get_library_version().splitlines()[0].strip()}")
        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(
            f"{'problem':26s} {'dtype':7s} {'clock':5s} {'local':>10s} {'self':>10s} "
            f"{'comm':>10s} {'allreduce':>9s} {'overhead':>10s} {'of step':>8s} "
            f"{'comm/local':>10s} {'self-local':>10s}"
        )
    for label, n, rows, dtype, steps in cases:
        fun, args, x0 = problem(n, rows, dtype)
        opts = {"lr": 1e-3, "maxiter": 10**9, "gtol": 0.0}

        def minimizer(comm, fun=fun, args=args, x0=x0, opts=opts):
            def make():
                m = Minimizer(fun, x0, args=args, jac=True, options={**opts, "comm": comm})
                m.run(3)  # warm up: first-call checks, compilation
                return m.run

            return make

        buf = np.zeros(n + 6, dtype)

        def allreduce(buf=buf):
            def run(k):
                for _ in range(k):
                    COMM.Allreduce(MPI.IN_PLACE, buf, MPI.SUM)

            return run

        wall, cpu = best_us_per_step(
            {
                "local": minimizer(None),
                "self": minimizer(MPI.COMM_SELF),
                "comm": minimizer(COMM),
                "allreduce": allreduce,
            },
            steps,
            a.repeats,
        )
        if RANK == 0:
            for clock, t in (("wall", wall), ("cpu", cpu)):
                over = t["comm"] - t["local"]
                print(
                    f"{label:26s} {np.dtype(dtype).name:7s} {clock:5s} {t['local']:10.1f} "
                    f"{t['self']:10.1f} {t['comm']:10.1f} {t['allreduce']:9.1f} {over:10.1f} "
                    f"{over / t['local']:8.1%} {t['comm'] / t['local']:10.3f} "
                    f"{t['self'] - t['local']:10.1f}"
                )
    if RANK == 0:
        print(f"µs/step, best of {a.repeats} interleaved runs; overhead = comm - local")
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
