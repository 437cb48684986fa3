"""nadam.minimize_many: each problem's entry is what nadam.minimize returns for it alone.

The reference is :func:`nadam.minimize` run on each problem by itself (tested against
naive formulas, torch and the reference packages elsewhere).  The ``@njit`` form runs
the same compiled loop on each problem's rows, and the vectorised form the same
compiled iteration on the values it is given, so each problem's numbers are the same
bits as its own run's (for the vectorised form: with the objective computing each row
as it computes that row alone).
"""

from __future__ import annotations

import math
import os
import signal
import warnings

import numpy as np
import pytest
from numba import njit
from scipy.optimize import Bounds, least_squares

import nadam
from nadam import schedules
from nadam.rules import RULES

T = np.linspace(0.0, 3.0, 20)


def decay_into(p, g, t, y):
    """Mean squared residual of a e^{-k t} + c; its gradient written into ``g``: plain
    Python, compiled here for the CPU and by tests/test_many_cuda.py for a device."""
    a, k, c = p[0], p[1], p[2]
    f = g0 = g1 = g2 = 0.0
    m = t.shape[0]
    for i in range(m):
        e = math.exp(-k * t[i])
        r = a * e + c - y[i]
        f += r * r
        g0 += r * e
        g1 -= r * a * t[i] * e
        g2 += r
    g[0], g[1], g[2] = 2 * g0 / m, 2 * g1 / m, 2 * g2 / m
    return f / m


_decay_into = njit(cache=True)(decay_into)


@njit(cache=True)
def decay(p, t, y):
    """:func:`decay_into`, returning ``(f, g)``."""
    g = np.empty(3, p.dtype)
    return _decay_into(p, g, t, y), g


def decay_rows(X, t, Y):
    """The vectorised form of :func:`decay`: ``k`` problems at once."""
    a, k, c = X[:, :1], X[:, 1:2], X[:, 2:]
    e = np.exp(-k * t)
    r = a * e + c - Y
    m = t.shape[0]
    G = np.stack([(r * e).sum(1), -(r * a * t * e).sum(1), r.sum(1)], axis=1) * (2 / m)
    return (r * r).sum(1) / m, G.astype(X.dtype)


def data(runs=5, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.column_stack(
        [rng.uniform(1, 3, runs), rng.uniform(0.5, 2, runs), rng.uniform(-0.5, 0.5, runs)]
    )
    Y = truth[:, :1] * np.exp(-truth[:, 1:2] * T) + truth[:, 2:]
    Y += 0.01 * rng.normal(size=Y.shape)
    x0 = rng.uniform(0.5, 1.5, (runs, 3)).astype(dtype)
    return x0, Y.astype(dtype), T.astype(dtype)


def decay_row(x, t, y):
    """:func:`decay_rows` of one problem: the reference of the vectorised form."""
    F, G = decay_rows(x[None], t, y[None])
    return F[0], G[0]


def alone(fun, x0, args, per_problem, b, **kw):
    rows = tuple(a[b] if p else a for a, p in zip(args, per_problem, strict=True))
    return nadam.minimize(fun, x0[b], args=rows, jac=True, **kw)


def assert_each_alone(res, x0, args, per_problem=(False, True), fun=decay, **kw):
    for b in range(len(x0)):
        ref = alone(fun, x0, args, per_problem, b, **kw)
        assert (res.nit[b], res.status[b], res.success[b]) == (ref.nit, ref.status, ref.success)
        assert res.message[b] == ref.message
        assert (res.nfev[b], res.njev[b]) == (ref.nfev, ref.njev)
        np.testing.assert_array_equal(res.x[b], ref.x)
        np.testing.assert_array_equal(res.jac[b], ref.jac)
        assert res.fun[b] == ref.fun


@pytest.mark.parametrize("method", list(RULES))
def test_every_rule_each_problem_equals_minimize(method):
    x0, Y, t = data()
    options = {"lr": 0.02, "maxiter": 40}
    if method == "adam_distance":
        options = {"lr": 1.0, "maxiter": 40}
    res = nadam.minimize_many(decay, x0, args=(t, Y), method=method, jac=True, options=options)
    assert res.x.shape == x0.shape and res.fun.shape == (len(x0),)
    assert_each_alone(res, x0, (t, Y), method=method, options=options)


@pytest.mark.parametrize(
    "options",
    [
        None,  # the tuning-free defaults: each problem's own windows and step size
        {"lr": 0.05},
        {"maxiter": 300},
        {"lr": 0.05, "maxiter": 400, "gtol": 1e-3},  # problems stop at different nit
        {"lr": 0.3, "maxiter": 300, "return_best": True},
        {"lr": 0.05, "maxiter": 300, "patience": 7, "min_delta": 1e-3, "smoothing": 0.5},
        {"lr": schedules.cosine(0.1, 200), "maxiter": 200},
        {"lr": schedules.reduce_on_plateau(0.1, patience=5), "maxiter": 200},
        {"lr": 0.05, "maxiter": 200, "average": "poly"},
        {"lr": 0.05, "maxiter": 200, "average": "ema", "average_decay": 0.9},
    ],
    ids=repr,
)
def test_options_each_problem_equals_minimize(options):
    x0, Y, t = data(runs=6)
    res = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)
    assert_each_alone(res, x0, (t, Y), options=options)


def test_the_defaults_solve_every_fit():
    x0, Y, t = data(runs=8, seed=3)
    res = nadam.minimize_many(decay, x0, args=(t, Y), jac=True)
    assert res.success.all()
    for b in range(len(x0)):  # the least-squares fit of each problem, from scipy
        ls = least_squares(lambda p, y=Y[b]: p[0] * np.exp(-p[1] * t) + p[2] - y, x0[b])
        assert res.fun[b] <= 2 * ls.cost / len(t) * (1 + 1e-6)


def test_float32_stays_float32():
    x0, Y, t = data(dtype=np.float32)
    options = {"lr": 0.02, "maxiter": 50}
    res = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    assert_each_alone(res, x0, (t, Y), options=options)


@pytest.mark.parametrize("per_row", [False, True])
def test_bounds_shared_or_per_problem(per_row):
    x0, Y, t = data()
    if per_row:
        lo = np.tile([0.0, 0.8, -1.0], (len(x0), 1))
        lo[::2, 1] = 1.2
        hi = np.full_like(lo, 5.0)
        bounds = (lo, hi)
    else:
        lo, hi = np.array([0.0, 1.2, -1.0]), np.array([5.0, 5.0, 0.1])
        bounds = list(zip(lo, hi, strict=True))
    options = {"lr": 0.05, "maxiter": 200}
    res = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, bounds=bounds, options=options)
    for b in range(len(x0)):
        rows = Bounds(lo[b], hi[b]) if per_row else bounds
        ref = nadam.minimize(decay, x0[b], args=(t, Y[b]), jac=True, bounds=rows, options=options)
        np.testing.assert_array_equal(res.x[b], ref.x)
        assert res.nit[b] == ref.nit
    assert (res.x[:, 1] >= (lo[:, 1] if per_row else lo[1])).all()


def test_a_problem_that_diverges_stops_alone():
    # Problem 2's data overflow its loss: it stops (non-finite), the others go on.
    x0, Y, t = data()
    Y[2, 3] = np.inf
    options = {"lr": 0.05, "maxiter": 100}
    res = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)
    assert res.status[2] == nadam.Status.NONFINITE and np.isfinite(res.x[2]).all()
    assert (np.delete(res.status, 2) == nadam.Status.MAXITER).all()
    assert_each_alone(res, x0, (t, Y), options=options)


@njit
def decay_wrong_sign(p, t, y):
    f, g = decay(p, t, y)
    return f, -g


def test_a_warm_start_from_converged_answers_is_converged():
    # Started again from their own answers, where the gradients are ~1e-11: for some, the
    # gradient predicts a fall over the runs' first move above the loss's rounding, the
    # steps (larger than the gradient warrants) all rise with the curvature, and the runs
    # end at x0.  The loss's slope measured along the gradient, curvature cancelled, does
    # fall: converged, not status 7 (48 of these 200 were).
    x0, Y, t = data(200)
    first = nadam.minimize_many(decay, x0, args=(t, Y))
    again = nadam.minimize_many(decay, first.x, args=(t, Y))
    assert (first.status == 6).all() and (again.status == 6).all()
    stayed = np.flatnonzero((again.x == first.x).all(axis=1))
    assert len(stayed) >= 10
    for b in stayed[:3]:
        ref = nadam.minimize(decay, first.x[b], args=(t, Y[b]), jac=True)
        assert (ref.status, ref.nit, ref.nfev) == (again.status[b], again.nit[b], again.nfev[b])


@pytest.mark.parametrize("form", ["njit", "vectorized"])
def test_a_problem_whose_gradient_has_the_wrong_sign_says_so_alone(form):
    # Problem 1's gradient is flipped (a per-problem sign): it never leaves x0 and says so
    # (status 7, as minimize does), the others converge.
    x0, Y, t = data()
    sign = np.ones(len(x0))
    sign[1] = -1.0
    if form == "njit":

        @njit
        def fun(p, t, y, s):
            f, g = decay(p, t, y)
            return f, s * g

        options = {}
    else:

        def fun(X, t, Y, s):
            F, G = decay_rows(X, t, Y)
            return F, s[:, None] * G

        options = {"vectorized": True}
    res = nadam.minimize_many(fun, x0, args=(t, Y, sign), options=options)
    assert res.status[1] == nadam.Status.NO_DESCENT and not res.success[1]
    np.testing.assert_array_equal(res.x[1], x0[1])
    assert (np.delete(res.status, 1) == nadam.Status.CONVERGED).all()
    ref = nadam.minimize(decay_wrong_sign, x0[1], args=(t, Y[1]), jac=True)
    assert (res.status[1], res.nit[1], res.message[1]) == (ref.status, ref.nit, ref.message)


def test_results_do_not_depend_on_the_threads():
    x0, Y, t = data(runs=9)
    out = [
        nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options={"threads": n})
        for n in (1, 2)
    ]
    np.testing.assert_array_equal(out[0].x, out[1].x)
    np.testing.assert_array_equal(out[0].nit, out[1].nit)


def test_per_problem_marks_which_args_have_a_row_per_problem():
    # B = 20 problems and 20 time points: t has B rows but is shared.
    x0, Y, t = data(runs=len(T))
    options = {"lr": 0.05, "maxiter": 30, "per_problem": (1,)}
    res = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)
    options.pop("per_problem")
    assert_each_alone(res, x0, (t, Y), options=options)
    # Without it, t is taken as per-problem, with a warning (t is as long as Y's rows):
    # a row of t is a number, not an array, and the error says how the args were taken.
    taken = r"args\[0\] \(of shape \(20,\)\) taken as per-problem.*args\[1\] has rows"
    said = r"receives args\[0\] row b \(shape \(20,\)\), args\[1\] row b .*per_problem"
    with pytest.warns(UserWarning, match=taken), pytest.raises(TypeError, match=said) as e:
        nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)
    assert "\x1b" not in str(e.value)  # (numba's terminal colours)


@njit
def weighted_decay(p, t, w, y):
    # Compiles with a number for t and w as well as with arrays: a wrong guess of which
    # args are per-problem would give wrong answers silently.
    e = np.exp(-p[1] * t)
    r = p[0] * e + p[2] - y
    g = np.empty(3)
    g[0] = 2 * np.sum(w * r * e)
    g[1] = -2 * np.sum(w * r * p[0] * t * e)
    g[2] = 2 * np.sum(w * r)
    return np.sum(w * r * r), g


def test_an_ambiguous_guess_of_the_per_problem_args_warns():
    runs = len(T)
    x0, Y, t = data(runs=runs)
    w = np.linspace(0.1, 1.0, runs)
    options = {"lr": 0.05, "maxiter": 30}
    with pytest.warns(UserWarning, match=r"args\[0\], args\[1\] .*per_problem") as caught:
        nadam.minimize_many(weighted_decay, x0, args=(t, w, Y), jac=True, options=options)
    assert len(caught) == 1 and caught[0].filename == __file__  # the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = nadam.minimize_many(
            weighted_decay, x0, args=(t, w, Y), jac=True, options={**options, "per_problem": [2]}
        )
        assert_each_alone(
            res, x0, (t, w, Y), (False, False, True), fun=weighted_decay, options=options
        )
        # No warning where B matches no other length (B = 5, 20 points).
        x0, Y, t = data()
        nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("adam", None),
        ("adam", {"lr": 0.05, "maxiter": 300, "gtol": 1e-3}),
        ("prodigy", {"maxiter": 200}),
        ("adamw_schedulefree", {"lr": 0.05, "maxiter": 100}),
        # Schedules reach the vectorised form's steps (they once kept lr = 0, and a
        # plateau schedule did not compile).
        ("adam", {"lr": schedules.cosine(0.1, 100), "maxiter": 100}),
        ("adam", {"lr": schedules.reduce_on_plateau(0.1, patience=3), "maxiter": 100}),
    ],
    ids=repr,
)
def test_vectorized_form_each_problem_equals_minimize(method, options):
    x0, Y, t = data(runs=6)
    calls = []

    def fun(X, t, Y):
        calls.append(len(X))
        return decay_rows(X, t, Y)

    res = nadam.minimize_many(
        fun,
        x0,
        args=(t, Y),
        method=method,
        jac=True,
        options={**(options or {}), "vectorized": True},
    )
    assert_each_alone(res, x0, (t, Y), fun=decay_row, method=method, options=options)
    # Each call evaluates the problems still running, frozen ones are not evaluated.
    assert max(calls) == len(x0) and sum(calls) == res.nfev.sum()


@pytest.mark.parametrize("options", [{"lr": 0.05, "maxiter": 20}, {}], ids=["lr", "defaults"])
def test_progress_bar_counts_the_problems(capsys, options):
    # (With the defaults, the windows stop the problems at their boundaries: the bar
    # stayed at 0/5.)
    x0, Y, t = data()
    nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options={**options, "disp": True})
    assert "5/5" in capsys.readouterr().err


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("x0", [np.ones(3), np.ones((2, 3, 1)), np.ones((0, 3))], ids=repr)
def test_x0_must_have_a_row_per_problem(x0):
    with pytest.raises(ValueError, match=r"x0 must have"):
        nadam.minimize_many(decay, x0, args=(T, np.ones((3, 20))), jac=True)


def test_a_per_problem_arg_needs_a_row_per_problem():
    x0, Y, t = data()
    with pytest.raises(ValueError, match=r"args\[1\] has 4 rows; .* 5"):
        nadam.minimize_many(decay, x0, args=(t, Y[:4]), jac=True, options={"per_problem": [1]})
    with pytest.raises(ValueError, match=r"per_problem"):
        nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options={"per_problem": [2]})


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"batch_size": 4}, ValueError, "option batch_size is not supported"),
        ({"history": True}, ValueError, "option history is not supported"),
        ({"callback": print}, ValueError, "option callback is not supported"),
        ({"checkpoint": 3}, TypeError, "option checkpoint"),
        ({"vectorized": "yes"}, TypeError, "vectorized"),
        ({"device": "gpu"}, ValueError, r"options\['device'\]: 'gpu'"),
        ({"lr": -1.0}, ValueError, "lr"),
    ],
)
def test_bad_options_are_refused(options, error, match):
    x0, Y, t = data()
    with pytest.raises(error, match=match):
        nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)


def test_a_python_objective_must_be_njit_or_vectorized():
    x0, Y, t = data()
    with pytest.raises(TypeError, match="numba @njit"):
        nadam.minimize_many(decay.py_func, x0, args=(t, Y), jac=True)
    with pytest.raises(ValueError, match="jac"):
        nadam.minimize_many(decay, x0, args=(t, Y), jac=False)


def test_jac_is_true_by_default():
    x0, Y, t = data()
    options = {"lr": 0.01, "maxiter": 50}
    implicit = nadam.minimize_many(decay, x0, args=(t, Y), options=options)
    explicit = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)
    assert np.array_equal(implicit.x, explicit.x)


@pytest.mark.parametrize(
    ("fun", "match"),
    [
        (lambda X, t, Y: (np.zeros(len(X) + 1), np.zeros_like(X)), r"F of shape \(6,\)"),
        (lambda X, t, Y: (np.zeros(len(X)), np.zeros((len(X), 2))), r"G of shape"),
        (lambda X, t, Y: (np.zeros(len(X)), np.zeros(X.shape, np.float32)), "dtype float32"),
    ],
)
def test_a_vectorized_objective_with_wrong_shapes_is_refused(fun, match):
    x0, Y, t = data()
    with pytest.raises(ValueError, match=match):
        nadam.minimize_many(fun, x0, args=(t, Y), jac=True, options={"vectorized": True})


def test_a_vectorized_objective_that_fails_at_once_is_told_what_it_got():
    # Y for more problems than x0 has rows (a subsetting slip) is taken as shared, and
    # NumPy's broadcast error in fun would say nothing of that: a note on it does.
    x0, Y, t = data()
    with pytest.raises(ValueError, match="could not be broadcast") as caught:
        nadam.minimize_many(decay_rows, x0[:3], args=(t, Y), options={"vectorized": True})
    note = " ".join(caught.value.__notes__)
    assert "X of shape (3, 3)" in note and "args[1] shared (shape (5, 20))" in note


def test_a_non_finite_x0_names_the_problem_and_the_parameter():
    x0, Y, t = data()
    x0[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"x0 must be finite; x0\[2, 1\] = nan"):
        nadam.minimize_many(decay, x0, args=(t, Y))


def test_bounds_that_do_not_broadcast_are_refused():
    x0, Y, t = data()
    with pytest.raises(ValueError, match="do not broadcast"):
        nadam.minimize_many(decay, x0, args=(t, Y), jac=True, bounds=(np.zeros((4, 3)), 1.0))


def test_dask_arrays_run_chunk_by_chunk_on_a_cluster():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    x0, Y, t = data(runs=7)
    options = {"lr": 0.05, "maxiter": 60}
    expected = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        res = nadam.minimize_many(
            decay,
            da.from_array(x0, chunks=(3, 3)),
            args=(t, da.from_array(Y, chunks=(4, 20))),
            jac=True,
            options=options,
        )
        assert isinstance(res.x, da.Array) and res.x.chunks[0] == (3, 3, 1)
        got = dict(
            zip(res, distributed.get_client().compute(list(res.values()), sync=True), strict=True)
        )
    for key in ("x", "fun", "jac", "nit", "nfev", "status", "success"):
        np.testing.assert_array_equal(got[key], expected[key])
    assert list(got["message"]) == expected.message


def test_a_dask_arg_beside_a_numpy_x0_says_which_to_change():
    da = pytest.importorskip("dask.array")
    x0, Y, t = data()
    with pytest.raises(TypeError, match=r"args\[1\] is a Dask array but x0 is not"):
        nadam.minimize_many(decay, x0, args=(t, da.from_array(Y)), jac=True)


def test_dask_chunks_keep_checkpoints_of_their_own(tmp_path):
    # Every chunk is a batch of its own: with one file for all, a chunk resumed another's
    # state and returned its answers, as converged.  Each has its file, named by its rows,
    # and the same call again returns the same answers from them.
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    x0, Y, t = data(runs=7)
    options = {"lr": 0.05, "maxiter": 60}
    expected = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=options)
    saved = {**options, "checkpoint": tmp_path / "fits.npz", "resume": True}
    with dask.config.set(scheduler="synchronous"):
        for _ in range(2):
            res = nadam.minimize_many(
                decay, da.from_array(x0, chunks=(3, 3)), args=(t, Y), jac=True, options=saved
            )
            got = dict(zip(res, dask.compute(*res.values()), strict=True))
            for key in ("x", "fun", "nit", "nfev", "status"):
                np.testing.assert_array_equal(got[key], expected[key])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["fits.rows0-3.npz", "fits.rows3-6.npz", "fits.rows6-7.npz"]


# -- checkpoints -----------------------------------------------------------------------------


def failing_after(calls, error=None, sig=None):
    """decay_rows that raises ``error`` (or sends itself ``sig``) at call number ``calls``."""
    count = [0]

    def fun(X, t, Y):
        count[0] += 1
        if count[0] == calls:
            if sig is not None:
                os.kill(os.getpid(), sig)
            else:
                raise error
        return decay_rows(X, t, Y)

    return fun


@pytest.mark.parametrize("options", [None, {"lr": 0.05, "maxiter": 200, "gtol": 1e-3}], ids=repr)
def test_a_batch_resumes_after_an_exception_as_if_never_stopped(tmp_path, options):
    x0, Y, t = data()
    path = str(tmp_path / "batch.npz")
    opts = {**(options or {}), "vectorized": True}
    expected = nadam.minimize_many(failing_after(0), x0, args=(t, Y), jac=True, options=opts)
    saved = {**opts, "checkpoint": path, "checkpoint_every": 10, "resume": True}
    with pytest.raises(KeyError):
        nadam.minimize_many(
            failing_after(137, KeyError("boom")), x0, args=(t, Y), jac=True, options=saved
        )
    state, meta = nadam.checkpoint.load(path)
    assert state["counters"][:, 0].max() == 136 and meta["runs"] == len(x0)
    res = nadam.minimize_many(failing_after(0), x0, args=(t, Y), jac=True, options=saved)
    for key in ("x", "fun", "jac", "nit", "nfev", "status"):
        np.testing.assert_array_equal(res[key], expected[key])
    assert res.message == expected.message
    # The final state is saved: resuming a finished batch evaluates nothing more.
    again = nadam.minimize_many(
        failing_after(1, KeyError("no")), x0, args=(t, Y), jac=True, options=saved
    )
    np.testing.assert_array_equal(again.nfev, expected.nfev)


def test_a_signal_stops_the_batch_at_a_boundary_and_it_resumes(tmp_path):
    x0, Y, t = data()
    path = str(tmp_path / "batch.npz")
    opts = {"lr": 0.05, "maxiter": 100, "vectorized": True}
    expected = nadam.minimize_many(failing_after(0), x0, args=(t, Y), jac=True, options=opts)
    saved = {**opts, "checkpoint": path, "resume": True}
    stopped = nadam.minimize_many(
        failing_after(31, sig=signal.SIGINT), x0, args=(t, Y), jac=True, options=saved
    )
    assert (stopped.status == nadam.Status.INTERRUPTED).all() and (stopped.nit == 31).all()
    assert all("SIGINT" in m for m in stopped.message)
    res = nadam.minimize_many(failing_after(0), x0, args=(t, Y), jac=True, options=saved)
    np.testing.assert_array_equal(res.x, expected.x)
    np.testing.assert_array_equal(res.nit, expected.nit)


def test_a_resumed_batch_takes_this_call_s_settings_as_minimize_does(tmp_path):
    # The checkpoint holds the stopping rules' state, not their settings: a batch stopped
    # at iteration ~100 of maxiter 300 and resumed with maxiter 600 is the run to 600 (it
    # used to stop at 300, the file's maxiter).
    x0, Y, t = data()
    path = str(tmp_path / "batch.npz")
    opts = {"lr": 0.05, "gtol": 1e-12, "vectorized": True, "checkpoint": path, "resume": True}
    with pytest.raises(RuntimeError):
        nadam.minimize_many(
            failing_after(100, RuntimeError()), x0, args=(t, Y), options={**opts, "maxiter": 300}
        )
    res = nadam.minimize_many(decay_rows, x0, args=(t, Y), options={**opts, "maxiter": 600})
    plain = {"lr": 0.05, "gtol": 1e-12, "vectorized": True, "maxiter": 600}
    expected = nadam.minimize_many(decay_rows, x0, args=(t, Y), options=plain)
    assert res.nit.max() == 600
    for key in ("x", "fun", "nit", "nfev", "status"):
        np.testing.assert_array_equal(res[key], expected[key])


def test_a_finished_batch_is_extended_by_a_larger_maxiter_as_minimize_is(tmp_path):
    # checkpoints.md: a finished run is extended by raising maxiter.  The problems that
    # stopped at maxiter go on (they stayed at 300), each as minimize extends it alone.
    x0, Y, t = data()
    opts = {"lr": 0.05, "gtol": 1e-12, "checkpoint": str(tmp_path / "b.npz"), "resume": True}
    batch = {**opts, "vectorized": True}
    first = nadam.minimize_many(decay_rows, x0, args=(t, Y), options={**batch, "maxiter": 300})
    assert (first.status == 1).all()
    res = nadam.minimize_many(decay_rows, x0, args=(t, Y), options={**batch, "maxiter": 600})
    assert res.nit.max() == 600 and (res.status == 0).any()
    for b in range(len(x0)):
        alone = {**opts, "checkpoint": str(tmp_path / f"{b}.npz")}
        for maxiter in (300, 600):
            ref = nadam.minimize(
                decay_row, x0[b], args=(t, Y[b]), jac=True, options={**alone, "maxiter": maxiter}
            )
        assert (ref.nit, ref.nfev, ref.status) == (res.nit[b], res.nfev[b], res.status[b])
        np.testing.assert_array_equal(ref.x, res.x[b])


def test_the_compiled_batch_checkpoints_and_refuses_another_batchs_file(tmp_path):
    x0, Y, t = data()
    path = str(tmp_path / "batch.npz")
    opts = {"lr": 0.05, "maxiter": 50, "checkpoint": path, "checkpoint_every": 7, "resume": True}
    res = nadam.minimize_many(decay, x0, args=(t, Y), jac=True, options=opts)
    state, _ = nadam.checkpoint.load(path)
    np.testing.assert_array_equal(state["result.x"], res.x)
    assert state["done"].all()
    with pytest.raises(ValueError, match="belongs to another run"):
        nadam.minimize_many(decay, x0[:4], args=(t, Y[:4]), jac=True, options=opts)


def test_docstring_example():
    import doctest

    import nadam.many

    result = doctest.testmod(nadam.many, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
