"""CUDA kernels and optimizers on device arrays, against the CPU kernels.

Runs on the GPU where there is one, and on numba's CUDA simulator elsewhere (CI):
``cudasim`` (imported at collection) turns the simulator on before anything imports
``numba.cuda``; see its docstring for why that is early enough.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import CLASSES, assert_close, combo_id, grad, opts_variants, problem, sign_of
from cudasim import GPU, nvvm_available  # GPU: enables the simulator where no GPU is present

import nadam
from nadam import rules
from nadam.device import all_finite
from nadam.kernels import cpu
from nadam.kernels import cuda as ck

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (nadam[cuda])"),
]

N = 37  # not a multiple of the warp size: the last warp is partly idle
STEPS = 8  # RAdam rectifies from step 6: both of its branches run
#: Device vs CPU kernels (issue 6): the simulator is bit-exact in float64, a GPU
#: contracts a*b+c into FMAs (a few ulps).
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
VARIANTS = opts_variants()  # one option combination per compiled variant


@pytest.fixture(scope="module")
def cuda():
    return ck.load()


def setup(name: str, kw: dict, dtype, n: int = N):
    """(rule, opts, p, a, s, hp): the rule, its options, host parameters, slopes of the
    test objective, state and packed hyperparameters for ``n`` parameters."""
    rule = CLASSES[name].rule
    values = {**rule.defaults, **rule.validate(kw)}
    opts = rule.flags(values)
    p, a = problem(n, dtype)
    hp = np.zeros(rule.n_hyper)
    rule.pack(values, hp)
    s = rule.initial_state(values, opts, n, dtype)
    for slot in rule.from_params:  # (Prodigy's p0, schedule-free's z)
        s[rule.slots(opts).index(slot)] = p
    return rule, opts, p, a, s, hp


# ---------------------------------------------------------------------------------
# Kernels: every rule, option and dtype
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("combo", VARIANTS, ids=combo_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_kernel_matches_cpu(cuda, combo, dtype):
    """The CUDA kernel of every variant follows the serial CPU kernel, closed loop."""
    name, kw = combo
    dtype = np.dtype(dtype)
    if CLASSES[name].rule.accumulate is not None:
        # Prodigy starts with steps of d0 = 1e-6 and grows them: in these few steps, a
        # large lr makes them move the parameters far beyond the tolerance.
        kw = {**kw, "lr": 1000.0}
    rule, opts, p, a, s, hp = setup(name, kw, dtype)
    p0 = p.copy()
    d_p, d_s = cuda.to_device(p), cuda.to_device(s)
    values = {**rule.defaults, **rule.validate(kw)}
    aux, d_aux = (rule.initial_aux(values) for _ in range(2))
    h, d_h = (np.zeros(rule.n_coefficients, dtype) for _ in range(2))
    serial = cpu.stepper(rule, opts, False)
    blocks, threads = ck.launch_config(N)
    launch = ck.kernel(rule, opts)
    sign = sign_of(kw)
    if rule.accumulate is not None:  # a two-pass rule: its first pass and its sums
        first = ck.first_pass(rule, opts)
        partial = cuda.device_array((blocks, 2), np.float64)
    for t in range(1, STEPS + 1):
        serial(p, grad(p, a, sign), s, hp, t, aux, h)
        rule.coefficients(hp, t, d_aux, d_h)
        d_g = cuda.to_device(grad(d_p.copy_to_host(), a, sign))
        if rule.accumulate is not None:
            first[blocks, ck.THREADS](d_p, d_g, d_s, tuple(d_h), partial)
            rule.finish(hp, t, d_aux, partial.copy_to_host().sum(axis=0), d_h)
        launch[blocks, threads](d_p, d_g, d_s, tuple(d_h))
        assert_close(d_p.copy_to_host(), p, TOL[dtype], err_msg=f"params after step {t}")
    assert_close(d_s.copy_to_host(), s, TOL[dtype], err_msg="state")
    # Not vacuous: the parameters moved far beyond the tolerance.
    assert np.max(np.abs(p - p0)) > 100 * TOL[dtype] * np.max(np.abs(p))
    assert d_p.dtype == dtype and d_s.dtype == dtype


def test_kernel_is_specialised_per_variant():
    """One compiled kernel per (rule, options), shared by every size and optimizer."""
    assert ck.kernel(rules.ADAM, (True,)) is ck.kernel(rules.ADAM, (True,))
    assert ck.kernel(rules.ADAM, (True,)) is not ck.kernel(rules.ADAM, (False,))
    # Adam and AdamW share their update: one device function, two kernels.
    assert ck._device_function(rules.ADAM.update) is ck._device_function(rules.ADAMW.update)


@pytest.mark.parametrize(
    "n, sms, expected",
    [
        (1, 132, (1, 32)),
        (37, 132, (1, 64)),
        (256, 132, (1, 256)),
        (257, 132, (2, 256)),
        (10**8, 132, (132 * ck.BLOCKS_PER_SM, 256)),
        (10**8, 1, (ck.BLOCKS_PER_SM, 256)),
    ],
)
def test_launch_config(n, sms, expected):
    """Small arrays: one block of whole warps; large: BLOCKS_PER_SM blocks per SM."""
    assert ck.grid_for(n, sms) == expected


def test_all_finite(cuda):
    assert all_finite(cuda.to_device(np.arange(5.0)))
    assert all_finite(cuda.to_device(np.zeros(0, np.float32)))
    for bad in (np.nan, np.inf, -np.inf):
        x = np.arange(70, dtype=np.float32)
        x[-1] = bad
        assert not all_finite(cuda.to_device(x))


# ---------------------------------------------------------------------------------
# Optimizer classes on device arrays
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adam", "sgd", "nadam", "rmsprop"])
def test_optimizer_on_device(cuda, name):
    """A device optimizer follows the CPU one (2-D parameters, an lr schedule); its
    state_dict holds host NumPy arrays equal to the CPU one's; a new device optimizer
    continues exactly from it, and follows the CPU one from the CPU's snapshot."""
    kw = {
        "adam": dict(lr=lambda t: 0.05 / t, amsgrad=True, weight_decay=0.1),
        "sgd": dict(lr=0.05, momentum=0.9, nesterov=True),
        "nadam": dict(lr=0.02, decoupled_weight_decay=True, weight_decay=0.1),
        "rmsprop": dict(lr=0.01, centered=True, momentum=0.5, maximize=True),
    }[name]
    tol = TOL[np.dtype(np.float32)]
    x0, a = (v.reshape(4, 9) for v in problem(36, np.float32))
    sign = sign_of(kw)
    x = x0.copy()
    d_x = cuda.to_device(x0)
    host, dev = CLASSES[name](x, **kw), CLASSES[name](d_x, **kw)
    assert "device" in repr(dev)
    assert dev.params is d_x

    def run(steps):
        for _ in range(steps):
            host.step(grad(x, a, sign))
            dev.step(cuda.to_device(grad(d_x.copy_to_host(), a, sign)))

    run(4)
    assert_close(d_x.copy_to_host(), x, tol)
    sd = dev.state_dict()
    ref = host.state_dict()
    assert sd["t"] == ref["t"] == 4 and sd["dtype"] == "float32" and sd["size"] == 36
    for slot, value in ref["state"].items():
        assert isinstance(sd["state"][slot], np.ndarray)
        assert_close(sd["state"][slot], value, tol, err_msg=slot)
    assert set(dev.state) == set(host.state)

    # Continue on a fresh device optimizer from the snapshot, and from the CPU's.
    d_y = cuda.to_device(d_x.copy_to_host())
    d_z = cuda.to_device(x.copy())
    resumed, from_cpu = CLASSES[name](d_y, **kw), CLASSES[name](d_z, **kw)
    resumed.load_state_dict(sd)
    from_cpu.load_state_dict(ref)
    for _ in range(3):
        g = grad(d_x.copy_to_host(), a, sign)
        dev.step(cuda.to_device(g))
        resumed.step(cuda.to_device(g))
        from_cpu.step(cuda.to_device(grad(d_z.copy_to_host(), a, sign)))
        host.step(grad(x, a, sign))
    np.testing.assert_array_equal(d_y.copy_to_host(), d_x.copy_to_host())
    assert_close(d_z.copy_to_host(), x, tol)
    assert resumed.t == from_cpu.t == 7


def test_sgd_without_state(cuda):
    """Plain SGD keeps a (0, n) state on the device."""
    d_x = cuda.to_device(np.ones(5))
    opt = nadam.SGD(d_x, lr=0.5)
    opt.step(cuda.to_device(np.full(5, 2.0)))
    np.testing.assert_array_equal(d_x.copy_to_host(), np.zeros(5))
    sd = opt.state_dict()
    assert sd["state"] == {}
    opt.load_state_dict(sd)
    opt.step(cuda.to_device(np.full(5, 2.0)))
    np.testing.assert_array_equal(d_x.copy_to_host(), np.full(5, -1.0))


@pytest.mark.parametrize("mode", ["raise", "skip", "ignore"])
def test_nonfinite_on_device(cuda, mode):
    x0 = np.linspace(-1, 1, 40)
    d_x = cuda.to_device(x0)
    opt = nadam.Adam(d_x, lr=0.1, nonfinite=mode)
    bad = np.ones(40)
    bad[17] = np.nan
    if mode == "raise":
        with pytest.raises(nadam.NonFiniteGradientError, match="step 1"):
            opt.step(cuda.to_device(bad))
    elif mode == "skip":
        with pytest.warns(RuntimeWarning, match="skipped step 1"):
            opt.step(cuda.to_device(bad))
    else:
        opt.step(cuda.to_device(bad))
        assert np.isnan(d_x.copy_to_host()[17]) and opt.t == 1
        return
    assert opt.t == 0
    np.testing.assert_array_equal(d_x.copy_to_host(), x0)
    assert not np.any(opt.state_dict()["state"]["exp_avg"])
    # The flag was cleared: a finite gradient steps again.
    opt.step(cuda.to_device(np.ones(40)))
    assert opt.t == 1
    np.testing.assert_allclose(d_x.copy_to_host(), x0 - 0.1)


# ---------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------


def test_grad_errors(cuda):
    opt = nadam.Adam(cuda.to_device(np.zeros((2, 3), np.float32)))
    with pytest.raises(TypeError, match="grad must be a CUDA device array.*numpy.ndarray"):
        opt.step(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(6,\).*\(2, 3\)"):
        opt.step(cuda.to_device(np.zeros(6, np.float32)))
    with pytest.raises(TypeError, match="dtype float64.*float32"):
        opt.step(cuda.to_device(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="size=6, dtype=float32"):
        opt.load_state_dict(nadam.Adam(np.zeros(6)).state_dict())


def test_params_errors(cuda):
    with pytest.raises(TypeError, match="float32 or float64"):
        nadam.Adam(cuda.to_device(np.zeros(3, np.int64)))
    with pytest.raises(TypeError, match="C-contiguous"):
        nadam.Adam(cuda.to_device(np.zeros((4, 4)))[:, 1])


def test_import_error_without_numba_cuda(monkeypatch):
    """Without numba-cuda, a device array says how to install it (issue 15 item 14: an
    install that works without nadam on the package index)."""
    monkeypatch.setitem(sys.modules, "numba_cuda", None)  # makes the import fail
    ck.load.cache_clear()
    try:
        with pytest.raises(ImportError, match=r'pip install "numba-cuda>=0.30.4"') as info:
            ck.load()
        assert "nadam[" not in str(info.value)
    finally:
        ck.load.cache_clear()


def test_runtime_error_without_device(monkeypatch, cuda):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    ck.load.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="no CUDA device was found"):
            ck.load()
    finally:
        monkeypatch.undo()
        ck.load.cache_clear()


@pytest.mark.skipif(GPU, reason="needs a machine without a GPU")
def test_runtime_error_without_device_or_simulator():
    """End to end, in a process with the simulator off: a clear RuntimeError."""
    code = textwrap.dedent(
        """
        import numpy as np, nadam

        class Foreign:  # a device array from some other library
            __cuda_array_interface__ = dict(
                shape=(3,), typestr="<f8", data=(1 << 20, False), version=3, strides=None)

        try:
            nadam.Adam(Foreign())
        except RuntimeError as exc:
            print("RuntimeError:", exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "RuntimeError: no CUDA device was found" in out.stdout, out.stdout + out.stderr


def test_import_does_not_need_numba_cuda():
    """Importing nadam and stepping on the CPU never imports numba.cuda."""
    code = (
        "import sys, numpy as np, nadam; nadam.Adam(np.zeros(3)).step(np.ones(3)); "
        "print(sorted(m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ---------------------------------------------------------------------------------
# Real CUDA compilation without a GPU, and other libraries' arrays on a GPU
# ---------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (HAVE_NUMBA_CUDA and nvvm_available()),
    reason="needs NVVM and NVRTC (pip install nvidia-nvvm nvidia-cuda-nvrtc)",
)
def test_kernels_compile_for_the_gpu():
    """Every variant lowers to PTX through NVVM, inlined and branch-free per element.

    The simulator runs the kernels as Python, so it cannot see a construct that the
    CUDA target does not support; this compiles each one for real (sm_80, no GPU
    needed), in a process without the simulator.
    """
    variants = sorted(
        {
            (name, CLASSES[name].rule.flags({**CLASSES[name].rule.defaults, **kw}))
            for name, kw in VARIANTS
        }
    )
    code = textwrap.dedent(
        """
        import types
        from numba import cuda
        from numba.core import types as nt
        import numba.cuda.dispatcher as dispatcher
        import nadam.kernels.cuda as ck
        from nadam import rules

        # Device functions compile for the current device's compute capability.
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(8, 0))
        ck.load = lambda: cuda
        for name, opts in VARIANTS:
            rule = rules.RULES[name]
            for dt in (nt.float32, nt.float64):
                sig = (dt[::1], dt[::1], dt[:, ::1], nt.UniTuple(dt, rule.n_coefficients))
                ptx, _ = cuda.compile_ptx(ck.kernel(rule, opts).py_func, sig, cc=(8, 0))
                body = ptx[ptx.index("{"):]
                assert "call." not in body, (name, opts, "device function not inlined")
                print(name, opts, dt, "ok")
        ptx, _ = cuda.compile_ptx(ck.nonfinite_kernel().py_func,
                                  (nt.float32[::1], nt.int32[::1]), cc=(8, 0))
        print("nonfinite ok")
        """
    ).replace("VARIANTS", repr(variants))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "nonfinite ok" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(not GPU, reason="needs a GPU")
def test_torch_cuda_tensor(cuda):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = torch.linspace(-1, 1, 1000, device="cuda")
    ref = x.detach().clone().requires_grad_(True)
    mine = nadam.Adam(x, lr=0.01)
    theirs = torch.optim.Adam([ref], lr=0.01, foreach=False)
    for _ in range(5):
        g = 2 * x
        mine.step(g)
        ref.grad = 2 * ref.detach()
        theirs.step()
    torch.cuda.synchronize()
    assert mine.params is x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(
            x.cpu().numpy(), ref.detach().cpu().numpy(), rtol=1e-5, atol=1e-6
        )
