r"""How many threads nadam's CPU kernels use, and which threading layer runs them.

A threaded kernel is worth its threads only while it has the cores to itself: a
parallel region waits for its slowest thread, and on a shared machine a thread that the
scheduler has put aside costs a time slice (milliseconds) where the whole step would
take microseconds.  So nadam

* runs a kernel threaded only from :data:`nadam.kernels.cpu.PARALLEL_THRESHOLD`
  float64 elements up, the same bytes of float32 (the measured crossover,
  ``benchmarks/crossover.py``);
* uses, by default, the cores this process may run on and its share of them
  (:func:`default_threads`): its CPU affinity and cgroup quota, ``SLURM_CPUS_PER_TASK``,
  ``OMP_NUM_THREADS``, and the cores of the node divided among the MPI ranks on it;
* prefers numba's TBB threading layer, which degrades gracefully when its threads do
  not get their cores (its work stealing lets the threads that run do the work), where
  OpenMP's threads wait for each other: measured with ``benchmarks/contention.py``,
  a threaded Adam step of 10⁶ elements beside a busy process took 1.0x the time of a
  serial one with TBB and 8.6x with GNU OpenMP.  TBB is also safe to fork and to call
  from several threads at once.  pip installs TBB's library where numba does not look
  for it: :func:`load_tbb` loads it first, so that numba's own preference (TBB, then
  OpenMP, then its work queue) finds it.

:func:`set_threads` sets the number for the process (None: the default again); the
option ``threads`` of the optimizer classes and of :func:`nadam.minimize` sets it for
one optimizer or run.  Results are the same bits with any number of threads.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from functools import cache
from pathlib import Path

from ._checks import check_int

__all__ = [
    "default_threads",
    "get_threads",
    "load_tbb",
    "ranks_per_node",
    "set_threads",
    "threaded_ok",
]

_LIBRARIES = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}
_setting: int | None = None
_loaded: bool | None = None
_forked_from_gnu_openmp = False


def _after_fork_in_child() -> None:
    # GNU OpenMP cannot run a parallel region in a child forked after the parent ran
    # one ("fork() called from a process already using GNU OpenMP, this is unsafe"):
    # such a child runs the serial kernels (the same bits).  TBB and the work queue
    # have no such limit.
    global _forked_from_gnu_openmp
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # the parent never started its threads
        return
    if layer == "omp":
        from numba.np.ufunc import omppool

        _forked_from_gnu_openmp = omppool.openmp_vendor == "GNU"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def threaded_ok() -> bool:
    """Whether threaded kernels may run in this process (not in a child forked from a
    parent that ran GNU OpenMP threads)."""
    return not _forked_from_gnu_openmp


def load_tbb() -> bool:
    """Load the TBB library of the ``tbb`` package (if installed) before numba starts its
    threads, so that numba's threading layer is TBB.  Returns whether it is loaded.

    Does nothing where numba finds TBB itself (a conda environment), where the ``tbb``
    package is not installed, or once numba's threads have started (the layer is
    chosen then): numba then runs OpenMP or its work queue, as without nadam.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    _loaded = False
    name = _LIBRARIES.get(sys.platform)
    if name is None or os.environ.get("NUMBA_THREADING_LAYER"):
        return False  # (an explicit choice of layer is the user's)
    for path in _candidates(name):
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _loaded = True
        break
    return _loaded


def _candidates(name: str) -> list[Path]:
    # Where pip puts the package's library: <prefix>/lib of the environment it was
    # installed into (the venv, the user base), found from the package's record.
    from importlib import metadata

    try:
        files = metadata.files("tbb") or []
        dist = metadata.distribution("tbb")
    except metadata.PackageNotFoundError:
        return []
    return [Path(dist.locate_file(f)).resolve() for f in files if Path(str(f)).name == name]


def _cgroup_cpus() -> float:
    # The CPU quota of the process's cgroup (v2: cpu.max "quota period"; v1:
    # cpu.cfs_quota_us / cpu.cfs_period_us); inf without one.
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return math.inf if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return math.inf if quota <= 0 else quota / period
    except (OSError, ValueError):
        return math.inf


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    # OMP_NUM_THREADS may be a list ("4,2": nested levels); the first is ours.
    head = value.split(",")[0]
    return int(head) if head.isdigit() and int(head) > 0 else None


def ranks_per_node() -> int:
    """The MPI ranks that share this node, from the launcher's environment (Open MPI,
    MPICH/Hydra, Intel MPI, Cray PALS, SLURM's ``srun``); 1 outside MPI."""
    for name in (
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "PALS_LOCAL_SIZE",
        "SLURM_NTASKS_PER_NODE",
    ):
        ranks = _env_int(name)
        if ranks is not None:
            return ranks
    return 1


def default_threads(ranks: int | None = None) -> int:
    """The threads a kernel uses unless told otherwise: the CPUs this process may use
    (its affinity, its cgroup's quota rounded down, ``SLURM_CPUS_PER_TASK``,
    ``OMP_NUM_THREADS``), divided among the ``ranks`` MPI ranks on the node (default:
    :func:`ranks_per_node`), at most numba's ``NUMBA_NUM_THREADS``, at least 1."""
    import numba

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota < math.inf:
        cpus = min(cpus, max(1, int(quota)))
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        limit = _env_int(name)
        if limit is not None:
            cpus = min(cpus, limit)
    share = max(1, cpus // (ranks_per_node() if ranks is None else max(1, ranks)))
    return max(1, min(share, numba.config.NUMBA_NUM_THREADS))


def set_threads(n: int | None) -> None:
    """Use ``n`` threads in nadam's CPU kernels from now on (None: :func:`default_threads`).

    Raises
    ------
    TypeError, ValueError
        Unless ``n`` is None or an int from 1 to numba's ``NUMBA_NUM_THREADS``.
    """
    global _setting
    _setting = check_threads("threads", n)


def get_threads() -> int:
    """The threads nadam's CPU kernels use now (:func:`set_threads`, or the default)."""
    return _default() if _setting is None else _setting


@cache
def _default() -> int:
    # Read once per process: the affinity and the quotas do not change under a run.
    return default_threads()


def check_threads(label: str, n: int | None) -> int | None:
    """``n`` if it is None or a valid number of threads, else raise naming ``label``."""
    import numba

    return check_int(label, n, 1, numba.config.NUMBA_NUM_THREADS, allow_none=True)


def use(n: int) -> None:
    """Let the next threaded kernel in this thread run on ``n`` threads (numba's count
    is per calling thread)."""
    import numba

    load_tbb()  # before numba's threads start (this may start them)
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
