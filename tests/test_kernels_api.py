"""The public low-level layer ``nadam.kernels``: kernels and coefficient functions called
from Python and from a user's own ``@njit`` loop give the optimizer classes' numbers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import CLASSES, NAMES, all_variants, combo_id, grad, problem, sign_of
from naive import SLOTS
from numba import njit

from nadam import kernels
from nadam.kernels import cpu
from nadam.rules import get_rule

# Non-default values of the options every rule has (no effect on the state layout).
COMMON = {"weight_decay": 0.05, "maximize": True}


def class_run(name, kw, x0, a, steps):
    x = x0.copy()
    opt = CLASSES[name](x, **kw)
    for _ in range(steps):
        opt.step(grad(x, a, sign_of(kw)))
    return x, opt


def low_level(name, kw, dtype, p):
    """A fresh (state, hp, aux, h) for rule ``name`` and parameters ``p``, built from the
    public helpers."""
    return (
        kernels.state(name, p.size, dtype, params=p, **kw),
        kernels.hyperparameters(name, **kw),
        kernels.aux(name, **kw),
        kernels.coefficient_buffer(name, dtype),
    )


def by_pieces(name, kernel=None):
    """One step from the public pieces: ``<name>_coefficients`` then ``<name>`` (with a
    two-pass rule's ``<name>_first`` and ``<name>_finish`` between them)."""
    rule = get_rule(name)
    coefficients = getattr(kernels, f"{name}_coefficients")
    kernel = kernel or getattr(kernels, name)
    first = getattr(kernels, f"{name}_first", None)
    finish = getattr(kernels, f"{name}_finish", None)

    def step(p, g, s, hp, t, aux, h):
        assert coefficients(hp, t, aux, h) is None
        if rule.accumulate is not None:
            finish(hp, t, aux, np.array(first(p, g, s, h)), h)
        return kernel(p, g, s, h)

    return step


def assert_state_matches(s, name, kw, opt):
    slots = kernels.slots(name, **kw)
    assert list(opt.state) == list(slots)
    for row, slot in zip(s, slots, strict=True):
        assert np.array_equal(row, opt.state[slot]), slot


def test_public_names():
    """Every rule has ``kernels.<name>``, ``<name>_coefficients`` and ``<name>_step``,
    exported, and a two-pass rule its ``<name>_first`` and ``<name>_finish``."""
    for name in NAMES:
        pieces = (name, f"{name}_coefficients", f"{name}_step")
        assert all(callable(getattr(kernels, piece)) for piece in pieces)
        assert set(pieces) <= set(kernels.__all__)
        if get_rule(name).accumulate is not None:
            assert callable(kernels.__getattr__(f"{name}_first"))
            assert f"{name}_finish" in dir(kernels)
    for helper in ("get", "state", "slots", "hyperparameters", "aux", "coefficient_buffer"):
        assert helper in kernels.__all__


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_python_loop_matches_class(name, dtype):
    """``<name>_coefficients`` then ``<name>`` from Python, with the rule's default options,
    gives the class's parameters and state bit for bit."""
    kw = {**COMMON, "lr": 0.03}
    x0, a = problem(300, dtype)
    want, opt = class_run(name, kw, x0, a, 12)
    p = x0.copy()
    s, hp, aux, h = low_level(name, kw, dtype, p)
    step = by_pieces(name)
    for t in range(1, 13):
        assert step(p, grad(p, a, -1.0), s, hp, t, aux, h) is None
    assert p.dtype == s.dtype == h.dtype == dtype
    assert np.array_equal(p, want)
    assert_state_matches(s, name, kw, opt)


def _make_user_loop(step):
    """What an HPC user writes: a compiled loop with its own gradient, calling our step."""

    @njit
    def fit(p, a, s, hp, aux, h, steps, one, two):
        for t in range(1, steps + 1):
            x2 = p * p
            g = -(a * (x2 + two) / (x2 + one))  # the same gradient as conftest.grad(.., -1)
            step(p, g, s, hp, t, aux, h)

    return fit


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", NAMES)
def test_user_njit_loop_matches_class(name, dtype):
    """The same update called from a user's own ``@njit`` loop (closed loop, gradient
    computed inside) gives the class's parameters and state bit for bit."""
    kw = {**COMMON, "lr": 0.03}
    x0, a = problem(300, dtype)
    want, opt = class_run(name, kw, x0, a, 12)
    p = x0.copy()
    s, hp, aux, h = low_level(name, kw, dtype, p)
    fit = _make_user_loop(getattr(kernels, f"{name}_step"))
    one, two = dtype(1), dtype(2)
    fit(p, a, s, hp, aux, h, 12, one, two)
    assert p.dtype == dtype
    assert np.array_equal(p, want)
    assert_state_matches(s, name, kw, opt)


@njit
def _docstring_style_fit(p, s, hp, aux, h, steps):
    for t in range(1, steps + 1):
        g = 2.0 * p
        kernels.adam_coefficients(hp, t, aux, h)
        kernels.adam(p, g, s, h)


def test_module_attribute_access_inside_njit():
    """``kernels.adam`` and ``kernels.adam_coefficients`` resolve as module attributes in
    compiled code (the module docstring's example) and match ``nadam.Adam``."""
    p = np.linspace(-1, 1, 9)
    x = p.copy()
    s, hp, aux, h = low_level("adam", {"lr": 0.1}, np.float64, p)
    _docstring_style_fit(p, s, hp, aux, h, 50)
    opt = CLASSES["adam"](x, lr=0.1)
    for _ in range(50):
        opt.step(2.0 * x)
    assert np.array_equal(p, x)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("variant", all_variants(), ids=combo_id)
def test_get_with_options_matches_class(variant, parallel):
    """``kernels.get(name, parallel=..., **options)`` (amsgrad, centered, momentum,
    nesterov...) with the matching ``state``/``hyperparameters`` gives the class's bits."""
    name, kw = variant
    x0, a = problem(101, np.float32)
    want, opt = class_run(name, kw, x0, a, 9)
    p = x0.copy()
    s, hp, aux, h = low_level(name, kw, np.float32, p)
    if get_rule(name).accumulate is None:
        step = by_pieces(name, kernels.get(name, parallel=parallel, **kw))
    else:
        step = kernels.get_step(name, parallel=parallel, **kw)
    for t in range(1, 10):
        step(p, grad(p, a, sign_of(kw)), s, hp, t, aux, h)
    assert np.array_equal(p, want)
    assert_state_matches(s, name, kw, opt)


def test_get_names_and_errors():
    """get() is case-insensitive, rejects unknown rules (listing the valid ones) and
    unknown or invalid options."""
    assert kernels.get("ADAM", amsgrad=True) is kernels.get("adam", amsgrad=True)
    with pytest.raises(ValueError, match="radam"):
        kernels.get("adamm")
    with pytest.raises(TypeError, match="foo"):
        kernels.get("adam", foo=1)
    with pytest.raises(TypeError, match="amsgrad"):
        kernels.get("adam", amsgrad="yes")
    with pytest.raises(ValueError, match="nesterov"):
        kernels.get("sgd", nesterov=True)


@pytest.mark.parametrize(
    "name, kw, expected",
    [
        ("sgd", {}, set()),
        ("sgd", {"momentum": 0.9}, {"momentum_buffer"}),
        ("rmsprop", {}, {"square_avg"}),
        (
            "rmsprop",
            {"centered": True, "momentum": 0.9},
            {"square_avg", "grad_avg", "momentum_buffer"},
        ),
        ("adagrad", {}, {"sum"}),
        ("adadelta", {}, {"square_avg", "acc_delta"}),
        ("adam", {}, {"exp_avg", "exp_avg_sq"}),
        ("adam", {"amsgrad": True}, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
        ("adamw", {"amsgrad": True}, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
        ("adamax", {}, {"exp_avg", "exp_inf"}),
        ("nadam", {}, {"exp_avg", "exp_avg_sq"}),
        ("radam", {}, {"exp_avg", "exp_avg_sq"}),
    ],
)
def test_slots_and_state(name, kw, expected):
    """slots() lists torch's state names; state() is a C-contiguous (k, n) array of the
    requested dtype, zero at step 0 (Adagrad: initial_accumulator_value)."""
    slots = kernels.slots(name, **kw)
    assert set(slots) == expected and len(slots) == len(expected)
    assert set(slots) <= SLOTS[name]
    for dtype in (np.float64, np.float32):
        s = kernels.state(name, 11, dtype, **kw)
        assert s.shape == (len(slots), 11) and s.dtype == dtype and s.flags.c_contiguous
        assert not s.any()
    s = kernels.state("adagrad", 5, np.float32, initial_accumulator_value=0.25)
    assert s.dtype == np.float32 and np.all(s == np.float32(0.25))


def test_hyperparameters_vector():
    """hyperparameters() is a float64 vector that validates like the constructors, takes
    numbers only for lr, and drives the kernel (lr = 0 freezes the parameters)."""
    hp = kernels.hyperparameters("adam", lr=0.1)
    assert hp.dtype == np.float64 and hp.ndim == 1
    assert not np.array_equal(hp, kernels.hyperparameters("adam"))
    with pytest.raises(ValueError, match="lr"):
        kernels.hyperparameters("adam", lr=-1.0)
    with pytest.raises(TypeError, match="lr"):
        kernels.hyperparameters("adam", lr=lambda t: 0.1)
    p = np.linspace(-1, 1, 7)
    p0 = p.copy()
    s, hp, aux, h = low_level("adam", {"lr": 0.0}, np.float64, p)
    kernels.adam_coefficients(hp, 1, aux, h)
    kernels.adam(p, np.ones_like(p), s, h)
    assert np.array_equal(p, p0) and s.any()


def test_coefficient_buffer_and_aux():
    """coefficient_buffer() has the requested dtype and is filled by the coefficient
    function; aux() is NAdam's momentum product (1 at the start, mu_1 after step 1) and
    empty for rules without host state."""
    h = kernels.coefficient_buffer("nadam", np.float32)
    assert h.dtype == np.float32 and not h.any()
    aux = kernels.aux("nadam")
    assert aux.dtype == np.float64 and aux.tolist() == [1.0]
    hp = kernels.hyperparameters("nadam", betas=(0.9, 0.999), momentum_decay=4e-3)
    kernels.nadam_coefficients(hp, 1, aux, h)
    assert h.any()
    assert aux[0] == pytest.approx(0.9 * (1 - 0.5 * 0.96**4e-3), rel=1e-15)
    for name in ("sgd", "adam", "radam"):
        empty = kernels.aux(name)
        assert empty.dtype == np.float64 and empty.size == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_all_finite(dtype):
    """cpu.all_finite is True exactly when no element is NaN or +-inf (huge, tiny and
    negative-zero values are finite), at any position and size."""
    big = np.finfo(dtype).max
    tiny = np.finfo(dtype).smallest_subnormal
    assert cpu.all_finite(np.zeros(0, dtype))
    assert cpu.all_finite(np.array([big, -big, tiny, -0.0, 1.0], dtype))
    for n in (1, 2, 17, 100_003):
        x = np.ones(n, dtype)
        assert cpu.all_finite(x)
        for bad in (np.nan, np.inf, -np.inf):
            for i in {0, n // 2, n - 1}:
                y = x.copy()
                y[i] = bad
                assert not cpu.all_finite(y), (n, bad, i)


def _fresh_nadam(n=6):
    p = np.linspace(-1, 1, n)
    s, hp, aux, h = low_level("nadam", {}, np.float64, np.zeros(n))
    kernels.nadam_coefficients(hp, 1, aux, h)  # a state away from the initial one
    kernels.nadam(p, np.ones(n), s, h)
    return p, np.full(n, 0.5), s, hp, aux, h


# (argument index in (p, g, s, hp, aux, h), replacement, message)
_MISFITS = [
    (1, np.ones(5), r"g has shape \(5,\); needed: \(6,\) \(the shape of p\)"),
    (1, np.ones(7), r"g has shape \(7,\); needed: \(6,\)"),
    (2, np.zeros((2, 5)), r"s has shape \(2, 5\); needed: \(2, 6\) \(see nadam.kernels.state\)"),
    (2, np.zeros((3, 6)), r"s has shape \(3, 6\); needed: \(2, 6\)"),
    (3, np.zeros(3), r"hp has shape \(3,\); needed: \(8,\) \(see nadam.kernels.hyperparameters"),
    (4, np.zeros(0), r"aux has shape \(0,\); needed: \(1,\) \(see nadam.kernels.aux\)"),
    (5, np.zeros(10), r"h has shape \(10,\); needed: \(11,\) \(see nadam.kernels.coeff"),
]


@pytest.mark.parametrize("entry", ["kernel", "coefficients", "stepper", "checked_stepper"])
@pytest.mark.parametrize(
    "misfit", _MISFITS, ids=["g-short", "g-long", "s-short", "s-rows", "hp", "aux", "h"]
)
def test_misfit_arrays_raise_before_writing(entry, misfit):
    """The compiled entry points check the lengths of their arrays (O(1)) and raise
    ValueError naming the array, its shape and the one needed, before writing
    anything: never an out-of-bounds read or write, never half an update (NAdam's
    aux, advanced by the coefficients, included)."""
    k, bad, message = misfit
    args = list(_fresh_nadam())
    args[k] = bad
    before = [a.copy() for a in args]
    rule = get_rule("nadam")
    p, g, s, hp, aux, h = args
    call = {
        "kernel": lambda: kernels.nadam(p, g, s, h),
        "coefficients": lambda: kernels.nadam_coefficients(hp, 2, aux, h),
        "stepper": lambda: cpu.stepper(rule, (), False)(p, g, s, hp, 2, aux, h),
        "checked_stepper": lambda: cpu.checked_stepper(rule, (), True)(p, g, s, hp, 2, aux, h),
    }[entry]
    uses = {"kernel": {0, 1, 2, 5}, "coefficients": {3, 4, 5}}.get(entry, set(range(6)))
    if k not in uses:
        call()  # an array the entry point does not take: runs normally
        return
    with pytest.raises(cpu.ArrayShapeError, match=message) as info:
        call()
    assert isinstance(info.value, ValueError)
    for a, b in zip(args, before, strict=True):
        assert np.array_equal(a, b)


def test_misfit_arrays_raise_inside_njit():
    """The checks also fire in the caller's own compiled loop (the module docstring's
    pattern), as a ValueError in Python."""
    p = np.ones(4)
    s, hp, aux, h = low_level("adam", {}, np.float64, np.zeros(5))
    with pytest.raises(ValueError, match=r"s has shape \(2, 5\); needed: \(2, 4\)"):
        _docstring_style_fit(p, s, hp, aux, h, 3)
    assert np.array_equal(p, np.ones(4))


_CACHE_SCRIPT = """
import sys
import numpy as np
from nadam import kernels
from nadam.kernels import cpu
from nadam.rules import get_rule

rule, n = get_rule("adam"), 100_000
p, g = np.linspace(-1.0, 1.0, n), np.ones(n)
s, hp, aux, h = kernels.state("adam", n), kernels.hyperparameters("adam"), kernels.aux("adam"), \\
    kernels.coefficient_buffer("adam")
if sys.argv[1] == "pieces":
    kernels.adam_coefficients(hp, 1, aux, h)
    kernels.get("adam", parallel=True)(p, g, s, h)
    assert cpu.all_finite(g)
else:
    cpu.stepper(rule, (False,), True)(p, g, s, hp, 1, aux, h)
    assert cpu.checked_stepper(rule, (False,), False)(p, g, s, hp, 1, aux, h)
print("ok")
"""


@pytest.mark.slow
def test_cached_callers_of_parallel_code_run_in_a_later_process(tmp_path):
    """The steppers, compiled in a process that loaded the kernels and the finiteness
    check from numba's cache, run when a third process loads them from the cache (numba
    drops the thread start-up hook of such a caller of a prange loop: it crashed)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    script = tmp_path / "script.py"
    script.write_text(_CACHE_SCRIPT)
    for stage in ("pieces", "callers", "callers"):  # compile, compile over the cache, load
        run = subprocess.run(
            [sys.executable, str(script), stage], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0 and run.stdout.strip() == "ok", (stage, run.stderr[-2000:])


_COMPILED_SCRIPT = """
import numpy as np
from numba.core import event
import nadam

compiled = []

class Listener(event.Listener):
    def on_start(self, e):
        d = e.data["dispatcher"]
        compiled.append((d.py_func.__name__, d.targetoptions.get("no_cpython_wrapper", False)))

    def on_end(self, e):
        pass

event.register("numba:compile", Listener())
x = np.zeros(10)
nadam.Prodigy(x).step(np.ones(10))
for name, bare in compiled:
    print(name, bare)
"""


def test_the_first_step_compiles_no_wrapper_nothing_calls(tmp_path):
    """Of what the first step of a two-pass rule compiles, only the step is called from
    Python: everything else is compiled without numba's CPython and C wrappers, and a
    rule's host functions and their helpers are compiled once and called, not inlined
    at numba's IR level (what a fresh process waits for, docs/benchmarks.md "Compile
    time and first call")."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-c", _COMPILED_SCRIPT], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    compiled = dict(line.split() for line in run.stdout.splitlines())
    wrapped = {name for name, bare in compiled.items() if bare == "False"}
    assert len(wrapped) == 1 and wrapped.pop().startswith("checked_step_prodigy"), compiled
    called = {n.split("_")[1] for n in compiled if n.startswith("prodigy_") and "_called" in n}
    assert called == {"coefficients", "finish"}, compiled
    helpers = {"_common", "_prodigy_dlr", "_prodigy_beta3", "prodigy_update", "prodigy_accumulate"}
    assert helpers <= set(compiled), compiled


_FORK_SCRIPT = """
import multiprocessing
import numpy as np
import nadam

def child(queue):
    x = np.ones(100_000)  # above PARALLEL_THRESHOLD: the prange kernels
    nadam.Adam(x).step(np.ones_like(x))
    queue.put(float(x[0]))

if __name__ == "__main__":
    x = np.ones(100)  # the parent only runs serial kernels
    nadam.Adam(x).step(np.ones_like(x))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    process.join(60)
    print(process.exitcode, queue.get(timeout=1) if process.exitcode == 0 else None)
"""


@pytest.mark.slow
def test_a_forked_child_runs_the_threaded_kernels(tmp_path):
    """Importing nadam and stepping small arrays starts no threads, so a child forked
    afterwards can run the threaded kernels (GNU OpenMP aborts a forked child whose
    parent had started its threads)."""
    script = tmp_path / "fork.py"
    script.write_text(_FORK_SCRIPT)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    code, x0 = run.stdout.split()
    assert code == "0" and float(x0) == pytest.approx(0.999), (run.stdout, run.stderr[-2000:])
