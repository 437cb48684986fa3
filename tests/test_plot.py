"""``options={"history": True}`` and :func:`nadam.plot_history`."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from numba import njit

import nadam
from nadam import Minimizer


def quadratic(x):
    return float(x @ x), 2 * x


def least_squares(x, A, b):
    r = A @ x - b
    return r @ r / len(b), 2 * A.T @ r / len(b)


@njit
def least_squares_njit(x, A, b):
    r = A @ x - b
    return r @ r / len(b), 2 * A.T @ r / len(b)


def data(n=200, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=n)


def test_no_history_by_default():
    res = nadam.minimize(quadratic, np.ones(3), jac=True, options={"maxiter": 5})
    assert "history" not in res


def test_history_records_every_iterate():
    res = nadam.minimize(
        quadratic, np.ones(3), jac=True, options={"lr": 0.1, "maxiter": 50, "history": True}
    )
    h = res.history
    assert set(h) == {"loss", "smoothed", "grad_norm"}
    assert all(v.dtype == np.float64 and v.shape == (res.nit + 1,) for v in h.values())
    # Full batch: the last entry is the result's own evaluation.
    assert h["loss"][-1] == res.fun
    assert h["grad_norm"][-1] == np.abs(res.jac).max()
    assert h["loss"][0] == 3.0 and h["grad_norm"][0] == 2.0
    # smoothed is the moving average with the default smoothing 0.9
    assert h["smoothed"][1] == pytest.approx(0.9 * h["loss"][0] + 0.1 * h["loss"][1])


def test_history_with_minibatches_holds_batch_losses():
    A, b = data()
    res = nadam.minimize(
        least_squares,
        np.zeros(3),
        args=(A, b),
        jac=True,
        options={"maxiter": 100, "batch_size": 16, "seed": 0, "history": True},
    )
    assert res.history["loss"].size == res.nit + 1 == 101
    # The result's fun is on all rows; the history's are batch losses.
    assert res.history["loss"][-1] != res.fun


def test_history_across_chunks_is_one_record():
    A, b = data()
    kw = dict(args=(A, b), jac=True, options={"maxiter": 60, "history": True, "lr": 0.01})
    run = Minimizer(least_squares, np.zeros(3), **kw)
    while (res := run.run(7)) is None:
        pass
    whole = nadam.minimize(least_squares, np.zeros(3), **kw)
    for key in whole.history:
        np.testing.assert_array_equal(res.history[key], whole.history[key])


def test_history_stops_at_the_last_finite_evaluation():
    def blows_up(x):
        f = float(x @ x)
        return (np.nan if x[0] < 0.5 else f), 2 * x

    res = nadam.minimize(
        blows_up, np.ones(2), jac=True, options={"lr": 0.1, "maxiter": 100, "history": True}
    )
    assert res.status == 3
    assert np.all(np.isfinite(res.history["loss"]))
    assert res.history["loss"].size == res.nit


def test_history_with_an_njit_objective():
    # The compiled loop (option compiled="auto") hands runs with history to the Python loop.
    A, b = data()
    opts = {"maxiter": 40, "batch_size": 20, "seed": 0}
    plain = nadam.minimize(
        least_squares_njit, np.zeros(3), args=(A, b), jac=True, options={**opts, "compiled": False}
    )
    res = nadam.minimize(
        least_squares_njit, np.zeros(3), args=(A, b), jac=True, options={**opts, "history": True}
    )
    np.testing.assert_array_equal(res.x, plain.x)
    assert res.history["loss"].size == res.nit + 1


def test_history_option_is_validated():
    with pytest.raises(TypeError, match="history"):
        nadam.minimize(quadratic, np.ones(2), jac=True, options={"history": "yes"})


# ---------------------------------------------------------------------------
# plot_history
# ---------------------------------------------------------------------------


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


@pytest.fixture(scope="module")
def noisy_result():
    A, b = data(500)
    return nadam.minimize(
        least_squares,
        np.zeros(3),
        args=(A, b),
        jac=True,
        options={"maxiter": 300, "batch_size": 16, "seed": 0, "history": True, "lr": 0.05},
    )


def test_plot_history_new_figure(plt, noisy_result):
    fig, (ax_loss, ax_grad) = nadam.plot_history(noisy_result)
    assert ax_loss.figure is fig is ax_grad.figure
    assert ax_loss.get_yscale() == "log" and ax_grad.get_yscale() == "log"
    # raw batch loss and its moving average
    assert len(ax_loss.lines) == 2 and len(ax_grad.lines) == 1
    np.testing.assert_array_equal(ax_grad.lines[0].get_ydata(), noisy_result.history["grad_norm"])
    assert ax_grad.get_xlabel() == "iteration"


def test_plot_history_on_given_axes(plt, noisy_result):
    fig, axes = plt.subplots(1, 2)
    got_fig, got = nadam.plot_history(noisy_result, ax=axes)
    assert got_fig is fig and tuple(got) == tuple(axes)
    fig, ax = plt.subplots()
    _, (a, twin) = nadam.plot_history(noisy_result.history, ax=ax)
    assert a is ax and twin is not ax and twin.get_ylabel() == "gradient norm"


def test_plot_history_full_batch_draws_one_loss_line(plt):
    res = nadam.minimize(
        quadratic,
        np.ones(3),
        jac=True,
        options={"lr": 0.1, "maxiter": 50, "history": True, "smoothing": 0.0},
    )
    _, (ax_loss, _) = nadam.plot_history(res)
    assert len(ax_loss.lines) == 1


def test_plot_history_negative_loss_uses_symlog(plt):
    history = {"loss": np.array([1.0, -1.0, -2.0]), "grad_norm": np.array([1.0, 0.5, 0.1])}
    _, (ax_loss, ax_grad) = nadam.plot_history(history)
    assert ax_loss.get_yscale() == "symlog" and ax_grad.get_yscale() == "log"


def test_plot_history_needs_a_history():
    res = nadam.minimize(quadratic, np.ones(3), jac=True, options={"maxiter": 5})
    with pytest.raises(ValueError, match="history"):
        nadam.plot_history(res)


def test_plot_history_without_matplotlib(monkeypatch, noisy_result):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    # an install that works without nadam on the package index (issue 15 item 14)
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        nadam.plot_history(noisy_result)
