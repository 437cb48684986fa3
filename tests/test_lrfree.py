"""Prodigy and the schedule-free rules beyond the generic tables: train()/eval() against
the packages, their skipped steps, what minimize returns, and the two passes.

The tables of tests/conftest.py (every example, crossed with weight decay and maximize)
already run these rules against the packages (test_torch_parity.py), the naive references
(test_reference.py), the serial/threaded kernels and the CUDA simulator."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import CLASSES, assert_close, grad, problem

import nadam
from nadam.kernels import cpu

torch = pytest.importorskip("torch")
prodigyopt = pytest.importorskip("prodigyopt")
schedulefree = pytest.importorskip("schedulefree")

SCHEDULE_FREE = {
    "adamw_schedulefree": schedulefree.AdamWScheduleFree,
    "sgd_schedulefree": schedulefree.SGDScheduleFree,
}


@pytest.fixture(params=[np.float64, np.float32], ids=["f64", "f32"])
def dtype(request):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if request.param == np.float64 else torch.float32)
    yield np.dtype(request.param)
    torch.set_default_dtype(old)


def _package(cls, x0, **kw):
    param = torch.nn.Parameter(torch.from_numpy(x0.copy()))
    extra = {"foreach": False} if cls in SCHEDULE_FREE.values() else {}
    return param, cls([param], **kw, **extra)


def _step(param, opt, g):
    param.grad = torch.from_numpy(g.copy())
    opt.step()


@pytest.mark.parametrize("name", sorted(SCHEDULE_FREE))
def test_train_eval_switches_equal_the_package(name, dtype):
    """eval() and train() mid-run (after steps 20 and 45), a state_dict taken in eval mode
    and loaded into a new optimizer, and the final eval(): the package's numbers."""
    x0, a = problem(97, dtype)
    kw = {"lr": 0.05, "warmup_steps": 5, "weight_decay": 0.01}
    x = x0.copy()
    opt = CLASSES[name](x, **kw)
    param, ref = _package(SCHEDULE_FREE[name], x0, **kw)
    ref.train()
    for t in range(1, 71):
        if t in (21, 46):
            opt.eval(), ref.eval()
            assert not opt.train_mode
            assert_close(x, param.detach().numpy(), err_msg=f"x after eval() at {t}")
            if t == 46:  # saved in eval mode (x in the parameters), as the package advises
                saved = pickle.loads(pickle.dumps(opt.state_dict()))
                opt = CLASSES[name](x, lr=0.3)
                opt.load_state_dict(saved)
                assert not opt.train_mode and opt.t == 45
            opt.train(), ref.train()
        opt.step(grad(x, a))
        _step(param, ref, grad(param.detach().numpy(), a))
        assert_close(x, param.detach().numpy(), err_msg=f"y after step {t}")
    opt.eval(), ref.eval()
    assert_close(x, param.detach().numpy(), err_msg="the final x")
    with pytest.raises(RuntimeError, match="call train"):
        opt.step(grad(x, a))


def test_evaluation_point_leaves_the_optimizer_as_it_is():
    x0, a = problem(31)
    x = x0.copy()
    opt = nadam.AdamWScheduleFree(x, lr=0.05)
    for _ in range(10):
        opt.step(grad(x, a))
    y = x.copy()
    point = opt.evaluation_point()
    np.testing.assert_array_equal(x, y)  # still y, in train mode
    opt.eval()
    np.testing.assert_array_equal(x, point)


def test_eval_needs_a_first_beta():
    opt = nadam.AdamWScheduleFree(np.ones(3), betas=(0.0, 0.999))
    opt.step(np.ones(3))
    with pytest.raises(ValueError, match=r"evaluation point .* needs betas\[0\] > 0, got 0.0"):
        opt.eval()


@pytest.mark.parametrize(
    "first_gradient, lr", [(0.0, 1.0), (1.0, 0.0)], ids=["zero gradient", "lr 0"]
)
def test_prodigy_skips_steps_as_the_package(first_gradient, lr):
    """A first gradient of zeros (every |s| is 0) or a learning rate of 0 (a schedule
    that reaches it): the package leaves p, d and its step count as they were; so does
    nadam, and the next steps agree."""
    x0, a = problem(40)
    x = x0.copy()
    schedule = lambda t: lr if t == 1 else 0.5  # noqa: E731
    opt = nadam.Prodigy(x, lr=schedule, growth_rate=1.2)
    param, ref = _package(prodigyopt.Prodigy, x0, lr=0.5, growth_rate=1.2)
    for t in range(1, 30):
        g = grad(x, a) * (first_gradient if t == 1 else 1.0)
        ref.param_groups[0]["lr"] = schedule(t)
        opt.step(g)
        _step(param, ref, g if t == 1 else grad(param.detach().numpy(), a))
        assert_close(x, param.detach().numpy(), err_msg=f"step {t}")
        if t == 1:
            np.testing.assert_array_equal(x, x0)
    group = ref.param_groups[0]
    d, d_max, numerator, k = opt.state_dict()["aux"]
    assert_close(
        np.array([d, d_max, numerator]), np.array([group[n] for n in ("d", "d_max", "d_numerator")])
    )
    assert k == group["k"] == 28  # the skipped step did not count


def test_prodigy_threads_give_the_bits_of_one(monkeypatch):
    """Prodigy's sums are added block by block in a fixed order (cpu.BLOCK): serial and
    threaded runs, over several blocks, agree bit for bit."""
    n = 3 * cpu.BLOCK + 17
    x0, a = problem(n)
    runs = []
    for threshold in (0, 2**62):
        monkeypatch.setattr(cpu, "PARALLEL_THRESHOLD", threshold)
        x = x0.copy()
        opt = nadam.Prodigy(x, growth_rate=1.2)
        for _ in range(12):
            opt.step(grad(x, a))
        runs.append((x, opt.state_dict()["aux"]))
    (x1, aux1), (x2, aux2) = runs
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(aux1, aux2)


@pytest.mark.parametrize("name", ["prodigy", *sorted(SCHEDULE_FREE)])
def test_minimize_returns_the_point_to_evaluate(name):
    """minimize with a schedule-free rule returns x (the average), not y, with fun and jac
    evaluated there; the compiled loop gives the Python loop's bits."""
    from numba import njit

    rng = np.random.default_rng(0)
    A, b = rng.normal(size=(200, 4)), rng.normal(size=200)

    @njit(cache=True)
    def loss(x, A, b):
        r = A @ x - b
        return r @ r / len(b), 2.0 * (A.T @ r) / len(b)

    opts = {"maxiter": 400, "batch_size": 32, "seed": 0}
    fast = nadam.minimize(loss, np.zeros(4), args=(A, b), jac=True, method=name, options=opts)
    slow = nadam.minimize(
        loss, np.zeros(4), args=(A, b), jac=True, method=name, options={**opts, "compiled": False}
    )
    np.testing.assert_array_equal(fast.x, slow.x)
    assert fast.fun == loss(fast.x, A, b)[0]
    exact = np.linalg.lstsq(A, b, rcond=None)[0]
    assert fast.fun < loss(exact, A, b)[0] * 1.01
    if name in SCHEDULE_FREE:  # the returned x is the average of the run, not its last y
        m = nadam.Minimizer(loss, np.zeros(4), args=(A, b), jac=True, method=name, options=opts)
        res = m.run()
        assert not np.array_equal(res.x, m.state.x)
        np.testing.assert_array_equal(res.x, m.state.optimizer.evaluation_point())
