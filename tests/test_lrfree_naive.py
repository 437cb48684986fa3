"""The naive learning-rate-free references (tests/naive_lrfree.py) against the packages.

``prodigyopt.Prodigy`` 1.1.2 and ``schedulefree.AdamWScheduleFree`` / ``SGDScheduleFree``
1.4.1 (``foreach=False``) on one flat float64 / float32 tensor, 100 closed-loop steps (each
run takes the gradient at its own iterate), over every option that changes the algorithm:
the iterates must agree to 1e-12 relative in float64 and 2e-5 (``atol`` scaled by
``max|x|``) in float32, including the schedule-free ``eval()`` / ``train()`` switches
mid-run and at the end; the state arrays and scalars too (Prodigy's float32 state at
1e-4, see STATE_TOL); runs continued from a ``state_dict`` pin down which scalars are
state (``naive_lrfree.SCALARS``); and every single step redone from the package's state
lands within a few ulps.

The objective is the project's (``conftest.problem`` / ``conftest.grad``).  Prodigy's
``d`` estimates the distance to a minimiser and that objective has none, so on it ``d``
and the iterates grow exponentially (about 1e34 after 100 steps with the defaults; float32
overflows near step 60).  Prodigy therefore runs either on that objective with
``growth_rate = 1.2`` (d ~ 1e2 after 100 steps), or on it plus ``MU/2 |x|^2`` (a minimiser
within |x| < 20) with ``lr = 0.25``, where ``d`` rises from 1e-6 to O(1) without the
chaotic bouncing around the minimiser that amplifies float32's reduction-order noise; the
settings that do bounce, and the defaults on the bare objective, run in float64 only.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from conftest import assert_close, grad, problem
from naive_lrfree import DEFAULTS, SCALARS, SLOTS, NaiveLRFree

torch = pytest.importorskip("torch")
prodigyopt = pytest.importorskip("prodigyopt")
schedulefree = pytest.importorskip("schedulefree")

pytestmark = pytest.mark.torch

N = 50
STEPS = 100
SWITCHES = (30, 65)  # eval() / train() after these steps (and at the end)
MU = 0.1  # Prodigy's L2 term in the objective

#: Iterates: float64 to 1e-12 relative, float32 to 2e-5 (atol = rtol * max|x|).
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-5}
#: State arrays and scalars.  Prodigy's carry d's relative error unnormalised (the step
#: m / sqrt(v) does not: d cancels), and in float32 d differs from torch's by ~1e-7 per
#: step because the two reductions are summed in another order.
STATE_TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-4}

PACKAGES = {
    "prodigy": lambda params, **kw: prodigyopt.Prodigy(params, **kw),
    "adamw_schedulefree": lambda params, **kw: schedulefree.AdamWScheduleFree(
        params, foreach=False, **kw
    ),
    "sgd_schedulefree": lambda params, **kw: schedulefree.SGDScheduleFree(
        params, foreach=False, **kw
    ),
}

# ---------------------------------------------------------------------------------
# Option combinations
# ---------------------------------------------------------------------------------

_WD = dict(weight_decay=0.1)
_COUPLED = dict(weight_decay=0.1, decouple=False)
_NOMOM = dict(betas=(0.0, 0.999))

F64, F32 = np.dtype(np.float64), np.dtype(np.float32)
BOTH, ONLY64 = (F64, F32), (F64,)

# Prodigy on the project's objective as is (mu = 0): steps never reverse, nothing is
# chaotic, but d grows without bound, so growth_rate = 1.2 unless given (d ~ 1e2 after
# 100 steps; float32 must hold s ~ d^2/d0 and exp_avg_sq ~ d^2 g^2).  lr = 1 unless given.
_BARE = [
    dict(),
    dict(lr=0.5, safeguard_warmup=True),  # safeguard_warmup matters only when lr*bias != 1
    dict(use_bias_correction=True),
    dict(use_bias_correction=True, safeguard_warmup=True),
    dict(beta3=0.9),
    dict(betas=(0.8, 0.9)),
    _NOMOM,  # the no-momentum branch: no exp_avg, p -= (dlr*d) g / denom
    {**_NOMOM, "use_bias_correction": True, "safeguard_warmup": True},
    dict(d_coef=0.5),
    dict(d_coef=2.0),
    dict(d0=1e-3),
    dict(eps=1e-3),  # eps enters as d*eps with the new d
    dict(slice_p=3),
    dict(growth_rate=1.5, d0=1e-4),  # d = d_max some steps, d*growth others
    dict(
        lr=0.5,
        betas=(0.8, 0.95),
        beta3=0.95,
        use_bias_correction=True,
        safeguard_warmup=True,
        d_coef=1.5,
        slice_p=2,
    ),
]
# Prodigy on the objective plus MU/2 |x|^2 (a minimiser within |x| < 20): d rises from d0
# to O(1) and stays (growth_rate = inf, the d = d_max path).  lr = 0.25 unless given: the
# iterates then settle without the chaotic bouncing that amplifies float32's ~1e-7
# differences in d (torch's reductions are summed in another order) past 2e-5.
_L2 = [
    dict(),
    _WD,  # decoupled: p -= wd*dlr*p before the step
    _COUPLED,  # coupled: into the gradient, hence into <g, p0 - p>, s, exp_avg
    dict(use_bias_correction=True),
    dict(safeguard_warmup=True),
    dict(beta3=0.9),
    dict(betas=(0.8, 0.9)),
    _NOMOM,
    {**_NOMOM, **_COUPLED},
    dict(d_coef=0.5),
    dict(d_coef=2.0),
    dict(d0=1e-3),
    dict(eps=1e-3),
    dict(slice_p=2, **_COUPLED),
    dict(growth_rate=1.5, d0=1e-4),
]
# float64 only: every default on the bare objective (d reaches ~1e34: float32 overflows),
# and runs that bounce around the L2 minimiser, where float32 differences grow past 2e-5.
_F64_BARE = [dict(growth_rate=float("inf"))]
_F64_L2 = [
    dict(lr=1.0),
    {**_NOMOM, **_WD},
    {**_NOMOM, "use_bias_correction": True, "safeguard_warmup": True, "lr": 1.0},
    dict(
        lr=0.5,
        betas=(0.8, 0.95),
        beta3=0.95,
        use_bias_correction=True,
        safeguard_warmup=True,
        d_coef=1.5,
        growth_rate=1.5,
        slice_p=2,
        **_WD,
    ),
]

#: (kw, mu, dtypes) of every Prodigy run.
PRODIGY = (
    [({"growth_rate": 1.2, **kw}, 0.0, BOTH) for kw in _BARE]
    + [({"lr": 0.25, **kw}, MU, BOTH) for kw in _L2]
    + [(kw, 0.0, ONLY64) for kw in _F64_BARE]
    + [({"lr": 0.25, **kw}, MU, ONLY64) for kw in _F64_L2]
)

ADAMW_SF = [
    dict(),  # every default (lr = 0.0025)
    dict(lr=0.02),
    dict(lr=0.02, **_WD),
    dict(lr=0.02, warmup_steps=10),
    dict(lr=0.02, r=1.0),
    dict(lr=0.02, r=0.5, warmup_steps=10),
    dict(lr=0.02, weight_lr_power=0.0, warmup_steps=10),
    dict(lr=0.02, weight_lr_power=1.0, warmup_steps=10),
    dict(lr=0.02, betas=(0.5, 0.99)),  # eval weight 1 - 1/b1 = -1: lerp's |w| >= 0.5 form
    dict(lr=0.02, betas=(0.6, 0.9)),
    dict(lr=0.02, betas=(0.95, 0.999)),
    dict(lr=0.02, eps=1e-3),
    dict(lr=0.02, betas=(0.8, 0.95), warmup_steps=7, r=0.5, weight_lr_power=1.5, **_WD),
]

SGD_SF = [
    dict(),  # every default (lr = 1, momentum = 0.9)
    dict(lr=0.05),
    dict(lr=0.05, **_WD),
    dict(lr=0.05, momentum=0.5),  # eval weight -1
    dict(lr=0.05, momentum=0.6),
    dict(lr=0.05, momentum=0.95),
    dict(lr=0.05, warmup_steps=10),
    dict(lr=0.05, r=1.0),
    dict(lr=0.05, r=0.5, warmup_steps=10),
    dict(lr=0.05, weight_lr_power=0.0, warmup_steps=10),
    dict(lr=0.05, weight_lr_power=1.0, warmup_steps=10),
    dict(lr=0.05, momentum=0.7, warmup_steps=7, r=0.5, weight_lr_power=1.5, **_WD),
]

#: (name, kw, mu, dtypes) of every closed-loop run.
COMBOS = (
    [("prodigy", kw, mu, dtypes) for kw, mu, dtypes in PRODIGY]
    + [("adamw_schedulefree", kw, 0.0, BOTH) for kw in ADAMW_SF]
    + [("sgd_schedulefree", kw, 0.0, BOTH) for kw in SGD_SF]
)
CASES = [(name, kw, mu, dt) for name, kw, mu, dtypes in COMBOS for dt in dtypes]


def combo_id(combo) -> str:
    name, kw = combo[:2]
    return f"{name}[{','.join(f'{k}={v}' for k, v in kw.items())}]"


def case_id(case) -> str:
    name, kw, mu, dt = case
    return f"{dt.name[0]}{dt.name[-2:]}-{combo_id(case)}" + (f"-mu={mu}" if mu else "")


@pytest.fixture(params=[np.float64, np.float32], ids=["f64", "f32"])
def dtype(request):
    return np.dtype(request.param)


# ---------------------------------------------------------------------------------
# A package optimizer and a naive reference run side by side
# ---------------------------------------------------------------------------------


def objective(a: np.ndarray, mu: float = 0.0):
    """The gradient each run is fed (at its own iterate): the project's objective, plus
    ``mu/2 |x|^2`` (only ``+`` and ``*``: NumPy and torch agree bit for bit)."""
    if mu == 0:
        return lambda x: grad(x, a)
    return lambda x: grad(x, a) + mu * x


def make_package(name, x, **kw):
    param = torch.nn.Parameter(torch.from_numpy(np.array(x, copy=True)))
    with contextlib.redirect_stdout(io.StringIO()):  # Prodigy prints about weight decay
        opt = PACKAGES[name]([param], **kw)
    return param, opt


class Pair:
    def __init__(self, name, x0, gradient, **kw):
        self.name, self.kw, self.gradient = name, kw, gradient
        self.param, self.opt = make_package(name, x0, **kw)
        self.ref = NaiveLRFree(name, x0, **kw)
        self.tol = TOL[x0.dtype]
        self.state_tol = STATE_TOL[x0.dtype]
        if name != "prodigy":
            self.train()

    @property
    def x(self) -> np.ndarray:
        return self.param.detach().numpy()

    def step(self, lr=None, zero_grad=False):
        x = self.x
        g = np.zeros_like(x) if zero_grad else self.gradient(x)
        if lr is not None:
            self.opt.param_groups[0]["lr"] = lr
            self.ref.hyper["lr"] = lr
        self.param.grad = torch.from_numpy(g)
        self.opt.step()
        self.ref.step(np.zeros_like(x) if zero_grad else self.gradient(self.ref.p))

    def eval(self):
        self.opt.eval()
        self.ref.eval()

    def train(self):
        self.opt.train()
        self.ref.train()

    def check(self, msg=""):
        assert_close(self.ref.p, self.x, rtol=self.tol, err_msg=msg)

    def check_state(self):
        check_state(self.ref, self.opt, self.param, self.state_tol)


def check_state(ref: NaiveLRFree, opt, param, tol):
    slots = {k: v for k, v in opt.state[param].items() if k != "step"}
    assert set(slots) == set(ref.arrays)
    assert set(slots) <= SLOTS[ref.name]
    for key, value in slots.items():
        assert_close(ref.arrays[key], value.numpy(), rtol=tol, err_msg=key)
    group = opt.param_groups[0]
    for key in SCALARS[ref.name]:
        if key in ("k", "weight_sum", "lr_max"):  # Python arithmetic only: identical
            assert ref.state[key] == group[key], key
        else:
            np.testing.assert_allclose(ref.state[key], group[key], rtol=tol, err_msg=key)
    if ref.name == "prodigy":
        assert ref.state["step"] == opt.state[param]["step"]
        for key in ("d_denom", "d_hat"):
            np.testing.assert_allclose(ref.state[key], group[key], rtol=tol, err_msg=key)


# ---------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------


def test_defaults_match_the_packages():
    """DEFAULTS lists every hyperparameter of the installed constructors, with their
    defaults (and the versions are the ones the references were written from)."""
    import importlib.metadata
    import inspect

    assert importlib.metadata.version("prodigyopt") == "1.1.2"
    assert importlib.metadata.version("schedulefree") == "1.4.1"
    classes = {
        "prodigy": prodigyopt.Prodigy,
        "adamw_schedulefree": schedulefree.AdamWScheduleFree,
        "sgd_schedulefree": schedulefree.SGDScheduleFree,
    }
    for name, cls in classes.items():
        params = inspect.signature(cls.__init__).parameters
        got = {k: p.default for k, p in params.items() if k not in ("self", "params", "foreach")}
        assert got == DEFAULTS[name], name


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_closed_loop(case):
    name, kw, mu, dtype = case
    x0, a = problem(N, dtype)
    run = Pair(name, x0, objective(a, mu), **kw)
    for t in range(1, STEPS + 1):
        run.step()
        run.check(f"step {t}")
        if t in SWITCHES and name != "prodigy":
            run.eval()
            run.check(f"eval after step {t}")
            run.train()
            run.check(f"train after step {t}")
    run.check_state()
    if name != "prodigy":
        run.eval()
        run.check("final eval")
        run.check_state()
        run.train()
        run.check("final train")
    else:  # d did move away from d0
        assert run.opt.param_groups[0]["d"] > 1e3 * kw.get("d0", 1e-6)


@pytest.mark.parametrize("name", list(PACKAGES))
def test_lr_changes_between_steps(name, dtype):
    """lr read afresh every step; lr = 0 skips Prodigy's step entirely (k stays) and makes
    the schedule-free weight_sum 0 (ckp1 = 0 through ZeroDivisionError)."""
    x0, a = problem(N, dtype)
    lrs = {"prodigy": 0.25, "adamw_schedulefree": 0.02, "sgd_schedulefree": 0.05}
    base = lrs[name]
    # Prodigy refuses lr = 0 at construction only; the schedule-free rules take it.
    first = 0.0 if name != "prodigy" else base
    run = Pair(name, x0, objective(a, MU if name == "prodigy" else 0.0), lr=first)
    for t in range(1, 41):
        lr = 0.0 if (t <= 3 and name != "prodigy") or t in (10, 11) else base * (1 + 0.02 * t)
        run.step(lr=lr)
        run.check(f"step {t}")
    run.check_state()
    if name == "prodigy":
        assert run.opt.param_groups[0]["k"] == 38
    else:
        run.eval()
        run.check("eval")


def test_prodigy_zero_first_gradient_and_zero_start(dtype):
    """A zero gradient at the first step leaves sum|s| = 0: the step returns early (no d,
    k or step update).  An all-zero start gets a 0-d p0."""
    x0, a = problem(N, dtype)
    run = Pair("prodigy", np.zeros_like(x0), objective(a, MU), lr=0.25)
    run.step(zero_grad=True)
    run.check("zero gradient")
    assert run.opt.param_groups[0]["k"] == 0 and run.ref.state["k"] == 0
    assert run.opt.state[run.param]["p0"].ndim == 0 and run.ref.state["p0"].ndim == 0
    for t in range(2, STEPS + 1):
        run.step()
        run.check(f"step {t}")
    run.check_state()
    assert run.opt.param_groups[0]["k"] == STEPS - 1


def test_adamw_schedulefree_no_momentum(dtype):
    """betas[0] = 0: steps fine (y = x), but eval() divides by zero in both."""
    x0, a = problem(N, dtype)
    run = Pair("adamw_schedulefree", x0, objective(a), lr=0.02, betas=(0.0, 0.999))
    for t in range(1, STEPS + 1):
        run.step()
        run.check(f"step {t}")
    run.check_state()
    with pytest.raises(ZeroDivisionError):
        run.opt.eval()
    with pytest.raises(ZeroDivisionError):
        run.ref.eval()


def test_schedulefree_step_needs_train_mode():
    x0, a = problem(N)
    for name in ("adamw_schedulefree", "sgd_schedulefree"):
        param, opt = make_package(name, x0)
        param.grad = torch.from_numpy(grad(x0, a))
        with pytest.raises(Exception, match="train mode"):
            opt.step()
        with pytest.raises(RuntimeError, match="train mode"):
            NaiveLRFree(name, x0).step(grad(x0, a))
        # before the first step there is no z: eval()/train() leave p alone
        opt.eval()
        opt.train()
        np.testing.assert_array_equal(param.detach().numpy(), x0)


STATE_DICT_CASES = [  # (name, kw, mu, mode to save in)
    ("prodigy", dict(lr=0.25), MU, None),  # inside the rise of d (~1 at step 30)
    ("prodigy", dict(lr=0.25, use_bias_correction=True, **_COUPLED), MU, None),
    ("prodigy", dict(betas=(0.0, 0.999), growth_rate=1.5, slice_p=3), 0.0, None),
    ("adamw_schedulefree", dict(lr=0.02, warmup_steps=60, r=0.5, **_WD), 0.0, "eval"),
    ("adamw_schedulefree", dict(lr=0.02, warmup_steps=60, weight_lr_power=1.0), 0.0, "train"),
    ("sgd_schedulefree", dict(lr=0.05, warmup_steps=60, r=0.5, **_WD), 0.0, "eval"),
    ("sgd_schedulefree", dict(lr=0.05, momentum=0.6, warmup_steps=60), 0.0, "train"),
]


@pytest.mark.parametrize(
    "name, kw, mu, mode",
    STATE_DICT_CASES,
    ids=[combo_id(c) + f"-{c[3]}" for c in STATE_DICT_CASES],
)
def test_state_dict_round_trip(name, kw, mu, mode, dtype):
    """Halfway through (inside the warmup, for the schedule-free rules), the package's
    state_dict is loaded (1) into a fresh package optimizer, which must then continue
    bit for bit, and (2) into a fresh naive reference through only SCALARS and the slots,
    which must continue within tolerance: so those are all the state there is."""
    x0, a = problem(N, dtype)
    g = objective(a, mu)
    param, opt = make_package(name, x0, **kw)
    if mode:
        opt.train()
    half = 40
    for _ in range(half):
        param.grad = torch.from_numpy(g(param.detach().numpy()))
        opt.step()
    if mode == "eval":  # as the schedule-free docs ask before saving
        opt.eval()
    saved = copy.deepcopy(opt.state_dict())
    x_saved = param.detach().numpy().copy()

    param2, opt2 = make_package(name, x_saved, **kw)
    opt2.load_state_dict(copy.deepcopy(saved))
    ref = NaiveLRFree(name, x_saved, **kw)
    slots = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in saved["state"][0].items()}
    ref.load(x_saved, saved["param_groups"][0], slots)
    if mode:
        opt.train()
        opt2.train()
        ref.train()
    tol = TOL[dtype]
    for t in range(half + 1, STEPS + 1):
        for p, o in ((param, opt), (param2, opt2)):
            p.grad = torch.from_numpy(g(p.detach().numpy()))
            o.step()
        ref.step(g(ref.p))
        np.testing.assert_array_equal(param2.detach().numpy(), param.detach().numpy())
        assert_close(ref.p, param.detach().numpy(), rtol=tol, err_msg=f"step {t}")
    check_state(ref, opt, param, STATE_TOL[dtype])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_one_step_from_package_state(case):
    """Every step of a package run, redone by the reference from the package's own state
    (parameter, state_dict, gradient): within a few ulps of max|x| (of max|slot| for the
    state).  This is what the closed loop accumulates; it shows the references follow
    the packages' order of operations (torch's FMAs, its sqrt, and for Prodigy the
    summation order of its two reductions account for the rest)."""
    name, kw, mu, dtype = case
    x0, a = problem(N, dtype)
    g = objective(a, mu)
    param, opt = make_package(name, x0, **kw)
    if name != "prodigy":
        opt.train()
    ulp = np.finfo(dtype).eps
    for t in range(1, STEPS + 1):
        x = param.detach().numpy().copy()
        saved = copy.deepcopy(opt.state_dict())
        grad_x = g(x)
        param.grad = torch.from_numpy(grad_x.copy())
        opt.step()
        ref = NaiveLRFree(name, x, **kw)
        if saved["state"]:
            slots = {
                k: v.numpy() if hasattr(v, "numpy") else v for k, v in saved["state"][0].items()
            }
            ref.load(x, saved["param_groups"][0], slots)
        else:
            ref.train_mode = name != "prodigy"
        ref.step(grad_x)
        x_new = param.detach().numpy()
        err = np.max(np.abs(ref.p - x_new)) / (np.max(np.abs(x_new)) * ulp)
        assert err <= 16, (t, err)
        for key, value in opt.state[param].items():
            if key != "step":
                value = value.numpy()
                err = np.max(np.abs(ref.state[key] - value)) / (np.max(np.abs(value)) * ulp)
                assert err <= 16, (t, key, err)
