"""nadam.methods through scipy.optimize.minimize itself (scipy's custom-method path)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.optimize as so

import nadam
from nadam.rules import RULES

rng = np.random.default_rng(0)
A = rng.normal(size=(50, 4))
B = rng.normal(size=50)


def lsq(x, A, b):
    r = A @ x - b
    return r @ r / len(b), 2 * A.T @ r / len(b)


def lsq_value(x, A, b):
    return lsq(x, A, b)[0]


def lsq_grad(x, A, b):
    return lsq(x, A, b)[1]


OPTIONS = {"lr": 0.01, "maxiter": 200}


def test_every_rule_has_a_method():
    assert sorted(nadam.methods.__all__) == sorted(RULES)
    for name in RULES:
        method = getattr(nadam.methods, name)
        assert method.__name__ == name and f"nadam.methods.{name}" in method.__doc__


@pytest.mark.parametrize("name", sorted(RULES))
def test_scipy_runs_each_method_like_nadam_minimize(name):
    via_scipy = so.minimize(
        lsq,
        np.zeros(4),
        args=(A, B),
        jac=True,
        method=getattr(nadam.methods, name),
        options=OPTIONS,
    )
    direct = nadam.minimize(lsq, np.zeros(4), args=(A, B), jac=True, method=name, options=OPTIONS)
    assert isinstance(via_scipy, so.OptimizeResult)
    np.testing.assert_array_equal(via_scipy.x, direct.x)
    for key in ("fun", "nit", "nfev", "njev", "status", "success", "message"):
        assert via_scipy[key] == direct[key], key
    assert via_scipy.fun < lsq(np.zeros(4), A, B)[0]


@pytest.mark.parametrize("jac", [lsq_grad, None])
def test_separate_or_finite_difference_gradients(jac):
    res = so.minimize(
        lsq_value,
        np.zeros(4),
        args=(A, B),
        jac=jac,
        method=nadam.methods.adam,
        options={"lr": 0.05, "maxiter": 3000},
    )
    exact = np.linalg.lstsq(A, B, rcond=None)[0]
    np.testing.assert_allclose(res.x, exact, atol=1e-4)
    if jac is None:
        assert res.nfev == res.njev * 5  # 1 + n evaluations per finite-difference gradient


def test_bounds_tol_and_callback_through_scipy():
    seen = []

    def callback(intermediate_result):
        seen.append(intermediate_result.nit)

    res = so.minimize(
        lsq,
        np.zeros(4),
        args=(A, B),
        jac=True,
        method=nadam.methods.adam,
        bounds=so.Bounds(-0.05, 0.05),
        tol=1e-3,
        callback=callback,
        options={"lr": 0.01, "maxiter": 5000},
    )
    assert np.all(np.abs(res.x) <= 0.05) and res.status == 0
    assert "gtol (0.001)" in res.message
    assert seen == list(range(1, res.nit + 1))
    ref = so.minimize(
        lsq, np.zeros(4), args=(A, B), jac=True, method="L-BFGS-B", bounds=[(-0.05, 0.05)] * 4
    )
    np.testing.assert_allclose(res.x, ref.x, atol=1e-3)


def test_stop_iteration_through_scipy():
    def callback(xk):
        if len(calls) == 4:
            raise StopIteration
        calls.append(xk)

    calls = []
    res = so.minimize(
        lsq,
        np.zeros(4),
        args=(A, B),
        jac=True,
        method=nadam.methods.rmsprop,
        callback=callback,
        options=OPTIONS,
    )
    assert res.status == 99 and not res.success and res.nit == 5


def test_hess_is_ignored_and_constraints_are_refused():
    res = so.minimize(
        lsq,
        np.zeros(4),
        args=(A, B),
        jac=True,
        method=nadam.methods.sgd,
        hess=lambda x, *a: np.eye(4),
        options=OPTIONS,
    )
    assert res.nit == 200
    with pytest.raises(ValueError, match="constraints are not supported by nadam.methods.sgd"):
        so.minimize(
            lsq,
            np.zeros(4),
            args=(A, B),
            jac=True,
            method=nadam.methods.sgd,
            constraints={"type": "eq", "fun": lambda x: x[0]},
        )


def test_unknown_option_warns_at_the_callers_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        so.minimize(
            lsq,
            np.zeros(4),
            args=(A, B),
            jac=True,
            method=nadam.methods.adam,
            options={"maxiter": 2, "colour": "red"},
        )
    (w,) = [w for w in caught if issubclass(w.category, so.OptimizeWarning)]
    assert "Unknown solver options: colour" in str(w.message)
    assert w.filename == __file__


def test_bad_hyperparameter_through_scipy():
    with pytest.raises(ValueError, match="Invalid eps: -1.0"):
        so.minimize(
            lsq,
            np.zeros(4),
            args=(A, B),
            jac=True,
            method=nadam.methods.adam,
            options={"eps": -1.0},
        )


def test_minibatch_result_is_evaluated_on_all_the_data_through_scipy():
    """Issue 15 item 1: through scipy.optimize.minimize with jac=True (scipy memoises
    fun on x only), res.fun and res.jac are the full-data values at res.x, as with
    nadam.minimize, not the last minibatch's cached ones; x is the same either way."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10000, 3))
    y = X @ [1.0, -2.0, 0.5] + rng.normal(size=10000)

    def f(w, X, y):
        r = X @ w - y
        return np.mean(r**2), 2 * X.T @ r / len(y)

    o = {"lr": 0.05, "maxiter": 500, "batch_size": 32, "seed": 0}
    b = so.minimize(f, np.zeros(3), args=(X, y), jac=True, method=nadam.methods.adam, options=o)
    direct = nadam.minimize(f, np.zeros(3), args=(X, y), jac=True, options=o)
    np.testing.assert_array_equal(b.x, direct.x)
    full_f, full_g = f(b.x, X, y)
    assert b.fun == full_f, f"res.fun {b.fun} is not f(res.x) {full_f} on all the data"
    np.testing.assert_array_equal(b.jac, full_g)
    assert b.fun == direct.fun and b.nfev == direct.nfev
