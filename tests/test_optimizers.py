"""The optimizer classes' contract: validation, in-place steps, attributes, non-finite
gradients, checkpoints, repr."""

from __future__ import annotations

import copy
import inspect
import math
import pickle
import re
import warnings

import numpy as np
import pytest
from conftest import CLASSES, NAMES, assert_close, combo_id, grad, opts_variants, problem, sign_of
from naive import DEFAULTS, NaiveOptimizer

import nadam

BETAS = ("adam", "adamw", "adamax", "nadam", "radam")
NAN, INF = math.nan, math.inf


def snapshot(opt) -> dict:
    """Everything an optimizer holds, deep-copied (params, state, step count, aux...)."""
    sd = opt.state_dict()
    return {**sd, "params": opt.params.copy(), "state": dict(sd["state"])}


def assert_same_snapshot(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "state":
            assert a[key].keys() == b[key].keys()
            for slot in a[key]:
                assert np.array_equal(a[key][slot], b[key][slot], equal_nan=True), slot
        elif isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key], equal_nan=True), key
        else:
            assert a[key] == b[key], key


# ---------------------------------------------------------------------------------
# Construction: hyperparameters
# ---------------------------------------------------------------------------------


def _invalid_rows():
    """(class name, kwargs, exception, substrings the message must contain)."""
    rows = []
    for name in NAMES:
        rows += [
            (name, {"lr": -1e-3}, ValueError, ["lr", "-0.001"]),
            (name, {"lr": NAN}, ValueError, ["lr", "nan"]),
            (name, {"lr": INF}, ValueError, ["lr", "inf"]),
            (name, {"lr": "0.1"}, TypeError, ["lr", "'0.1'"]),
            (name, {"lr": None}, TypeError, ["lr", "None"]),
            (name, {"weight_decay": -0.5}, ValueError, ["weight_decay", "-0.5"]),
            (name, {"weight_decay": NAN}, ValueError, ["weight_decay", "nan"]),
            (name, {"maximize": "yes"}, TypeError, ["maximize", "yes"]),
            (name, {"foo": 1}, TypeError, ["foo"]),
            (name, {"nonfinite": "bogus"}, ValueError, ["nonfinite", "bogus"]),
        ]
        if "eps" in CLASSES[name].rule.arguments:
            rows.append((name, {"eps": -1e-8}, ValueError, ["eps", "-1e-08"]))
    for name in BETAS:
        for i, bad in [(0, 1.0), (0, -0.1), (1, 1.0), (1, 1.5), (1, NAN)]:
            betas = [0.9, 0.999]
            betas[i] = bad
            rows.append((name, {"betas": tuple(betas)}, ValueError, ["betas", f"[{i}]", str(bad)]))
        rows += [
            (name, {"betas": 0.9}, TypeError, ["betas", "0.9"]),
            (name, {"betas": (0.9,)}, TypeError, ["betas"]),
            (name, {"betas": (0.9, 0.99, 0.999)}, TypeError, ["betas"]),
            (name, {"betas": ("0.9", 0.99)}, TypeError, ["betas"]),
        ]
    for name in ("sgd", "rmsprop"):
        rows.append((name, {"momentum": -0.1}, ValueError, ["momentum", "-0.1"]))
    rows += [
        ("sgd", {"dampening": -0.1}, ValueError, ["dampening", "-0.1"]),
        ("sgd", {"nesterov": True}, ValueError, ["nesterov", "momentum"]),
        (
            "sgd",
            {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
            ValueError,
            ["nesterov", "dampening"],
        ),
        ("sgd", {"nesterov": "True", "momentum": 0.9}, TypeError, ["nesterov"]),
        ("rmsprop", {"alpha": -0.1}, ValueError, ["alpha", "-0.1"]),
        ("rmsprop", {"alpha": 1.5}, ValueError, ["alpha", "1.5"]),
        ("rmsprop", {"centered": "no"}, TypeError, ["centered"]),
        ("adagrad", {"lr_decay": -0.1}, ValueError, ["lr_decay", "-0.1"]),
        (
            "adagrad",
            {"initial_accumulator_value": -1.0},
            ValueError,
            ["initial_accumulator_value", "-1.0"],
        ),
        ("adadelta", {"rho": -0.1}, ValueError, ["rho", "-0.1"]),
        ("adadelta", {"rho": 1.5}, ValueError, ["rho", "1.5"]),
        ("adam", {"amsgrad": "yes"}, TypeError, ["amsgrad"]),
        ("adam", {"momentum": 0.9}, TypeError, ["momentum"]),
        ("adamw", {"decoupled_weight_decay": True}, TypeError, ["decoupled_weight_decay"]),
        ("nadam", {"momentum_decay": -1.0}, ValueError, ["momentum_decay", "-1.0"]),
        ("radam", {"amsgrad": True}, TypeError, ["amsgrad"]),
    ]
    return rows


def _row_id(row):
    name, kw, exc, _ = row
    return f"{name}-{exc.__name__}-" + ",".join(f"{k}={v!r}" for k, v in kw.items())


@pytest.mark.parametrize("row", _invalid_rows(), ids=_row_id)
def test_invalid_hyperparameter_raises_naming_it(row):
    """Each invalid hyperparameter raises ValueError (bad value) or TypeError (bad type or
    unknown name) at construction, and the message names the parameter and the value."""
    name, kw, exc, words = row
    with pytest.raises(exc) as info:
        CLASSES[name](np.zeros(3), **kw)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "combo",
    [
        ("sgd", dict(lr=0.0, momentum=0.0, dampening=1.0)),
        ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=0.0)),
        ("rmsprop", dict(alpha=0.0, eps=0.0, momentum=0.0)),
        ("rmsprop", dict(alpha=1.0)),
        ("adagrad", dict(lr_decay=0.0, initial_accumulator_value=0.0, eps=0.0)),
        ("adadelta", dict(rho=0.0)),
        ("adadelta", dict(rho=1.0)),
        ("adam", dict(betas=(0.0, 0.0), eps=0.0, lr=0)),
        ("adam", dict(betas=[0.5, 0.5], lr=np.float32(0.1), weight_decay=np.int64(1))),
        ("nadam", dict(momentum_decay=0.0)),
    ],
    ids=combo_id,
)
def test_boundary_values_accepted(combo):
    """The ends of every allowed range (and NumPy scalars, lists for betas) are accepted."""
    name, kw = combo
    opt = CLASSES[name](np.zeros(3), **kw)
    assert opt.t == 0


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_torchs(name):
    """Each class's hyperparameters default to torch.optim's values (attributes)."""
    opt = CLASSES[name](np.zeros(2))
    for key, value in DEFAULTS[name].items():
        assert getattr(opt, key) == value, key


# ---------------------------------------------------------------------------------
# Construction: params; step: grad
# ---------------------------------------------------------------------------------


def _readonly():
    x = np.zeros(4)
    x.setflags(write=False)
    return x


@pytest.mark.parametrize(
    "params, words",
    [
        ([0.0, 1.0], ["NumPy array", "list"]),
        (3.0, ["NumPy array", "float"]),
        (np.zeros(4, dtype=np.int64), ["float32", "float64", "int64"]),
        (np.zeros(4, dtype=np.float16), ["float32", "float64", "float16"]),
        (np.zeros(4, dtype=np.complex128), ["float32", "float64", "complex128"]),
        (np.zeros(8)[::2], ["C-contiguous"]),
        (np.zeros((3, 4), order="F"), ["C-contiguous"]),
        (_readonly(), ["writable"]),
    ],
    ids=["list", "float", "int64", "float16", "complex", "strided", "fortran", "readonly"],
)
def test_bad_params_type_error_says_what_is_needed(params, words):
    """Params that cannot be updated in place get a TypeError saying what is needed."""
    with pytest.raises(TypeError) as info:
        nadam.Adam(params)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "bad, exc, words",
    [
        (np.zeros(5), ValueError, ["(5,)", "(4,)"]),
        (np.zeros((4, 1)), ValueError, ["(4, 1)", "(4,)"]),
        (np.zeros(4, dtype=np.float32), TypeError, ["float32", "float64"]),
        (np.zeros(4, dtype=np.int64), TypeError, ["int64"]),
        ([0.0, 0.0, 0.0, 0.0], TypeError, ["list"]),
    ],
    ids=["long", "2d", "float32", "int", "list"],
)
def test_bad_grad_rejected_without_touching_anything(bad, exc, words):
    """A gradient of the wrong shape is a ValueError, of the wrong dtype or type a
    TypeError; params, state and t are left as they were."""
    x, a = problem(4)
    opt = nadam.Adam(x, lr=0.1)
    opt.step(grad(x, a))
    before = snapshot(opt)
    with pytest.raises(exc) as info:
        opt.step(bad)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert_same_snapshot(snapshot(opt), before)


def test_strided_gradient_is_read_correctly():
    """A non-contiguous gradient (a strided view, a transpose) gives the same step as its
    contiguous copy."""
    x1 = np.linspace(-1, 1, 12).reshape(3, 4)
    x2 = x1.copy()
    o1, o2 = nadam.Adam(x1, lr=0.1), nadam.Adam(x2, lr=0.1)
    g = np.arange(24.0).reshape(4, 6)[:, ::2].T  # shape (3, 4), neither C nor F order
    assert not g.flags.c_contiguous
    o1.step(g)
    o2.step(np.ascontiguousarray(g))
    assert np.array_equal(x1, x2)


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_step_returns_none_and_updates_callers_array_in_place(name, shape):
    """step() returns None and writes into the array passed in, whatever its shape."""
    x0, a = problem(math.prod(shape))
    x0, a = x0.reshape(shape), a.reshape(shape)
    x = x0.copy()
    kw = {"lr": 0.1, "momentum": 0.5} if name == "sgd" else {"lr": 0.1}
    opt = CLASSES[name](x, **kw)
    ref = NaiveOptimizer(name, x0, **kw)
    assert opt.params is x
    for _ in range(3):
        assert opt.step(grad(x, a)) is None
        ref.step(grad(ref.p, a))
    assert opt.params is x and x.shape == shape and opt.t == 3
    assert_close(x, ref.p)
    if x.size:
        assert not np.array_equal(x, x0)


# ---------------------------------------------------------------------------------
# Hyperparameters as attributes
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, attr, bad, exc",
    [
        ("adam", "lr", -1.0, ValueError),
        ("adam", "lr", "0.1", TypeError),
        ("adam", "betas", (1.0, 0.9), ValueError),
        ("adam", "eps", -1.0, ValueError),
        ("adam", "amsgrad", True, ValueError),  # would change the state layout
        ("sgd", "momentum", 0.0, ValueError),  # would drop the momentum buffer
        ("sgd", "dampening", 0.5, ValueError),  # nesterov needs dampening 0
        ("rmsprop", "alpha", 2.0, ValueError),
        ("rmsprop", "centered", True, ValueError),
        ("nadam", "momentum_decay", NAN, ValueError),
    ],
)
def test_invalid_attribute_raises_and_keeps_old_value(name, attr, bad, exc):
    """Setting a hyperparameter attribute is validated at once (with the other current
    values); a rejected value leaves the old one in force for the next step."""
    kw = {"momentum": 0.9, "nesterov": True} if name == "sgd" else {}
    if name == "rmsprop":
        kw["momentum"] = 0.9
    x0, a = problem(10)
    x, y = x0.copy(), x0.copy()
    opt, twin = CLASSES[name](x, **kw), CLASSES[name](y, **kw)
    old = getattr(opt, attr)
    with pytest.raises(exc, match=attr):
        setattr(opt, attr, bad)
    assert getattr(opt, attr) == old
    for _ in range(2):
        opt.step(grad(x, a))
        twin.step(grad(y, a))
    assert np.array_equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_lr_attribute_takes_effect_at_next_step(name):
    """opt.lr = 0 freezes the parameters from the next step on (the state still moves);
    restoring lr moves them again."""
    kw = {"weight_decay": 0.1}
    if name in ("adam", "nadam", "radam"):
        kw["decoupled_weight_decay"] = True
    x, a = problem(20)
    opt = CLASSES[name](x, **kw)
    opt.step(grad(x, a))
    # (A rule whose lr must be > 0, as Prodigy's, still takes a schedule that reaches 0.)
    opt.lr = (lambda t: 0.0) if CLASSES[name].rule.hyper[0].low_open else 0.0
    frozen = x.copy()
    opt.step(grad(x, a))
    assert np.array_equal(x, frozen)
    assert opt.t == 2
    opt.lr = 0.1
    opt.step(grad(x, a))
    assert not np.array_equal(x, frozen)


def test_nonfinite_attribute_is_validated():
    """opt.nonfinite accepts only "raise", "skip" or "ignore", as the constructor does."""
    opt = nadam.Adam(np.zeros(3))
    opt.nonfinite = "skip"
    with pytest.raises(ValueError, match="nonfinite"):
        opt.nonfinite = "skp"
    assert opt.nonfinite == "skip"


# ---------------------------------------------------------------------------------
# Non-finite gradients
# ---------------------------------------------------------------------------------


def _poisoned(g, bad, where):
    g = g.copy()
    g[{"first": 0, "middle": g.size // 2, "last": -1}[where]] = bad
    return g


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("variant", opts_variants(), ids=combo_id)
def test_nonfinite_raise_leaves_everything_untouched(variant, bad, where):
    """nonfinite="raise" (the default) raises NonFiniteGradientError (a ValueError and a
    FloatingPointError) and leaves params, state, aux and t bit-identical; the run then
    continues exactly as if the bad gradient had never been passed."""
    name, kw = variant
    x0, a = problem(9)
    sign = sign_of(kw)
    x, y = x0.copy(), x0.copy()
    opt, twin = CLASSES[name](x, **kw), CLASSES[name](y, **kw)
    for _ in range(3):
        opt.step(grad(x, a, sign))
        twin.step(grad(y, a, sign))
    before = snapshot(opt)
    with pytest.raises(nadam.NonFiniteGradientError) as info:
        opt.step(_poisoned(grad(x, a, sign), bad, where))
    assert isinstance(info.value, ValueError) and isinstance(info.value, FloatingPointError)
    assert_same_snapshot(snapshot(opt), before)
    opt.step(grad(x, a, sign))
    twin.step(grad(y, a, sign))
    assert np.array_equal(x, y)
    assert_same_snapshot(snapshot(opt), snapshot(twin))


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_skip_warns_and_skips(name):
    """nonfinite="skip" warns (RuntimeWarning), takes no step, and does not count it:
    a learning-rate schedule resumes at the step that was skipped."""
    x0, a = problem(9)
    x, y = x0.copy(), x0.copy()
    schedule = lambda t: 0.1 / t
    opt = CLASSES[name](x, nonfinite="skip", lr=schedule)
    twin = CLASSES[name](y, lr=schedule)
    opt.step(grad(x, a))
    twin.step(grad(y, a))
    before = snapshot(opt)
    with pytest.warns(RuntimeWarning, match="skip"):
        opt.step(_poisoned(grad(x, a), NAN, "middle"))
    assert_same_snapshot(snapshot(opt), before)
    assert opt.t == 1
    for _ in range(2):
        opt.step(grad(x, a))
        twin.step(grad(y, a))
    assert np.array_equal(x, y)
    assert_same_snapshot(snapshot(opt), snapshot(twin))


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_ignore_propagates(name):
    """nonfinite="ignore" runs the step: the NaN reaches the parameters, t advances, and
    no warning is given."""
    x, a = problem(9)
    opt = CLASSES[name](x, nonfinite="ignore", lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(_poisoned(grad(x, a), NAN, "middle"))
    assert opt.t == 1
    assert np.isnan(x[4]) and np.isfinite(np.delete(x, 4)).all()


def test_nonfinite_detected_in_large_arrays():
    """The check covers every element of an array above the parallel threshold."""
    x, a = problem(100_003)
    opt = nadam.Adam(x)
    for where in ("first", "middle", "last"):
        with pytest.raises(nadam.NonFiniteGradientError):
            opt.step(_poisoned(grad(x, a), INF, where))
    assert opt.t == 0


# ---------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("variant", opts_variants(), ids=combo_id)
def test_state_dict_round_trip_continues_bit_for_bit(variant, dtype):
    """state_dict -> pickle -> load_state_dict into a fresh optimizer continues exactly
    like an uninterrupted run (no torch needed)."""
    name, kw = variant
    x0, a = problem(31, dtype)
    sign = sign_of(kw)
    x, y = x0.copy(), x0.copy()
    opt, straight = CLASSES[name](x, **kw), CLASSES[name](y, **kw)
    for _ in range(7):
        opt.step(grad(x, a, sign))
        straight.step(grad(y, a, sign))
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    x2 = x.copy()
    resumed = CLASSES[name](x2, **{**kw, "lr": 0.5})
    resumed.load_state_dict(sd)
    assert resumed.t == 7
    for _ in range(7):
        resumed.step(grad(x2, a, sign))
        straight.step(grad(y, a, sign))
    assert np.array_equal(x2, y)
    assert_same_snapshot(snapshot(resumed), snapshot(straight))


def test_state_dict_is_a_copy():
    """state_dict() holds copies: later steps do not change it, and loading it copies in
    (changing the dict afterwards does not change the optimizer)."""
    x, a = problem(6)
    opt = nadam.Adam(x, lr=0.1)
    opt.step(grad(x, a))
    sd = opt.state_dict()
    frozen = {k: v.copy() for k, v in sd["state"].items()}
    opt.step(grad(x, a))
    for k in frozen:
        assert np.array_equal(sd["state"][k], frozen[k])
    opt.load_state_dict(sd)
    sd["state"]["exp_avg"][:] = 123.0
    assert not np.any(opt.state["exp_avg"] == 123.0)


def _schedule(t):
    return 0.1 / t


def test_state_dict_with_named_schedule_round_trip():
    """A module-level schedule function survives the pickle round trip."""
    x0, a = problem(5)
    x, y = x0.copy(), x0.copy()
    opt, straight = nadam.Adam(x, lr=_schedule), nadam.Adam(y, lr=_schedule)
    for _ in range(3):
        opt.step(grad(x, a))
        straight.step(grad(y, a))
    resumed = nadam.Adam(x)
    resumed.load_state_dict(pickle.loads(pickle.dumps(opt.state_dict())))
    resumed.step(grad(x, a))
    straight.step(grad(y, a))
    assert np.array_equal(x, y)


def test_state_dict_with_lambda_schedule_is_picklable():
    """The issue promises a picklable state_dict, and lr may be any callable (a lambda):
    checkpointing such an optimizer must not fail, and an optimizer built with the same
    schedule continues exactly after loading it."""
    sched = lambda t: 0.1 / t  # noqa: E731
    x0, a = problem(5)
    x, y = x0.copy(), x0.copy()
    opt, straight = nadam.Adam(x, lr=sched), nadam.Adam(y, lr=sched)
    for _ in range(3):
        opt.step(grad(x, a))
        straight.step(grad(y, a))
    blob = pickle.dumps(opt.state_dict())
    resumed = nadam.Adam(x, lr=sched)
    resumed.load_state_dict(pickle.loads(blob))
    resumed.step(grad(x, a))
    straight.step(grad(y, a))
    assert np.array_equal(x, y)


def _sd(cls, n=4, dtype=np.float64, **kw):
    x, a = problem(n, dtype)
    opt = cls(x, **kw)
    opt.step(grad(x, a))
    return opt.state_dict()


@pytest.mark.parametrize(
    "target, sd, words",
    [
        (lambda: nadam.AdamW(np.zeros(4)), lambda: _sd(nadam.Adam), ["adam", "adamw"]),
        (lambda: nadam.RAdam(np.zeros(4)), lambda: _sd(nadam.Adam), ["adam", "radam"]),
        (lambda: nadam.Adam(np.zeros(5)), lambda: _sd(nadam.Adam), ["4", "5"]),
        (lambda: nadam.Adam(np.zeros(4, np.float32)), lambda: _sd(nadam.Adam), ["float64"]),
        (lambda: nadam.Adam(np.zeros(4)), lambda: _sd(nadam.Adam, amsgrad=True), ["amsgrad"]),
        (lambda: nadam.SGD(np.zeros(4)), lambda: _sd(nadam.SGD, momentum=0.9), ["momentum"]),
        (
            lambda: nadam.RMSprop(np.zeros(4)),
            lambda: _sd(nadam.RMSprop, centered=True),
            ["centered"],
        ),
        (lambda: nadam.Adam(np.zeros(4)), lambda: {"t": 3}, ["state_dict"]),
        (lambda: nadam.Adam(np.zeros(4)), lambda: [1, 2], ["state_dict"]),
    ],
    ids=[
        "adamw",
        "radam",
        "size",
        "dtype",
        "amsgrad",
        "sgd-momentum",
        "centered",
        "partial",
        "list",
    ],
)
def test_load_state_dict_rejects_mismatch(target, sd, words):
    """A snapshot of another rule, size, dtype or state layout (or not a snapshot) is a
    ValueError that says what differs, and the optimizer is left as it was."""
    opt = target()
    before = snapshot(opt)
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd())
    for word in words:
        assert re.search(rf"\b{word}\b", str(info.value)), (word, str(info.value))
    assert_same_snapshot(snapshot(opt), before)


def test_load_state_dict_validates_hyperparameters():
    """Hyperparameters in a snapshot are validated like constructor arguments."""
    sd = _sd(nadam.Adam)
    sd["hyper"]["lr"] = -1.0
    opt = nadam.Adam(np.zeros(4))
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(sd)
    assert opt.lr == 1e-3 and opt.t == 0


# ---------------------------------------------------------------------------------
# repr
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_repr(name):
    """repr names the class, the array's dtype and size, and the hyperparameters."""
    opt = CLASSES[name](np.zeros(7, np.float32), lr=0.25)
    text = repr(opt)
    assert text.startswith(type(opt).__name__ + "(")
    assert "float32" in text and "7" in text and "lr=0.25" in text
    assert "lr=<function" in repr(CLASSES[name](np.zeros(2), lr=_schedule))


@pytest.mark.parametrize("name", NAMES)
def test_repr_lists_only_constructor_arguments(name):
    """Every ``key=value`` in the repr is an argument of the class (no internal, fixed
    hyperparameters such as SGD's decoupled_weight_decay)."""
    cls = CLASSES[name]
    keys = re.findall(r"(\w+)=", repr(cls(np.zeros(2))))
    assert keys and set(keys) <= set(inspect.signature(cls).parameters), keys


# ---------------------------------------------------------------------------------
# Issue 15 item 3: copies of an optimizer
# ---------------------------------------------------------------------------------


def _copied(opt, how: str):
    """``opt`` deep-copied or pickled and unpickled; None if it refuses, clearly, to be
    copied (the issue allows that)."""
    try:
        if how == "deepcopy":
            return copy.deepcopy(opt)
        return pickle.loads(pickle.dumps(opt))
    except (TypeError, pickle.PicklingError) as exc:
        assert re.search(r"cop|pickl", str(exc), re.IGNORECASE), f"unclear refusal: {exc}"
        return None


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", NAMES)
def test_a_copied_optimizer_steps_its_own_params(name, how):
    """Issue 15 item 3: a deep copy or a pickle round trip of an optimizer owns its
    params and updates them: the copy's step gives the original's step, value for value,
    and leaves the original (its params, state and step count) untouched."""
    x0, a = problem(9)
    x = x0.copy()
    opt = CLASSES[name](x, lr=0.05)
    opt.step(grad(x, a))  # a state that is not the initial one
    c = _copied(opt, how)
    if c is None:
        return  # refused to be copied, with a message saying so
    assert c.params is not x and not np.shares_memory(c.params, x)
    np.testing.assert_array_equal(c.params, x)
    before = snapshot(opt)
    g = grad(x, a)
    c.step(g)
    assert_same_snapshot(snapshot(opt), before)  # the original is untouched
    assert not np.array_equal(c.params, x), "the copy's step did not update its params"
    opt.step(g)
    np.testing.assert_array_equal(c.params, x)
    assert_same_snapshot(snapshot(c), snapshot(opt))
    assert c.t == opt.t == 2
