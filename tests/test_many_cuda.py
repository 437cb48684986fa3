"""``minimize_many(..., options={"device": "cuda"})``: each problem's entry is what
:func:`nadam.minimize` returns for it alone.

One CUDA thread per problem runs the compiled loop's own parts, retargeted to the device
(:func:`nadam._specialise.retarget`).  The reference is ``minimize`` of the same
objective on the host: the device function's Python code, called with a gradient buffer
it fills.  Runs on the GPU where there is one and on numba's CUDA simulator elsewhere
(see ``cudasim``), where each thread is a Python thread: a few problems, short runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cudasim import GPU, nvvm_available
from test_many import data as many_data
from test_many import decay_into

import nadam
from nadam import schedules
from nadam.rules import RULES

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
pytestmark = [
    pytest.mark.cuda,
    # The simulator runs the device code as Python on NumPy scalars, which warn on
    # inf - inf where a device (and compiled code) quietly gives NaN.
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (nadam[cuda])"),
]


def host(x, t, y):
    """:func:`decay_into` on the host, as ``minimize`` takes it: ``(f, g)``."""
    g = np.empty_like(x)
    return decay_into(x, g, t, y), g


@pytest.fixture(scope="module")
def device_decay():
    from numba import cuda

    return cuda.jit(device=True)(decay_into)


def data(runs=3, dtype=np.float64):
    return many_data(runs, dtype)


#: On the simulator the device runs the host's operations: the same bits.  A GPU
#: contracts a*b + c into FMAs and has its own exp: a few ulps a step.
RTOL = 1e-8 if GPU else 0.0


def assert_each_alone(res, x0, Y, t, bounds=None, **kw):
    for b in range(len(x0)):
        box = bounds
        if isinstance(bounds, tuple):  # per problem: row b
            box = [(lo, hi) for lo, hi in zip(bounds[0][b], bounds[1][b], strict=True)]
        ref = nadam.minimize(host, x0[b], args=(t, Y[b]), jac=True, bounds=box, **kw)
        assert (res.nit[b], res.status[b], res.success[b]) == (ref.nit, ref.status, ref.success)
        assert res.message[b] == ref.message
        assert (res.nfev[b], res.njev[b]) == (ref.nfev, ref.njev)
        np.testing.assert_allclose(res.x[b], ref.x, rtol=RTOL, atol=0)
        np.testing.assert_allclose(res.jac[b], ref.jac, rtol=RTOL, atol=1e-300)
        np.testing.assert_allclose(res.fun[b], ref.fun, rtol=RTOL)


def many(fun, x0, Y, t, **kw):
    options = {**(kw.pop("options", None) or {}), "device": "cuda"}
    return nadam.minimize_many(fun, x0, args=(t, Y), jac=True, options=options, **kw)


@pytest.mark.parametrize("method", list(RULES))
def test_every_rule_each_problem_equals_minimize(device_decay, method):
    x0, Y, t = data()
    options = {"lr": 1.0 if method == "adam_distance" else 0.02, "maxiter": 25}
    res = many(device_decay, x0, Y, t, method=method, options=options)
    assert res.x.shape == x0.shape and res.x.dtype == x0.dtype
    assert_each_alone(res, x0, Y, t, method=method, options=options)


@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.05, "maxiter": 200, "gtol": 2e-3},  # problems stop at different nit
        {"lr": 0.3, "maxiter": 60, "return_best": True},  # the best: evaluated again
        {"lr": 0.05, "maxiter": 150, "patience": 5, "min_delta": 1e-3, "smoothing": 0.5},
        {"lr": schedules.cosine(0.1, 40), "maxiter": 40},
        {"lr": schedules.reduce_on_plateau(0.2, patience=2), "maxiter": 60},
        {"lr": 0.05, "maxiter": 40, "average": "poly"},
    ],
    ids=repr,
)
def test_options_each_problem_equals_minimize(device_decay, options):
    x0, Y, t = data()
    res = many(device_decay, x0, Y, t, options=options)
    assert_each_alone(res, x0, Y, t, options=options)


def test_the_tuning_free_defaults_each_problem_equals_minimize(device_decay):
    # Each problem's windows act between launches, on the host copy of its rows.
    x0, Y, t = data(runs=2)
    res = many(device_decay, x0, Y, t)
    assert res.success.all()
    assert_each_alone(res, x0, Y, t)


@pytest.mark.parametrize("per_row", [False, True])
def test_bounds_shared_or_per_problem(device_decay, per_row):
    x0, Y, t = data()
    options = {"lr": 0.1, "maxiter": 40}
    if per_row:
        lo = np.tile([0.5, 0.2, -1.0], (len(x0), 1))
        hi = np.column_stack([np.full(len(x0), 1.4), np.linspace(0.8, 1.2, len(x0)), np.ones(3)])
        bounds = (lo, hi)
    else:
        bounds = [(0.5, 1.4), (0.2, 0.9), (-1.0, 1.0)]
    res = many(device_decay, x0, Y, t, bounds=bounds, options=options)
    assert_each_alone(res, x0, Y, t, bounds=bounds, options=options)


def test_float32_stays_float32(device_decay):
    x0, Y, t = data(dtype=np.float32)
    options = {"lr": 0.02, "maxiter": 25}
    res = many(device_decay, x0, Y, t, options=options)
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    for b in range(len(x0)):
        ref = nadam.minimize(host, x0[b], args=(t, Y[b]), jac=True, options=options)
        assert res.nit[b] == ref.nit and res.x[b].dtype == np.float32
        np.testing.assert_allclose(res.x[b], ref.x, rtol=2e-5)


def test_a_problem_that_diverges_stops_alone(device_decay):
    # Problem 1's data overflow its loss: it stops (non-finite), the others go on.
    x0, Y, t = data()
    Y[1, 3] = np.inf
    options = {"lr": 0.05, "maxiter": 20}
    res = many(device_decay, x0, Y, t, options=options)
    assert res.status[1] == nadam.Status.NONFINITE and np.isfinite(res.x[1]).all()
    assert (res.status[[0, 2]] == nadam.Status.MAXITER).all()
    assert_each_alone(res, x0, Y, t, options=options)


def test_a_device_batch_checkpoints_every_problem_and_resumes_finished(device_decay, tmp_path):
    # The host arrays are the batch's state between launches: checkpoints as on the CPU.
    x0, Y, t = data()
    path = str(tmp_path / "batch.npz")
    options = {"lr": 0.05, "maxiter": 30, "checkpoint": path, "checkpoint_every": 7}
    res = many(device_decay, x0, Y, t, options={**options, "resume": True})
    state, meta = nadam.checkpoint.load(path)
    np.testing.assert_array_equal(state["result.x"], res.x)
    assert state["done"].all() and meta["runs"] == len(x0)
    again = many(device_decay, x0, Y, t, options={**options, "resume": True})
    np.testing.assert_array_equal(again.x, res.x)
    np.testing.assert_array_equal(again.nfev, res.nfev)  # nothing evaluated again


def test_only_a_device_function_runs_on_the_device(device_decay):
    x0, Y, t = data()
    with pytest.raises(TypeError, match=r"fun: .*cuda\.jit\(device=True\)"):
        many(host, x0, Y, t)
    with pytest.raises(ValueError, match=r"vectorized and device='cuda'"):
        many(device_decay, x0, Y, t, options={"vectorized": True})


@pytest.mark.skipif(
    not (HAVE_NUMBA_CUDA and nvvm_available()),
    reason="needs NVVM and NVRTC (pip install nvidia-nvvm nvidia-cuda-nvrtc)",
)
def test_the_batch_kernels_compile_for_the_gpu():
    """The device batch's kernels lower to PTX through NVVM, for every rule and options
    that change the loop's code (schedules, bounds, the best iterate, averaging, float32).

    The simulator runs the device code as Python, so it cannot see what the CUDA target
    does not support (an allocation, an exception with values, a None argument); this
    compiles the kernels for real (sm_80, no GPU needed), in a process without the
    simulator: the device copies are the host arrays, typed as the device's would be.
    """
    cases = [(m, {"lr": 0.1, "maxiter": 3}) for m in RULES] + [
        ("adam", {}),  # the tuning-free defaults
        ("adam", {"lr": "plateau", "bounds": True, "return_best": True, "average": "ema"}),
        ("prodigy", {"float32": True, "lr": "cosine"}),
    ]
    code = textwrap.dedent(
        """
        import types
        import numpy as np
        import numba
        from numba import cuda
        import numba.cuda.dispatcher as dispatcher
        import nadam
        import nadam.kernels.cuda as ck
        from nadam.loop import batched
        from test_many import data, decay_into

        # Device functions compile for the current device's compute capability.
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(8, 0))
        ck.load = lambda: cuda

        class Host(np.ndarray):  # a "device copy": the host array itself
            def copy_to_host(self, out=None):
                return np.array(self)

        cuda.to_device = lambda a, *args, **kw: np.asarray(a).view(Host)
        compiled = []

        class Lower:  # kern[grid](*args): compile for the arguments' types, run nothing
            def __init__(self, kernel):
                self.kernel = kernel
            def __getitem__(self, grid):
                def launch(*args):
                    sig = tuple(numba.typeof(a) for a in args)
                    cuda.compile_ptx(self.kernel.py_func, sig, cc=(8, 0))
                    compiled.append(self.kernel.py_func.__name__)
                return launch

        setup = batched.DeviceLoop.__init__
        def lowered(self, *args):
            setup(self, *args)
            self._run, self._once = Lower(self._run), Lower(self._once)
        batched.DeviceLoop.__init__ = lowered

        class Done(Exception):
            pass

        def once(self, *args):  # the first launch, and an evaluation; then stop the run
            batched.DeviceLoop.__call__ = call
            call(self, *args)
            self.evaluate(0, np.array(args[5][0]))
            raise Done
        call = batched.DeviceLoop.__call__
        device = cuda.jit(device=True)(decay_into)
        schedules = {"plateau": nadam.schedules.reduce_on_plateau(0.1),
                     "cosine": nadam.schedules.cosine(0.1, 10)}
        for method, options in CASES:
            batched.DeviceLoop.__call__ = once
            x0, Y, t = data(2, np.float32 if options.pop("float32", False) else np.float64)
            bounds = [(0.0, 3.0)] * 3 if options.pop("bounds", False) else None
            if "lr" in options and isinstance(options["lr"], str):
                options["lr"] = schedules[options["lr"]]
            try:
                nadam.minimize_many(device, x0, args=(t, Y), method=method, jac=True,
                                    bounds=bounds, options={**options, "device": "cuda"})
            except Done:
                pass
            assert compiled[-2] == "kernel" and compiled[-1].startswith("once_"), compiled
            print(method, "ok")
        print("all ok")
        """
    ).replace("CASES", repr(cases))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0 and "all ok" in out.stdout, out.stdout + out.stderr
