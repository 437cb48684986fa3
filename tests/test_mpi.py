"""Data-parallel ``minimize`` over MPI (``options={"comm": comm}``, :mod:`nadam.mpi`).

The tests marked ``mpi`` launch ``mpiexec -n 2 python tests/_mpi_worker.py`` once (a
module fixture): every rank runs every scenario of the worker and pickles its outcomes,
and the tests below compare the two ranks with each other and with single-process runs
on the whole data.  They are skipped, saying why, where mpi4py or mpiexec is missing
(``pip install -e ".[mpi]"`` provides both: the ``mpich`` wheel puts ``mpiexec`` next to
the Python of the virtual environment, which is where it is looked for first).
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nadam
import nadam.mpi

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_mpi_worker.py"
RANKS = 2
TIMEOUT = 150  # seconds for one mpiexec launch; the worker's own watchdog fires at 120


def _mpiexec() -> str | None:
    # The mpich wheel installs mpiexec beside the environment's python; prefer it to
    # one on PATH, which may belong to another MPI than the library mpi4py loads.
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
needs_mpi = [
    pytest.mark.mpi,
    pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py is not installed (pip install -e '.[mpi]')"),
    pytest.mark.skipif(
        MPIEXEC is None, reason="no mpiexec beside python or on PATH (pip install -e '.[mpi]')"
    ),
]


def launch(script: Path, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``mpiexec -n 2 python script argv`` with a timeout; fails the test on error."""
    env = {
        **os.environ,
        # Two ranks on a shared machine: one thread each, no oversubscription.
        "NUMBA_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NADAM_MPI_WORKER_TIMEOUT": str(TIMEOUT - 30),
        # MPICH's hydra: start the ranks by fork, never ssh (containers without sshd or
        # a resolvable host name); other launchers ignore it.
        "HYDRA_LAUNCHER": os.environ.get("HYDRA_LAUNCHER", "fork"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [MPIEXEC, "-n", str(RANKS), sys.executable, str(script), *argv]
    try:
        proc = subprocess.run(
            cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:  # the child is killed; hydra cleans up its ranks
        pytest.fail(f"{' '.join(cmd)} timed out after {TIMEOUT} s:\n{exc.stdout}\n{exc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """The outcomes of every worker scenario, one dict per rank."""
    out = tmp_path_factory.mktemp("mpi")
    launch(WORKER, str(out))
    results = []
    for r in range(RANKS):
        with open(out / f"rank{r}.pkl", "rb") as fh:
            results.append(pickle.load(fh))
    size = results[0]["size"]
    assert size == RANKS, (
        f"{MPIEXEC} started ranks of a communicator of size {size}, not {RANKS}: this "
        "mpiexec belongs to another MPI than the library mpi4py loads"
    )
    return results


def ok(result, name: str):
    """A scenario's outcome, failing with the worker's exception if it raised."""
    if isinstance(result, tuple) and result and result[0] == "raised":
        pytest.fail(f"scenario {name} raised {result[1]}: {result[2]}")
    return result


def assert_same(a, b, path: str = "") -> None:
    """Bit-identical outcomes (arrays compared as bytes: equal NaN bits count as equal)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), f"{path} differs between ranks"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# -- no MPI needed ---------------------------------------------------------------------


def quadratic(x):
    return float(x @ x), 2 * x


@pytest.mark.parametrize("comm", [object(), "COMM_WORLD", 1])
def test_comm_without_allreduce_is_a_type_error(comm):
    with pytest.raises(TypeError, match=r"Invalid option comm: .*allowed: an mpi4py communicator"):
        nadam.minimize(quadratic, np.ones(3), jac=True, options={"comm": comm})


def test_comm_is_a_known_option():
    # No "unknown option" warning for comm=None (the single-process default).
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = nadam.minimize(quadratic, np.ones(3), jac=True, options={"comm": None, "lr": 0.1})
    assert res.nit > 0


def test_doctests():
    result = doctest.testmod(nadam.mpi, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# -- under mpiexec -n 2 ----------------------------------------------------------------


class TestTwoRanks:
    pytestmark = needs_mpi

    def test_allreduce_gives_identical_bits_on_every_rank(self, ranks):
        a, b = (ok(r["allreduce_bits"], "allreduce_bits") for r in ranks)
        for n in a:
            assert a[n].tobytes() == b[n].tobytes(), f"Allreduce of {n} values differs"

    @pytest.mark.parametrize(
        "scenario",
        [
            "full_batch_adam",
            "full_batch_sgd_gtol",
            "finite_differences",
            "bounds_and_plateau",
            "tuning_free_full_batch",
        ],
    )
    def test_full_batch_equals_one_process_on_all_rows(self, ranks, scenario):
        for r in ranks:
            out = ok(r[scenario], scenario)
            par, ser = out["mpi"], out["serial"]
            # The tuning-free run ends on its fresh start's windows, whose steps at the
            # optimum follow the gradient's rounding (Adam's steps do not shrink with it):
            # the ranks' sums, rounded otherwise than one process's, make other last steps,
            # a few 1e-9 of x apart, where the loss is the same to its last bits, and the
            # gradients (~1e-10 there) differ by the curvature times that: up to 2e-10
            # (mpich 5.0.2).
            free = scenario == "tuning_free_full_batch"
            xtol, gtol = (1e-7, 1e-9) if free else (1e-10, 1e-10)
            np.testing.assert_allclose(par["x"], ser["x"], rtol=xtol, atol=1e-10)
            np.testing.assert_allclose(par["jac"], ser["jac"], rtol=1e-10, atol=gtol)
            assert abs(par["fun"] - ser["fun"]) <= 1e-10 * max(1.0, abs(ser["fun"]))
            assert (par["nit"], par["status"]) == (ser["nit"], ser["status"])
        if scenario == "full_batch_sgd_gtol":
            assert ranks[0][scenario]["mpi"]["status"] == 0  # converged, not maxiter

    def test_a_sharded_prodigy_steps_as_the_whole_vector(self, ranks):
        outs = [ok(r["sharded_prodigy"], "sharded_prodigy") for r in ranks]
        for out in outs:
            np.testing.assert_allclose(out["shard"], out["whole"], rtol=1e-10)
        # Every rank took the same step size: the same d, bit for bit.
        assert outs[0]["d"].tobytes() == outs[1]["d"].tobytes()

    def test_float32_reduced_in_float32_matches_one_process(self, ranks):
        for r in ranks:
            out = ok(r["full_batch_float32"], "full_batch_float32")
            par, ser = out["mpi"], out["serial"]
            assert par["x"].dtype == np.float32 and par["jac"].dtype == np.float32
            np.testing.assert_allclose(par["x"], ser["x"], rtol=2e-5, atol=2e-5)

    def test_a_communicator_of_one_rank_changes_nothing(self, ranks):
        out = ok(ranks[0]["comm_self"], "comm_self")
        assert_same(out["mpi"], out["serial"])

    @pytest.mark.parametrize(
        "scenario",
        [
            "full_batch_adam",
            "full_batch_sgd_gtol",
            "full_batch_float32",
            "finite_differences",
            "bounds_and_plateau",
            "minibatch",
            "minibatch_resume",
            "callback_stop_on_one_rank",
            "streams_of_unequal_length",
            "shard_sampler_when_batch_is_a_whole_shard",
            "njit_objective_takes_the_python_loop",
            "tuning_free_full_batch",
            "tuning_free_minibatch",
        ],
    )
    def test_results_are_bit_identical_on_every_rank(self, ranks, scenario):
        a, b = (ok(r[scenario], scenario) for r in ranks)
        for key in ("mpi", "njit"):
            if key in a:
                a, b = a[key], b[key]
        assert_same(a, b, scenario)

    def test_minibatches_use_the_documented_per_rank_seeds(self, ranks):
        # A single-process replay of rank_seed(seed, r)'s batches, concatenated per step.
        for r in ranks:
            out = ok(r["minibatch"], "minibatch")
            np.testing.assert_allclose(out["mpi"]["x"], out["replay"]["x"], rtol=1e-10, atol=1e-10)

    def test_tuning_free_minibatches_agree_and_resume_bit_for_bit(self, ranks):
        outs = [ok(r["tuning_free_minibatch"], "tuning_free_minibatch") for r in ranks]
        for out in outs:
            assert out["window"] == 101  # the longer shard's: 501 rows in batches of 5
            assert_same(out["resumed"], out["mpi"])
            assert out["mpi"]["status"] == 6  # the windows stopped it
        assert_same(outs[0]["mpi"], outs[1]["mpi"])

    def test_rank_0_state_resumes_every_rank_bit_for_bit(self, ranks):
        for r in ranks:
            out = ok(r["minibatch_resume"], "minibatch_resume")
            assert out["same_state"], "the exported state differs between ranks"
            assert_same(out["resumed"], out["whole"])

    def test_callback_stop_on_one_rank_stops_every_rank_one_step_later(self, ranks):
        for r in ranks:
            out = ok(r["callback_stop_on_one_rank"], "callback_stop_on_one_rank")
            assert (out["status"], out["nit"]) == (99, 6)

    def test_an_exception_on_one_rank_is_raised_on_every_rank(self, ranks):
        first, last = ranks[0]["error_on_one_rank"], ranks[-1]["error_on_one_rank"]
        assert last == ("raised", "ZeroDivisionError", "boom on the last rank")
        assert first[:2] == ("raised", "RuntimeError") and "other rank" in first[2]
        first, last = ranks[0]["bad_output_on_one_rank"], ranks[-1]["bad_output_on_one_rank"]
        assert first[:2] == ("raised", "ValueError") and "shape" in first[2]
        assert last[:2] == ("raised", "RuntimeError")

    @pytest.mark.parametrize(
        "scenario", ["callback_error_on_one_rank", "callback_error_at_the_last_step"]
    )
    def test_an_exception_in_one_ranks_callback_is_raised_on_every_rank(self, ranks, scenario):
        first, last = ranks[0][scenario], ranks[-1][scenario]
        assert last == ("raised", "ValueError", "callback failed on the last rank")
        assert first[:2] == ("raised", "RuntimeError")
        assert "callback raised an exception on 1 other rank" in first[2]

    def test_ranks_that_disagree_fail_together(self, ranks):
        for r in ranks:
            kind, name, message = r["x0_differs"]
            assert name == "ValueError" and "x0" in message and "option comm" in message
            # maxiter decides when every rank stops: the ranks must agree on it
            kind, name, message = r["maxiter_differs"]
            assert name == "ValueError" and "stopping options" in message, message
            assert "5" in message and "6" in message
            kind, name, message = r["batch_too_large_on_one_rank"]
            assert name == "ValueError" and re.search(r"rank 0 .*batch_size", message)

    def test_a_damaged_checkpoint_or_stream_fails_every_rank(self, ranks):
        for r in ranks:
            kind, name, message = r["corrupt_checkpoint"]
            assert name == "ValueError" and "not a valid nadam checkpoint" in message
            kind, name, message = r["checkpoint_folder_missing_on_rank_0"]
            assert name == "ValueError" and "does not exist" in message
        first, last = ranks[0]["stream_fails_on_one_rank"], ranks[-1]["stream_fails_on_one_rank"]
        assert last == ("raised", "OSError", "cannot read my shard")
        assert first[:2] == ("raised", "RuntimeError") and "stream" in first[2]

    def test_streams_end_together(self, ranks):
        for r in ranks:
            out = ok(r["streams_of_unequal_length"], "streams_of_unequal_length")
            assert (out["status"], out["nit"]) == (4, 5)  # the shortest stream has 5 items

    def test_an_njit_objective_takes_the_python_loop(self, ranks):
        for r in ranks:
            out = ok(r["njit_objective_takes_the_python_loop"], "njit")
            # Numba's sum and exp may round differently from NumPy's: close, not identical.
            np.testing.assert_allclose(out["njit"]["x"], out["plain"]["x"], rtol=1e-12)
            assert out["njit"]["nit"] == out["plain"]["nit"] == 50
            kind, message = out["refused"]
            assert kind == "ValueError" and "comm" in message and "Python loop" in message

    def test_checkpoint_written_by_rank_0_only_and_preemption_is_collective(self, ranks):
        outs = [ok(r["checkpoint_and_preemption"], "checkpoint_and_preemption") for r in ranks]
        first, others = outs[0], outs[1:]
        assert first["writes_until_stop"] >= 2 and first["files"] == ["run.npz"]
        for out in others:
            assert out["writes"] == 0 and out["files"] == []
        for out in outs:
            # SIGTERM reached the last rank only, during step 30: all stop at boundary 32.
            assert (out["stopped"]["status"], out["stopped"]["nit"]) == (5, 32)
            assert "SIGTERM" in out["stopped"]["message"]
            assert_same(out["resumed"], out["whole"])
        assert_same(outs[0]["stopped"], outs[1]["stopped"])


# -- the documentation's example -------------------------------------------------------


def _docs_example() -> str:
    text = (ROOT / "docs" / "mpi.md").read_text()
    m = re.search(r"<!-- skip: runs under mpiexec.*?-->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/mpi.md lost its example (the block after '<!-- skip: runs under mpiexec')"
    return m.group(1)


@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_MPI4PY or MPIEXEC is None, reason="mpi4py or mpiexec missing")
def test_docs_example_runs_under_mpiexec(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(_docs_example())
    proc = launch(script, cwd=tmp_path)
    # mpiexec interleaves the ranks' output freely: find each rank's report anywhere.
    found = re.findall(r"rank (\d+): (fun=\S+ nit=\d+ x\[:3\]=\[[^\]]*\])", proc.stdout)
    assert sorted(int(r) for r, _ in found) == list(range(RANKS)), proc.stdout
    # Every rank prints the same result, which the example checks against one process.
    assert len({report for _, report in found}) == 1, proc.stdout
