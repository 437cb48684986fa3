"""nadam.minimize against independent references (scipy's L-BFGS-B, analytic
gradients, closed-form bounded optima), plus its contract: stopping rules,
callbacks, bounds, minibatches, streams, resumption and bad input."""

from __future__ import annotations

import doctest
import re
import warnings

import numpy as np
import pytest
import scipy.optimize as so
from numba import njit
from scipy.special import expit

import nadam
from nadam import Minimizer, minimizer, optimizers, sampling
from nadam.loop import compiled as loop_compiled
from nadam.loop.objective import FiniteDifferences
from nadam.rules import RULES

# ---------------------------------------------------------------------------
# A real data set: L2-regularised logistic regression on breast cancer
# ---------------------------------------------------------------------------

LAM = 1e-3


def logistic(w, X, y, lam):
    """Mean log-loss + lam/2 |w|^2 and its gradient (any number of rows)."""
    z = X @ w
    f = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * lam * (w @ w)
    g = X.T @ (expit(z) - y) / len(y) + lam * w
    return f, g


@pytest.fixture(scope="module")
def data():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_breast_cancer()
    X = (d.data - d.data.mean(0)) / d.data.std(0)
    X = np.hstack([np.ones((len(X), 1)), X])
    return X, d.target.astype(np.float64)


@pytest.fixture(scope="module")
def optimum(data):
    X, y = data
    ref = so.minimize(
        logistic,
        np.zeros(X.shape[1]),
        args=(X, y, LAM),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000},
    )
    assert ref.success
    return ref


def test_full_batch_adam_reaches_lbfgsb_optimum(data, optimum):
    X, y = data
    res = nadam.minimize(
        logistic,
        np.zeros(X.shape[1]),
        args=(X, y, LAM),
        jac=True,
        options={"lr": 0.03, "maxiter": 20_000},
    )
    assert res.success and res.status == 0, res.message
    assert abs(res.fun - optimum.fun) < 1e-4
    assert res.fun == pytest.approx(logistic(res.x, X, y, LAM)[0], abs=0)
    np.testing.assert_array_equal(res.jac, logistic(res.x, X, y, LAM)[1])
    assert np.max(np.abs(res.jac)) <= 1e-5
    assert res.nfev == res.njev == res.nit + 1


def test_minibatch_adam_within_two_percent(data, optimum):
    X, y = data
    res = nadam.minimize(
        logistic,
        np.zeros(X.shape[1]),
        args=(X, y, LAM),
        jac=True,
        options={
            "lr": nadam.schedules.cosine(0.03, total_steps=2000),
            "maxiter": 2000,
            "batch_size": 64,
            "seed": 0,
        },
    )
    assert res.nit == 2000 and res.status == 1 and not res.success
    # fun and jac are re-evaluated on all rows at the end.
    f, g = logistic(res.x, X, y, LAM)
    assert res.fun == f
    np.testing.assert_array_equal(res.jac, g)
    assert res.nfev == 2002
    assert (res.fun - optimum.fun) / optimum.fun < 0.02


def test_minibatch_runs_are_reproducible_by_seed(data):
    X, y = data
    opts = {"lr": 0.01, "maxiter": 300, "batch_size": 50}

    def run(seed):
        return nadam.minimize(
            logistic,
            np.zeros(X.shape[1]),
            args=(X, y, LAM),
            jac=True,
            options={**opts, "seed": seed},
        ).x

    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_float32_stays_float32(data, optimum):
    X, y = (a.astype(np.float32) for a in data)

    def f32(w, X, y):
        f, g = logistic(w, X, y, np.float32(LAM))
        return f, g.astype(np.float32)

    res = nadam.minimize(
        f32,
        np.zeros(X.shape[1], np.float32),
        args=(X, y),
        jac=True,
        options={"lr": 0.03, "maxiter": 3000, "gtol": 1e-4},
    )
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    assert abs(res.fun - optimum.fun) < 1e-3


def test_batch_size_equal_to_rows_is_the_full_batch(data):
    X, y = data
    kw = dict(args=(X, y, LAM), jac=True, options={"lr": 0.01, "maxiter": 50})
    full = nadam.minimize(logistic, np.zeros(X.shape[1]), **kw)
    kw["options"] = {**kw["options"], "batch_size": len(y), "seed": 3}
    same = nadam.minimize(logistic, np.zeros(X.shape[1]), **kw)
    np.testing.assert_array_equal(full.x, same.x)


def test_minibatches_sample_aligned_rows_and_pass_other_args():
    X = np.arange(40.0).reshape(20, 2)
    y = X[:, 0] * 10
    seen = []

    def fun(x, Xb, yb, tag):
        assert tag == "tag"
        np.testing.assert_array_equal(Xb[:, 0] * 10, yb)
        seen.append(Xb[:, 0].copy())
        return 0.0, np.ones(1)

    nadam.minimize(
        fun,
        np.zeros(1),
        args=(X, y, "tag"),
        jac=True,
        options={"batch_size": 6, "seed": 0, "maxiter": 9},
    )
    assert [len(rows) for rows in seen] == [6] * 10 + [20]  # + the final full evaluation
    rows = np.concatenate(seen[:10]) / 2
    # Epoch-wise sampling: every block of 20 consecutive draws is a permutation.
    for epoch in rows.reshape(3, 20):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(20))


# ---------------------------------------------------------------------------
# Every method
# ---------------------------------------------------------------------------

LR = {"sgd": 0.5, "adadelta": 1.0, "adagrad": 0.1, "rmsprop": 0.01, "prodigy": 1.0}


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_method_runs_and_descends(name, data):
    X, y = data
    x0 = np.zeros(X.shape[1])
    f0 = logistic(x0, X, y, LAM)[0]
    res = nadam.minimize(
        logistic,
        x0,
        args=(X, y, LAM),
        method=name.upper(),
        jac=True,
        options={"lr": LR.get(name, RULES[name].examples[0].get("lr", 0.01)), "maxiter": 300},
    )
    assert (res.nit, res.status) == (300, 1) or res.status == 0  # (or converged earlier)
    assert res.fun < 0.5 * f0


@pytest.mark.parametrize("name", ["adam", "nadam", "sgd"])
def test_iterates_equal_the_plain_optimizer_loop(name, data):
    # The ground truth: evaluate, step, clip, by hand with the optimizer class.
    X, y = data
    hyper = {"lr": nadam.schedules.exponential(0.05, 0.99), "weight_decay": 1e-3}
    lo, hi = -0.2, 0.3
    x = np.zeros(X.shape[1])
    opt = nadam.optimizer_class(name)(x, **hyper)
    for _ in range(60):
        opt.step(logistic(x, X, y, LAM)[1])
        np.clip(x, lo, hi, out=x)
    res = nadam.minimize(
        logistic,
        np.zeros(X.shape[1]),
        args=(X, y, LAM),
        method=name,
        jac=True,
        bounds=so.Bounds(lo, hi),
        options={**hyper, "maxiter": 60},
    )
    np.testing.assert_array_equal(res.x, x)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="Invalid method: 'lbfgs'.*adam.*radam") as info:
        nadam.minimize(lambda x: 0.0, np.zeros(2), method="lbfgs")
    assert "scipy" not in str(info.value)
    with pytest.raises(ValueError, match=r"adam.*radam.*\('L-BFGS-B' is scipy's: call scipy"):
        nadam.minimize(lambda x: 0.0, np.zeros(2), method="L-BFGS-B")


# ---------------------------------------------------------------------------
# Finite differences against the analytic gradient
# ---------------------------------------------------------------------------


def smooth(x):
    return np.sum(np.sin(x) * x**2) + (x @ x) ** 2  # analytic: complex-step safe


def smooth_grad(x):
    return np.cos(x) * x**2 + 2 * x * np.sin(x) + 4 * (x @ x) * x


@pytest.mark.parametrize(
    "jac, tol, calls",
    [
        (None, 1e-5, 1 + 4),
        ("2-point", 1e-5, 1 + 4),
        ("3-point", 1e-8, 1 + 8),
        ("cs", 1e-13, 1 + 4),
    ],
)
def test_finite_differences_match_the_analytic_gradient(jac, tol, calls):
    x0 = np.array([0.3, -1.2, 2.0, 0.0])
    res = nadam.minimize(smooth, x0, jac=jac, options={"maxiter": 0})
    np.testing.assert_allclose(res.jac, smooth_grad(x0), rtol=tol, atol=tol)
    assert res.nfev == calls and res.njev == 1 and res.nit == 0


@pytest.mark.parametrize("method", ["2-point", "3-point"])
def test_finite_differences_stay_inside_the_bounds(method):
    lo, hi = -1.0, 1.0

    def fun(x):
        assert np.all((lo <= x) & (x <= hi)), x
        return float(np.sum((x - 2.0) ** 2 + x**3))

    x = np.array([1.0, -1.0, 0.5])
    fd = FiniteDifferences(fun, x, method, bounds=(np.full(3, lo), np.full(3, hi)))
    f, g = fd(x)
    np.testing.assert_allclose(g, 2 * (x - 2) + 3 * x**2, rtol=1e-5)


def test_callable_jac_is_used():
    x0 = np.array([0.5, -0.5])
    res = nadam.minimize(smooth, x0, jac=smooth_grad, options={"lr": 0.05, "maxiter": 2000})
    assert res.status == 0 and res.fun < 1e-8
    np.testing.assert_array_equal(res.jac, smooth_grad(res.x))
    assert res.nfev == res.njev


# ---------------------------------------------------------------------------
# Bounds: the optimum of a separable quadratic over a box is the clipped centre
# ---------------------------------------------------------------------------

CENTRE = np.array([3.0, -2.0, 0.5, 0.0])


def quad(x):
    return float(np.sum((x - CENTRE) ** 2)), 2 * (x - CENTRE)


@pytest.mark.parametrize(
    "bounds",
    [
        [(-1, 1), (None, -2.5), (0, None), (-1, 1)],
        so.Bounds([-1, -np.inf, 0, -1], [1, -2.5, np.inf, 1]),
    ],
)
def test_bounds_project_onto_the_box(bounds):
    x0 = np.array([5.0, 5.0, -5.0, 0.3])  # outside: projected first
    res = nadam.minimize(quad, x0, jac=True, bounds=bounds, options={"lr": 0.05, "maxiter": 5000})
    np.testing.assert_allclose(res.x, [1.0, -2.5, 0.5, 0.0], atol=1e-5)
    assert res.status == 0  # gtol on the projected gradient
    assert np.abs(res.jac[0]) > 1  # the raw gradient is not small at an active bound


def test_every_iterate_is_inside_the_bounds():
    def cb(xk):
        assert np.all((-0.5 <= xk) & (xk <= 0.5))

    nadam.minimize(
        quad,
        np.zeros(4),
        jac=True,
        bounds=so.Bounds(-0.5, 0.5),
        callback=cb,
        options={"lr": 0.3, "maxiter": 100},
    )


@pytest.mark.parametrize(
    "bounds, match",
    [
        ([(0, 1), (2, 1), (0, 1), (0, 1)], r"bounds\[1\] has low > high"),
        ([(0, 1)] * 3, "3 .* pairs but x0 has 4"),
        (so.Bounds(np.zeros(3), np.ones(3)), "bounds.lb has 3 elements but x0 has 4"),
        ([(0, 1, 2)] * 4, r"Invalid bounds\[0\]: .*allowed: a \(low, high\) pair"),
        ([(np.nan, 1)] * 4, "NaN"),
        ([(0, 1), (np.inf, None), (0, 1), (0, 1)], r"bounds\[1\] = \(inf, inf\) holds no finite"),
        ([(0, 1), (0, 1), (0, 1), (None, -np.inf)], r"bounds\[3\] = \(-inf, -inf\) holds no"),
    ],
)
def test_bad_bounds(bounds, match):
    with pytest.raises(ValueError, match=match):
        nadam.minimize(quad, np.zeros(4), jac=True, bounds=bounds)


# ---------------------------------------------------------------------------
# Callback
# ---------------------------------------------------------------------------


def test_callback_xk_gets_a_copy_of_every_iterate():
    xs = []
    res = nadam.minimize(
        quad, np.zeros(4), jac=True, callback=xs.append, options={"lr": 0.1, "maxiter": 20}
    )
    assert len(xs) == res.nit == 20
    assert len({x.tobytes() for x in xs}) == 20  # copies, not one aliased buffer
    np.testing.assert_array_equal(xs[-1], res.x)


def test_callback_intermediate_result_and_stop_iteration():
    seen = []

    def callback(intermediate_result):
        seen.append(intermediate_result)
        if intermediate_result.nit == 7:
            raise StopIteration

    res = nadam.minimize(quad, np.zeros(4), jac=True, callback=callback, options={"lr": 0.1})
    assert res.status == 99 and not res.success
    assert res.message == "`callback` raised `StopIteration`."
    assert res.nit == 7 and [r.nit for r in seen] == list(range(1, 8))
    last = seen[-1]
    np.testing.assert_array_equal(last.x, res.x)
    assert last.fun == res.fun == quad(res.x)[0]


# ---------------------------------------------------------------------------
# Stopping rules
# ---------------------------------------------------------------------------


def test_maxiter_and_tol():
    res = nadam.minimize(quad, np.zeros(4), jac=True, options={"maxiter": 3})
    assert (res.nit, res.status, res.success) == (3, 1, False)
    assert "Maximum number of iterations" in res.message
    budget = {"lr": 0.1, "maxiter": 10_000}
    loose = nadam.minimize(quad, np.zeros(4), jac=True, tol=0.5, options=budget)
    tight = nadam.minimize(quad, np.zeros(4), jac=True, options=budget)  # gtol 1e-5
    assert loose.status == tight.status == 0 and loose.nit < tight.nit
    assert np.max(np.abs(loose.jac)) <= 0.5 and "gtol (0.5)" in loose.message
    assert "gtol (1e-05)" in tight.message
    # Without maxiter the windows stop the run, and gtol only when given.
    windows = nadam.minimize(quad, np.zeros(4), jac=True, options={"lr": 0.1})
    assert windows.status == 6 and windows.nit > tight.nit
    assert (
        nadam.minimize(quad, np.zeros(4), jac=True, tol=1e-5, options={"lr": 0.1}).nit == tight.nit
    )
    # An explicit gtol option wins over tol, as in scipy.
    assert (
        nadam.minimize(quad, np.zeros(4), jac=True, tol=0.5, options={**budget, "gtol": 1e-5}).nit
        == tight.nit
    )


def scripted_losses(values):
    """An objective that returns the next of ``values`` whatever x (a tiny gradient)."""
    it = iter(values)

    def fun(x):
        return float(next(it)), np.full_like(x, 1e-12)

    return fun


@pytest.mark.parametrize("patience", [1, 2, 7])
def test_patience_counts_the_evaluations_without_improvement(patience):
    # A flat loss: the first evaluation is the best; each later one is a stall, and the
    # run stops at the evaluation that makes patience of them: iterate x_patience.
    res = nadam.minimize(
        scripted_losses([3.0] * 100),
        np.zeros(2),
        jac=True,
        options={"lr": 0.1, "maxiter": 50, "gtol": 0.0, "patience": patience, "smoothing": 0.0},
    )
    assert (res.status, res.nit, res.nfev) == (2, patience, patience + 1)


@pytest.mark.parametrize(
    ("start", "ratio", "stalls"),
    [
        # a relative improvement of 1e-5 per step (5e-5 after five) stays below
        # min_delta = 1e-4 of the best (though 0.01 per step in absolute terms): each
        # step is a stall, and the fifth stops the run
        (1000.0, 1 - 1e-5, True),
        # 2e-4 per step is above it (though 2e-7 in absolute terms): none is
        (1e-3, 1 - 2e-4, False),
    ],
)
def test_min_delta_is_relative_to_the_best_smoothed_loss(start, ratio, stalls):
    res = nadam.minimize(
        scripted_losses(start * ratio ** np.arange(100)),
        np.zeros(2),
        jac=True,
        options={
            "lr": 0.1,
            "maxiter": 50,
            "gtol": 0.0,
            "patience": 5,
            "min_delta": 1e-4,
            "smoothing": 0.0,
        },
    )
    assert (res.status, res.nit) == ((2, 5) if stalls else (1, 50))


def test_patience_stops_a_noisy_objective():
    rng = np.random.default_rng(0)

    def noisy(x):
        return float(x @ x + 0.01 * rng.normal()), 2 * x + 0.1 * rng.normal(size=x.shape)

    res = nadam.minimize(
        noisy, np.ones(3), jac=True, options={"lr": 0.05, "patience": 50, "maxiter": 100_000}
    )
    assert res.status == 2 and res.success, res.message
    assert "patience (50)" in res.message
    assert res.nit < 5000 and np.max(np.abs(res.x)) < 0.1


def test_return_best_keeps_the_lowest_loss():
    # lr too large: Adam oscillates around the minimum of |x|, and the last
    # iterate is not the best.
    def absval(x):
        return float(np.abs(x).sum()), np.sign(x)

    last = nadam.minimize(absval, np.array([0.35]), jac=True, options={"lr": 0.3, "maxiter": 30})
    best = nadam.minimize(
        absval, np.array([0.35]), jac=True, options={"lr": 0.3, "maxiter": 30, "return_best": True}
    )
    xs = []
    nadam.minimize(
        absval, np.array([0.35]), jac=True, callback=xs.append, options={"lr": 0.3, "maxiter": 30}
    )
    losses = [0.35] + [abs(x[0]) for x in xs]
    assert best.fun == min(losses) < last.fun
    assert abs(best.x[0]) == min(losses)
    np.testing.assert_array_equal(best.jac, np.sign(best.x))


@pytest.mark.parametrize("bad, what", [("f", "objective"), ("g", "gradient")])
def test_nonfinite_stops_cleanly(bad, what):
    def fun(x):
        f, g = quad(x)
        if x[0] > 0.05:  # reached after a few steps of lr 0.01
            f, g = (np.nan, g) if bad == "f" else (f, np.full_like(g, np.inf))
        return f, g

    res = nadam.minimize(fun, np.zeros(4), jac=True, options={"lr": 0.01, "maxiter": 1000})
    assert res.status == 3 and not res.success
    assert f"the {what} is not finite at iteration {res.nit}" in res.message
    assert np.all(np.isfinite(res.x)) and 0.05 < res.x[0] < 0.07


@pytest.mark.parametrize("jac", [True, None])
def test_an_exactly_zero_gradient_says_so(jac):
    # "gradient norm <= gtol (0)" read as a rule the user set.  (Finite differences on
    # a plateau: exactly 0 too.)
    fun = (lambda x: (float(x @ x), 2 * x)) if jac else (lambda x: 1.0)
    res = nadam.minimize(fun, np.zeros(3), jac=jac)
    assert (res.status, res.success, res.nit) == (0, True, 0)
    assert res.message == "Optimization terminated successfully: the gradient is exactly 0 " + (
        "(with bounds, its projection)."
    )
    res = nadam.minimize(fun, np.zeros(3), jac=jac, options={"gtol": 1e-3})
    assert res.message == "Optimization terminated successfully: gradient norm <= gtol (0.001)."


def test_a_loss_unbounded_below_is_named(recwarn):
    # sum(x) falls until it overflows to -inf: "not finite" read as NaN from fun.
    res = nadam.minimize(lambda x: (float(np.sum(x)), np.ones_like(x)), np.zeros(3), jac=True)
    assert res.status == 3 and not res.success
    assert f"the objective is -inf at iteration {res.nit} (is it bounded below?)" in res.message
    assert np.all(np.isfinite(res.x)) and res.fun < -1e307


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------


def test_streamed_args_one_tuple_per_step(data, optimum):
    X, y = data
    rng = np.random.default_rng(1)

    def stream(steps):
        for _ in range(steps):
            rows = rng.integers(0, len(y), 64)
            yield X[rows], y[rows], LAM

    res = nadam.minimize(
        logistic,
        np.zeros(X.shape[1]),
        args=stream(1500),
        jac=True,
        options={"lr": 0.01, "maxiter": 10**6},
    )
    assert res.status == 4 and res.success and "exhausted" in res.message
    assert res.nit == res.nfev == 1500
    assert (logistic(res.x, X, y, LAM)[0] - optimum.fun) / optimum.fun < 0.05


@pytest.mark.parametrize("steps", [3, 20, 300])
def test_a_stream_end_reports_its_last_evaluation(data, steps):
    # fun and jac of the last batch, as the status table says: jac was the gradient
    # kept at the last chunk boundary (evaluation 0 of a short stream).
    X, y = data
    seen = []

    def recorded(x, *batch):
        f, g = logistic(x, *batch)
        seen.append((f, g.copy()))
        return f, g

    res = nadam.minimize(
        recorded,
        np.zeros(X.shape[1]),
        args=iter([(X[:64], y[:64], LAM)] * steps),
        jac=True,
        options={"lr": 0.05, "maxiter": 10**6, "gtol": 0.0},
    )
    assert res.status == 4 and len(seen) == res.nfev == steps
    assert res.fun == seen[-1][0]
    np.testing.assert_array_equal(res.jac, seen[-1][1])


def test_stream_errors():
    with pytest.raises(ValueError, match="iterator yielded no data"):
        nadam.minimize(quad, np.zeros(4), jac=True, args=iter([]))
    with pytest.raises(ValueError, match="batch_size cannot be combined"):
        nadam.minimize(quad, np.zeros(4), jac=True, args=iter([()]), options={"batch_size": 2})


# ---------------------------------------------------------------------------
# x0, the objective's view of x, the result
# ---------------------------------------------------------------------------


def test_x0_shape_dtype_and_isolation():
    x0 = [[1, 2], [3, 4]]  # ints: the iterate is float64
    shapes = []

    def fun(x):
        shapes.append((x.shape, x.dtype))
        f, g = float(np.sum(x**2)), 2 * x
        x[0, 0] = 1e9  # a copy: the run's iterate is not the objective's to change
        return f, g

    res = nadam.minimize(fun, x0, jac=True, options={"maxiter": 5})
    same = nadam.minimize(
        lambda x: (float(np.sum(x**2)), 2 * x), x0, jac=True, options={"maxiter": 5}
    )
    np.testing.assert_array_equal(res.x, same.x)
    assert res.x.shape == (2, 2) and res.x.dtype == np.float64
    assert set(shapes) == {((2, 2), np.dtype(np.float64))}
    x0 = np.ones(3, np.float32)
    nadam.minimize(lambda x: (float(x @ x), 2 * x), x0, jac=True, options={"maxiter": 5})
    np.testing.assert_array_equal(x0, 1.0)  # never modified


def _least_squares():
    rng = np.random.default_rng(4)
    A, b = rng.normal(size=(30, 3)), rng.normal(size=30)

    def loss_grad(x, A=A, b=b):
        r = A @ x - b
        return 0.5 * (r @ r) / len(b), A.T @ r / len(b)

    return loss_grad, (A, b)


@pytest.mark.parametrize("jac", [True, None, "3-point"])
def test_an_objective_may_keep_its_x_as_with_scipy(jac):
    # The memoiser a scipy user writes keeps x itself, not a copy (scipy passes a new
    # array at each call).  Given the iterate, updated in place, it always "hit" and the
    # run returned x0 as converged; given copies it is the objective itself.
    loss_grad, _ = _least_squares()
    fun = loss_grad if jac is True else (lambda x: loss_grad(x)[0])

    class Memo:
        x = value = None

        def __call__(self, x):
            if self.x is None or not np.array_equal(x, self.x):
                self.x, self.value = x, fun(x)
            return self.value

    res = nadam.minimize(Memo(), np.zeros(3), jac=jac)
    ref = nadam.minimize(fun, np.zeros(3), jac=jac)
    # (2-point differences can vanish exactly near the optimum: status 0, gtol = 0 met)
    assert res.success and (res.status, res.nit, res.fun) == (ref.status, ref.nit, ref.fun)
    np.testing.assert_array_equal(res.x, ref.x)
    best = so.minimize(loss_grad, np.zeros(3), jac=True, method="BFGS", options={"gtol": 1e-12})
    np.testing.assert_allclose(res.x, best.x, rtol=1e-5)


def test_the_points_an_objective_keeps_are_those_it_was_given():
    # A history of points, kept without copying: with minibatches the objective also
    # scores the windows' candidates and evaluates the answer on all rows at the end.
    loss_grad, args = _least_squares()
    points = []

    def fun(x, A, b):
        points.append(x)
        return loss_grad(x, A, b)

    res = nadam.minimize(
        fun, np.zeros(3), args=args, jac=True, options={"batch_size": 8, "seed": 1}
    )
    assert res.nfev == len(points) and len({id(p) for p in points}) == len(points)
    np.testing.assert_array_equal(points[0], 0.0)
    np.testing.assert_array_equal(points[-1], res.x)  # the final evaluation's point
    assert len({p.tobytes() for p in points}) > len(points) // 2


@pytest.mark.parametrize(
    "x0, exc, match",
    [
        ([1.0, np.nan], ValueError, r"x0 must be finite; x0\[1\] = nan"),
        ([np.inf], ValueError, "x0 must be finite"),
        (["a", "b"], TypeError, "x0 must hold real numbers"),
        ([1 + 2j], TypeError, "x0 must hold real numbers"),
        ([True], TypeError, "x0 must hold real numbers"),
        ([], ValueError, "x0 must have at least one element"),
    ],
)
def test_bad_x0(x0, exc, match):
    with pytest.raises(exc, match=match):
        nadam.minimize(quad, x0, jac=True)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"fun": 3}, TypeError, "Invalid fun: 3"),
        (
            {"jac": "4-point"},
            ValueError,
            "Invalid jac: '4-point'; allowed: True, a callable, None or one of",
        ),
        ({"callback": 3}, TypeError, "Invalid callback: 3"),
        ({"options": [("lr", 1)]}, TypeError, "Invalid options: .*allowed: a dict"),
        ({"tol": -1}, ValueError, "Invalid tol: -1; allowed: a finite real number >= 0"),
        ({"options": {"maxiter": -1}}, ValueError, "Invalid option maxiter: -1"),
        ({"options": {"maxiter": 1.5}}, TypeError, "Invalid option maxiter: 1.5"),
        ({"options": {"gtol": -1.0}}, ValueError, "Invalid option gtol: -1.0"),
        ({"options": {"patience": 0}}, ValueError, "Invalid option patience: 0"),
        (
            {"options": {"smoothing": 1.0}},
            ValueError,
            "Invalid option smoothing: 1.0; allowed: a finite real number >= 0 and < 1",
        ),
        ({"options": {"min_delta": "x"}}, TypeError, "Invalid option min_delta: 'x'"),
        ({"options": {"lr": -1.0}}, ValueError, "Invalid lr: -1.0"),
        ({"options": {"betas": (0.9, 1.0)}}, ValueError, r"Invalid betas\[1\]: 1.0"),
        ({"options": {"amsgrad": "yes"}}, TypeError, "Invalid amsgrad: 'yes'"),
        (
            {"options": {"finite_diff_rel_step": 0}},
            ValueError,
            "Invalid option finite_diff_rel_step: 0",
        ),
        ({"options": {"return_best": "no"}}, TypeError, "Invalid option return_best: 'no'"),
    ],
)
def test_bad_arguments(kw, exc, match):
    call = {"fun": quad, "x0": np.zeros(4), "jac": True, **kw}
    with pytest.raises(exc, match=match):
        nadam.minimize(**call)


@pytest.mark.parametrize(
    "args, options, exc, match",
    [
        (
            (np.zeros((10, 2)), np.zeros(9)),
            {"batch_size": 2},
            ValueError,
            r"same length along axis 0.*args\[0\]: 10, args\[1\]: 9",
        ),
        ((np.zeros(10),), {"batch_size": 0}, ValueError, "Invalid option batch_size: 0"),
        (
            (np.zeros(10),),
            {"batch_size": 11},
            ValueError,
            r"Invalid batch_size: 11",
        ),
        ((3.0,), {"batch_size": 2}, ValueError, "batch_size needs at least one NumPy array"),
        ((np.zeros(10),), {"batch_size": 2, "seed": -1}, ValueError, "Invalid option seed"),
        ((np.zeros(10),), {"batch_size": 2, "seed": 1.5}, TypeError, "Invalid option seed"),
    ],
)
def test_bad_minibatch_arguments(args, options, exc, match):
    with pytest.raises(exc, match=match):
        nadam.minimize(lambda x, *a: (0.0, x), np.zeros(1), args=args, jac=True, options=options)


@pytest.mark.parametrize(
    "fun, jac, exc, match",
    [
        (lambda x: 1.0, True, TypeError, r"fun must return \(f, g\) when jac=True"),
        (lambda x: (np.ones(2), x), True, ValueError, "must return a scalar objective"),
        (lambda x: ("a", x), True, TypeError, "must return a real scalar"),
        (lambda x: (1.0, list(x)), True, TypeError, "must be a NumPy array of shape"),
        (
            lambda x: (1.0, np.zeros(3)),
            True,
            ValueError,
            r"has shape \(3,\) at iteration 0, but x0 has shape \(4,\)",
        ),
        (
            lambda x: 1.0,
            lambda x: np.zeros(4, np.float32),
            TypeError,
            "gradient from jac has dtype float32",
        ),
    ],
)
def test_bad_objective_output(fun, jac, exc, match):
    with pytest.raises(exc, match=match):
        nadam.minimize(fun, np.zeros(4), jac=jac)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("jac", [True, None, "3-point", "cs"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1,), (1, 1)])
def test_a_loss_of_one_element_is_its_value_as_in_scipy(jac, dtype, shape):
    # scipy takes fun's (x - 3)**2 on an x of shape (1,) as a scalar: the same run as
    # the scalar loss, bit for bit, and no NumPy deprecation (float() of an array).
    w = np.array([2.0], dtype)

    def scalar(x):
        f = np.sum(w * (x - 3) ** 2)
        return (f, 2 * w * (x - 3)) if jac is True else f

    def array(x):
        out = scalar(x)
        return (np.reshape(out[0], shape), out[1]) if jac is True else np.reshape(out, shape)

    x0 = np.zeros(shape[-1:], dtype)
    a, b = (nadam.minimize(f, x0, jac=jac, options={"maxiter": 300}) for f in (scalar, array))
    assert type(b.fun) is float
    assert b.x.dtype == dtype
    assert (a.nit, a.fun) == (b.nit, b.fun)
    np.testing.assert_array_equal(a.x, b.x)


def test_indexing_the_iterate_of_a_scalar_x0_says_why_it_fails():
    # scipy passes a scalar x0 as shape (1,); nadam keeps x0's shape, so x[0] fails in
    # fun: the error gains a note that says so (the user's own error is not replaced).
    with pytest.raises(IndexError, match="0-dimensional") as caught:
        nadam.minimize(lambda x: (x[0] - 3.0) ** 2, 1.0)
    assert "give x0 as [value]" in " ".join(caught.value.__notes__)
    with pytest.raises(IndexError) as caught:
        nadam.minimize(lambda x: (x[1] - 3.0) ** 2, [1.0])
    assert not hasattr(caught.value, "__notes__")
    assert nadam.minimize(lambda x: (x[0] - 3.0) ** 2, [1.0]).x == pytest.approx([3.0])


def test_unknown_options_warn_naming_the_key():
    # The method named is the one the user gave (Adam without lr: its tuning-free form,
    # whose own option r_eps is listed), not the rule that runs underneath.
    tuning_free = "maxfun .valid for method 'adam' without lr: .*r_eps"
    with pytest.warns(so.OptimizeWarning, match=tuning_free):
        nadam.minimize(quad, np.zeros(4), jac=True, options={"maxfun": 2, "maxiter": 2})
    with pytest.warns(so.OptimizeWarning, match="maxfun .valid for method 'adam': lr, "):
        nadam.minimize(quad, np.zeros(4), jac=True, options={"maxfun": 2, "lr": 0.1})
    with pytest.warns(so.OptimizeWarning, match="Unknown solver options: momentum, bogus"):
        res = nadam.minimize(
            quad, np.zeros(4), jac=True, options={"momentum": 0.9, "bogus": 1, "maxiter": 2}
        )
    assert res.nit == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nadam.minimize(
            quad, np.zeros(4), method="sgd", jac=True, options={"momentum": 0.9, "maxiter": 2}
        )


def test_disp_shows_a_progress_bar(capsys):
    nadam.minimize(quad, np.zeros(4), jac=True, options={"disp": True, "maxiter": 50})
    out, err = capsys.readouterr()
    assert "it/s" in err and "loss=" in err and "50/50" in err
    assert "Maximum number of iterations" in out and "Iterations: 50" in out


# ---------------------------------------------------------------------------
# State: chunks and exact resumption
# ---------------------------------------------------------------------------


def _resumable_run(data, chunks):
    X, y = data
    kw = dict(
        args=(X, y, LAM),
        method="nadam",
        jac=True,
        bounds=[(-0.5, 0.5)] * X.shape[1],
        options={
            "lr": nadam.schedules.reduce_on_plateau(0.02, patience=20),
            "batch_size": 32,
            "seed": 5,
            "maxiter": 400,
            "patience": 10**6,
            "return_best": True,
        },
    )
    run = Minimizer(logistic, np.zeros(X.shape[1]), **kw)
    for n in chunks:
        assert run.run(n) is None
        saved = run.state_dict()
        run = Minimizer(logistic, np.zeros(X.shape[1]), **kw)  # a fresh process, say
        run.load_state_dict(saved)
    return run.run()


def test_resume_from_exported_state_is_bit_exact(data):
    whole = _resumable_run(data, [])
    resumed = _resumable_run(data, [1, 37, 100, 62])
    np.testing.assert_array_equal(whole.x, resumed.x)
    for key in ("fun", "nit", "nfev", "njev", "status", "message"):
        assert whole[key] == resumed[key], key


def test_state_export_is_plain_arrays_and_scalars(data):
    X, y = data
    run = Minimizer(
        logistic,
        np.zeros(X.shape[1]),
        args=(X, y, LAM),
        jac=True,
        options={"batch_size": 10, "seed": 1, "maxiter": 10},
    )
    run.run(3)
    state = run.state_dict()
    assert all(isinstance(v, (np.ndarray, int, float, str)) for v in state.values()), state
    assert state["nit"] == 3 and state["sampler.pos"] == 30
    other = Minimizer(
        logistic,
        np.zeros(X.shape[1]),
        args=(X, y, LAM),
        method="sgd",
        jac=True,
        options={"batch_size": 10, "seed": 1},
    )
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(state)


# ---------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------


def test_sampler_epochs_are_permutations_and_straddle():
    mb = sampling.Minibatches((np.arange(10),), 4, seed=3)
    draws = np.concatenate([mb.next()[0].copy() for _ in range(10)])  # 40 = 4 epochs
    for epoch in draws.reshape(4, 10):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(10))
    assert mb.state_dict()["epoch"] == 3


def test_sampler_is_bit_identical_in_compiled_code():
    n, b, steps = 37, 5, 50

    @njit
    def compiled(state, perm, idx, steps):
        out = np.empty((steps, idx.shape[0]), np.int64)
        for k in range(steps):
            sampling.next_batch(state, perm, idx)
            out[k] = idx
        return out

    py = sampling.Minibatches((np.arange(n),), b, seed=11)
    expected = np.array([py.next()[0].copy() for _ in range(steps)])
    jit = sampling.Minibatches((np.arange(n),), b, seed=11)
    np.testing.assert_array_equal(compiled(jit.state, jit.perm, jit.idx, steps), expected)


def test_sampler_state_round_trip_and_uniformity():
    a = sampling.Minibatches((np.arange(13),), 3, seed=2)
    for _ in range(7):
        a.next()
    b = sampling.Minibatches((np.arange(13),), 3, seed=99)
    b.load_state_dict(a.state_dict())
    for _ in range(20):
        np.testing.assert_array_equal(a.next()[0], b.next()[0])
    # Where row 0 lands in the first permutation, over many seeds: uniform.
    counts = np.zeros(5)
    perm = np.empty(5, np.int64)
    for seed in range(5000):
        sampling.shuffle(perm, sampling.seed_key(seed), 0)
        counts[np.flatnonzero(perm == 0)[0]] += 1
    chi2 = np.sum((counts - 1000) ** 2 / 1000)
    assert chi2 < 20  # 4 degrees of freedom: p < 0.001 at 18.5


# ---------------------------------------------------------------------------
# The examples in the docstrings run
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", [minimizer, nadam.schedules, nadam.methods, sampling, loop_compiled, optimizers]
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------------------
# Issue 15: a step that produces a non-finite iterate; run() at and after the end
# ---------------------------------------------------------------------------

_RNG = np.random.default_rng(15)
_A = _RNG.normal(size=64) + 2.0
_B = 3.0 * _A + 0.1 * _RNG.normal(size=64)


@njit(cache=True)
def _flat_in_x1(x, a, b, reach):
    """f = mean((a x0 - b)^2), whose gradient in x1 is exactly 0: with eps = 0 Adam's
    first step is 0/0 in x1, a NaN iterate.  ``reach``: f also reads x1 (0 * x1)."""
    r = a * x[0] - b
    f = np.sum(r * r) / len(b)
    if reach:
        f += 0.0 * x[1]
    g = np.zeros_like(x)
    g[0] = 2.0 * np.sum(a * r) / len(b)
    return f, g


_PATHS = {
    "full batch": {"compiled": False},
    "minibatch": {"compiled": False, "batch_size": 16, "seed": 0},
    "compiled": {"compiled": True},
    "compiled minibatch": {"compiled": True, "batch_size": 16, "seed": 0},
    "return_best": {"compiled": False, "return_best": True},
}


@pytest.mark.parametrize(
    "path, reach",
    [(p, r) for p in _PATHS for r in (True, False)],
    ids=lambda v: v if isinstance(v, str) else ("f reads it" if v else "f ignores it"),
)
def test_a_nonfinite_iterate_is_never_returned(path, reach):
    """Issue 15 item 2: a step that would write NaN into x (Adam with eps=0 on a zero
    gradient component: 0/0) ends the run with status 3 and a message naming x, on every
    path (Python loop, minibatches, the compiled loop, return_best), whether or not the
    NaN reaches f.  The step is guarded element by element, in the pass that writes x:
    the element whose new value is not finite keeps its last finite value (0 here), the
    others take the step; fun and jac are evaluated at the x returned."""
    x0 = np.zeros(2)
    res = nadam.minimize(
        _flat_in_x1,
        x0,
        args=(_A, _B, reach),
        jac=True,
        options={"lr": 0.1, "eps": 0.0, "maxiter": 50, **_PATHS[path]},
    )
    assert np.all(np.isfinite(res.x)), f"status {res.status}, x = {res.x}"
    assert (res.status, res.success) == (3, False), res.message
    assert re.search(r"^NaN result encountered: .*\b(iterate|x)\b", res.message), res.message
    assert res.x[1] == x0[1]  # its last finite value
    if path == "return_best":
        np.testing.assert_array_equal(res.x, x0)  # the best evaluated iterate
    else:
        assert res.x[0] != x0[0] and res.nit == 1  # the step was taken where it was finite
    assert res.fun == _flat_in_x1(res.x, _A, _B, reach)[0]


def test_an_overflowing_float32_step_is_never_returned():
    """Issue 15 item 2: float32 with lr = 1e39 (inf in float32) steps to x = -inf; the
    run ends with status 3 on the last finite iterate, x0."""

    def quad32(x):
        return float(x @ x), 2 * x

    x0 = np.array([1.0, 2.0], np.float32)
    res = nadam.minimize(quad32, x0, jac=True, options={"lr": 1e39, "maxiter": 10})
    assert np.all(np.isfinite(res.x)), f"status {res.status}, x = {res.x}"
    assert (res.status, res.success) == (3, False), res.message
    assert re.search(r"^NaN result encountered: .*\b(iterate|x)\b", res.message), res.message
    np.testing.assert_array_equal(res.x, x0)


def _lsq(x, A, b):
    r = A @ x - b
    return r @ r / len(b), 2 * A.T @ r / len(b)


_LSQ_DATA = (_RNG.normal(size=(120, 4)), _RNG.normal(size=120))


@pytest.mark.parametrize("batch_size", [None, 16], ids=["full-batch", "minibatch"])
def test_the_chunk_that_reaches_maxiter_returns_the_result(batch_size):
    """Issue 15 item 9: with maxiter = 30, the third run(10) reaches nit 30 and returns
    the result (today it returns None and a fourth call is needed), the same result as
    one run()."""
    kw = dict(
        args=_LSQ_DATA,
        jac=True,
        options={"lr": 0.05, "maxiter": 30, "batch_size": batch_size, "seed": 1},
    )
    whole = Minimizer(_lsq, np.zeros(4), **kw).run()
    m = Minimizer(_lsq, np.zeros(4), **kw)
    assert m.run(10) is None and m.run(10) is None
    last = m.run(10)
    assert m.state.nit == 30
    assert last is not None, "run(10) reached maxiter but returned None"
    np.testing.assert_array_equal(last.x, whole.x)
    for key in ("fun", "nit", "nfev", "njev", "status", "message"):
        assert last[key] == whole[key], key


@pytest.mark.parametrize("batch_size", [None, 16], ids=["full-batch", "minibatch"])
def test_running_a_finished_run_again_changes_nothing(batch_size):
    """Issue 15 item 13: run() on a finished run is a no-op returning the same result: no
    evaluation of fun (on another batch), no extra nfev."""
    calls = []

    def counted(x, A, b):
        calls.append(len(b))
        return _lsq(x, A, b)

    m = Minimizer(
        counted,
        np.zeros(4),
        args=_LSQ_DATA,
        jac=True,
        options={"lr": 0.05, "maxiter": 30, "batch_size": batch_size, "seed": 1},
    )
    first = m.run()
    n = len(calls)
    second = m.run()
    assert len(calls) == n, f"fun was called again: {calls[n:]}"
    np.testing.assert_array_equal(second.x, first.x)
    np.testing.assert_array_equal(second.jac, first.jac)
    for key in ("fun", "nit", "nfev", "njev", "status", "message"):
        assert second[key] == first[key], key
