"""``minimize(..., options={"device": "cuda"})`` against the CPU run of the same problem.

Runs on the GPU where there is one and on numba's CUDA simulator elsewhere (see
``cudasim``).  The simulator runs kernels as Python threads, about 0.1 s per step
here, so the problems are tiny (6 parameters) and the runs short.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cudasim import GPU, nvvm_available  # noqa: F401 (GPU enables the simulator where none is present)

import nadam
from nadam import Minimizer
from nadam.kernels import cuda as ck

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (nadam[cuda])"),
]

SHAPE = (2, 3)  # 2-D: the result must come back in x0's shape
STEPS = 6
#: Device vs CPU (issue 6): bit-exact on the simulator in float64; a GPU contracts
#: a*b + c into FMAs, a few ulps.
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
BOUNDS = [(-0.4, 0.6)] * math.prod(SHAPE)


def data(dtype) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.uniform(0.5, 2.0, SHAPE).astype(dtype), rng.normal(size=SHAPE).astype(dtype)


def cpu_fun(x, a, c):
    """sum(a (x - c)^2) and its gradient, on the host."""
    r = x - c
    return float(np.sum(a * r * r)), (a + a) * r


#: numba.cuda, bound by the ``cuda`` fixture (numba-cuda is imported only when the
#: tests run).  A module global, not a closure variable: the simulator runs a kernel
#: by swapping its *globals* that name numba.cuda for its fake module.
_cu = None


def _gradient(x, a, c, g):
    # The gradient of cpu_fun with the same float operations: (a + a) * r is the
    # NumPy expression, rounded once per operation in x's dtype.
    i = _cu.grid(1)
    if i < x.size:
        r = x[i] - c[i]
        g[i] = (a[i] + a[i]) * r


@pytest.fixture(scope="module")
def cuda():
    global _cu
    _cu = ck.load()
    return _cu


@pytest.fixture(scope="module")
def dev_fun(cuda):
    """``fun(x, d_a, d_c) -> (f, g)`` of :func:`cpu_fun` with x, the args and g on the
    device: the gradient by a kernel (the same float operations as on the CPU), f on
    the host from copies (a scalar, as minimize requires)."""
    gradient = cuda.jit(_gradient)

    def fun(x, d_a, d_c):
        n = x.size
        g = cuda.device_array(x.shape, x.dtype)
        gradient[1, 32](x.reshape(n), d_a.reshape(n), d_c.reshape(n), g.reshape(n))
        return cpu_fun(x.copy_to_host(), d_a.copy_to_host(), d_c.copy_to_host())[0], g

    return fun


def both(cuda, dev_fun, dtype, fun_cpu=cpu_fun, fun_dev=None, **kw):
    """The CPU and the device result of one problem (same arguments otherwise)."""
    a, c = data(dtype)
    x0 = np.zeros(SHAPE, dtype)
    opts = kw.pop("options", {})
    host = nadam.minimize(fun_cpu, x0, args=(a, c), jac=True, options=opts, **kw)
    dev = nadam.minimize(
        fun_dev or dev_fun,
        x0,
        args=(cuda.to_device(a), cuda.to_device(c)),
        jac=True,
        options={**opts, "device": "cuda"},
        **kw,
    )
    return host, dev


def assert_same(dev, host, dtype):
    tol = TOL[np.dtype(dtype)]
    assert type(dev.x) is np.ndarray and dev.x.shape == SHAPE and dev.x.dtype == dtype
    assert type(dev.jac) is np.ndarray and dev.jac.shape == SHAPE
    np.testing.assert_allclose(dev.x, host.x, rtol=tol, atol=tol)
    np.testing.assert_allclose(dev.jac, host.jac, rtol=tol, atol=tol)
    assert dev.fun == pytest.approx(host.fun, rel=tol, abs=tol)
    assert (dev.nit, dev.nfev, dev.njev, dev.status, dev.message) == (
        host.nit,
        host.nfev,
        host.njev,
        host.status,
        host.message,
    )


@pytest.mark.parametrize(
    "method, dtype, bounded, best",
    [
        ("adam", np.float64, True, True),
        ("nadam", np.float32, True, True),
        ("sgd", np.float64, False, False),
    ],
    ids=["adam-f64-bounds-best", "nadam-f32-bounds-best", "sgd-f64"],
)
def test_matches_cpu(cuda, dev_fun, method, dtype, bounded, best):
    """Iterates, gradient norms (history), best iterate and result equal the CPU run's."""
    hyper = {"lr": 0.3, "momentum": 0.9} if method == "sgd" else {"lr": 0.3}
    host, dev = both(
        cuda,
        dev_fun,
        dtype,
        method=method,
        bounds=BOUNDS if bounded else None,
        options={**hyper, "maxiter": STEPS, "return_best": best, "history": True},
    )
    assert_same(dev, host, dtype)
    tol = TOL[np.dtype(dtype)]
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose(dev.history[key], host.history[key], rtol=tol, atol=tol)


def test_gtol_stops_where_the_cpu_run_stops(cuda, dev_fun):
    """The gradient norm from the device reduction decides gtol as the CPU's does."""
    a, c = data(np.float64)
    probe = nadam.minimize(
        cpu_fun,
        np.zeros(SHAPE),
        args=(a, c),
        jac=True,
        bounds=BOUNDS,
        options={"lr": 0.3, "maxiter": 20, "history": True},
    )
    gn = probe.history["grad_norm"]
    # The first iteration whose norm is below all earlier ones: gtol stops the run there.
    k = next(k for k in range(1, gn.size) if gn[k] < gn[:k].min())
    gtol = float(gn[k])
    host, dev = both(
        cuda, dev_fun, np.float64, bounds=BOUNDS, options={"lr": 0.3, "maxiter": 20, "gtol": gtol}
    )
    assert host.status == 0 and host.nit == k > 0
    assert_same(dev, host, np.float64)


def test_tuning_free_windows_cut_and_restart_on_the_device(cuda, dev_fun):
    """No lr: the windows judge, cut the step size and go back to the best iterate on the
    device; a NaN gradient (the 5th evaluation) restarts the moments there too."""
    calls = {"host": 0, "dev": 0}

    def poisoned(fun, put_nan, key):
        def f(x, *args):
            calls[key] += 1
            value, g = fun(x, *args)
            if calls[key] == 5:
                put_nan(g)
            return value, g

        return f

    def host_nan(g):
        g[0, 1] = np.nan

    def dev_nan(g):
        h = g.copy_to_host()
        h[0, 1] = np.nan
        g.copy_to_device(h)

    host, dev = both(
        cuda,
        dev_fun,
        np.float64,
        fun_cpu=poisoned(cpu_fun, host_nan, "host"),
        fun_dev=poisoned(dev_fun, dev_nan, "dev"),
        options={"window": 2, "maxiter": 14, "r_eps": 0.5},
    )
    assert host.status == 1 and host.nfev == 16  # 14 steps, the NaN evaluation again
    assert_same(dev, host, np.float64)


def test_a_nonfinite_gradient_stops_on_the_last_finite_iterate(cuda, dev_fun):
    def poisoned(fun, put_nan):
        calls = [0]

        def f(x, *args):
            calls[0] += 1
            value, g = fun(x, *args)
            if calls[0] == 3:
                put_nan(g)
            return value, g

        return f

    def host_nan(g):
        g[0, 1] = np.nan

    def dev_nan(g):
        h = g.copy_to_host()
        h[0, 1] = np.nan
        g.copy_to_device(h)

    host, dev = both(
        cuda,
        dev_fun,
        np.float64,
        fun_cpu=poisoned(cpu_fun, host_nan),
        fun_dev=poisoned(dev_fun, dev_nan),
        options={"lr": 0.3, "maxiter": STEPS},
    )
    assert host.status == 3 and "gradient" in host.message
    np.testing.assert_array_equal(dev.x, host.x)
    assert (dev.status, dev.nit, dev.message) == (host.status, host.nit, host.message)


def test_streamed_device_args_and_callback_get_host_arrays(cuda, dev_fun):
    """Streamed args pass through as given; the callback sees host copies."""
    a, c = data(np.float64)
    batches = [(cuda.to_device(a), cuda.to_device(c * k)) for k in (1.0, 0.5, 2.0)]
    seen = []
    res = nadam.minimize(
        dev_fun,
        np.zeros(SHAPE),
        args=iter(batches),
        jac=True,
        callback=lambda intermediate_result: seen.append(intermediate_result),
        options={"lr": 0.3, "device": "cuda"},
    )
    ref = nadam.minimize(
        cpu_fun,
        np.zeros(SHAPE),
        args=iter([(a, c * k) for k in (1.0, 0.5, 2.0)]),
        jac=True,
        options={"lr": 0.3},
    )
    assert res.status == ref.status == 4 and res.nit == ref.nit
    np.testing.assert_array_equal(res.x, ref.x)
    assert seen and all(
        type(r.x) is np.ndarray and type(r.jac) is np.ndarray and r.x.shape == SHAPE for r in seen
    )


def test_state_dict_is_host_arrays_and_resumes(cuda, dev_fun, tmp_path):
    """A device run exports host arrays, and continues from them (state_dict and a
    checkpoint file) exactly as if never stopped."""
    a, c = data(np.float64)
    kw = dict(
        args=(cuda.to_device(a), cuda.to_device(c)),
        jac=True,
        bounds=BOUNDS,
        options={"lr": 0.3, "maxiter": STEPS, "return_best": True, "device": "cuda"},
    )
    first = Minimizer(dev_fun, np.zeros(SHAPE), **kw)
    assert first.run(2) is None
    state = first.state_dict()
    arrays = {k: v for k, v in state.items() if not np.isscalar(v) and k != "optimizer.rule"}
    assert {"x", "best_x", "best_g"} <= set(arrays)
    assert all(type(v) is np.ndarray for v in arrays.values()), arrays
    second = Minimizer(dev_fun, np.zeros(SHAPE), **kw)
    second.load_state_dict(state)
    resumed = second.run()

    host_kw = dict(
        args=(a, c),
        jac=True,
        bounds=BOUNDS,
        options={"lr": 0.3, "maxiter": STEPS, "return_best": True},
    )
    assert_same(resumed, nadam.minimize(cpu_fun, np.zeros(SHAPE), **host_kw), np.float64)

    def extended(fun, kw, path):
        # A run of 3 iterations checkpointed at its end, extended to STEPS from the
        # file (which re-evaluates the saved iterate: one more nfev than one run).
        ckpt = {**kw["options"], "checkpoint": path, "resume": True}
        stopped = nadam.minimize(fun, np.zeros(SHAPE), **{**kw, "options": {**ckpt, "maxiter": 3}})
        assert stopped.nit == 3 and path.exists()
        return nadam.minimize(fun, np.zeros(SHAPE), **{**kw, "options": ckpt})

    assert_same(
        extended(dev_fun, kw, tmp_path / "dev.npz"),
        extended(cpu_fun, host_kw, tmp_path / "host.npz"),
        np.float64,
    )


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def _dev_run(cuda, fun, **kw):
    a, c = data(np.float64)
    options = {"device": "cuda", "maxiter": 2, **kw.pop("options", {})}
    return nadam.minimize(
        fun,
        np.zeros(SHAPE),
        args=(cuda.to_device(a), cuda.to_device(c)),
        **{"jac": True, **kw},
        options=options,
    )


@pytest.mark.parametrize(
    "kw, error, match",
    [
        (
            {"options": {"device": "gpu"}},
            ValueError,
            "Invalid option device: .*allowed: one of 'cpu', 'cuda'",
        ),
        (
            {"options": {"device": None}},
            ValueError,
            "Invalid option device: .*allowed: one of 'cpu', 'cuda'",
        ),
        ({"jac": None}, ValueError, "finite differences"),
        ({"jac": "3-point"}, ValueError, "finite differences"),
        ({"options": {"batch_size": 2}}, ValueError, "batch_size cannot be combined"),
        ({"options": {"compiled": True}}, ValueError, "compiled=True cannot be combined"),
        ({"options": {"comm": object()}}, ValueError, "comm cannot be combined"),
    ],
    ids=["bad-device", "none-device", "fd", "fd3", "batch", "compiled", "comm"],
)
def test_refused_options(cuda, dev_fun, kw, error, match):
    with pytest.raises(error, match=match):
        _dev_run(cuda, dev_fun, **kw)


def test_bad_device_on_the_cpu_path_too():
    with pytest.raises(
        ValueError, match="Invalid option device: 'CUDA'; allowed: one of 'cpu', 'cuda'"
    ):
        nadam.minimize(
            cpu_fun, np.zeros(SHAPE), args=data(np.float64), jac=True, options={"device": "CUDA"}
        )


def test_bad_gradients(cuda):
    def host_gradient(x, a, c):
        return 0.0, np.zeros(SHAPE)

    def wrong_shape(x, a, c):
        return 0.0, cuda.device_array(6)

    def wrong_dtype(x, a, c):
        return 0.0, cuda.device_array(SHAPE, np.float32)

    with pytest.raises(TypeError, match="must be a CUDA device array .* got numpy.ndarray"):
        _dev_run(cuda, host_gradient)
    with pytest.raises(
        ValueError, match=r"has shape \(6,\) at iteration 0, but x0 has shape \(2, 3\)"
    ):
        _dev_run(cuda, wrong_shape)
    with pytest.raises(
        TypeError, match="has dtype float32 at iteration 0, but x has dtype float64"
    ):
        _dev_run(cuda, wrong_dtype)


@pytest.mark.parametrize(
    "exc",
    [
        ImportError("CUDA arrays need the numba-cuda package: pip install numba-cuda"),
        RuntimeError("no CUDA device was found"),
    ],
    ids=["no-numba-cuda", "no-device"],
)
def test_without_numba_cuda_or_a_device(dev_fun, monkeypatch, exc):
    """minimize passes on nadam.kernels.cuda.load's errors (whose messages test_cuda checks)."""

    def load():
        raise exc

    monkeypatch.setattr(ck, "load", load)
    with pytest.raises(type(exc), match=str(exc).split(":")[0]):
        nadam.minimize(
            cpu_fun, np.zeros(SHAPE), args=data(np.float64), jac=True, options={"device": "cuda"}
        )


# ---------------------------------------------------------------------------
# The device reduction behind gtol, with several blocks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_inf_norm_with_several_blocks_equals_the_cpu_helpers(cuda, monkeypatch, dtype):
    """Both passes of InfNorm (the runs above fit one block): per-block maxima, then one
    block over them; bit-equal to the CPU helpers, NaN for NaN (and, projected, inf)."""
    from nadam.loop.device import InfNorm
    from nadam.loop.tracker import inf_norm as _inf_norm
    from nadam.loop.tracker import projected_inf_norm as _projected_inf_norm

    n = 37
    monkeypatch.setattr(ck, "launch_config", lambda size: (3, 32))  # 96 threads for 37
    rng = np.random.default_rng(2)
    x, g = (rng.normal(size=n).astype(dtype) for _ in range(2))
    g[29] = 5.0  # the maximum, in the last block
    lo, hi = np.full(n, -0.5, dtype), np.full(n, 0.7, dtype)
    d_x, d_lo, d_hi = (cuda.to_device(a) for a in (x, lo, hi))
    plain, projected = InfNorm(n), InfNorm(n, projected=True)
    assert plain.passes == 2
    d_g = cuda.to_device(g)
    assert plain(d_g, d_g, d_g, d_g) == _inf_norm(g)
    assert projected(d_x, d_g, d_lo, d_hi) == _projected_inf_norm(x, g, lo, hi)
    g[3] = np.inf
    d_g = cuda.to_device(g)
    assert plain(d_g, d_g, d_g, d_g) == np.inf
    assert math.isnan(projected(d_x, d_g, d_lo, d_hi))
    g[35] = np.nan
    d_g = cuda.to_device(g)
    assert math.isnan(plain(d_g, d_g, d_g, d_g))


@pytest.mark.skipif(
    not (HAVE_NUMBA_CUDA and nvvm_available()),
    reason="needs NVVM and NVRTC (pip install nvidia-nvvm nvidia-cuda-nvrtc)",
)
def test_reduction_and_projection_compile_for_the_gpu():
    """The simulator runs kernels as Python and cannot see what the CUDA target
    rejects (shared arrays, math.isfinite on float32, ...): compile the norm and
    projection kernels to PTX for real (sm_80, no GPU needed), without the simulator."""
    code = textwrap.dedent(
        """
        import types
        from numba import cuda
        from numba.core import types as nt
        import numba.cuda.dispatcher as dispatcher
        import nadam.kernels.cuda as ck
        from nadam.loop.tracker import projected_step

        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(8, 0))
        ck.load = lambda: cuda
        for dt in (nt.float32, nt.float64):
            a = dt[::1]
            for step in (None, projected_step):
                sig = (a, a, a, a, nt.float64[::1])
                cuda.compile_ptx(ck.inf_norm_kernel(step).py_func, sig, cc=(8, 0))
            cuda.compile_ptx(ck.project_kernel().py_func, (a, a, a), cc=(8, 0))
        print("compiled ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "compiled ok" in out.stdout, out.stdout + out.stderr
