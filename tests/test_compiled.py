"""The compiled minimize loop (nadam.compiled) against the Python loop, its ground truth.

Every comparison runs the same problem twice, ``compiled=True`` and
``compiled=False``, and asserts bit-identical iterates and identical counters,
status and message.  The objectives are ``@njit(cache=True)``, so their drivers
come from numba's cache after the first run; each distinct combination of rule
variant and argument types is one driver compile, which the tests keep few.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

import nadam
from nadam import Minimizer
from nadam.kernels import cpu
from nadam.loop import compiled
from nadam.threads import get_threads

# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------

NORMAL, NAN_LOSS, INF_GRADIENT, WRONG_SHAPE = range(4)


@njit(cache=True)
def objective(x, A, b, mode, limit):
    """Least squares ``|Ax - b|²/n`` and its gradient; ``mode`` breaks it on purpose:
    a NaN loss or an infinite gradient once ``x[0] > limit``, or a gradient of the
    wrong shape."""
    r = A @ x - b
    n = b.shape[0]
    f = r @ r / n
    g = (2.0 / n) * (A.T @ r)
    if mode == NAN_LOSS and x[0] > limit:
        f = np.nan
    elif mode == INF_GRADIENT and x[0] > limit:
        g[0] = np.inf
    elif mode == WRONG_SHAPE:
        g = np.zeros(x.shape[0] + 1)
    return f, g


@njit(cache=True)
def loss_only(x, A, b, mode, limit):
    r = A @ x - b
    return r @ r / b.shape[0]


@njit(cache=True)
def gradient_only(x, A, b, mode, limit):
    return (2.0 / b.shape[0]) * (A.T @ (A @ x - b))


@njit(cache=True)
def matrix_objective(x, A, b):
    """Least squares in the parameters of a matrix x (any dtype): the gradient has
    x's shape and dtype."""
    r = A @ x.ravel() - b
    g = A.T @ r
    g *= 2.0 / b.shape[0]  # in place: stays in x's dtype
    return r @ r / b.shape[0], g.reshape(x.shape)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    A = rng.normal(size=(200, 5))
    b = A @ np.array([1.0, -0.8, 0.3, 0.0, 2.0]) + 0.1 * rng.normal(size=200)
    return A, b


def args(data, mode=NORMAL, limit=0.0):
    A, b = data
    return (A, b, mode, limit)


#: Everything the compiled loop does at once: minibatches, bounds (some active at the
#: optimum), return_best and a schedule.  One driver per rule variant.
BOUNDS = [(-0.5, 0.5), (-1.0, 1.0), (-1.0, 1.0), (-1.0, 1.0), (-1.0, 1.5)]


def everything(lr, maxiter=300, **more) -> dict:
    return {
        "bounds": BOUNDS,
        "options": {
            "lr": nadam.schedules.cosine(lr, total_steps=maxiter, warmup_steps=10),
            "maxiter": maxiter,
            "batch_size": 16,
            "seed": 5,
            "return_best": True,
            "history": True,
            **more,
        },
    }


def both(fun, x0, **kw):
    """Run with the compiled and the Python loop; assert they agree exactly."""
    kw.setdefault("options", {})
    fast = nadam.minimize(fun, x0, **{**kw, "options": {**kw["options"], "compiled": True}})
    slow = nadam.minimize(fun, x0, **{**kw, "options": {**kw["options"], "compiled": False}})
    assert_same(fast, slow)
    return fast, slow


def assert_same(a, b):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.jac, b.jac)
    assert a.x.dtype == b.x.dtype and a.x.shape == b.x.shape
    for key in ("nit", "nfev", "njev", "status", "success", "message"):
        assert a[key] == b[key], key
    assert a.fun == b.fun or (np.isnan(a.fun) and np.isnan(b.fun))
    assert ("history" in a) == ("history" in b)
    for key, value in a.get("history", {}).items():
        np.testing.assert_array_equal(value, b.history[key], err_msg=key)


# ---------------------------------------------------------------------------
# Same iterates as the Python loop
# ---------------------------------------------------------------------------


# Adam as below is the driver most tests share; a rule (and its options) that
# changes the state's layout is another driver, compiled once.
@pytest.mark.parametrize(
    "method, hyper",
    [
        ("adam", {"weight_decay": 1e-3}),
        ("nadam", {"momentum_decay": 0.1}),
        ("rmsprop", {"centered": True, "momentum": 0.5}),
    ],
)
def test_bit_identical_with_minibatches_bounds_schedule_and_return_best(data, method, hyper):
    fast, _ = both(
        objective,
        np.zeros(5),
        args=args(data),
        jac=True,
        method=method,
        **everything(0.02, **hyper),
    )
    assert fast.status == 1 and fast.nit == 300
    assert np.all(fast.x >= [lo for lo, _ in BOUNDS]) and np.all(fast.x <= [hi for _, hi in BOUNDS])


def test_bit_identical_full_batch_to_gtol(data):
    fast, _ = both(
        objective, np.zeros(5), args=args(data), jac=True, options={"lr": 0.05, "maxiter": 5000}
    )
    assert fast.status == 0 and 0 < fast.nit < 5000  # gtol, not maxiter


def test_threaded_kernel(data, monkeypatch):
    # Large parameter vectors get the prange kernel; the driver calls it as is.
    monkeypatch.setattr(cpu, "PARALLEL_THRESHOLD", 0)
    if not cpu.choose_parallel(5, get_threads()):
        pytest.skip("numba runs one thread here: the prange kernel is never chosen")
    both(
        objective,
        np.zeros(5),
        args=args(data),
        jac=True,
        options={"lr": 0.02, "maxiter": 200, "batch_size": 16, "seed": 2},
    )


def test_reduce_on_plateau_and_patience(data):
    sched = nadam.schedules.reduce_on_plateau(0.05, factor=0.5, patience=5)
    kw = everything(0.05, maxiter=3000, patience=40, min_delta=1e-3)
    kw["options"]["lr"] = sched
    fast, _ = both(objective, np.zeros(5), args=args(data), jac=True, **kw)
    assert fast.status == 2 and fast.nit < 3000  # the smoothed loss stalled
    assert sched.state[0] == 0.05  # a copy ran, not the caller's schedule


def test_float32_and_matrix_parameters(data):
    A, b = (a.astype(np.float32) for a in data)
    x0 = np.zeros((5, 1), np.float32)
    fast, _ = both(
        matrix_objective,
        x0,
        args=(A, b),
        jac=True,
        options={"lr": 0.01, "maxiter": 200, "batch_size": 20, "seed": 0},
    )
    assert fast.x.dtype == np.float32 and fast.x.shape == (5, 1)


def test_separate_jac(data):
    both(
        loss_only,
        np.zeros(5),
        args=args(data),
        jac=gradient_only,
        options={"lr": 0.02, "maxiter": 200, "batch_size": 32, "seed": 1},
    )


@pytest.mark.parametrize("mode, what", [(NAN_LOSS, "objective"), (INF_GRADIENT, "gradient")])
def test_non_finite_stops_as_in_python(data, mode, what):
    fast, _ = both(objective, np.zeros(5), args=args(data, mode, 0.3), jac=True, **everything(0.02))
    assert fast.status == 3 and not fast.success and 0 < fast.nit < 300
    assert f"the {what} is not finite at iteration {fast.nit}" in fast.message
    assert np.all(np.isfinite(fast.x))


# ---------------------------------------------------------------------------
# Callbacks, chunks, state
# ---------------------------------------------------------------------------


def test_callback_sees_every_iterate(data):
    def recorder(out):
        def callback(intermediate_result):
            r = intermediate_result
            out.append((r.x, r.fun, r.jac, r.nit))

        return callback

    seen = {True: [], False: []}
    for mode in (True, False):
        kw = everything(0.02, maxiter=40, compiled=mode)
        nadam.minimize(
            objective, np.zeros(5), args=args(data), jac=True, callback=recorder(seen[mode]), **kw
        )
    assert len(seen[True]) == len(seen[False]) == 40
    for (x1, f1, g1, n1), (x2, f2, g2, n2) in zip(seen[True], seen[False], strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(g1, g2)
        assert (f1, n1) == (f2, n2)


def test_callback_stop_iteration(data):
    def stop_at_17(xk):
        stop_at_17.calls += 1
        if stop_at_17.calls == 17:
            raise StopIteration

    for mode in (True, False):
        stop_at_17.calls = 0
        kw = everything(0.02, compiled=mode)
        res = nadam.minimize(
            objective, np.zeros(5), args=args(data), jac=True, callback=stop_at_17, **kw
        )
        assert (res.status, res.nit, res.success) == (99, 17, False)
        if mode:
            first = res
    assert_same(first, res)


def test_state_between_compiled_chunks_is_the_python_loops(data):
    kw = dict(args=args(data), jac=True, **everything(0.02))
    states = {}
    for mode in (True, False):
        kw["options"]["compiled"] = mode
        m = Minimizer(objective, np.zeros(5), **kw)
        assert m.run(37) is None and m.run(1) is None
        states[mode] = m.state_dict()
        if mode:
            resumed = m
    assert states[True].keys() == states[False].keys()
    for key, value in states[True].items():
        np.testing.assert_array_equal(value, states[False][key], err_msg=key)
    # A compiled run's state continues in the Python loop, and the other way round.
    kw["options"]["compiled"] = False
    python = Minimizer(objective, np.zeros(5), **kw)
    python.load_state_dict(states[True])
    kw["options"]["compiled"] = True
    back = Minimizer(objective, np.zeros(5), **kw)
    back.load_state_dict(states[False])
    assert_same(python.run(), resumed.run())
    assert_same(back.run(), nadam.minimize(objective, np.zeros(5), **kw))


def test_chunks_grow_and_python_is_entered_rarely(data, monkeypatch):
    m = Minimizer(
        objective,
        np.zeros(5),
        args=args(data),
        jac=True,
        **everything(0.01, maxiter=20_000, gtol=0.0),
    )
    m.run(1)
    calls = []
    call = compiled.CompiledLoop.__call__
    monkeypatch.setattr(
        compiled.CompiledLoop, "__call__", lambda self, *a: calls.append(None) or call(self, *a)
    )
    res = m.run()
    assert res.nit == 20_000 and len(calls) < 30


def test_progress_bar(data, capsys):
    res = nadam.minimize(
        objective,
        np.zeros(5),
        args=args(data),
        jac=True,
        **everything(0.02, disp=True, compiled=True),
    )
    out = capsys.readouterr()
    assert f"Iterations: {res.nit}" in out.out and "300/" in out.err


# ---------------------------------------------------------------------------
# When the loop is compiled, and the errors when it cannot be
# ---------------------------------------------------------------------------


def test_auto_compiles_njit_objectives_only(data):
    fast = Minimizer(objective, np.zeros(5), args=args(data), jac=True, options={"maxiter": 5})
    assert fast.compiled and isinstance(fast.loop, compiled.CompiledLoop)
    fast.run()
    assert fast.loop.driver is not None

    def python_objective(x, A, b, mode, limit):
        return objective(x, A, b, mode, limit)

    slow = Minimizer(python_objective, np.zeros(5), args=args(data), jac=True)
    assert not slow.compiled
    off = Minimizer(objective, np.zeros(5), args=args(data), jac=True, options={"compiled": False})
    assert not off.compiled


@pytest.mark.parametrize(
    "kw, error, words",
    [
        (dict(fun=lambda x, *a: (0.0, x)), TypeError, "numba @njit function"),
        (dict(jac=None), ValueError, "finite differences"),
        (dict(jac=lambda x, *a: x), TypeError, "jac must be True or a numba @njit"),
        (dict(args=iter([()])), ValueError, "stream"),
        (dict(options={"lr": lambda t: 0.1}), TypeError, "nadam.schedules"),
    ],
)
def test_compiled_true_refuses_at_once(data, kw, error, words):
    call = dict(fun=objective, x0=np.zeros(5), args=args(data), jac=True)
    options = {**kw.pop("options", {}), "compiled": True}
    with pytest.raises(error, match=words):
        nadam.minimize(**{**call, **kw}, options=options)


def test_an_objective_that_does_not_compile(data):
    @njit
    def broken(x, A, b, mode, limit):
        return x.undefined_attribute, x

    with pytest.raises(TypeError, match="fun does not compile for arguments") as info:
        nadam.minimize(broken, np.zeros(5), args=args(data), jac=True, options={"compiled": True})
    assert isinstance(info.value.__cause__, TypingError)
    assert "undefined_attribute" in str(info.value)


def test_wrong_return_types(data):
    @njit
    def scalar_only(x, A, b, mode, limit):
        return 1.0

    @njit
    def float32_gradient(x, A, b, mode, limit):
        return 1.0, x.astype(np.float32)

    for fun, words in ((scalar_only, r"return \(f, g\)"), (float32_gradient, "precisions")):
        with pytest.raises(TypeError, match=words):
            nadam.minimize(fun, np.zeros(5), args=args(data), jac=True, options={"compiled": True})
        # "auto" leaves it to the Python loop, whose first evaluation says the same.
        with pytest.raises(TypeError, match=words):
            nadam.minimize(fun, np.zeros(5), args=args(data), jac=True)


def test_gradient_of_the_wrong_shape(data):
    for mode in (True, False):
        with pytest.raises(
            ValueError, match=r"has shape \(6,\) at iteration 0, but x0 has shape \(5,\)"
        ):
            nadam.minimize(
                objective,
                np.zeros(5),
                args=args(data, WRONG_SHAPE),
                jac=True,
                **everything(0.02, compiled=mode),
            )


def test_option_compiled_is_validated():
    with pytest.raises(
        ValueError, match="Invalid option compiled: 'yes'; allowed: one of 'auto', True, False"
    ):
        nadam.minimize(objective, np.zeros(5), jac=True, options={"compiled": "yes"})


def test_drivers_are_shared_and_cached_like_their_objective(data):
    kw = dict(args=args(data), jac=True, options={"maxiter": 3, "compiled": True})
    a, b = (Minimizer(objective, np.zeros(5), **kw) for _ in range(2))
    a.run()
    b.run()
    assert a.loop.driver is b.loop.driver
    assert a.loop.driver._cache.__class__.__name__ == "FunctionCache"
    assert compiled.is_cached(objective)

    @njit
    def uncached(x, A, b, mode, limit):
        return objective(x, A, b, mode, limit)

    assert not compiled.is_cached(uncached)


def test_module_docstring_example():
    import doctest

    assert doctest.testmod(compiled, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0
