"""Learning-rate schedules against hand-written formulas and torch's schedulers."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from numba import njit

import nadam
from nadam import schedules

T = np.arange(1, 301)


def values(sched, ts=T):
    return np.array([sched(int(t)) for t in ts])


# ---------------------------------------------------------------------------
# Hand-computed formulas (t = 1 is the first step)
# ---------------------------------------------------------------------------


def test_constant():
    np.testing.assert_array_equal(values(schedules.constant(0.3)), 0.3)


@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (7, 0.1), (100, 0.9)])
def test_step(step_size, gamma):
    expected = [0.2 * gamma ** ((t - 1) // step_size) for t in T]
    np.testing.assert_allclose(values(schedules.step(0.2, step_size, gamma)), expected, rtol=1e-13)


def test_step_by_hand():
    sched = schedules.step(1.0, step_size=3, gamma=0.5)
    assert [sched(t) for t in range(1, 8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]


@pytest.mark.parametrize("gamma", [0.99, 0.5, 1.0])
def test_exponential(gamma):
    expected = [0.2 * gamma ** (t - 1) for t in T]
    np.testing.assert_allclose(values(schedules.exponential(0.2, gamma)), expected, rtol=1e-13)


@pytest.mark.parametrize(
    "total, warmup, min_lr",
    [(300, 0, 0.0), (200, 20, 0.01), (50, 50, 0.0), (1, 0, 0.0), (100, 1, 0.05)],
)
def test_cosine(total, warmup, min_lr):
    lr = 0.1

    def ref(t):
        if t < warmup:
            return lr * t / warmup
        peak = max(warmup, 1)
        progress = min(1.0, (t - peak) / max(total - peak, 1))
        return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2

    got = values(schedules.cosine(lr, total, warmup, min_lr))
    np.testing.assert_allclose(got, [ref(t) for t in T], rtol=1e-13, atol=1e-17)
    if warmup > 1:
        assert got[0] == lr / warmup and got[warmup - 1] == lr  # never 0; peaks at step w
    else:
        assert got[0] == lr


def test_cosine_by_hand():
    sched = schedules.cosine(2.0, total_steps=5, warmup_steps=0, min_lr=0.0)
    # progress (t - 1)/4: 0, 1/4, 1/2, 3/4, 1
    expected = [2.0, 1 + math.sqrt(0.5), 1.0, 1 - math.sqrt(0.5), 0.0, 0.0]
    np.testing.assert_allclose([sched(t) for t in range(1, 7)], expected, rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("warmup", [0, 1, 16])
def test_inverse_sqrt(warmup):
    def ref(t):
        return 0.5 * t / warmup if t < warmup else 0.5 * math.sqrt(max(warmup, 1) / t)

    np.testing.assert_allclose(
        values(schedules.inverse_sqrt(0.5, warmup)), [ref(t) for t in T], rtol=1e-15
    )


def plateau_reference(losses, lr, factor, patience, threshold, cooldown, min_lr, eps=1e-8):
    """torch.optim.lr_scheduler.ReduceLROnPlateau (min, rel), written out."""
    best, bad, cool, out = math.inf, 0, 0, []
    for loss in losses:
        if loss < best * (1 - threshold):
            best, bad = loss, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            if lr - new > eps:
                lr = new
            cool, bad = cooldown, 0
        out.append(lr)
    return out


def noisy_losses(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return 1.0 + np.exp(-np.arange(n) / 60) + 0.02 * rng.random(n)


@pytest.mark.parametrize(
    "factor, patience, threshold, cooldown, min_lr",
    [
        (0.1, 10, 1e-4, 0, 0.0),
        (0.5, 3, 1e-2, 5, 0.01),
        (0.9, 0, 0.0, 2, 0.0),
    ],
)
def test_reduce_on_plateau(factor, patience, threshold, cooldown, min_lr):
    losses = noisy_losses()
    sched = schedules.reduce_on_plateau(0.1, factor, patience, threshold, cooldown, min_lr)
    got = []
    for t, loss in enumerate(losses, start=1):
        sched.observe(loss)
        got.append(sched(t + 1))
    expected = plateau_reference(losses, 0.1, factor, patience, threshold, cooldown, min_lr)
    assert got == expected
    assert got[-1] < 0.1  # it did reduce


def test_plateau_improvement_is_relative_for_negative_losses():
    sched = schedules.reduce_on_plateau(1.0, factor=0.5, patience=0, threshold=0.1)
    sched.observe(-10.0)
    sched.observe(-10.5)  # better, but by less than 10%: not an improvement
    assert sched(3) == 0.5


# ---------------------------------------------------------------------------
# torch's schedulers as an independent reference
# ---------------------------------------------------------------------------


def torch_lrs(make, steps, metrics=None):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make(torch.optim.lr_scheduler, opt)
    out = []
    for k in range(steps):
        out.append(opt.param_groups[0]["lr"])  # the lr used by step k + 1
        opt.step()
        sched.step(*(() if metrics is None else (metrics[k],)))
    return out


@pytest.mark.torch
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (schedules.step(0.1, 7, 0.5), lambda s, o: s.StepLR(o, step_size=7, gamma=0.5)),
        (schedules.exponential(0.1, 0.98), lambda s, o: s.ExponentialLR(o, gamma=0.98)),
        (
            schedules.cosine(0.1, total_steps=201, min_lr=0.001),
            lambda s, o: s.CosineAnnealingLR(o, T_max=200, eta_min=0.001),
        ),
    ],
)
def test_against_torch(ours, theirs):
    ts = T[:201]  # torch's cosine turns back up after T_max; ours stays at min_lr
    np.testing.assert_allclose(values(ours, ts), torch_lrs(theirs, len(ts)), rtol=1e-12, atol=1e-16)


@pytest.mark.torch
def test_plateau_against_torch():
    losses = noisy_losses(seed=1)
    ours = schedules.reduce_on_plateau(0.1, factor=0.5, patience=5, cooldown=3)
    got = [0.1]
    for t, loss in enumerate(losses[:-1], start=1):
        ours.observe(loss)
        got.append(ours(t + 1))
    expected = torch_lrs(
        lambda s, o: s.ReduceLROnPlateau(o, factor=0.5, patience=5, cooldown=3),
        len(losses),
        metrics=losses,
    )
    assert got == expected


# ---------------------------------------------------------------------------
# One representation for Python, compiled code and the optimizers
# ---------------------------------------------------------------------------


ALL = [
    schedules.constant(0.1),
    schedules.step(0.1, 5),
    schedules.exponential(0.1, 0.99),
    schedules.cosine(0.1, 100, 10, 0.01),
    schedules.inverse_sqrt(0.1, 8),
    schedules.reduce_on_plateau(0.1, patience=2),
]


def test_compiled_evaluation_is_identical():
    @njit
    def run(kind, params, state, losses):
        out = np.empty(losses.shape[0])
        for k in range(losses.shape[0]):
            schedules.observe(kind, params, state, losses[k])
            out[k] = schedules.evaluate(kind, params, state, k + 1)
        return out

    losses = noisy_losses(150)
    for sched in ALL:
        py, jit = sched.copy(), sched.copy()
        expected = []
        for t, loss in enumerate(losses, start=1):
            py.observe(loss)
            expected.append(py(t))
        got = run(jit.kind, jit.params, jit.state, losses)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("sched", ALL, ids=lambda s: s.name)
def test_optimizer_accepts_a_schedule(sched):
    x1, x2 = np.ones(5), np.ones(5)
    opt1 = nadam.Adam(x1, lr=sched.copy())
    opt2 = nadam.Adam(x2, lr=0.0)
    for t in range(1, 60):
        opt2.lr = sched(t)
        opt1.step(2 * x1)
        opt2.step(2 * x2)
    np.testing.assert_array_equal(x1, x2)


def test_minimize_feeds_plateau_and_leaves_the_callers_schedule_alone():
    from nadam import Minimizer

    sched = schedules.reduce_on_plateau(0.1, factor=0.5, patience=5)
    before = sched.state_dict()

    def flat(x):  # a loss that never improves
        return 1.0, np.ones_like(x)

    run = Minimizer(flat, np.zeros(2), jac=True, options={"lr": sched, "maxiter": 50})
    run.run()
    np.testing.assert_array_equal(sched.state, before["state"])
    assert run.state.schedule(51) == 0.1 * 0.5**8  # reduced every 6 iterations


def test_state_dict_pickle_and_repr():
    sched = schedules.reduce_on_plateau(0.1, patience=0)
    for loss in (3.0, 3.0, 3.0):
        sched.observe(loss)
    clone = pickle.loads(pickle.dumps(sched))
    assert clone(10) == sched(10) < 0.1
    fresh = schedules.reduce_on_plateau(0.1, patience=0)
    fresh.load_state_dict(sched.state_dict())
    assert fresh(10) == sched(10)
    with pytest.raises(ValueError, match="schedule state is for kind"):
        schedules.constant(0.1).load_state_dict(sched.state_dict())
    assert repr(schedules.step(0.1, 5, 0.5)) == "nadam.schedules.step(0.1, 5, 0.5)"
    assert not schedules.cosine(0.1, 10).stateful and sched.stateful


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: schedules.constant(-0.1), ValueError, "Invalid lr: -0.1"),
        (
            lambda: schedules.constant("0.1"),
            TypeError,
            r"Invalid lr: .0.1. \(str\); allowed: a finite real number",
        ),
        (lambda: schedules.constant(math.nan), ValueError, "Invalid lr: nan"),
        (lambda: schedules.step(0.1, 0), ValueError, "Invalid step_size: 0"),
        (
            lambda: schedules.step(0.1, 2.5),
            TypeError,
            r"Invalid step_size: 2.5 \(float\); allowed: an int",
        ),
        (lambda: schedules.step(0.1, 2, gamma=1.5), ValueError, "Invalid gamma: 1.5"),
        (lambda: schedules.exponential(0.1, -0.5), ValueError, "Invalid gamma: -0.5"),
        (lambda: schedules.cosine(0.1, 0), ValueError, "Invalid total_steps: 0"),
        (lambda: schedules.cosine(0.1, 10, 11), ValueError, "Invalid warmup_steps: 11"),
        (lambda: schedules.cosine(0.1, 10, min_lr=0.2), ValueError, "Invalid min_lr: 0.2"),
        (lambda: schedules.inverse_sqrt(0.1, -1), ValueError, "Invalid warmup_steps: -1"),
        (lambda: schedules.reduce_on_plateau(0.1, factor=1.0), ValueError, "Invalid factor: 1.0"),
        (lambda: schedules.reduce_on_plateau(0.1, factor=0.0), ValueError, "Invalid factor: 0.0"),
        (lambda: schedules.reduce_on_plateau(0.1, patience=-1), ValueError, "Invalid patience"),
        (
            lambda: schedules.reduce_on_plateau(0.1, cooldown=True),
            TypeError,
            r"Invalid cooldown: True \(bool\); allowed: an int",
        ),
    ],
)
def test_bad_parameters(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
