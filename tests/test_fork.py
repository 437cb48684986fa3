"""A forked child after a threaded step: a user's ``multiprocessing`` fork pool
works, or fails at once saying what to do; it never hangs and never crashes.

The scenario runs in a subprocess with a time limit (a hang must fail this test,
not stall the session) and numba forced to two threads, so that the parent's
Adam step on 2**16 elements runs the threaded (prange) kernel before the fork.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0  # seconds: the pool's 4 tasks take about one once the workers run

_SCRIPT = r"""
import json, multiprocessing, sys, traceback
import numpy as np
import nadam

N = 2**16

def work(i):
    x = np.full(N, float(i))
    opt = nadam.Adam(x, lr=0.1)
    for _ in range(3):
        opt.step(np.full(N, 1.0 + i))
    return float(x.sum())

if __name__ == "__main__":
    x = np.zeros(N)
    nadam.Adam(x, lr=0.1).step(np.ones(N))  # threaded: N >= PARALLEL_THRESHOLD, 2 threads
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            got = pool.map(work, range(4))
    except Exception as exc:
        print("ERROR " + json.dumps(f"{type(exc).__name__}: {exc}"), flush=True)
        sys.exit(0)
    expected = [work(i) for i in range(4)]  # in the parent, after the pool
    print("RESULT " + json.dumps({"got": got, "expected": expected}), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("layer", [None, "omp"], ids=["default layer", "GNU OpenMP"])
def test_a_fork_pool_after_a_threaded_step_works_or_fails_at_once(tmp_path, layer):
    """Issue 15 item 10: after an Adam step on 2**16 elements with numba running 2
    threads, ``multiprocessing.get_context("fork").Pool(2).map(f, range(4))``, where f
    takes nadam steps on a large array too, returns the right results or raises at once
    a clear exception that mentions fork; today the children die ("fork() called from a
    process already using GNU OpenMP") and the pool hangs."""
    script = tmp_path / "fork_pool.py"
    script.write_text(_SCRIPT)
    env = {
        **os.environ,
        "NUMBA_NUM_THREADS": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
    }
    # The default is TBB where the tbb package is installed (nadam.threads); with GNU
    # OpenMP (no TBB), the children run the serial kernels.
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the pool's workers die with it
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the fork pool hung (killed after {TIMEOUT} s); stderr:\n{err[-2000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"crashed ({proc.returncode}); stderr:\n{err[-3000:]}"
    lines = [ln for ln in out.splitlines() if ln.startswith(("RESULT ", "ERROR "))]
    assert lines, f"no outcome; stdout:\n{out}\nstderr:\n{err[-2000:]}"
    kind, payload = lines[-1].split(" ", 1)
    if kind == "ERROR":
        message = json.loads(payload)
        assert "fork" in message.lower(), f"the error does not say what to do: {message}"
    else:
        result = json.loads(payload)
        assert result["got"] == result["expected"], result
