"""``minimize`` without ``lr`` and without ``maxiter`` (docs/tuning-free.md).

The whole run is compared with an independent reference written from the docs
(``tests/naive_tuning.py``); each mechanism (the window's length, the per-evaluation
relative progress, the stall count, the cut and the return to the best point, the
divergence restart, the minibatch candidate and its evaluation rows, the polynomial
average) is then pinned on its own, by a test that an off-by-one fails.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize as scipy_optimize
from naive import NaiveOptimizer
from naive_tuning import run as naive_run
from scipy.optimize import Bounds

import nadam
from nadam.loop import stages
from nadam.loop.averaging import WEIGHTS
from nadam.optimizers import restart

# ---------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------


def scaled_least_squares(n=300, seed=0):
    """Least squares with columns of scales 1e-2 .. 1e2 and an intercept far from 0."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, 4)) * np.array([1.0, 100.0, 0.01, 3.0])
    b = A @ np.array([0.5, -0.02, 40.0, 1.0]) + 0.1 * rng.normal(size=n)

    def fun(x, A, b):
        r = A @ x - b
        return r @ r / len(b), 2 * A.T @ r / len(b)

    return fun, (A, b), np.linalg.lstsq(A, b, rcond=None)[0]


def logistic(n=2000, d=5, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.geomspace(0.5, 20, d)
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ (rng.normal(size=d) / 5)))).astype(float)

    def fun(w, X, y):
        z = X @ w
        return np.mean(np.logaddexp(0.0, z) - y * z), X.T @ (1 / (1 + np.exp(-z)) - y) / len(y)

    return fun, (X, y)


def minimize(fun, x0, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return nadam.minimize(fun, np.asarray(x0, float), jac=True, **options)


# ---------------------------------------------------------------------------------
# The whole run against the reference
# ---------------------------------------------------------------------------------


def test_full_batch_run_matches_the_reference():
    fun, args, exact = scaled_least_squares()
    res = minimize(fun, np.zeros(4), args=args)
    x, info = naive_run(fun, np.zeros(4), args)
    assert (res.nit, res.nfev, res.status) == (info["nit"], info["nfev"], info["status"])
    np.testing.assert_allclose(res.x, x, rtol=1e-10)
    assert res.status == 6 and res.success
    assert info["cuts"] >= 4  # the step size was cut, not only judged
    # and it is the answer: the least-squares solution, to the loss's precision
    assert fun(res.x, *args)[0] <= fun(exact, *args)[0] * (1 + 1e-9)


def test_minibatch_run_matches_the_reference():
    fun, args = logistic()
    res = minimize(fun, np.zeros(5), args=args, options={"batch_size": 64, "seed": 3})
    x, info = naive_run(fun, np.zeros(5), args, batch_size=64, seed=3)
    # nadam evaluates its answer on all rows once more at the end: one call more
    assert (res.nit, res.nfev, res.status) == (info["nit"], info["nfev"] + 1, info["status"])
    np.testing.assert_allclose(res.x, x, rtol=1e-9)
    assert res.fun == pytest.approx(fun(x, *args)[0], rel=1e-12)
    assert res.status == 6


def test_explicit_lr_without_maxiter_matches_the_reference():
    # lr given: Adam's steps, no cuts, the windows only stop the run at the best iterate
    fun, args, _ = scaled_least_squares()
    res = minimize(fun, np.zeros(4), args=args, options={"lr": 0.5})
    assert res.status == 6 and res.nit % stages.FULL_WINDOW == 0
    x, best = np.zeros(4), (math.inf, None)
    opt = nadam.Adam(x, lr=0.5)
    for _ in range(res.nit):
        f, g = fun(x, *args)
        if f < best[0]:
            best = (f, x.copy())
        opt.step(g)
    assert np.array_equal(res.x, best[1]) and res.fun == best[0]


def test_explicit_lr_and_maxiter_is_torch_adam_exactly():
    # lr and maxiter given: no windows, every step Adam's (the naive torch reference)
    fun, args, _ = scaled_least_squares()
    res = minimize(fun, np.zeros(4), args=args, options={"lr": 0.05, "maxiter": 300})
    ref = NaiveOptimizer("adam", np.zeros(4), lr=0.05)
    for _ in range(300):
        ref.step(fun(ref.p, *args)[1])
    assert res.nit == 300 and res.status == 1 and res.maxiter == 300
    np.testing.assert_allclose(res.x, ref.p, rtol=1e-10)


# ---------------------------------------------------------------------------------
# Each mechanism
# ---------------------------------------------------------------------------------


def constant(value=1.0):
    """A loss that never improves: every window after the first is a stall.  (Its
    gradient is tiny but not 0: a zero gradient is a stationary point, gtol = 0 stops.)"""

    def fun(x):
        return value, np.full_like(x, 1e-20)

    return fun


def test_a_flat_loss_stops_after_the_first_window_and_five_stalls():
    run = nadam.Minimizer(constant(), np.ones(3), jac=True)
    res = run.run()
    # window 1 makes progress (the first loss), windows 2..6 do not: 6 windows of 50
    assert (res.status, res.nit, res.nfev) == (6, 6 * 50, 6 * 50)
    assert "5 windows of 50 iterations" in res.message
    # four cuts (the fifth stall stops instead): 0.1 / 2**4
    assert run.state.optimizer.lr == 0.1 / 16
    assert res.maxiter == 100_000


@pytest.mark.parametrize("scale", [2.0**-70, 2.0**-20, 2.0**30], ids=["1e-21", "1e-6", "1e9"])
@pytest.mark.parametrize("batch_size", [None, 64])
def test_the_defaults_take_the_same_steps_whatever_the_loss_scale(scale, batch_size):
    # Every decision is relative, and epsilon (sqrt of the smallest normal float64) is
    # below an ulp of any gradient's square root: a loss scaled by a power of two takes
    # the very same steps.  (With Adam's epsilon = 1e-8, a loss of 1e-21 did not move.)
    fun, args, best = scaled_least_squares()

    def scaled(x, A, b):
        f, g = fun(x, A, b)
        return scale * f, scale * g

    options = {} if batch_size is None else {"batch_size": batch_size, "seed": 0}
    ref = minimize(fun, np.zeros(4), args=args, options=options)
    res = minimize(scaled, np.zeros(4), args=args, options=options)
    np.testing.assert_array_equal(res.x, ref.x)
    assert (res.nit, res.nfev, res.status, res.fun) == (
        ref.nit,
        ref.nfev,
        ref.status,
        scale * ref.fun,
    )
    if batch_size is None:
        np.testing.assert_allclose(res.x, best, rtol=1e-6)


@pytest.mark.parametrize("scale", [2.0**-70, 2.0**30], ids=["1e-21", "1e9"])
def test_bounds_take_the_same_steps_whatever_the_loss_scale(scale):
    # gtol's projected gradient, P(x - g) - x: computed as written, x - g rounded back
    # to x wherever |g| is below half an ulp of x, so a small loss's bounded run had
    # a projected gradient of exactly 0 at x0 and stopped there, status 0, success.
    fun, args, best = scaled_least_squares()

    def scaled(x, A, b):
        f, g = fun(x, A, b)
        return scale * f, scale * g

    bounds = [(-100, 100)] * 3 + [(None, best[3] - 0.5)]  # the last one active
    ref = minimize(fun, np.ones(4), args=args, bounds=bounds)
    res = minimize(scaled, np.ones(4), args=args, bounds=bounds)
    np.testing.assert_array_equal(res.x, ref.x)
    assert (res.nit, res.nfev, res.status) == (ref.nit, ref.nfev, ref.status)
    assert ref.success and ref.nit > 100
    assert ref.x[3] == best[3] - 0.5
    constrained = scipy_optimize.minimize(fun, np.ones(4), args=args, jac=True, bounds=bounds)
    assert ref.fun <= constrained.fun * (1 + 1e-8)


@pytest.mark.parametrize("batch_size", [None, 64])
def test_the_defaults_take_the_same_steps_whatever_the_parameters_units(batch_size):
    # x = c * u with c a power of two per parameter: the gradient in u is c times that in
    # x, Adam's direction is unchanged, and the distances (from r_eps |u0| on) are 1/c
    # times those in x, so u_k = x_k / c exactly and every loss is the same.  (With the
    # first distance r_eps (1 + |x0|), x0 = 1e-9 took its first step 100 times its size.)
    fun, args, best = scaled_least_squares()
    c = 2.0 ** np.array([-40.0, 17.0, 40.0, -3.0])
    x0 = np.array([0.3, -0.002, 25.0, 1.5])

    def in_u(u, A, b):
        f, g = fun(c * u, A, b)
        return f, c * g

    options = {} if batch_size is None else {"batch_size": batch_size, "seed": 0}
    ref = minimize(fun, x0, args=args, options=options)
    res = minimize(in_u, x0 / c, args=args, options=options)
    np.testing.assert_array_equal(c * res.x, ref.x)
    assert (res.nit, res.nfev, res.status, res.fun) == (ref.nit, ref.nfev, ref.status, ref.fun)
    if batch_size is None:
        np.testing.assert_allclose(res.x * c, best, rtol=1e-6)


@pytest.mark.parametrize("budget", [None, 120])
def test_the_windows_stop_before_evaluating_their_last_iterate(budget):
    # Documented (docs/minimize.md): a run its windows stop made nit evaluations, its
    # history and callbacks end at x_{nit-1}; a run that reached maxiter evaluated
    # x_nit too.
    seen = []
    options = {"history": True} if budget is None else {"history": True, "maxiter": budget}
    res = nadam.minimize(
        constant(), np.ones(3), jac=True, callback=lambda x: seen.append(x), options=options
    )
    evaluated = res.nit if budget is None else res.nit + 1
    assert (res.status, res.nit) == ((6, 300) if budget is None else (1, budget))
    assert res.nfev == len(res.history["loss"]) == evaluated
    assert len(seen) == evaluated - 1


def test_window_and_ftol_options():
    res = minimize(constant(), np.ones(3), options={"window": 7})
    assert res.nit == 6 * 7
    fun = scripted(ratio=1 - 1e-6)  # every evaluation improves by 1e-6, relative
    assert minimize(fun, np.ones(2), options={"ftol": 1e-7, "maxiter": 500}).status == 1
    assert minimize(scripted(ratio=1 - 1e-6), np.ones(2), options={"ftol": 1e-5}).nit == 300


def scripted(ratio, start=1e6):
    """A loss that falls by ``ratio`` at every evaluation, whatever x (zero gradient)."""
    calls = [0]

    def fun(x):
        calls[0] += 1
        return start * ratio ** calls[0], np.full_like(x, 1e-20)

    return fun


@pytest.mark.parametrize(
    ("ratio", "status", "nit"),
    [
        # 2e-10 per evaluation beats ftol = 1e-10 every time: never a stall
        (1 - 2e-10, 1, 1000),
        # 0.5e-10 per evaluation never does, though 50 of them make 2.5e-9 a window:
        # progress is per evaluation, relative to the lowest loss at the time
        (1 - 0.5e-10, 6, 300),
    ],
)
def test_progress_is_relative_and_per_evaluation(ratio, status, nit):
    # f of the order of 1e6: an absolute 1e-10 would be beaten by any of these
    res = minimize(scripted(ratio), np.ones(2), options={"maxiter": 1000})
    assert (res.status, res.nit) == (status, nit)


def test_a_cut_returns_to_the_lowest_loss_and_halves_the_step():
    # A loss that is lowest at the first iterate and higher at every other: after the
    # first stall (window 2), x is back at x0 and the step size is 0.05.
    def fun(x):
        return float(np.sum((x - 1.0) ** 2)) + (0.0 if np.all(x == 0) else 1.0), -np.ones_like(x)

    run = nadam.Minimizer(fun, np.zeros(2), jac=True)
    assert run.run(100) is None  # two windows: the first made progress, the second not
    assert run.run(1) is None  # the boundary at 100 was judged before this step
    assert run.state.optimizer.lr == 0.05
    # the step from x0 with the new step size (and Adam's moments kept)
    assert np.all(run.state.x > 0) and np.all(run.state.x < 1e-3)
    res = run.run()
    # Back at x0 each time, and the answer: a jump at x0 that the gradient does not see,
    # hence no descent (status 7), not convergence.
    assert res.status == nadam.Status.NO_DESCENT
    assert np.array_equal(res.x, np.zeros(2)) and res.fun == 2.0


def test_a_divergence_restarts_from_the_best_point_with_a_tenth_of_the_step():
    # The loss is NaN beyond x = 2.1 and least at 2: the distance-scaled steps grow until
    # one overshoots into the NaN region; the run goes back and converges.
    seen = []

    def fun(x):
        seen.append(float(x[0]))
        if x[0] > 2.1:
            return math.nan, np.full_like(x, math.nan)
        return (x[0] - 2.0) ** 2, 2 * (x - 2.0)

    run = nadam.Minimizer(fun, np.zeros(1), jac=True)
    res = run.run()
    first = next(k for k, v in enumerate(seen) if v > 2.1)
    # the evaluation after the NaN is at the best point before it, with the moments reset
    best = min(seen[:first], key=lambda v: (v - 2.0) ** 2)
    assert seen[first + 1] == best
    assert run.state.stages[stages.DIVERGED] == 1
    assert run.state.stages[stages.STEP] <= 0.1 * 0.1  # divided by 10 (and maybe cut)
    assert res.success and res.x[0] == pytest.approx(2.0, abs=1e-6)


def test_a_nan_at_the_boundary_of_the_domain_gives_up_at_the_best_point():
    # Least at 10, NaN beyond 3: every approach to 3 overshoots, until the step size has
    # been divided below 1e-12 of its start; the answer is the best point, at 3.
    def fun(x):
        if x[0] > 3.0:
            return math.nan, np.full_like(x, math.nan)
        return (x[0] - 10.0) ** 2 / 100, (x - 10.0) / 50

    res = minimize(fun, np.zeros(1))
    assert res.status == 3 and not res.success
    assert 3.0 - 1e-6 < res.x[0] <= 3.0 and res.fun == fun(res.x)[0]


def test_with_an_explicit_lr_a_nan_stops_the_run():
    def fun(x):
        return (math.nan, np.zeros_like(x)) if np.any(x != 0) else (1.0, np.ones_like(x))

    res = minimize(fun, np.zeros(2), options={"lr": 0.1})
    assert res.status == 3 and res.nfev == 2


def test_the_minibatch_window_is_whole_epochs():
    assert stages.epoch_window(1000, 64) == 110  # 7 epochs of 15.6 steps: >= 100 steps
    assert stages.epoch_window(1000, 10) == 100  # one epoch of 100 steps
    assert stages.epoch_window(1001, 10) == 101  # one epoch of 100.1 steps, rounded up
    assert stages.epoch_window(10_000, 1) == 2000  # an epoch longer than 2000 steps
    assert stages.epoch_window(2000, 1) == 2000


def test_the_evaluation_rows_are_fixed_by_the_seed_and_cover_all_rows_when_few():
    X = np.arange(1000.0)
    mb = nadam.sampling.Minibatches((X, "tag"), 10, seed=4)
    a, tag = mb.subset(100)
    assert tag == "tag" and a.shape == (100,) and len(set(a)) == 100
    assert np.all(np.diff(a) > 0)  # in order
    mb.next()
    assert np.array_equal(mb.subset(100)[0], a)  # not the stream's: the same after draws
    other = nadam.sampling.Minibatches((X, "tag"), 10, seed=5).subset(100)[0]
    assert not np.array_equal(other, a)
    assert mb.subset(1000)[0] is X


def test_the_candidate_is_the_polynomial_average_and_the_first_window_is_not_judged():
    fun, args = logistic(n=400)
    calls = []

    def counted(w, X, y):
        calls.append(len(y))
        return fun(w, X, y)

    run = nadam.Minimizer(counted, np.zeros(5), args=args, jac=True, options={"batch_size": 40})
    W = stages.epoch_window(400, 40)
    assert W == 100
    run.run(W)
    run.run(1)  # the first window's end: not judged (grace), no evaluation of all rows
    assert calls.count(400) == 0 and run.state.stages[stages.WINDOWS] == 1
    run.run(W)
    run.run(1)
    # The second: x0, the first candidate, then the average, scored on all 400 rows
    assert calls.count(400) == 2
    assert np.any(run.state.stage_best != 0)  # the average beat x0 = 0
    assert run.state.stages[stages.BEST] == fun(run.state.stage_best, *args)[0]
    run.run(W)
    run.run(1)
    assert calls.count(400) == 3  # the third judges the average alone


def test_polynomial_average_weights():
    weight = WEIGHTS["poly"].py_func
    # x_bar_s = x_bar_{s-1} + (gamma + 1) / (s + gamma) (x_s - x_bar_{s-1}), gamma = 3
    assert [weight(s, 0.0) for s in range(4)] == [1.0, 4 / 5, 4 / 6, 4 / 7]
    # the weights of x_1..x_n in the average grow as s**3 (Shamir & Zhang's decay)
    xs = np.eye(6)
    avg = np.zeros(6)
    for s, x in enumerate(xs):
        avg += weight(s, 0.0) * (x - avg)
    ks = np.arange(1, 7)
    expected = ks * (ks + 1) * (ks + 2)  # (s)(s+1)(s+2) ~ s**3, normalised
    np.testing.assert_allclose(avg, expected / expected.sum(), rtol=1e-14)
    assert WEIGHTS["polyak"].py_func(3, 0.0) == 1 / 5
    assert WEIGHTS["ema"].py_func(3, 0.9) == pytest.approx(0.1)


def test_restart_forgets_the_moments_and_keeps_the_distance():
    x = np.array([1.0, -2.0])
    opt = nadam.AdamDistance(x, r_eps=0.1)
    for _ in range(5):
        opt.step(np.array([1.0, -1.0]))
    distance, origin = opt.state["distance"].copy(), opt.state["origin"].copy()
    restart(opt)
    assert np.all(opt.state["exp_avg"] == 0) and np.all(opt.state["exp_avg_sq"] == 0)
    assert np.array_equal(opt.state["distance"], distance)
    assert np.array_equal(opt.state["origin"], origin)
    # the next step is a first step again (bias corrections from k = 1)
    before = x.copy()
    opt.step(np.array([1.0, -1.0]))
    r = np.maximum(distance, 0.1 * np.where(origin == 0, 1.0, np.abs(origin)))
    np.testing.assert_allclose(x, before - 0.1 * r * np.array([1.0, -1.0]), rtol=1e-7)
    with pytest.raises(TypeError, match="no restart"):
        restart(nadam.Adam(np.zeros(2)))


def test_a_whole_restart_steps_as_an_optimizer_created_at_the_current_point():
    x = np.array([1.0, -2.0, 0.5])
    opt = nadam.AdamDistance(x, r_eps=0.1, amsgrad=True)
    rng = np.random.default_rng(3)
    for _ in range(7):
        opt.step(rng.normal(size=3))
    restart(opt, whole=True)
    fresh_x = x.copy()
    fresh = nadam.AdamDistance(fresh_x, r_eps=0.1, amsgrad=True)
    for _ in range(5):
        g = rng.normal(size=3)
        opt.step(g)
        fresh.step(g)
        assert np.array_equal(x, fresh_x)  # the origin moved to where the restart was
    for name in opt.state:
        assert np.array_equal(opt.state[name], fresh.state[name]), name


def drop_then_flat(drop, start=1e6):
    """A loss of ``start`` for the first window, lower by ``drop`` (relative) from the
    tenth evaluation of the second window on, whatever x (a tiny gradient)."""
    calls = [0]

    def fun(x):
        calls[0] += 1
        return start * (1 - drop) if calls[0] >= 60 else start, np.full_like(x, 1e-20)

    return fun


@pytest.mark.parametrize(
    ("drop", "nit"),
    [
        # above FRESH_FTOL = 1e-5 (relative: an absolute 1e-5 of a loss of 1e6 is nothing):
        # window 2 makes progress, windows 3..7 stall, then a fresh start, whose five
        # windows gain nothing: 12 windows
        (2e-5, 12 * 50),
        # below it (yet far above ftol = 1e-10): no fresh start, 7 windows
        (0.5e-5, 7 * 50),
    ],
)
def test_a_run_that_gained_more_than_fresh_ftol_starts_afresh_before_it_stops(drop, nit):
    assert stages.FRESH_FTOL == 1e-5
    run = nadam.Minimizer(drop_then_flat(drop), np.ones(2), jac=True)
    res = run.run()
    assert (res.status, res.nit) == (6, nit)
    # a fresh start sets the step size back to its start; the last segment then cut it
    # four times
    assert run.state.optimizer.lr == 0.1 / 16
    ref = naive_run(drop_then_flat(drop), np.ones(2))[1]
    assert (ref["nit"], ref["starts"]) == (nit, 1 if drop > 1e-5 else 0)


def michaelis_menten_far():
    """A new user's Michaelis-Menten fit from a far start (K = 100 for 0.05)."""
    s = np.array([0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    v = np.array([1.09, 2.02, 3.41, 6.18, 7.75, 9.05, 10.81, 11.49])

    def sse(p, s, v):
        vmax, k = p
        d = k + s
        r = vmax * s / d - v
        return r @ r, 2 * np.stack([s / d, -vmax * s / d**2]) @ r

    return sse, (s, v), np.array([10.0, 100.0])


def test_a_far_start_of_a_narrow_valley_reaches_the_optimum():
    # Before the fresh starts, the steps K grew to on its way down overshot the narrow
    # valley at every size five cuts tried, and the run stopped there (loss 166 for
    # 0.317, gradient 118) as "converged".
    sse, (s, v), x0 = michaelis_menten_far()
    res = minimize(sse, x0, args=(s, v))
    ref = scipy_optimize.least_squares(
        lambda p: p[0] * s / (p[1] + s) - v, [12.0, 0.05], xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    assert res.status == 6
    np.testing.assert_allclose(res.fun, sse(ref.x, s, v)[0], rtol=1e-10)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)
    # The reference takes its fresh starts too.  (Not the same path: its steps differ from
    # the compiled ones by an ulp now and then, and a start this far off amplifies that
    # into other decisions; both end at the optimum.)
    x, info = naive_run(sse, x0, (s, v))
    assert info["status"] == 6 and info["starts"] >= 1
    np.testing.assert_allclose(x, ref.x, rtol=1e-6)


def sign_flipped(fun):
    """A hand-written gradient with the wrong sign, the bug scipy's line searches report."""

    def flipped(x, *args):
        f, g = fun(x, *args)
        return f, -g

    return flipped


@pytest.mark.parametrize(
    "options", [{}, {"lr": 1e-3}, {"batch_size": 64, "seed": 0}], ids=["defaults", "lr", "batch"]
)
def test_a_gradient_of_the_wrong_sign_is_not_reported_as_converged(options):
    # Every step raised the loss, the run stayed at x0 (minibatches: no candidate beat
    # x0, the first), and its windows used to call that converged (success; a minibatch
    # run answered with a candidate at 7e9 times x0's loss).  It is status 7 now, success
    # False, the answer x0.
    fun, args, _ = scaled_least_squares()
    x0 = np.array([0.3, -0.002, 25.0, 1.5])
    res = minimize(sign_flipped(fun), x0, args=args, options=options)
    assert (res.status, res.success) == (nadam.Status.NO_DESCENT, False)
    assert "never fell below its value at x0" in res.message and "check_grad" in res.message
    np.testing.assert_array_equal(res.x, x0)
    assert res.fun == fun(x0, *args)[0]


def test_a_start_at_the_minimum_is_converged():
    # The gradient at a smooth minimum is rounding noise: it predicts no fall, whether or
    # not the steps find a lower loss.  On a bound, the gradient pushing out predicts none.
    fun, args, best = scaled_least_squares()
    res = minimize(fun, best, args=args)
    assert res.success and res.status == 6 and res.fun <= fun(best, *args)[0]
    lo = best + np.array([0.0, 0.0, 1.0, 0.0])  # the third parameter's bound, above best
    res = minimize(fun, lo, args=args, bounds=Bounds(lo, np.inf))
    assert res.success and res.x[2] == lo[2]
    # Finite differences' gradient at a minimum of loss 0 is their bias, 1.5e-8 per unit
    # of curvature, not rounding noise; the loss along it does not fall.  They are the
    # loss's own gradient, though, which the check is not about: converged (was status 7).
    c = np.array([1.0, -2.0, 3.0])
    x0 = c + np.array([1e-10, -3e-10, 2e-10])
    res = nadam.minimize(lambda x: float(np.sum((x - c) ** 2)), x0)
    assert res.success and res.status == 6
    np.testing.assert_array_equal(res.x, x0)


def test_a_start_at_a_kink_is_no_descent():
    # |x| at 0, whose "gradient" sign(0) := 1 promises a fall that no step finds: as a
    # wrong gradient, reported as such (the message names the kink).
    res = minimize(lambda x: (float(np.abs(x).sum()), np.where(x >= 0, 1.0, -1.0)), np.zeros(2))
    assert res.status == nadam.Status.NO_DESCENT and "kink" in res.message
    np.testing.assert_array_equal(res.x, 0.0)


def test_the_defaults_fit_the_issue_s_damped_sinusoid_as_curve_fit_does():
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 200)
    y = 2.5 * np.exp(-0.3 * t) * np.sin(1.7 * t + 0.4) + 0.1 * rng.normal(size=t.size)

    def model(t, a, k, w, phi):
        return a * np.exp(-k * t) * np.sin(w * t + phi)

    def mse(p, t, y):
        a, k, w, phi = p
        e, s, c = np.exp(-k * t), np.sin(w * t + phi), np.cos(w * t + phi)
        r = a * e * s - y
        grad = np.array([e * s, -a * t * e * s, a * e * c * t, a * e * c]) @ r
        return r @ r / t.size, 2 * grad / t.size

    p0 = [1.0, 0.1, 1.5, 0.0]
    res = minimize(mse, p0, args=(t, y))
    ref = curve_fit(model, t, y, p0=p0)[0]
    best = mse(ref, t, y)[0]
    assert res.success and res.fun <= best * (1 + 1e-8)
    np.testing.assert_allclose(res.x, ref, rtol=1e-4)


def test_bad_window_and_ftol_are_refused():
    with pytest.raises(ValueError, match="option window"):
        minimize(constant(), np.ones(2), options={"window": 0})
    with pytest.raises(ValueError, match="option ftol"):
        minimize(constant(), np.ones(2), options={"ftol": -1.0})
    with pytest.raises(TypeError, match="option window"):
        minimize(constant(), np.ones(2), options={"window": 2.5})


# ---------------------------------------------------------------------------------
# Checkpoints and the compiled loop: the same decisions, bit for bit
# ---------------------------------------------------------------------------------


def same(a, b):
    assert np.array_equal(a.x, b.x) and a.fun == b.fun and np.array_equal(a.jac, b.jac)
    assert (a.nit, a.nfev, a.status, a.message) == (b.nit, b.nfev, b.status, b.message)


def nan_beyond(limit=2.1):
    def fun(x):
        if x[0] > limit:
            return math.nan, np.full_like(x, math.nan)
        return (x[0] - 2.0) ** 2 + x[1] ** 2, np.array([2 * (x[0] - 2.0), 2 * x[1]])

    return fun


@pytest.mark.parametrize("stop", [37, 100, 101, 333])
@pytest.mark.parametrize("case", ["full batch", "minibatch", "divergence"])
def test_a_run_saved_anywhere_resumes_bit_for_bit(case, stop):
    # 100: exactly at a window's end, before it is judged; 333: after cuts (and, for the
    # divergence, after the restart)
    if case == "divergence":
        fun, args, options, x0 = nan_beyond(), (), {}, np.array([0.0, 1.0])
    else:
        fun, args = logistic(n=500)
        options, x0 = ({"batch_size": 25, "seed": 1} if case == "minibatch" else {}), np.zeros(5)
    kw = dict(args=args, jac=True, options=options)
    whole = nadam.Minimizer(fun, x0, **kw).run()
    first = nadam.Minimizer(fun, x0, **kw)
    assert first.run(stop) is None
    second = nadam.Minimizer(fun, x0, **kw)
    second.load_state_dict(first.state_dict())
    same(second.run(), whole)
    if case == "divergence":
        assert second.state.stages[stages.DIVERGED] == 1


def first_fresh_start(fun, x0, args):
    """The iteration at whose window boundary the run first starts afresh."""
    run = nadam.Minimizer(fun, x0, args=args, jac=True)
    first = math.inf  # (set by the first judged window)
    while run.run(50) is None:  # a boundary is judged when the next chunk starts
        fresh = run.state.stages[stages.FRESH]
        if math.isinf(first):
            first = fresh
        elif fresh != first:
            return run.state.nit - 50
    raise AssertionError("no fresh start")


@pytest.mark.parametrize("after", [0, 1, 137])
def test_a_run_saved_around_a_fresh_start_resumes_bit_for_bit(after):
    # Saved at the boundary whose stall starts afresh (before it is judged), just after,
    # and within the fresh segment.
    fun, args = logistic(n=500)
    x0 = np.zeros(5)
    stop = first_fresh_start(fun, x0, args) + after
    whole = nadam.Minimizer(fun, x0, args=args, jac=True).run()
    first = nadam.Minimizer(fun, x0, args=args, jac=True)
    assert first.run(stop) is None
    v = first.state.stages
    if after == 0:  # four stalls; the fifth, judged at the boundary, starts afresh
        assert v[stages.STALLS] == stages.FULL_STALLS - 1
    elif after == 1:  # the step size is back at its start
        assert v[stages.STEP] == v[stages.STEP0] and v[stages.STALLS] == 0
    second = nadam.Minimizer(fun, x0, args=args, jac=True)
    second.load_state_dict(first.state_dict())
    same(second.run(), whole)


def test_a_checkpoint_file_resumes_bit_for_bit(tmp_path):
    fun, args = logistic(n=500)
    path = str(tmp_path / "run.npz")
    options = {"batch_size": 25, "seed": 1}
    whole = minimize(fun, np.zeros(5), args=args, options=options)
    first = nadam.Minimizer(
        fun, np.zeros(5), args=args, jac=True, options={**options, "checkpoint": path}
    )
    assert first.run(263) is None
    first._runner.checkpoint.write(first.state)
    resumed = minimize(
        fun, np.zeros(5), args=args, options={**options, "checkpoint": path, "resume": True}
    )
    same(resumed, whole)


def test_a_state_with_bad_stages_is_refused_and_changes_nothing():
    fun, args = logistic(n=500)
    run = nadam.Minimizer(fun, np.zeros(5), args=args, jac=True)
    run.run(120)
    state = run.state_dict()
    fresh = nadam.Minimizer(fun, np.zeros(5), args=args, jac=True)
    before = fresh.state_dict()
    for slot, value in ((stages.STEP, 1.0), (stages.START, 121.0), (stages.STALLS, 0.5)):
        bad = {**state, "stages": state["stages"].copy()}
        bad["stages"][slot] = value
        with pytest.raises(ValueError, match="Invalid stages"):
            fresh.load_state_dict(bad)
    after = fresh.state_dict()
    for key, value in before.items():
        nan = isinstance(value, float) or (
            isinstance(value, np.ndarray) and value.dtype.kind == "f"
        )
        assert np.array_equal(value, after[key], equal_nan=nan), key


def test_a_state_saved_before_the_fresh_starts_resumes():
    # Seven slots, without FRESH and MARK.  Saved before the first judged window, where
    # both are still inf, the resumed run is the uninterrupted one, bit for bit.
    fun, args = logistic(n=500)
    whole = nadam.Minimizer(fun, np.zeros(5), args=args, jac=True).run()
    first = nadam.Minimizer(fun, np.zeros(5), args=args, jac=True)
    first.run(30)
    state = first.state_dict()
    assert np.isinf(state["stages"][[stages.FRESH, stages.MARK]]).all()
    old = np.delete(state["stages"], [stages.FRESH, stages.MARK])
    second = nadam.Minimizer(fun, np.zeros(5), args=args, jac=True)
    second.load_state_dict({**state, "stages": old})
    same(second.run(), whole)


numba = pytest.importorskip("numba")


@numba.njit
def _logistic_nb(w, X, y):
    z = X @ w
    p = 1.0 / (1.0 + np.exp(-z))
    return np.mean(np.logaddexp(0.0, z) - y * z), X.T @ (p - y) / len(y)


@numba.njit
def _nan_beyond_nb(x):
    if x[0] > 2.1:
        return math.nan, np.full_like(x, math.nan)
    return (x[0] - 2.0) ** 2 + x[1] ** 2, np.array([2 * (x[0] - 2.0), 2 * x[1]])


@pytest.mark.parametrize("case", ["full batch", "minibatch", "divergence"])
def test_the_compiled_loop_takes_the_same_decisions(case):
    if case == "divergence":
        fun, args, options, x0 = _nan_beyond_nb, (), {}, np.array([0.0, 1.0])
    else:
        fun, args = _logistic_nb, logistic(n=500)[1]
        options, x0 = ({"batch_size": 25, "seed": 1} if case == "minibatch" else {}), np.zeros(5)
    runs = [
        nadam.Minimizer(fun, x0, args=args, jac=True, options={**options, "compiled": c})
        for c in (True, False)
    ]
    assert runs[0].compiled and not runs[1].compiled
    same(*(r.run() for r in runs))
