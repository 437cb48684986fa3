"""Thread control (nadam.threads): the default follows the machine and the launcher,
the option and the function are honoured, the results are the same bits with any
thread count, and the threading layer is TBB where the tbb package is installed."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from conftest import CLASSES, combo_id, grad, opts_variants, problem

import nadam
from nadam import threads
from nadam.kernels import cpu
from nadam.kernels.tiered import Tiered, wait

ROOT = Path(__file__).resolve().parent.parent
N = 3 * cpu.PARALLEL_THRESHOLD + 12_345  # threaded, several blocks, a ragged last one
TWO = threads.get_threads() >= 2 or os.cpu_count() >= 2


@pytest.mark.skipif(not TWO, reason="needs two cores")
@pytest.mark.parametrize("variant", opts_variants(), ids=combo_id)
def test_every_rule_gives_the_same_bits_with_one_and_two_threads(variant, dtype):
    name, kw = variant
    if CLASSES[name].rule.accumulate is not None:
        kw = {**kw, "lr": 1000.0}  # Prodigy: steps that move
    runs = []
    for n_threads in (1, 2):
        x0, a = problem(N, dtype)
        x = x0.copy()
        opt = CLASSES[name](x, threads=n_threads, **kw)
        assert opt.variant[2] is (n_threads == 2) and opt.threads == n_threads
        opt.step(grad(x, a))  # (serial while the threaded step compiles)
        wait()
        for _ in range(3):
            opt.step(grad(x, a))
        if n_threads == 2:
            step = opt.stepper("checked", lengths=False)  # the one its steps run
            assert "parallel" in step.threaded.py_func.__name__ and step.runs[1] >= 2
        runs.append((x, opt.state_dict()))
    (x1, s1), (x2, s2) = runs
    assert x1.tobytes() == x2.tobytes()
    for slot, row in s1["state"].items():
        assert row.tobytes() == s2["state"][slot].tobytes(), slot
    assert np.array_equal(s1["aux"], s2["aux"])


@pytest.mark.skipif(not TWO, reason="needs two cores")
def test_minimize_gives_the_same_bits_with_any_thread_count():
    rng = np.random.default_rng(0)
    c = rng.normal(size=N)

    def fun(x):
        r = x - c
        return float(r @ r), 2 * r

    results = [
        nadam.minimize(fun, np.zeros(N), jac=True, options={"threads": k, "maxiter": 30})
        for k in (1, 2)
    ]
    assert results[0].x.tobytes() == results[1].x.tobytes()
    assert results[0].fun == results[1].fun


def test_the_default_follows_affinity_quota_launchers_and_ranks(monkeypatch):
    for name in (
        "SLURM_CPUS_PER_TASK",
        "OMP_NUM_THREADS",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "PALS_LOCAL_SIZE",
        "SLURM_NTASKS_PER_NODE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: float("inf"))
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 16)
    assert threads.default_threads() == 8
    monkeypatch.setattr(threads, "_cgroup_cpus", lambda: 6.5)  # a quota of 6.5 CPUs
    assert threads.default_threads() == 6
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert threads.default_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # nested levels: the first is ours
    assert threads.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")  # two ranks on the node
    assert threads.ranks_per_node() == 2 and threads.default_threads() == 2
    assert threads.default_threads(ranks=8) == 1  # never below one
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_SIZE")
    assert threads.default_threads() == 1  # numba's pool is the ceiling


def test_set_threads_is_validated_and_honoured():
    before = threads.get_threads()
    try:
        threads.set_threads(1)
        assert threads.get_threads() == 1
        assert not nadam.Adam(np.zeros(N)).variant[2]  # later optimizers: serial
        with pytest.raises(ValueError, match="Invalid threads: 0"):
            threads.set_threads(0)
        with pytest.raises(TypeError, match="Invalid threads: 1.5"):
            threads.set_threads(1.5)
        with pytest.raises(ValueError, match="Invalid threads"):
            nadam.Adam(np.zeros(4), threads=10**6)
        with pytest.raises(ValueError, match="Invalid option threads: -1"):
            nadam.minimize(
                lambda x: (float(x @ x), 2 * x), np.ones(2), jac=True, options={"threads": -1}
            )
    finally:
        threads.set_threads(None)
    assert threads.get_threads() == before


@pytest.mark.skipif(sys.platform != "linux", reason="the tbb wheel's library: Linux")
def test_the_threading_layer_is_tbb_where_the_package_is_installed():
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the tbb package is not installed")
    code = (
        "import numpy as np, numba, nadam\n"
        f"nadam.Adam(np.zeros({N}), threads=2).step(np.ones({N}))\n"
        "print(numba.threading_layer())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    env.pop("NUMBA_THREADING_LAYER", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "tbb", out.stderr[-2000:]


class _Step:
    """A stand-in for a compiled step: records its calls; ``compile`` waits for ``go``."""

    def __init__(self, name, calls, go=None, fails=False):
        self.name, self.calls, self.go, self.fails = name, calls, go, fails
        self.overloads = {}

    def __call__(self, *args):
        self.calls.append(self.name)
        return self.name

    def compile(self, signature):
        if self.go is not None:
            self.go.wait()
        if self.fails:
            raise RuntimeError("no threads here")
        self.overloads[signature] = True


def test_the_serial_step_runs_until_the_threaded_one_is_compiled():
    import threading

    calls, go = [], threading.Event()
    step = Tiered(_Step("threaded", calls, go), _Step("serial", calls))
    args = (np.zeros(3), 1)
    assert step(*args) == "serial" and not step.ready  # compiling in the background
    assert step(*args) == "serial"
    go.set()
    wait()
    assert step.ready and step(*args) == "threaded"
    assert calls == ["serial", "serial", "threaded"]


def test_a_threaded_step_compiled_already_runs_at_once_and_a_failed_one_never():
    calls = []
    threaded = _Step("threaded", calls)
    threaded.overloads[(numba.typeof(np.zeros(3)), numba.typeof(1))] = True
    assert Tiered(threaded, _Step("serial", calls))(np.zeros(3), 1) == "threaded"
    failing = Tiered(_Step("threaded", calls, fails=True), _Step("serial", calls))
    failing(np.zeros(3), 1)
    wait()
    assert not failing.ready and failing(np.zeros(3), 1) == "serial"


class _Clocked(_Step):
    """A compiled stand-in whose calls take ``seconds[0]`` on the fake ``clock``; its
    first call takes ``first`` (a thread pool starting, a cold cache)."""

    def __init__(self, name, calls, clock, seconds, first):
        super().__init__(name, calls)
        self.clock, self.seconds, self.first = clock, seconds, first
        self.overloads[(numba.typeof(np.zeros(3)), numba.typeof(1))] = True  # compiled

    def __call__(self, *args):
        self.clock[0] += self.first if self.name not in self.calls else self.seconds[0]
        return super().__call__(*args)


def test_the_step_that_has_been_faster_of_late_runs():
    calls, clock = [], [0.0]
    assert (Tiered.MARGIN, Tiered.ALPHA) == (0.85, 0.1)
    fast, slow = [1.0], [2.0]
    threaded = _Clocked("threaded", calls, clock, fast, first=100.0)
    step = Tiered(threaded, _Clocked("serial", calls, clock, slow, first=50.0), lambda: clock[0])

    def run(k):
        start = len(calls)
        for _ in range(k):
            assert step(np.zeros(3), 1) == calls[-1]  # the step's own result
        return calls[start:]

    # Each one twice (the first call, slow, not counted); then the faster, and every
    # EXPLORE-th call the other, measured again.
    assert run(4) == ["threaded", "threaded", "serial", "serial"]
    later = run(4 * Tiered.EXPLORE)
    explored = [k for k, name in enumerate(later, start=5) if name == "serial"]
    assert explored == [k for k in range(5, 5 + len(later)) if k % Tiered.EXPLORE == 0]
    assert step.runs == (2 + len(explored), 2 + len(later) - len(explored))
    # The cores get busy: the threaded step slows to 2.5x the serial one; after four
    # such calls (its running log-time 0.9^4 log 1 + (1 - 0.9^4) log 5 = 0.553 is no
    # longer below log 2 + log 0.85 = 0.531) the serial one runs, and the threaded is
    # measured every EXPLORE calls.
    fast[0] = 5.0
    busy = run(3 * Tiered.EXPLORE)
    assert busy[:5] == ["threaded"] * 4 + ["serial"] and busy.count("threaded") == 4 + 3
    # Free again: the next measurement of the threaded step brings it back for good.
    # (1.0 < 0.85 x 2.0; a threaded step not 15 % faster than the serial one stays out.)
    fast[0] = 1.0
    free = run(2 * Tiered.EXPLORE)
    back = free.index("threaded")
    assert back < Tiered.EXPLORE and free[back:].count("serial") == 1
