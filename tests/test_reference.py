"""Every optimizer, option, dtype and kernel against the naive NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    CLASSES,
    COMBOS,
    NAMES,
    STEPS,
    all_variants,
    assert_close,
    combo_id,
    grad,
    problem,
    sign_of,
)
from hypothesis import given
from hypothesis import strategies as st
from naive import SLOTS, NaiveOptimizer

from nadam import kernels
from nadam.kernels import cpu
from nadam.kernels.tiered import wait
from nadam.threads import get_threads


def run_both(name, kw, n, dtype, steps=STEPS, seed=0, check_every=10):
    """``steps`` closed-loop steps of nadam and of the reference, each on its own iterate.

    Compares the parameters every ``check_every`` steps and the state at the end; returns
    (optimizer, reference, x0).
    """
    x0, a = problem(n, dtype, seed)
    sign = sign_of(kw)
    x = x0.copy()
    opt = CLASSES[name](x, **kw)
    ref = NaiveOptimizer(name, x0, **kw)
    for t in range(1, steps + 1):
        opt.step(grad(x, a, sign))
        ref.step(grad(ref.p, a, sign))
        if t % check_every == 0 or t == steps:
            assert_close(x, ref.p, err_msg=f"params after step {t}")
    assert opt.t == steps
    assert set(opt.state) == set(ref.arrays), "state slots differ from torch's names"
    assert set(opt.state) <= SLOTS[name]
    for slot, value in ref.arrays.items():
        assert_close(opt.state[slot], value, err_msg=f"state {slot!r}")
    return opt, ref, x0


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_matches_reference(combo, dtype, kernel_kind):
    """60 closed-loop steps agree with the reference (params every 10 steps, then state),
    for every option combination, both dtypes and both kernels."""
    name, kw = combo
    opt, ref, x0 = run_both(name, kw, 257, dtype)
    x = opt.params
    # Not vacuous: the iterate moved by a good fraction of its scale (13 % at least).
    assert np.max(np.abs(x - x0)) > 0.05 * np.max(np.abs(x))
    assert x.dtype == dtype
    assert all(row.dtype == dtype for row in opt.state.values())
    if kw.get("amsgrad"):  # the maximum was used somewhere
        assert np.any(opt.state["max_exp_avg_sq"] > opt.state["exp_avg_sq"])


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    """float32 parameters keep float32 params, state and checkpoint arrays."""
    x0, a = problem(33, np.float32)
    kw = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {}
    x = x0.copy()
    opt = CLASSES[name](x, **kw)
    for _ in range(3):
        opt.step(grad(x, a))
    assert opt.params is x and x.dtype == np.float32
    assert opt.state and all(v.dtype == np.float32 for v in opt.state.values())
    assert all(v.dtype == np.float32 for v in opt.state_dict()["state"].values())


@pytest.mark.parametrize("name", NAMES)
def test_lr_schedule_matches_reference(name):
    """A callable lr is evaluated at t = 1, 2, ... and used as that step's lr."""
    base = {"adadelta": 1.0, "adagrad": 0.1, "sgd": 0.05}.get(name, 0.02)
    kw = {"lr": lambda t: base * 0.95**t}
    if name in ("adam", "nadam", "radam"):
        kw.update(weight_decay=0.1, decoupled_weight_decay=True)  # lr enters the decay
    if name == "adagrad":
        kw["lr_decay"] = 0.05
    run_both(name, kw, 65, np.float64, steps=30)


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameter_change_midway_matches_reference(name):
    """Changing lr and another hyperparameter attribute between steps takes effect at the
    next step, exactly as in the reference with the same change."""
    other = {
        "sgd": ("momentum", 0.5),
        "rmsprop": ("alpha", 0.8),
        "adagrad": ("lr_decay", 0.1),
        "adadelta": ("rho", 0.7),
        "adamax": ("betas", (0.7, 0.95)),
        "nadam": ("eps", 1e-3),
        "radam": ("betas", (0.8, 0.99)),
        "adam": ("weight_decay", 0.2),
        "adamw": ("weight_decay", 0.2),
    }.get(name) or _another_value(CLASSES[name].rule)
    kw = {"momentum": 0.9} if name == "sgd" else dict(CLASSES[name].rule.examples[0])
    x0, a = problem(40, np.float64)
    x = x0.copy()
    opt = CLASSES[name](x, **kw)
    ref = NaiveOptimizer(name, x0, **kw)
    for t in range(1, 21):
        if t == 8:
            opt.lr = ref.hyper["lr"] = opt.lr * 3
        if t == 14:
            setattr(opt, other[0], other[1])
            ref.hyper[other[0]] = other[1]
        opt.step(grad(x, a))
        ref.step(grad(ref.p, a))
    assert opt.lr == ref.hyper["lr"] and getattr(opt, other[0]) == other[1]
    assert_close(x, ref.p)


def _another_value(rule) -> tuple:
    """(name, value) for a rule registered without an entry above: its first real
    hyperparameter after the shared ones, changed by 30 %."""
    spec = next(
        h for h in rule.hyper[4:] if h.kind == "real" and h.default is not None and not h.fixed
    )
    return spec.name, spec.default * 0.7 if spec.default else 0.1


# ---------------------------------------------------------------------------------
# Serial and parallel kernels: bit for bit
# ---------------------------------------------------------------------------------


def _run_stepper(name, kw, parallel, n, dtype, steps=4):
    rule = CLASSES[name].rule
    opts = rule.flags({**rule.defaults, **kw})
    hp = kernels.hyperparameters(name, **kw)
    step = cpu.stepper(rule, opts, parallel, cpu.shared_mode(hp))
    p, a = problem(n, dtype, seed=n)
    s = kernels.state(name, n, dtype, **kw)
    aux = kernels.aux(name)
    h = kernels.coefficient_buffer(name, dtype)
    for t in range(1, steps + 1):
        assert step(p, grad(p, a, sign_of(kw)), s, hp, t, aux, h) is None
    return p, s


@pytest.mark.parametrize("n", [1, 1_001, 100_003])
@pytest.mark.parametrize("variant", all_variants(), ids=combo_id)
def test_serial_and_parallel_kernels_bit_identical(variant, n, dtype):
    """The serial and the prange stepper of every compiled variant (every state layout,
    with the shared options off, decoupled only, or on) give identical bits, below and
    above the threshold, odd sizes included."""
    name, kw = variant
    p1, s1 = _run_stepper(name, kw, False, n, dtype)
    p2, s2 = _run_stepper(name, kw, True, n, dtype)
    assert p1.dtype == p2.dtype == dtype
    assert np.array_equal(p1, p2)
    assert np.array_equal(s1, s2)


def test_class_picks_parallel_kernel_by_size(monkeypatch):
    """Optimizers use the prange kernel from PARALLEL_THRESHOLD elements up, the serial one
    below; both runs give identical bits."""
    requested = []
    real = cpu.checked_stepper

    def spy(rule, opts=(), parallel=False, shared="full", lengths=True):
        requested.append(parallel)
        return real(rule, opts, parallel, shared, lengths)

    monkeypatch.setattr(cpu, "checked_stepper", spy)
    monkeypatch.setattr(cpu, "PARALLEL_THRESHOLD", 1000)
    threaded = cpu.choose_parallel(1000, get_threads())  # False on a one-thread machine
    results, asked = [], []
    for threshold in (1000, 10**9):
        monkeypatch.setattr(cpu, "PARALLEL_THRESHOLD", threshold)
        requested.clear()
        x, a = problem(1001, np.float64)
        opt = CLASSES["adam"](x, lr=0.05, amsgrad=True, weight_decay=0.1)
        opt.step(grad(x, a))
        wait()  # (a threaded step compiles in the background; its serial twin runs first)
        for _ in range(4):
            opt.step(grad(x, a))
        if threshold == 1000 and threaded:
            step = opt.stepper("checked", lengths=False)  # the one its steps run
            assert "parallel" in step.threaded.py_func.__name__ and step.runs[1] >= 2
        results.append(x)
        asked.append(list(requested))
    # The threaded step and its serial twin, then the serial one alone.
    assert asked == [[True, False] if threaded else [False], [False]]
    assert np.array_equal(results[0], results[1])
    monkeypatch.setattr(cpu, "PARALLEL_THRESHOLD", 1000)
    CLASSES["adam"](np.zeros(999))
    assert requested[-1] is False


# ---------------------------------------------------------------------------------
# Property tests over hyperparameters and sizes
# ---------------------------------------------------------------------------------


def _unit(lo=0.0, hi=0.99):
    return st.floats(lo, hi, allow_nan=False)


_LR = st.floats(1e-4, 0.05)
_EPS = st.floats(1e-8, 1e-2)
_WD = st.one_of(st.just(0.0), st.floats(0.0, 0.5))
_BETAS = st.tuples(_unit(0.0, 0.95), _unit(0.5, 0.9999))
_DECAY = st.fixed_dictionaries({"weight_decay": _WD, "maximize": st.booleans()})
_DECOUPLED = st.fixed_dictionaries(
    {"weight_decay": _WD, "maximize": st.booleans(), "decoupled_weight_decay": st.booleans()}
)


def _sgd(d):
    kw = d.draw(st.fixed_dictionaries({"lr": st.floats(1e-4, 0.1), "momentum": _unit()}))
    if kw["momentum"] > 0 and d.draw(st.booleans()):
        kw["nesterov"] = True
    else:
        kw["dampening"] = d.draw(_unit(0.0, 1.0))
    return kw


def _rmsprop(d):
    kw = d.draw(
        st.fixed_dictionaries(
            {
                "lr": st.floats(1e-4, 0.02),
                "eps": _EPS,
                "centered": st.booleans(),
                "momentum": st.one_of(st.just(0.0), _unit(0.0, 0.9)),
            }
        )
    )
    # Centered: v - gbar² cancels to about alpha^t·g² for a slowly varying gradient, and
    # float32 keeps only ~1e-7/alpha^t of it; alpha >= 0.8 keeps that well conditioned.
    kw["alpha"] = d.draw(_unit(0.8 if kw["centered"] else 0.0, 0.999))
    return kw


STRATEGIES = {
    "sgd": _sgd,
    "rmsprop": _rmsprop,
    "adagrad": lambda d: d.draw(
        st.fixed_dictionaries(
            {
                "lr": st.floats(1e-4, 0.2),
                "lr_decay": _unit(0.0, 1.0),
                "eps": _EPS,
                "initial_accumulator_value": _unit(0.0, 2.0),
            }
        )
    ),
    "adadelta": lambda d: d.draw(
        st.fixed_dictionaries(
            {"lr": st.floats(1e-3, 1.0), "rho": _unit(0.0, 0.99), "eps": st.floats(1e-8, 1e-3)}
        )
    ),
    "adam": lambda d: d.draw(
        st.fixed_dictionaries({"lr": _LR, "betas": _BETAS, "eps": _EPS, "amsgrad": st.booleans()})
    ),
    "adamw": lambda d: d.draw(
        st.fixed_dictionaries({"lr": _LR, "betas": _BETAS, "eps": _EPS, "amsgrad": st.booleans()})
    ),
    "adamax": lambda d: d.draw(st.fixed_dictionaries({"lr": _LR, "betas": _BETAS, "eps": _EPS})),
    "nadam": lambda d: d.draw(
        st.fixed_dictionaries(
            {"lr": _LR, "betas": _BETAS, "eps": _EPS, "momentum_decay": _unit(0.0, 0.5)}
        )
    ),
    "radam": lambda d: d.draw(st.fixed_dictionaries({"lr": _LR, "betas": _BETAS, "eps": _EPS})),
}
COMMON = {"adam": _DECOUPLED, "nadam": _DECOUPLED, "radam": _DECOUPLED}


def _from_examples(name):
    """For a rule without a strategy of its own: one of its examples (``Rule.examples``:
    sane settings of every code path), its step size scaled by 0.3 to 1, and random
    shared options."""
    rule = CLASSES[name].rule
    decoupled = rule.hyper[3]

    def draw(d):
        kw = dict(d.draw(st.sampled_from(rule.examples)))
        kw["lr"] = kw.get("lr", rule.defaults["lr"]) * d.draw(st.floats(0.3, 1.0))
        kw.update(d.draw(_DECAY))
        if not decoupled.fixed:
            kw[decoupled.name] = d.draw(st.booleans())
        return kw

    return draw


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_property_random_hyperparameters_and_sizes(name, data):
    """Random valid hyperparameters, sizes 1..2000 and both dtypes match the reference."""
    if name in STRATEGIES:
        kw = STRATEGIES[name](data)
        kw.update(data.draw(COMMON.get(name, _DECAY)))
    else:
        kw = _from_examples(name)(data)
    n = data.draw(st.integers(1, 2000), label="n")
    dtype = np.dtype(data.draw(st.sampled_from([np.float64, np.float32]), label="dtype"))
    seed = data.draw(st.integers(0, 2**16), label="seed")
    run_both(name, kw, n, dtype, steps=15, seed=seed, check_every=5)
